#!/usr/bin/env python3
"""Memory-per-ended-call and CPU-per-call benchmark, two code versions side by side.

    .venv/bin/python loadtest/bench_memory.py --baseline 099a1df [--calls 20000] \\
        [--rate 200] [--repeat 3] [--skip-cpu] [--json out.json]

Memory (does an ended call leave memory behind?): one sbc process per run,
SIPp caller (uac.xml) -> sbc -> SIPp VOS3000 stand-in (uas.xml), UDP, calls
of --call-ms.  Phase 1 places --first-sample calls (2,000) at --rate (200
cps); when both SIPp processes have exited every call of the phase has ended
(SIPp's SuccessfulCall + FailedCall).  sbc is then left until what it
keeps of ended calls has gone: the transaction linger
(sip.transaction_linger_s, 32 s) has passed, its own tables are empty (its
`summary` log line reports 0 transactions and 0 dialogs) and its CPU is
idle; then VmRSS is read from /proc/PID/status.  Phase 2 places the
remaining calls (--calls minus --first-sample) against the same sbc
process; the same drain, the second VmRSS.  Growth = (RSS2 - RSS1) /
(ended calls in phase 2 / 1000), in KiB per 1,000 ended calls.  The goal
(printed, never asserted) is at most 300.

CPU: a fresh sbc per run, --cpu-rate (1000) cps for --cpu-seconds (10),
bench_calls.one_run: the run time of every thread of the server
(/proc/PID/task/*/schedstat, as every harness here counts it) over the
caller's run, divided by completed calls.

Versions: the working tree and, with --baseline REV, REV checked out as a
temporary `git worktree` under the run's folder in loadtest/results/ (removed
at the end).  sbc runs from a version's folder (it is the cwd of
`python -m sbc run` and first on PYTHONPATH); this is checked on the running
process (loadtest/versions.py, shared with flood/bench_flood.py).  Runs
alternate: baseline, working tree, baseline, ...; the table shows medians
of --repeat runs.

A measurement, not a test: it fails only when processes cannot be started.
All traffic is on 127.0.0.1, every SIPp run is bounded by -m and -timeout,
every wait has a deadline and every process is ended by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest import bench_calls
from loadtest.flood.measure import wait_cpu_settled
from loadtest.harness import (
    LOOPBACK,
    REPO,
    HarnessError,
    SbcProcess,
    format_table,
    medians,
    run_pair,
    sipp_binary,
)
from loadtest.targets import Layout, stop_server
from loadtest.versions import (
    Version,
    VersionSbc,
    VersionTarget,
    announce,
    open_versions,
    print_problems,
)

GOAL_KIB_PER_1000 = 300.0
SBC_LINGER_S = 32.0  # sip.transaction_linger_s when the config does not set it
PROBE = b"bench_memory drain probe\r\n\r\n"  # not SIP: one parse error on the private side


# --------------------------------------------------------------------------
# /proc and sbc's own figures


def status_kib(pid: int, *keys: str) -> dict[str, int]:
    """Fields of /proc/PID/status in KiB (VmRSS, VmHWM, RssAnon, ...)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in keys:
                out[name] = int(value.split()[0])
    return out


def latest_summary(sbc: SbcProcess) -> dict[str, Any] | None:
    found = sbc.named("summary")
    return found[-1] if found else None


def wait_drained(
    sbc: SbcProcess, private: tuple[str, int], min_wait: float, timeout: float
) -> dict[str, Any]:
    """Wait until the calls just ended have left sbc: at least `min_wait`
    seconds (the transaction linger, the longest any entry of an ended call
    is kept, plus a margin) and until sbc's `summary` line says 0
    transactions and 0 dialogs.  That line comes every
    logging.summary_interval_s, but only when a counter moved: a non-SIP
    datagram to the private socket once a second moves one (one parse error;
    the private side is not screened and earns no offense), so a fresh line
    keeps coming while no calls run.  Then until sbc's CPU is idle.  Returns
    whether the tables were seen empty, when first, and what was last seen."""
    started = time.monotonic()
    deadline = started + max(timeout, min_wait + 10.0)
    seen = latest_summary(sbc)
    last: dict[str, Any] = {}
    empty_at: float | None = None
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((LOOPBACK, 0))
        next_probe = 0.0
        while (now := time.monotonic()) < deadline:
            if empty_at is not None and now - started >= min_wait:
                break
            if now >= next_probe:
                probe.sendto(PROBE, private)
                next_probe = now + 1.0
            current = latest_summary(sbc)
            if current is not None and current is not seen:
                seen = current
                last = {"transactions": current.get("transactions"),
                        "dialogs": current.get("dialogs")}
                empty = last["transactions"] == 0 and last["dialogs"] == 0
                if empty and empty_at is None:
                    empty_at = now
                elif not empty:
                    empty_at = None
            time.sleep(0.1)
    finally:
        probe.close()
    wait_cpu_settled(sbc, quiet=0.3, timeout=10.0)
    return {"drained": empty_at is not None,
            "tables_empty_s": None if empty_at is None else round(empty_at - started, 1),
            "drain_s": round(time.monotonic() - started, 1),
            "left_transactions": last.get("transactions"), "left_dialogs": last.get("dialogs")}


