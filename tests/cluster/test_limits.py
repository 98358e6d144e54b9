"""Shared call limits, the pure half: lease sizes, token and slot accounting,
the fallback share, and the engine's question (time passed in, no network)."""

from __future__ import annotations

from typing import Any

from sbc.cluster.limits import (
    ALL,
    SharedLimits,
    SlotLease,
    TokenLease,
    lease_size,
    member,
    share_of,
)
from sbc.core.policy.limits import (
    GATEWAY_CONCURRENT,
    GATEWAY_CPS,
    GLOBAL_CONCURRENT,
    CallPolicy,
    GatewayPolicy,
)


def _name(key: tuple[bytes, bytes], value: Any) -> str:
    return member("a", "gw", key[0], key[1])


def _calls(n: int, start: int = 0) -> dict[tuple[bytes, bytes], object]:
    return {(b"call-%d" % i, b"t"): object() for i in range(start, start + n)}


def test_lease_sizes_keep_every_node_together_within_five_percent() -> None:
    assert lease_size(100, 2) == 2 and lease_size(100, 1) == 5
    assert lease_size(10, 2) == 1  # at least one
    assert lease_size(10_000, 2) == 250 and lease_size(10**7, 1) == 1000
    for limit in (20, 100, 1000, 5000):
        for nodes in (2, 3, 4):
            assert nodes * lease_size(limit, nodes) <= max(nodes, 0.05 * limit)
    assert share_of(10, 3) == 10 / 3


def test_a_slot_is_named_by_node_and_dialog_identity() -> None:
    one = member("a", "gw", b"cid", b"tag")
    assert one == member("a", "gw", b"cid", b"tag") and one.startswith("a:")
    assert len({one, member("b", "gw", b"cid", b"tag"), member("a", "gw2", b"cid", b"tag"),
                member("a", "gw", b"cid", b"tag2")}) == 4  # racing the same Call-ID on two nodes: two slots


def test_slot_lease_before_redis_and_in_fallback_is_the_share() -> None:
    lease = SlotLease("gw", 10, nodes=3)
    assert not lease.shared and lease.cap() == 3  # floor(10 / 3): the sum never exceeds 10
    lease.resize(10, 2)
    assert lease.cap() == 5


def test_slot_lease_accounting_registers_calls_and_shrinks_before_sending() -> None:
    lease = SlotLease("gw", 100, nodes=2)  # lease of 2 free slots
    assert lease.size == 2
    calls = _calls(3)
    req = lease.request(calls, _name)
    assert req is not None and len(req.adds) == 3 and req.dels == [] and req.refresh
    assert req.keep == 2 and req.mine == 3  # fallback share 50 - 3, at most the lease size
    lease.granted(req, 2)
    assert lease.shared and lease.cap() == 5
    assert lease.request(calls, _name) is None  # 2 free: nothing to say
    calls.update(_calls(1, start=3))  # one more call: 1 free, below half of 2? no: low is 1
    assert lease.request(calls, _name) is not None  # a new call is registered
    # three calls end: their slots go back with the next request, and the
    # lease shrinks to its size at once (the reply may not grant more)
    for key in list(calls)[:3]:
        del calls[key]
    before = lease.cap()
    req = lease.request(calls, _name)
    assert req is not None and len(req.dels) == 3 and req.adds == {}
    assert lease.cap() <= before and lease.cap() == 1 + req.keep and req.keep <= req.want
    lease.granted(req, 2)
    assert lease.cap() == 3


def test_fallback_then_back_registers_every_call_again() -> None:
    lease = SlotLease("gw", 4, nodes=2)
    calls = _calls(2)
    lease.granted(lease.request(calls, _name) or _fail(), 1)
    assert lease.cap() == 3
    lease.fall_back()
    assert lease.cap() == 2  # 4 / 2
    req = lease.request(calls, _name)
    assert req is not None and len(req.adds) == 2 and req.refresh and req.keep == 0


def _fail() -> Any:
    raise AssertionError("no request")


