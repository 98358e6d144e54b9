"""The side-by-side harness (loadtest/compare.py): the Kamailio reference
config loads, one tiny bounded run of each kind completes against the
servers and gives the figures the table and the charts read; the latency
probe's SIP (Record-Route honoured) against an in-process callee; the
arithmetic and arguments of the calls figures."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from loadtest import bench_calls, compare, fire_lanes, probe
from loadtest.flood import bench_flood
from loadtest.harness import cpu_seconds, run_seconds, sipp_binary
from loadtest.kamailio import KamailioProcess, check_config, kamailio_binary, parse_drop_stats
from loadtest.targets import KamailioTarget, Layout

needs_kamailio = pytest.mark.skipif(kamailio_binary() is None, reason="kamailio not installed")
needs_tools = pytest.mark.skipif(
    kamailio_binary() is None or sipp_binary() is None or shutil.which("gcc") is None,
    reason="needs kamailio, sipp and gcc",
)


@needs_kamailio
def test_reference_config_passes_kamailio_check() -> None:
    layout = Layout("127.0.0.10", 5999, "127.0.0.11", 5998, "127.0.0.20", 5997, "127.0.0.1")
    out = check_config(KamailioTarget().values(layout))
    assert "127.0.0.10" in out and "127.0.0.11" in out


@needs_tools
def test_one_tiny_run_of_each_side(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    charts = tmp_path / "charts"
    code = compare.main(
        [
            "--scenarios",
            "calls,options-flood,calls-under-fire",
            "--repeat",
            "1",
            "--seconds",
            "1",
            "--cps",
            "10",
            "--call-ms",
            "200",
            "--flood-rates",
            "2000",
            "--fire-cps",
            "10",
            "--fire-call-ms",
            "200",
            "--fire-steps",
            "1000",
            "--fire-sources",
            "50",
            "--kamailio-children",
            "1",
            "--targets",
            "sbc,kamailio,kamailio-tlsf",
            "--probe-cps",
            "5",
            "--json",
            str(out),
            "--charts",
            str(charts),
            "--workdir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    cases = {c["scenario"]: c for c in doc["cases"]}
    assert set(cases) == {"calls", "options-flood", "calls-under-fire"}
    targets = ("sbc", "kamailio", "kamailio-tlsf")
    for case in cases.values():
        assert set(case["ratio"]) == set(case["sbc"]["median"])
        for target in targets:
            assert len(case[target]["runs"]) == 1
    for target in targets:
        calls = cases["calls"][target]["median"]
        assert calls["succeeded"] == 10 and calls["failed"] == 0 and calls["ok_pct"] == 100.0
        assert calls["relayed_pps"] > 0  # INVITE, ACK, BYE one way; 100, 180, 200s the other
        # The probe's 5 calls completed beside SIPp's and count in the CPU per call.
        run = cases["calls"][target]["runs"][0]
        assert run["probe_completed"] == 5 and run["probe_failed"] == 0
        assert run["cpu_calls"] == 15 and 0 < run["probe_p50_us"] <= run["probe_p99_us"]
        assert run["probe_p99_us"] == run["probe_max_us"] < 1e6
        # cpu_s is kept to the millisecond: 0.5 ms / 15 calls is 33 us.
        assert run["cpu_us_per_call"] == pytest.approx(run["cpu_s"] / 15 * 1e6, abs=34)
        assert run["cpu_stat_s"] == pytest.approx(run["cpu_s"], abs=0.1)
        flood = cases["options-flood"][target]["median"]
        assert flood["offered_pps"] > 0 and flood["handled_pps"] > 0
        assert flood["cpu_us_per_packet"] is not None
        assert flood["to_backend"] == 0 and flood["forwarded_pps"] < 1
        # Each side counts its drops by reason: every flood packet is in one.
        run = cases["options-flood"][target]["runs"][0]
        reasons = {k.rpartition(":")[2] for k in run["drops"]}
        assert reasons and reasons <= {"scanner", "banned"}, run["drops"]
        assert sum(run["drops"].values()) >= 0.99 * run["handled"], run
        fire = cases["calls-under-fire"][target]
        assert [s["flood_pps"] for s in fire["steps"]] == [1000]
        assert fire["median"]["max_flood_pps_ok"] == 1000
        step = fire["steps"][0]
        # Answered in time (a few ms on loopback), CPU counted while the flood ran.
        assert step["success_pct"] == 100.0 and 0 < step["answer_p99_ms"] < 1000
        assert step["cpu_us_per_packet"] is not None and step["cpu_us_per_packet"] > 0
    assert doc["meta"]["probe_cps"] == 5 and doc["meta"]["call_ms"] == 200
    assert sorted(p.name for p in charts.iterdir()) == [
        "calls-under-fire.png",
        "cpu-per-packet.png",
    ]


def test_kamailio_drop_statistics_parsed_by_reason() -> None:
    text = ("script:drop_banned = 2000\nscript:drop_scanner = 5\n"
            "script:drop_malformed = 0\ncore:rcv_requests = 9\n")
    assert parse_drop_stats(text) == {"banned": 2000, "scanner": 5}


# --------------------------------------------------------------------------
# The latency probe


def test_probe_reads_a_200_with_its_record_route_set() -> None:
    resp = probe.parse_response(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-1\r\n"
        b"Record-Route: <sip:127.0.0.10:5060;lr>, <sip:127.0.0.11:5080;lr;x=a,b>\r\n"
        b"Record-Route: <sip:127.0.0.12;lr>\r\n"
        b"i: c1\r\nCSeq: 1 INVITE\r\nt: <sip:x@y>;tag=9\r\n"
        b"m: <sip:callee@127.0.0.20:5070;transport=udp>\r\nContent-Length: 0\r\n\r\n"
    )
    assert resp is not None
    assert (resp.status, resp.call_id, resp.cseq_method) == (200, "c1", "INVITE")
    assert resp.to == "<sip:x@y>;tag=9"
    assert resp.record_route == [
        "<sip:127.0.0.10:5060;lr>",
        "<sip:127.0.0.11:5080;lr;x=a,b>",
        "<sip:127.0.0.12;lr>",
    ]
    assert resp.contact == "sip:callee@127.0.0.20:5070;transport=udp"
    assert probe.parse_response(b"INVITE sip:a@b SIP/2.0\r\n\r\n") is None
    assert probe.parse_response(b"not sip") is None


def test_probe_refuses_addresses_off_loopback_and_unbounded_runs() -> None:
    ok = ["--target", "127.0.0.10:5060", "--calls", "3", "--seconds", "5"]
    assert probe.parse_args(ok).target_addr == ("127.0.0.10", 5060)
    for bad in (
        ["--target", "10.0.0.1:5060", "--calls", "3", "--seconds", "5"],
        [*ok, "--local", "192.0.2.1:0"],
        ["--target", "127.0.0.10:5060", "--calls", str(probe.MAX_CALLS + 1), "--seconds", "5"],
        ["--target", "127.0.0.10:5060", "--calls", "3"],
        ["--target", "127.0.0.10:5060", "--seconds", "5"],
        ["--target", "127.0.0.10", "--calls", "3", "--seconds", "5"],
    ):
        with pytest.raises(SystemExit):
            probe.parse_args(bad)


class _Callee(asyncio.DatagramProtocol):
    """A proxy and callee in one socket: 100, 200 with two Record-Route
    entries; 200 for BYE.  Keeps every request it got."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode()
        self.requests.append(text)
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0] in ("Via", "From", "Call-ID", "CSeq")]
        to = next(h for h in head if h.startswith("To:"))
        assert self.transport is not None
        method = head[0].split(" ", 1)[0]
        if method == "INVITE":
            self.transport.sendto(("SIP/2.0 100 Trying\r\n" + "\r\n".join([*keep, to])
                                   + "\r\n\r\n").encode(), addr)
            self.transport.sendto((
                "SIP/2.0 200 OK\r\n" + "\r\n".join([*keep, to + ";tag=callee"])
                + "\r\nRecord-Route: <sip:127.0.0.1:1;lr;outer>, <sip:127.0.0.1:2;lr;inner>"
                + "\r\nContact: <sip:callee@127.0.0.1:3>\r\nContent-Length: 0\r\n\r\n"
            ).encode(), addr)
        elif method == "BYE":
            self.transport.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join([*keep, to])
                                   + "\r\n\r\n").encode(), addr)


