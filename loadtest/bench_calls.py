#!/usr/bin/env python3
"""Call-rate benchmark: sbc between a SIPp caller and a SIPp VOS3000 stand-in.

    python3 loadtest/bench_calls.py --rates 200,500,1000 --duration 10 --repeat 3 \\
        [--transport udp|tcp] [--call-ms 1000] [--json out.json]

For each rate and each repeat, a fresh sbc (own config, free loopback ports),
a SIPp UAS (uas.xml) and a SIPp UAC (uac.xml, which honours Record-Route: ACK
and BYE cross sbc) run `rate * duration` calls of --call-ms hold; beside them
the latency probe (loadtest/probe.py) places --probe-cps calls of the same
shape and times INVITE -> 200 in microseconds.  The server's CPU time (the run
time of every thread of every process, /proc/PID/task/*/schedstat) is read
just before the callers start and just after both have ended, and divided by
the calls that completed (SIPp's and the probe's); utime + stime of
/proc/PID/stat over the same window is kept beside it as a cross-check.  Its
peak RSS (VmHWM) at the end.  The table shows the median of each column over
the repeats; --json writes every run as well.  See loadtest/README.md for what
each column means.

This is a measurement, not a test: it never fails on slow numbers, only on
processes that cannot be started.  All traffic stays on 127.0.0.1, every
SIPp run is bounded by -m and -timeout, and every process is ended by PID.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.harness import (
    LOOPBACK,
    REPO,
    HarnessError,
    Sipp,
    SippResult,
    format_table,
    free_ports,
    medians,
    cpu_seconds,
    sipp_binary,
    tree_cpu_seconds,
)
from loadtest.probe import ProbeProcess
from loadtest.targets import Layout, SbcTarget, Server, Target, stop_server


@dataclass
class Run:
    """One load run at one rate."""

    rate: int
    transport: str
    repeat: int
    calls: int
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    uas_succeeded: int = 0
    uas_failed: int = 0
    achieved_cps: float = 0.0
    relayed_pps: float = 0.0  # messages the server delivered to either SIPp, per second
    rtt_p50_ms: float | None = None
    rtt_p90_ms: float | None = None
    rtt_p99_ms: float | None = None
    trying_p50_ms: float | None = None
    trying_p99_ms: float | None = None
    answer_p50_ms: float | None = None
    answer_p90_ms: float | None = None
    answer_p99_ms: float | None = None
    ok_pct: float | None = None  # SIPp's calls that succeeded, of those planned
    probe_placed: int = 0
    probe_completed: int = 0
    probe_failed: int = 0
    probe_p50_us: float | None = None  # the probe's INVITE -> 200, microseconds
    probe_p99_us: float | None = None
    probe_max_us: float | None = None
    cpu_s: float = 0.0
    cpu_stat_s: float = 0.0  # the same window, utime + stime of /proc/PID/stat
    cpu_calls: int = 0  # the calls the CPU is divided by: SIPp's and the probe's that completed
    cpu_us_per_call: float | None = None
    peak_rss_mib: float = 0.0
    sbc_exit: int | None = None
    uac_exit: int | None = None
    uas_exit: int | None = None
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def shortmsg_latencies(path: Path) -> tuple[list[float], list[float]]:
    """Per call, from SIPp's -trace_shortmsg log (microsecond timestamps):
    INVITE sent -> first 100 received, and INVITE sent -> 200 (INVITE) received, in ms."""
    sent: dict[str, float] = {}
    trying: dict[str, float] = {}
    answer: dict[str, float] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 7:
                continue
            stamp, direction, call_id, cseq, first = (
                parts[2],
                parts[3],
                parts[4],
                parts[5],
                parts[6],
            )
            if not cseq.endswith(" INVITE"):
                continue
            t = float(stamp)
            if direction == "S" and first.startswith("INVITE "):
                sent.setdefault(call_id, t)
            elif direction == "R" and call_id in sent:
                if first.startswith("SIP/2.0 100 ") and call_id not in trying:
                    trying[call_id] = (t - sent[call_id]) * 1000
                elif first.startswith("SIP/2.0 200 ") and call_id not in answer:
                    answer[call_id] = (t - sent[call_id]) * 1000
    return list(trying.values()), list(answer.values())


def call_pair(
    rate: float,
    calls: int,
    call_ms: int,
    workdir: Path,
    layout: Layout,
    *,
    transport: str = "udp",
    fine_latency: bool = True,
    caller_ip: str = LOOPBACK,
    extra_uas_calls: int = 0,
) -> tuple[Sipp, Sipp]:
    """The VOS3000 stand-in (uas.xml on the layout's backend address) and the
    caller (uac.xml from `caller_ip`, to the server's public address) for
    `calls` calls at `rate` per second; both bounded by -m and -timeout.
    The stand-in answers `extra_uas_calls` more (the probe's)."""
    (caller,) = free_ports(1)
    budget = calls / rate + call_ms / 1000 + 30
    limit = int(rate * (call_ms / 1000 + 1) * 3) + 100
    uas = Sipp(
        "vos3000",
        "uas.xml",
        workdir / "uas",
        local_ip=layout.backend_host,
        local_port=layout.backend_port,
        calls=calls + extra_uas_calls,
        timeout_s=budget + 10,
        trace_msg=False,
        recv_timeout_ms=None,
    )
    uac = Sipp(
        "caller",
        "uac.xml",
        workdir / "uac",
        local_ip=caller_ip,
        local_port=caller,
        calls=calls,
        timeout_s=budget,
        remote=layout.public,
        transport={"udp": "u1", "tcp": "t1"}[transport],
        rate=rate,
        limit=limit,
        duration_ms=call_ms,
        trace_msg=False,
        trace_rtt=True,
        extra=["-trace_shortmsg"] if fine_latency else [],
    )
    return uas, uac


def one_run(
    rate: int,
    repeat: int,
    args: argparse.Namespace,
    root: Path,
    target: Target | None = None,
    layout: Layout | None = None,
) -> Run:
    """One call run against a fresh server: sbc (the default, every loopback
    caller a gateway) or another target, on `layout`.  With `args.probe_cps`
    (absent: 0, no probe) the latency probe runs beside SIPp for the same
    seconds, from the gateway's address."""
    if layout is None:
        layout = Layout.pick(gateway="127.0.0.0/8")
    target = target or SbcTarget(args.log_level)
    calls = int(rate * args.duration)
    probe_cps = float(getattr(args, "probe_cps", 0) or 0)
    probe_calls = probe_call_count(probe_cps, args.duration)
    run = Run(rate=rate, transport=args.transport, repeat=repeat, calls=calls)
    name = f"{args.transport}-{rate}cps" + ("" if target.name == "sbc" else f"-{target.name}")
    workdir = root / f"{name}-run{repeat}"
    workdir.mkdir(parents=True)
    uas, uac = call_pair(
        rate,
        calls,
        args.call_ms,
        workdir,
        layout,
        transport=args.transport,
        fine_latency=args.fine_latency,
        extra_uas_calls=probe_calls,
    )
    probe = None
    if probe_calls:
        probe = ProbeProcess(
            workdir / "probe",
            layout.public,
            rate=probe_cps,
            calls=probe_calls,
            hold_ms=args.call_ms,
            seconds=args.duration + args.call_ms / 1000 + 20,
            local=(probe_host(layout), 0),
        )
    server: Server | None = None
    probe_res: dict[str, Any] = {}
    started = time.monotonic()
    try:
        server = target.start(workdir, layout)
        uas.start().wait_bound()
        if getattr(args, "pin", False):
            pin(server.pids(), SERVER_CPU)
            pin([uas.proc.pid], LOAD_CPU)  # type: ignore[union-attr]
        cpu0 = server.cpu_seconds()
        stat0 = tree_cpu_seconds(server.pids(), cpu_seconds)
        if probe is not None:
            probe.start()
        uac.start()
        if getattr(args, "pin", False):
            pin([uac.proc.pid], LOAD_CPU)  # type: ignore[union-attr]
            if probe is not None and probe.proc is not None:
                pin([probe.proc.pid], LOAD_CPU)
        uac_res = uac.wait()
        if probe is not None:
            probe_res = probe.wait()
        cpu1 = server.cpu_seconds()
        run.cpu_stat_s = round(tree_cpu_seconds(server.pids(), cpu_seconds) - stat0, 3)
        run.peak_rss_mib = round(server.peak_rss_kib() / 1024, 1)
        uas_res = uas.wait()
    finally:
        if probe is not None:
            probe.stop()
        uac.stop()
        uas.stop()
        run.sbc_exit = stop_server(server, run.errors)
    run.wall_s = round(time.monotonic() - started, 2)
    read_call_results(run, uac_res, uas_res, args.call_ms, keep=args.keep)
    read_probe_result(run, probe_res, probe_calls)
    cpu_per_call(run, cpu1 - cpu0)
    if run.uac_exit not in (0, 1) or run.uas_exit not in (0, 1):
        run.errors.append(
            f"SIPp exit codes: caller {run.uac_exit}, vos3000 {run.uas_exit} (see {workdir})"
        )
    if run.sbc_exit not in (0, None):
        run.errors.append(f"{target.name} exited {run.sbc_exit} on SIGTERM (see {workdir})")
    return run


SERVER_CPU, LOAD_CPU = {1}, {0}


def pin(pids: list[int], cpus: set[int]) -> None:
    """Put every thread of `pids` on `cpus` (`--pin`: the server on one core,
    SIPp and the probe on the other, so that the CPU per call does not swing
    with where the scheduler happened to put them)."""
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


def probe_call_count(probe_cps: float, seconds: float) -> int:
    """Calls the probe places over `seconds` at `probe_cps` (0: no probe)."""
    return max(1, round(probe_cps * seconds)) if probe_cps > 0 else 0


def probe_host(layout: Layout) -> str:
    """The probe's source address: the gateway's, so the server treats it
    like SIPp's caller; 127.0.0.1 when the gateway is a network (the
    benchmarks' 127.0.0.0/8)."""
    return LOOPBACK if "/" in layout.gateway else layout.gateway


def read_probe_result(run: Run, result: dict[str, Any], wanted: int) -> None:
    """The probe's counts and INVITE -> 200 percentiles (µs) into `run`."""
    if not wanted:
        return
    run.probe_placed = int(result.get("placed", 0))
    run.probe_completed = int(result.get("completed", 0))
    run.probe_failed = wanted - run.probe_completed
    answers = [float(v) for v in result.get("invite_200_us", [])]
    run.probe_p50_us = _r1(percentile(answers, 50))
    run.probe_p99_us = _r1(percentile(answers, 99))
    run.probe_max_us = _r1(max(answers) if answers else None)
    if not result:
        run.errors.append("the latency probe left no result")


def cpu_per_call(run: Run, cpu_s: float) -> None:
    """Server CPU over the load window per completed call (SIPp's and the
    probe's), in µs; and SIPp's calls ok as a share of those planned."""
    run.cpu_s = round(cpu_s, 3)
    run.cpu_calls = run.succeeded + run.probe_completed
    if run.cpu_calls:
        run.cpu_us_per_call = round(cpu_s / run.cpu_calls * 1e6, 1)
    if run.calls:
        run.ok_pct = round(100 * run.succeeded / max(run.calls, run.attempted), 2)


def read_call_results(
    run: Run, uac_res: SippResult, uas_res: SippResult, call_ms: int, keep: bool = False
) -> None:
    """Calls, achieved rate and latency percentiles of one SIPp pair into `run`."""
    run.uac_exit, run.uas_exit = uac_res.returncode, uas_res.returncode
    run.attempted = uac_res.stat("OutgoingCall")
    run.succeeded, run.failed = uac_res.successful, uac_res.failed
    run.uas_succeeded, run.uas_failed = uas_res.successful, uas_res.failed
    elapsed = _elapsed_s(uac_res.stats.get("ElapsedTime(C)", ""))
    if elapsed:
        # SIPp's elapsed time includes the last call's duration and hang-up.
        active = max(elapsed - call_ms / 1000, 1e-3)
        run.achieved_cps = round(run.attempted / active, 1)
        relayed = uac_res.received_messages + uas_res.received_messages
        run.relayed_pps = round(relayed / active, 1)
    rtts = uac_res.rtts_ms("invite")
    run.rtt_p50_ms, run.rtt_p90_ms, run.rtt_p99_ms = (
        percentile(rtts, 50),
        percentile(rtts, 90),
        percentile(rtts, 99),
    )
    short = uac_res.file("shortmessages.log")
    if short is not None:
        trying, answer = shortmsg_latencies(short)
        run.trying_p50_ms, run.trying_p99_ms = (
            _r(percentile(trying, 50)),
            _r(percentile(trying, 99)),
        )
        run.answer_p50_ms, run.answer_p90_ms, run.answer_p99_ms = (
            _r(percentile(answer, 50)),
            _r(percentile(answer, 90)),
            _r(percentile(answer, 99)),
        )
        if not keep:
            short.unlink()


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _r1(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _elapsed_s(text: str) -> float:
    """SIPp's 'HH:MM:SS:uuuuuu' (or 'HH:MM:SS') to seconds."""
    parts = text.strip().split(":")
    try:
        if len(parts) == 4:
            h, m, s, us = (int(p) for p in parts)
            return h * 3600 + m * 60 + s + us / 1e6
        if len(parts) == 3:
            h, m, s = (int(p) for p in parts)
            return float(h * 3600 + m * 60 + s)
    except ValueError:
        pass
    return 0.0


NUMERIC = [
    "attempted",
    "succeeded",
    "failed",
    "uas_succeeded",
    "uas_failed",
    "achieved_cps",
    "relayed_pps",
    "rtt_p50_ms",
    "rtt_p90_ms",
    "rtt_p99_ms",
    "trying_p50_ms",
    "trying_p99_ms",
    "answer_p50_ms",
    "answer_p90_ms",
    "answer_p99_ms",
    "ok_pct",
    "probe_completed",
    "probe_failed",
    "probe_p50_us",
    "probe_p99_us",
    "probe_max_us",
    "cpu_s",
    "cpu_stat_s",
    "cpu_us_per_call",
    "peak_rss_mib",
    "wall_s",
]


def median_of(runs: list[Run]) -> dict[str, float | None]:
    return medians((asdict(r) for r in runs), NUMERIC)


COLUMNS = [
    ("rate", "rate", "{:.0f}"),
    ("cps", "achieved_cps", "{:.0f}"),
    ("calls", "attempted", "{:.0f}"),
    ("ok", "succeeded", "{:.0f}"),
    ("fail", "failed", "{:.0f}"),
    ("rtt p50", "rtt_p50_ms", "{:.0f}"),
    ("rtt p90", "rtt_p90_ms", "{:.0f}"),
    ("rtt p99", "rtt_p99_ms", "{:.0f}"),
    ("100 p50", "trying_p50_ms", "{:.2f}"),
    ("100 p99", "trying_p99_ms", "{:.2f}"),
    ("200 p50", "answer_p50_ms", "{:.2f}"),
    ("200 p99", "answer_p99_ms", "{:.2f}"),
    ("probe p50 us", "probe_p50_us", "{:.0f}"),
    ("probe p99 us", "probe_p99_us", "{:.0f}"),
    ("probe max us", "probe_max_us", "{:.0f}"),
    ("cpu us/call", "cpu_us_per_call", "{:.0f}"),
    ("rss MiB", "peak_rss_mib", "{:.1f}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    return format_table(rows, COLUMNS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--rates",
        default="200,500,1000",
        help="comma-separated call rates in calls per second (default 200,500,1000)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of load per run: rate*duration calls (default 10)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per rate; medians shown (default 3)")
    p.add_argument(
        "--transport",
        choices=("udp", "tcp"),
        default="udp",
        help="caller's transport to sbc; VOS3000 side is always UDP (default udp)",
    )
    p.add_argument(
        "--call-ms",
        type=int,
        default=1000,
        help="call duration between ACK and BYE, SIPp -d (default 1000)",
    )
    p.add_argument(
        "--probe-cps",
        type=float,
        default=20.0,
        help="the latency probe's call rate beside SIPp; 0 = no probe (default 20)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="sbc logging.level during the runs (default info)",
    )
    p.add_argument(
        "--no-fine-latency",
        dest="fine_latency",
        action="store_false",
        help="skip SIPp -trace_shortmsg (the 100/200 microsecond latency columns)",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="the server on CPU 1, SIPp and the probe on CPU 0 (steadier CPU figures)",
    )
    p.add_argument("--json", type=Path, help="write all runs and medians to this file")
    p.add_argument(
        "--workdir", type=Path, help="where runs keep their files (default loadtest/results/<time>)"
    )
    p.add_argument("--keep", action="store_true", help="keep the bulky per-message logs")
    args = p.parse_args(argv)
    try:
        args.rate_list = [int(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        p.error(f"--rates: not a list of integers: {args.rates!r}")
    if not args.rate_list or min(args.rate_list) < 1:
        p.error("--rates: give at least one rate >= 1")
    if args.duration <= 0 or args.repeat < 1:
        p.error("--duration must be > 0 and --repeat >= 1")
    if not 0 <= args.probe_cps <= 200:
        p.error("--probe-cps: 0 .. 200")
    if max(args.rate_list) * args.duration > 1_000_000:
        p.error("more than 1,000,000 calls in one run; lower --rates or --duration")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sipp_binary() is None:
        print("bench_calls: sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = args.workdir or REPO / "loadtest" / "results" / stamp
    root.mkdir(parents=True, exist_ok=True)
    print(
        f"bench_calls: {args.transport}, rates {args.rate_list} cps, {args.duration:g}s each, "
        f"{args.repeat} repeat(s), calls of {args.call_ms} ms; files in {root}",
        flush=True,
    )

    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for rate in args.rate_list:
        runs: list[Run] = []
        for repeat in range(1, args.repeat + 1):
            try:
                run = one_run(rate, repeat, args, root)
            except (HarnessError, OSError, subprocess.SubprocessError) as e:
                print(f"bench_calls: run at {rate} cps failed to run: {e}", file=sys.stderr)
                return 1
            runs.append(run)
            note = f"  ! {'; '.join(run.errors)}" if run.errors else ""
            print(
                f"  {rate:>5} cps run {repeat}: {run.succeeded}/{run.attempted} ok, "
                f"{run.failed} failed, probe {run.probe_completed} ok p99 {run.probe_p99_us} us, "
                f"cpu {run.cpu_us_per_call} us/call, "
                f"rss {run.peak_rss_mib} MiB, {run.wall_s}s{note}",
                flush=True,
            )
        med = median_of(runs)
        rows.append({"rate": rate, **med})
        results.append(
            {
                "rate": rate,
                "transport": args.transport,
                "median": med,
                "runs": [asdict(r) for r in runs],
            }
        )

    print()
    print(
        f"median of {args.repeat} run(s) per rate; transport {args.transport}; "
        "rtt = SIPp -trace_rtt INVITE->200 (ms, SIPp clock); 100/200 = INVITE->100 and "
        "INVITE->200 from -trace_shortmsg (ms); probe = the latency probe's INVITE->200 (us); "
        "cpu = server schedstat run time per completed call (SIPp's and the probe's)"
    )
    print(table(rows))
    if args.json:
        doc = {
            "meta": {
                "started": stamp,
                "transport": args.transport,
                "rates": args.rate_list,
                "duration_s": args.duration,
                "repeat": args.repeat,
                "call_ms": args.call_ms,
                "probe_cps": args.probe_cps,
                "log_level": args.log_level,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "sipp": _sipp_version(),
                "workdir": str(root),
            },
            "results": results,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def _sipp_version() -> str:
    binary = sipp_binary()
    if binary is None:
        return ""
    try:
        out = subprocess.run(
            [binary, "-v"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in (out.stdout + out.stderr).splitlines():
        if "SIPp v" in line:
            return line.strip()
    return ""


if __name__ == "__main__":
    sys.exit(main())
