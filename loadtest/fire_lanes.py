"""Calls under fire with sbc's two lanes on and off, beside Kamailio, inside a
network namespace of the benchmark's own (compare.py `--scenarios fire-lanes`).

Every run gets a fresh namespace (`ip netns add sbcbench-<pid>-<n>`, its
loopback up): the server, the VOS3000 stand-in, the caller's SIPp and the
flood generator all run in it (`ip netns exec`), so the kernel rules sbc
loads (`firewall.mode: nftables`) never touch the host.  The namespace is
deleted at the end of the run, also after an error or an interrupt; every
process in it is ended by its PID first.

    caller SIPp (gateway 127.0.0.1 or phone 127.0.0.5) ─► public 127.0.0.10 ─► server ─► VOS3000
    gen.c (127.1.0.0 + --fire-sources)                  ─► public 127.0.0.10

Targets (`--lane-targets`):
  sbc            lanes off: one public socket (firewall off)
  sbc-lanes      `lanes.trusted_port` + `firewall.mode: nftables`: the kernel
                 steers gateways and proved sources to the trusted socket
  sbc-two-ports  `lanes.trusted_port` without nftables: the caller sends to
                 the trusted port itself
  kamailio       the reference config (loadtest/reference/kamailio.cfg)

Callers (`--lane-callers`):
  gateway  uac.xml from the gateway's address
  phone    the digest account: register_auth.xml once per run (before the
           ramp), then uac_auth.xml (INVITE, 407, INVITE with credentials)
           from the same address and port; in kernel mode the registration
           puts it in `proved4`

Every server gets the digest account, so an unknown source might be a phone
and the flood reaches the server's socket (without any account and with
`auth.unknown_source: drop`, sbc in nftables mode drops strangers in the
kernel; `--lane-no-account` runs the gateway that way).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from loadtest import bench_calls
from loadtest.flood.bench_flood import FLAT_OUT_CAP_PPS
from loadtest.flood.generator import Flood, payload
from loadtest.flood.measure import udp_socket_drops
from loadtest.harness import (
    HarnessError,
    SbcProcess,
    Sipp,
    end_process,
    format_table,
    medians,
    write_config,
)
from loadtest.kamailio import KamailioProcess
from loadtest.targets import (
    ACCOUNT_PASSWORD,
    ACCOUNT_USER,
    KamailioTarget,
    Layout,
    SbcTarget,
    stop_server,
)

LANE_TARGETS = ("sbc", "sbc-lanes", "sbc-two-ports", "kamailio")
CALLERS = ("gateway", "phone")
GATEWAY = "127.0.0.1"
PHONE = "127.0.0.5"
PUBLIC, PRIVATE, BACKEND = "127.0.0.10", "127.0.0.11", "127.0.0.20"
FIRE_BASE = "127.1.0.0"
#: Fixed ports: the namespace is the run's own, so every port is free.
PUBLIC_PORT, TRUSTED_PORT, PRIVATE_PORT, BACKEND_PORT = 5060, 5062, 5080, 5070
GATEWAY_PORT, PHONE_PORT = 5064, 5066
#: The number the phone calls.
CALLED = "5551234"
NFT_TABLE = "sbcbench"
SURVIVED = 99.9
#: A namespace outlives no run: its placeholder process ends after this.
HOLDER_MAX_S = 6 * 3600

_names = itertools.count(1)


# --------------------------------------------------------------------------
# The namespace


def netns_name() -> str:
    return f"sbcbench-{os.getpid()}-{next(_names)}"


def netns_commands(name: str) -> dict[str, list[list[str]]]:
    """The commands that make, use and remove namespace `name`."""
    return {
        # route_localnet: the generator's `packet` mode writes frames onto lo, which the
        # kernel routes like a card's; without it 127/8 sources from a device are martians.
        "add": [["ip", "netns", "add", name],
                ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                ["ip", "netns", "exec", name, "sysctl", "-qw",
                 "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.lo.route_localnet=1"]],
        "holder": [["ip", "netns", "exec", name, "sleep", str(HOLDER_MAX_S)]],
        "delete": [["ip", "netns", "del", name]],
    }


class Netns:
    """A network namespace with its loopback up, and a placeholder process
    inside it (`sleep`) whose `/proc/PID/net` is the namespace's view of
    sockets (`proc_net`)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or netns_name()
        self.cmds = netns_commands(self.name)
        self.holder: subprocess.Popen[bytes] | None = None
        self.created = False

    def wrap(self, argv: Sequence[str] = ()) -> list[str]:
        """`argv` run inside the namespace (`ip netns exec` execs it: the PID is its own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    @property
    def proc_net(self) -> str:
        assert self.holder is not None
        return f"/proc/{self.holder.pid}/net"

    def create(self) -> Netns:
        for argv in self.cmds["add"]:
            _must(argv)
            self.created = True
        self.holder = subprocess.Popen(self.cmds["holder"][0], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # The placeholder is inside once its net namespace is the named one.
        want = os.stat(f"/var/run/netns/{self.name}").st_ino
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if os.stat(f"/proc/{self.holder.pid}/ns/net").st_ino == want:
                    return self
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        raise HarnessError(f"the placeholder of namespace {self.name} never entered it")

    def run(self, *argv: str, timeout: float = 10.0) -> str:
        return _must(self.wrap(argv), timeout)

    def delete(self) -> None:
        if self.holder is not None:
            end_process(self.holder)
            self.holder = None
        if self.created:
            for argv in self.cmds["delete"]:
                subprocess.run(argv, capture_output=True, timeout=10, check=False)
            self.created = False

    def __enter__(self) -> Netns:
        try:
            return self.create()
        except BaseException:
            self.delete()
            raise

    def __exit__(self, *exc: object) -> None:
        self.delete()


def _must(argv: Sequence[str], timeout: float = 10.0) -> str:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt while the benchmark runs,
    so every `finally` (processes by PID, namespaces) runs as for Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------
# The kernel's counters


_RULE = re.compile(r"counter packets (\d+) bytes \d+")
_COMMENT = re.compile(r'comment "([^"]*)"')


def nft_counters(listing: str) -> dict[str, int]:
    """`nft list table` text -> packets per rule, keyed `chain:what`, where
    `what` is the rule's comment (else its text before `counter`), and the
    totals `steered_gateway`, `steered_proved` (the steer chain's rules by
    comment) and `dropped` (every rule whose verdict is drop)."""
    out: dict[str, int] = {"steered_gateway": 0, "steered_proved": 0, "dropped": 0}
    chain = ""
    for raw in listing.splitlines():
        line = raw.strip()
        m = re.match(r"chain (\S+) \{", line)
        if m:
            chain = m.group(1)
            continue
        m = _RULE.search(line)
        if not m:
            continue
        packets = int(m.group(1))
        comment = _COMMENT.search(line)
        what = comment.group(1) if comment else line[: m.start()].strip()
        key = f"{chain}:{what}"
        out[key] = out.get(key, 0) + packets
        verdict = line[m.end():].split("comment")[0].split()
        if chain == "steer" and what in ("gateway", "proved"):
            out[f"steered_{what}"] += packets
        elif "drop" in verdict:
            out["dropped"] += packets
    return out


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# --------------------------------------------------------------------------
# Targets and callers


def sbc_sets(name: str, account: bool = True) -> list[str]:
    """sbc's config overrides (dotted KEY=VALUE) for a lane target."""
    sets = ["public.transports=[udp]"]
    if name in ("sbc-lanes", "sbc-two-ports"):
        sets.append(f"lanes.trusted_port={TRUSTED_PORT}")
    if name == "sbc-lanes":
        sets += ["firewall.mode=nftables", f"firewall.table={NFT_TABLE}"]
    return sets


