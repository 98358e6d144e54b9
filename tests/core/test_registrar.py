"""The registrar (RFC 3261 §10.3) in memory: REGISTER bytes in, status and
Contact lines out, time passed in by hand."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sbc.core.identify.registrar import Binding, RegisterResult, Registrar, Source
from sbc.core.verdict import PUBLIC_TCP, PUBLIC_UDP
from sbc.sip import SipParseError, name_addr_uri, parse_message, parse_uri

# See tests/sip/test_fuzz.py: keep a failing property's report readable
# under filterwarnings=error.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass

NAT: Source = (PUBLIC_UDP, "203.0.113.7", 40123)
T0 = 1000.0


def register(*lines: str, call_id: str = "reg-1@phone", cseq: int = 1) -> bytes:
    """A REGISTER for alice with the given Contact/Expires lines."""
    return (
        "REGISTER sip:sbc.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK-r1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@sbc.example.com>;tag=f1\r\n"
        "To: <sip:alice@sbc.example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        + "".join(f"{line}\r\n" for line in lines)
        + "Content-Length: 0\r\n\r\n"
    ).encode()


def do(r: Registrar, *lines: str, now: float = T0, call_id: str = "reg-1@phone", cseq: int = 1,
       aor: str = "alice", source: Source = NAT) -> RegisterResult:
    # strict=False: the parser would refuse a malformed Contact itself (a 400
    # from the engine); the registrar must hold on its own all the same.
    msg = parse_message(register(*lines, call_id=call_id, cseq=cseq), strict=False)
    return r.register(msg, aor, "gw1", source, now)


def contacts(r: Registrar, aor: str = "alice", now: float = T0) -> list[tuple[bytes, float]]:
    return [(b.contact, b.expires_at - now) for b in r.lookup(aor, now)]


# --------------------------------------------------------------------------
# One REGISTER into an empty registrar: status, response header lines, and
# what is bound afterwards (most recently registered first).

A = "sip:alice@192.168.1.5:5060"
B = "sip:alice@192.168.1.6:5062;transport=tcp"


@pytest.mark.parametrize(
    ("lines", "status", "headers", "bound"),
    [
        pytest.param([f"Contact: <{A}>"], 200, [f"Contact: <{A}>;expires=3600"],
                     [(A, 3600)], id="default_expires"),
        pytest.param([f"Contact: <{A}>", "Expires: 600"], 200, [f"Contact: <{A}>;expires=600"],
                     [(A, 600)], id="expires_header"),
        pytest.param([f"Contact: <{A}>;expires=120", "Expires: 600"], 200,
                     [f"Contact: <{A}>;expires=120"], [(A, 120)], id="contact_param_beats_header"),
        pytest.param([f"Contact: {A};expires=90"], 200, [f"Contact: <{A}>;expires=90"],
                     [(A, 90)], id="addr_spec_header_param"),
        pytest.param([f'Contact: "Alice" <{A};ob>;q=0.5;expires=300'], 200,
                     [f"Contact: <{A};ob>;expires=300"], [(A + ";ob", 300)],
                     id="display_name_and_uri_params"),
        pytest.param([f"Contact: <{A}>;expires=99999"], 200, [f"Contact: <{A}>;expires=3600"],
                     [(A, 3600)], id="capped_at_max_expires"),
        pytest.param([f"Contact: <{A}>", "Expires: " + "9" * 40], 200,
                     [f"Contact: <{A}>;expires=3600"], [(A, 3600)], id="huge_expires_capped"),
        pytest.param([f"Contact: <{A}>;expires=60"], 200, [f"Contact: <{A}>;expires=60"],
                     [(A, 60)], id="exactly_min_expires"),
        pytest.param([f"Contact: <{A}>;expires=30"], 423, ["Min-Expires: 60"], [],
                     id="too_brief_423"),
        pytest.param([f"Contact: <{A}>", "Expires: 59"], 423, ["Min-Expires: 60"], [],
                     id="too_brief_header_423"),
        pytest.param([f"Contact: <{A}>;expires=600, <{B}>;expires=30"], 423, ["Min-Expires: 60"],
                     [], id="one_too_brief_fails_all"),
        pytest.param([f"Contact: <{A}>;expires=300, <{B}>;expires=400"], 200,
                     [f"Contact: <{B}>;expires=400", f"Contact: <{A}>;expires=300"],
                     [(B, 400), (A, 300)], id="comma_separated"),
        pytest.param([f"Contact: <{A}>;expires=300", f"m: <{B}>"], 200,
                     [f"Contact: <{B}>;expires=3600", f"Contact: <{A}>;expires=300"],
                     [(B, 3600), (A, 300)], id="several_lines_and_compact_form"),
        pytest.param([f"Contact: <{A}>;expires=300, <{A}>;expires=500"], 200,
                     [f"Contact: <{A}>;expires=500"], [(A, 500)], id="repeated_contact_last_wins"),
        pytest.param([f"Contact: <{A}>;expires=0"], 200, [], [], id="remove_unknown_is_noop"),
        pytest.param([], 200, [], [], id="empty_query"),
        # Wildcard (RFC 3261 §10.3 step 6).
        pytest.param(["Contact: *", "Expires: 0"], 200, [], [], id="wildcard_on_empty"),
        pytest.param(["Contact: *"], 400, [], [], id="wildcard_without_expires"),
        pytest.param(["Contact: *", "Expires: 3600"], 400, [], [], id="wildcard_nonzero"),
        pytest.param(["Contact: *, <sip:a@h>", "Expires: 0"], 400, [], [],
                     id="wildcard_with_contact"),
        pytest.param(["Contact: *", f"Contact: <{A}>", "Expires: 0"], 400, [], [],
                     id="wildcard_with_contact_line"),
        # Malformed contacts are a 400, never an exception.
        pytest.param(["Contact: <sip:alice@h"], 400, [], [], id="unterminated_angle"),
        pytest.param(["Contact: <tel:+15551234>"], 400, [], [], id="not_sip_uri"),
        pytest.param(["Contact: <sip:alice@>"], 400, [], [], id="no_host"),
        pytest.param(["Contact: <sip:alice@h:99999>"], 400, [], [], id="bad_port"),
        pytest.param(["Contact: <sip:al ice@h>"], 400, [], [], id="space_in_uri"),
        pytest.param(["Contact: <>"], 400, [], [], id="empty_uri"),
        pytest.param(["Contact: "], 400, [], [], id="empty_value"),
        pytest.param(["Contact: <sip:a@h>,"], 400, [], [], id="trailing_comma"),
        pytest.param(['Contact: "Alice <sip:a@h>'], 400, [], [], id="unterminated_quote"),
        pytest.param(["Contact: *;expires=0"], 400, [], [], id="wildcard_with_param"),
        pytest.param([f"Contact: <{A}>;expires=soon"], 400, [], [], id="bad_expires_param"),
        pytest.param([f"Contact: <{A}>;expires=-1"], 400, [], [], id="negative_expires"),
        pytest.param([f"Contact: <{A}>", "Expires: Thu, 01 Dec 2094"], 400, [], [],
                     id="bad_expires_header"),
        pytest.param([f"Contact: <sip:alice@{'h' * 520}>"], 400, [], [], id="contact_too_long"),
        pytest.param([f"Contact: <{A}>;x={'y' * 500}"], 400, [], [], id="contact_value_too_long"),
    ],
)
def test_single_register(lines: list[str], status: int, headers: list[str],
                         bound: list[tuple[str, int]]) -> None:
    r = Registrar()
    res = do(r, *lines)
    assert res.status == status
    assert list(res.headers) == [h.encode() for h in headers]
    assert contacts(r) == [(c.encode(), float(e)) for c, e in bound]
    assert res.changed == bool(bound)
    assert len(r) == len(bound)
    if status != 200:
        assert res.reason


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["Contact: <tel:1>"], "bad_contact"),
        ([f"Contact: <sip:a@{'h' * 520}>"], "contact_too_long"),
        (["Contact: <sip:a@h>;expires=x"], "bad_contact_expires"),
        (["Contact: <sip:a@h>", "Expires: x"], "bad_expires"),
        (["Contact: <sip:a@h>;expires=1"], "interval_too_brief"),
        (["Contact: *"], "bad_wildcard"),
    ],
)
def test_failure_reasons(lines: list[str], reason: str) -> None:
    assert do(Registrar(), *lines).reason == reason


# --------------------------------------------------------------------------
# Flows over time


def test_refresh_keeps_one_binding_and_moves_expiry() -> None:
    r = Registrar()
    assert do(r, f"Contact: <{A}>", "Expires: 600").changed
    res = do(r, f"Contact: <{A}>", "Expires: 600", now=T0 + 500, cseq=2)
    assert res.status == 200 and res.changed
    assert res.headers == (f"Contact: <{A}>;expires=600".encode(),)
    assert contacts(r, now=T0 + 500) == [(A.encode(), 600.0)]
    assert len(r) == 1


def test_contact_match_ignores_host_case_but_not_port_or_transport() -> None:
    r = Registrar()
    do(r, "Contact: <sip:alice@Phone.example:5060>")
    do(r, "Contact: <sip:alice@phone.EXAMPLE:5060;ob>", cseq=2)
    assert [b.contact for b in r.lookup("alice", T0)] == [b"sip:alice@phone.EXAMPLE:5060;ob"]
    do(r, "Contact: <sip:alice@phone.example>", cseq=3)  # no port: another URI (§19.1.4)
    do(r, "Contact: <sip:alice@phone.example:5060;transport=tcp>", cseq=4)
    assert len(r) == 3


def test_unregister_one_of_two() -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>, <{B}>")
    res = do(r, f"Contact: <{A}>;expires=0", cseq=2)
    assert res.status == 200 and res.changed
    assert res.headers == (f"Contact: <{B}>;expires=3600".encode(),)
    assert contacts(r) == [(B.encode(), 3600.0)]


def test_expires_header_zero_removes_listed_contact() -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>, <{B}>")
    res = do(r, f"Contact: <{B}>", "Expires: 0", cseq=2)
    assert res.status == 200 and res.changed
    assert contacts(r) == [(A.encode(), 3600.0)]


def test_wildcard_removes_all_bindings_of_the_aor_only() -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>, <{B}>")
    do(r, f"Contact: <{A}>", aor="bob", call_id="bob-1")
    res = do(r, "Contact: *", "Expires: 0", cseq=2)
    assert (res.status, res.headers, res.changed) == (200, (), True)
    assert r.lookup("alice", T0) == [] and r.bindings("alice") == []
    assert len(r.lookup("bob", T0)) == 1 and len(r) == 1


def test_bad_wildcard_changes_nothing() -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>")
    res = do(r, "Contact: *", "Expires: 3600", cseq=2)
    assert (res.status, res.changed) == (400, False)
    assert len(r) == 1


def test_query_lists_bindings_and_changes_nothing() -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>", "Expires: 600")
    do(r, f"Contact: <{B}>", "Expires: 900", now=T0 + 100, cseq=2)
    res = do(r, now=T0 + 300, cseq=3)
    assert (res.status, res.changed) == (200, False)
    assert res.headers == (f"Contact: <{B}>;expires=700".encode(),
                           f"Contact: <{A}>;expires=300".encode())
    assert len(r) == 2


def test_ok_lists_every_binding_with_remaining_time() -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>", "Expires: 600")
    res = do(r, f"Contact: <{B}>", "Expires: 3600", now=T0 + 99.6, cseq=2)
    assert res.headers == (f"Contact: <{B}>;expires=3600".encode(),
                           f"Contact: <{A}>;expires=500".encode())
    # Never `expires=0` for a binding that is still alive.
    assert do(r, now=T0 + 599.9, cseq=3).headers[-1] == f"Contact: <{A}>;expires=1".encode()


def test_source_is_kept_for_nat_and_follows_refresh() -> None:
    r = Registrar()
    do(r, "Contact: <sip:alice@192.168.1.5:5060>")
    (b,) = r.lookup("alice", T0)
    assert b.source == NAT and b.contact == b"sip:alice@192.168.1.5:5060"
    assert (b.aor, b.gateway, b.call_id, b.cseq) == ("alice", "gw1", b"reg-1@phone", 1)
    moved: Source = (PUBLIC_TCP, "198.51.100.2", 61000)
    do(r, "Contact: <sip:alice@192.168.1.5:5060>", now=T0 + 10, cseq=2, source=moved)
    (b,) = r.lookup("alice", T0 + 10)
    assert b.source == moved and b.cseq == 2


@pytest.mark.parametrize(
    ("call_id", "cseq", "status"),
    [
        ("reg-1@phone", 1, 500),   # same Call-ID, same CSeq: a retransmission or replay
        ("reg-1@phone", 0, 500),   # same Call-ID, older CSeq: out of order
        ("reg-1@phone", 2, 200),
        ("other@phone", 1, 200),   # another Call-ID: no ordering to enforce
        ("other@phone", 0, 200),
    ],
)
def test_cseq_order_per_call_id(call_id: str, cseq: int, status: int) -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>", "Expires: 600")
    res = do(r, f"Contact: <{A}>;expires=0", now=T0 + 1, call_id=call_id, cseq=cseq)
    assert res.status == status
    assert len(r) == (1 if status == 500 else 0)


def test_stale_cseq_aborts_the_whole_request() -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>", cseq=5)
    res = do(r, "Contact: <sip:new@h>", f"Contact: <{A}>;expires=0", cseq=5)
    assert (res.status, res.reason, res.changed) == (500, "stale_cseq", False)
    assert contacts(r) == [(A.encode(), 3600.0)]
    assert do(r, "Contact: *", "Expires: 0", cseq=4).status == 500
    assert len(r) == 1
    assert do(r, "Contact: *", "Expires: 0", cseq=6).status == 200
    assert len(r) == 0


def test_max_contacts_drops_the_least_recently_registered() -> None:
    r = Registrar(max_contacts=3)
    for i in range(4):
        do(r, f"Contact: <sip:alice@10.0.0.{i}>", now=T0 + i, cseq=i + 1)
    assert [b.contact for b in r.lookup("alice", T0 + 4)] == [
        b"sip:alice@10.0.0.3", b"sip:alice@10.0.0.2", b"sip:alice@10.0.0.1"]
    # A refresh makes a binding the newest again, so it survives the next one.
    do(r, "Contact: <sip:alice@10.0.0.1>", now=T0 + 5, cseq=10)
    do(r, "Contact: <sip:alice@10.0.0.9>", now=T0 + 6, cseq=11)
    assert [b.contact for b in r.lookup("alice", T0 + 6)] == [
        b"sip:alice@10.0.0.9", b"sip:alice@10.0.0.1", b"sip:alice@10.0.0.3"]
    assert len(r) == 3
    # One request with more contacts than the cap keeps its last ones.
    res = do(r, ", ".join(f"<sip:alice@10.1.0.{i}>" for i in range(10)).join(["Contact: ", ""]),
             now=T0 + 7, cseq=12)
    assert res.status == 200 and len(res.headers) == 3
    assert [b.contact for b in r.lookup("alice", T0 + 7)] == [
        b"sip:alice@10.1.0.9", b"sip:alice@10.1.0.8", b"sip:alice@10.1.0.7"]


def test_lookup_skips_expired_and_register_purges_them() -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>", "Expires: 60")
    do(r, f"Contact: <{B}>", "Expires: 600", cseq=2)
    assert [b.contact for b in r.lookup("alice", T0 + 59)] == [B.encode(), A.encode()]
    assert [b.contact for b in r.lookup("alice", T0 + 60)] == [B.encode()]
    assert len(r.bindings("alice")) == 2  # raw until expire() or the next REGISTER
    res = do(r, now=T0 + 61, cseq=3)
    assert res.changed and res.headers == (f"Contact: <{B}>;expires=539".encode(),)
    assert len(r.bindings("alice")) == 1 and len(r) == 1
    assert r.lookup("nobody", T0) == []


def test_expire_drops_expired_and_names_changed_aors() -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>", "Expires: 60")
    do(r, f"Contact: <{B}>", "Expires: 600", cseq=2)
    do(r, f"Contact: <{A}>", "Expires: 120", aor="bob", call_id="b")
    do(r, f"Contact: <{A}>", "Expires: 900", aor="carol", call_id="c")
    assert r.next_deadline() == T0 + 60
    assert r.expire(T0 + 59) == []
    assert r.expire(T0 + 60) == ["alice"]
    assert r.expire(T0 + 200) == ["bob"]
    assert r.bindings("bob") == [] and len(r) == 2
    assert sorted(r.expire(T0 + 1000)) == ["alice", "carol"]
    assert len(r) == 0 and r.aors() == []


def test_expire_ignores_refreshed_bindings_deadlines() -> None:
    r = Registrar()
    do(r, f"Contact: <{A}>", "Expires: 60")
    do(r, f"Contact: <{A}>", "Expires: 600", now=T0 + 30, cseq=2)
    assert r.expire(T0 + 61) == []
    assert len(r.lookup("alice", T0 + 61)) == 1
    assert r.expire(T0 + 630) == ["alice"]


def test_deadline_heap_stays_bounded_under_refreshes() -> None:
    r = Registrar()
    for i in range(1000):
        do(r, f"Contact: <{A}>", now=T0 + i, cseq=i + 1)
        r.expire(T0 + i)
    assert len(r._deadlines) <= 2 * len(r) + 64


def test_max_aors_cap() -> None:
    r = Registrar(max_aors=2)
    assert do(r, f"Contact: <{A}>", "Expires: 60", aor="a1").status == 200
    assert do(r, f"Contact: <{A}>", aor="a2").status == 200
    res = do(r, f"Contact: <{A}>", aor="a3")
    assert (res.status, res.reason, res.changed) == (503, "registrar_full", False)
    assert len(r) == 2
    # Known AORs still register and query; a query for an unknown AOR adds nothing.
    assert do(r, f"Contact: <{B}>", aor="a2", cseq=2).status == 200
    assert do(r, aor="a3").status == 200
    # Room again once a1's binding has expired.
    assert do(r, f"Contact: <{A}>", aor="a3", now=T0 + 61).status == 200
    assert sorted(r.aors()) == ["a2", "a3"]


def test_load_restores_unexpired_and_applies_caps() -> None:
    def bind(aor: str, host: str, expires_at: float) -> Binding:
        return Binding(aor, f"sip:{aor}@{host}".encode(), NAT, expires_at, b"c", 1, "gw1")

    r = Registrar(max_contacts=2, max_aors=2)
    r.load([bind("a", "h1", T0 - 1), bind("a", "h2", T0 + 10), bind("a", "h3", T0 + 20),
            bind("a", "h4", T0 + 30), bind("b", "h1", T0 + 5), bind("c", "h1", T0 + 5),
            bind("b", "bad host", T0 + 5)], T0)
    assert [b.contact for b in r.lookup("a", T0)] == [b"sip:a@h4", b"sip:a@h3"]
    assert [b.contact for b in r.lookup("b", T0)] == [b"sip:b@h1"]
    assert r.lookup("c", T0) == []
    assert len(r) == 3
    assert r.expire(T0 + 5) == ["b"]
    # Loaded bindings are ordinary ones: a REGISTER with the same Call-ID obeys CSeq order.
    res = r.register(parse_message(register("Contact: <sip:a@h4>", call_id="c", cseq=1)), "a",
                     "gw1", NAT, T0)
    assert res.status == 500


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        Registrar(min_expires=0)
    with pytest.raises(ValueError):
        Registrar(min_expires=100, max_expires=50)
    with pytest.raises(ValueError):
        Registrar(max_contacts=0)


_PIECES = st.sampled_from(["sip:", "sips:", "tel:", "alice", "@", "h", "[2001:db8::1]", ":5060",
                           ":0", ":99999", "<", ">", '"', "\\", ",", ";", "=", "expires", "0",
                           "30", "600", "*", " ", "\t", "transport=tcp", "x" * 300, "\x80"])


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(contact=st.lists(_PIECES, max_size=12).map("".join),
       expires=st.none() | st.lists(_PIECES, max_size=3).map("".join))
def test_any_contact_is_a_status_never_an_exception(contact: str, expires: str | None) -> None:
    lines = [f"Contact: {contact}"] + ([] if expires is None else [f"Expires: {expires}"])
    try:
        msg = parse_message(register(*lines))
    except SipParseError:
        assume(False)
        return
    r = Registrar()
    do(r, "Contact: <sip:alice@10.0.0.1>")
    res = r.register(msg, "alice", "gw1", NAT, T0 + 1)
    assert res.status in (200, 400, 423, 500)
    assert len(r) <= 5
    for line in res.headers:
        if line.startswith(b"Contact: "):
            parse_uri(name_addr_uri(line[9:]))
