"""The toll-fraud watch shared across nodes through a real redis-server:
two `sbc run` processes on loopback, one gateway, a VOS3000 stand-in behind
both, SIPp callers.

One gateway's calls to a premium prefix are spread over the two nodes,
alternating: each node carries fewer calls than the critical threshold, the
cluster's total reaches it and the call after it is refused on both nodes
(a block made on one node refuses on the other within about a second, and
names the node that made it); an operator's clear on the other node lifts
it everywhere.
"""

from __future__ import annotations

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
PREMIUM = "900123"
CRITICAL = 6
SHARED_S = 5.0  # a node's figures reach the others within about 1 s (0.5 s told + 0.5 s read)


@pytest.fixture
def vos(ports: Ports) -> Iterator[VosStandIn]:
    with VosStandIn(ports.backend) as stand_in:
        yield stand_in


NodeFactory = Callable[[str], Node]


@pytest.fixture
def node(sbc: SbcFactory, redis_server: RedisServer, vos: VosStandIn) -> NodeFactory:  # noqa: F811
    def start(name: str) -> Node:
        public, private, admin = free_ports(3)
        proc = sbc({
            "public": {"port": public, "transports": ["udp"]}, "private": {"port": private},
            "gateways": [{"name": GW, "ip": ["127.0.0.0/8"]}],
            "admin": {"enabled": True, "port": admin, "ping_interval_s": 5},
            "cluster": {"enabled": True, "url": redis_server.url, "node": name,
                        "timeout_s": 0.3, "ping_interval_s": 0.3, "retry_max_s": 0.5},
            "fraud": {"rules": [{
                "name": "premium", "prefixes": ["+900"], "cool_off_s": 0,
                "thresholds": {"calls_per_minute": {"warning": CRITICAL - 2,
                                                    "critical": CRITICAL}}}]},
        })
        proc.wait_named("cluster_fraud_shared")
        return Node(name, proc, public, admin)

    return start


def _call(sipp: SippFactory, n: Node, name: str, refused: bool = False) -> Sipp:
    (port,) = free_ports(1)
    caller = sipp(name, "uac_refused.xml" if refused else "uac.xml", local_port=port, calls=1,
                  transport="u1", remote=(LOOPBACK, n.public), timeout_s=20,
                  recv_timeout_ms=20_000, duration_ms=50,
                  extra=["-s", PREMIUM, "-cid_str", f"{name}-%u@%s"])
    return caller.start()


def _passes(sipp: SippFactory, n: Node, name: str, vos: VosStandIn) -> None:
    result = _call(sipp, n, name).wait(20)
    assert result.returncode == 0, result.describe()
    assert f"{name}-1@{LOOPBACK}" in vos.call_ids


def _refused(sipp: SippFactory, n: Node, name: str, vos: VosStandIn) -> None:
    result = _call(sipp, n, name, refused=True).wait(20)
    finals = [m for m in result.messages()
              if m.direction == "received" and m.status is not None and m.status >= 300]
    assert [m.first_line for m in finals] == ["SIP/2.0 403 Fraud Suspected"], result.describe()
    assert f"{name}-1@{LOOPBACK}" not in vos.call_ids  # VOS3000 never saw it


def _fraud(n: Node) -> dict[str, Any]:
    status, body = n.get("/api/fraud")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def _calls_per_minute(n: Node) -> float:
    """The node's figure of new calls in the last minute, its own and the others'."""
    scopes = _fraud(n)["scopes"]
    return float(scopes[0]["figures"]["calls_per_minute"]["figure"]) if scopes else 0.0


def test_the_threshold_trips_on_the_cluster_total_and_blocks_and_clears_go_everywhere(
        node: NodeFactory, sipp: SippFactory, vos: VosStandIn) -> None:
    a, b = node("node-a"), node("node-b")
    for n in (a, b):
        ready = n.get("/readyz")[1]["cluster"]["fraud"]
        assert ready["mode"] == "shared", ready
    # Six calls from one gateway, alternating between the nodes: three each,
    # under the critical six on either node alone, six in the cluster.
    for i in range(CRITICAL):
        _passes(sipp, (a, b)[i % 2], f"p{i}", vos)
        # each node counts the call before the next one: the cluster's figure, on both
        _until(lambda: all(_calls_per_minute(n) >= i + 1 for n in (a, b)), SHARED_S, 0.05)
    # the sixth (on B) crossed: B blocked, A took the block from Redis
    blocks = {n.name: _fraud(n)["blocks"] for n in (a, b)}
    assert [x["node"] for x in blocks["node-b"]] == ["node-b"], blocks
    assert [x["node"] for x in blocks["node-a"]] == ["node-b"], blocks
    assert "blocked by node 'node-b'" in blocks["node-a"][0]["why"]
    assert blocks["node-b"][0]["figure"] == CRITICAL
    for n in (a, b):  # each node carried three: alone, neither would have blocked
        (scope,) = _fraud(n)["scopes"]
        assert scope["in_progress"] == 0 and scope["other_nodes"] == 1
    _refused(sipp, a, "ra", vos)  # a block made on B refuses on A
    _refused(sipp, b, "rb", vos)
    (alert,) = [x for x in b.proc.named("fraud_alert") if x["alert_level"] == "critical"]
    assert alert["figure"] == CRITICAL and alert["gateway"] == GW
    assert not [x for x in a.proc.named("fraud_alert") if x["alert_level"] == "critical"]
    _until(lambda: a.proc.named("fraud_block_adopted"), 5.0, 0.05)
    assert a.proc.named("fraud_block_adopted")[0]["node"] == "node-b"

    # An operator clears it on B: A lifts it too, within about a second.
    status, body = b.send("POST", "/api/fraud/clear",
                          {"gateway": GW, "rule": "premium", "by": "noc-e2e", "note": "ok"})
    assert status == 200, body
    took = _until(lambda: not _fraud(a)["blocks"], 3.0, 0.02)
    print(f"\nclear on node B lifted the block on node A after {took * 1000:.0f} ms")
    assert took <= 1.5
    _passes(sipp, a, "after", vos)
    assert _fraud(a)["cleared"][0]["by"] == "noc-e2e@node-b"
    metrics = a.get("/metrics")[1]
    assert "sbc_fraud_cluster_shared 1.0" in metrics
    assert "Traceback" not in "\n".join(a.proc.lines + b.proc.lines)


def test_a_node_started_later_loads_the_blocks_in_force(
        node: NodeFactory, sipp: SippFactory, vos: VosStandIn,
        redis_server: RedisServer) -> None:  # noqa: F811
    a = node("node-a")
    for i in range(CRITICAL):
        _passes(sipp, a, f"p{i}", vos)
    (block,) = _fraud(a)["blocks"]
    assert block["node"] == "node-a"
    assert redis_server.command("EXISTS", f"sbc:fraud:block:{GW}:premium") == b":1"
    b = node("node-b")  # loads it when it connects
    (loaded,) = b.proc.named("cluster_fraud_shared")
    assert loaded["loaded"] == 1
    _refused(sipp, b, "rb", vos)
    redis_server.stop()  # counting alone, said once, in /readyz and /metrics
    _until(lambda: b.get("/readyz")[1]["cluster"]["fraud"]["mode"] == "alone", 5.0, 0.05)
    _until(lambda: len(b.proc.named("cluster_fraud_alone")) == 1, 5.0, 0.05)
    assert "sbc_fraud_cluster_shared 0.0" in b.get("/metrics")[1]
    _refused(sipp, b, "rb2", vos)  # the block stands without Redis
