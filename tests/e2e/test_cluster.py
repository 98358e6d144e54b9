"""Bans shared across nodes through a real redis-server (issue 18, phase 1).

Two or three `sbc run` processes on loopback share one redis-server started
by the test on a free port. A scanner banned by node A is dropped by node B;
manual bans and unbans propagate (50 of them, timed: p50 and p99 printed);
a node started later loads the bans in force; with Redis killed, the nodes
keep banning on their own, say so once and in /readyz, and when it is back
the bans made meanwhile reach the other node; malformed or forged entries in
Redis are logged, counted and ignored.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loadtest.harness import LOOPBACK, SbcProcess, free_ports
from tests.redis_server import RedisServer, redis_server  # noqa: F401 -- the fixture

from .conftest import Ports, SbcFactory
from .test_auth import PHONES, Phone, UdpPeer, vos3000_answer
from .test_spoofing import _scan

pytestmark = pytest.mark.e2e

SCANNER_IP = "127.0.0.8"
CARRIER_IP = "127.0.0.2"
CARRIER = {"name": "carrier", "ip": [CARRIER_IP]}  # a gateway: never banned automatically
BANS = {"max_offenses": 3, "findtime_s": 60, "bantime_s": 600}


class Node:
    def __init__(self, name: str, proc: SbcProcess, public: int, admin: int) -> None:
        self.name, self.proc, self.public, self.admin = name, proc, public, admin

    @property
    def server(self) -> tuple[str, int]:
        return (LOOPBACK, self.public)

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.admin}{path}", timeout=5) as r:
                body = r.read().decode()
                return r.status, json.loads(body) if path != "/metrics" else body
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode())

    def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{LOOPBACK}:{self.admin}{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode())

    def bans(self) -> dict[str, dict[str, Any]]:
        status, body = self.get("/api/bans?limit=100000")
        assert status == 200, body
        return {b["host"]: b for b in body["bans"]}

    def cluster(self) -> dict[str, Any]:
        status, body = self.get("/api/stats")
        assert status == 200, body
        stats: dict[str, Any] = body["counters"].get("cluster") or {}
        return stats


NodeFactory = Callable[[str], Node]


@pytest.fixture
def vos3000(ports: Ports) -> Iterator[UdpPeer]:
    """VOS3000 answering the nodes' OPTIONS pings (so /readyz is about the cluster)."""
    with UdpPeer(LOOPBACK, ports.backend, vos3000_answer((LOOPBACK, ports.backend))) as peer:
        yield peer


@pytest.fixture
def node(sbc: SbcFactory, redis_server: RedisServer, vos3000: UdpPeer) -> NodeFactory:  # noqa: F811
    def start(name: str) -> Node:
        public, private, admin = free_ports(3)
        proc = sbc({
            "public": {"port": public, "transports": ["udp"]}, "private": {"port": private},
            "gateways": [PHONES, CARRIER], "bans": BANS,
            "admin": {"enabled": True, "port": admin, "ping_interval_s": 0.3,
                      "ping_timeout_s": 0.2},
            "cluster": {"enabled": True, "url": redis_server.url, "node": name,
                        "timeout_s": 0.3, "ping_interval_s": 0.3, "retry_max_s": 0.5},
        })
        connected = proc.wait_named("cluster_connected")
        assert connected[0]["node"] == name and connected[0]["cluster"] == redis_server.url
        (started,) = proc.named("started")
        assert (started["cluster"], started["node"]) == (redis_server.url, name)
        return Node(name, proc, public, admin)

    return start


