"""Who gets in, in memory: gateways by IP and IP+port, digest accounts, the
registrar, egress identity, and replies that never reflect. The digest tests
play the attacker: an answer moved to another destination, guessed user
names, a borrowed caller ID, a full replay table."""

from __future__ import annotations

import re

import pytest

from sbc.core.identify.auth import DigestAuth, account_from_password
from sbc.core.engine import Engine
from sbc.core.identify.gateways import GatewayInfo, GatewayTable
from sbc.core.identify.registrar import Registrar
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Source, Verdict
from sbc.sip import parse_message, parse_via
from sbc.sip.digest import expected_response, ha1
from tools.standin import answer

BACKEND = Source(PRIVATE, "127.0.0.1", 5070)
EGRESS_ACME = ("127.0.0.1", 5081)


def request(method: str = "INVITE", src_port: int = 5061, host: str = "127.0.0.2",
            call_id: str = "c1", cseq: int = 1, branch: str = "z9hG4bK-1", extra: str = "",
            via_host: str | None = None, ruri: str = "sip:1000@127.0.0.1:5060",
            to: str = "<sip:1000@127.0.0.1:5060>", from_tag: str = "f1") -> bytes:
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host or host}:{src_port};branch={branch}\r\n"
        f"From: <sip:1001@127.0.0.1>;tag={from_tag}\r\nTo: {to}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:1001@{host}:{src_port}>\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def make_engine(reject_unknown: bool = False, budget: tuple[float, float] = (50, 100),
                accounts: bool = True, from_must_match: bool = False,
                max_nonce_entries: int = 100_000) -> Engine:
    settings = ProxySettings(egresses=(EGRESS_ACME,), reject_unknown=reject_unknown,
                             reply_budget_rate=budget[0], reply_budget_burst=budget[1])
    table = GatewayTable([
        ("acme", ["127.0.0.2"], []),
        ("pbx", [], [("127.0.0.4", 5066)]),
        ("phones", [], []),
    ])
    infos = {"acme": GatewayInfo("acme", 1, "answer"), "pbx": GatewayInfo("pbx", 0, "pass"),
             "phones": GatewayInfo("phones", 0, "answer")}
    account = account_from_password("1001", "sbc", "phones", "secret",
                                    from_must_match=from_must_match)
    auth = DigestAuth([account] if accounts else [], secret=b"s" * 32, realm="sbc",
                      nonce_ttl=300, max_nonce_entries=max_nonce_entries)
    return Engine(settings, secret=b"k" * 16, gateways=table, gateway_info=infos, auth=auth,
                  registrar=Registrar())


def authorize(challenge: bytes, method: str, uri: str, password: str = "secret", nc: int = 1,
              header: str = "Proxy-Authorization", algorithm: str = "MD5",
              username: str = "1001") -> str:
    lines = [ln for ln in challenge.split(b"\r\n") if b"Authenticate:" in ln]
    line = next(ln for ln in lines if f"algorithm={algorithm}".encode() in ln).decode()
    nonce = re.search(r'nonce="([^"]+)"', line).group(1)  # type: ignore[union-attr]
    h1 = ha1(algorithm, username, "sbc", password)
    ncs = f"{nc:08x}"
    resp = expected_response(algorithm, h1, nonce, method, uri, "auth", ncs, "abc")
    return (f'{header}: Digest username="{username}", realm="sbc", nonce="{nonce}", uri="{uri}", '
            f'response="{resp}", algorithm={algorithm}, qop=auth, nc={ncs}, cnonce="abc"\r\n')


