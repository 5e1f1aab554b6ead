"""The YAML schema library shared by agent and receiver (:mod:`agent.service.schema`): files, syntax, causes.

The value types and sections are exercised through the agent's and the receiver's schemas
(``test_config.py``, ``test_receiver_config.py``); this module holds what belongs to the library itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.service.schema import Integer, Section, String, load_document, parse_document, suggest


@dataclass(frozen=True)
class Doc:
    name: str
    count: int = 1


ROOT = Section(Doc, {"name": String(), "count": Integer(min=0)})


def parse(text: str) -> Doc:
    return parse_document(text, "doc.yaml", Path("/srv"), ROOT)


def test_a_document_reads_into_its_dataclass() -> None:
    assert parse("name: x\ncount: 3\n") == Doc("x", 3)
    with pytest.raises(ConfigError, match=r"^doc\.yaml:2: cont: unknown key \(did you mean 'count'\?\)$"):
        parse("name: x\ncont: 3\n")


def test_yaml_syntax_errors_name_file_and_line() -> None:
    with pytest.raises(
        ConfigError, match=r"^doc\.yaml:4: YAML syntax error: .*flow sequence that starts at line 2"
    ):
        parse("name: x\ncount: [a,\n  b: c\n")
    with pytest.raises(ConfigError, match=r"^doc\.yaml:2: YAML syntax error"):
        parse("name: x\n\tcount: y\n")


def test_unreadable_files_name_the_path_and_keep_the_cause(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"name: \xe9\n")
    cases = [
        (tmp_path / "missing.yaml", rf"^{tmp_path}/missing\.yaml: config file not found$", FileNotFoundError),
        (tmp_path, rf"^{tmp_path}: cannot read config file: Is a directory$", IsADirectoryError),
        (
            tmp_path / "latin.yaml",
            r"latin\.yaml: config file is not UTF-8 text \(invalid",
            UnicodeDecodeError,
        ),
    ]
    for path, message, cause in cases:
        with pytest.raises(ConfigError, match=message) as caught:
            load_document(path, ROOT)
        assert isinstance(caught.value.__cause__, cause)  # chained for debugging (raise ... from error)
        assert "\n" not in str(caught.value)  # the message itself stays one line


def test_one_did_you_mean_for_keys_signals_and_vins() -> None:
    assert suggest("rate_hx", ["rate_hz", "signals"]) == " (did you mean 'rate_hz'?)"
    assert suggest("WVWZZZ1JZXW000002", ["WVWZZZ1JZXW000001"]) == " (did you mean 'WVWZZZ1JZXW000001'?)"
    assert suggest("nothing", ["alike", "here"]) == ""