def test_probe_honours_record_route_and_times_each_answer() -> None:
    async def scenario() -> tuple[dict[str, Any], list[str]]:
        loop = asyncio.get_running_loop()
        transport, callee = await loop.create_datagram_endpoint(
            _Callee, local_addr=("127.0.0.1", 0)
        )
        try:
            port = transport.get_extra_info("sockname")[1]
            result = await probe.run(("127.0.0.1", port), ("127.0.0.1", 0), 50.0, 2, 10, 10.0)
        finally:
            transport.close()
        return result, callee.requests

    result, requests = asyncio.run(scenario())
    assert (result["placed"], result["answered"], result["completed"], result["failed"]) == (
        2, 2, 2, 0,
    )
    assert len(result["invite_200_us"]) == 2 and len(result["invite_100_us"]) == 2
    assert all(0 < v < 1e6 for v in result["invite_200_us"])
    methods = [r.split(" ", 1)[0] for r in requests]
    assert sorted(methods) == ["ACK", "ACK", "BYE", "BYE", "INVITE", "INVITE"]
    for req in requests:
        if req.startswith(("ACK", "BYE")):
            # To the 200's Contact, through the route set reversed (RFC 3261 12.1.2).
            assert req.startswith(("ACK sip:callee@127.0.0.1:3 ", "BYE sip:callee@127.0.0.1:3 "))
            routes = [h for h in req.split("\r\n") if h.startswith("Route:")]
            assert routes == ["Route: <sip:127.0.0.1:2;lr;inner>",
                              "Route: <sip:127.0.0.1:1;lr;outer>"]
            assert ";tag=callee" in req


