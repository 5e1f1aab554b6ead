"""Typed configuration values and declarative sections, read from YAML with line numbers.

In the style of mopidy's config values: a small :class:`Value` class per type (:class:`String`,
:class:`Integer`, :class:`Float`, :class:`Boolean`, :class:`Choice`, :class:`FilePath`, :class:`ListOf`,
:class:`MapOf`, :class:`Nullable`, :class:`Alias`) and a :class:`Section` that maps the keys of a YAML
mapping onto a frozen dataclass. The document is *composed* (``yaml.compose``), not loaded, so every key
and value keeps its line; every problem is collected as an :class:`Issue` and all of them are raised
together in one :class:`ConfigIssues` (a :class:`~agent.errors.ConfigError`), one per line::

    edge-agent.yaml:12: sampling.rate_hz: expected a number > 0 and ≤ 1000, got 'fast'

The keys of a section are the field names of its dataclass; a field without a default is a required key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from agent.errors import ConfigError

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"


@dataclasses.dataclass(frozen=True)
class Issue:
    """One problem of a config file: ``source:line: path: message``."""

    source: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.source}:{self.line}: {where}{self.message}"


class ConfigIssues(ConfigError):
    """Every problem found in one config file, sorted by line; ``str()`` prints one per line."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = tuple(sorted(issues, key=lambda issue: issue.line))
        super().__init__("\n".join(str(issue) for issue in self.issues))


