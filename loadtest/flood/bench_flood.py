#!/usr/bin/env python3
"""Flood benchmark: how many attack packets per second sbc takes off its
public UDP socket and drops, and what each one costs.

    python3 loadtest/flood/bench_flood.py --scenario options|register|invite|many-sources \\
        [--seconds 5] [--repeat 3] [--rate 0] [--sources 1000000] [--payload options] \\
        [--set screen.rate_per_ip.rate=1e9] [--baseline REV] [--json out.json]

For each repeat: a fresh sbc (one gateway, 127.0.0.1 only), a silent UDP
receiver as VOS3000 (it counts any flood packet that gets through), then the
C generator (loadtest/flood/gen.c) sends for --seconds at --rate (0 = as fast
as it can) from 127.0.0.66, or for `many-sources` from --sources distinct
addresses 127.1.0.0, 127.1.0.1, ...  Scenarios:

  options       OPTIONS with User-Agent: friendly-scanner (svmap)
  register      REGISTER brute force on a real account: a nonce sbc issued,
                a random wrong digest response per packet (svcrack)
  invite        INVITE with SDP from a source that is no gateway
  many-sources  --payload (default options) from --sources addresses

Offered is what the generator sent; handled is what sbc itself counted
(screen drops plus engine verdicts, from its `stopped` log line); the
difference is the kernel dropping datagrams sbc did not read in time (its
socket's drop counter in /proc/net/udp).  sbc's CPU time (schedstat run time of
its threads, harness.run_seconds) is read before the flood and after sbc has worked off its
queue, and divided by handled packets.  Peak RSS is VmHWM.  The table shows
medians over the repeats; --json keeps every run.

With --baseline REV the working tree is compared with REV in one invocation
(loadtest/versions.py, as bench_memory.py does): REV is checked out as a
temporary `git worktree` under the run's folder (removed at the end), sbc
runs from each version's folder (checked on the running process), and each
scenario runs baseline, working tree, baseline, working tree, ... --repeat
times each.  The table then shows the medians per version and the change
(working tree - baseline): offered and handled pps, cpu us per packet.

A measurement, not a test.  All traffic goes to 127.0.0.1; the generator is
bounded by a packet count and by --seconds, and every process is ended by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loadtest.flood.generator import (
    FLOOD_MARK,
    KINDS,
    MANY_SOURCES_BASE,
    SCANNER_SOURCE,
    Flood,
    FloodError,
    FloodStats,
    Receiver,
    build,
    fetch_nonce,
    payload,
    udp_counters,
)
from loadtest.flood.measure import udp_socket_drops, wait_cpu_settled
from loadtest.harness import REPO, HarnessError, format_table, medians
from loadtest.targets import Layout, SbcTarget, Server, Target, set_key, stop_server
from loadtest.versions import Version, VersionTarget, announce, delta, open_versions, print_problems

SCENARIOS = ("options", "register", "invite", "many-sources")
#: Flat-out runs still need a packet bound: this many per second of --seconds.
FLAT_OUT_CAP_PPS = 2_000_000


@dataclass
class Run:
    scenario: str
    repeat: int
    payload: str
    sources: int
    rate: float
    offered: int = 0
    offered_pps: float = 0.0
    gen_seconds: float = 0.0
    gen_errors: int = 0
    handled: int = 0
    handled_pps: float = 0.0
    handled_pct: float = 0.0
    received: int | None = None  # sbc's udp_public_received: a cross-check of handled
    screened: int = 0
    engine: int = 0
    socket_drops: int | None = None
    kernel_rcvbuf_errors: int = 0
    unaccounted: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    drops_pps: dict[str, float] = field(default_factory=dict)
    bans: int = 0
    to_backend: int = 0
    forwarded_pps: float = 0.0  # datagrams that reached the VOS3000 side, per second
    cpu_s: float = 0.0
    cpu_pct: float = 0.0
    cpu_us_per_packet: float | None = None
    peak_rss_mib: float = 0.0
    sbc_exit: int | None = None
    errors: list[str] = field(default_factory=list)


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pin every thread of `pid` to `cpus`."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except (ProcessLookupError, PermissionError):
            pass


def cpu_plan(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(generator CPUs, sbc CPUs): two disjoint sets when pinning is asked for
    and at least two CPUs are ours, else (None, None)."""
    if not pin:
        return None, None
    ours = sorted(os.sched_getaffinity(0))
    if len(ours) < 2:
        return None, None
    return {ours[0]}, {ours[1]}


