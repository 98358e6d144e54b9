"""Two sbc nodes on one host share the public port (`public.reuse_port`,
issue 18): two `sbc run` processes bound to one public address with
SO_REUSEPORT, each with its own private socket and its own egress for the
gateway, sharing bans and limits through a real redis-server.

SIPp callers from several loopback source addresses place calls over UDP
and over TCP: the kernel spreads the sources over both nodes by its
4-tuple hash, every call of one source goes through one node (the same
egress at VOS3000), and each node reaches VOS3000 from its own egress.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import asyncio_dgram
import pytest

from loadtest.harness import LOOPBACK, free_ports
from tests.redis_server import RedisServer, redis_server  # noqa: F401 -- the fixture

from .conftest import Ports, SbcFactory, SippFactory
from .test_cluster import Node
from .test_limits import VosStandIn

pytestmark = pytest.mark.e2e

GW = "loopback"
CALLS_PER_SOURCE = 3
MIN_SOURCES, MAX_SOURCES = 4, 16


class Vos(VosStandIn):
    """The stand-in, also noting the address each call's first INVITE came
    from: the egress of the node that carried it."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.egress_of: dict[str, tuple[str, int]] = {}

    async def _serve(self) -> None:
        stream = await asyncio_dgram.bind((LOOPBACK, self.port))
        self._ready.set()
        try:
            while not self._stop.is_set() and self.datagrams < self.max_datagrams:
                try:
                    data, addr = await asyncio.wait_for(stream.recv(), 0.1)
                except TimeoutError:
                    continue
                self.datagrams += 1
                if data.startswith(b"INVITE "):
                    self.egress_of.setdefault(_call_id(data), (addr[0], addr[1]))
                for out in self._answer(data, time.monotonic()):
                    await stream.send(out, addr)
        finally:
            stream.close()


def _call_id(data: bytes) -> str:
    for line in data.split(b"\r\n"):
        if line.lower().startswith((b"call-id:", b"i:")):
            return line.partition(b":")[2].strip().decode()
    return ""


@pytest.fixture
def vos(ports: Ports) -> Iterator[Vos]:
    with Vos(ports.backend) as stand_in:
        yield stand_in


def _start_node(sbc: SbcFactory, redis: RedisServer, public: int, name: str,  # noqa: F811
                transport: str) -> tuple[Node, int]:
    private, egress, admin = free_ports(3)
    proc = sbc({
        "public": {"port": public, "transports": [transport], "reuse_port": True},
        "private": {"port": private},
        "gateways": [{"name": GW, "ip": ["127.0.0.0/8"],
                      "egress": {"host": LOOPBACK, "port": egress}}],
        "admin": {"enabled": True, "port": admin, "ping_interval_s": 5},
        "cluster": {"enabled": True, "url": redis.url, "node": name,
                    "timeout_s": 0.3, "ping_interval_s": 0.3, "retry_max_s": 0.5},
    })
    (line,) = proc.named("started")
    assert line.get("reuse_port") == "on", line
    proc.wait_named("cluster_limits_shared")
    return Node(name, proc, public, admin), egress


def _admitted(node: Node) -> int:
    status, body = node.get("/api/stats")
    assert status == 200, body
    return int(body["counters"]["gateways"].get(GW, {}).get("admitted", 0))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sources_spread_over_two_nodes_on_one_port_each_with_its_own_egress(
        transport: str, sbc: SbcFactory, sipp: SippFactory, vos: Vos,
        redis_server: RedisServer, ports: Ports) -> None:  # noqa: F811
    a, egress_a = _start_node(sbc, redis_server, ports.public, "node-a", transport)
    b, egress_b = _start_node(sbc, redis_server, ports.public, "node-b", transport)
    egress_node = {(LOOPBACK, egress_a): a.name, (LOOPBACK, egress_b): b.name}
    node_of_source: dict[str, str] = {}
    # One source address after another until both nodes carried calls (at
    # least MIN_SOURCES): the hash spreads them, it does not alternate.
    for i in range(MAX_SOURCES):
        if i >= MIN_SOURCES and len(set(node_of_source.values())) == 2:
            break
        source = f"127.0.0.{21 + i}"
        before = {n.name: _admitted(n) for n in (a, b)}
        (port,) = free_ports(1, source)
        result = sipp(f"c{i}", "uac.xml", local_ip=source, local_port=port,
                      calls=CALLS_PER_SOURCE, transport={"udp": "u1", "tcp": "t1"}[transport],
                      remote=(LOOPBACK, ports.public), rate=20, duration_ms=50, timeout_s=30,
                      trace_msg=False).start().wait()
        assert result.returncode == 0, result.describe()
        calls = [c for c in vos.egress_of if c.endswith("@" + source)]
        assert len(calls) == CALLS_PER_SOURCE, (source, calls)
        carriers = {egress_node[vos.egress_of[c]] for c in calls}
        assert len(carriers) == 1, f"{source}'s calls went through {carriers}"
        (node,) = carriers
        node_of_source[source] = node
        gained = {n.name: _admitted(n) - before[n.name] for n in (a, b)}
        assert gained[node] == CALLS_PER_SOURCE and sum(gained.values()) == CALLS_PER_SOURCE
    spread: dict[str, Any] = {n: sorted(s for s, m in node_of_source.items() if m == n)
                              for n in (a.name, b.name)}
    print(f"\n{transport}: {len(node_of_source)} sources over two nodes on port "
          f"{ports.public}: {spread}")
    assert spread[a.name] and spread[b.name], spread
    assert set(vos.egress_of.values()) == set(egress_node)
