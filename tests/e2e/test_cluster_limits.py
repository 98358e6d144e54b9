"""Call limits shared across nodes through a real redis-server (issue 18,
limits): two `sbc run` processes on loopback, one gateway, one VOS3000
stand-in behind both that notes when each call's INVITE and BYE arrive (the
calls in progress at VOS3000, counted exactly, whichever node carried them).

SIPp callers offer calls to both nodes at once, above the limits: the calls
in progress across the nodes never exceed `max_concurrent`; CPS at twice the
limit stays within 10 %; a node killed mid-call frees its slots within their
TTL; with Redis stopped each node takes its share (limit ÷ live nodes), says
so, and when Redis is back the calls in progress are registered again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loadtest.harness import LOOPBACK, Sipp, free_ports
from tests.redis_server import RedisServer, redis_server  # noqa: F401 -- the fixture

from .conftest import Ports, SbcFactory, SippFactory
from .test_cluster import Node, _until
from .test_limits import VosStandIn

pytestmark = pytest.mark.e2e

GW = "loopback"
TTL_S = 1.5


class Vos(VosStandIn):
    """The stand-in, also noting when each call's BYE arrives."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.bye: dict[str, float] = {}

    def _answer(self, data: bytes, arrived: float) -> list[bytes]:
        if data.startswith(b"BYE "):
            for line in data.split(b"\r\n"):
                if line.lower().startswith((b"call-id:", b"i:")):
                    self.bye.setdefault(line.partition(b":")[2].strip().decode(), arrived)
        return super()._answer(data, arrived)

    def in_progress(self) -> int:
        now = time.monotonic()
        return sum(1 for c, t in dict(self.first_invite).items() if t <= now and c not in self.bye)

    def most_at_once(self) -> int:
        """The most calls in progress at any moment (INVITE in, BYE not yet)."""
        events = sorted([(t, 1) for t in self.first_invite.values()]
                        + [(t, -1) for c, t in self.bye.items() if c in self.first_invite])
        most = now = 0
        for _, step in events:
            now += step
            most = max(most, now)
        return most


@pytest.fixture
def vos(ports: Ports) -> Iterator[Vos]:
    with Vos(ports.backend) as stand_in:
        yield stand_in


NodeFactory = Callable[..., Node]


@pytest.fixture
def node(sbc: SbcFactory, redis_server: RedisServer, vos: Vos) -> NodeFactory:  # noqa: F811
    def start(name: str, **limits: Any) -> Node:
        public, private, admin = free_ports(3)
        proc = sbc({
            "public": {"port": public, "transports": ["udp"]}, "private": {"port": private},
            "gateways": [{"name": GW, "ip": ["127.0.0.0/8"], "limits": limits}],
            "admin": {"enabled": True, "port": admin, "ping_interval_s": 5},
            "cluster": {"enabled": True, "url": redis_server.url, "node": name,
                        "timeout_s": 0.3, "ping_interval_s": 0.3, "retry_max_s": 0.5,
                        "slot_ttl_s": TTL_S},
        })
        proc.wait_named("cluster_limits_shared")
        return Node(name, proc, public, admin)

    return start


def _limits(n: Node) -> dict[str, Any]:
    status, body = n.get("/api/stats")
    assert status == 200, body
    limits: dict[str, Any] = body["counters"]["cluster_limits"]
    return limits


def _callers(sipp: SippFactory, nodes: list[Node], *, calls: int, rate: float, hold_ms: int,
             tag: str) -> list[Sipp]:
    out = []
    for i, n in enumerate(nodes):
        (port,) = free_ports(1)
        out.append(sipp(f"{tag}{i}", "uac_limit.xml", local_port=port, calls=calls,
                        transport="u1", remote=(LOOPBACK, n.public), rate=rate, limit=calls,
                        duration_ms=hold_ms, timeout_s=60, trace_msg=False).start())
    return out