class Invalid(Exception):
    """Raised by a value for its own node; the enclosing container adds file, line and key path."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Reported(Exception):
    """A container whose children failed; their issues are already recorded."""


def suggest(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string.

    The one "did you mean" of both products: config keys and choices, signal names, VINs, verbs."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def line_of(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None and node.start_mark is not None else 1


def found(node: yaml.Node) -> str:
    """How a node reads in an error message: ``'fast'``, ``12``, ``null``, ``a list``, ``a mapping``."""
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        kind = "mapping" if isinstance(node, yaml.MappingNode) else "list"
        return f"a {kind}" if node.value else f"an empty {kind}"
    if node.tag == _NULL_TAG:
        return "null"
    return repr(node.value) if node.tag == _STR_TAG else str(node.value)


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def child(node: yaml.Node | None, key: str | int, *, key_node: bool = False) -> yaml.Node | None:
    """The value (or key) node of ``key`` in a mapping node, or item ``key`` of a sequence node."""
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int):
        return node.value[key] if 0 <= key < len(node.value) else None
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            if isinstance(knode, yaml.ScalarNode) and knode.value == key:
                return knode if key_node else vnode
    return None


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Context:
    """The state of one parse: where the text came from, and the issues found so far."""

    def __init__(self, source: str, base_dir: Path, *, check_files: bool = False) -> None:
        self.source = source
        self.base_dir = base_dir
        self.check_files = check_files
        self.issues: list[Issue] = []
        self._constructor = yaml.SafeLoader("")

    def error(self, node: yaml.Node | None, path: str, message: str) -> None:
        self.issues.append(Issue(self.source, line_of(node), path, message))

    def scalar(self, node: yaml.ScalarNode) -> object:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as error:
            problem = getattr(error, "problem", None) or str(error)
            raise Invalid(f"cannot read {found(node)}: {problem}") from error


class Value(Generic[T]):
    """A typed config value: turns one YAML node into a ``T`` or raises :class:`Invalid`."""

    expected = "a value"

    def parse(self, node: yaml.Node, ctx: Context, path: str) -> T:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node)
        return self.convert(ctx.scalar(node), node, ctx)

    def convert(self, raw: object, node: yaml.ScalarNode, ctx: Context) -> T:
        raise NotImplementedError

    def fail(self, node: yaml.Node, hint: str = "") -> Invalid:
        return Invalid(f"expected {self.expected}, got {found(node)}{hint}")


def _bounds(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None and not lo_open:
        return f" from {lo} to {hi}"
    parts = [f"{'>' if lo_open else '≥'} {lo}"] if lo is not None else []
    parts += [f"≤ {hi}"] if hi is not None else []
    return (" " + " and ".join(parts)) if parts else ""


class String(Value[str]):
    """A non-empty string, optionally matching ``pattern`` (``rule`` says what it means in messages).

    With ``numbers=True`` an unquoted number is taken as its text (``channel: 1`` is ``"1"``).
    """

    def __init__(self, *, pattern: str | None = None, rule: str = "", numbers: bool = False) -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.numbers = numbers
        self.expected = f"a string of {rule}" if rule else "a non-empty string"

    def convert(self, raw: object, node: yaml.ScalarNode, ctx: Context) -> str:
        if self.numbers and isinstance(raw, int | float) and not isinstance(raw, bool):
            raw = node.value
        if not isinstance(raw, str):
            hint = " (quote it to make it a string)" if raw is not None else ""
            raise self.fail(node, hint)
        if not raw or (self.pattern is not None and not self.pattern.fullmatch(raw)):
            raise self.fail(node)
        return raw


class Integer(Value[int]):
    def __init__(self, *, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max
        self.expected = "an integer" + _bounds(min, max, False)

    def convert(self, raw: object, node: yaml.ScalarNode, ctx: Context) -> int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise self.fail(node)
        if (self.min is not None and raw < self.min) or (self.max is not None and raw > self.max):
            raise self.fail(node)
        return raw


class Float(Value[float]):
    """A finite number (an integer is fine); ``min`` is exclusive when ``min_open``."""

    def __init__(self, *, min: float | None = None, max: float | None = None, min_open: bool = False) -> None:
        self.min, self.max, self.min_open = min, max, min_open
        self.expected = "a number" + _bounds(min, max, min_open)

    def convert(self, raw: object, node: yaml.ScalarNode, ctx: Context) -> float:
        if not isinstance(raw, int | float) or isinstance(raw, bool) or not math.isfinite(raw):
            raise self.fail(node)
        if self.min is not None and (raw <= self.min if self.min_open else raw < self.min):
            raise self.fail(node)
        if self.max is not None and raw > self.max:
            raise self.fail(node)
        return float(raw)


class Boolean(Value[bool]):
    expected = "true or false"

    def convert(self, raw: object, node: yaml.ScalarNode, ctx: Context) -> bool:
        if not isinstance(raw, bool):
            raise self.fail(node)
        return raw


class Choice(Value[str]):
    """One of a fixed set of strings; a near miss gets a suggestion."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.expected = "one of " + ", ".join(repr(choice) for choice in choices)

    def convert(self, raw: object, node: yaml.ScalarNode, ctx: Context) -> str:
        if not isinstance(raw, str) or raw not in self.choices:
            raise self.fail(node, suggest(str(raw), self.choices))
        return raw


class FilePath(Value[Path]):
    """A path; a relative one is taken relative to the config file's directory (``~`` expands).

    ``suffixes`` limits the file name's ending (case-insensitive); ``must_exist`` checks that the file
    exists, but only when the parse was asked to check files (``check-config``).
    """

    def __init__(self, *, suffixes: Sequence[str] = (), must_exist: bool = False) -> None:
        self.suffixes = tuple(suffix.lower() for suffix in suffixes)
        self.must_exist = must_exist
        self.expected = "a path" + (f" ending in {', '.join(self.suffixes)}" if suffixes else "")

    def convert(self, raw: object, node: yaml.ScalarNode, ctx: Context) -> Path:
        if not isinstance(raw, str) or not raw:
            raise self.fail(node)
        if self.suffixes and not raw.lower().endswith(self.suffixes):
            raise self.fail(node)
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = Path(os.path.normpath(ctx.base_dir / path))
        if self.must_exist and ctx.check_files and not path.is_file():
            raise Invalid(f"file not found: {path}")
        return path


class Nullable(Value[T | None]):
    """``inner`` or ``null`` (``None``)."""

    def __init__(self, inner: Value[T]) -> None:
        self.inner = inner
        self.expected = f"{inner.expected} or null"

    def parse(self, node: yaml.Node, ctx: Context, path: str) -> T | None:
        return None if is_null(node) else self.inner.parse(node, ctx, path)


