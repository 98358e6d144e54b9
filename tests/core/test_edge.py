"""The edge refuses what does not belong (issue 14, items 8-11), in memory.
Each test plays the attacker:

8. a customer preloads Route headers on a new call, to steer VOS3000 (or
   whatever VOS3000 hands the call to) somewhere of its choosing;
9. a gateway that must show a TLS client certificate is imitated from its
   address over UDP or TCP, or through a digest account of that gateway;
10. a scanner probes with a CANCEL that matches nothing, to learn that a SIP
    server listens;
11. a forger uses sbc's challenge to reflect and amplify traffic at a victim.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sbc.app import proxy_settings
from sbc.config import parse_config
from sbc.core.identify.auth import DigestAuth, account_from_password
from sbc.core.engine import Engine
from sbc.core.identify.gateways import GatewayInfo, GatewayTable
from sbc.core.identify.registrar import Registrar
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_TCP, PUBLIC_TLS, PUBLIC_UDP, Send, Source, Verdict
from sbc.sip import parse_message, split_values
from tools.standin import answer
from tests.core.test_admission import EGRESS_ACME, authorize, request
from tests.tlscerts import make_certs

VOS = ("127.0.0.1", 5070)
ACME = Source(PUBLIC_UDP, "127.0.0.2", 5061)  # a gateway by address (egress 1)
PBX = Source(PUBLIC_UDP, "127.0.0.4", 5066)  # a gateway by address and port
PHONE = Source(PUBLIC_UDP, "127.0.0.77", 5062)  # a digest account's phone
STRANGER = Source(PUBLIC_UDP, "127.0.0.66", 5060)  # configured nowhere
RURI = "sip:1000@127.0.0.1:5060"


def engine(**settings: object) -> Engine:
    """Gateways acme (by address, own egress), pbx (by address and port) and
    phones (digest account 1001); account 2001 belongs to acme."""
    s = replace(ProxySettings(egresses=(EGRESS_ACME,)), **settings)  # type: ignore[arg-type]
    table = GatewayTable([("acme", ["127.0.0.2"], []), ("pbx", [], [("127.0.0.4", 5066)]),
                          ("phones", [], [])])
    infos = {"acme": GatewayInfo("acme", 1, "answer"), "pbx": GatewayInfo("pbx", 0, "pass"),
             "phones": GatewayInfo("phones", 0, "answer")}
    accounts = [account_from_password("1001", "sbc", "phones", "secret"),
                account_from_password("2001", "sbc", "acme", "secret")]
    auth = DigestAuth(accounts, secret=b"s" * 32, realm="sbc", nonce_ttl=300)
    return Engine(s, secret=b"k" * 16, gateways=table, gateway_info=infos, auth=auth,
                  registrar=Registrar())


def at(src: Source, channel: int) -> Source:
    return Source(channel, src.host, src.port)


def sent(src: Source, method: str = "INVITE", **kw: object) -> bytes:
    return request(method=method, host=src.host, src_port=src.port, **kw)  # type: ignore[arg-type]


def to_vos(v: Verdict) -> list[bytes]:
    return [data for ch, _, data in v.sends if ch >= PRIVATE]


def replies(v: Verdict) -> list[Send]:
    return [s for s in v.sends if s[0] < PRIVATE]


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def routes(data: bytes) -> list[bytes]:
    return [v for raw in parse_message(data).get_all("route") for v in split_values(raw)]


# ==========================================================================
# 8. Preloaded Route headers on initial requests

EVIL_ROUTES = "Route: <sip:evil.example.com;lr>\r\nRoute: <sip:203.0.113.9:5060;lr>, <sip:x@198.51.100.1;lr>\r\n"


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE"])
def test_a_customers_preloaded_route_never_reaches_vos3000(method: str) -> None:
    """Both ways a new request goes on (INVITE statefully, MESSAGE
    statelessly): every Route the customer preloaded is removed, counted."""
    eng = engine()
    v = eng.receive(sent(ACME, method, extra=EVIL_ROUTES), ACME, 0.0)
    (out,) = to_vos(v)
    assert routes(out) == [] and b"evil.example.com" not in out and b"203.0.113.9" not in out
    assert parse_message(out).uri == b"sip:1000@127.0.0.1:5060"  # the request itself unchanged
    assert eng.tally.refusals["preloaded_route"] == 1


def test_a_digest_callers_preloaded_route_is_removed_too() -> None:
    eng = engine()
    chal = eng.receive(sent(PHONE), PHONE, 0.0).sends[0][2]
    creds = authorize(chal, "INVITE", RURI)
    v = eng.receive(sent(PHONE, cseq=2, branch="z9hG4bK-2", extra=creds + EVIL_ROUTES), PHONE, 0.1)
    (out,) = to_vos(v)
    assert routes(out) == []


@pytest.mark.parametrize("own", ["<sip:127.0.0.1:5060;lr>", "<sip:127.0.0.1:5060;lr;r2=on>",
                                 "<sip:127.0.0.1:5060;transport=tcp;lr;r2=on>"])
def test_a_route_naming_sbc_is_popped_as_before_and_what_follows_it_removed(own: str) -> None:
    eng = engine()
    v = eng.receive(sent(ACME, extra=f"Route: {own}\r\n"), ACME, 0.0)
    (out,) = to_vos(v)
    assert routes(out) == [] and eng.tally.refusals["preloaded_route"] == 0  # ours: not counted
    v = eng.receive(sent(ACME, call_id="c2", extra=f"Route: {own}, <sip:evil.example.com;lr>\r\n"),
                    ACME, 0.1)
    (out,) = to_vos(v)
    assert routes(out) == [] and eng.tally.refusals["preloaded_route"] == 1


def test_the_cancel_of_a_call_with_a_preloaded_route_carries_none() -> None:
    """RFC 3261 §9.1: a CANCEL carries the INVITE's Route; the INVITE that
    reached VOS3000 had none, so neither does the CANCEL sbc sends."""
    eng = engine()
    invite = sent(ACME, extra=EVIL_ROUTES)
    (out,) = to_vos(eng.receive(invite, ACME, 0.0))
    _trying, ringing, _ok = answer(out, *VOS)
    eng.receive(ringing, Source(PRIVATE + 1, *VOS), 0.1)
    cancel = invite.replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(b"CSeq: 1 INVITE",
                                                                       b"CSeq: 1 CANCEL")
    (fwd,) = to_vos(eng.receive(cancel, ACME, 0.2))
    assert fwd.startswith(b"CANCEL ") and routes(fwd) == []


def test_in_dialog_requests_keep_their_route_set() -> None:
    """A request with a To-tag is routed by the dialog's route set, as
    before: sbc's own entries popped (§16.4), the rest untouched."""
    eng = engine()
    (out,) = to_vos(eng.receive(sent(ACME), ACME, 0.0))
    *_, ok = answer(out, *VOS)
    eng.receive(ok, Source(PRIVATE + 1, *VOS), 0.1)
    to = (parse_message(ok).get("to") or b"").decode()
    rr = "<sip:127.0.0.1:5060;lr;r2=on>, <sip:127.0.0.1:5081;lr;r2=on>, <sip:next.vos.example;lr>"
    bye = sent(ACME, "BYE", cseq=2, branch="z9hG4bK-bye", to=to, extra=f"Route: {rr}\r\n")
    (fwd,) = to_vos(eng.receive(bye, ACME, 1.0))
    assert routes(fwd) == [b"<sip:next.vos.example;lr>"]
    assert eng.tally.refusals["preloaded_route"] == 0