# --------------------------------------------------------------------------
# Figures and arguments


def test_cpu_per_call_counts_the_probes_calls_and_ok_share() -> None:
    run = bench_calls.Run(rate=1000, transport="udp", repeat=1, calls=10000)
    run.attempted, run.succeeded = 10000, 9950
    bench_calls.read_probe_result(
        run, {"placed": 200, "completed": 198, "invite_200_us": [300.0, 100.0, 200.0, 5000.0]}, 200
    )
    bench_calls.cpu_per_call(run, 5.074)
    assert (run.probe_completed, run.probe_failed) == (198, 2)
    assert (run.probe_p50_us, run.probe_p99_us, run.probe_max_us) == (200.0, 5000.0, 5000.0)
    assert run.cpu_calls == 10148
    assert run.cpu_us_per_call == round(5.074 / 10148 * 1e6, 1) == 500.0
    assert run.ok_pct == 99.5
    empty = bench_calls.Run(rate=10, transport="udp", repeat=1, calls=10)
    bench_calls.read_probe_result(empty, {}, 3)
    assert empty.probe_failed == 3 and empty.errors == ["the latency probe left no result"]
    assert bench_calls.probe_call_count(20, 10) == 200
    assert bench_calls.probe_call_count(0, 10) == 0
    assert bench_calls.probe_call_count(0.01, 10) == 1


def test_probe_sends_from_the_gateway() -> None:
    one = Layout("127.0.0.10", 1, "127.0.0.11", 2, "127.0.0.20", 3, "127.0.0.1")
    net = Layout("127.0.0.1", 1, "127.0.0.1", 2, "127.0.0.1", 3, "127.0.0.0/8")
    assert bench_calls.probe_host(one) == "127.0.0.1"
    assert bench_calls.probe_host(net) == "127.0.0.1"