def test_ip_gateway_goes_out_of_its_own_egress() -> None:
    eng = make_engine()
    v = eng.receive(request(), Source(PUBLIC_UDP, "127.0.0.2", 5061), 0.0)
    ((ch, to, out),) = [s for s in v.sends if s[0] >= PRIVATE]
    assert ch == PRIVATE + 1 and to == ("127.0.0.1", 5070)
    m = parse_message(out)
    assert parse_via(m.get("via") or b"").port == 5081
    assert m.get_all("record-route")[0] == b"<sip:127.0.0.1:5081;lr;r2=on>"
    # VOS3000 answers on that egress socket; the answer reaches the caller.
    *_, ok = answer(out, "127.0.0.1", 5070)
    v = eng.receive(ok, Source(PRIVATE + 1, "127.0.0.1", 5070), 0.1)
    assert v.sends[0][0] == PUBLIC_UDP and v.sends[0][1] == ("127.0.0.2", 5061)


def test_ip_port_gateway_only_from_that_port() -> None:
    eng = make_engine(accounts=False)
    assert eng.receive(request(host="127.0.0.4", src_port=5066),
                       Source(PUBLIC_UDP, "127.0.0.4", 5066), 0.0).kind == "forward"
    v = eng.receive(request(host="127.0.0.4", src_port=5067, call_id="c2"),
                    Source(PUBLIC_UDP, "127.0.0.4", 5067), 0.0)
    assert v.kind == "drop" and v.reason == "unknown_source"  # type: ignore[union-attr]


def test_unknown_source_silent_by_default_403_when_configured_and_never_to_the_via() -> None:
    v = make_engine(accounts=False).receive(request(host="10.9.9.9", call_id="x", extra="Max-Forwards: 70\r\n"),
                              Source(PUBLIC_UDP, "127.0.0.66", 5060), 0.0)
    assert v.kind == "drop" and v.sends == []
    eng = make_engine(reject_unknown=True, accounts=False)
    forged = request(method="MESSAGE", via_host="127.0.0.9", src_port=7777)
    v = eng.receive(forged, Source(PUBLIC_UDP, "127.0.0.66", 5060), 0.0)
    ((ch, to, data),) = v.sends
    assert to == ("127.0.0.66", 5060) and data.startswith(b"SIP/2.0 403")


def test_reply_budget_caps_replies_to_unauthenticated_sources() -> None:
    eng = make_engine(reject_unknown=True, budget=(10, 20), accounts=False)
    replies = sum(
        bool(eng.receive(request(method="MESSAGE", call_id=f"b{i}", branch=f"z9hG4bK{i}"),
                         Source(PUBLIC_UDP, f"127.{i % 200}.{i // 200}.66", 5060), i * 0.001).sends)
        for i in range(500)
    )
    assert 20 <= replies <= 20 + 10 * 0.5 + 1
    assert eng.tally.dropped["reply_budget"] == 500 - replies


def test_one_source_or_one_network_cannot_spend_the_whole_reply_budget() -> None:
    """500 spoofed requests a second from one address, and from its /24, leave
    the budget for a phone elsewhere: every one of its attempts is answered."""
    eng = make_engine(reject_unknown=True, budget=(50, 100), accounts=False)
    answered = 0
    for i in range(2500):  # five seconds: 500 pps from 127.0.9.x, two attempts a second from the phone
        now = i * 0.002
        flooder = Source(PUBLIC_UDP, f"127.0.9.{i % 2 + 1}", 5060)
        eng.receive(request(method="MESSAGE", call_id=f"f{i}", branch=f"z9hG4bKf{i}"), flooder, now)
        if i % 250 == 0:
            phone = Source(PUBLIC_UDP, "127.0.7.10", 5062)
            v = eng.receive(request(method="MESSAGE", call_id=f"p{i}", branch=f"z9hG4bKp{i}"),
                            phone, now)
            answered += bool(v.sends)
    assert answered == 10
    assert eng.tally.dropped["reply_budget_source"] > 2300  # the flooders' own budgets ran dry


