"""Per-gateway CPS, concurrency, duration and destination controls, in memory."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sbc.core.engine import Engine
from sbc.core.identify.gateways import GatewayInfo, GatewayTable
from sbc.core.policy.limits import CallPolicy, GatewayPolicy, PrefixSet, normalise
from sbc.core.verdict import Verdict
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Source
from sbc.sip import parse_message
from tools.standin import answer

CALLER = Source(PUBLIC_UDP, "127.0.0.2", 5061)
BACKEND = Source(PRIVATE, "127.0.0.1", 5070)


def invite(n: int, number: str = "1000", branch: str | None = None) -> bytes:
    return (
        f"INVITE sip:{number}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5061;branch={branch or f'z9hG4bK-{n}'}\r\n"
        f"From: <sip:a@127.0.0.2>;tag=f{n}\r\nTo: <sip:{number}@127.0.0.1>\r\n"
        f"Call-ID: call-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.2:5061>\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def make(**policy: object) -> Engine:
    gw = GatewayPolicy(**policy)  # type: ignore[arg-type]
    return Engine(ProxySettings(), secret=b"k" * 16,
                  gateways=GatewayTable([("acme", ["127.0.0.2"], [])]),
                  gateway_info={"acme": GatewayInfo("acme", 0, "answer")},
                  policy=CallPolicy({"acme": gw}, blocked=["900"], retry_after=7))


def answered(eng: Engine, n: int, now: float) -> bytes:
    v = eng.receive(invite(n), CALLER, now)
    out = [s[2] for s in v.sends if s[0] >= PRIVATE][0]
    *_, ok = answer(out, "127.0.0.1", 5070)
    return [s[2] for s in eng.receive(ok, BACKEND, now).sends][0]


def test_cps_bucket_admits_its_rate_and_rejects_the_rest_with_503() -> None:
    eng = make(cps=10.0, burst=10.0)
    admitted = 0
    for i in range(200):  # 20 offered per second for 10 s
        v = eng.receive(invite(i), CALLER, i * 0.05)
        if any(s[0] >= PRIVATE for s in v.sends):
            admitted += 1
        else:
            resp = v.sends[0][2]
            assert resp.startswith(b"SIP/2.0 503 Gateway CPS Limit") and b"Retry-After: 7" in resp
    assert 100 <= admitted <= 110  # 10 a second, plus the first burst
    assert eng.policy.figures["acme"]["rejected_gateway_cps"] == 200 - admitted


def test_retransmissions_are_not_counted() -> None:
    eng = make(cps=1.0, burst=1.0)
    assert eng.receive(invite(1), CALLER, 0.0).kind == "forward"
    for t in (0.5, 1.5, 3.5):
        assert eng.receive(invite(1), CALLER, t).kind == "reply"  # absorbed, answered 100
    assert eng.policy.figures["acme"]["admitted"] == 1


def test_concurrency_comes_from_the_dialog_table() -> None:
    eng = make(max_concurrent=2)
    ok1 = answered(eng, 1, 0.0)
    answered(eng, 2, 0.0)
    v = eng.receive(invite(3), CALLER, 0.1)
    assert v.sends[0][2].startswith(b"SIP/2.0 503 Gateway Concurrent Call Limit")
    assert eng.dialogs.active("acme") == 2
    # A BYE frees exactly one slot.
    m = parse_message(ok1)
    bye = (f"BYE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-b1\r\n"
           f"From: <sip:a@127.0.0.2>;tag=f1\r\nTo: {(m.get('to') or b'').decode()}\r\n"
           f"Call-ID: call-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()
    out = [s[2] for s in eng.receive(bye, CALLER, 1.0).sends][0]
    eng.receive(answer(out, "127.0.0.1", 5070)[0], BACKEND, 1.0)
    assert eng.dialogs.active("acme") == 1
    assert eng.receive(invite(4), CALLER, 1.1).kind == "forward"
    # A failed call (486) frees its slot too; nothing goes below zero.
    forwarded = [s[2] for s in eng.receive(invite(5), CALLER, 1.2).sends if s[0] >= PRIVATE]
    assert forwarded == []  # over the limit again: 2 active
    assert eng.dialogs.active("acme") == 2


def test_rejected_call_frees_nothing_and_busy_frees_its_slot() -> None:
    eng = make(max_concurrent=1)
    v = eng.receive(invite(1), CALLER, 0.0)
    out = [s[2] for s in v.sends if s[0] >= PRIVATE][0]
    assert eng.dialogs.active("acme") == 1
    busy = answer(out, "127.0.0.1", 5070)[0].replace(b"100 Trying", b"486 Busy Here")
    busy = busy.replace(b"To: <sip:1000@127.0.0.1>", b"To: <sip:1000@127.0.0.1>;tag=b")
    eng.receive(busy, BACKEND, 0.1)
    assert eng.dialogs.active("acme") == 0
    assert eng.receive(invite(2), CALLER, 0.2).kind == "forward"


def test_max_duration_ends_the_call_with_bye_to_both_sides() -> None:
    eng = make(max_duration=30.0)
    answered(eng, 1, 0.0)
    assert eng.dialogs.active("acme") == 1
    sends = eng.on_timer(29.9)
    assert not any(s[2].startswith(b"BYE") for s in sends)
    sends = [s for s in eng.on_timer(30.0) if s[2].startswith(b"BYE")]
    assert {s[0] for s in sends} == {PUBLIC_UDP, PRIVATE}
    to_caller = parse_message([s[2] for s in sends if s[0] == PUBLIC_UDP][0])
    to_vos = parse_message([s[2] for s in sends if s[0] == PRIVATE][0])
    assert to_caller.uri == b"sip:a@127.0.0.2:5061" and to_vos.uri == b"sip:vos@127.0.0.1:5070"
    assert b"tag=f1" in (to_caller.get("to") or b"") and b"tag=f1" in (to_vos.get("from") or b"")
    assert to_vos.cseq == 2
    assert eng.dialogs.active("acme") == 0
    # Their 200s are ours: absorbed.
    ok = answer(to_vos.to_bytes(), "127.0.0.1", 5070)[0]
    assert eng.receive(ok, BACKEND, 30.1).reason == "bye_answer"  # type: ignore[union-attr]


@pytest.mark.parametrize("number", ["900123", "+900123", "00900123", "9999#900123", "+9-00-123",
                                    "%39%30%30123", "9999%23900123"])
def test_blocked_prefixes_after_normalisation(number: str) -> None:
    eng = Engine(ProxySettings(), secret=b"k" * 16,
                 gateways=GatewayTable([("acme", ["127.0.0.2"], [])]),
                 policy=CallPolicy({"acme": GatewayPolicy(tech=("9999#",))}, blocked=["900"]))
    v = eng.receive(invite(1, number=number), CALLER, 0.0)
    assert v.kind == "reply" and v.sends[0][2].startswith(b"SIP/2.0 403 Destination Blocked")
    assert eng.bans.offenses.count("127.0.0.2", 0.0) == 1  # an offense of that source
    # The ACK for that 403 is absorbed, never sent to VOS3000.
    ack = invite(1, number=number).replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
    ack = ack.replace(b"To: <sip:" + number.encode() + b"@127.0.0.1>",
                      b"To: <sip:" + number.encode() + b"@127.0.0.1>;tag=sbc-0")
    assert eng.receive(ack, CALLER, 0.1).reason == "ack_absorbed"  # type: ignore[union-attr]


def invite_to(n: int, uri: str) -> bytes:
    """An initial INVITE with `uri` as its Request-URI (and To)."""
    return invite(n).replace(b"sip:1000@127.0.0.1:5060", uri.encode(), 1).replace(
        b"To: <sip:1000@127.0.0.1>", b"To: <" + uri.encode() + b">")


def to_vos(v: Verdict) -> list[bytes]:
    return [s[2] for s in v.sends if s[0] >= PRIVATE]


def refused(eng: Engine, uri: str, reason: bytes, n: int = 1) -> None:
    """`uri` refused with 403 `reason`, to the caller only: VOS3000 sees nothing."""
    v = eng.receive(invite_to(n, uri), CALLER, 0.0)
    assert v.kind == "reply" and to_vos(v) == []
    assert [s[:2] for s in v.sends] == [(PUBLIC_UDP, ("127.0.0.2", 5061))]
    assert v.sends[0][2].startswith(b"SIP/2.0 403 " + reason + b"\r\n")
    assert eng.dialogs.active("acme") == 0 and len(eng.dialogs) == 0


def listed() -> Engine:
    """acme under the global block on 900, with the tech prefix 9999#."""
    return Engine(ProxySettings(), secret=b"k" * 16,
                  gateways=GatewayTable([("acme", ["127.0.0.2"], [])]),
                  policy=CallPolicy({"acme": GatewayPolicy(tech=("9999#",))},
                                    blocked=["900"]))