# ==========================================================================
# 9. A gateway that requires a client certificate: over TLS only

CERT = {"cert_gateways": frozenset({"acme"})}


@pytest.mark.parametrize("channel", [PUBLIC_UDP, PUBLIC_TCP])
def test_a_certificate_gateways_address_over_udp_or_tcp_is_refused(channel: int) -> None:
    eng = engine(**CERT)
    src = at(ACME, channel)
    v = eng.receive(sent(src), src, 0.0)
    assert to_vos(v) == [] and len(eng.dialogs) == 0
    ((ch, to, data),) = v.sends
    assert (ch, to) == (channel, (src.host, src.port))
    assert data.startswith(b"SIP/2.0 403 TLS Client Certificate Required\r\n")
    assert eng.tally.refusals["client_cert_required"] == 1
    # Nor does anything else from that address get anywhere over this transport.
    for method in ("REGISTER", "OPTIONS", "MESSAGE"):
        assert to_vos(eng.receive(sent(src, method, call_id=method), src, 0.1)) == []
    ack = eng.receive(sent(src, "ACK", call_id="a", to="<sip:1000@127.0.0.1>;tag=x"), src, 0.2)
    assert ack.kind == "drop" and ack.reason == "client_cert_required" and ack.sends == []  # type: ignore[union-attr]
    resp = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKv\r\nFrom: <sip:a@x>;tag=1\r\n"
            b"To: <sip:b@x>;tag=2\r\nCall-ID: r\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    dropped = eng.receive(resp, src, 0.3)
    assert dropped.kind == "drop" and dropped.reason == "client_cert_required"  # type: ignore[union-attr]