def test_digest_invite_challenge_then_forward_without_credentials() -> None:
    eng = make_engine()
    src = Source(PUBLIC_UDP, "127.0.0.77", 5062)
    v = eng.receive(request(host="127.0.0.77", src_port=5062), src, 0.0)
    ((_, to, chal),) = v.sends
    assert to == ("127.0.0.77", 5062) and chal.startswith(b"SIP/2.0 407")
    auth_lines = [ln for ln in chal.split(b"\r\n") if ln.startswith(b"Proxy-Authenticate:")]
    # Over UDP one line, the first configured algorithm (default order: MD5
    # first); every line over TCP and TLS (tests/core/test_edge.py).
    assert len(auth_lines) == 1 and b"algorithm=MD5" in auth_lines[0]
    assert all(b'qop="auth"' in ln for ln in auth_lines)
    # The ACK for the 407 is absorbed.
    ack = request(method="ACK", host="127.0.0.77", src_port=5062, to="<sip:1000@127.0.0.1:5060>;tag=sbc-0")
    assert eng.receive(ack, src, 0.01).reason == "ack_absorbed"  # type: ignore[union-attr]
    creds = authorize(chal, "INVITE", "sip:1000@127.0.0.1:5060")
    v = eng.receive(request(host="127.0.0.77", src_port=5062, cseq=2, branch="z9hG4bK-2",
                            extra=creds), src, 0.02)
    assert v.kind == "forward"
    (out,) = [s[2] for s in v.sends if s[0] >= PRIVATE]
    assert b"Authorization" not in out and b"Digest" not in out
    assert eng.dialogs.with_call_id(b"c1")[0].gateway == "phones"  # type: ignore[union-attr]


PHONE = Source(PUBLIC_UDP, "127.0.0.77", 5062)
RURI = "sip:1000@127.0.0.1:5060"


def _challenge(eng: Engine, now: float = 0.0, call_id: str = "c1") -> bytes:
    v = eng.receive(request(host="127.0.0.77", src_port=5062, call_id=call_id), PHONE, now)
    ((_, _, chal),) = v.sends
    assert chal.startswith(b"SIP/2.0 407"), chal
    return chal


def _answered(eng: Engine, creds: str, now: float = 0.1, cseq: int = 2, call_id: str = "c1",
              ruri: str = RURI) -> Verdict:
    return eng.receive(request(host="127.0.0.77", src_port=5062, cseq=cseq, call_id=call_id,
                               branch=f"z9hG4bK-{cseq}", extra=creds, ruri=ruri), PHONE, now)


def _status_line_and_kinds(eng: Engine, v: Verdict, now: float) -> tuple[bytes, dict[str, int]]:
    assert [s for s in v.sends if s[0] >= PRIVATE] == [], "something reached VOS3000"
    ((_, to, reply),) = v.sends
    assert to == (PHONE.host, PHONE.port)
    rec = eng.bans.offenses.get(PHONE.host, now)
    return reply.split(b"\r\n", 1)[0], dict(rec.kinds) if rec else {}


def test_digest_wrong_password_403_and_offense() -> None:
    eng = make_engine()
    creds = authorize(_challenge(eng), "INVITE", RURI, password="wrong")
    v = _answered(eng, creds)
    assert v.sends[0][2].startswith(b"SIP/2.0 403")
    assert eng.bans.offenses.count("127.0.0.77", 0.1) == 1


def test_unknown_user_looks_like_a_wrong_password() -> None:
    """A scanner guessing user names learns nothing: an unknown name gets
    what a known name with a wrong password gets (403 and an offense),
    not a silent drop that would tell the two apart."""
    seen = []
    for username, password in (("1001", "wrong"), ("1002", "secret"), ("admin", "admin")):
        eng = make_engine()
        creds = authorize(_challenge(eng), "INVITE", RURI, password=password, username=username)
        v = _answered(eng, creds)
        seen.append(_status_line_and_kinds(eng, v, 0.1))
        assert eng.tally.refusals["digest_failure"] == 1
    assert seen == [(b"SIP/2.0 403 Forbidden", {"digest_failure": 1})] * 3