def _rejected(n: Node) -> int:
    """Calls the node refused for the gateway's concurrency limit."""
    return int(n.get("/api/stats")[1]["counters"]["gateways"][GW].get(
        "rejected_gateway_concurrent", 0))


def _both_live(a: Node, b: Node, redis: RedisServer | None = None) -> None:  # noqa: F811
    """Both nodes see each other; with `redis`, the first settling period is over."""
    _until(lambda: _limits(a)["live_nodes"] == 2 and _limits(b)["live_nodes"] == 2, 5.0, 0.05)
    if redis is not None:
        _until(lambda: redis.command("EXISTS", "sbc:limits:settle") == b":0", 6.0, 0.05)


def test_calls_spread_over_two_nodes_never_exceed_max_concurrent(
        node: NodeFactory, sipp: SippFactory, vos: Vos) -> None:
    limit = 10
    a, b = node("node-a", max_concurrent=limit), node("node-b", max_concurrent=limit)
    _both_live(a, b)
    callers = _callers(sipp, [a, b], calls=120, rate=60, hold_ms=300, tag="c")
    seen = 0
    deadline = time.monotonic() + 30
    while any(c.running for c in callers) and time.monotonic() < deadline:
        seen = max(seen, vos.in_progress())
        time.sleep(0.005)
    results = [c.wait(10) for c in callers]
    most = vos.most_at_once()
    answered = len(vos.first_invite)
    print(f"\n240 calls offered to two nodes at 60 cps each, 0.3 s each, max_concurrent {limit}: "
          f"{answered} answered, at most {most} in progress at VOS3000 at once")
    assert all(r.returncode == 0 for r in results), [r.describe() for r in results]
    assert most <= limit and seen <= limit
    assert most >= limit - 2  # the limit is used, not just respected
    assert answered < 240  # the rest were refused
    for n in (a, b):
        figures = n.get("/api/stats")[1]["counters"]["gateways"][GW]
        assert figures["admitted"] > 0 and figures.get("rejected_gateway_concurrent", 0) > 0


def test_cps_across_two_nodes_at_twice_the_limit_within_ten_percent(
        node: NodeFactory, sipp: SippFactory, vos: Vos) -> None:
    cps, secs = 20, 4
    a, b = node("node-a", cps=cps, cps_burst=2), node("node-b", cps=cps, cps_burst=2)
    _both_live(a, b)
    callers = _callers(sipp, [a, b], calls=cps * secs, rate=cps, hold_ms=50, tag="r")
    results = [c.wait(30) for c in callers]
    assert all(r.returncode == 0 for r in results), [r.describe() for r in results]
    arrivals = sorted(vos.first_invite.values())
    offered_for = secs  # each caller: cps * secs calls at cps per second
    admitted = len(arrivals)
    measured = admitted / offered_for
    spread = {n.name: n.get("/api/stats")[1]["counters"]["gateways"][GW]["admitted"]
              for n in (a, b)}
    print(f"\nCPS limit {cps}, offered {2 * cps}/s over two nodes for {secs} s: {admitted} "
          f"admitted ({measured:.1f}/s, {100 * (measured / cps - 1):+.1f} %), by node {spread}")
    assert abs(measured / cps - 1) <= 0.10
    assert min(spread.values()) >= cps * secs * 0.1  # both nodes had their turn (not a fair split)