class Alias(Value[T | V]):
    """``inner``, or one of the words of ``words`` standing for a fixed value (``"max"`` → ``inf``)."""

    def __init__(self, inner: Value[T], words: Mapping[str, V]) -> None:
        self.inner, self.words = inner, words
        self.expected = f"{inner.expected} or " + " or ".join(repr(word) for word in words)

    def parse(self, node: yaml.Node, ctx: Context, path: str) -> T | V:
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG and node.value in self.words:
            return self.words[node.value]
        try:
            return self.inner.parse(node, ctx, path)
        except Invalid:
            raise self.fail(node) from None


def _attempt(ctx: Context, value: Value[T], node: yaml.Node, path: str) -> list[T]:
    """``[value of node]``, or ``[]`` once the reason it is wrong is recorded."""
    try:
        return [value.parse(node, ctx, path)]
    except Invalid as error:
        ctx.error(node, path, error.message)
    except _Reported:
        pass
    return []


class ListOf(Value[tuple[T, ...]]):
    """A list (a tuple) of ``item``; ``null`` is the empty list; ``single=True`` takes a lone item too.

    ``unique=True`` rejects repeated items; ``unique="name"`` rejects items whose attribute ``name``
    (a key of the item's mapping) repeats.
    """

    def __init__(
        self, item: Value[T], *, min_len: int = 0, single: bool = False, unique: bool | str = False
    ) -> None:
        self.item, self.min_len, self.single, self.unique = item, min_len, single, unique
        self.expected = {0: "a list", 1: "a non-empty list"}.get(min_len, f"a list of {min_len}+ items")
        self.expected += f" (or a single {item.expected.removeprefix('a ')})" if single else ""

    def parse(self, node: yaml.Node, ctx: Context, path: str) -> tuple[T, ...]:
        if self.single and isinstance(node, yaml.ScalarNode) and not is_null(node):
            return (self.item.parse(node, ctx, path),)
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [] if is_null(node) else None
        if nodes is None or len(nodes) < self.min_len:
            raise self.fail(node)
        before, items, first = len(ctx.issues), list[T](), dict[object, int]()
        for index, item_node in enumerate(nodes):
            for item in _attempt(ctx, self.item, item_node, f"{path}[{index}]"):
                attr = self.unique if isinstance(self.unique, str) else None
                key = getattr(item, attr) if attr else item
                where = (child(item_node, attr) if attr else None) or item_node
                if self.unique and key in first:
                    item_path = f"{path}[{index}]" + (f".{attr}" if attr else "")
                    ctx.error(where, item_path, f"duplicate {found(where)} (first at line {first[key]})")
                first.setdefault(key, line_of(where))
                items.append(item)
        if len(ctx.issues) > before:
            raise _Reported
        return tuple(items)


class MapOf(Value[dict[K, V]]):
    """A mapping of ``key`` to ``value``; ``null`` is the empty mapping. Paths read ``path['key']``."""

    def __init__(self, key: Value[K], value: Value[V]) -> None:
        self.key, self.value, self.expected = key, value, "a mapping"

    def parse(self, node: yaml.Node, ctx: Context, path: str) -> dict[K, V]:
        if not (is_null(node) or isinstance(node, yaml.MappingNode)):
            raise self.fail(node)
        before, result = len(ctx.issues), dict[K, V]()
        for knode, vnode in node.value if isinstance(node, yaml.MappingNode) else []:
            item_path = f"{path}[{found(knode)}]"
            for key in _attempt(ctx, self.key, knode, item_path):
                if key in result:
                    ctx.error(knode, item_path, "duplicate key")
                for value in _attempt(ctx, self.value, vnode, item_path):
                    result[key] = value
        if len(ctx.issues) > before:
            raise _Reported
        return result


