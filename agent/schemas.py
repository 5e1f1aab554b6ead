"""The schemas a run codes its chunks with: the configured one, and the monthly budget's coarser one.

Both are built once, at start, on the supervisor's thread (and by ``edge-agent check-config``, which
takes the same path, so that a configuration it passes also starts); immutable, shared by every thread.
"""

from __future__ import annotations

from fractions import Fraction

from agent.config import AgentConfig, budget_config
from agent.decode import Decoder, decoder_for
from agent.errors import ConfigError
from agent.wire.values import Schema


def build_schema(config: AgentConfig) -> tuple[Decoder, Schema]:
    decoder = decoder_for(config)  # the same path as check-config
    rate = Fraction(str(config.sampling.rate_hz)).limit_denominator(1_000_000)
    return decoder, Schema(rate, decoder.signals)


def build_budget_schema(config: AgentConfig) -> Schema | None:
    """The schema of the same signals at ``sampling.budget_bounds`` (:func:`agent.config.budget_config`),
    or ``None``; its errors name that key (check-config takes the same path)."""
    coarse = budget_config(config)
    if coarse is None:
        return None
    try:
        return build_schema(coarse)[1]
    except ConfigError as error:
        raise ConfigError(f"sampling.budget_bounds: {error}") from error
