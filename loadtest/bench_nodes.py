#!/usr/bin/env python3
"""One sbc node against two on one host (`public.reuse_port` + cluster).

    python3 loadtest/bench_nodes.py calls --nodes 1,2 --rates 200,400,800 \\
        --duration 10 --sources 8 [--call-ms 1000] [--json out.json]
    python3 loadtest/bench_nodes.py flood --nodes 1,2 --seconds 5 \\
        --flood-sources 100000 [--payload options|invite] [--json out.json]
    python3 loadtest/bench_nodes.py smoke      # both, tiny: checks the bench runs

calls: for each node count and each offered rate, a fresh group of nodes
(loadtest/nodes.py: one shared public port, an egress and a private socket
per node, the group's own redis-server when there are two or more), a SIPp
VOS3000 stand-in (uas.xml) and --sources SIPp callers (uac.xml), each from
its own loopback address (127.0.0.31, .32, ...) at rate ÷ sources, so the
kernel's 4-tuple hash spreads them over the nodes. Columns: calls ok (of
those offered), INVITE -> 200 p50 / p99 (SIPp's -trace_shortmsg), sbc CPU per
completed call summed over the nodes (every thread's run time,
/proc/PID/task/*/schedstat, from just before the callers start until they
end), and each node's share of the admitted calls.

flood: the C generator (loadtest/flood/generator.py) flat out from
--flood-sources fresh addresses (127.1.0.0 and up, no gateway), bounded by
--seconds and a packet count; handled = what the nodes counted (screen drops
plus engine verdicts, each node's `stopped` line), summed, per generator
second; CPU per handled packet summed over the nodes until they are idle.

A measurement, not a test: it fails only when processes cannot be started.
Everything stays on 127.0.0.0/8; every SIPp run is bounded by -m and
-timeout, the flood by count and seconds; every process is ended by PID.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.bench_calls import percentile, shortmsg_latencies
from loadtest.flood.bench_flood import FLAT_OUT_CAP_PPS
from loadtest.flood.generator import MANY_SOURCES_BASE, Flood, payload
from loadtest.flood.measure import SbcTotals, wait_cpu_settled
from loadtest.harness import REPO, HarnessError, Sipp, format_table, free_ports
from loadtest.nodes import GW, NodeGroup

MAX_SOURCES = 64  # callers on 127.0.0.31 .. 127.0.0.94
FIRST_SOURCE = 31


def caller_source(i: int) -> str:
    return f"127.0.0.{FIRST_SOURCE + i}"


def split_calls(total: int, sources: int) -> list[int]:
    """`total` calls over `sources` callers, the first ones one more."""
    base, extra = divmod(total, sources)
    return [base + (1 if i < extra else 0) for i in range(sources)]


# --------------------------------------------------------------------------
# calls


def calls_step(nodes: int, rate: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One group of `nodes` at `rate` calls per second for args.duration s."""
    workdir = root / f"calls-{nodes}n-{rate}cps"
    total = int(rate * args.duration)
    shares = [n for n in split_calls(total, args.sources) if n]
    (backend,) = free_ports(1)
    budget = args.duration + args.call_ms / 1000 + 30
    row: dict[str, Any] = {"nodes": nodes, "rate": rate, "offered": total, "errors": []}
    group = NodeGroup(workdir, nodes=nodes, backend_port=backend, log_level=args.log_level)
    uas = Sipp("vos3000", "uas.xml", workdir / "uas", local_port=backend, calls=total,
               timeout_s=budget + 10, trace_msg=False, recv_timeout_ms=None)
    callers = []
    for i, n in enumerate(shares):
        source = caller_source(i)
        (port,) = free_ports(1, source)
        per_rate = rate * n / total
        callers.append(Sipp(
            f"caller{i}", "uac.xml", workdir / f"uac{i}", local_ip=source, local_port=port,
            calls=n, timeout_s=budget, remote=group.public, rate=per_rate,
            limit=int(per_rate * (args.call_ms / 1000 + 1) * 3) + 20,
            duration_ms=args.call_ms, trace_msg=False, extra=["-trace_shortmsg"]))
    results = []
    try:
        group.start()
        uas.start().wait_bound()
        cpu0 = group.cpu_seconds()
        for c in callers:
            c.start()
        results = [c.wait() for c in callers]
        cpu_s = group.cpu_seconds() - cpu0
        try:
            uas.wait(5.0)
        except HarnessError:
            pass  # calls lost on the way: the stand-in waits for them; ended by PID
    finally:
        for c in callers:
            c.stop()
        uas.stop()
        row["errors"] += group.stop()
    ok = sum(r.successful for r in results)
    answers: list[float] = []
    for r in results:
        short = r.file("shortmessages.log")
        if short is not None:
            answers += shortmsg_latencies(short)[1]
            if not args.keep:
                short.unlink()
    admitted = [int(s.get("gateways", {}).get(GW, {}).get("admitted", 0))
                for s in group.stopped()]
    row.update(ok=ok, ok_pct=round(100 * ok / max(total, 1), 2),
               answer_p50_ms=_r(percentile(answers, 50)),
               answer_p99_ms=_r(percentile(answers, 99)),
               cpu_s=round(cpu_s, 3),
               cpu_us_per_call=round(cpu_s / ok * 1e6, 1) if ok else None,
               by_node="/".join(str(a) for a in admitted))
    bad = [r.describe(2000) for r in results if r.returncode not in (0, 1)]
    row["errors"] += bad
    return row


CALL_COLUMNS = [
    ("nodes", "nodes", "{}"), ("cps", "rate", "{}"), ("offered", "offered", "{}"),
    ("ok %", "ok_pct", "{:.2f}"), ("200 p50 ms", "answer_p50_ms", "{:.2f}"),
    ("200 p99 ms", "answer_p99_ms", "{:.2f}"), ("cpu us/call", "cpu_us_per_call", "{:.0f}"),
    ("admitted by node", "by_node", "{}"),
]


