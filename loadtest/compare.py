#!/usr/bin/env python3
"""sbc side by side with Kamailio: the same scenarios against both, runs
alternating (sbc, Kamailio, sbc, Kamailio, ...), medians and sbc/Kamailio ratios.

    python3 loadtest/compare.py \\
        --scenarios calls,options-flood,register-flood,invite-flood,many-sources,calls-under-fire \\
        --repeat 3 --seconds 5 --json out.json --charts loadtest/results/charts/

Kamailio runs loadtest/reference/kamailio.cfg (same trusted gateway, scanner
drops, pike, bans, stateful forwarding, dialog-profile concurrency limit).
Both servers get the same loopback layout: public 127.0.0.10, private
127.0.0.11, VOS3000 stand-in 127.0.0.20, gateway 127.0.0.1; floods come from
127.0.0.66 or from 127.1.0.0 upwards.

Scenarios:
  calls             SIPp calls at each of --cps from the gateway, Record-Route
                    honoured (ACK and BYE cross the server), --call-ms hold,
                    the latency probe at --probe-cps beside SIPp
                    (bench_calls.one_run, the same run as bench_calls.py)
  options-flood     scanner OPTIONS from one source   (bench_flood.one_run)
  register-flood    REGISTER brute force from one source
  invite-flood      INVITE from an unknown source
  many-sources      scanner OPTIONS from --sources addresses
  many-sources-invite  INVITE from --sources addresses (none a gateway)
  calls-under-fire  calls at --fire-cps while a flood from --fire-sources
                    addresses ramps through --fire-steps pps, --step-seconds
                    each; reports the largest flood rate at which calls still
                    succeed >= 99.9 % (completed and answered within
                    --fire-answer-ms)
  fire-lanes        calls under fire inside a network namespace of its own
                    (root; loadtest/fire_lanes.py), sbc with its lanes off,
                    with kernel steering (sbc-lanes), optionally with two
                    ports, and Kamailio (--lane-targets); the gateway's calls
                    and a registered digest phone's (--lane-callers); per
                    step offered pps, calls ok %, answered within
                    --fire-answer-ms, INVITE->200 p50/p99, CPU per packet and
                    per call, per-lane socket drops and the kernel's
                    steer/drop counters. Not in the default --scenarios.

The flood scenarios run at each of --flood-rates (packets per second; 0 = as
fast as the generator can). CPU is the run time of every thread of every
process of the server (/proc/PID/task/*/schedstat; Kamailio's workers
included). --targets may add sbc-compiled: sbc run by .venv-compiled/'s
Python, the compiled core `make compiled` installs there (its `started` line
must say core mypyc), and kamailio-tlsf: the same Kamailio with the TLSF
allocator (-x tlsf -X tlsf). Memory is sbc's peak RSS (VmHWM) and, for
Kamailio, the largest sum of Pss over its processes (its shared memory counted
once). Handled packets are the server's own count for sbc and offered minus
kernel socket drops for Kamailio.

A measurement, not a test.  Traffic stays on 127.0.0.0/8, every load is
bounded in packets and seconds, and every process is ended by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest import bench_calls, fire_lanes
from loadtest.flood import bench_flood
from loadtest.flood.generator import Flood, FloodError, build, payload
from loadtest.flood.measure import udp_socket_drops
from loadtest.harness import REPO, HarnessError, format_table, medians, sipp_binary
from loadtest.kamailio import kamailio_binary
from loadtest.targets import KamailioTarget, Layout, RelayTarget, SbcTarget, Server, Target, stop_server

FLOOD_SCENARIOS = {
    "options-flood": "options",
    "register-flood": "register",
    "invite-flood": "invite",
    "many-sources": "many-sources",
    "many-sources-invite": "many-sources",
}
#: What each source of a many-sources scenario sends.
MANY_PAYLOAD = {"many-sources": "options", "many-sources-invite": "invite"}
SCENARIOS = ("calls", *FLOOD_SCENARIOS, "calls-under-fire")
#: Scenarios that run only when named (they need root: a network namespace).
EXTRA_SCENARIOS = ("fire-lanes",)
GATEWAY = "127.0.0.1"
PUBLIC, PRIVATE, BACKEND = "127.0.0.10", "127.0.0.11", "127.0.0.20"
FIRE_BASE = "127.1.0.0"
#: Calls must succeed at least this often for a flood step to count as survived.
SURVIVED = 99.9


#: What --targets may name: sbc with its operator defaults (one gateway, no
#: admin), the same with the compiled core (the wheel `make compiled` installs
#: into .venv-compiled/), Kamailio with the reference config, and that
#: Kamailio on TLSF; and relay (loadtest/relay.py), the loop and sockets with
#: no SIP, for the calls scenario only.
TARGETS = ("sbc", "sbc-compiled", "kamailio", "kamailio-tlsf", "relay")
COMPILED_PYTHON = REPO / ".venv-compiled" / "bin" / "python"


def make_target(name: str, kamailio_children: int) -> Target:
    if name == "sbc":
        return SbcTarget()
    if name == "relay":
        return RelayTarget()
    if name == "sbc-compiled":
        if not COMPILED_PYTHON.exists():
            raise HarnessError(f"sbc-compiled: no {COMPILED_PYTHON}; run `make compiled` first")
        return SbcTarget(name=name, python=str(COMPILED_PYTHON), core="mypyc")
    mem = name.partition("-")[2] or None
    return KamailioTarget(kamailio_children, mem_manager=mem)


def layout() -> Layout:
    return Layout.pick(PUBLIC, PRIVATE, BACKEND, GATEWAY)


# --------------------------------------------------------------------------
# Calls under fire


@dataclass
class Step:
    flood_pps: int
    offered_pps: float = 0.0
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    answered_late: int = 0
    success_pct: float = 0.0
    answer_p99_ms: float | None = None
    socket_drops: int | None = None
    cpu_pct: float = 0.0
    cpu_us_per_packet: float | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class FireRun:
    target: str
    repeat: int
    steps: list[Step] = field(default_factory=list)
    max_flood_pps_ok: int = 0
    peak_rss_mib: float = 0.0
    errors: list[str] = field(default_factory=list)


def fire_step(
    server: Server, lay: Layout, pps: int, args: argparse.Namespace, workdir: Path
) -> Step:
    """Calls at --fire-cps for --step-seconds while the flood runs at `pps`."""
    step = Step(pps)
    calls = max(1, int(args.fire_cps * args.step_seconds))
    uas, uac = bench_calls.call_pair(
        args.fire_cps, calls, args.fire_call_ms, workdir, lay, fine_latency=False
    )
    kind = args.fire_payload
    flood = Flood(
        payload(kind, lay.public, FIRE_BASE),
        lay.public,
        workdir,
        count=int(pps * args.step_seconds),
        seconds=args.step_seconds,
        rate=pps,
        src=FIRE_BASE,
        sources=args.fire_sources,
    )
    sock0 = udp_socket_drops(lay.public_port, lay.public_host) or 0
    try:
        uas.start().wait_bound()
        cpu0 = server.cpu_seconds()
        started = time.monotonic()
        flood.start()
        uac.start()
        stats = flood.wait()
        # CPU while the flood ran: calls that need retransmissions go on for
        # many seconds after it and would dilute the figure.
        cpu1, secs = server.cpu_seconds(), time.monotonic() - started
        uac_res = uac.wait()
        uas_res = uas.wait()
    finally:
        flood.stop()
        uac.stop()
        uas.stop()
    sock1 = udp_socket_drops(lay.public_port, lay.public_host)
    step.cpu_pct = round(100 * (cpu1 - cpu0) / secs, 1)
    step.offered_pps = round(stats.pps)
    step.socket_drops = None if sock1 is None else sock1 - sock0
    handled = stats.sent - (step.socket_drops or 0)  # per packet the server took off its socket
    if handled > 0:
        step.cpu_us_per_packet = round(1e6 * (cpu1 - cpu0) / handled, 2)
    step.attempted = uac_res.stat("OutgoingCall")
    step.succeeded, step.failed = uac_res.successful, uac_res.failed
    # A call counts only when answered within --fire-answer-ms: one that
    # needed SIPp's retransmissions for seconds has failed its caller.
    rtts = uac_res.rtts_ms("invite")
    in_time = sum(1 for rtt in rtts if rtt <= args.fire_answer_ms)
    step.answered_late = len(rtts) - in_time
    step.answer_p99_ms = bench_calls.percentile(rtts, 99)
    ok = min(step.succeeded, in_time)
    step.success_pct = round(100 * ok / max(step.attempted, calls), 2)
    if uas_res.returncode not in (0, 1) or uac_res.returncode not in (0, 1):
        step.errors.append(f"SIPp exit codes {uac_res.returncode}/{uas_res.returncode}")
    return step


def survived(steps: list[Step]) -> int:
    """The largest flood rate of the ramp at which calls (there and at every
    lower step) still succeeded >= 99.9 %; 0 when the first step failed."""
    best = 0
    for step in steps:
        if step.success_pct < SURVIVED:
            break
        best = step.flood_pps
    return best


def fire_run(
    target: Target, repeat: int, args: argparse.Namespace, root: Path
) -> FireRun:
    """One server for the whole ramp; a fresh SIPp pair and flood per step."""
    run = FireRun(target.name, repeat)
    workdir = root / f"calls-under-fire-{target.name}-run{repeat}"
    workdir.mkdir(parents=True)
    lay = layout()
    server = target.start(workdir, lay)
    try:
        for pps in args.fire_step_list:
            step = fire_step(server, lay, pps, args, workdir / f"step-{pps}")
            run.steps.append(step)
        run.max_flood_pps_ok = survived(run.steps)
        run.peak_rss_mib = round(server.peak_rss_kib() / 1024, 1)
    finally:
        code = stop_server(server, run.errors)
        if code not in (0, None):
            run.errors.append(f"{target.name} exited {code}")
    return run


# --------------------------------------------------------------------------
# Medians and ratios

CALL_FIGURES = [
    ("achieved_cps", "calls/s achieved", "{:.0f}"),
    ("relayed_pps", "relayed pps", "{:.0f}"),
    ("attempted", "calls attempted", "{:.0f}"),
    ("succeeded", "calls ok", "{:.0f}"),
    ("failed", "calls failed", "{:.0f}"),
    ("ok_pct", "calls ok %", "{:.2f}"),
    ("probe_p50_us", "probe INVITE->200 p50 us", "{:.0f}"),
    ("probe_p99_us", "probe INVITE->200 p99 us", "{:.0f}"),
    ("probe_max_us", "probe INVITE->200 max us", "{:.0f}"),
    ("probe_failed", "probe calls failed", "{:.0f}"),
    ("trying_p50_ms", "INVITE->100 p50 ms", "{:.2f}"),
    ("trying_p99_ms", "INVITE->100 p99 ms", "{:.2f}"),
    ("answer_p50_ms", "INVITE->200 p50 ms", "{:.2f}"),
    ("answer_p90_ms", "INVITE->200 p90 ms", "{:.2f}"),
    ("answer_p99_ms", "INVITE->200 p99 ms", "{:.2f}"),
    ("rtt_p99_ms", "SIPp rtd INVITE->200 p99 ms", "{:.0f}"),
    ("cpu_us_per_call", "cpu us/call", "{:.0f}"),
    ("peak_rss_mib", "mem MiB", "{:.1f}"),
]
#: The per-rate call table: one row per target and rate.
CALL_SUMMARY = [
    ("target", "target", "{}"),
    ("cps", "rate", "{:.0f}"),
    ("ok %", "ok_pct", "{:.2f}"),
    ("us/call", "cpu_us_per_call", "{:.0f}"),
    ("probe p50 us", "probe_p50_us", "{:.0f}"),
    ("probe p99 us", "probe_p99_us", "{:.0f}"),
    ("probe max us", "probe_max_us", "{:.0f}"),
    ("SIPp p50 ms", "answer_p50_ms", "{:.2f}"),
    ("SIPp p99 ms", "answer_p99_ms", "{:.2f}"),
    ("SIPp rtd p99 ms", "rtt_p99_ms", "{:.0f}"),
    ("peak MiB", "peak_rss_mib", "{:.1f}"),
]
FLOOD_FIGURES = [
    ("offered_pps", "offered pps", "{:.0f}"),
    ("handled_pps", "handled pps", "{:.0f}"),
    ("socket_drops", "socket drops", "{:.0f}"),
    ("kernel_rcvbuf_errors", "kernel RcvbufErrors", "{:.0f}"),
    ("cpu_pct", "cpu %", "{:.1f}"),
    ("cpu_us_per_packet", "cpu us/pkt", "{:.2f}"),
    ("peak_rss_mib", "mem MiB", "{:.1f}"),
    ("forwarded_pps", "forwarded pps", "{:.1f}"),
    ("to_backend", "flood pkts to VOS", "{:.0f}"),
]
FIRE_FIGURES = [
    ("max_flood_pps_ok", "max flood pps, calls >=99.9% ok", "{:.0f}"),
    ("peak_rss_mib", "mem MiB", "{:.1f}"),
]


def fire_step_medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per flood step, the median over the repeats."""
    out = []
    for i, pps in enumerate(s["flood_pps"] for s in runs[0]["steps"]):
        steps = [r["steps"][i] for r in runs if len(r["steps"]) > i]
        med = medians(steps, ["offered_pps", "success_pct", "answer_p99_ms", "cpu_pct",
                              "cpu_us_per_packet", "socket_drops"])
        out.append({"flood_pps": pps, **med})
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


