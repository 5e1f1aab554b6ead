"""The command line both console scripts share (:mod:`agent.service.cli`): one module per verb, and a
``main`` that turns the product's errors into one line on stderr with exit 2, never a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agent import __version__
from agent.service import cli

VERB = """
import argparse, sys
from agent.errors import ConfigError

HELP = "does {name}"

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--how", default="ok")

def run(args: argparse.Namespace) -> int:
    if args.how == "error":
        raise ConfigError("x.yaml:3: key: wrong")
    if args.how == "interrupt":
        raise KeyboardInterrupt
    if args.how == "pipe":
        raise BrokenPipeError
    if args.how == "bug":
        raise ValueError("not ours")
    print("{name} ran")
    return 0
"""


@pytest.fixture
def parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """``tool`` with the verbs ``first`` and ``second-verb``, from a package of their own on ``sys.path``."""
    package = tmp_path / "toolverbs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("first", "second_verb"):
        (package / f"{name}.py").write_text(VERB.replace("{name}", name))
    monkeypatch.syspath_prepend(str(tmp_path))
    return cli.build_parser("tool", "A tool.", "toolverbs", ("first", "second-verb"))


def test_each_verb_is_its_module(parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(parser, ["second-verb"]) == 0
    assert capsys.readouterr().out == "second_verb ran\n"
    assert "does first" in parser.format_help() and "does second_verb" in parser.format_help()
    with pytest.raises(SystemExit):
        cli.main(parser, ["--version"])
    assert capsys.readouterr().out == f"tool {__version__}\n"


@pytest.mark.parametrize(
    ("how", "code", "err"),
    [
        ("error", 2, "tool first: error: x.yaml:3: key: wrong\n"),
        ("interrupt", 130, ""),
        ("pipe", 0, ""),  # `... | head` closed the pipe: not an error
    ],
)
def test_main_maps_the_product_s_errors_to_one_line(
    parser: argparse.ArgumentParser, how: str, code: int, err: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(parser, ["first", "--how", how]) == code
    assert capsys.readouterr().err == err


def test_a_bug_is_not_hidden(parser: argparse.ArgumentParser) -> None:
    with pytest.raises(ValueError, match="not ours"):  # only the product's own errors become one line
        cli.main(parser, ["first", "--how", "bug"])


def test_config_argument_and_did_you_mean() -> None:
    parser = argparse.ArgumentParser()
    cli.add_config_argument(parser, Path("/etc/tool/config.yaml"), "tool's")
    assert parser.parse_args([]).config == Path("/etc/tool/config.yaml")
    assert "the tool's YAML config file (default /etc/tool/config.yaml)" in parser.format_help()
    assert cli.did_you_mean("exprot", ["export", "stats"]) == " (did you mean 'export'?)"
