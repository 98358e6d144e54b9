"""The other nodes' bindings as a node keeps them (sbc.cluster.registrations):
records read strictly, a binding routed only to a live node's own address,
expiry, late events, and the table's hard bound. Time is passed in."""

from __future__ import annotations

import pytest

from sbc.cluster.events import Invalid
from sbc.cluster.registrations import (
    NODES_PER_AOR,
    NodeRecord,
    Outbox,
    RegEvent,
    RegOp,
    RemoteBindings,
    decode,
    decode_node,
    encode,
    encode_node,
)

WALL = 1_700_000_000.0
INST = "0123456789abcdef"
A_PRIV = ("10.0.0.1", 5080)
B_PRIV = ("10.0.0.2", 5080)


def bind(aor: str, node: str = "a", at: float = WALL, lifetime: float = 600.0,
         op: RegOp = RegOp.BIND) -> RegEvent:
    return RegEvent(op, aor, node, INST, at, at + lifetime if op is RegOp.BIND else at)


def table(**kw: object) -> RemoteBindings:
    t = RemoteBindings("b", own=frozenset([B_PRIV]), node_ttl_s=6.0, **kw)  # type: ignore[arg-type]
    t.node_seen(NodeRecord("a", INST, *A_PRIV), 0.0)
    return t


def test_a_binding_routes_to_its_nodes_private_address_while_both_live() -> None:
    t = table()
    assert t.apply(decode(encode(bind("1001")), WALL), 0.0, WALL) == "added"
    assert t.owner("1001", 1.0) == A_PRIV
    assert t.is_node(*A_PRIV, 1.0) and not t.is_node("10.0.0.1", 5081, 1.0)
    assert t.owner("1002", 1.0) is None
    # the node's heartbeat is not seen again: its phones are unknown here
    assert t.owner("1001", 6.5) is None and not t.is_node(*A_PRIV, 6.5)
    t.node_seen(NodeRecord("a", INST, *A_PRIV), 7.0)
    assert t.owner("1001", 7.5) == A_PRIV
    assert t.owner("1001", 600.5) is None  # the binding's own expiry


def test_a_record_never_names_an_address_only_a_node() -> None:
    t = table()
    t.apply(bind("1001", node="ghost"), 0.0, WALL)  # a node that never announced itself
    assert t.owner("1001", 1.0) is None
    # a node record naming this node's own address would loop: refused
    assert t.node_seen(NodeRecord("evil", INST, *B_PRIV), 1.0) == "own_address"
    t.apply(bind("1003", node="evil"), 1.0, WALL)
    assert t.owner("1003", 1.5) is None and not t.is_node(*B_PRIV, 1.5)
    assert t.apply(bind("1001", node="b"), 1.0, WALL) == "own"  # its own bindings are local
    # a node that is gone from the heartbeat scan is no relay target at once
    t.nodes_seen([], 2.0)
    assert not t.is_node(*A_PRIV, 2.0)


def test_the_newest_registration_wins_and_late_events_are_ignored() -> None:
    t = table()
    t.node_seen(NodeRecord("c", INST, "10.0.0.3", 5080), 0.0)
    t.apply(bind("1001", node="a", at=WALL), 0.0, WALL)
    t.apply(bind("1001", node="c", at=WALL + 5), 0.0, WALL + 5)
    assert t.owner("1001", 1.0) == ("10.0.0.3", 5080)  # the phone moved to c
    assert t.apply(bind("1001", node="c", at=WALL + 1, op=RegOp.UNBIND), 1.0, WALL + 6) == "late"
    assert t.apply(bind("1001", node="c", at=WALL + 7, op=RegOp.UNBIND), 1.0, WALL + 7) == "removed"
    assert t.owner("1001", 1.0) == A_PRIV and len(t) == 1


def test_the_table_is_bounded_and_refuses_beyond_its_bound() -> None:
    t = table(max_entries=3)
    for i in range(3):
        assert t.apply(bind(f"u{i}", lifetime=10.0), 0.0, WALL) == "added"
    assert t.apply(bind("u3", lifetime=10.0), 1.0, WALL + 1) == "full"
    assert len(t) == 3 and t.counts["full"] == 1 and t.owner("u3", 1.0) is None
    assert t.apply(bind("u0", at=WALL + 1), 1.0, WALL + 1) == "updated"  # known: updated in place
    # once some expire, there is room again (a sweep at most once a second)
    assert t.apply(bind("u4", at=WALL + 20), 20.0, WALL + 20) == "added"
    assert len(t) <= 3
    # one account at many nodes: at most NODES_PER_AOR entries, the oldest goes
    big = table(max_entries=100)
    for i in range(NODES_PER_AOR + 2):
        big.apply(bind("x", node=f"n{i}", at=WALL + i), 0.0, WALL + i)
    assert len(big) == NODES_PER_AOR


@pytest.mark.parametrize(("payload", "reason"), [
    (b"x" * 2000, "too_large"), (b"[1]", "not_an_object"), (b"{", "not_json"),
    (b'{"v":2}', "version"),
    (b'{"v":1,"op":"bind","aor":"1001","node":"a b","instance":"0123456789abcdef"}', "node"),
    (b'{"v":1,"op":"bind","aor":"10 01","node":"a","instance":"0123456789abcdef",'
     b'"at":1700000000,"expires":1700000600}', "aor"),
    (b'{"v":1,"op":"bind","aor":"1001","node":"a","instance":"0123456789abcdef",'
     b'"at":1700000000,"expires":1700000000}', "expires"),
    (b'{"v":1,"op":"boom","aor":"1001","node":"a","instance":"0123456789abcdef"}', "op"),
])
def test_malformed_binding_records_are_refused_by_name(payload: bytes, reason: str) -> None:
    with pytest.raises(Invalid) as e:
        decode(payload, WALL)
    assert e.value.reason == reason


@pytest.mark.parametrize(("host", "port", "reason"), [
    ("0.0.0.0", 5080, "host"), ("224.0.0.1", 5080, "host"), ("example.com", 5080, "host"),
    ("10.0.0.1", 0, "port"), ("10.0.0.1", 70000, "port"), ("10.0.0.1", True, "port"),
])
def test_node_records_name_a_unicast_address_and_a_port(host: str, port: object,
                                                        reason: str) -> None:
    payload = encode_node(NodeRecord("a", INST, host, port))  # type: ignore[arg-type]
    with pytest.raises(Invalid) as e:
        decode_node(payload)
    assert e.value.reason == reason
    assert decode_node(encode_node(NodeRecord("a", INST, "::ffff:10.0.0.1", 5080))).host == \
        "10.0.0.1"


def test_outbox_keeps_the_newest_change_per_account_within_its_bound() -> None:
    box = Outbox(2)
    assert box.put(bind("1001")) and box.put(bind("1002"))
    assert box.put(bind("1001", at=WALL + 1))  # replaces, at the back
    assert not box.put(bind("1003")) and box.dropped == 1
    taken = box.take(5)
    assert [e.aor for e in taken] == ["1002", "1001"] and taken[1].at_wall == WALL + 1
    box.put_back(taken)
    assert len(box) == 2