# --------------------------------------------------------------------------
# Running


def calls_args(rate: float, args: argparse.Namespace) -> argparse.Namespace:
    """bench_calls' own arguments for one calls case: the same run as
    `bench_calls.py --rates RATE --duration SECONDS --call-ms ... --probe-cps ...`."""
    argv = [
        "--rates",
        f"{int(rate)}",
        "--duration",
        f"{args.seconds:g}",
        "--call-ms",
        str(args.call_ms),
        "--probe-cps",
        f"{args.probe_cps:g}",
    ]
    if not args.fine_latency:
        argv.append("--no-fine-latency")
    return bench_calls.parse_args(argv)


def run_case(
    scenario: str,
    rate: float,
    targets: list[Target],
    args: argparse.Namespace,
    root: Path,
) -> dict[str, Any]:
    """`--repeat` runs of one scenario at one rate, alternating the targets."""
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    unit = "cps" if scenario == "calls" else "pps"
    at = "flat out" if scenario in FLOOD_SCENARIOS and not rate else f"{rate:g} {unit}"
    label = scenario if scenario == "calls-under-fire" else f"{scenario} @ {at}"
    caseroot = root / (scenario if scenario == "calls-under-fire" else f"{scenario}-{rate:g}")
    for repeat in range(1, args.repeat + 1):
        for target in targets:
            if scenario == "calls":
                ns = calls_args(rate, args)
                run: Any = bench_calls.one_run(int(rate), repeat, ns, caseroot, target, layout())
                note = (
                    f"{run.succeeded}/{run.attempted} ok, probe p50/p99 "
                    f"{run.probe_p50_us}/{run.probe_p99_us} us, {run.cpu_us_per_call} us/call"
                )
            elif scenario == "calls-under-fire":
                run = fire_run(target, repeat, args, caseroot)
                note = f"max flood {run.max_flood_pps_ok} pps; " + ", ".join(
                    f"{s.flood_pps}:{s.success_pct}%" for s in run.steps
                )
            else:
                ns = bench_flood.parse_args(
                    [
                        "--scenario",
                        FLOOD_SCENARIOS[scenario],
                        "--seconds",
                        f"{args.seconds:g}",
                        "--rate",
                        f"{rate:g}",
                        "--sources",
                        str(args.sources),
                        "--payload",
                        MANY_PAYLOAD.get(scenario, "options"),
                    ]
                )
                run = bench_flood.one_run(
                    FLOOD_SCENARIOS[scenario], repeat, ns, caseroot, target, layout()
                )
                note = (
                    f"offered {run.offered_pps} pps, handled {run.handled_pps} pps, "
                    f"{run.cpu_us_per_packet} us/pkt, cpu {run.cpu_pct}%"
                )
            errors = "  ! " + "; ".join(run.errors) if run.errors else ""
            print(f"  {label} {target.name} run {repeat}: {note}{errors}", flush=True)
            runs[target.name].append(asdict(run))
            time.sleep(0.2)
    figures = (
        CALL_FIGURES
        if scenario == "calls"
        else FIRE_FIGURES
        if scenario == "calls-under-fire"
        else FLOOD_FIGURES
    )
    keys = [k for k, _, _ in figures]
    case: dict[str, Any] = {"scenario": scenario, "label": label, "rate": rate}
    for name, rs in runs.items():
        case[name] = {"median": medians(rs, keys), "runs": rs}
        if scenario == "calls-under-fire":
            case[name]["steps"] = fire_step_medians(rs)
    if "sbc" in runs and "kamailio" in runs:
        case["ratio"] = {
            k: ratio(case["sbc"]["median"][k], case["kamailio"]["median"][k]) for k in keys
        }
    return case