def test_compare_calls_case_is_bench_calls_with_the_same_settings() -> None:
    args = compare.parse_args(
        ["--scenarios", "calls", "--cps", "200,1000", "--seconds", "4", "--call-ms", "1000",
         "--probe-cps", "20", "--no-fine-latency", "--targets", "kamailio-tlsf,sbc"]
    )
    assert args.target_list == ["kamailio-tlsf", "sbc"] and args.cps_list == [200, 1000]
    ns = compare.calls_args(1000, args)
    assert (ns.rate_list, ns.duration, ns.call_ms, ns.probe_cps) == ([1000], 4.0, 1000, 20.0)
    assert ns.fine_latency is False and ns.transport == "udp"
    assert compare.calls_args(200, compare.parse_args([])).fine_latency is True
    tlsf = compare.make_target("kamailio-tlsf", 1)
    assert isinstance(tlsf, KamailioTarget)
    assert (tlsf.name, tlsf.mem_manager, tlsf.children) == ("kamailio-tlsf", "tlsf", 1)
    assert compare.make_target("kamailio", 2).name == "kamailio"
    assert compare.make_target("sbc", 2).name == "sbc"
    for bad in (["--targets", "kamailio-qm"], ["--targets", "sbc,sbc"], ["--probe-cps", "500"],
                ["--probe-cps", "-1"]):
        with pytest.raises(SystemExit):
            compare.parse_args(bad)


def test_calls_summary_one_row_per_target_and_rate() -> None:
    def med(us: float, p99: float) -> dict[str, object]:
        return {"median": {"ok_pct": 100.0, "cpu_us_per_call": us, "probe_p50_us": 800.0,
                           "probe_p99_us": p99, "probe_max_us": p99 + 1, "answer_p50_ms": 2.5,
                           "answer_p99_ms": 3.25, "rtt_p99_ms": 4.0, "peak_rss_mib": 58.25}}

    cases = [
        {"scenario": "calls", "rate": 200.0, "sbc": med(741, 3000), "kamailio": med(435, 2900)},
        {"scenario": "calls", "rate": 1000.0, "sbc": med(449, 9000), "kamailio": med(319, 4000)},
        {"scenario": "options-flood", "rate": 2000.0, "sbc": {"median": {}}},
    ]
    lines = compare.calls_summary(cases).splitlines()
    assert lines[0].split()[:4] == ["target", "cps", "ok", "%"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("sbc", "200", "741"), ("sbc", "1000", "449"),
        ("kamailio", "200", "435"), ("kamailio", "1000", "319"),
    ]
    assert rows[1][5:7] == ["9000", "9001"] and rows[1][-1] == "58.2"
    assert compare.calls_summary(cases[2:]) == ""


@needs_kamailio
def test_kamailio_tlsf_runs_with_tlsf_for_both_memories(tmp_path: Path) -> None:
    plain = KamailioProcess(tmp_path, {"PUBLIC_IP": "127.0.0.10"})
    tlsf = KamailioProcess(tmp_path, {"PUBLIC_IP": "127.0.0.10"}, mem_manager="tlsf")
    assert "-x" not in plain.command and "-X" not in plain.command
    i = tlsf.command.index("-x")
    assert tlsf.command[i : i + 4] == ["-x", "tlsf", "-X", "tlsf"]