def _until(predicate: Callable[[], Any], timeout: float, step: float = 0.005) -> float:
    """Seconds until `predicate()` held; fails the test past `timeout`."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        time.sleep(step)
    return time.monotonic() - start


def _answered(peer: UdpPeer, server: tuple[str, int], within: float) -> bool:
    """Whether a REGISTER from `peer` to `server` gets any answer within `within` s."""
    phone = Phone(peer, server)
    start = len(peer.received)
    peer.send(phone.register(), server)
    return bool(peer.wait_for(lambda d: True, within, start=start))


def _scan_until_banned(a: Node, scanner: UdpPeer) -> float:
    """Scanner datagrams to A until A bans the scanner; the wall time of the ban."""
    for n in range(BANS["max_offenses"] + 2):
        scanner.send(_scan(n, scanner.address, a.server), a.server)
    _until(lambda: SCANNER_IP in a.bans(), 3.0)
    return time.monotonic()


def test_a_scanner_banned_on_node_a_is_dropped_on_node_b(node: NodeFactory) -> None:
    a, b = node("node-a"), node("node-b")
    with UdpPeer(SCANNER_IP) as scanner, UdpPeer(SCANNER_IP) as prober:
        assert _answered(prober, b.server, 2.0), "B does not answer the scanner's address at all"
        before = b.get("/api/stats")[1]["counters"]["screen_drops"].get("banned", 0)
        for n in range(BANS["max_offenses"] + 2):
            scanner.send(_scan(n, scanner.address, a.server), a.server)
        sent = time.monotonic()
        took = _until(lambda: SCANNER_IP in b.bans(), 1.0)
        print(f"\nscanner's ban from its last datagram to A until B holds it: {took * 1000:.1f} ms")
        assert not _answered(prober, b.server, 1.0), "B still answers the banned scanner"
        assert b.get("/api/stats")[1]["counters"]["screen_drops"].get("banned", 0) > before
        assert time.monotonic() - sent < 3.0
    on_b = b.bans()[SCANNER_IP]
    assert on_b["node"] == "node-a" and on_b["reason"] == "scanner", on_b
    assert on_b["manual"] is False and on_b["ban_level"] == 1
    _until(lambda: any(e["host"] == SCANNER_IP for e in b.proc.named("ban")), 2.0)
    lines = [e for e in b.proc.named("ban") if e["host"] == SCANNER_IP]
    assert len(lines) == 1 and lines[0]["node"] == "node-a", lines
    # A holds its own ban once: no echo came back as a second ban
    assert len([e for e in a.proc.named("ban") if e["host"] == SCANNER_IP]) == 1
    assert a.cluster()["received"].get("echo", 0) >= 1
    assert b.cluster()["received"].get("applied", 0) == 1


def test_manual_bans_and_unbans_propagate_within_a_second(node: NodeFactory) -> None:
    a, b = node("node-a"), node("node-b")
    took = []
    for i in range(50):
        host = f"10.99.0.{i + 1}"
        status, body = a.send("POST", "/api/bans", {"host": host, "seconds": 600,
                                                    "reason": "by_hand"})
        assert status == 201 and body["node"] == "node-a", body
        took.append(_until(lambda: host in b.bans(), 1.0, step=0.002))
    took.sort()
    p50, p99 = statistics.median(took), took[min(len(took) - 1, int(0.99 * len(took)))]
    lag = b.cluster()
    print(f"\n50 manual bans A -> B (admin API to B's /api/bans): p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms; B's own measure "
          f"(ban made -> applied): p50 {lag['lag_ms_p50']} ms, p99 {lag['lag_ms_p99']} ms")
    assert p99 < 1.0
    assert b.bans()["10.99.0.7"]["node"] == "node-a" and b.bans()["10.99.0.7"]["reason"] == "by_hand"

    # An unban on B lifts A's ban on A
    status, _ = b.send("DELETE", "/api/bans/10.99.0.7")
    assert status == 200
    print(f"unban B -> A: {_until(lambda: '10.99.0.7' not in a.bans(), 1.0) * 1000:.1f} ms")
    assert a.cluster()["received"]["applied"] == 1  # the unban; its own bans were echoes
    assert "10.99.0.7" not in b.bans() and "10.99.0.8" in a.bans()

    # `sbc ban` by hand on A's state file: A reads it within its sweep, B a moment later
    done = subprocess.run([sys.executable, "-m", "sbc", "ban", "--config", str(a.proc.config_path),
                           "10.98.0.1", "--seconds", "300", "--reason", "cli"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    _until(lambda: "10.98.0.1" in b.bans(), 7.0, step=0.05)
    assert b.bans()["10.98.0.1"]["node"] == "node-a"
    # nothing was announced twice: B applied each of A's 51 bans once
    assert b.cluster()["received"]["applied"] == 51


def test_a_node_started_later_loads_the_bans_in_force(node: NodeFactory) -> None:
    a = node("node-a")
    for i in range(20):
        assert a.send("POST", "/api/bans", {"host": f"10.97.0.{i + 1}", "seconds": 600})[0] == 201
    a.send("DELETE", "/api/bans/10.97.0.5")
    with UdpPeer(SCANNER_IP) as scanner:
        _scan_until_banned(a, scanner)
    c = node("node-c")
    (connected,) = c.proc.named("cluster_connected")
    assert connected["loaded"] == 20, connected  # 19 by hand, the scanner; not the one lifted
    held = c.bans()
    assert set(held) == {f"10.97.0.{i + 1}" for i in range(20) if i != 4} | {SCANNER_IP}
    assert held[SCANNER_IP]["node"] == "node-a" and 590 < held["10.97.0.1"]["expires_in_s"] <= 600
    with UdpPeer(SCANNER_IP) as prober:
        assert not _answered(prober, c.server, 1.0), "C answers a scanner banned before it started"


def test_redis_stopped_under_traffic_then_restarted(node: NodeFactory,
                                                    redis_server: RedisServer) -> None:  # noqa: F811
    a, b = node("node-a"), node("node-b")
    _until(lambda: a.get("/readyz")[0] == 200 and b.get("/readyz")[0] == 200, 5.0, step=0.05)
    redis_server.stop()
    _until(lambda: a.get("/readyz")[1]["cluster"]["degraded"], 3.0, step=0.05)
    with UdpPeer(SCANNER_IP) as scanner:
        _scan_until_banned(a, scanner)  # A still bans on its own
    for i in range(10):  # and by hand
        assert a.send("POST", "/api/bans", {"host": f"10.96.0.{i + 1}", "seconds": 600})[0] == 201
    # The link stays down for a while (many failed attempts): one line each, all the same
    _until(lambda: a.cluster()["failures"] >= 4, 5.0, step=0.05)
    for n in (a, b):
        status, ready = n.get("/readyz")
        assert status == 200 and ready["ready"] is True, ready  # local service goes on
        assert ready["cluster"]["state"] == "lost" and ready["cluster"]["degraded"] is True
        assert len(n.proc.wait_named("cluster_lost")) == 1, n.proc.named("cluster_lost")
        assert "sbc_cluster_link_up 0.0" in n.get("/metrics")[1]
    assert SCANNER_IP not in b.bans()
    with UdpPeer(SCANNER_IP) as prober:
        assert not _answered(prober, a.server, 0.5)

    redis_server.start()  # empty: a Redis without persistence
    took = _until(lambda: SCANNER_IP in b.bans() and "10.96.0.10" in b.bans(), 5.0, step=0.02)
    print(f"\nRedis back: A's bans made meanwhile reached B {took * 1000:.0f} ms after the restart")
    for n in (a, b):
        _until(lambda: len(n.proc.named("cluster_connected")) == 2, 3.0, step=0.05)
        back = n.proc.named("cluster_connected")[-1]
        assert back["was"] == "lost" and back["failures"] >= 1, back
        assert len(n.proc.named("cluster_lost")) == 1
        assert n.get("/readyz")[1]["cluster"]["degraded"] is False
        assert "sbc_cluster_link_up 1.0" in n.get("/metrics")[1]
    assert b.bans()[SCANNER_IP]["node"] == "node-a"
    with UdpPeer(SCANNER_IP) as prober:
        assert not _answered(prober, b.server, 1.0)


def test_malformed_and_forged_entries_are_logged_and_ignored(
        node: NodeFactory, redis_server: RedisServer) -> None:  # noqa: F811
    b = node("node-b")
    now = time.time()
    forged = {"v": 1, "op": "ban", "host": CARRIER_IP, "at": now, "node": "evil",
              "instance": "00000000deadbeef", "reason": "scanner_user_agent", "level": 1,
              "expires": now + 600, "first_seen": now, "manual": False, "counts": {}}
    bad = [b"not json", b"[1,2]", json.dumps({**forged, "host": "not-an-ip"}).encode(),
           json.dumps({**forged, "host": "10.0.0.1", "expires": now + 10 * 366 * 86400}).encode(),
           json.dumps({**forged, "host": "10.0.0.2", "level": True}).encode(),
           json.dumps({**forged, "host": "10.0.0.3", "counts": {"x": "many"}}).encode(),
           b"{" * 10_000]
    for payload in bad:
        assert redis_server.command("PUBLISH", "sbc:bans", payload.decode()).startswith(b":")
    assert redis_server.command("SET", "sbc:ban:10.0.0.4", "garbage") == b"+OK"
    _until(lambda: b.cluster()["received"].get("invalid", 0) == len(bad), 2.0)
    assert sum(b.cluster()["invalid"].values()) == len(bad)
    assert set(b.bans()) == set()
    (line,) = b.proc.wait_named("cluster_event_invalid")  # one line per interval, not per entry
    assert line["reason"] == "not_json"

    # Well-formed but forged: an automatic ban of a gateway is refused (exempt
    # here), an operator's ban of it is taken (Redis is trusted infrastructure).
    redis_server.command("PUBLISH", "sbc:bans", json.dumps(forged))
    _until(lambda: b.cluster()["received"].get("exempt", 0) == 1, 1.0)
    assert CARRIER_IP not in b.bans()
    manual = {**forged, "manual": True, "reason": "manual"}
    redis_server.command("PUBLISH", "sbc:bans", json.dumps(manual))
    _until(lambda: CARRIER_IP in b.bans(), 1.0)
    assert b.bans()[CARRIER_IP]["node"] == "evil"

    # The link survived all of it: a node started now skips the garbage key,
    # and a valid ban still goes through
    a = node("node-a")
    assert a.proc.named("cluster_connected")[0]["loaded"] == 0  # announced, never stored
    assert a.cluster()["invalid"] == {"not_json": 1}  # the garbage key, read and refused
    assert a.send("POST", "/api/bans", {"host": "10.95.0.1", "seconds": 60})[0] == 201
    _until(lambda: "10.95.0.1" in b.bans(), 1.0)
    assert "Traceback" not in "\n".join(b.proc.lines + a.proc.lines)
