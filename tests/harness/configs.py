"""Helpers of the configuration tests: the issue lines of a text that does not parse, the keys an example
config file leaves out. Pure: they read only the file they are given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.service.schema import ConfigIssues, Section


def issue_lines(parse: Callable[[str], object], text: str) -> list[str]:
    """The lines of the :class:`ConfigIssues` that ``parse(text)`` raises, one per issue (it must raise)."""
    with pytest.raises(ConfigIssues) as caught:
        parse(text)
    lines = str(caught.value).splitlines()
    assert lines == [str(issue) for issue in caught.value.issues]
    return lines


def undocumented(schema: Section[Any], example: Path) -> list[str]:
    """The sections and ``section.key`` names of ``schema`` that the example file does not show."""
    data = yaml.safe_load(example.read_text(encoding="utf-8"))
    missing = []
    for section, value in schema.fields.items():
        if section not in data:
            missing.append(section)
            continue
        fields = getattr(getattr(value, "item", value), "fields", {})
        entry = data[section][0] if isinstance(data[section], list) else data[section]
        missing += [f"{section}.{key}" for key in fields if key not in entry]
    return missing