def one_run(
    scenario: str,
    repeat: int,
    args: argparse.Namespace,
    root: Path,
    target: Target | None = None,
    layout: Layout | None = None,
) -> Run:
    """One flood run against a fresh server: sbc (the default) or another
    target, on `layout` (default: everything on 127.0.0.1, free ports)."""
    target = target or SbcTarget(args.log_level, args.set)
    layout = layout or Layout.pick()
    many = scenario == "many-sources"
    kind = args.payload if many else scenario
    sources = args.sources if many else 1
    run = Run(scenario, repeat, kind, sources, args.rate)
    workdir = root / f"{scenario}-{target.name}-run{repeat}"
    workdir.mkdir(parents=True)
    dst = layout.public
    src = MANY_SOURCES_BASE if many else SCANNER_SOURCE
    count = int(args.seconds * (args.rate or FLAT_OUT_CAP_PPS))
    vos = Receiver(layout.backend_port, layout.backend_host, mark=FLOOD_MARK.encode())
    gen_cpus, server_cpus = cpu_plan(args.pin)
    server: Server | None = None
    try:
        vos.start()
        server = target.start(workdir, layout, account=kind == "register")
        if server_cpus:
            pin_process(server.pid, server_cpus)
        nonce = fetch_nonce(dst, src) if kind == "register" else None
        flood = Flood(
            payload(kind, dst, src, nonce),
            dst,
            workdir,
            count=count,
            seconds=args.seconds,
            rate=args.rate,
            src=src,
            sources=sources if many else None,
            cpus=gen_cpus,
        )
        reading = flood_reading(server, layout, flood.run)
        run.peak_rss_mib = round(server.peak_rss_kib() / 1024, 1)
        vos.drain(quiet=0.2, timeout=2.0)
    finally:
        run.sbc_exit = stop_server(server, run.errors)
        vos.close()
    stats = reading.stats
    totals = target.totals(server)
    secs = stats.seconds or 1e-9
    run.offered, run.offered_pps, run.gen_seconds = stats.sent, round(stats.pps), stats.seconds
    run.gen_errors = stats.errors
    run.socket_drops = reading.socket_drops
    run.kernel_rcvbuf_errors = reading.rcvbuf_errors
    if totals is not None:
        # Packets sbc handled before the flood (the nonce request) are not the flood's.
        before = 1 if kind == "register" else 0
        run.screened, run.engine = totals.screened, totals.engine
        run.handled = totals.handled - before
        run.drops = totals.reasons()
        run.bans = totals.bans
        if totals.received is not None:
            run.received = totals.received - before
            if abs(run.received - run.handled) > 10 + run.received // 100:
                run.errors.append(
                    f"sbc counted {run.handled} packets judged but {run.received} "
                    "received on its public UDP socket"
                )
    else:
        # No handled counter: what the kernel did not drop was taken off the
        # socket.  Kamailio's reference config counts its drops by reason.
        run.handled = stats.sent - (run.socket_drops or 0)
        run.drops = dict(getattr(server, "drops", {}))
    run.handled_pps = round(run.handled / secs)
    run.handled_pct = round(100 * run.handled / max(stats.sent, 1), 1)
    run.unaccounted = stats.sent - run.handled - (run.socket_drops or 0)
    run.drops_pps = {k: round(v / secs) for k, v in run.drops.items()}
    run.to_backend = vos.marked
    run.forwarded_pps = round(vos.packets / secs, 1)
    run.cpu_s = round(reading.cpu_s, 3)
    run.cpu_pct = round(100 * reading.cpu_s / secs, 1)
    if run.handled > 0:
        run.cpu_us_per_packet = round(reading.cpu_s / run.handled * 1e6, 2)
    if stats.errors:
        run.errors.append(f"generator send errors: {stats.errno}")
    if run.sbc_exit not in (0, None):
        run.errors.append(f"{target.name} exited {run.sbc_exit} on SIGTERM (see {workdir})")
    if run.to_backend:
        run.errors.append(f"{run.to_backend} flood packets reached the VOS3000 side")
    return run


@dataclass
class FloodReading:
    """What the kernel and /proc say about a server over one flood."""

    stats: FloodStats
    cpu_s: float
    socket_drops: int | None
    rcvbuf_errors: int


def flood_reading(server: Server, layout: Layout, send: Callable[[], FloodStats]) -> FloodReading:
    """Run `send` (a bounded flood) and read around it: the server's CPU time
    from just before until it is idle again, its public socket's kernel drops
    and the machine's UDP RcvbufErrors."""
    udp0 = udp_counters()
    sock0 = udp_socket_drops(layout.public_port, layout.public_host) or 0
    cpu0 = server.cpu_seconds()
    stats = send()
    cpu1 = wait_cpu_settled(server)
    sock1 = udp_socket_drops(layout.public_port, layout.public_host)
    udp1 = udp_counters()
    return FloodReading(
        stats,
        cpu1 - cpu0,
        None if sock1 is None else sock1 - sock0,
        udp1["RcvbufErrors"] - udp0["RcvbufErrors"],
    )


