"""``edge-agent sample``: print the sampled grid of a log as CSV, exactly what the agent would send.

Header ``timestamp,<names as given>``, then one row per tick at which some signal is present: the
tick's time in seconds on the sampler's time base (the log's clock, moved on after a jump back: see
:mod:`agent.sample`; 6 decimals, exact), then each value as cantools decodes it (value names as their
numbers), empty where the signal is absent (not seen yet, or past its hold). A tick at which every
signal is absent has no row, so a silence in the log is a jump in the timestamps.
``edge-receiver export`` prints the same format.

On stderr, one summary line (frames, ticks, frames of ids not decoded, malformed lines, and, when there
are any, late frames, jumps back, gaps, frames too long for their protocol, frames of channels no
``--dbc`` names), and a warning when a channel given to ``--dbc`` carries no frame.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction

from agent.decode import ANY_CHANNEL, Decoder, build_decoder
from agent.errors import ConfigError
from agent.sample import Sampler, SampleStats, to_micros
from agent.service.cli import positive_or
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
    parser.add_argument(
        "--max-hold-s",
        default="auto",
        metavar="S",
        help="seconds a value is held after its frame, at most, or 'auto' (default: from each signal's "
        "period, as sampling.max_hold_s)",
    )


def parse_dbc_options(options: list[str]) -> list[tuple[str, list[str], str]]:
    """``[CHANNEL=]PATH`` options grouped per channel (``*`` for every channel), J1939 auto-detected."""
    per_channel: dict[str, list[str]] = {}
    for option in options:
        channel, sep, path = option.partition("=")
        if not sep or "/" in channel or "." in channel:
            channel, path = ANY_CHANNEL, option
        per_channel.setdefault(channel, []).append(path)
    return [(channel, paths, "auto") for channel, paths in per_channel.items()]


def parse_hold(text: str) -> float | None:
    return positive_or(text, "--max-hold-s", "auto")


def summary(log: str, frames: int, bad_lines: int, decoder: Decoder, stats: SampleStats) -> str:
    unknown = sum(decoder.stats.unknown.values())
    parts = [
        f"{frames} frames",
        f"{stats.ticks_emitted} ticks",
        f"{unknown} frames of ids not decoded",
        f"{bad_lines} malformed lines",
    ]
    extra = {
        "late frames (counted from the next tick)": stats.late,
        f"jumps back in time (largest {round(stats.largest_jump_back_s, 3)} s; each a new segment)": stats.jumps_back,
        "gaps with no signal present (no rows)": stats.gaps,
        "frames longer than their protocol allows (not decoded)": sum(decoder.stats.oversize.values()),
        "frames of channels no --dbc names": decoder.unknown_channel_frames(),
    }
    parts += [f"{count} {what}" for what, count in extra.items() if count]
    return f"{log}: " + ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.signals.split(",") if name.strip()]
    if not names:
        raise ConfigError("--signals: give at least one MESSAGE.SIGNAL name")
    if not args.rate_hz > 0:
        raise ConfigError(f"--rate-hz: expected a number > 0, got {args.rate_hz}")
    max_hold_s = parse_hold(str(getattr(args, "max_hold_s", "auto")))
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

    sampler = Sampler(schema.rate, len(specs), emit, max_hold_s=max_hold_s, periods=decoder.periods)
    stats = LogStats()
    decode, feed = decoder.decode, sampler.feed
    for frame in read_log(args.log, stats):
        feed(to_micros(frame.timestamp), decode(frame))
    sampler.finish()
    out.flush()
    print(summary(args.log, stats.frames, stats.bad_lines, decoder, sampler.stats), file=sys.stderr)
    silent = decoder.check_channels()
    if silent:
        print(f"{args.log}: warning: {silent}", file=sys.stderr)
    return 0
