"""``edge-agent sample``: print the sampled grid of a log as CSV, exactly what the agent would send.

Header ``timestamp,<names as given>``, then one row per tick: the tick's time in seconds on the log's
clock (6 decimals, exact), then each value as cantools decodes it (value names as their numbers),
empty where the signal has not been seen yet. ``edge-receiver export`` prints the same format.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction

from agent.decode import ANY_CHANNEL, build_decoder
from agent.errors import ConfigError
from agent.sample import Sampler, to_micros
from agent.source import LogStats, read_log
from agent.wire.values import RawValue, Schema, format_value

HELP = "print a log's samples on the grid as CSV (what the agent would send)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "log", help="recorded log: candump .log, .asc, .blf, .csv, .trc, .mf4 (optionally .gz)"
    )
    parser.add_argument(
        "--dbc",
        action="append",
        required=True,
        metavar="[CHANNEL=]DBC",
        help="DBC file, for every channel or for one (can1=path.dbc); repeatable",
    )
    parser.add_argument("--signals", required=True, help="comma-separated MESSAGE.SIGNAL names")
    parser.add_argument("--rate-hz", type=float, default=50.0, help="sampling rate (default 50)")


def parse_dbc_options(options: list[str]) -> list[tuple[str, list[str], str]]:
    """``[CHANNEL=]PATH`` options grouped per channel (``*`` for every channel), J1939 auto-detected."""
    per_channel: dict[str, list[str]] = {}
    for option in options:
        channel, sep, path = option.partition("=")
        if not sep or "/" in channel or "." in channel:
            channel, path = ANY_CHANNEL, option
        per_channel.setdefault(channel, []).append(path)
    return [(channel, paths, "auto") for channel, paths in per_channel.items()]


def run(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.signals.split(",") if name.strip()]
    if not names:
        raise ConfigError("--signals: give at least one MESSAGE.SIGNAL name")
    if not args.rate_hz > 0:
        raise ConfigError(f"--rate-hz: expected a number > 0, got {args.rate_hz}")
    decoder = build_decoder(parse_dbc_options(args.dbc), names)
    schema = Schema(Fraction(str(args.rate_hz)).limit_denominator(1_000_000), decoder.signals)
    out = sys.stdout
    specs = schema.signals
    out.write(",".join(["timestamp", *names]) + "\n")

    def emit(tick: int, values: list[RawValue | None]) -> None:
        cells = [
            format_value(None if v is None else spec.to_physical(v))
            for spec, v in zip(specs, values, strict=True)
        ]
        out.write(f"{schema.tick_seconds(tick)},{','.join(cells)}\n")

    sampler = Sampler(schema.rate, len(specs), emit)
    stats = LogStats()
    decode, feed = decoder.decode, sampler.feed
    for frame in read_log(args.log, stats):
        feed(to_micros(frame.timestamp), decode(frame))
    sampler.finish()
    out.flush()
    unknown = sum(decoder.stats.unknown.values())
    print(
        f"{args.log}: {stats.frames} frames, {sampler.ticks_emitted} ticks, {unknown} frames of ids not "
        f"decoded, {stats.bad_lines} malformed lines",
        file=sys.stderr,
    )
    return 0
