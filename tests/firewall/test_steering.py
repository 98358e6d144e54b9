"""Kernel steering of the trusted lane, for real, in a network namespace of
the test's own: the rendered ruleset is loaded there by NftBanSet (as sbc
loads it), and a small program inside the namespace binds the public and
the trusted socket, sends from a gateway, an address+port gateway, a
stranger and a proved source, and reports which socket each datagram
reached and from which port the public socket's reply arrived.

Also here: the render of the lanes (pure), and the kernel drop of unknown
sources when nothing could admit them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sbc.config import parse_config
from sbc.firewall import NftBanSet, render
from tests.firewall.test_firewall import _in, _must, netns  # noqa: F401  (the fixture)

PUBLIC, TRUSTED = 5060, 5062

STEER = f"""
public: {{host: 127.0.0.1, port: {PUBLIC}, transports: [udp]}}
private: {{host: 127.0.0.1, port: 5080}}
gateways:
  - {{name: lab, ip: ["127.0.0.4"], ip_port: ["127.0.0.5:5070"]}}
auth: {{unknown_source: reject}}
lanes: {{trusted_port: {TRUSTED}, max_proved: 1000}}
firewall: {{mode: nftables, table: sbclanes}}
"""

CLOSED = STEER.replace("auth: {unknown_source: reject}\n", "")

# Inside the namespace: sends each (source, port, payload), then reports
# where each payload landed and, for each, the source port of the public
# socket's reply as the sender saw it. Every wait is bounded.
_PROBE = r"""
import json, select, socket, sys, time
plan = json.loads(sys.argv[1])
public = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); public.bind(("127.0.0.1", 5060))
trusted = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); trusted.bind(("127.0.0.1", 5062))
out = {}
for src, sport, payload, dport in plan:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind((src, sport))
    c.sendto(payload.encode(), ("127.0.0.1", dport))
    ready, _, _ = select.select([public, trusted], [], [], 0.5)
    if not ready:
        out[payload] = {"lane": None}
    else:
        sock = ready[0]
        data, addr = sock.recvfrom(2048)
        entry = {"lane": "trusted" if sock is trusted else "public", "data": data.decode()}
        public.sendto(b"reply", addr)  # sbc answers every UDP peer from the public socket
        c.settimeout(1.0)
        try:
            _, frm = c.recvfrom(100)
            entry["reply_from"] = frm[1]
        except socket.timeout:
            entry["reply_from"] = None
        out[payload] = entry
    c.close()
