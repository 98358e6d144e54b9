"""Registrations shared across nodes through a real redis-server (issue 18,
registrations): two `sbc run` processes on loopback. A phone (SIPp,
register_auth.xml) registers at node A; node B lists the binding, naming A;
VOS3000 (SIPp uac.xml on the backend address) calls the phone through node
B, which relays the INVITE to A's private address; the phone (SIPp uas.xml
where it registered from) answers, and the call ends with BYE. With Redis
stopped, a phone registering at A is unknown to B: B answers VOS3000's
INVITE 480 at once, as for any account without a binding, and once Redis is
back A pushes its bindings again and the call goes through B.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from loadtest.harness import LOOPBACK, SbcProcess, free_ports, run_pair
from tests.redis_server import RedisServer, redis_server  # noqa: F401 -- the fixture

from .conftest import Ports, SbcFactory, SippFactory
from .test_auth import PASSWORD, PHONE_IP, PHONES, USER, UdpPeer, _assert_calls, _received
from .test_cluster import Node, _until

pytestmark = pytest.mark.e2e



class PrivateNode(Node):
    """A node, and the private port VOS3000 (and the other node) sends to."""

    def __init__(self, name: str, proc: SbcProcess, public: int, admin: int, private: int) -> None:
        super().__init__(name, proc, public, admin)
        self.private = private


NodeFactory = Callable[[str], PrivateNode]


@pytest.fixture
def node(sbc: SbcFactory, redis_server: RedisServer) -> NodeFactory:  # noqa: F811
    def start(name: str) -> PrivateNode:
        public, private, admin = free_ports(3)
        proc = sbc({
            "public": {"port": public, "transports": ["udp"]}, "private": {"port": private},
            "gateways": [PHONES],
            # one ping round at start; the backend port is SIPp's (VOS3000's) afterwards
            "admin": {"enabled": True, "port": admin, "ping_interval_s": 3600},
            "cluster": {"enabled": True, "url": redis_server.url, "node": name,
                        "timeout_s": 0.3, "ping_interval_s": 0.3, "retry_max_s": 0.5,
                        "slot_ttl_s": 1.5},
        })
        proc.wait_named("cluster_registrations_shared")
        return PrivateNode(name, proc, public, admin, private)

    return start


def _register(sipp: SippFactory, at: PrivateNode, phone_port: int, tag: str) -> None:
    reg = sipp(f"register-{tag}", "register_auth.xml", local_ip=PHONE_IP, local_port=phone_port,
               calls=1, timeout_s=20, remote=(LOOPBACK, at.public),
               extra=["-s", USER, "-au", USER, "-ap", PASSWORD])
    try:
        result = reg.start().wait()
    finally:
        reg.stop()
    _assert_calls(1, [result], at.proc)


def _registrations(n: Node) -> list[dict[str, Any]]:
    status, body = n.get("/api/registrations")
    assert status == 200, body
    rows: list[dict[str, Any]] = body["registrations"]
    return rows


def _call_through(sipp: SippFactory, ports: Ports, via: PrivateNode, phone_port: int,
                  tag: str) -> None:
    """VOS3000 calls the phone through `via`; the phone answers, VOS3000 hangs up."""
    phone = sipp(f"phone-{tag}", "uas.xml", local_ip=PHONE_IP, local_port=phone_port, calls=1,
                 timeout_s=30)
    vos3000 = sipp(f"vos3000-{tag}", "uac.xml", local_port=ports.backend, calls=1, timeout_s=30,
                   remote=(LOOPBACK, via.private),
                   duration_ms=100, extra=["-s", USER])
    answered, placed = run_pair(phone, vos3000)
    _assert_calls(1, [placed, answered], via.proc)
    (invite,) = _received(answered, "INVITE")
    assert invite.first_line.startswith(f"INVITE sip:{USER}@{PHONE_IP}:{phone_port}")
    assert len(_received(answered, "BYE")) == 1


def test_a_phone_registered_at_one_node_is_called_through_the_other(
        node: NodeFactory, sipp: SippFactory, ports: Ports) -> None:
    a, b = node("node-a"), node("node-b")
    (phone_port,) = free_ports(1, PHONE_IP)
    _register(sipp, a, phone_port, "a")
    _until(lambda: any(r["aor"] == USER for r in _registrations(b)), 5.0, 0.02)
    (row,) = [r for r in _registrations(b) if r["aor"] == USER]
    assert row["node"] == "node-a" and row["live"] is True and row["expires_s"] > 500
    (own,) = _registrations(a)
    assert own["node"] == "node-a" and own["source"] == f"{PHONE_IP}:{phone_port}"
    _call_through(sipp, ports, b, phone_port, "b")
    # the dialog lived at A (VOS3000's INVITE went through B, statelessly)
    stats_b = b.get("/api/stats")[1]["counters"]
    assert stats_b["cluster_registrations"]["routed"] >= 1
    assert stats_b["dialogs"] == 0
    assert "Traceback" not in "\n".join(a.proc.lines + b.proc.lines)


def test_redis_down_the_other_node_answers_480_then_relays_once_it_is_back(
        node: NodeFactory, sipp: SippFactory, ports: Ports,
        redis_server: RedisServer) -> None:  # noqa: F811
    a, b = node("node-a"), node("node-b")
    redis_server.stop()
    for n in (a, b):
        _until(lambda: n.get("/readyz")[1]["cluster"]["registrations"]["degraded"], 5.0, 0.05)
    (phone_port,) = free_ports(1, PHONE_IP)
    _register(sipp, a, phone_port, "down")  # A serves on its own state
    assert [r["node"] for r in _registrations(a)] == ["node-a"]
    assert _registrations(b) == []
    # VOS3000 calls the phone through B: 480 at once, as for any unknown account
    with UdpPeer(LOOPBACK, ports.backend) as vos3000:
        invite = (f"INVITE sip:{USER}@{LOOPBACK}:{b.private} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP {LOOPBACK}:{ports.backend};branch=z9hG4bKdown1\r\n"
                  "Max-Forwards: 70\r\nFrom: <sip:555@127.0.0.1>;tag=v\r\n"
                  f"To: <sip:{USER}@127.0.0.1>\r\nCall-ID: down-1\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:vos@{LOOPBACK}:{ports.backend}>\r\nContent-Length: 0\r\n\r\n")
        sent = time.monotonic()
        vos3000.send(invite.encode(), (LOOPBACK, b.private))
        (got,) = vos3000.wait_for(lambda d: (d.msg.status or 0) >= 200, 2.0)
        took = time.monotonic() - sent
    assert got.msg.status == 480, got.msg.text
    print(f"\nRedis down: B answered the call to a phone registered at A {got.msg.status} "
          f"in {took * 1000:.1f} ms")
    # Redis back (empty): A pushes its bindings again, B learns them, the call goes through B
    redis_server.start()
    _until(lambda: any(r["aor"] == USER for r in _registrations(b)), 5.0, 0.02)
    _call_through(sipp, ports, b, phone_port, "back")
    for n in (a, b):
        assert len(n.proc.named("cluster_registrations_lost")) == 1
        assert len(n.proc.named("cluster_registrations_shared")) == 2
