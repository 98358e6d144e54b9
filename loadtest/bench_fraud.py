"""What the toll-fraud watch costs a call, with sockets: sbc without fraud
rules against sbc with ten rules that every call matches (no prefix, no
window, thresholds no call reaches), alternated in one run.

    .venv/bin/python loadtest/bench_fraud.py --rates 500 --duration 10 --repeat 3

Each run is `bench_calls.one_run` (SIPp caller -> sbc -> SIPp VOS3000, 1 s
calls, sbc's CPU from /proc per completed call); the two configs differ only
in the `fraud` section.  Ten rules matching every call is the dearest case:
every call is counted under each rule for each figure (calls per minute,
calls in progress, calls and minutes per day, sequential calls).  A
measurement, not a test: traffic stays on loopback, every SIPp run is bounded
and every process is ended by PID.
"""

from __future__ import annotations

import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest import bench_calls  # noqa: E402
from loadtest.targets import SbcTarget  # noqa: E402

HIGH = 1_000_000  # a threshold no benchmark call reaches


def ten_rules() -> list[dict[str, Any]]:
    """Ten rules every call matches, none of which ever trips."""
    figure = {"warning": HIGH, "critical": HIGH}
    return [{"name": f"r{i}", "thresholds": {
        "calls_per_minute": figure, "concurrent": figure, "calls_per_day": figure,
        "minutes_per_day": figure, "sequential": figure}} for i in range(10)]


def main(argv: list[str] | None = None) -> int:
    args = bench_calls.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = args.workdir or bench_calls.REPO / "loadtest" / "results" / f"fraud-{stamp}"
    variants = {"no rules": SbcTarget(args.log_level),
                "ten rules": SbcTarget(args.log_level, [f"fraud.rules={ten_rules()!r}"])}
    per: dict[str, dict[int, list[float]]] = {v: {r: [] for r in args.rate_list} for v in variants}
    for rate in args.rate_list:
        for repeat in range(1, args.repeat + 1):
            for name, target in variants.items():
                run = bench_calls.one_run(rate, repeat, args, root / name.replace(" ", "-"),
                                          target=target)
                if run.errors or run.cpu_us_per_call is None:
                    print(f"bench_fraud: {name} at {rate} cps: {run.errors}", file=sys.stderr)
                    return 1
                per[name][rate].append(run.cpu_us_per_call)
                print(f"  {rate:>5} cps {name:>9} run {repeat}: {run.succeeded}/{run.attempted} "
                      f"ok, {run.cpu_us_per_call} us/call", flush=True)
    print("\nCPU per call (median of runs, lowest-highest)")
    for rate in args.rate_list:
        base = statistics.median(per["no rules"][rate])
        for name in variants:
            vals = per[name][rate]
            med = statistics.median(vals)
            print(f"{rate:>5} cps  {name:>9}: {med:7.1f} us ({min(vals):.1f}-{max(vals):.1f})"
                  f"  {100 * (med - base) / base:+.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
