"""Ban events as read from Redis: a round trip, and every way a payload can
be wrong refused with its reason (a forged or broken entry never raises
anything but Invalid, whatever the bytes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.cluster.events import BanEvent, Invalid, Op, decode, encode

NOW = 1_700_000_000.0


def _ban(**over: Any) -> dict[str, Any]:
    event = {"v": 1, "op": "ban", "host": "203.0.113.7", "at": NOW, "node": "node-a",
             "instance": "0123456789abcdef", "reason": "scanner", "level": 2,
             "expires": NOW + 600, "first_seen": NOW - 5, "manual": False,
             "counts": {"scanner": 3}}
    event.update(over)
    return event


def test_round_trip() -> None:
    event = BanEvent(Op.BAN, "203.0.113.7", NOW, "node-a", "0123456789abcdef", "scanner", 2,
                     NOW + 600, NOW - 5, False, {"scanner": 3})
    assert decode(encode(event), NOW) == event
    unban = BanEvent(Op.UNBAN, "2001:db8::1", NOW, "node-b", "0123456789abcdef", "manual", 1,
                     NOW + 60)
    assert decode(encode(unban), NOW) == unban


def test_ipv4_mapped_address_is_read_as_ipv4() -> None:
    assert decode(json.dumps(_ban(host="::ffff:203.0.113.7")), NOW).host == "203.0.113.7"


@pytest.mark.parametrize(("payload", "reason"), [
    (b"not json", "not_json"),
    (b"\xff\xfe", "not_json"),
    (b"[1, 2]", "not_an_object"),
    (b"{" * 5000, "too_large"),
    (json.dumps(_ban(v=2)), "version"),
    (json.dumps(_ban(op="delete")), "op"),
    (json.dumps(_ban(op=["ban"])), "op"),
    (json.dumps(_ban(host="example.com")), "host"),
    (json.dumps(_ban(host="10.0.0.0/8")), "host"),
    (json.dumps(_ban(host=None)), "host"),
    (json.dumps(_ban(node="a b")), "node"),
    (json.dumps(_ban(node="x" * 65)), "node"),
    (json.dumps(_ban(instance="XYZ")), "instance"),
    (json.dumps(_ban(reason="<script>")), "reason"),
    (json.dumps(_ban(at="now")), "at"),
    (json.dumps(_ban(at=NOW + 400 * 86400, expires=NOW + 401 * 86400)), "at"),
    (json.dumps(_ban(expires=NOW + 10 * 366 * 86400)), "expires"),
    (json.dumps(_ban(expires=NOW - 1)), "expires"),
    (json.dumps(_ban(expires=True)), "expires"),
    (json.dumps(_ban(at=float("nan"))), "at"),
    (json.dumps(_ban(level=0)), "level"),
    (json.dumps(_ban(level=True)), "level"),
    (json.dumps(_ban(level=1.5)), "level"),
    (json.dumps(_ban(first_seen=NOW + 1)), "first_seen"),
    (json.dumps(_ban(manual="yes")), "manual"),
    (json.dumps(_ban(counts={"scanner": "many"})), "counts"),
    (json.dumps(_ban(counts={f"k{i}": 1 for i in range(40)})), "counts"),
    (json.dumps(_ban(counts=[1])), "counts"),
])
def test_malformed_payloads_are_refused_by_name(payload: bytes | str, reason: str) -> None:
    with pytest.raises(Invalid) as info:
        decode(payload, NOW)
    assert info.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.dictionaries(
    st.sampled_from(["v", "op", "host", "at", "node", "instance", "reason", "level", "expires",
                     "first_seen", "manual", "counts"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
              st.lists(st.integers(), max_size=3)))))
def test_any_bytes_decode_or_raise_invalid(payload: bytes | dict[str, Any]) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        event = decode(data, NOW)
    except Invalid:
        return
    assert isinstance(event, BanEvent)