@pytest.mark.parametrize("uri", [
    # issue 14 item 7: each of these used to reach VOS3000.
    "tel:900123", "tel:+900123", "sip:(900)123@127.0.0.1", "sip:++900123@127.0.0.1",
    "sips:+900123@127.0.0.1", "TEL:+9.0.0-123", "sip:+900123;isub=1@127.0.0.1;user=phone",
    "sip:900123:secret@127.0.0.1", "sip:9999%23(900)123@127.0.0.1",
    "tel:123;phone-context=+900", "sip:123;phone-context=+9-00@127.0.0.1;user=phone",
])
def test_blocked_in_any_spelling_of_the_request_uri(uri: str) -> None:
    eng = listed()
    refused(eng, uri, b"Destination Blocked")
    assert eng.policy.figures["acme"]["rejected_blocked_destination"] == 1
    assert eng.bans.offenses.count("127.0.0.2", 0.0) == 1
    # Its retransmission gets the same 403; nothing reaches VOS3000 then either.
    again = eng.receive(invite_to(1, uri), CALLER, 0.5)
    assert to_vos(again) == [] and again.sends[0][2].startswith(b"SIP/2.0 403 Destination Blocked")
    assert eng.policy.figures["acme"]["rejected_blocked_destination"] == 1


@pytest.mark.parametrize("uri", [
    "sip:127.0.0.1",  # no user part
    "sip:;user=phone@127.0.0.1",  # an empty one
    "sip:alice@127.0.0.1",  # letters where digits are expected
    "sip:900%3B123@127.0.0.1",
    "sip:-.()@127.0.0.1",  # nothing left once separators are dropped
    "sip:+00900123@127.0.0.1",  # two international prefixes
    "sip:77#900123@127.0.0.1",  # a tech prefix acme does not have
    "tel:123;phone-context=",
    "sip:900123@[::1",  # a URI that does not parse
])
def test_unreadable_destination_is_refused_when_a_list_applies(uri: str) -> None:
    eng = listed()
    refused(eng, uri, b"Destination Unreadable")
    assert eng.policy.figures["acme"]["rejected_unreadable_destination"] == 1
    assert eng.policy.figures["acme"]["admitted"] == 0
    assert eng.bans.offenses.count("127.0.0.2", 0.0) == 1  # counted like a blocked one