def test_a_node_killed_mid_call_frees_its_slots_within_the_ttl(
        node: NodeFactory, sipp: SippFactory, vos: Vos, redis_server: RedisServer) -> None:  # noqa: F811
    limit = 4
    a, b = node("node-a", max_concurrent=limit), node("node-b", max_concurrent=limit)
    _both_live(a, b, redis_server)
    # A takes what B does not hold as its free slot (a lease of one): 3 calls;
    # B one; the cluster is full, and a further call to B is refused
    (held,) = _callers(sipp, [a], calls=limit, rate=50, hold_ms=60_000, tag="h")
    _until(lambda: len(vos.first_invite) == limit - 1, 5.0)
    _until(lambda: _rejected(a) == 1, 5.0, 0.02)  # the fourth offered and refused
    assert len(vos.first_invite) == limit - 1
    (on_b,) = _callers(sipp, [b], calls=2, rate=50, hold_ms=60_000, tag="x")
    _until(lambda: len(vos.first_invite) == limit, 5.0)
    _until(lambda: _rejected(b) == 1, 5.0, 0.02)  # B's second call offered and refused
    assert len(vos.first_invite) == limit
    assert redis_server.command("ZCARD", "sbc:slots:" + GW) == b":%d" % limit
    assert a.proc.proc is not None
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.proc.wait(5)
    a.proc.proc = None  # ended here: the fixture does not stop it again
    killed = time.monotonic()
    freed = _until(lambda: redis_server.command("ZCARD", "sbc:slots:" + GW) == b":1",  # B's call
                   TTL_S + 2.0, 0.02)
    print(f"\nnode A killed holding {limit} calls: its slots gone after {freed:.2f} s "
          f"(TTL {TTL_S} s)")
    assert freed <= TTL_S + TTL_S / 3 + 0.5
    (after,) = _callers(sipp, [b], calls=limit - 1, rate=50, hold_ms=200, tag="y")
    after.wait(15)
    assert len(vos.first_invite) == 2 * limit - 1, "B did not get the dead node's slots"
    assert time.monotonic() - killed < 10
    held.stop()
    on_b.stop()


def test_redis_stopped_under_load_then_restarted(
        node: NodeFactory, sipp: SippFactory, vos: Vos, redis_server: RedisServer) -> None:  # noqa: F811
    limit = 6
    a, b = node("node-a", max_concurrent=limit), node("node-b", max_concurrent=limit)
    _both_live(a, b)
    redis_server.stop()
    for n in (a, b):
        _until(lambda: n.get("/readyz")[1]["cluster"]["limits"]["mode"] == "fallback", 5.0, 0.05)
    # five long calls offered to each node: each takes its share, 6 / 2
    holders = _callers(sipp, [a, b], calls=5, rate=50, hold_ms=60_000, tag="f")
    _until(lambda: len(vos.first_invite) == limit, 5.0)
    for n in (a, b):  # the two calls beyond each share were refused
        _until(lambda: n.get("/api/stats")[1]["counters"]["gateways"][GW].get(
            "rejected_gateway_concurrent", 0) == 2, 5.0, 0.05)
    assert len(vos.first_invite) == limit
    for n in (a, b):
        assert n.get("/api/stats")[1]["counters"]["gateways"][GW]["concurrent"] == 3
        # log lines are written out in batches (up to 0.2 s): wait for it
        _until(lambda: len(n.proc.named("cluster_limits_fallback")) >= 1, 5.0, 0.05)
        (line,) = n.proc.named("cluster_limits_fallback")
        assert line["concurrent"] == {GW: 3} and line["live_nodes"] == 2, line
        assert "sbc_cluster_limits_shared 0.0" in n.get("/metrics")[1]
        status, ready = n.get("/readyz")
        assert ready["cluster"]["limits"]["rule"] == "each limit divided by the live nodes"

    redis_server.start()  # empty
    for n in (a, b):
        _until(lambda: len(n.proc.named("cluster_limits_shared")) == 2, 5.0, 0.05)
        assert len(n.proc.named("cluster_limits_fallback")) == 1
        assert "sbc_cluster_limits_shared 1.0" in n.get("/metrics")[1]
    took = _until(lambda: redis_server.command("ZCARD", "sbc:slots:" + GW) == b":%d" % limit,
                  3.0, 0.02)
    print(f"\nRedis back: the {limit} calls in progress registered again within {took:.2f} s")
    # the cluster is full: a call offered to either node now is refused
    extra = _callers(sipp, [a, b], calls=2, rate=50, hold_ms=100, tag="g")
    for c in extra:
        c.wait(15)
    assert len(vos.first_invite) == limit
    assert "Traceback" not in "\n".join(a.proc.lines + b.proc.lines)
