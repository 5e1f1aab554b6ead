"""The read side's pure helpers (:mod:`receiver.timeline`): merging chunks by tick, gaps, the CSV."""

from __future__ import annotations

import io
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.timeline import merge_chunks, missing_runs, write_csv


def test_missing_runs() -> None:
    assert missing_runs([(0, 1), (5, 5), (9, 9)], [(3, 3), (12, 20)]) == [(2, 2), (4, 4), (6, 8)]
    assert missing_runs([], [(0, 4)]) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.integers(-20, 20), st.one_of(st.none(), st.integers(0, 9)), min_size=1),
            st.integers(0, 5),
        )
    )
)
def test_merge_chunks_takes_each_value_from_the_first_chunk_that_has_one(
    chunks: list[tuple[dict[int, int | None], int]],
) -> None:
    # A chunk's start may be before its first tick (a stored chunk cut to a range): chunks come by start.
    ordered = sorted(((min(c) - lead, c) for c, lead in chunks), key=lambda item: item[0])
    expected: dict[int, list[int | None]] = {}
    for _, c in ordered:
        for tick, value in c.items():
            row = expected.setdefault(tick, [None])
            row[0] = value if row[0] is None else row[0]
    merged = merge_chunks((start, sorted(c), [[c[t] for t in sorted(c)]]) for start, c in ordered)
    assert list(merged) == sorted(expected.items())


def test_the_csv_is_the_one_edge_agent_sample_prints() -> None:
    out = io.StringIO()
    rows = [(1, [3, None]), (2, [-0.0, 1e300])]
    assert write_csv(out, Fraction(3), ["A.b", "C.d"], rows) == 2
    assert out.getvalue() == "timestamp,A.b,C.d\n0.333333,3,\n0.666667,-0.0,1e+300\n"