def test_a_certificate_gateway_over_tls_is_admitted_and_others_are_untouched() -> None:
    """Over TLS the transport has verified the certificate at the handshake
    (sbc.io.tls): the call goes on. Gateways without the requirement
    are admitted over UDP as before."""
    eng = engine(**CERT)
    tls = at(ACME, PUBLIC_TLS)
    v = eng.receive(sent(tls), tls, 0.0)
    (out,) = to_vos(v)
    assert out.startswith(b"INVITE ") and eng.dialogs.active("acme") == 1
    assert to_vos(eng.receive(sent(PBX, call_id="pbx"), PBX, 0.0)) != []


def test_forged_udp_from_a_certificate_gateway_gets_no_more_than_the_reply_budget() -> None:
    """A forger sending as the gateway's address makes sbc answer that
    address: at most the reply budget of a source that proved nothing."""
    eng = engine(**CERT)
    answered = sum(bool(eng.receive(sent(ACME, call_id=f"f{i}", branch=f"z9hG4bK{i}"), ACME,
                                    0.0).sends) for i in range(100))
    assert answered == 20  # the per-source burst (10/s, burst 20)
    assert eng.tally.dropped["reply_budget_source"] == 80


@pytest.mark.parametrize("channel", [PUBLIC_UDP, PUBLIC_TLS])
def test_a_certificate_gateways_digest_account_is_refused(channel: int) -> None:
    """Account 2001 belongs to acme, which requires a certificate; its right
    password from another address (where no certificate was asked for, even
    over TLS) admits nothing."""
    eng = engine(**CERT)
    src = at(PHONE, channel)
    chal = eng.receive(sent(src), src, 0.0).sends[0][2]
    creds = authorize(chal, "INVITE", RURI, username="2001")
    v = eng.receive(sent(src, cseq=2, branch="z9hG4bK-2", extra=creds), src, 0.1)
    assert to_vos(v) == []
    ((_, _, data),) = v.sends
    assert data.startswith(b"SIP/2.0 403 TLS Client Certificate Required")
    assert eng.tally.refusals["client_cert_required"] == 1
    # Account 1001 (gateway phones) is admitted as before.
    chal = eng.receive(sent(src, call_id="c2"), src, 0.2).sends[0][2]
    creds = authorize(chal, "INVITE", RURI)
    v = eng.receive(sent(src, call_id="c2", cseq=2, branch="z9hG4bK-3", extra=creds), src, 0.3)
    assert len(to_vos(v)) == 1