@pytest.mark.parametrize("eng", [listed, lambda: Engine(
    ProxySettings(), secret=b"k" * 16, gateways=GatewayTable([("acme", ["127.0.0.2"], [])]))],
    ids=["with_lists", "without_lists"])
def test_a_scheme_sbc_does_not_serve_is_416_before_any_list(eng: Callable[[], Engine]) -> None:
    # RFC 3261 §16.3 step 2 (RFC 4475 §3.3.2): refused as unreadable, whether
    # or not a destination list applies, and never sent to VOS3000.
    e = eng()
    v = e.receive(invite_to(1, "urn:service:sos"), CALLER, 0.0)
    assert v.kind == "reply" and to_vos(v) == []
    assert v.sends[0][2].startswith(b"SIP/2.0 416 Unsupported URI Scheme\r\n")
    assert e.tally.parse_errors["unsupported_uri_scheme"] == 1 and len(e.dialogs) == 0


def test_allowed_list_alone_also_fails_closed() -> None:
    eng = Engine(ProxySettings(), secret=b"k" * 16,
                 gateways=GatewayTable([("acme", ["127.0.0.2"], [])]),
                 policy=CallPolicy({"acme": GatewayPolicy(allowed=PrefixSet(["86"]))}))
    refused(eng, "sip:alice@127.0.0.1", b"Destination Unreadable")
    refused(eng, "sip:127.0.0.1", b"Destination Unreadable", n=2)
    # Allowed on one reading is not enough: 86123 to a next hop that ignores
    # the context, 4486123 to one that reads it.
    refused(eng, "tel:86123;phone-context=+44", b"Destination Not Allowed", n=3)
    for n, uri in enumerate(["tel:+86-138", "sip:++86138@127.0.0.1", "sip:(0086)138@127.0.0.1"]):
        assert to_vos(eng.receive(invite_to(10 + n, uri), CALLER, 0.0)), uri


