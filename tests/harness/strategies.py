"""Hypothesis strategies for random drives: signals of every kind (integers, angles, floats), absent runs,
out-of-range markers, chunk cuts and batch groupings (shared by the codec's property tests)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate, pairwise

from hypothesis import strategies as st

from agent.wire import predictors as predict
from agent.wire.values import ChunkData, RawValue, Schema, SignalSpec


@dataclass
class Signal:
    spec: SignalSpec
    values: list[RawValue | None]

    @property
    def code(self) -> predict.Coding:
        return predict.Coding.parse(self.spec.predictor)


@st.composite
def presence(draw: st.DrawFn, count: int) -> list[bool]:
    mask: list[bool] = []
    here = draw(st.booleans())
    while len(mask) < count:
        mask += [here] * draw(st.integers(1, max(1, count // 3)))
        here = not here
    return mask[:count]


@st.composite
def signals(draw: st.DrawFn, count: int, index: int) -> Signal:
    kind = draw(st.sampled_from(["integer", "integer", "angle", "float"]))
    predictor = draw(st.sampled_from(sorted(predict.PREDICTORS)))
    bound = draw(st.sampled_from([0, 0, 1, 5, 321, 10_000]))
    mask = draw(presence(count))
    values: list[RawValue | None]
    if kind == "float":
        floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
        values = [draw(floats) if here else None for here in mask]
        spec = SignalSpec(f"F.f{index}", 0.5, 0.0, True, False, 0, predictor)
        return Signal(spec, values)
    if kind == "angle":
        period = draw(st.sampled_from([360, 3600, 36000, 65536]))
        low = draw(st.sampled_from([0, -(period // 2)]))
        walk = accumulate(
            draw(st.lists(st.integers(-period // 3, period // 3), min_size=count, max_size=count))
        )
        raw = [low + (step % period) for step in walk]
        outside = draw(st.lists(st.integers(0, count - 1), max_size=3))  # "invalid" markers
        for at in outside:
            raw[at] = low + period + draw(st.integers(0, 1000))
        values = [v if here else None for v, here in zip(raw, mask, strict=True)]
        code = predict.Coding(predictor, period, low)
        spec = SignalSpec(f"A.a{index}", 0.01, 0.0, False, False, min(bound, period), str(code))
        return Signal(spec, values)
    start = draw(st.integers(-(2**40), 2**40))
    steps = draw(
        st.lists(
            st.one_of(st.integers(-50, 50), st.integers(-(2**20), 2**20)), min_size=count, max_size=count
        )
    )
    values = [v if here else None for v, here in zip(accumulate(steps, initial=start), mask, strict=False)]
    return Signal(SignalSpec(f"I.i{index}", 0.1, -40.0, False, False, bound, predictor), values)


@st.composite
def drives(draw: st.DrawFn) -> tuple[list[int], list[Signal], list[int], list[int]]:
    count = draw(st.integers(1, 240))
    gaps = draw(st.lists(st.sampled_from([1, 1, 1, 2, 7]), min_size=count, max_size=count))
    ticks = list(accumulate(gaps, initial=draw(st.integers(0, 2**40))))[1:]
    chosen = [draw(signals(count, index)) for index in range(draw(st.integers(1, 4)))]
    cuts = sorted(draw(st.sets(st.integers(1, count - 1), max_size=8))) if count > 1 else []
    groups = draw(st.lists(st.integers(1, 4), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    return ticks, chosen, cuts, groups


def chunks_of(
    boot: bytes, ticks: list[int], chosen: list[Signal], cuts: list[int]
) -> tuple[Schema, list[ChunkData]]:
    """The schema of ``chosen`` at 50 Hz and the drive cut at ``cuts`` into chunks (seq 0, 1, ...)."""
    schema = Schema(Fraction(50), tuple(signal.spec for signal in chosen))
    bounds = [0, *cuts, len(ticks)]
    chunks = [
        ChunkData(boot, seq, ticks[a:b], [signal.values[a:b] for signal in chosen])
        for seq, (a, b) in enumerate(pairwise(bounds))
    ]
    return schema, chunks