def test_the_core_learns_the_requirement_from_settings(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    cfg = parse_config(
        "public:\n  transports: [udp, tcp, tls]\n"
        f"tls:\n  cert_file: {certs.server.cert}\n  key_file: {certs.server.key}\n"
        f"  ca_file: {certs.ca}\n"
        "gateways:\n"
        "  - {name: acme, ip: [192.0.2.1], tls: {require_client_cert: true}}\n"
        "  - {name: open, ip: [192.0.2.2]}\n")
    assert proxy_settings(cfg).cert_gateways == frozenset({"acme"})
    assert proxy_settings(parse_config("")).cert_gateways == frozenset()


# ==========================================================================
# 10. A CANCEL that matches no transaction

def cancel(src: Source, call_id: str = "nothing", branch: str = "z9hG4bK-none") -> bytes:
    return sent(src, "CANCEL", call_id=call_id, branch=branch)


def test_unknown_cancel_from_a_stranger_is_silence() -> None:
    """A scanner's cheapest probe: no 481 tells it a SIP server is here."""
    eng = engine()
    v = eng.receive(cancel(STRANGER), STRANGER, 0.0)
    assert v.kind == "drop" and v.reason == "unknown_source" and v.sends == []  # type: ignore[union-attr]


def test_a_cancel_borrowing_a_live_calls_branch_from_elsewhere_is_silence() -> None:
    eng = engine()
    eng.receive(sent(ACME, branch="z9hG4bK-live"), ACME, 0.0)
    spoof = Source(PUBLIC_UDP, STRANGER.host, ACME.port)
    forged = sent(ACME, "CANCEL", branch="z9hG4bK-live")  # the caller's Via, from elsewhere
    v = eng.receive(forged, spoof, 0.1)
    assert v.kind == "drop" and v.sends == [] and eng.dialogs.active("acme") == 1


def test_unknown_cancel_from_a_gateway_is_still_481() -> None:
    eng = engine()
    v = eng.receive(cancel(ACME), ACME, 0.0)
    ((_, to, data),) = v.sends
    assert to == (ACME.host, ACME.port) and status(data) == 481


def test_unknown_cancel_with_reject_configured_is_481() -> None:
    eng = engine(reject_unknown=True)
    ((_, _, data),) = eng.receive(cancel(STRANGER), STRANGER, 0.0).sends
    assert status(data) == 481


def test_unknown_cancel_from_a_registered_phone_is_481() -> None:
    """A source that proved it is at its address is no scanner."""
    eng = engine()
    reg = sent(PHONE, "REGISTER", ruri="sip:127.0.0.1:5060", to="<sip:1001@127.0.0.1>",
               call_id="r1")
    chal = eng.receive(reg, PHONE, 0.0).sends[0][2]
    creds = authorize(chal, "REGISTER", "sip:127.0.0.1:5060", header="Authorization")
    reg2 = sent(PHONE, "REGISTER", ruri="sip:127.0.0.1:5060", to="<sip:1001@127.0.0.1>",
                call_id="r1", cseq=2, branch="z9hG4bK-r2", extra=creds)
    assert status(eng.receive(reg2, PHONE, 0.1).sends[0][2]) == 200
    ((_, _, data),) = eng.receive(cancel(PHONE), PHONE, 0.2).sends
    assert status(data) == 481


# ==========================================================================
# 11. Amplification: a challenge to a stranger, measured

# What a challenge to a UDP source adds to the request it answers, at most,
# with the default realm: the README states these, and the factor below.
OVERHEAD_V4 = 200
OVERHEAD_V6 = 224
MAX_FACTOR = 3.6  # the smallest request the parser accepts, from an IPv4 address
MIN_INVITE = b"INVITE sip:b SIP/2.0\r\nv:SIP/2.0/UDP a\r\nf:sip:a\r\nt:sip:a\r\ni:1\r\nCSeq:1 INVITE\r\n\r\n"
MIN_REGISTER = (b"REGISTER sip:b SIP/2.0\r\nv:SIP/2.0/UDP a\r\nf:sip:a\r\nt:sip:a\r\ni:1\r\n"
                b"CSeq:1 REGISTER\r\n\r\n")
# What sipsak 0.9.8 sends for `sipsak -U -s sip:1001@127.0.0.1:5060 -a PASSWORD`.
SIPSAK_REGISTER = (
    b"REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:41688;branch=z9hG4bK.681f3aff;rport;alias\r\n"
    b"From: sip:1001@127.0.0.1:5060;tag=31ebdd06\r\nTo: sip:1001@127.0.0.1:5060\r\n"
    b"Call-ID: 837541126@127.0.0.1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n"
    b"Max-Forwards: 70\r\nUser-Agent: sipsak 0.9.8.1\r\nExpires: 120\r\n"
    b"Contact: sip:1001@127.0.0.1:41688\r\n\r\n")
# The longest spellings of a source address and port.
WIDEST_V4 = Source(PUBLIC_UDP, "255.255.255.254", 65535)
WIDEST_V6 = Source(PUBLIC_UDP, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535)


def challenge_lines(data: bytes) -> list[bytes]:
    return [ln for ln in data.split(b"\r\n") if b"-Authenticate:" in ln]


@pytest.mark.parametrize("req", [MIN_INVITE, MIN_REGISTER, SIPSAK_REGISTER])
@pytest.mark.parametrize("src,overhead", [(WIDEST_V4, OVERHEAD_V4), (WIDEST_V6, OVERHEAD_V6)])
def test_a_challenge_over_udp_is_one_line_and_within_the_documented_bound(
    req: bytes, src: Source, overhead: int
) -> None:
    eng = engine()
    ((_, to, reply),) = eng.receive(req, src, 0.0).sends
    assert to == (src.host, src.port) and status(reply) in (401, 407)
    (line,) = challenge_lines(reply)
    assert b"algorithm=MD5" in line  # the first configured algorithm
    # RFC 3261 §8.2.6.2 and the challenge: nothing else.
    names = [ln.split(b":", 1)[0].lower() for ln in reply.split(b"\r\n")[1:] if ln]
    assert set(names) <= {b"via", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq",
                          b"www-authenticate", b"proxy-authenticate", b"content-length"}
    assert len(reply) - len(req) <= overhead, (len(req), len(reply))
    if src is WIDEST_V4:
        assert len(reply) <= MAX_FACTOR * len(req), (len(req), len(reply))
    if len(req) >= overhead:
        assert len(reply) <= 2 * len(req), (len(req), len(reply))


def test_the_factor_on_a_minimal_request() -> None:
    """The measured figures the README quotes: the smallest request the
    parser accepts (79 bytes) is answered with 278 bytes (IPv4), 3.5 times
    its size; sipsak's REGISTER (344 bytes) with 380 bytes, 1.1 times."""
    eng = engine()
    v = eng.receive(MIN_INVITE, WIDEST_V4, 0.0)
    assert v.sends, ("the parser no longer accepts this request: measure the smallest one "
                     "it does, and update README 'Reflection and amplification'")
    tiny = v.sends[0][2]
    assert (len(MIN_INVITE), len(tiny)) == (79, 278)
    sipsak = eng.receive(SIPSAK_REGISTER, Source(PUBLIC_UDP, "127.0.0.1", 41688), 0.0).sends[0][2]
    assert (len(SIPSAK_REGISTER), len(sipsak)) == (344, 380)


@pytest.mark.parametrize("channel", [PUBLIC_TCP, PUBLIC_TLS])
def test_over_a_connection_every_configured_algorithm_is_offered(channel: int) -> None:
    """A TCP or TLS peer is at its address (the handshake proved it): no
    reflection, so the challenge offers every algorithm, and SHA-256 works."""
    eng = engine()
    src = at(PHONE, channel)
    chal = eng.receive(sent(src), src, 0.0).sends[0][2]
    assert [b"algorithm=MD5" in ln for ln in challenge_lines(chal)] == [True, False]
    assert b"algorithm=SHA-256" in challenge_lines(chal)[1]
    creds = authorize(chal, "INVITE", RURI, algorithm="SHA-256")
    assert len(to_vos(eng.receive(sent(src, cseq=2, branch="z9hG4bK-2", extra=creds), src,
                                  0.1))) == 1


@pytest.mark.parametrize("method", ["ACK", "BYE", "X", "invite"])
def test_a_stranger_gets_no_challenge_for_what_sbc_would_never_pass_on(method: str) -> None:
    """An ACK is never answered (RFC 3261 §17); a method sbc refuses out of
    dialog (405, 481) is not worth an answer to a stranger either."""
    eng = engine()
    v = eng.receive(sent(STRANGER, method), STRANGER, 0.0)
    assert v.kind == "drop" and v.sends == []


def test_a_gateways_stray_ack_is_not_answered() -> None:
    v = engine().receive(sent(ACME, "ACK"), ACME, 0.0)
    assert v.kind == "drop" and v.reason == "no_transaction" and v.sends == []  # type: ignore[union-attr]
