"""agent.schemas and the config of sampling.budget_bounds: the budget's schema codes only the named
signals more coarsely, never past what the user allows, and every mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import parse_agent_config
from agent.errors import ConfigError
from agent.schemas import build_budget_schema, build_schema
from tests.harness.drive import DBC

SPEED, TORQUE = "DriveSpeed.VehicleSpeed", "MotorStatus.MotorTorque"


def config_text(sampling: str, upload: str = "upload: {monthly_bytes: 1000000}\n") -> str:
    return (
        f"vin: BUDGET0001\nsource: {{kind: bus}}\nbuses: [{{channel: can0, dbc: [{DBC}]}}]\n"
        f"sampling: {{signals: [{SPEED}, {TORQUE}, Gear.Gear], {sampling}}}\n{upload}"
    )


def parsed(sampling: str, upload: str = "upload: {monthly_bytes: 1000000}\n") -> object:
    return parse_agent_config(config_text(sampling, upload), "agent.yaml", Path("."))


def test_the_budgets_schema_coarsens_only_the_named_signals_to_their_budget_bounds() -> None:
    config = parsed(f"bounds: {{{SPEED}: 0.05}}, budget_bounds: {{{SPEED}: 2, {TORQUE}: 5}}")
    _, fine = build_schema(config)  # type: ignore[arg-type]
    coarse = build_budget_schema(config)  # type: ignore[arg-type]
    assert coarse is not None and coarse.digest != fine.digest and coarse.rate == fine.rate
    bounds = {s.name: (f.bound_raw, s.bound_raw) for f, s in zip(fine.signals, coarse.signals, strict=True)}
    assert bounds == {SPEED: (5, 200), TORQUE: (0, 50), "Gear.Gear": (0, 0)}  # steps of 0.01 and 0.1
    assert build_budget_schema(parsed(f"bounds: {{{SPEED}: 0.05}}")) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sampling", "upload", "message"),
    [
        (
            f"bounds: {{{SPEED}: 1}}, budget_bounds: {{{SPEED}: 0.5}}",
            None,
            "finer than the signal's own bound 1",
        ),
        ("budget_bounds: {Pedals.AccelPedal: 2}", None, "'Pedals.AccelPedal' is not in sampling.signals"),
        (f"budget_bounds: {{{SPEED}: 0}}", None, "budget_bounds"),
        (f"budget_bounds: {{{SPEED}: 2}}", "", "upload.monthly_bytes, which is not set"),
    ],
    ids=["finer", "unsampled", "zero", "no-budget"],
)
def test_a_wrong_budget_bound_is_an_error_naming_its_key(
    sampling: str, upload: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match="budget_bounds") as error:
        parsed(sampling, *(() if upload is None else (upload,)))
    assert message in str(error.value)