def test_token_lease_spends_what_redis_granted_and_asks_ahead() -> None:
    asked = []
    bucket = TokenLease("gw", rate=100, burst=10, now=0.0, want=lambda: asked.append(1))
    bucket.resize(100, 10, nodes=2, now=0.0)
    assert bucket.size == 2 and not bucket.shared
    assert bucket.rate == 50 and bucket.burst == 5  # the share, before Redis answers
    assert bucket.asked() == 2
    bucket.granted(2, 0.0)
    assert bucket.shared and bucket.tokens == 2 and bucket.asked() == 0
    assert bucket.take(0.0) and asked == [1]  # one left, below half a lease: ask
    assert bucket.take(0.0) and not bucket.take(0.0)
    assert bucket.asked() == 2
    bucket.fall_back(2, 1.0)
    assert not bucket.shared and bucket.rate == 50
    assert bucket.capacity(0.02) == 10  # the burst: larger than 2 leases and 2 ticks' worth


def _policy(shared: SharedLimits, **gw: Any) -> CallPolicy:
    policy = CallPolicy({"gw": GatewayPolicy(**gw)}, max_concurrent=8, max_cps=1000,
                        max_cps_burst=1000)
    shared.attach(policy, 0.0)
    return policy


def test_the_engine_admits_on_slots_held_and_fails_closed_without_them() -> None:
    shared = SharedLimits("a", 0.0, fallback_nodes=2)
    woken = []
    shared.wake = lambda: woken.append(1)
    policy = _policy(shared, max_concurrent=6, cps=100, burst=100)
    assert set(shared.slots) == {"gw", ALL} and set(shared.tokens) == {"gw", ALL}
    # never reached Redis: 6 / 2 = 3 calls here, CPS on the local share
    assert policy.check("gw", (), 2, 2, 0.0) is None
    assert policy.check("gw", (), 3, 3, 0.0) is GATEWAY_CONCURRENT
    # shared: the cap is the slots held
    lease = shared.slots["gw"]
    lease.granted(lease.request(_calls(2), _name) or _fail(), 1)
    every = shared.slots[ALL]
    every.granted(every.request(_calls(2), _name) or _fail(), 5)
    for t in shared.tokens.values():
        t.granted(1, 0.0)
    assert lease.cap() == 3
    assert policy.check("gw", (), 2, 2, 0.0) is None and woken  # the last free slot: ask
    assert policy.check("gw", (), 3, 3, 0.0) is GATEWAY_CONCURRENT
    assert policy.check("gw", (), 2, 7, 0.0) is GLOBAL_CONCURRENT
    assert policy.check("gw", (), 2, 2, 0.0) is GATEWAY_CPS  # its one token is spent
    assert policy.figures["gw"]["rejected_gateway_concurrent"] == 2


def test_link_lost_puts_every_limit_on_the_share_and_says_so() -> None:
    shared = SharedLimits("a", 0.0, fallback_nodes=2)
    policy = _policy(shared, max_concurrent=6, cps=100, burst=100)
    shared.live_nodes(3, 0.0)
    assert shared.slots["gw"].cap() == 2 and shared.tokens["gw"].rate == 100 / 3
    assert shared.connected(1.0) is not None
    lease = shared.slots["gw"]
    lease.granted(lease.request({}, _name) or _fail(), 1)
    t = shared.lost(2.0, "timeout")
    assert t is not None and t.new == "lost" and shared.settle
    assert shared.lost(2.5, "again") is None  # one transition, not one per failure
    assert not lease.shared and lease.cap() == 2
    assert shared.stats(lambda name: 0)["mode"] == "fallback"
    assert policy.check("gw", (), 2, 2, 3.0) is GATEWAY_CONCURRENT


def test_reload_keeps_leases_and_follows_new_limits() -> None:
    shared = SharedLimits("a", 0.0, fallback_nodes=1)
    _policy(shared, max_concurrent=6, cps=10, burst=5)
    first = shared.slots["gw"]
    policy = CallPolicy({"gw": GatewayPolicy(max_concurrent=40)})
    shared.attach(policy, 1.0)
    assert shared.slots["gw"] is first and first.limit == 40 and first.size == 2
    assert ALL not in shared.slots and shared.tokens == {}
    assert policy.shared is shared