def test_run_seconds_agrees_with_stat_while_threads_live() -> None:
    """schedstat (ns, live threads: what the benchmarks count) and utime +
    stime (ticks, every thread ever) agree while the threads live; a thread
    that has exited stays in utime + stime only."""
    import threading

    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    done, release = threading.Event(), threading.Event()

    def work() -> None:
        spin(0.3)
        done.set()
        release.wait(10)

    before_run, before_stat = run_seconds(os.getpid()), cpu_seconds(os.getpid())
    worker = threading.Thread(target=work)
    worker.start()
    spin(0.2)
    assert done.wait(10)
    live_run = run_seconds(os.getpid()) - before_run
    live_stat = cpu_seconds(os.getpid()) - before_stat
    tid = worker.native_id
    release.set()
    worker.join()
    # join returns when the thread has exited; the kernel drops it from
    # /proc/PID/task a moment later.
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{os.getpid()}/task/{tid}") and time.monotonic() < deadline:
        time.sleep(0.01)
    gone_run = run_seconds(os.getpid()) - before_run
    gone_stat = cpu_seconds(os.getpid()) - before_stat
    assert live_run >= 0.45
    assert live_stat == pytest.approx(live_run, abs=0.05)
    assert gone_stat >= live_stat and gone_run < live_run - 0.25
    with pytest.raises(ProcessLookupError):
        run_seconds(_unused_pid())


def _unused_pid() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


# --------------------------------------------------------------------------
# fire-lanes: arguments, namespace commands, kernel counters, step arithmetic


def test_fire_lanes_arguments() -> None:
    args = compare.parse_args(
        ["--scenarios", "fire-lanes", "--lane-targets", "sbc-lanes,sbc,kamailio",
         "--lane-callers", "phone", "--fire-steps", "50000,100000,0", "--step-seconds", "5",
         "--lane-phone-cps", "3"]
    )
    assert args.scenario_list == ["fire-lanes"]
    assert args.lane_target_list == ["sbc-lanes", "sbc", "kamailio"]
    assert args.lane_caller_list == ["phone"]
    assert args.fire_step_list == [50000, 100000, 0] and args.step_seconds == 5.0
    assert fire_lanes.caller_cps("phone", args) == 3.0
    assert fire_lanes.caller_cps("gateway", args) == 50.0
    assert fire_lanes.calls_per_step("phone", args) == 15
    assert fire_lanes.calls_per_step("gateway", args) == 250
    # The flood: whole frames onto the namespace's lo from two senders, unless told otherwise.
    assert args.lane_flood_mode == "packet" and args.lane_flood_procs == 2
    other = compare.parse_args(["--lane-flood-mode", "pktinfo", "--lane-flood-procs", "1"])
    assert other.lane_flood_mode == "pktinfo" and other.lane_flood_procs == 1
    # Not among the default scenarios: it needs root and a namespace.
    assert "fire-lanes" not in compare.parse_args([]).scenario_list
    for bad in (["--lane-targets", "sbc,sbc"], ["--lane-targets", "opensips"],
                ["--lane-callers", "fax"], ["--scenarios", "fire-lanes", "--fire-steps", "-5"],
                ["--scenarios", "calls-under-fire", "--fire-steps", "0"],
                ["--lane-phone-cps", "0"], ["--lane-flood-procs", "0"],
                ["--lane-flood-procs", "17"], ["--lane-flood-mode", "bind"]):
        with pytest.raises(SystemExit):
            compare.parse_args(bad)


def test_fire_lanes_flat_out_is_bounded() -> None:
    count, rate = fire_lanes.flood_bounds(0, 5.0)
    assert rate == 0.0 and count == 5 * bench_flood.FLAT_OUT_CAP_PPS
    assert fire_lanes.flood_bounds(100_000, 5.0) == (500_000, 100_000.0)
    assert fire_lanes.step_label(0) == "flat out" and fire_lanes.step_label(800000) == "800,000"


