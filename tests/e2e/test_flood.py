"""Floods against a real sbc while a gateway places calls (functional, not timed).

    gen.c (127.0.0.66, or 127.1.x.y) ──flood──► sbc public ─ sbc private ──► SIPp "VOS3000"
    SIPp gateway (127.0.0.1)        ──calls──►

sbc knows one gateway, 127.0.0.1.  The flood comes from the C generator
(loadtest/flood/gen.c), bounded by a packet count and seconds; the gateway's
calls come from SIPp.  Each test asserts what a customer and VOS3000 would
see (every call succeeds; not one flood packet reaches VOS3000) and what sbc
counted (the screen dropped the flood, by reason).  The generator's own
bounds and its loopback-only rule are tested first, without sbc.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest.flood.generator import (
    FLOOD_MARK,
    MANY_SOURCES_BASE,
    SCANNER_SOURCE,
    Flood,
    FloodError,
    FloodStats,
    Receiver,
    build,
    scanner_options,
)
from loadtest.flood.measure import SbcTotals, udp_socket_drops, wait_cpu_settled
from loadtest.harness import LOOPBACK, SbcProcess, SippResult, report

from .conftest import Ports, SbcFactory, SippFactory

pytestmark = pytest.mark.e2e

GATEWAY_ONLY = {"gateways": [{"name": "gw", "ip": [LOOPBACK]}]}

SCANNER_PPS = 20_000
SCANNER_SECONDS = 5
GATEWAY_CALLS = 100
GATEWAY_CPS = 20

MANY_SOURCES = 200_000
MANY_PPS = 25_000  # one packet per source, 8 s
MANY_CPS = 12.5
RSS_BOUND_MIB = 256


# --------------------------------------------------------------------------
# The generator alone


def test_generator_refuses_destinations_and_sources_outside_loopback(tmp_path: Path) -> None:
    template = scanner_options((LOOPBACK, 5060))
    for dst, src in (
        (("192.0.2.1", 5060), SCANNER_SOURCE),
        (("0.0.0.0", 5060), SCANNER_SOURCE),
        ((LOOPBACK, 5060), "192.0.2.1"),
    ):
        with pytest.raises(FloodError):
            Flood(template, dst, tmp_path, count=1, seconds=1, src=src)
    with pytest.raises(FloodError):  # the last of the sources would leave 127.0.0.0/8
        Flood(
            template,
            (LOOPBACK, 5060),
            tmp_path,
            count=1,
            seconds=1,
            src="127.255.255.0",
            sources=1000,
        )
    # The binary refuses on its own too, before opening a socket.
    (tmp_path / "t").write_bytes(template)
    base = [str(build()), "--template", str(tmp_path / "t"), "--count", "1", "--seconds", "1"]
    for extra in (
        ["--dst", "192.0.2.1:5060"],
        ["--dst", "127.0.0.1:5060", "--src", "10.0.0.1"],
        ["--dst", "127.0.0.1:5060", "--src", "127.255.255.250", "--sources", "10"],
        ["--dst", "127.0.0.1:5060", "--count", "0"],
    ):
        out = subprocess.run(base + extra, capture_output=True, text=True, timeout=10, check=False)
        assert out.returncode == 2, (extra, out.stdout, out.stderr)
        assert out.stdout == "", extra
    # Both bounds are required.
    out = subprocess.run(
        [str(build()), "--dst", "127.0.0.1:9", "--template", str(tmp_path / "t"), "--count", "5"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert out.returncode == 2 and "--seconds" in out.stderr


def test_generator_stops_at_its_packet_count_and_at_its_time(tmp_path: Path) -> None:
    with Receiver(mark=FLOOD_MARK.encode(), keep_sources=True) as rx:
        dst = (LOOPBACK, rx.port)
        stats = Flood(
            scanner_options(dst), dst, tmp_path, count=3000, seconds=10, name="count"
        ).run()
        rx.drain(quiet=0.2)
        assert (stats.sent, stats.stopped, stats.errors) == (3000, "count", 0)
        assert rx.marked == 3000
        assert rx.sources == {SCANNER_SOURCE}

        started = time.monotonic()
        stats = Flood(
            scanner_options(dst), dst, tmp_path, count=10**9, seconds=0.5, rate=2000, name="time"
        ).run()
        took = time.monotonic() - started
        assert stats.stopped == "time"
        assert 700 <= stats.sent <= 1100, stats
        assert took < 3.0


def test_generator_sends_from_many_distinct_loopback_sources(tmp_path: Path) -> None:
    for mode, sources in (("pktinfo", 20_000), ("bind", 500)):
        with Receiver(keep_sources=True) as rx:
            dst = (LOOPBACK, rx.port)
            stats = Flood(
                scanner_options(dst),
                dst,
                tmp_path,
                count=sources,
                seconds=10,
                rate=100_000,
                src=MANY_SOURCES_BASE,
                sources=sources,
                src_mode=mode,
                name=mode,
            ).run()
            rx.drain(quiet=0.2)
        assert stats.sent == sources and stats.mode == mode, stats
        assert rx.packets == sources, mode
        assert rx.sources is not None and len(rx.sources) == sources, mode
        assert min(rx.sources, key=socket.inet_aton) == MANY_SOURCES_BASE


def _in_ns(ns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).resolve().parents[2], check=False)


def test_generator_writes_whole_frames_onto_lo_from_two_senders() -> None:
    """`--src-mode packet`: frames written onto a test namespace's lo arrive as UDP from
    every source, split over `--procs` senders; without route_localnet it refuses."""
    if os.geteuid() != 0:
        pytest.fail("packet mode needs root: it opens an AF_PACKET socket in a namespace")
    ns = f"sbcgen-{os.getpid()}"
    check = [sys.executable, "-m", "loadtest.flood.generator", "--check", "--src-mode", "packet",
             "--procs", "2", "--sources", "20000", "--count", "20000", "--rate", "100000",
             "--seconds", "10"]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        refused = _in_ns(ns, *check)
        assert refused.returncode == 2 and "route_localnet" in refused.stderr, refused
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv4.conf.all.route_localnet=1",
                        "net.ipv4.conf.lo.route_localnet=1"], check=True)
        done = _in_ns(ns, *check)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    gen = result["generator"]
    assert gen["mode"] == "packet" and gen["procs"] == 2 and gen["sent"] == 20000, gen
    assert result["received"] == 20000 and result["received_with_mark"] == 20000, result
    assert result["distinct_sources"] == 20000, result


# --------------------------------------------------------------------------
# Floods through sbc


def _flood_packets_at(result: SippResult) -> list[str]:
    """First lines of flood packets (or any OPTIONS) the VOS3000 stand-in received."""
    return [
        m.first_line
        for m in result.messages()
        if m.direction == "received" and (FLOOD_MARK in m.text or m.method == "OPTIONS")
    ]


def _run_calls_during_flood(
    sbc_proc: SbcProcess,
    sipp: SippFactory,
    ports: Ports,
    flood: Flood,
    calls: int,
    cps: float,
) -> tuple[SippResult, SippResult, FloodStats, SbcTotals, int | None, float]:
    """Start VOS3000 and the flood, run the gateway's calls to their end, wait
    for both; stop sbc and read its totals.  Returns (vos3000, gateway, flood
    statistics, sbc totals, sbc socket drops, sbc peak RSS in MiB)."""
    uas = sipp("vos3000", "uas.xml", local_port=ports.backend, calls=calls, timeout_s=90)
    uac = sipp(
        "gateway",
        "uac.xml",
        local_port=ports.caller,
        calls=calls,
        timeout_s=60,
        remote=(LOOPBACK, ports.public),
        rate=cps,
        duration_ms=500,
    )
    drops0 = udp_socket_drops(ports.public) or 0
    try:
        uas.start().wait_bound()
        flood.start()
        uac.start()
        uac_res = uac.wait()
        stats = flood.wait()
        uas_res = uas.wait()
    finally:
        flood.stop()
        uac.stop()
        uas.stop()
    wait_cpu_settled(sbc_proc)
    drops1 = udp_socket_drops(ports.public)
    rss_mib = sbc_proc.peak_rss_kib() / 1024
    assert sbc_proc.stop() == 0, sbc_proc.output_tail()
    totals = SbcTotals.from_stopped(sbc_proc)
    socket_drops = None if drops1 is None else drops1 - drops0
    return uas_res, uac_res, stats, totals, socket_drops, rss_mib


def _assert_calls_ok(calls: int, uas: SippResult, uac: SippResult, sbc_proc: SbcProcess) -> None:
    ok = all(r.returncode == 0 and r.successful == calls and r.failed == 0 for r in (uac, uas))
    if not ok or uas.stat("IncomingCall") != calls:
        pytest.fail(
            f"expected {calls} successful calls on each side and {calls} incoming at VOS3000; "
            f"gateway: exit {uac.returncode}, {uac.successful} ok, {uac.failed} failed; "
            f"vos3000: exit {uas.returncode}, {uas.successful} ok, {uas.failed} failed, "
            f"{uas.stat('IncomingCall')} incoming\n\n" + report([uac, uas], sbc_proc),
            pytrace=False,
        )


def test_scanner_flood_is_screened_and_banned_while_gateway_calls_succeed(
    sbc: SbcFactory, sipp: SippFactory, ports: Ports, tmp_path: Path
) -> None:
    proc = sbc(GATEWAY_ONLY)
    dst = (LOOPBACK, ports.public)
    count = SCANNER_PPS * SCANNER_SECONDS
    flood = Flood(
        scanner_options(dst),
        dst,
        tmp_path / "flood",
        count=count,
        seconds=SCANNER_SECONDS + 2,
        rate=SCANNER_PPS,
        src=SCANNER_SOURCE,
    )
    uas, uac, stats, totals, socket_drops, _ = _run_calls_during_flood(
        proc, sipp, ports, flood, GATEWAY_CALLS, GATEWAY_CPS
    )
    context = f"flood {stats}\nsbc totals {totals.raw}\nsocket drops {socket_drops}"

    # The flood really ran, at the rate asked, alongside the calls.
    assert stats.sent >= 0.95 * count and stats.errors == 0, context
    _assert_calls_ok(GATEWAY_CALLS, uas, uac, proc)
    # VOS3000 saw the gateway's calls and nothing else.
    leaked = _flood_packets_at(uas)
    assert not leaked, f"{len(leaked)} flood packets reached VOS3000, e.g. {leaked[:3]}"
    # sbc took the flood off its socket and the screen dropped every packet of
    # it: first as scanner, then, once the source was banned, as banned.
    assert socket_drops is not None, context
    assert totals.screened + socket_drops >= stats.sent, context
    assert totals.screen_drops.get("scanner", 0) >= 1, context
    assert totals.screen_drops.get("banned", 0) >= 0.9 * (stats.sent - socket_drops), context
    assert totals.drops.get("unknown_source", 0) == 0, context  # none reached the engine
    # What sbc absorbs by design (VOS3000's 100 Trying, ping answers) is no drop.
    assert not set(totals.drops) & {"hop_by_hop_100", "ping_answer", "retransmission"}, context
    assert totals.handled == totals.screened + sum(totals.verdicts.values()), context
    bans = [e for e in proc.named("ban") if e.get("host") == SCANNER_SOURCE]
    assert bans and bans[0].get("reason") == "scanner", proc.output_tail()


def test_many_source_flood_keeps_sbc_memory_bounded_while_gateway_calls_succeed(
    sbc: SbcFactory, sipp: SippFactory, ports: Ports, tmp_path: Path
) -> None:
    proc = sbc(GATEWAY_ONLY)
    dst = (LOOPBACK, ports.public)
    seconds = MANY_SOURCES / MANY_PPS
    flood = Flood(
        scanner_options(dst, MANY_SOURCES_BASE),
        dst,
        tmp_path / "flood",
        count=MANY_SOURCES,
        seconds=seconds + 2,
        rate=MANY_PPS,
        src=MANY_SOURCES_BASE,
        sources=MANY_SOURCES,
    )
    calls = int(MANY_CPS * seconds)
    uas, uac, stats, totals, socket_drops, rss_mib = _run_calls_during_flood(
        proc, sipp, ports, flood, calls, MANY_CPS
    )
    context = (
        f"flood {stats}\nsbc totals {totals.raw}\nsocket drops {socket_drops}\n"
        f"peak RSS {rss_mib:.1f} MiB"
    )

    assert stats.sent == MANY_SOURCES and stats.errors == 0, context
    _assert_calls_ok(calls, uas, uac, proc)
    leaked = _flood_packets_at(uas)
    assert not leaked, f"{len(leaked)} flood packets reached VOS3000, e.g. {leaked[:3]}"
    # One packet per source: what sbc screened is how many distinct sources
    # it had to remember.  Most of them must have reached it for the memory
    # figure to mean anything.
    assert totals.screened >= 0.9 * MANY_SOURCES, context
    assert totals.drops.get("unknown_source", 0) == 0, context
    assert rss_mib < RSS_BOUND_MIB, context