# --------------------------------------------------------------------------
# flood


def flood_step(nodes: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One flat-out flood from fresh sources at a fresh group of `nodes`."""
    workdir = root / f"flood-{nodes}n"
    (backend,) = free_ports(1)
    row: dict[str, Any] = {"nodes": nodes, "errors": []}
    group = NodeGroup(workdir, nodes=nodes, backend_port=backend, log_level=args.log_level)
    try:
        group.start()
        dst = group.public
        flood = Flood(payload(args.payload, dst, MANY_SOURCES_BASE), dst, workdir,
                      count=args.count or int(args.seconds * FLAT_OUT_CAP_PPS),
                      seconds=args.seconds, src=MANY_SOURCES_BASE,
                      sources=args.flood_sources)
        cpu0 = group.cpu_seconds()
        stats = flood.run()
        cpu_s = wait_cpu_settled(group) - cpu0
    finally:
        row["errors"] += group.stop()
    handled = [SbcTotals.from_stats(s).handled for s in group.stopped()]
    secs = stats.seconds or 1e-9
    row.update(offered_pps=round(stats.sent / secs), sent=stats.sent,
               handled=sum(handled), handled_pps=round(sum(handled) / secs),
               handled_pct=round(100 * sum(handled) / max(stats.sent, 1), 1),
               cpu_s=round(cpu_s, 3),
               cpu_us_per_packet=round(cpu_s / sum(handled) * 1e6, 2) if sum(handled) else None,
               by_node="/".join(str(h) for h in handled))
    return row


FLOOD_COLUMNS = [
    ("nodes", "nodes", "{}"), ("offered pps", "offered_pps", "{}"),
    ("handled pps", "handled_pps", "{}"), ("handled %", "handled_pct", "{:.1f}"),
    ("cpu us/pkt", "cpu_us_per_packet", "{:.2f}"), ("handled by node", "by_node", "{}"),
]


# --------------------------------------------------------------------------


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("calls", "flood", "smoke"))
    p.add_argument("--nodes", type=_ints, default=[1, 2], help="node counts (default 1,2)")
    p.add_argument("--rates", type=_ints, default=[200, 400, 800], help="calls: offered cps steps")
    p.add_argument("--duration", type=float, default=10.0, help="calls: seconds per step")
    p.add_argument("--call-ms", type=int, default=1000, help="calls: hold time (default 1000)")
    p.add_argument("--sources", type=int, default=8, help="calls: caller addresses (default 8)")
    p.add_argument("--flood-sources", type=int, default=100_000,
                   help="flood: fresh source addresses (default 100000)")
    p.add_argument("--seconds", type=float, default=5.0, help="flood: most seconds")
    p.add_argument("--count", type=int, default=0, help="flood: most packets (0: seconds x 2M)")
    p.add_argument("--payload", choices=("options", "invite"), default="options")
    p.add_argument("--log-level", default="info", choices=("info", "debug"),
                   help="sbc log level (its start and stop lines are info)")
    p.add_argument("--json", type=Path, help="write every row to this file")
    p.add_argument("--keep", action="store_true", help="keep SIPp's per-message logs")
    args = p.parse_args(argv)
    if args.mode == "smoke":
        args.rates, args.duration, args.call_ms = [20], 2.0, 200
        args.seconds, args.count = 1.0, 50_000
        args.sources, args.flood_sources = 8, 1000
    problems = [
        ("--nodes: 1 to 8 each", not args.nodes or not all(1 <= n <= 8 for n in args.nodes)),
        ("--rates: 1 to 5000 each", not args.rates or not all(1 <= r <= 5000 for r in args.rates)),
        ("--duration: up to 120 s", not 0 < args.duration <= 120),
        ("--call-ms: 0 to 60000", not 0 <= args.call_ms <= 60_000),
        ("--seconds: up to 60", not 0 < args.seconds <= 60),
        ("--count: up to 20,000,000", not 0 <= args.count <= 20_000_000),
        (f"--sources: 1 to {MAX_SOURCES} callers", not 1 <= args.sources <= MAX_SOURCES),
        ("--flood-sources: 1 to 1,000,000", not 1 <= args.flood_sources <= 1_000_000),
    ]
    for message, bad in problems:
        if bad:
            p.error(message)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = REPO / "loadtest" / "results" / f"nodes-{stamp}"
    rows: dict[str, list[dict[str, Any]]] = {"calls": [], "flood": []}
    if args.mode in ("calls", "smoke"):
        for rate in args.rates:
            for nodes in args.nodes:
                row = calls_step(nodes, rate, args, root)
                rows["calls"].append(row)
                print(json.dumps(row), flush=True)
    if args.mode in ("flood", "smoke"):
        for nodes in args.nodes:
            row = flood_step(nodes, args, root)
            rows["flood"].append(row)
            print(json.dumps(row), flush=True)
    if rows["calls"]:
        print(f"\ncalls ({args.sources} caller addresses, {args.call_ms} ms hold, "
              f"{args.duration:g} s per step)\n" + format_table(rows["calls"], CALL_COLUMNS))
    if rows["flood"]:
        print(f"\nflood ({args.payload} from {args.flood_sources} fresh sources, flat out, "
              f"{args.seconds:g} s)\n" + format_table(rows["flood"], FLOOD_COLUMNS))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         **rows}, indent=1), encoding="utf-8")
    errors = [e for kind in rows.values() for row in kind for e in row["errors"]]
    for e in errors:
        print("error:", e, file=sys.stderr)
    print(f"\nlogs: {root}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