print(json.dumps(out))
"""


def _probe(ns: str, plan: list[tuple[str, int, str, int]]) -> dict[str, Any]:
    out = subprocess.run(_in(ns, sys.executable, "-c", _PROBE, json.dumps(plan)),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _chain(ns: str, table: str, chain: str) -> str:
    return _must(_in(ns, "nft", "list", "chain", "inet", table, chain))


# --------------------------------------------------------------------------
# Render


def test_render_steers_gateways_and_proved_sources_to_the_trusted_port() -> None:
    text = render(parse_config(STEER, "steer.yaml"), "nftables")
    steer = text[text.index("\tchain steer {"):]
    order = [steer.index(s) for s in ("ip saddr @gateways4 udp dport set 5062",
                                      "ip saddr . udp sport @gateway_ports4 udp dport set 5062",
                                      "ip saddr @banned4 return",
                                      "ip saddr @proved4 udp dport set 5062")]
    assert order == sorted(order)
    lanes = text[text.index("\tchain lanes {"):]
    assert "type filter hook prerouting priority raw;" in lanes
    assert 'ip daddr 127.0.0.1 udp dport 5062 counter drop comment "trusted port reached directly"' \
        in lanes
    # Steered datagrams meet the same bans and meters as the rest.
    assert "\t\tip daddr 127.0.0.1 udp dport 5062 jump sip\n" in text
    assert "set proved4 {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\tsize 1000\n" in text
    assert "unknown_source_screened" not in text  # unknown sources are answered here


def test_render_without_a_trusted_port_has_no_steering() -> None:
    text = render(parse_config(STEER.replace(f"lanes: {{trusted_port: {TRUSTED}, max_proved: 1000}}\n", ""),
                               "off.yaml"), "nftables")
    assert "chain steer" not in text and "dport set" not in text
    assert "set proved4" in text  # the proved sets are kept in nftables mode either way


def test_render_closed_drops_unknown_sources_after_gateways_and_bans() -> None:
    text = render(parse_config(CLOSED, "closed.yaml"), "nftables")
    sip = text[text.index("\tchain sip {"):]
    order = [sip.index(s) for s in ("ip saddr @gateways4 accept", "ip saddr @banned4",
                                    "ip saddr != @proved4 counter drop",
                                    "update @rate_ip4")]
    assert order == sorted(order)
    # A digest account could admit a stranger: no such drop.
    digest = CLOSED.replace('ip_port: ["127.0.0.5:5070"]}',
                            'ip_port: ["127.0.0.5:5070"], digest: [{username: "u1", password: "pw-123456"}]}')
    assert "unknown_source_screened" not in render(parse_config(digest, "open.yaml"), "nftables")


# --------------------------------------------------------------------------
# In the kernel


async def test_kernel_steers_gateways_and_proved_sources_and_replies_keep_the_public_port(
        netns: str) -> None:  # noqa: F811
    cfg = parse_config(STEER, "steer.yaml")
    kernel = NftBanSet.from_config(cfg, command_prefix=_in(netns))
    try:
        assert await kernel.setup(), kernel.stats()
        got = _probe(netns, [
            ("127.0.0.4", 0, "gateway", PUBLIC),
            ("127.0.0.5", 5070, "gateway by port", PUBLIC),
            ("127.0.0.5", 5071, "same host, other port", PUBLIC),
            ("127.0.0.9", 0, "stranger", PUBLIC),
            ("127.0.0.9", 0, "stranger to the trusted port", TRUSTED),
            ("127.0.0.7", 0, "not proved yet", PUBLIC),
        ])
        assert got["gateway"]["lane"] == "trusted"
        assert got["gateway by port"]["lane"] == "trusted"
        assert got["same host, other port"]["lane"] == "public"
        assert got["stranger"]["lane"] == "public"
        assert got["stranger to the trusted port"]["lane"] is None  # dropped in the kernel
        assert got["not proved yet"]["lane"] == "public"
        # Every reply, steered or not, comes from the port the far end sent to.
        for name in ("gateway", "gateway by port", "stranger", "not proved yet"):
            assert got[name]["reply_from"] == PUBLIC, (name, got[name])

        # A source proves itself: it moves to the trusted lane ...
        kernel.add("127.0.0.7", 60, kind="proved")
        await kernel.drain()
        got = _probe(netns, [("127.0.0.7", 0, "proved", PUBLIC), ("127.0.0.9", 0, "stranger", PUBLIC)])
        assert got["proved"]["lane"] == "trusted" and got["proved"]["reply_from"] == PUBLIC
        assert got["stranger"]["lane"] == "public"
        # ... and back when its proof lapses.
        kernel.remove("127.0.0.7", kind="proved")
        await kernel.drain()
        assert _probe(netns, [("127.0.0.7", 0, "lapsed", PUBLIC)])["lapsed"]["lane"] == "public"
        # A banned proved source is not steered (and is dropped by the ban).
        kernel.add("127.0.0.8", 60, kind="proved")
        kernel.add("127.0.0.8", 60)
        await kernel.drain()
        assert _probe(netns, [("127.0.0.8", 0, "banned", PUBLIC)])["banned"]["lane"] is None
        assert kernel.stats()["failed_ops"] == 0
    finally:
        await kernel.close()
    steer = _chain(netns, "sbclanes", "steer")
    assert "counter packets 1 " in steer  # the address+port gateway's rule
    lanes = _chain(netns, "sbclanes", "lanes")
    assert 'counter packets 1 bytes' in lanes and "trusted port reached directly" in lanes


async def test_kernel_drops_unknown_sources_when_nothing_could_admit_them(
        netns: str) -> None:  # noqa: F811
    cfg = parse_config(CLOSED, "closed.yaml")
    kernel = NftBanSet.from_config(cfg, command_prefix=_in(netns))
    try:
        assert await kernel.setup(), kernel.stats()
        kernel.add("127.0.0.7", 60, kind="proved")  # a dialog's peer
        await kernel.drain()
        got = _probe(netns, [("127.0.0.9", 0, "stranger", PUBLIC),
                             ("127.0.0.4", 0, "gateway", PUBLIC),
                             ("127.0.0.7", 0, "dialog peer", PUBLIC)])
        assert got["stranger"]["lane"] is None
        assert got["gateway"]["lane"] == "trusted"
        assert got["dialog peer"]["lane"] == "trusted"
    finally:
        await kernel.close()
    sip = _chain(netns, "sbclanes", "sip")
    assert 'counter packets 1 bytes' in sip.split("unknown_source_screened")[0].splitlines()[-1]