#: The lane mode sbc must say at start (`{"event": "lanes", "mode": ...}`).
EXPECTED_MODE = {"sbc": "off", "sbc-lanes": "kernel", "sbc-two-ports": "two_ports"}


def layout() -> Layout:
    return Layout(PUBLIC, PUBLIC_PORT, PRIVATE, PRIVATE_PORT, BACKEND, BACKEND_PORT, GATEWAY)


def caller_remote(target: str) -> tuple[str, int]:
    """Where the caller sends: the trusted port in two-ports mode, else the public one."""
    return (PUBLIC, TRUSTED_PORT if target == "sbc-two-ports" else PUBLIC_PORT)


def start_server(
    target: str, ns: Netns, workdir: Path, lay: Layout, *, account: bool, children: int,
) -> SbcProcess | KamailioProcess:
    if target.startswith("sbc"):
        cfg = SbcTarget(sets=sbc_sets(target)).config(lay, account=account)
        sbc = SbcProcess(write_config(workdir / "sbc.yaml", cfg), workdir, prefix=ns.wrap())
        sbc.start()
        return sbc
    kam = KamailioTarget(children)
    values: dict[str, str | int] = {**kam.values(lay)}
    if account:
        values["PHONE_CALLS"] = 1
    proc = KamailioProcess(workdir, values, prefix=ns.wrap(), proc_net=ns.proc_net)
    proc.start()
    return proc