def test_fire_lanes_namespace_commands() -> None:
    name = fire_lanes.netns_name()
    assert name.startswith(f"sbcbench-{os.getpid()}-") and name != fire_lanes.netns_name()
    cmds = fire_lanes.netns_commands("sbcbench-1-1")
    assert cmds["add"] == [["ip", "netns", "add", "sbcbench-1-1"],
                           ["ip", "netns", "exec", "sbcbench-1-1", "ip", "link", "set", "lo",
                            "up"],
                           ["ip", "netns", "exec", "sbcbench-1-1", "sysctl", "-qw",
                            "net.ipv4.conf.all.route_localnet=1",
                            "net.ipv4.conf.lo.route_localnet=1"]]
    assert cmds["delete"] == [["ip", "netns", "del", "sbcbench-1-1"]]
    holder = cmds["holder"][0]
    assert holder[:5] == ["ip", "netns", "exec", "sbcbench-1-1", "sleep"]
    assert 0 < int(holder[5]) <= 24 * 3600  # bounded even if never ended
    ns = fire_lanes.Netns("sbcbench-1-1")
    assert ns.wrap(["nft", "list", "ruleset"]) == [
        "ip", "netns", "exec", "sbcbench-1-1", "nft", "list", "ruleset"]
    ns.delete()  # never created: nothing to remove, no error


def test_fire_lanes_targets_and_servers_in_the_namespace(tmp_path: Path) -> None:
    from loadtest.harness import SbcProcess, Sipp

    assert fire_lanes.sbc_sets("sbc") == ["public.transports=[udp]"]
    lanes = fire_lanes.sbc_sets("sbc-lanes")
    assert f"lanes.trusted_port={fire_lanes.TRUSTED_PORT}" in lanes
    assert "firewall.mode=nftables" in lanes
    two = fire_lanes.sbc_sets("sbc-two-ports")
    assert not any(s.startswith("firewall.") for s in two)
    assert fire_lanes.caller_remote("sbc-two-ports")[1] == fire_lanes.TRUSTED_PORT
    assert fire_lanes.caller_remote("sbc-lanes")[1] == fire_lanes.PUBLIC_PORT
    ns = fire_lanes.Netns("sbcbench-1-2")
    sbc = SbcProcess(tmp_path / "sbc.yaml", tmp_path, prefix=ns.wrap())
    assert sbc.prefix == ["ip", "netns", "exec", "sbcbench-1-2"]
    if sipp_binary() is not None:
        sipp = Sipp("x", "uac.xml", tmp_path / "sipp", local_port=5064, calls=1, timeout_s=5)
        plain = list(sipp.command)
        ns.holder = type("P", (), {"pid": 4242})()
        fire_lanes.in_ns(ns, sipp)
        assert sipp.command == ["ip", "netns", "exec", "sbcbench-1-2", *plain]
        assert sipp.proc_net == "/proc/4242/net"
    if kamailio_binary() is not None:
        kam = KamailioProcess(tmp_path, {"PUBLIC_IP": "127.0.0.10"}, prefix=ns.wrap(),
                              proc_net="/proc/4242/net")
        assert kam.command[:4] == ["ip", "netns", "exec", "sbcbench-1-2"]


NFT_LISTING = """table inet sbcbench {
\tchain lanes {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tip daddr 127.0.0.10 udp dport 5062 counter packets 3 bytes 300 drop comment "trusted port reached directly"
\t\tip daddr 127.0.0.10 udp dport 5060 jump steer
\t}
\tchain steer {
\t\tip saddr @gateways4 udp dport set 5062 counter packets 750 bytes 9000 return comment "gateway"
\t\tip saddr . udp sport @gateway_ports4 udp dport set 5062 counter packets 0 bytes 0 return comment "gateway"
\t\tip saddr @proved4 udp dport set 5062 counter packets 79 bytes 900 return comment "proved"
\t}
\tchain sip {
\t\tip saddr @banned4 counter packets 10 bytes 100 drop
\t\tupdate @rate_net4 { ip saddr and 255.255.255.0 limit rate over 300/second } counter packets 5 bytes 50 drop
\t\tcounter packets 99 bytes 1 accept
\t}
}
"""