# --------------------------------------------------------------------------
# One memory run


@dataclass
class Sample:
    ended_calls: int  # cumulative: SuccessfulCall + FailedCall of the callers so far
    succeeded: int
    failed: int
    vm_rss_kib: int
    rss_anon_kib: int | None
    vm_hwm_kib: int
    rss_end_of_load_kib: int  # VmRSS right after the callers exited, before the drain
    drained: bool  # sbc's summary line said 0 transactions, 0 dialogs
    tables_empty_s: float | None  # seconds after the callers exited that it first did
    drain_s: float  # seconds after the callers exited that VmRSS was read
    left_transactions: int | None
    left_dialogs: int | None
    achieved_cps: float
    phase_wall_s: float


@dataclass
class MemRun:
    version: str
    repeat: int
    code: str  # code_fingerprint of the sbc that ran
    rate: float
    call_ms: int
    linger_s: float | None
    samples: list[Sample] = field(default_factory=list)
    kib_per_1000: float | None = None
    kib_per_1000_end_of_load: float | None = None  # the same from the readings before the drain
    rss_first_kib: int | None = None
    rss_last_kib: int | None = None
    failed: int = 0
    sbc_setups: int | None = None  # call_setup / call_end lines in sbc's log (all phases)
    sbc_ends: int | None = None
    stopped_transactions: int | None = None
    stopped_dialogs: int | None = None
    sbc_exit: int | None = None
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def count_events(log: Path, *names: str) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line).get("event")
            except (ValueError, AttributeError):
                continue
            if event in counts:
                counts[event] += 1
    return counts