def targets_of(cases: list[dict[str, Any]]) -> list[str]:
    """The targets that ran, in the order of TARGETS."""
    return [t for t in TARGETS if any(t in case for case in cases)]


def calls_summary(cases: list[dict[str, Any]]) -> str:
    """The calls cases as one row per target and rate (medians): calls ok %,
    server µs per call, the probe's and SIPp's INVITE->200, peak memory."""
    rows = []
    for name in targets_of(cases):
        for case in cases:
            if case["scenario"] == "calls" and name in case:
                rows.append({"target": name, "rate": case["rate"], **case[name]["median"]})
    return format_table(rows, CALL_SUMMARY) if rows else ""


def table(cases: list[dict[str, Any]]) -> str:
    names = targets_of(cases)
    rows = []
    for case in cases:
        if case["scenario"] in EXTRA_SCENARIOS:
            continue
        figures = (
            CALL_FIGURES
            if case["scenario"] == "calls"
            else FIRE_FIGURES
            if case["scenario"] == "calls-under-fire"
            else FLOOD_FIGURES
        )
        for key, title, fmt in figures:
            row: dict[str, Any] = {"case": case["label"], "figure": title}
            for name in names:
                value = case.get(name, {}).get("median", {}).get(key)
                row[name] = None if value is None else fmt.format(value)
            row["ratio"] = case.get("ratio", {}).get(key)
            rows.append(row)
    columns = [("scenario", "case", "{}"), ("figure", "figure", "{}")]
    columns += [(name, name, "{}") for name in names]
    columns.append(("sbc/kamailio", "ratio", "{:.2f}"))
    return format_table(rows, columns)