def test_fire_lanes_reads_the_kernel_counters() -> None:
    c = fire_lanes.nft_counters(NFT_LISTING)
    assert c["steered_gateway"] == 750 and c["steered_proved"] == 79
    assert c["dropped"] == 3 + 10 + 5  # accept is no drop
    assert c["lanes:trusted port reached directly"] == 3
    assert c["steer:gateway"] == 750
    later = fire_lanes.nft_counters(NFT_LISTING.replace("packets 750", "packets 800"))
    assert fire_lanes.counter_delta(c, later) == {"steer:gateway": 50, "steered_gateway": 50}


def test_fire_lanes_step_arithmetic() -> None:
    step = fire_lanes.LaneStep(100_000, attempted=250, drops_public=200_000, drops_trusted=0,
                               kernel_dropped=50_000)
    fire_lanes.step_figures(step, cpu_s=2.5, secs=5.0, sent=500_000, calls_planned=250,
                            calls_ok=249, rtts=[10.0] * 240 + [1500.0] * 9, answer_ms=1000.0)
    assert step.offered_pps == 100_000 and step.cpu_pct == 50.0
    assert step.cpu_us_per_packet == round(2.5e6 / 250_000, 2)  # sent - socket - kernel drops
    assert step.cpu_us_per_call == round(2.5e6 / 249)
    assert (step.ok_pct, step.in_time, step.in_time_pct) == (99.6, 240, 96.0)
    assert (step.answer_p50_ms, step.answer_p99_ms) == (10.0, 1500.0)
    # Calls never attempted count as failed: the share is of those planned.
    short = fire_lanes.step_figures(fire_lanes.LaneStep(0, attempted=10), cpu_s=0, secs=1,
                                    sent=0, calls_planned=250, calls_ok=10, rtts=[5.0] * 10,
                                    answer_ms=1000.0)
    assert short.in_time_pct == 4.0 and short.cpu_us_per_packet is None


def test_fire_lanes_survived_and_medians() -> None:
    def steps(*pcts: float) -> list[fire_lanes.LaneStep]:
        return [fire_lanes.LaneStep(p, in_time_pct=v, answer_p99_ms=v)
                for p, v in zip((50_000, 100_000, 0), pcts, strict=True)]

    a, b, c = steps(100, 100, 100), steps(100, 99.0, 100), steps(95, 100, 100)
    assert fire_lanes.survived(a) == 0  # flat out survived
    assert fire_lanes.survived(b) == 50_000  # a failed step ends the ramp
    assert fire_lanes.survived(c) is None
    runs: list[dict[str, Any]] = [
        {"steps": [vars(s) for s in r], "max_step_ok": fire_lanes.survived(r)} for r in (a, b, c)
    ]
    assert fire_lanes.max_ok_median(runs) == 50_000
    assert fire_lanes.max_ok_median(runs[:1] * 3) == 0
    med = fire_lanes.step_medians(runs)
    assert [m["step_pps"] for m in med] == [50_000, 100_000, 0]
    assert med[0]["in_time_pct"] == 100 and med[1]["in_time_pct"] == 100


def test_fire_lanes_table_one_row_per_caller_step_and_target() -> None:
    def steps(pct: float) -> list[dict[str, object]]:
        return [{"step_pps": p, "offered_pps": p or 310_000, "ok_pct": 100.0,
                 "in_time_pct": pct, "answer_p99_ms": 12.0} for p in (50_000, 0)]

    case = {"callers": ["gateway"], "targets": ["sbc", "sbc-lanes"],
            "gateway": {"sbc": {"steps": steps(60.0), "runs": [{"max_step_ok": None}]},
                        "sbc-lanes": {"steps": steps(100.0), "runs": [{"max_step_ok": 0}]}}}
    lines = fire_lanes.lanes_table(case).splitlines()
    assert len(lines) == 5 and "calls ok %" in lines[0] and "drops trusted" in lines[0]
    assert lines[3].split()[:5] == ["gateway", "flat", "out", "sbc", "310,000"]
    summary = fire_lanes.lanes_summary(case, 1000)
    assert summary[0].endswith("up to step: none")
    assert summary[1].endswith("up to step: flat out")
