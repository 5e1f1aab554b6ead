"""``edge-agent status``: state, backlog, last ack, drops and time to drain.

From the running daemon's status file when it is alive (refreshed every second), otherwise from the
buffer file itself (state then shows as STOPPED), opened read-only: this command never creates the
buffer's folder, database or tables (run as root before the service's first start, a file it created
would belong to root and the service could not open it).

Exit status: 0 with a report; 1 when there is no buffer yet at the configured path (the agent has not
run, or ``buffer.path`` names the wrong place), said in one line on stderr, nothing on stdout (with
``--json`` too); 2 on a bad config or an unreadable buffer (the CLI's one-line error).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from agent.buffer import Buffer
from agent.config import DEFAULT_AGENT_CONFIG, load_agent_config
from agent.status import StatusReport, find_status_file, read_status_file

HELP = "print the agent's state, backlog, last ack, drops and time to drain"
NO_BUFFER = 1  # the exit status when there is no buffer yet (the agent has not run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_AGENT_CONFIG), help="YAML configuration file")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _ago(moment: float | None, now: float) -> str:
    return "never" if moment is None else f"{now - moment:.1f} s ago"


def from_buffer(config_vin: str, path: Path) -> StatusReport:
    """The report from the buffer file's totals; it must exist (it is only read)."""
    buffer = Buffer(path, read_only=True)
    try:
        stats = buffer.stats()
    finally:
        buffer.close()
    return StatusReport.from_stats(config_vin, "STOPPED", stats)


def run(args: argparse.Namespace) -> int:
    config = load_agent_config(args.config)
    live = next(filter(None, map(read_status_file, find_status_file(config.buffer.path))), None)
    if live is None and not config.buffer.path.exists():
        print(
            f"edge-agent status: no buffer yet at {config.buffer.path} (the agent has not run)",
            file=sys.stderr,
        )
        return NO_BUFFER
    report = live or from_buffer(config.vin, config.buffer.path)
    if args.json:
        print(json.dumps({**report.as_json(), "source": "daemon" if live else "buffer file"}))
        return 0
    now = time.time()
    origin = f"running daemon (pid {report.pid})" if live else "buffer file (the daemon is not running)"
    eta = "unknown" if report.drain_eta_s is None else f"{report.drain_eta_s:.0f} s"
    oldest = "none" if report.oldest_age_s is None else f"{report.oldest_age_s:.1f} s old"
    print(f"vin:            {report.vin}")
    print(f"state:          {report.state}   (from the {origin})")
    print(
        f"backlog:        {report.backlog_chunks} chunks, {report.backlog_samples} samples, "
        f"{report.backlog_bytes} bytes; oldest {oldest}"
    )
    print(f"time to drain:  {eta}")
    print(f"last ack:       {_ago(report.last_ack_at, now)}")
    print(
        f"dropped:        {report.dropped_chunks} chunks ({report.dropped_samples} samples) by the buffer cap"
    )
    if live:  # the month's bytes are the daemon's count (agent.budget)
        budget = f" of a {report.monthly_budget_bytes:,} B budget" if report.monthly_budget_bytes else ""
        over = (
            "  OVER BUDGET"
            if report.monthly_budget_bytes and report.month_projected_bytes > report.monthly_budget_bytes
            else ""
        )
        print(
            f"link this month: {report.month_bytes:,} B, projected {report.month_projected_bytes:,} B"
            f"{budget}{over}"
        )
        if report.budget_coarsened:
            print("bounds:         coarsened for the budget (sampling.budget_bounds)")
    for bus in report.buses:  # live buses: what was lost before the agent read it, and the bus's errors
        buffer = f", receive buffer {bus.receive_buffer_bytes:,} B" if bus.receive_buffer_bytes else ""
        print(
            f"{f'bus {bus.channel}:':<15} {bus.state}; "
            f"{bus.kernel_dropped} frames dropped by the kernel, {bus.controller_overflows} by the "
            f"controller; {bus.bus_errors} bus errors, bus-off {bus.bus_off} times{buffer}"
        )
    for entry in report.latest:  # status.signals: the present, while the backlog drains
        print(f"latest:         {entry.name} = {entry.value} at {entry.at:.6f} s")
    print(f"buffer:         {config.buffer.path}")
    return 0