def memory_run(
    target: VersionTarget, repeat: int, args: argparse.Namespace, root: Path
) -> MemRun:
    run = MemRun(target.version.label, repeat, "", args.rate, args.call_ms, args.linger_s)
    workdir = root / f"memory-{target.name}-run{repeat}"
    workdir.mkdir(parents=True)
    layout = Layout.pick(gateway="127.0.0.0/8")
    private = (layout.private_host, layout.private_port)
    linger = args.linger_s if args.linger_s is not None else SBC_LINGER_S
    phases = [args.first_sample, args.calls - args.first_sample]
    started = time.monotonic()
    server: VersionSbc | None = None
    ended = succeeded = failed = 0
    try:
        server = target.start(workdir, layout)
        run.code = target.fingerprints[-1]
        for n, calls in enumerate(phases, 1):
            t0 = time.monotonic()
            uas, uac = bench_calls.call_pair(
                args.rate, calls, args.call_ms, workdir / f"phase{n}", layout,
                fine_latency=False,
            )
            uas_res, uac_res = run_pair(uas, uac)
            end_of_load = status_kib(server.pid, "VmRSS")["VmRSS"]
            phase = bench_calls.Run(rate=int(args.rate), transport="udp", repeat=repeat,
                                    calls=calls)
            bench_calls.read_call_results(phase, uac_res, uas_res, args.call_ms)
            if phase.uac_exit not in (0, 1) or phase.uas_exit not in (0, 1):
                run.errors.append(
                    f"phase {n}: SIPp exit codes caller {phase.uac_exit}, "
                    f"vos3000 {phase.uas_exit} (see {workdir / f'phase{n}'})"
                )
            ended += phase.succeeded + phase.failed
            succeeded += phase.succeeded
            failed += phase.failed
            drain = wait_drained(server, private, min_wait=linger + 2.0, timeout=linger + 60.0)
            if not drain["drained"]:
                run.errors.append(
                    f"phase {n}: sbc's tables not empty after {drain['drain_s']} s "
                    f"(last summary: {drain['left_transactions']} transactions, "
                    f"{drain['left_dialogs']} dialogs)"
                )
            mem = status_kib(server.pid, "VmRSS", "VmHWM", "RssAnon")
            run.samples.append(Sample(
                ended_calls=ended, succeeded=succeeded, failed=failed,
                vm_rss_kib=mem["VmRSS"], rss_anon_kib=mem.get("RssAnon"),
                vm_hwm_kib=mem["VmHWM"], rss_end_of_load_kib=end_of_load,
                achieved_cps=phase.achieved_cps,
                phase_wall_s=round(time.monotonic() - t0, 1), **drain,
            ))
    finally:
        run.sbc_exit = stop_server(server, run.errors)
    run.wall_s = round(time.monotonic() - started, 1)
    run.failed = failed
    if server is not None:
        stopped = server.named("stopped")
        if stopped:
            run.stopped_transactions = stopped[-1].get("transactions")
            run.stopped_dialogs = stopped[-1].get("dialogs")
        counts = count_events(workdir / "sbc.stdout.log", "call_setup", "call_end")
        run.sbc_setups, run.sbc_ends = counts["call_setup"], counts["call_end"]
    if len(run.samples) == 2:
        first, last = run.samples
        run.rss_first_kib, run.rss_last_kib = first.vm_rss_kib, last.vm_rss_kib
        between = last.ended_calls - first.ended_calls
        if between > 0:
            run.kib_per_1000 = round(
                (last.vm_rss_kib - first.vm_rss_kib) / (between / 1000), 1
            )
            run.kib_per_1000_end_of_load = round(
                (last.rss_end_of_load_kib - first.rss_end_of_load_kib) / (between / 1000), 1
            )
    if run.sbc_exit not in (0, None):
        run.errors.append(f"sbc exited {run.sbc_exit} on SIGTERM (see {workdir})")
    return run


# --------------------------------------------------------------------------
# Output

COLUMNS = [
    ("version", "version", "{}"),
    ("RSS @first MiB", "rss_first_mib", "{:.1f}"),
    ("RSS @last MiB", "rss_last_mib", "{:.1f}"),
    ("KiB/1000 calls", "kib_per_1000", "{:.1f}"),
    ("goal<=300", "goal", "{}"),
    ("cpu us/call", "cpu_us_per_call", "{:.0f}"),
    ("failed mem", "mem_failed", "{:.0f}"),
    ("failed cpu", "cpu_failed", "{:.0f}"),
]

MEM_KEYS = ["rss_first_kib", "rss_last_kib", "kib_per_1000", "kib_per_1000_end_of_load",
            "failed", "wall_s"]
CPU_KEYS = ["cpu_us_per_call", "failed", "succeeded", "attempted", "achieved_cps", "cpu_s"]


def summarize(mem: list[MemRun], cpu: list[bench_calls.Run]) -> dict[str, Any]:
    m = medians((asdict(r) for r in mem), MEM_KEYS)
    c = medians((asdict(r) for r in cpu), CPU_KEYS)
    return {"memory": m, "cpu": c}


def table_row(label: str, med: dict[str, Any]) -> dict[str, Any]:
    m, c = med["memory"], med["cpu"]
    per = m.get("kib_per_1000")
    return {
        "version": label,
        "rss_first_mib": None if m.get("rss_first_kib") is None else m["rss_first_kib"] / 1024,
        "rss_last_mib": None if m.get("rss_last_kib") is None else m["rss_last_kib"] / 1024,
        "kib_per_1000": per,
        "goal": None if per is None else ("met" if per <= GOAL_KIB_PER_1000 else "MISSED"),
        "cpu_us_per_call": c.get("cpu_us_per_call"),
        "mem_failed": m.get("failed"),
        "cpu_failed": c.get("failed"),
    }


def delta_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    base, work = rows
    out: dict[str, Any] = {"version": "working - baseline"}
    for key in ("rss_first_mib", "rss_last_mib", "kib_per_1000", "cpu_us_per_call",
                "mem_failed", "cpu_failed"):
        a, b = base.get(key), work.get(key)
        out[key] = None if a is None or b is None else b - a
    return out