def test_unknown_user_on_register_looks_like_a_wrong_password() -> None:
    replies = []
    for username, password in (("1001", "wrong"), ("9999", "secret")):
        eng = make_engine()
        reg = request(method="REGISTER", ruri="sip:127.0.0.1:5060", host="127.0.0.77",
                      src_port=5062, to="<sip:1001@127.0.0.1>", call_id="r1")
        chal = eng.receive(reg, PHONE, 0.0).sends[0][2]
        creds = authorize(chal, "REGISTER", "sip:127.0.0.1:5060", password=password,
                          header="Authorization", username=username)
        reg2 = request(method="REGISTER", ruri="sip:127.0.0.1:5060", host="127.0.0.77",
                       src_port=5062, to="<sip:1001@127.0.0.1>", call_id="r1", cseq=2,
                       branch="z9hG4bK-r2", extra=creds)
        replies.append(_status_line_and_kinds(eng, eng.receive(reg2, PHONE, 0.1), 0.1))
    assert replies == [(b"SIP/2.0 403 Forbidden", {"digest_failure": 1})] * 2


def test_answer_moved_to_another_destination_is_400_and_an_offense() -> None:
    """The attacker takes an answer made for one number and puts it on an
    INVITE to another (RFC 7616 §3.4.6): 400, an offense, nothing to VOS3000."""
    eng = make_engine()
    creds = authorize(_challenge(eng), "INVITE", RURI)
    v = _answered(eng, creds, ruri="sip:00882123456@127.0.0.1:5060")
    assert _status_line_and_kinds(eng, v, 0.1) == (b"SIP/2.0 400 Bad Request",
                                                   {"digest_uri_mismatch": 1})
    assert eng.tally.refusals["digest_uri_mismatch"] == 1
    # The answer for the number it was made for still goes through.
    assert _answered(eng, creds, now=0.2, cseq=3).kind == "forward"


def test_answer_for_an_equivalent_request_uri_goes_through() -> None:
    eng = make_engine()
    creds = authorize(_challenge(eng), "INVITE", "sip:1000@127.0.0.1:5060;transport=UDP")
    assert _answered(eng, creds, ruri="SIP:1000@127.0.0.1:5060;transport=udp").kind == "forward"


@pytest.mark.parametrize("username", ["1001@", "1001@127.0.0.1"])
def test_user_at_domain_registers_as_the_account(username: str) -> None:
    # sipsak sends `1001@`, some phones `1001@host`: the account is 1001.
    eng = make_engine()
    reg = request(method="REGISTER", ruri="sip:127.0.0.1:5060", host="127.0.0.77", src_port=5062,
                  to="<sip:1001@127.0.0.1>", call_id="r1")
    chal = eng.receive(reg, PHONE, 0.0).sends[0][2]
    creds = authorize(chal, "REGISTER", "sip:127.0.0.1:5060", header="Authorization",
                      algorithm="MD5", username=username)
    reg2 = request(method="REGISTER", ruri="sip:127.0.0.1:5060", host="127.0.0.77",
                   src_port=5062, to="<sip:1001@127.0.0.1>", call_id="r1", cseq=2,
                   branch="z9hG4bK-r2", extra=creds + "Expires: 600\r\n")
    ((_, _, ok),) = eng.receive(reg2, PHONE, 0.1).sends
    assert ok.startswith(b"SIP/2.0 200"), ok
    assert eng.registrar is not None and len(eng.registrar.bindings("1001")) == 1


@pytest.mark.parametrize("from_must_match", [True, False])
def test_from_must_match_refuses_a_borrowed_caller_id(from_must_match: bool) -> None:
    """A phone's account used to call as somebody else: refused (403, an
    offense) when the account says so; a trunk's account lets it pass."""
    eng = make_engine(from_must_match=from_must_match)
    creds = authorize(_challenge(eng), "INVITE", RURI)
    spoof = "<sip:+4420794960000@127.0.0.1>;tag=f1"
    v = eng.receive(request(host="127.0.0.77", src_port=5062, cseq=2, branch="z9hG4bK-2",
                            extra=creds).replace(b"From: <sip:1001@127.0.0.1>;tag=f1",
                                                 b"From: " + spoof.encode()), PHONE, 0.1)
    if not from_must_match:
        assert v.kind == "forward"
        return
    assert _status_line_and_kinds(eng, v, 0.1) == (b"SIP/2.0 403 Forbidden",
                                                   {"digest_from_mismatch": 1})
    # Its own name goes through.
    creds = authorize(_challenge(eng, 0.2, call_id="c2"), "INVITE", RURI)
    assert _answered(eng, creds, now=0.3, cseq=3, call_id="c2").kind == "forward"