def reasons_lines(cases: list[dict[str, Any]]) -> list[str]:
    """Dropped packets per second by reason, per server (medians over runs);
    Kamailio keeps no per-reason counters, so only sbc has them."""
    lines = []
    for case in cases:
        for name in targets_of([case]):
            runs = case.get(name, {}).get("runs", [])
            per = [r.get("drops_pps") or {} for r in runs]
            keys = sorted({k for p in per for k in p})
            if not keys:
                continue
            med = {k: sorted(p.get(k, 0) for p in per)[len(per) // 2] for k in keys}
            shown = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(med.items(), key=lambda kv: -kv[1]))
            lines.append(f"{case['label']}: {name} dropped pps by reason: {shown}")
    return lines


def fire_table(cases: list[dict[str, Any]]) -> str:
    rows = []
    for case in cases:
        if case["scenario"] != "calls-under-fire":
            continue
        steps = {name: case[name]["steps"] for name in targets_of([case])}
        for i, pps in enumerate(s["flood_pps"] for s in next(iter(steps.values()))):
            row: dict[str, Any] = {"flood_pps": pps}
            for name, st in steps.items():
                row[f"{name}_ok"] = st[i]["success_pct"]
                row[f"{name}_cpu"] = st[i]["cpu_pct"]
                row[f"{name}_us"] = st[i].get("cpu_us_per_packet")
                row[f"{name}_p99"] = st[i].get("answer_p99_ms")
                row[f"{name}_drops"] = st[i].get("socket_drops")
            rows.append(row)
    columns = [("flood pps", "flood_pps", "{:.0f}")]
    for name in targets_of(cases):
        columns += [
            (f"{name} calls ok %", f"{name}_ok", "{:.2f}"),
            (f"{name} 200 p99 ms", f"{name}_p99", "{:.1f}"),
            (f"{name} cpu %", f"{name}_cpu", "{:.0f}"),
            (f"{name} us/pkt", f"{name}_us", "{:.2f}"),
            (f"{name} sock drops", f"{name}_drops", "{:.0f}"),
        ]
    return format_table(rows, columns) if rows else ""


def _names(text: str, allowed: tuple[str, ...], what: str, p: argparse.ArgumentParser) -> list[str]:
    """A comma-separated list of names from `allowed`, each at most once, in the order given."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or set(names) - set(allowed) or len(set(names)) != len(names):
        p.error(f"{what}: one or more of {', '.join(allowed)}, each at most once")
    return names


def _ints(text: str, what: str, p: argparse.ArgumentParser) -> list[int]:
    try:
        return [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        p.error(f"{what}: not a list of numbers: {text!r}")
        raise


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, of {', '.join(SCENARIOS + EXTRA_SCENARIOS)} (default all but "
        f"{', '.join(EXTRA_SCENARIOS)})",
    )
    p.add_argument(
        "--targets",
        default="sbc,kamailio",
        help=f"comma-separated, of {', '.join(TARGETS)} (default sbc,kamailio)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per target and case (default 3)")
    p.add_argument("--seconds", type=float, default=5.0, help="load per run (default 5)")
    p.add_argument("--cps", default="100", help="calls: call rates, comma-separated (default 100)")
    p.add_argument("--call-ms", type=int, default=1000, help="calls: call duration (default 1000)")
    p.add_argument(
        "--probe-cps",
        type=float,
        default=20.0,
        help="calls: the latency probe's call rate beside SIPp; 0 = none (default 20)",
    )
    p.add_argument(
        "--no-fine-latency",
        dest="fine_latency",
        action="store_false",
        help="calls: no SIPp -trace_shortmsg (its microsecond INVITE->100/200 columns)",
    )
    p.add_argument(
        "--flood-rates",
        default="20000,50000",
        help="flood scenarios: offered pps, comma-separated; 0 = flat out (default 20000,50000)",
    )
    p.add_argument("--sources", type=int, default=100000, help="many-sources: addresses")
    p.add_argument("--fire-cps", type=float, default=50.0, help="calls-under-fire: call rate")
    p.add_argument("--fire-call-ms", type=int, default=500, help="calls-under-fire: call length")
    p.add_argument(
        "--fire-answer-ms",
        type=float,
        default=1000.0,
        help="calls-under-fire: a call succeeds only if answered (INVITE->200) within this "
        "(default 1000: one lost INVITE, retransmitted after T1, still counts)",
    )
    p.add_argument(
        "--fire-steps",
        default="25000,50000,100000,150000,200000,300000",
        help="calls-under-fire: flood pps per step (default 25000,...,300000)",
    )
    p.add_argument(
        "--step-seconds", type=float, help="calls-under-fire: per step (default --seconds)"
    )
    p.add_argument(
        "--fire-payload",
        default="invite",
        choices=("options", "register", "invite"),
        help="calls-under-fire: what the flood sends (default invite)",
    )
    p.add_argument(
        "--fire-sources",
        type=int,
        default=1_000_000,
        help="calls-under-fire: flood source addresses (default 1000000: fresh ones, the "
        "costliest kind for either server)",
    )
    p.add_argument(
        "--lane-targets",
        default="sbc,sbc-lanes,kamailio",
        help=f"fire-lanes: comma-separated, of {', '.join(fire_lanes.LANE_TARGETS)} "
        "(default sbc,sbc-lanes,kamailio)",
    )
    p.add_argument(
        "--lane-callers",
        default="gateway,phone",
        help="fire-lanes: gateway, phone (a registered digest account), or both (default)",
    )
    p.add_argument(
        "--lane-phone-cps",
        type=float,
        default=2.0,
        help="fire-lanes: the registered phone's call rate (default 2: 10 requests/s, "
        "under the 20/s a source that is no gateway may send)",
    )
    p.add_argument(
        "--lane-flood-mode",
        choices=("packet", "pktinfo"),
        default="packet",
        help="fire-lanes: how the generator sends: packet (default: whole frames onto the "
        "namespace's lo, received like a card's; the faster sender) or pktinfo (UDP sockets)",
    )
    p.add_argument(
        "--lane-flood-procs",
        type=int,
        default=2,
        choices=range(1, 17),
        metavar="P",
        help="fire-lanes: generator processes, each with 1/P of a step's rate (default 2: "
        "one sender is bounded by one core)",
    )
    p.add_argument(
        "--lane-no-account",
        action="store_true",
        help="fire-lanes: no digest account for the gateway's runs (sbc in nftables mode "
        "then drops every stranger in the kernel)",
    )
    p.add_argument("--kamailio-children", type=int, default=os.cpu_count() or 2)
    p.add_argument("--json", type=Path, help="write every run, medians and ratios here")
    p.add_argument("--charts", type=Path, help="write PNG charts into this directory")
    p.add_argument(
        "--workdir", type=Path, help="run files (default loadtest/results/compare-<time>)"
    )
    args = p.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    known = SCENARIOS + EXTRA_SCENARIOS
    bad = [s for s in args.scenario_list if s not in known]
    if bad or not args.scenario_list:
        p.error(f"--scenarios: {', '.join(bad) or 'none'}; choose from {', '.join(known)}")
    args.lane_target_list = _names(args.lane_targets, fire_lanes.LANE_TARGETS, "--lane-targets", p)
    args.lane_caller_list = _names(args.lane_callers, fire_lanes.CALLERS, "--lane-callers", p)
    args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.target_list or set(args.target_list) - set(TARGETS):
        p.error(f"--targets: one or more of {', '.join(TARGETS)}")
    if "relay" in args.target_list and set(args.scenario_list) - {"calls"}:
        p.error("--targets relay: only with --scenarios calls (it relays, it screens nothing)")
    if len(set(args.target_list)) != len(args.target_list):
        p.error("--targets: each at most once")
    if not 0 <= args.probe_cps <= 200:
        p.error("--probe-cps: 0 .. 200")
    args.cps_list = _ints(args.cps, "--cps", p)
    args.flood_rate_list = _ints(args.flood_rates, "--flood-rates", p)
    args.fire_step_list = _ints(args.fire_steps, "--fire-steps", p)
    args.step_seconds = args.step_seconds or args.seconds
    if not 0 < args.seconds <= 60 or not 0 < args.step_seconds <= 60 or args.repeat < 1:
        p.error("--seconds and --step-seconds: 0 < s <= 60; --repeat >= 1")
    if max([*args.flood_rate_list, *args.fire_step_list]) > bench_flood.FLAT_OUT_CAP_PPS:
        p.error(f"flood rates above {bench_flood.FLAT_OUT_CAP_PPS} pps")
    if min([*args.fire_step_list, 0]) < 0 or (
        not args.fire_step_list and "fire-lanes" in args.scenario_list
    ):
        p.error("--fire-steps: pps >= 0 (0 = flat out)")
    if 0 in args.fire_step_list and "calls-under-fire" in args.scenario_list:
        p.error("--fire-steps: 0 (flat out) is for fire-lanes only")
    if not 0 < args.lane_phone_cps <= 1000:
        p.error("--lane-phone-cps: 0 < cps <= 1000")
    if not 0 < args.fire_cps <= 1000 or not 0 < args.fire_call_ms <= 60_000:
        p.error("--fire-cps: 0 < cps <= 1000; --fire-call-ms: 0 < ms <= 60000")
    if min([*args.cps_list, 1]) < 1 or max(args.cps_list) * args.seconds > 100_000:
        p.error("--cps: 1 .. 100000/seconds")
    if not 1 <= args.sources <= 4_000_000 or not 1 <= args.fire_sources <= 4_000_000:
        p.error("--sources, --fire-sources: 1 .. 4000000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sipp_binary() is None:
        print("compare: sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    lanes = "fire-lanes" in args.scenario_list
    if lanes and (os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft"))):
        print("compare: fire-lanes needs root, ip and nft (it makes a network namespace)",
              file=sys.stderr)
        return 2
    wants_kamailio = any(t.startswith("kamailio") for t in args.target_list) and any(
        s != "fire-lanes" for s in args.scenario_list
    )
    if lanes and "kamailio" in args.lane_target_list:
        wants_kamailio = True
    if wants_kamailio and kamailio_binary() is None:
        print("compare: kamailio not found (apt-get install kamailio)", file=sys.stderr)
        return 2
    try:
        binary = build()
    except FloodError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = args.workdir or REPO / "loadtest" / "results" / f"compare-{stamp}"
    root.mkdir(parents=True, exist_ok=True)
    try:
        targets = [make_target(name, args.kamailio_children) for name in args.target_list]
    except HarnessError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    if args.scenario_list == ["fire-lanes"]:
        args.target_list = args.lane_target_list
    print(
        f"compare: {', '.join(args.scenario_list)}; {' vs '.join(args.target_list)}, "
        f"{args.repeat} repeat(s) of {args.seconds:g}s; files in {root}",
        flush=True,
    )
    cases: list[dict[str, Any]] = []
    for scenario in args.scenario_list:
        rates: list[float] = (
            [float(r) for r in args.cps_list]
            if scenario == "calls"
            else [float(r) for r in args.flood_rate_list]
            if scenario in FLOOD_SCENARIOS
            else [0.0]
        )
        for rate in rates:
            try:
                if scenario == "fire-lanes":
                    cases.append(fire_lanes.run_case(args, root))
                else:
                    cases.append(run_case(scenario, rate, targets, args, root))
            except (HarnessError, OSError, subprocess.SubprocessError, ValueError) as e:
                print(f"compare: {scenario} failed to run: {e}", file=sys.stderr)
                return 1
            except KeyboardInterrupt as e:
                # Every process was ended by its PID and every namespace removed on the way out.
                print(f"compare: {scenario} interrupted ({e or 'Ctrl-C'})", file=sys.stderr)
                return 130

    if any(c["scenario"] not in EXTRA_SCENARIOS for c in cases):
        print()
        print(
            f"median of {args.repeat} run(s) per target; runs alternated; ratio = sbc / kamailio "
            "(below 1: sbc lower; for cpu and memory lower is better)"
        )
        print(table(cases))
    summary = calls_summary(cases)
    if summary:
        print()
        print(
            f"calls, per target and rate (medians; {args.call_ms} ms hold, Record-Route "
            f"honoured, probe at {args.probe_cps:g} cps; us/call = server CPU (schedstat) "
            "per completed call; probe = INVITE->200 in us; SIPp = -trace_shortmsg INVITE->200 ms, "
            "rtd = -trace_rtt ms):"
        )
        print(summary)
    reasons = reasons_lines(cases)
    if reasons:
        print()
        print("\n".join(reasons))
    fire = fire_table(cases)
    if fire:
        print()
        print(
            f"calls under fire ({args.fire_cps:g} cps, {args.fire_payload} flood from "
            f"{args.fire_sources} sources, {args.step_seconds:g}s per step), medians:"
        )
        print(fire)
    for case in cases:
        if case["scenario"] == "fire-lanes":
            print()
            print(
                f"calls under fire, lanes on and off ({args.fire_cps:g} cps of "
                f"{args.fire_call_ms} ms calls, {args.fire_payload} flood from "
                f"{args.fire_sources} sources, {args.step_seconds:g}s per step, medians of "
                f"{args.repeat}; <=1s % = calls completed and answered within "
                f"{args.fire_answer_ms:g} ms; us/pkt = server CPU per flood packet that "
                "reached it; drops = socket drops, public and trusted lane; nft = the "
                "kernel's steer and drop counters):"
            )
            print(fire_lanes.lanes_table(case))
            print("\n".join(fire_lanes.lanes_summary(case, args.fire_answer_ms)))
    doc = {
        "meta": {
            "started": stamp,
            "argv": sys.argv[1:] if argv is None else argv,
            "scenarios": args.scenario_list,
            "targets": args.target_list,
            "repeat": args.repeat,
            "seconds": args.seconds,
            "cps": args.cps_list,
            "flood_rates": args.flood_rate_list,
            "fire_steps": args.fire_step_list,
            "fire_cps": args.fire_cps,
            "fire_call_ms": args.fire_call_ms,
            "lane_phone_cps": args.lane_phone_cps,
            "fire_sources": args.fire_sources,
            "step_seconds": args.step_seconds,
            "lane_targets": args.lane_target_list,
            "lane_callers": args.lane_caller_list,
            "call_ms": args.call_ms,
            "probe_cps": args.probe_cps,
            "fine_latency": args.fine_latency,
            "kamailio_children": args.kamailio_children,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "generator": str(binary),
            "workdir": str(root),
        },
        "cases": cases,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.charts:
        from loadtest.charts import write_charts

        for path in write_charts(doc, args.charts):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
