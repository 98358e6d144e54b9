"""The toll-fraud watch shared across nodes, in memory: two or more watches,
each with its FraudShare, wired through a stand-in for Redis (a dict of
hashes, and events handed from one node to the others as the channel would),
time passed in. Each test plays the fraudster spreading calls over the
nodes, or an operator, or a broken Redis."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from pathlib import Path

from sbc.cluster.fraud_events import (MAX_SEQ, Contribution, FraudEvent, encode_contribution,
                                      encode_event)
from sbc.cluster.fraud_share import DROP_S, FRESH_S, MAX_NODES, MAX_NUMBERS, FraudShare
from sbc.core.fraud import FraudWatch, Metric, Rule, RuleSet, Threshold
from sbc.core.fraud.explain import block_view, view
from sbc.core.fraud.record import restore, to_record
from sbc.state.fraud import FraudKeeper, request_clear
from sbc.state.store import Store

UTC = ZoneInfo("UTC")
WALL0 = 1_796_000_000.0  # a Monday-ish wall time; mono 0.0 is this moment
GWS = {"acme": (), "beta": ()}


def rule(**thresholds: tuple[float, float]) -> Rule:
    return Rule("premium", UTC, tuple((Metric(m), Threshold(*t)) for m, t in thresholds.items()),
                prefixes=("900",), cool_off=0)


class Node:
    def __init__(self, name: str, *rules: Rule, max_numbers: int = 1000) -> None:
        self.name = name
        self.watch = FraudWatch(max_numbers=max_numbers)
        self.watch.configure(RuleSet(rules, tech=dict(GWS)))
        self.watch.wall_offset = WALL0
        self.share = FraudShare(self.watch, node=name, instance=f"{sum(map(ord, name)):08x}",
                                now=0.0)
        self.share.connected(0.0)
        self.n = 0

    def call(self, now: float, number: str = "900123", gateway: str = "acme") -> bool:
        """One call offered: True when admitted (counted), False when refused."""
        m = self.watch.match(gateway, f"sip:{number}@x".encode(), (), now)
        assert m is not None
        if m.block is not None:
            return False
        self.n += 1
        cid = f"{self.name}-{self.n}".encode()
        self.watch.admit(m, (cid, b"tag"), cid, now)
        return True


class Bus:
    """Redis and its channel, in memory."""

    def __init__(self, *nodes: Node) -> None:
        self.nodes = nodes
        self.hashes: dict[str, dict[str, bytes]] = {}

    def sync(self, now: float) -> None:
        """The channel (events to every other node), then one counter pass each."""
        wall = WALL0 + now
        for n in self.nodes:
            for e in n.share.take(1000):
                for other in self.nodes:
                    if other is not n:
                        other.share.receive(encode_event(e), now, wall)
        for n in self.nodes:
            writes, deletes = n.share.contributions(now, wall)
            for r, fields in writes.items():
                self.hashes.setdefault(r, {}).update(
                    {k: encode_contribution(c) for k, c in fields.items()})
            for r, names in deletes.items():
                for k in names:
                    self.hashes.get(r, {}).pop(k, None)
        for n in self.nodes:
            stale = n.share.take_others(self.hashes, now, wall)
            for r, names in stale.items():
                for k in names:
                    self.hashes.get(r, {}).pop(k, None)


def test_calls_spread_over_two_nodes_trip_the_critical_threshold_on_the_cluster_total() -> None:
    """The fraudster's trick: 10 calls a minute, 5 to each node, under a
    critical threshold of 10 that each node alone never reaches."""
    a, b = Node("node-a", rule(calls_per_minute=(0, 10))), Node("node-b", rule(calls_per_minute=(0, 10)))
    bus = Bus(a, b)
    t = 0.0
    for _ in range(5):  # a call every 0.5 s, alternating, one counter pass between
        assert a.call(t)
        bus.sync(t + 0.5)
        assert b.call(t + 0.5)
        t += 1.0
        bus.sync(t)
    # 10 calls in the cluster's minute: the 10th crossed, both refuse now
    assert [x.share.node for x in (a, b) if x.watch.blocks(t)] == ["node-a", "node-b"]
    assert not a.call(t) and not b.call(t)
    (block,) = b.watch.blocks(t)
    assert block.node == "node-b" and block.figure == 10.0
    shown = block_view(block, WALL0, t)
    assert shown["node"] == "node-b" and "blocked by node 'node-b'" in shown["why"]
    (on_a,) = a.watch.blocks(t)
    assert on_a.node == "node-b"  # adopted, naming the node that made it
    assert a.share.received["applied"] == 1


def test_alone_each_node_stays_under_the_threshold() -> None:
    """The same calls with the link down: each node counts alone (the old behaviour)."""
    a, b = Node("node-a", rule(calls_per_minute=(0, 10))), Node("node-b", rule(calls_per_minute=(0, 10)))
    for x in (a, b):
        x.share.lost(0.0, "ConnectionError: refused")
    for i in range(5):
        assert a.call(float(i)) and b.call(float(i))
    assert not a.watch.blocks(5.0) and not b.watch.blocks(5.0)
    assert a.share.readiness()["mode"] == "alone"


@pytest.mark.parametrize("metric,critical", [("concurrent", 6), ("calls_per_day", 6),
                                             ("sequential", 6)])
def test_every_figure_is_summed_over_the_nodes(metric: str, critical: int) -> None:
    a, b = Node("node-a", rule(**{metric: (0, critical)})), Node("node-b", rule(**{metric: (0, critical)}))
    bus = Bus(a, b)
    for i in range(3):
        assert a.call(float(i))
    bus.sync(3.0)
    assert b.call(3.0) and b.call(3.1)
    assert not b.watch.blocks(3.1)
    assert b.call(3.2)  # 3 + 3: the critical figure reached on B
    assert b.watch.blocks(3.2)
    bus.sync(3.5)
    assert not a.call(3.6)


def test_minutes_per_day_count_the_other_nodes_running_calls() -> None:
    r = rule(minutes_per_day=(0, 2))
    a, b = Node("node-a", r), Node("node-b", r)
    bus = Bus(a, b)
    assert a.call(0.0) and b.call(0.0)
    for x in (a, b):
        x.watch.answered((f"{x.name}-1".encode(), b"tag"), 0.0)
    bus.sync(59.5)
    assert not a.watch.tick(59.5) and not a.watch.blocks(59.5)
    bus.sync(60.0)  # a minute each: 2 in the cluster
    a.watch.tick(60.0)
    assert a.watch.blocks(60.0)


def test_an_operators_clear_on_one_node_lifts_the_block_everywhere_and_restarts_counting() -> None:
    r = rule(calls_per_day=(0, 4))
    a, b = Node("node-a", r), Node("node-b", r)
    bus = Bus(a, b)
    for i in range(2):
        assert a.call(float(i))
        bus.sync(i + 0.25)
        assert b.call(i + 0.5)
        bus.sync(i + 0.75)
    assert a.watch.blocks(2.0) and b.watch.blocks(2.0)
    (done,) = b.watch.clear("acme", "premium", "noc", 3.0)
    assert done.lifted
    b.share.cleared("acme", "premium", "noc", "confirmed", WALL0 + 3.0)
    bus.sync(3.0)
    assert not a.watch.blocks(3.0) and not b.watch.blocks(3.0)
    assert a.watch.cleared[-1].by == "noc@node-b"
    # the counters restarted on both nodes: 3 more calls in the cluster pass
    assert a.call(4.0) and b.call(4.0)
    bus.sync(5.0)
    assert a.call(5.0)
    assert a.watch.scopes[("acme", "premium")].figure(Metric.CALLS_PER_DAY, 5.0) == 3.0


def test_a_block_made_before_a_clear_is_not_taken_again() -> None:
    r = rule(calls_per_minute=(0, 1))
    a, b = Node("node-a", r), Node("node-b", r)
    assert a.call(0.0)
    (event,) = a.share.take(10)
    b.share.cleared("*", "*", "noc", "", WALL0 + 1.0)  # cleared after the block was made
    outcome, _, _ = b.share.receive(encode_event(event), 2.0, WALL0 + 2.0, live=False)
    assert outcome == "cleared_since" and not b.watch.blocks(2.0)
    # the server says so to the node that pushed it: lifted there too
    assert a.share.pushed(event, -1, 2.0) and not a.watch.blocks(2.0)


def test_old_figures_stop_counting_and_their_field_goes() -> None:
    r = rule(calls_per_day=(0, 100))
    a, b = Node("node-a", r), Node("node-b", r)
    bus = Bus(a, b)
    assert a.call(0.0)
    bus.sync(1.0)
    assert b.watch.scopes[("acme", "premium")].others is not None
    # A goes silent (killed): B reads its last figures until they are too old
    b.share.take_others(bus.hashes, FRESH_S - 1, WALL0 + FRESH_S - 1)
    assert b.watch.scopes[("acme", "premium")].others is not None
    assert b.share.take_others(bus.hashes, FRESH_S + 2, WALL0 + FRESH_S + 2) == {}
    assert b.watch.scopes[("acme", "premium")].others is None
    stale = b.share.take_others(bus.hashes, DROP_S + 2, WALL0 + DROP_S + 2)
    assert stale == {"premium": ["node-a|acme"]}


def test_losing_redis_means_counting_alone() -> None:
    r = rule(calls_per_minute=(0, 10))
    a, b = Node("node-a", r), Node("node-b", r)
    bus = Bus(a, b)
    for i in range(4):
        assert a.call(float(i))
    bus.sync(4.0)
    scope = b.watch.scopes[("acme", "premium")]
    assert scope.figure(Metric.CALLS_PER_MINUTE, 4.0) == 4.0
    b.share.lost(4.0, "TimeoutError")
    assert scope.others is None and scope.figure(Metric.CALLS_PER_MINUTE, 4.0) == 0.0
    assert b.share.readiness() == {"mode": "alone", "state": "lost",
                                   "rule": "each node counts its own calls until Redis is back"}
    assert b.share.connected(5.0) is not None and b.share.shared


def test_what_a_node_tells_is_only_what_changed() -> None:
    a = Node("node-a", rule(calls_per_day=(0, 100)))
    assert a.call(0.0)
    writes, _ = a.share.contributions(0.5, WALL0 + 0.5)
    assert list(writes["premium"]) == ["node-a|acme"]
    assert a.share.contributions(1.0, WALL0 + 1.0) == ({}, {})
    writes, _ = a.share.contributions(6.0, WALL0 + 6.0)  # told again now and then
    assert list(writes["premium"]) == ["node-a|acme"]
    a.watch.clear("*", "*", "noc", 7.0)  # the call in progress stays counted
    writes, _ = a.share.contributions(7.0, WALL0 + 7.0)
    told = writes["premium"]["node-a|acme"]
    assert (told.calls_today, told.live) == (0, 1)
    a.watch.ended((b"node-a-1", b"tag"), 8.0)  # nothing left to tell: the field goes
    assert a.share.contributions(8.0, WALL0 + 8.0) == ({}, {"premium": ["node-a|acme"]})


# ---------------------------------------------------------------- bounds


def test_a_node_tells_at_most_max_seq_runs_its_longest() -> None:
    a = Node("node-a", rule(sequential=(0, 1000)), max_numbers=1000)
    for i in range(1000):
        a.call(float(i) / 1000, number=f"900{i:06d}")
    for _ in range(3):
        a.call(1.5, number="900999999")
    writes, _ = a.share.contributions(2.0, WALL0 + 2.0)
    told = writes["premium"]["node-a|acme"]
    assert len(told.seq) == MAX_SEQ and told.seq["900999999"][0] == 3
    assert len(encode_contribution(told)) < 4096


def test_the_others_numbers_and_nodes_are_capped_per_scope() -> None:
    b = Node("node-b", rule(sequential=(0, 10_000)))
    wall = WALL0 + 1.0
    fields = {f"n{k}|acme": encode_contribution(Contribution(
        wall, "", seq={f"900{k:03d}{i:03d}": (1, wall) for i in range(MAX_SEQ)}))
        for k in range(MAX_NODES + 36)}
    b.share.take_others({"premium": fields}, 1.0, wall)
    others = b.watch.scopes[("acme", "premium")].others
    assert others is not None
    assert others.nodes == MAX_NODES
    assert len(others.seq) == MAX_NUMBERS


def test_names_from_redis_that_are_not_configured_make_no_scope() -> None:
    b = Node("node-b", rule(calls_per_day=(0, 10)))
    wall = WALL0 + 1.0
    payload = encode_contribution(Contribution(wall, "", calls_today=5))
    b.share.take_others({"premium": {f"x|gw{i}": payload for i in range(1000)},
                         "other-rule": {"x|acme": payload}}, 1.0, wall)
    assert list(b.watch.scopes) == []
    bad = encode_event(next(iter(_block_events("node-a", gateway="ghost"))))
    assert b.share.receive(bad, 1.0, wall)[0] == "unknown_gateway"
    b.share.cleared("ghost", "nope", "noc", "", wall)  # no mark for names it does not know
    assert b.share.marks == {}


def test_the_outbox_is_bounded_and_asks_for_a_full_push_when_it_overflows() -> None:
    a = Node("node-a", rule(calls_per_minute=(0, 1)))
    a.share.max_pending = 3
    a.share.resync = False
    for i in range(5):
        a.share.cleared("acme", "premium", "noc", "", WALL0 + i)
    assert len(a.share.outbox) == 3 and a.share.dropped == 2 and a.share.resync


def _block_events(node: str, gateway: str = "acme") -> list[FraudEvent]:
    other = Node(node, rule(calls_per_minute=(0, 1)))
    other.watch.rules = RuleSet(other.watch.rules.rules, tech={**GWS, gateway: ()})
    assert other.call(0.0, gateway=gateway)
    return list(other.share.take(10))


@pytest.mark.parametrize("payload,reason", [
    (b"[]", "not_an_object"), (b"{", "not_json"), (b'{"v":2}', "version"),
    (b"x" * 20_000, "too_large"),
    (b'{"v":1,"op":"nuke"}', "op"),
    (b'{"v":1,"op":"block","gateway":"a:b","rule":"r","node":"n","instance":"0123abcd"}',
     "gateway"),
    (b'{"v":1,"op":"clear","gateway":"*","rule":"*","node":"n","instance":"0123abcd",'
     b'"at":1796000000,"by":"x y","note":""}', "by"),
    (b'{"v":1,"op":"block","gateway":"acme","rule":"premium","node":"n",'
     b'"instance":"0123abcd","at":1796000000,"until":null,"metric":"calls_per_minute",'
     b'"threshold":1,"figure":1,"calls":' + b"[[\"c\",\"9\"]" + b',["c","9"]' * 20 + b"]}",
     "calls"),
])
def test_malformed_events_are_refused_with_a_named_reason(payload: bytes, reason: str) -> None:
    b = Node("node-b", rule(calls_per_minute=(0, 1)))
    assert b.share.receive(payload, 1.0, WALL0 + 1.0)[0] == "invalid"
    assert b.share.invalid == {reason: 1}


def test_a_node_ignores_its_own_announcements_and_the_view_shows_the_cluster() -> None:
    a = Node("node-a", rule(calls_per_minute=(0, 1)))
    assert a.call(0.0)
    (event,) = a.share.take(10)
    assert a.share.receive(encode_event(event), 0.5, WALL0 + 0.5)[0] == "echo"
    shown = view(a.watch, 1.0)
    assert shown["blocks"][0]["node"] == "node-a"


def test_an_operators_clear_from_the_cli_or_the_api_goes_to_the_cluster(tmp_path: Path) -> None:
    a = Node("node-a", rule(calls_per_minute=(0, 1)))
    asked: list[tuple[str, str, str, str]] = []
    with Store(tmp_path / "state.sqlite") as store:
        keeper = FraudKeeper(a.watch, store)
        keeper.on_clear = lambda gateway, rule, by, note: asked.append((gateway, rule, by, note))
        request_clear(store, "*", "premium", "noc-cli", "from the shell")
        keeper.poll(1.0)
        keeper.clear("acme", "*", "noc-api", "", 2.0)
    assert asked == [("*", "premium", "noc-cli", "from the shell"), ("acme", "*", "noc-api", "")]


def test_the_node_that_made_a_block_survives_a_restart() -> None:
    a = Node("node-a", rule(calls_per_minute=(0, 1)))
    assert a.call(0.0)
    record = to_record(a.watch, ("acme", "premium"), 1.0)
    assert record is not None and record["block"]["node"] == "node-a"
    again = Node("node-a", rule(calls_per_minute=(0, 1)))
    assert restore(again.watch, [record], 1.0, lambda key: False) == 1
    (block,) = again.watch.blocks(1.0)
    assert block.node == "node-a"
    assert [e.node for e in again.share.in_force(1.0)] == ["node-a"]  # pushed when it connects


def test_a_block_adopted_from_another_node_cuts_this_nodes_calls_when_its_rule_says_so() -> None:
    r = Rule("premium", UTC, ((Metric.CALLS_PER_MINUTE, Threshold(0, 2)),), prefixes=("900",),
             cool_off=0, cut_calls=True)
    a, b = Node("node-a", r), Node("node-b", r)
    assert b.call(0.0)  # a call in progress on B
    assert a.call(0.5) and a.call(0.6)  # A alone crosses (B's call not read yet)
    (event,) = a.share.take(10)
    assert b.share.receive(encode_event(event), 0.7, WALL0 + 0.7)[0] == "applied"
    assert b.watch.tick(1.0) == [(b"node-b-1", b"tag")]