def in_ns(ns: Netns, proc: Sipp | Flood) -> Sipp | Flood:
    proc.command = ns.wrap(proc.command)
    if isinstance(proc, Sipp):
        proc.proc_net = ns.proc_net
    return proc


def register_phone(ns: Netns, lay: Layout, target: str, workdir: Path) -> str | None:
    """REGISTER the digest account from the phone's address; None when it
    got its 200, else what went wrong."""
    reg = Sipp("register", "register_auth.xml", workdir / "register", local_ip=PHONE,
               local_port=PHONE_PORT, calls=1, remote=lay.public, timeout_s=20,
               extra=["-s", ACCOUNT_USER, "-au", ACCOUNT_USER, "-ap", ACCOUNT_PASSWORD])
    in_ns(ns, reg)
    try:
        res = reg.start().wait()
    finally:
        reg.stop()
    if res.returncode == 0 and res.successful == 1:
        return None
    # Kamailio's reference registrar stores nothing and answers a bare 200
    # (no Contact with its lifetime), which register_auth.xml refuses.
    if target == "kamailio" and any(m.status == 200 for m in res.messages()):
        return None
    return f"the phone's REGISTER failed (SIPp exit {res.returncode})"


def wait_proved(ns: Netns, host: str, timeout: float = 5.0) -> bool:
    """Whether `host` shows up in the kernel's proved4 set within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if host in ns.run("nft", "list", "set", "inet", NFT_TABLE, "proved4"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def caller_cps(caller: str, args: argparse.Namespace) -> float:
    """The gateway calls at --fire-cps; the phone at --lane-phone-cps, within
    the per-source rate a non-gateway gets (sbc `screen.rate_per_ip` 20/s,
    Kamailio's pike 40 per 2 s; a digest call is 5 requests)."""
    return float(args.fire_cps if caller == "gateway" else args.lane_phone_cps)


def calls_per_step(caller: str, args: argparse.Namespace) -> int:
    return max(1, int(caller_cps(caller, args) * args.step_seconds))


def caller_pair(
    caller: str, target: str, args: argparse.Namespace, calls: int, lay: Layout, workdir: Path
) -> tuple[Sipp, Sipp]:
    """The VOS3000 stand-in and the caller for one step."""
    remote = caller_remote(target)
    cps = caller_cps(caller, args)
    uas, _ = bench_calls.call_pair(
        cps, calls, args.fire_call_ms, workdir, lay, fine_latency=False, caller_ip=GATEWAY
    )
    budget = calls / cps + args.fire_call_ms / 1000 + 30
    limit = int(cps * (args.fire_call_ms / 1000 + 1) * 3) + 100
    if caller == "gateway":
        uac = Sipp("caller", "uac.xml", workdir / "uac", local_ip=GATEWAY,
                   local_port=GATEWAY_PORT, calls=calls, timeout_s=budget, remote=remote,
                   rate=cps, limit=limit, duration_ms=args.fire_call_ms,
                   trace_msg=False, trace_rtt=True)
    else:
        uac = Sipp("phone", "uac_auth.xml", workdir / "uac", local_ip=PHONE,
                   local_port=PHONE_PORT, calls=calls, timeout_s=budget, remote=remote,
                   rate=cps, limit=limit, duration_ms=args.fire_call_ms,
                   trace_msg=False, trace_rtt=True,
                   extra=["-s", CALLED, "-au", ACCOUNT_USER, "-ap", ACCOUNT_PASSWORD,
                          "-auth_uri", f"{CALLED}@{remote[0]}:{remote[1]}"])
    return uas, uac


# --------------------------------------------------------------------------
# One step, one run


@dataclass
class LaneStep:
    step_pps: int  # asked of the generator; 0 = flat out
    offered_pps: float = 0.0
    flood_sent: int = 0
    attempted: int = 0
    succeeded: int = 0
    in_time: int = 0
    ok_pct: float = 0.0  # completed calls of those planned
    in_time_pct: float = 0.0  # completed and answered within --fire-answer-ms
    answer_p50_ms: float | None = None
    answer_p99_ms: float | None = None
    cpu_pct: float = 0.0
    cpu_us_per_packet: float | None = None
    cpu_us_per_call: float | None = None
    drops_public: int | None = None
    drops_trusted: int | None = None
    kernel_steered: int | None = None  # gateway + proved, steered to the trusted port
    kernel_dropped: int | None = None
    kernel: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class LaneRun:
    target: str
    caller: str
    repeat: int
    netns: str = ""
    mode: str | None = None
    steps: list[LaneStep] = field(default_factory=list)
    max_step_ok: int | None = None  # largest step (pps; 0 = flat out) survived
    proved_in_kernel: bool | None = None
    lanes: dict[str, Any] = field(default_factory=dict)  # sbc's `stopped` line
    peak_rss_mib: float = 0.0
    errors: list[str] = field(default_factory=list)


def step_figures(
    step: LaneStep, *, cpu_s: float, secs: float, sent: int, calls_planned: int,
    calls_ok: int, rtts: list[float], answer_ms: float,
) -> LaneStep:
    """The arithmetic of one step: shares, percentiles and CPU per packet
    (the flood packets that reached the server: sent − socket drops −
    kernel drops) and per completed call."""
    step.flood_sent = sent
    step.offered_pps = round(sent / secs) if secs > 0 else 0.0
    step.cpu_pct = round(100 * cpu_s / secs, 1) if secs > 0 else 0.0
    lost = (step.drops_public or 0) + (step.drops_trusted or 0) + (step.kernel_dropped or 0)
    handled = sent - lost
    if handled > 0:
        step.cpu_us_per_packet = round(1e6 * cpu_s / handled, 2)
    if calls_ok > 0:
        step.cpu_us_per_call = round(1e6 * cpu_s / calls_ok)
    step.succeeded = calls_ok
    step.in_time = min(calls_ok, sum(1 for r in rtts if r <= answer_ms))
    planned = max(step.attempted, calls_planned, 1)
    step.ok_pct = round(100 * calls_ok / planned, 2)
    step.in_time_pct = round(100 * step.in_time / planned, 2)
    step.answer_p50_ms = bench_calls.percentile(rtts, 50)
    step.answer_p99_ms = bench_calls.percentile(rtts, 99)
    return step


def flood_bounds(pps: int, seconds: float) -> tuple[int, float]:
    """The generator's packet count and rate for a step (0 = flat out)."""
    return int(seconds * (pps or FLAT_OUT_CAP_PPS)), float(pps)


class Readings:
    """Per-lane socket drops and the kernel's counters, inside the namespace."""

    def __init__(self, ns: Netns, target: str) -> None:
        self.ns = ns
        self.lanes = target in ("sbc-lanes", "sbc-two-ports")
        self.nft = target == "sbc-lanes"

    def read(self) -> tuple[int | None, int | None, dict[str, int] | None]:
        public = udp_socket_drops(PUBLIC_PORT, PUBLIC, self.ns.proc_net)
        trusted = udp_socket_drops(TRUSTED_PORT, PUBLIC, self.ns.proc_net) if self.lanes else None
        counters = None
        if self.nft:
            counters = nft_counters(self.ns.run("nft", "-t", "list", "table", "inet", NFT_TABLE))
        return public, trusted, counters


def lane_step(
    server: SbcProcess | KamailioProcess, ns: Netns, target: str, caller: str, pps: int,
    args: argparse.Namespace, lay: Layout, workdir: Path,
) -> LaneStep:
    step = LaneStep(pps)
    calls = calls_per_step(caller, args)
    uas, uac = caller_pair(caller, target, args, calls, lay, workdir)
    count, rate = flood_bounds(pps, args.step_seconds)
    flood = Flood(payload(args.fire_payload, lay.public, FIRE_BASE), lay.public, workdir,
                  count=count, seconds=args.step_seconds, rate=rate, src=FIRE_BASE,
                  sources=args.fire_sources, src_mode=args.lane_flood_mode,
                  procs=args.lane_flood_procs)
    for proc in (uas, uac, flood):
        in_ns(ns, proc)
    readings = Readings(ns, target)
    pub0, tr0, k0 = readings.read()
    try:
        uas.start().wait_bound()
        cpu0 = server.cpu_seconds()
        started = time.monotonic()
        flood.start()
        uac.start()
        stats = flood.wait()
        cpu1, secs = server.cpu_seconds(), time.monotonic() - started
        uac_res = uac.wait()
        # The stand-in waits for its -m calls; those the caller gave up on
        # never come, so it gets a grace period instead of its whole -timeout.
        uas_rc = finish(uas, args.fire_call_ms / 1000 + 5)
    finally:
        flood.stop()
        uac.stop()
        uas.stop()
    pub1, tr1, k1 = readings.read()
    step.drops_public = None if pub1 is None else pub1 - (pub0 or 0)
    step.drops_trusted = None if tr1 is None else tr1 - (tr0 or 0)
    if k0 is not None and k1 is not None:
        step.kernel = counter_delta(k0, k1)
        step.kernel_steered = step.kernel.get("steered_gateway", 0) + step.kernel.get(
            "steered_proved", 0)
        step.kernel_dropped = step.kernel.get("dropped", 0)
    step.attempted = uac_res.stat("OutgoingCall")
    step_figures(step, cpu_s=cpu1 - cpu0, secs=stats.seconds or secs, sent=stats.sent,
                 calls_planned=calls, calls_ok=uac_res.successful, rtts=uac_res.rtts_ms("invite"),
                 answer_ms=args.fire_answer_ms)
    if uac_res.returncode not in (0, 1) or uas_rc not in (0, 1, None):
        step.errors.append(f"SIPp exit codes {uac_res.returncode}/{uas_rc}")
    return step


def finish(sipp: Sipp, grace: float) -> int | None:
    """SIPp's exit code once it ends by itself within `grace` seconds; else
    it is ended by its PID and None is returned."""
    assert sipp.proc is not None
    try:
        return sipp.proc.wait(grace)
    except subprocess.TimeoutExpired:
        sipp.stop()
        return None


def survived(steps: list[LaneStep]) -> int | None:
    """The last step of the ramp (pps; 0 = flat out) up to which calls were
    answered in time >= 99.9 % at every step; None when the first failed."""
    best: int | None = None
    for step in steps:
        if step.in_time_pct < SURVIVED:
            break
        best = step.step_pps
    return best


def lane_run(
    target: str, caller: str, repeat: int, args: argparse.Namespace, root: Path
) -> LaneRun:
    """One namespace and one server for the whole ramp; a fresh SIPp pair and
    flood per step; the namespace removed at the end, whatever happens."""
    run = LaneRun(target, caller, repeat)
    workdir = root / f"fire-lanes-{caller}-{target}-run{repeat}"
    workdir.mkdir(parents=True)
    lay = layout()
    account = caller == "phone" or not args.lane_no_account
    server: SbcProcess | KamailioProcess | None = None
    with Netns() as ns:
        run.netns = ns.name
        try:
            server = start_server(target, ns, workdir, lay, account=account,
                                  children=args.kamailio_children)
            if isinstance(server, SbcProcess):
                lines = server.wait_named("lanes", 5)
                run.mode = str(lines[-1].get("mode"))
                if run.mode != EXPECTED_MODE[target]:
                    run.errors.append(f"sbc says lanes mode {run.mode}, expected "
                                      f"{EXPECTED_MODE[target]}: {lines[-1]}")
            if caller == "phone":
                problem = register_phone(ns, lay, target, workdir)
                if problem:
                    run.errors.append(problem)
                if target == "sbc-lanes":
                    run.proved_in_kernel = wait_proved(ns, PHONE)
            for pps in args.fire_step_list:
                step = lane_step(server, ns, target, caller, pps, args, lay,
                                 workdir / f"step-{pps or 'flat'}")
                run.steps.append(step)
            run.max_step_ok = survived(run.steps)
            run.peak_rss_mib = round(server.peak_rss_kib() / 1024, 1)
        finally:
            code = stop_server(server, run.errors)
            if code not in (0, None):
                run.errors.append(f"{target} exited {code}")
            if isinstance(server, SbcProcess):
                stopped = server.named("stopped")
                if stopped:
                    run.lanes = dict(stopped[-1].get("lanes") or {})
    return run


# --------------------------------------------------------------------------
# Medians and the table


STEP_KEYS = [
    "offered_pps", "ok_pct", "in_time_pct", "answer_p50_ms", "answer_p99_ms", "cpu_pct",
    "cpu_us_per_packet", "cpu_us_per_call", "drops_public", "drops_trusted", "kernel_steered",
    "kernel_dropped",
]


def step_medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step of the ramp, the median of each figure over the repeats."""
    if not runs:
        return []
    out = []
    for i, pps in enumerate(s["step_pps"] for s in runs[0]["steps"]):
        steps = [r["steps"][i] for r in runs if len(r["steps"]) > i]
        out.append({"step_pps": pps, **medians(steps, STEP_KEYS)})
    return out


def max_ok_median(runs: list[dict[str, Any]]) -> int | None:
    """The median over runs of the largest survived step (flat out counts as
    the largest; a run that survived none counts below every step)."""
    def rank(v: int | None) -> float:
        return -1.0 if v is None else float("inf") if v == 0 else float(v)

    vals = sorted((r.get("max_step_ok") for r in runs), key=rank)
    return vals[len(vals) // 2] if vals else None


def step_label(pps: int) -> str:
    return "flat out" if pps == 0 else f"{pps:,}"


LANE_COLUMNS = [
    ("caller", "caller", "{}"),
    ("step pps", "step", "{}"),
    ("target", "target", "{}"),
    ("offered pps", "offered_pps", "{:,.0f}"),
    ("calls ok %", "ok_pct", "{:.2f}"),
    ("<=1s %", "in_time_pct", "{:.2f}"),
    ("200 p50 ms", "answer_p50_ms", "{:.0f}"),
    ("200 p99 ms", "answer_p99_ms", "{:.0f}"),
    ("cpu %", "cpu_pct", "{:.0f}"),
    ("us/pkt", "cpu_us_per_packet", "{:.2f}"),
    ("us/call", "cpu_us_per_call", "{:,.0f}"),
    ("drops public", "drops_public", "{:,.0f}"),
    ("drops trusted", "drops_trusted", "{:,.0f}"),
    ("nft steered", "kernel_steered", "{:,.0f}"),
    ("nft dropped", "kernel_dropped", "{:,.0f}"),
]


def lanes_table(case: dict[str, Any]) -> str:
    """One row per caller, step and target (medians)."""
    rows = []
    for caller in case["callers"]:
        per = case[caller]
        names = [t for t in case["targets"] if t in per]
        if not names:
            continue
        for i, pps in enumerate(s["step_pps"] for s in per[names[0]]["steps"]):
            for name in names:
                st = per[name]["steps"]
                if i < len(st):
                    rows.append({"caller": caller, "step": step_label(pps), "target": name,
                                 **st[i]})
    return format_table(rows, LANE_COLUMNS) if rows else ""


def lanes_summary(case: dict[str, Any], answer_ms: float) -> list[str]:
    lines = []
    for caller in case["callers"]:
        for name in case["targets"]:
            runs = case[caller].get(name, {}).get("runs", [])
            if not runs:
                continue
            best = max_ok_median(runs)
            shown = "none" if best is None else step_label(best) + (" pps" if best else "")
            extra = ""
            proved = [r.get("proved_in_kernel") for r in runs if r.get("proved_in_kernel")
                      is not None]
            if proved:
                extra = f"; phone in proved4 after REGISTER: {sum(proved)}/{len(proved)} runs"
            lines.append(f"{caller}: {name}: calls >= {SURVIVED}% answered within "
                         f"{answer_ms:g} ms up to step: {shown}{extra}")
    return lines


def run_case(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """For each caller: `--repeat` rounds, the targets alternating in each."""
    case: dict[str, Any] = {"scenario": "fire-lanes", "label": "fire-lanes",
                            "callers": args.lane_caller_list, "targets": args.lane_target_list}
    caseroot = root.resolve() / "fire-lanes"  # Kamailio runs in its own cwd
    with signals_as_interrupt():
        for caller in args.lane_caller_list:
            runs: dict[str, list[dict[str, Any]]] = {t: [] for t in args.lane_target_list}
            for repeat in range(1, args.repeat + 1):
                for target in args.lane_target_list:
                    run = lane_run(target, caller, repeat, args, caseroot)
                    note = ", ".join(f"{step_label(s.step_pps)}:{s.in_time_pct}%"
                                     for s in run.steps)
                    errors = "  ! " + "; ".join(run.errors) if run.errors else ""
                    print(f"  fire-lanes {caller} {target} run {repeat} (mode {run.mode}): "
                          f"{note}{errors}", flush=True)
                    runs[target].append(asdict(run))
                    time.sleep(0.2)
            case[caller] = {
                name: {"runs": rs, "steps": step_medians(rs), "max_step_ok": max_ok_median(rs)}
                for name, rs in runs.items()
            }
    return case