def test_unreadable_destination_passes_where_no_list_applies() -> None:
    # Only gw "cn" has a list: acme's calls are not read at all, as before.
    eng = Engine(ProxySettings(), secret=b"k" * 16,
                 gateways=GatewayTable([("acme", ["127.0.0.2"], []), ("cn", ["127.0.0.3"], [])]),
                 policy=CallPolicy({"acme": GatewayPolicy(),
                                    "cn": GatewayPolicy(allowed=PrefixSet(["86"]))}))
    v = eng.receive(invite_to(1, "sip:127.0.0.1"), CALLER, 0.0)
    assert v.kind == "forward" and len(to_vos(v)) == 1
    assert to_vos(v)[0].startswith(b"INVITE sip:127.0.0.1 SIP/2.0\r\n")  # unchanged
    assert eng.policy.figures["acme"]["admitted"] == 1


def test_admitted_request_uri_goes_on_unchanged() -> None:
    eng = listed()
    uri = "sip:+(800)-123;isub=1@127.0.0.1;user=phone"
    out = to_vos(eng.receive(invite_to(1, uri), CALLER, 0.0))
    assert len(out) == 1 and out[0].startswith(b"INVITE " + uri.encode() + b" SIP/2.0\r\n")


def test_allowed_prefixes_only() -> None:
    eng = make(allowed=PrefixSet(["86", "1"]))
    assert eng.receive(invite(1, number="0086138"), CALLER, 0.0).kind == "forward"
    v = eng.receive(invite(2, number="44207"), CALLER, 0.0)
    assert v.sends[0][2].startswith(b"SIP/2.0 403 Destination Not Allowed")


def test_normalise() -> None:
    assert normalise("+8613800") == normalise("008613800") == "8613800"
    assert normalise("9999#008613800", ("9999#",)) == "8613800"
    assert PrefixSet(["86", "8613"]).match("861380") == "8613"


def test_rejected_invite_retransmission_gets_the_same_answer_and_is_not_judged_again() -> None:
    eng = make(cps=1.0, burst=1.0)
    assert eng.receive(invite(1), CALLER, 0.0).kind == "forward"
    first = eng.receive(invite(2), CALLER, 0.1)
    assert first.sends[0][2].startswith(b"SIP/2.0 503")
    again = eng.receive(invite(2), CALLER, 5.0)  # tokens are back by now: still the 503
    assert again.sends[0][2] == first.sends[0][2]
    assert eng.policy.figures["acme"]["rejected_gateway_cps"] == 1