class SectionView:
    """What a cross-field check of a section sees: the nodes of the keys given, to report with lines."""

    def __init__(self, ctx: Context, path: str, node: yaml.Node, given: Mapping[str, yaml.Node]) -> None:
        self.ctx, self.path, self.node, self.given = ctx, path, node, given

    def error(self, key: str | None, message: str, *, node: yaml.Node | None = None, sub: str = "") -> None:
        """Report at ``key`` of this section (``None``: the section itself); ``sub`` extends the path."""
        where = node or (self.given.get(key, self.node) if key else self.node)
        self.ctx.error(where, (join(self.path, key) if key else self.path) + sub, message)


Check = Callable[[T, SectionView], None]


class Section(Value[T]):
    """A mapping whose keys are the fields of the frozen dataclass ``cls``, each read by its value type.

    ``null`` reads as an empty mapping. Unknown keys (with a suggestion), duplicate keys and missing
    required keys are all reported; ``checks`` run on the built dataclass for cross-field rules.
    """

    def __init__(
        self, cls: type[T], fields: Mapping[str, Value[Any]], checks: Sequence[Check[T]] = ()
    ) -> None:
        declared = dataclasses.fields(cls)  # type: ignore[arg-type]
        if {f.name for f in declared if f.init} != set(fields):
            raise TypeError(f"the schema of {cls.__name__} does not match its fields")
        self.cls, self.fields, self.checks = cls, fields, checks
        self.required = [
            f.name for f in declared if f.init and f.default is f.default_factory is dataclasses.MISSING
        ]
        self.expected = "a mapping"

    def parse(self, node: yaml.Node, ctx: Context, path: str) -> T:
        if not (is_null(node) or isinstance(node, yaml.MappingNode)):
            raise self.fail(node)
        before, given, values = len(ctx.issues), dict[str, yaml.Node](), dict[str, Any]()
        for knode, vnode in node.value if isinstance(node, yaml.MappingNode) else []:
            key = str(knode.value) if isinstance(knode, yaml.ScalarNode) else found(knode)
            if key not in self.fields:
                ctx.error(knode, join(path, key), "unknown key" + suggest(key, list(self.fields)))
            elif key in given:
                ctx.error(knode, join(path, key), f"duplicate key (first at line {line_of(given[key])})")
            else:
                given[key] = vnode
                for value in _attempt(ctx, self.fields[key], vnode, join(path, key)):
                    values[key] = value
        for name in self.required:
            if name not in given:
                ctx.error(node, path, f"missing required {'key' if path else 'top-level key'} {name!r}")
        if len(ctx.issues) > before:
            raise _Reported
        result = self.cls(**values)
        for check in self.checks:
            check(result, SectionView(ctx, path, node, given))
        if len(ctx.issues) > before:
            raise _Reported
        return result


def parse_document(
    text: str, source: str, base_dir: Path, root: Section[T], *, check_files: bool = False
) -> T:
    """Read a whole YAML document with ``root``; raise :class:`ConfigError` naming file and line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark, context = error.problem_mark or error.context_mark, ""
        line = f"{mark.line + 1}:" if mark is not None else ""
        if error.context and error.context_mark is not None and error.problem:
            context = f" ({error.context} that starts at line {error.context_mark.line + 1})"
        problem = error.problem or error.context
        raise ConfigError(f"{source}:{line} YAML syntax error: {problem}{context}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: YAML error: {error}") from error
    if node is None:
        node = yaml.ScalarNode(_NULL_TAG, "")
    ctx = Context(source, base_dir.absolute(), check_files=check_files)
    try:
        result = root.parse(node, ctx, "")
    except Invalid as error:
        ctx.error(node, "", f"{error.message} (the top level must be a mapping of keys)")
    except _Reported:
        pass
    if ctx.issues:
        raise ConfigIssues(ctx.issues)
    return result


def load_document(path: Path | str, root: Section[T], *, check_files: bool = False) -> T:
    """Read and parse the file at ``path``; relative paths in it resolve against its directory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:  # the cause stays chained for debugging; the message is one line
        raise ConfigError(f"{path}: config file not found") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: config file is not UTF-8 text ({error.reason})") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file: {error.strerror or error}") from error
    return parse_document(text, str(path), path.parent, root, check_files=check_files)