NUMERIC = [
    "offered",
    "offered_pps",
    "handled",
    "handled_pps",
    "handled_pct",
    "socket_drops",
    "kernel_rcvbuf_errors",
    "unaccounted",
    "bans",
    "to_backend",
    "forwarded_pps",
    "cpu_s",
    "cpu_pct",
    "cpu_us_per_packet",
    "peak_rss_mib",
]


def median_of(runs: list[Run]) -> dict[str, Any]:
    out: dict[str, Any] = medians((asdict(r) for r in runs), NUMERIC)
    reasons = sorted({k for r in runs for k in r.drops_pps})
    out["drops_pps"] = {
        k: statistics.median([r.drops_pps.get(k, 0) for r in runs]) for k in reasons
    }
    return out


COLUMNS = [
    ("scenario", "scenario", "{}"),
    ("offered pps", "offered_pps", "{:.0f}"),
    ("handled pps", "handled_pps", "{:.0f}"),
    ("handled %", "handled_pct", "{:.1f}"),
    ("sock drops", "socket_drops", "{:.0f}"),
    ("cpu %", "cpu_pct", "{:.0f}"),
    ("cpu us/pkt", "cpu_us_per_packet", "{:.2f}"),
    ("rss MiB", "peak_rss_mib", "{:.1f}"),
    ("bans", "bans", "{:.0f}"),
    ("to VOS", "to_backend", "{:.0f}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    return format_table(rows, COLUMNS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenario",
        default="options",
        help=f"one or more of {', '.join(SCENARIOS)}, comma-separated (default options)",
    )
    p.add_argument("--seconds", type=float, default=5.0, help="flood length per run (default 5)")
    p.add_argument("--repeat", type=int, default=3, help="runs per scenario; medians (default 3)")
    p.add_argument(
        "--rate", type=float, default=0.0, help="offered packets per second; 0 = flat out (default)"
    )
    p.add_argument(
        "--sources",
        type=int,
        default=1_000_000,
        help="many-sources: distinct source addresses (default 1000000)",
    )
    p.add_argument(
        "--payload", choices=KINDS, default="options", help="many-sources: what each source sends"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an sbc config key (YAML value), e.g. screen.rate_per_ip.rate=1e9",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the generator and sbc to one CPU each (default: the scheduler places them)",
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="git revision to compare with the working tree, runs alternated "
        "(default: the working tree only)",
    )
    p.add_argument("--json", type=Path, help="write all runs and medians to this file")
    p.add_argument(
        "--workdir", type=Path, help="where runs keep their files (default loadtest/results/<time>)"
    )
    args = p.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    bad = [s for s in args.scenarios if s not in SCENARIOS]
    if bad or not args.scenarios:
        p.error(f"--scenario: {', '.join(bad) or 'none given'}; choose from {', '.join(SCENARIOS)}")
    if not 0 < args.seconds <= 120:
        p.error("--seconds: 0 < seconds <= 120")
    if args.repeat < 1:
        p.error("--repeat: at least 1")
    if args.rate < 0 or args.rate > FLAT_OUT_CAP_PPS:
        p.error(f"--rate: 0 (flat out) .. {FLAT_OUT_CAP_PPS}")
    if not 1 <= args.sources <= 4_000_000:
        p.error("--sources: 1 .. 4000000")
    for assignment in args.set:
        try:
            set_key({}, assignment)
        except (TypeError, ValueError) as e:
            p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        binary = build()
    except FloodError as e:
        print(f"bench_flood: {e}", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = args.workdir or REPO / "loadtest" / "results" / f"flood-{stamp}"
    root.mkdir(parents=True, exist_ok=True)
    if args.baseline is not None:
        root = root.resolve()
        try:
            with open_versions(args.baseline, root, "bench_flood") as versions:
                return compare_versions(args, root, stamp, binary, versions)
        except subprocess.CalledProcessError as e:
            print(f"bench_flood: {' '.join(e.cmd)}: {(e.stderr or '').strip()}", file=sys.stderr)
            return 1
        except HarnessError as e:
            print(f"bench_flood: {e}", file=sys.stderr)
            return 1
    print(
        f"bench_flood: {', '.join(args.scenarios)}; {args.seconds:g}s per run at "
        f"{'flat out' if not args.rate else f'{args.rate:g} pps'}, {args.repeat} repeat(s); "
        f"files in {root}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for scenario in args.scenarios:
        runs: list[Run] = []
        for repeat in range(1, args.repeat + 1):
            try:
                run = one_run(scenario, repeat, args, root)
            except (HarnessError, OSError, subprocess.SubprocessError, TypeError, ValueError) as e:
                print(f"bench_flood: {scenario} run {repeat} failed to run: {e}", file=sys.stderr)
                return 1
            runs.append(run)
            note = f"  ! {'; '.join(run.errors)}" if run.errors else ""
            top = ", ".join(f"{k} {v}" for k, v in list(run.drops_pps.items())[:4])
            print(
                f"  {scenario} run {repeat}: offered {run.offered_pps:.0f} pps, "
                f"handled {run.handled_pps:.0f} pps ({run.handled_pct}%), "
                f"socket drops {run.socket_drops}, cpu {run.cpu_us_per_packet} us/pkt "
                f"({run.cpu_pct}%), rss {run.peak_rss_mib} MiB, bans {run.bans}; "
                f"pps by reason: {top}{note}",
                flush=True,
            )
            time.sleep(0.2)
        med = median_of(runs)
        rows.append({"scenario": scenario, **med})
        results.append({"scenario": scenario, "median": med, "runs": [asdict(r) for r in runs]})

    print()
    print(
        f"median of {args.repeat} run(s); offered = generator (gen.c) send rate; handled = "
        "packets sbc counted (screen drops + engine verdicts) / flood seconds; sock drops = "
        "kernel drops at sbc's public socket; cpu = sbc CPU (schedstat) per handled packet"
    )
    print(table(rows))
    print()
    for row in rows:
        reasons = ", ".join(f"{k} {v:.0f}" for k, v in row["drops_pps"].items())
        print(f"{row['scenario']}: pps by reason: {reasons}")
    if args.json:
        doc = {"meta": run_meta(args, stamp, binary, root), "results": results}
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def run_meta(args: argparse.Namespace, stamp: str, binary: Path, root: Path) -> dict[str, Any]:
    """What a run's JSON says about how it was made (both modes)."""
    return {
        "started": stamp,
        "scenarios": args.scenarios,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "rate": args.rate,
        "sources": args.sources,
        "payload": args.payload,
        "set": args.set,
        "log_level": args.log_level,
        "cpus": os.cpu_count(),
        "pinned": {
            k: sorted(v) if v else None
            for k, v in zip(("generator", "sbc"), cpu_plan(args.pin), strict=True)
        },
        "python": platform.python_version(),
        "generator": str(binary),
        "workdir": str(root),
    }


# --------------------------------------------------------------------------
# --baseline REV: two code versions, alternated


def run_line(label: str, run: Run) -> str:
    note = f"  ! {'; '.join(run.errors)}" if run.errors else ""
    top = ", ".join(f"{k} {v}" for k, v in list(run.drops_pps.items())[:4])
    return (
        f"  {label} run {run.repeat}: offered {run.offered_pps:.0f} pps, "
        f"handled {run.handled_pps:.0f} pps ({run.handled_pct}%), "
        f"socket drops {run.socket_drops}, cpu {run.cpu_us_per_packet} us/pkt "
        f"({run.cpu_pct}%), rss {run.peak_rss_mib} MiB, bans {run.bans}; "
        f"pps by reason: {top}{note}"
    )


#: (heading, key, format) of the table with --baseline; every cell is text.
COMPARE_COLUMNS = [
    ("scenario", "scenario"),
    ("version", "version"),
    ("offered pps", "offered_pps"),
    ("handled pps", "handled_pps"),
    ("handled %", "handled_pct"),
    ("sock drops", "socket_drops"),
    ("cpu %", "cpu_pct"),
    ("cpu us/pkt", "cpu_us_per_packet"),
    ("rss MiB", "peak_rss_mib"),
    ("bans", "bans"),
    ("to VOS", "to_backend"),
]
_FORMATS = {key: fmt for _, key, fmt in COLUMNS}


def _cell(key: str, value: Any) -> str:
    return "-" if value is None else _FORMATS.get(key, "{}").format(value)


def _change(key: str, base: float | None, work: float | None) -> str:
    """`+d (+p%)` for the columns compared, blank for the others."""
    diff = delta(base, work)
    if diff is None:
        return "-"
    digits = 2 if key == "cpu_us_per_packet" else 0
    pct = delta(base, work, percent=True)
    return f"{diff:+.{digits}f}" + ("" if pct is None else f" ({pct:+.1f}%)")


CHANGED = ("offered_pps", "handled_pps", "cpu_us_per_packet")


def compare_rows(
    scenario: str, labels: list[str], meds: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """One text row per version, then the change working tree - baseline."""
    rows = [
        {"scenario": scenario, "version": label}
        | {key: _cell(key, med.get(key)) for _, key in COMPARE_COLUMNS[2:]}
        for label, med in zip(labels, meds, strict=True)
    ]
    base, work = meds
    change = {"scenario": scenario, "version": "change"}
    change |= {key: _change(key, base.get(key), work.get(key)) if key in CHANGED else ""
               for _, key in COMPARE_COLUMNS[2:]}
    return [*rows, change]


def compare_table(rows: list[dict[str, str]]) -> str:
    return format_table(rows, [(head, key, "{}") for head, key in COMPARE_COLUMNS])


def compare_versions(
    args: argparse.Namespace, root: Path, stamp: str, binary: Path, versions: list[Version]
) -> int:
    """Each scenario: baseline, working tree, baseline, ... --repeat times each."""
    announce(versions, "bench_flood")
    print(
        f"bench_flood: {', '.join(args.scenarios)}; {args.seconds:g}s per run at "
        f"{'flat out' if not args.rate else f'{args.rate:g} pps'}, {args.repeat} repeat(s) "
        f"per version, alternated; files in {root}",
        flush=True,
    )
    loadavg_at_start = os.getloadavg()
    print(f"bench_flood: load average {loadavg_at_start[0]:.2f} on {os.cpu_count()} CPUs "
          "(other work on the machine moves the figures)", flush=True)
    targets = [VersionTarget(v, args.log_level, args.set) for v in versions]
    labels = [v.label for v in versions]
    results: list[dict[str, Any]] = []
    rows: list[dict[str, str]] = []
    reasons: list[str] = []
    problems: list[str] = []
    for scenario in args.scenarios:
        runs: list[list[Run]] = [[] for _ in versions]
        codes: list[list[str]] = [[] for _ in versions]
        for repeat in range(1, args.repeat + 1):
            for i, target in enumerate(targets):
                try:
                    run = one_run(scenario, repeat, args, root, target=target)
                except (HarnessError, OSError, subprocess.SubprocessError, TypeError,
                        ValueError) as e:
                    print(f"bench_flood: {scenario} {labels[i]} run {repeat} failed to run: {e}",
                          file=sys.stderr)
                    return 1
                runs[i].append(run)
                codes[i].append(target.fingerprints[-1])
                problems += [f"{scenario} {labels[i]} run {repeat}: {m}" for m in run.errors]
                print(run_line(f"{scenario} {labels[i]}", run), flush=True)
                time.sleep(0.2)
        meds = [median_of(r) for r in runs]
        rows += compare_rows(scenario, labels, meds)
        for label, med in zip(labels, meds, strict=True):
            top = ", ".join(f"{k} {v:.0f}" for k, v in med["drops_pps"].items())
            reasons.append(f"{scenario}, {label}: pps by reason: {top}")
        for version, cs in zip(versions, codes, strict=True):
            if len(set(cs)) > 1:
                problems.append(f"{scenario} {version.label}: sbc/ changed during the benchmark; "
                                f"runs used {len(set(cs))} different codes ({', '.join(cs)})")
        results.append({
            "scenario": scenario,
            "versions": [
                {"version": asdict(v) | {"code_dir": str(v.code_dir)}, "codes": cs,
                 "median": med, "runs": [asdict(r) for r in rs]}
                for v, cs, med, rs in zip(versions, codes, meds, runs, strict=True)
            ],
            "change": {key: delta(meds[0].get(key), meds[1].get(key)) for key in NUMERIC},
        })

    print()
    print(
        f"median of {args.repeat} run(s) per version, alternated; offered = generator (gen.c) "
        "send rate; handled = packets sbc counted (screen drops + engine verdicts) / flood "
        "seconds; sock drops = kernel drops at sbc's public socket; cpu = sbc CPU (schedstat) per "
        "handled packet; change = working tree - baseline (in % of the baseline)"
    )
    print(compare_table(rows))
    print()
    for line in reasons:
        print(line)
    print_problems(problems)
    if args.json:
        meta = run_meta(args, stamp, binary, root)
        meta.update(baseline=args.baseline,
                    versions=[asdict(v) | {"code_dir": str(v.code_dir)} for v in versions],
                    loadavg_at_start=loadavg_at_start, loadavg_at_end=os.getloadavg())
        doc = {"meta": meta, "table": rows, "results": results}
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