# --------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--baseline", metavar="REV",
                   help="git revision to compare with the working tree "
                        "(default: the working tree only)")
    p.add_argument("--calls", type=int, default=20000,
                   help="memory: ended calls at the second RSS sample (default 20000)")
    p.add_argument("--first-sample", type=int, default=2000,
                   help="memory: ended calls at the first RSS sample (default 2000)")
    p.add_argument("--rate", type=float, default=200.0,
                   help="memory: calls per second (default 200)")
    p.add_argument("--call-ms", type=int, default=1000,
                   help="time between ACK and BYE, SIPp -d, both parts (default 1000)")
    p.add_argument("--linger-s", type=float, default=None,
                   help="memory: sip.transaction_linger_s for sbc (default: sbc's own, 32 s); "
                        "the drain before each RSS sample lasts at least this + 2 s")
    p.add_argument("--cpu-rate", type=int, default=1000,
                   help="CPU: calls per second (default 1000)")
    p.add_argument("--cpu-seconds", type=float, default=10.0,
                   help="CPU: seconds of load, cpu-rate x cpu-seconds calls (default 10)")
    p.add_argument("--repeat", type=int, default=3, help="runs per version; medians (default 3)")
    p.add_argument("--skip-cpu", action="store_true", help="memory part only")
    p.add_argument("--skip-memory", action="store_true", help="CPU part only")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="sbc logging.level (default info, what production runs)")
    p.add_argument("--json", type=Path, help="write every run and the medians to this file")
    p.add_argument("--workdir", type=Path,
                   help="run files (default loadtest/results/memory-<UTC time>)")
    args = p.parse_args(argv)
    if not 0 < args.first_sample < args.calls:
        p.error("need 0 < --first-sample < --calls")
    if args.calls > 1_000_000 or args.cpu_rate * args.cpu_seconds > 1_000_000:
        p.error("more than 1,000,000 calls in one run")
    if args.rate <= 0 or args.cpu_rate < 1 or args.cpu_seconds <= 0 or args.repeat < 1:
        p.error("--rate, --cpu-rate, --cpu-seconds must be > 0 and --repeat >= 1")
    if args.skip_cpu and args.skip_memory:
        p.error("--skip-cpu and --skip-memory together leave nothing to run")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sipp_binary() is None:
        print("bench_memory: sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = (args.workdir or REPO / "loadtest" / "results" / f"memory-{stamp}").resolve()
    root.mkdir(parents=True, exist_ok=True)
    with open_versions(args.baseline, root, "bench_memory") as chosen:
        return _bench(args, root, stamp, chosen)


def _bench(args: argparse.Namespace, root: Path, stamp: str, versions: list[Version]) -> int:
    mem_sets = ["logging.summary_interval_s=1"]  # the drain check reads the summary line
    if args.linger_s is not None:
        mem_sets.append(f"sip.transaction_linger_s={args.linger_s:g}")
    tags = [v.tag for v in versions]
    announce(versions, "bench_memory")
    memory = f"{args.first_sample} then {args.calls} ended calls at {args.rate:g} cps"
    cpu = f"{args.cpu_rate} cps x {args.cpu_seconds:g}s"
    print(
        f"bench_memory: memory {'skipped' if args.skip_memory else memory}"
        f"; cpu {'skipped' if args.skip_cpu else cpu}"
        f"; calls of {args.call_ms} ms; {args.repeat} repeat(s); files in {root}",
        flush=True,
    )
    loadavg_at_start = os.getloadavg()
    print(f"bench_memory: load average {loadavg_at_start[0]:.2f} on {os.cpu_count()} CPUs "
          "(other work on the machine moves the CPU figures)", flush=True)
    cpu_args = argparse.Namespace(duration=args.cpu_seconds, transport="udp",
                                  call_ms=args.call_ms, fine_latency=False, keep=False,
                                  log_level=args.log_level)
    mem_runs: dict[str, list[MemRun]] = {t: [] for t in tags}
    cpu_runs: dict[str, list[bench_calls.Run]] = {t: [] for t in tags}
    cpu_codes: dict[str, list[str]] = {t: [] for t in tags}
    for repeat in range(1, args.repeat + 1):
        for tag, version in zip(tags, versions, strict=True):
            if args.skip_memory:
                continue
            target = VersionTarget(version, args.log_level, mem_sets, tag)
            try:
                run = memory_run(target, repeat, args, root)
            except (HarnessError, OSError, subprocess.SubprocessError) as e:
                print(f"bench_memory: memory run failed to run: {e}", file=sys.stderr)
                return 1
            mem_runs[tag].append(run)
            s = run.samples
            note = f"  ! {'; '.join(run.errors)}" if run.errors else ""
            print(
                f"  memory {version.label} run {repeat}: RSS {s[0].vm_rss_kib} KiB at "
                f"{s[0].ended_calls} ended, {s[1].vm_rss_kib} KiB at {s[1].ended_calls} ended "
                f"-> {run.kib_per_1000} KiB/1000 calls; {run.failed} failed; "
                f"{run.wall_s}s{note}",
                flush=True,
            )
        for tag, version in zip(tags, versions, strict=True):
            if args.skip_cpu:
                continue
            target = VersionTarget(version, args.log_level, [], tag)
            try:
                crun = bench_calls.one_run(args.cpu_rate, repeat, cpu_args, root, target=target)
            except (HarnessError, OSError, subprocess.SubprocessError) as e:
                print(f"bench_memory: cpu run failed to run: {e}", file=sys.stderr)
                return 1
            cpu_runs[tag].append(crun)
            cpu_codes[tag].append(target.fingerprints[-1] if target.fingerprints else "")
            note = f"  ! {'; '.join(crun.errors)}" if crun.errors else ""
            print(
                f"  cpu    {version.label} run {repeat}: {crun.succeeded}/{crun.attempted} ok, "
                f"{crun.failed} failed, {crun.achieved_cps} cps, "
                f"cpu {crun.cpu_us_per_call} us/call{note}",
                flush=True,
            )

    results = []
    rows = []
    changed = []
    for tag, version in zip(tags, versions, strict=True):
        med = summarize(mem_runs[tag], cpu_runs[tag])
        rows.append(table_row(version.label, med))
        codes = sorted({r.code for r in mem_runs[tag]} | set(cpu_codes[tag]))
        if len(codes) > 1:
            changed.append(f"{version.label}: sbc/ changed during the benchmark; "
                           f"runs used {len(codes)} different codes ({', '.join(codes)})")
        results.append({
            "version": asdict(version) | {"code_dir": str(version.code_dir), "codes": codes},
            "median": med,
            "memory_runs": [asdict(r) for r in mem_runs[tag]],
            "cpu_runs": [asdict(r) | {"code": c}
                         for r, c in zip(cpu_runs[tag], cpu_codes[tag], strict=True)],
        })
    shown = rows + ([delta_row(rows)] if len(rows) == 2 else [])

    print()
    print(
        f"median of {args.repeat} run(s) per version.  RSS = VmRSS once sbc's tables are empty "
        f"after {args.first_sample} (@first) and {args.calls} (@last) ended calls at "
        f"{args.rate:g} cps; KiB/1000 calls = growth between the two per 1,000 calls ended "
        f"in between (goal <= {GOAL_KIB_PER_1000:.0f}, not enforced); cpu = schedstat run time per "
        f"successful call at {args.cpu_rate} cps"
    )
    print(format_table(shown, COLUMNS))
    problems = changed + [e for runs in mem_runs.values() for r in runs for e in r.errors]
    problems += [e for runs in cpu_runs.values() for r in runs for e in r.errors]
    print_problems(problems)
    if args.json:
        doc = {
            "meta": {
                "started": stamp,
                "calls": args.calls,
                "first_sample": args.first_sample,
                "rate": args.rate,
                "call_ms": args.call_ms,
                "linger_s": args.linger_s,
                "cpu_rate": args.cpu_rate,
                "cpu_seconds": args.cpu_seconds,
                "repeat": args.repeat,
                "skip_cpu": args.skip_cpu,
                "skip_memory": args.skip_memory,
                "log_level": args.log_level,
                "goal_kib_per_1000": GOAL_KIB_PER_1000,
                "baseline": args.baseline,
                "cpus": os.cpu_count(),
                "loadavg_at_start": loadavg_at_start,
                "loadavg_at_end": os.getloadavg(),
                "python": platform.python_version(),
                "sipp": bench_calls._sipp_version(),
                "workdir": str(root),
            },
            "table": shown,
            "results": results,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
