"""The trusted lane under fire, end to end, in a network namespace of the
test's own: sbc runs there with `firewall.mode: nftables` and a trusted
port, so the kernel steers the gateway's datagrams to the trusted socket;
the gateway's SIPp calls run while a bounded INVITE flood from 50,000 other
loopback sources hits the public port. Every call must pass, and sbc's own
counters and the kernel's must show which lane carried what.

    SIPp gateway (127.0.0.4)       ──calls──► public 5060 ─(kernel: to 5062)─► trusted socket
    flood (127.1.0.0 + 50,000)     ──INVITE──► public 5060 ──────────────────► public socket
    sbc private 5080 ──► SIPp "VOS3000" 5070
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml

from loadtest.flood.generator import MANY_SOURCES_BASE, Flood, invite_unknown
from loadtest.harness import Sipp
from tests.firewall.test_firewall import _in, _must, netns  # noqa: F401  (the fixture)
from tests.firewall.test_kernel_offload import NsSbc

GATEWAY = "127.0.0.4"
PUBLIC, TRUSTED, PRIVATE, BACKEND, CALLER = 5060, 5062, 5080, 5070, 5064
CALLS, CPS = 40, 10
FLOOD_COUNT, FLOOD_PPS, FLOOD_SOURCES = 120_000, 20_000, 50_000


def _config(path: Path) -> Path:
    cfg = {
        "public": {"host": "127.0.0.1", "port": PUBLIC, "transports": ["udp"]},
        "private": {"host": "127.0.0.1", "port": PRIVATE},
        "backend": {"host": "127.0.0.1", "port": BACKEND},
        "sip": {"t1_ms": 500, "invite_timeout_s": 32},
        "gateways": [{"name": "gw", "ip": [GATEWAY]}],
        # Strangers are answered (403, within the reply budget), so the flood
        # reaches sbc's public socket instead of dying in the kernel.
        "auth": {"unknown_source": "reject"},
        "lanes": {"trusted_port": TRUSTED},
        "firewall": {"mode": "nftables", "table": "sbc"},
        "logging": {"format": "json", "level": "info"},
        "admin": {"enabled": False},
        "state": {"path": str(path.parent / "state.sqlite")},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _in_ns(ns: str, proc: Sipp | Flood) -> None:
    proc.command = _in(ns, *proc.command)


def _wait_udp_bound(ns: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(_in(ns, "ss", "-Hunl", f"sport = :{port}"), capture_output=True,
                             text=True, timeout=5).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing bound udp port {port} in {ns} within {timeout:g}s")


def test_gateway_calls_all_pass_through_the_trusted_lane_under_a_flood(
        netns: str, tmp_path: Path) -> None:  # noqa: F811
    sbc = NsSbc(netns, _config(tmp_path / "sbc.yaml"))
    uas = Sipp("vos3000", "uas.xml", tmp_path / "uas", local_port=BACKEND, calls=CALLS,
               timeout_s=90)
    uac = Sipp("gateway", "uac.xml", tmp_path / "uac", local_ip=GATEWAY, local_port=CALLER,
               calls=CALLS, timeout_s=60, remote=("127.0.0.1", PUBLIC), rate=CPS,
               duration_ms=500)
    dst = ("127.0.0.1", PUBLIC)
    flood = Flood(invite_unknown(dst, MANY_SOURCES_BASE), dst, tmp_path / "flood",
                  count=FLOOD_COUNT, seconds=FLOOD_COUNT / FLOOD_PPS + 4, rate=FLOOD_PPS,
                  src=MANY_SOURCES_BASE, sources=FLOOD_SOURCES)
    for proc in (uas, uac, flood):
        _in_ns(netns, proc)
    try:
        sbc.wait_event("started", 20)
        lanes = sbc.wait_event("lanes", 5)
        assert lanes["mode"] == "kernel" and lanes["trusted_port"] == TRUSTED, lanes
        uas.start()
        _wait_udp_bound(netns, BACKEND)
        flood.start()
        uac.start()
        uac_res = uac.wait()
        stats = flood.wait()
        uas_res = uas.wait()
    finally:
        flood.stop()
        uac.stop()
        uas.stop()
        steer = subprocess.run(_in(netns, "nft", "list", "chain", "inet", "sbc", "steer"),
                               capture_output=True, text=True, timeout=10).stdout
        assert sbc.stop() == 0
    stopped = sbc.wait_event("stopped", 5)
    context = f"flood {stats}\nsbc lanes {stopped.get('lanes')}\n{steer}"

    # The flood ran, alongside the calls.
    assert stats.sent >= 0.95 * FLOOD_COUNT and stats.errors == 0, context
    # Every call of the gateway passed, on both sides.
    for res in (uac_res, uas_res):
        assert res.returncode == 0 and res.successful == CALLS and res.failed == 0, (
            f"{res.name}: exit {res.returncode}, {res.successful} ok, {res.failed} failed\n"
            + context)
    # The kernel steered the gateway's datagrams (INVITE, ACK, BYE per call)
    # to the trusted socket, and sbc served them there; the flood came in on
    # the public socket.
    gateway_rule = next(ln for ln in steer.splitlines() if "@gateways4" in ln)
    assert int(gateway_rule.split("counter packets ")[1].split()[0]) >= 3 * CALLS, context
    lanes_stats = stopped["lanes"]
    assert lanes_stats["trusted"] >= 3 * CALLS, context
    assert lanes_stats["strangers_on_trusted_port"] == 0, context
    assert lanes_stats["untrusted"] >= 0.5 * FLOOD_COUNT, context