def test_full_replay_table_asks_again_and_never_admits_twice() -> None:
    """The replay table (one entry here) is full: a right answer on a new
    nonce is challenged again with stale=true, and the answer already
    admitted is still refused when replayed."""
    eng = make_engine(max_nonce_entries=1)
    first = authorize(_challenge(eng), "INVITE", RURI)
    assert _answered(eng, first).kind == "forward"
    second = authorize(_challenge(eng, 0.2, call_id="c2"), "INVITE", RURI)
    v = _answered(eng, second, now=0.3, cseq=3, call_id="c2")
    ((_, _, again),) = v.sends
    assert again.startswith(b"SIP/2.0 407")
    assert all(b"stale=true" in ln for ln in again.split(b"\r\n") if b"Authenticate:" in ln)
    assert eng.tally.refusals["nonce_table_full"] == 1
    replay = _answered(eng, first, now=0.4, cseq=4, call_id="c3")
    assert [s for s in replay.sends if s[0] >= PRIVATE] == []
    assert replay.sends[0][2].startswith(b"SIP/2.0 407")


def test_register_then_call_from_backend_reaches_binding() -> None:
    saved: dict[str, int] = {}
    eng = make_engine()
    eng.on_bindings = lambda aor, b: saved.__setitem__(aor, len(b))
    src = Source(PUBLIC_UDP, "127.0.0.77", 40000)  # behind NAT: contact says otherwise
    reg = request(method="REGISTER", ruri="sip:127.0.0.1:5060", host="192.168.1.20", src_port=5060,
                  to="<sip:1001@127.0.0.1>", call_id="r1")
    chal = eng.receive(reg, src, 0.0).sends[0][2]
    assert chal.startswith(b"SIP/2.0 401") and b"WWW-Authenticate:" in chal
    creds = authorize(chal, "REGISTER", "sip:127.0.0.1:5060", header="Authorization")
    reg2 = request(method="REGISTER", ruri="sip:127.0.0.1:5060", host="192.168.1.20",
                   src_port=5060, to="<sip:1001@127.0.0.1>", call_id="r1", cseq=2,
                   branch="z9hG4bK-r2", extra=creds + "Expires: 600\r\n")
    v = eng.receive(reg2, src, 0.1)
    ((_, to, ok),) = v.sends
    assert to == ("127.0.0.77", 40000) and ok.startswith(b"SIP/2.0 200")
    assert b"Contact: <sip:1001@192.168.1.20:5060>;expires=600" in ok
    assert saved == {"1001": 1}
    # The same REGISTER again (same nonce-count): a fresh challenge, never a 200.
    again = eng.receive(reg2, src, 0.2).sends[0][2]
    assert again.startswith(b"SIP/2.0 401")

    invite = (
        "INVITE sip:1001@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKv1\r\n"
        "From: <sip:555@127.0.0.1>;tag=v\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: in1\r\n"
        "CSeq: 1 INVITE\r\nContact: <sip:vos@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    v = eng.receive(invite, BACKEND, 1.0)
    ((ch, to, out),) = v.sends
    assert ch == PUBLIC_UDP and to == ("127.0.0.77", 40000)
    assert out.startswith(b"INVITE sip:1001@192.168.1.20:5060 SIP/2.0")
    m = parse_message(out)
    assert m.get_all("record-route") == [b"<sip:127.0.0.1:5060;lr;r2=on>", b"<sip:127.0.0.1:5080;lr;r2=on>"]
    # The phone answers; the 200 goes back to VOS3000 through the egress of the dialog.
    vias = b"".join(raw + b"\r\n" for name, raw in m.headers if name == "via")
    ok200 = (b"SIP/2.0 200 OK\r\n" + vias + b"From: <sip:555@127.0.0.1>;tag=v\r\n"
             b"To: <sip:1001@127.0.0.1>;tag=p\r\nCall-ID: in1\r\nCSeq: 1 INVITE\r\n"
             b"Content-Length: 0\r\n\r\n")
    v = eng.receive(ok200, src, 1.1)
    assert v.sends[0][0] == PRIVATE and v.sends[0][1] == ("127.0.0.1", 5070)
    # The phone's BYE is admitted by the dialog, though its address is no gateway.
    bye = request(method="BYE", host="127.0.0.77", src_port=40000, call_id="in1", cseq=1,
                  branch="z9hG4bK-bye", to="<sip:555@127.0.0.1>;tag=v", from_tag="p")
    assert eng.receive(bye, src, 5.0).kind == "forward"


def test_unregistered_account_gets_480_from_backend_side() -> None:
    eng = make_engine()
    invite = request(host="127.0.0.1", src_port=5070, ruri="sip:1001@127.0.0.1:5080",
                     to="<sip:1001@127.0.0.1>")
    v = eng.receive(invite, BACKEND, 0.0)
    assert v.sends[0][2].startswith(b"SIP/2.0 480")


@pytest.mark.parametrize("mode,expect", [("answer", "reply"), ("pass", "forward")])
def test_options_from_gateway(mode: str, expect: str) -> None:
    eng = make_engine()
    host, port = ("127.0.0.2", 5061) if mode == "answer" else ("127.0.0.4", 5066)
    v = eng.receive(request(method="OPTIONS", host=host, src_port=port),
                    Source(PUBLIC_UDP, host, port), 0.0)
    assert v.kind == expect


def test_a_fresh_source_flood_cannot_take_a_registered_phones_challenge() -> None:
    """A flood of INVITEs from fresh addresses spends the global reply budget;
    a phone that registered (it answered our challenge at its address) still
    gets the 407 to each new call's first INVITE from a budget of its own, so
    its calls do not wait for retransmissions. Strangers stay capped."""
    eng = make_engine(budget=(10, 20))
    phone = Source(PUBLIC_UDP, "127.0.0.77", 40000)
    reg = request(method="REGISTER", ruri="sip:127.0.0.1:5060", host="127.0.0.77",
                  src_port=40000, to="<sip:1001@127.0.0.1>", call_id="r1")
    chal = eng.receive(reg, phone, 0.0).sends[0][2]
    creds = authorize(chal, "REGISTER", "sip:127.0.0.1:5060", header="Authorization")
    reg2 = request(method="REGISTER", ruri="sip:127.0.0.1:5060", host="127.0.0.77",
                   src_port=40000, to="<sip:1001@127.0.0.1>", call_id="r1", cseq=2,
                   branch="z9hG4bK-r2", extra=creds + "Expires: 600\r\n")
    assert eng.receive(reg2, phone, 0.1).sends[0][2].startswith(b"SIP/2.0 200")
    challenged = stranger_replies = 0
    for i in range(3000):  # three seconds of 1,000 fresh sources a second
        now = 1.0 + i * 0.001
        stranger = Source(PUBLIC_UDP, f"127.{100 + i // 250}.{i % 250}.9", 5060)
        v = eng.receive(request(host=stranger.host, call_id=f"f{i}", branch=f"z9hG4bKf{i}"),
                        stranger, now)
        stranger_replies += bool(v.sends)
        if i % 300 == 0:  # the phone places a call every 0.3 s
            v = eng.receive(request(host="127.0.0.77", src_port=40000, call_id=f"p{i}",
                                    branch=f"z9hG4bKp{i}"), phone, now)
            challenged += any(d.startswith(b"SIP/2.0 407") for _, _, d in v.sends)
    assert challenged == 10
    assert stranger_replies <= 20 + 10 * 3 + 1  # the strangers' budget: burst + rate x time
    assert eng.tally.dropped["reply_budget"] > 2900
