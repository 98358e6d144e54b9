"""Offenses a forged UDP datagram can cause (a scanner signature, a rate-limit
hit, a malformed datagram) never ban a source that proved it is at its
address: a live registration, a confirmed dialog, a request authenticated
with a nonce bound to it, an open TCP/TLS connection. The packets are still
dropped, one by one, and counted; sources without proof are banned as before,
and over TCP the same offenses count for everyone."""

from __future__ import annotations

from sbc.core.screen.bans import BanTable
from sbc.core.engine import Engine
from sbc.core.identify.gateways import GatewayTable
from sbc.core.screen.screen import Screen
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Source
from sbc.sip import parse_message
from tools.standin import answer
from tests.core.test_admission import authorize, make_engine, request

PHONE = "127.0.0.77"
SCANNER = "127.0.0.99"


def scanner_packet(n: int) -> bytes:
    return (f"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:5062;branch=z9hG4bK{n}\r\n"
            f"From: <sip:100@127.0.0.1>;tag={n}\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: s{n}\r\n"
            "CSeq: 1 OPTIONS\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n").encode()


def screen_for(bans: BanTable) -> Screen:
    return Screen(bans, GatewayTable([("gw", ["127.0.0.1"], [])]), signatures=["friendly-scanner"])


def test_forged_scanner_datagrams_do_not_ban_a_proved_source() -> None:
    bans = BanTable(max_offenses=5, proved=lambda host, now: host == PHONE)
    screen = screen_for(bans)
    for n in range(20):
        assert screen.check(scanner_packet(n), PHONE, 5062, n * 0.1) == "scanner"
        assert screen.check(scanner_packet(n), SCANNER, 5062, n * 0.1) in ("scanner", "banned")
    assert not bans.is_banned(PHONE, 2.0)
    assert bans.tally.spared["scanner"] == 20
    assert bans.is_banned(SCANNER, 2.0)


def test_over_a_connection_the_same_offense_counts() -> None:
    bans = BanTable(max_offenses=5, proved=lambda host, now: True)
    screen = screen_for(bans)
    for n in range(5):
        screen.check(scanner_packet(n), PHONE, 40000, n * 0.1, stream=True)
    assert bans.is_banned(PHONE, 1.0)


def test_forged_rate_limit_hits_do_not_ban_a_proved_source() -> None:
    bans = BanTable(max_offenses=5, proved=lambda host, now: host == PHONE)
    screen = Screen(bans, GatewayTable([]), rate_per_ip=(1.0, 1.0))
    for n in range(50):
        screen.check(b"MESSAGE sip:x SIP/2.0\r\n\r\n", PHONE, 5062, 0.0)
        screen.check(b"MESSAGE sip:x SIP/2.0\r\n\r\n", SCANNER, 5062, 0.0)
    assert not bans.is_banned(PHONE, 0.0) and bans.tally.spared["rate_limit"] > 0
    assert bans.is_banned(SCANNER, 0.0)


def _registered_engine() -> tuple[Engine, BanTable]:
    eng = make_engine()
    bans = BanTable(max_offenses=3, proved=eng.proved)
    eng.bans = bans
    src = Source(PUBLIC_UDP, PHONE, 40000)
    reg = request(method="REGISTER", host=PHONE, src_port=40000, ruri="sip:127.0.0.1:5060",
                  to="<sip:1001@127.0.0.1>")
    chal = eng.receive(reg, src, 0.0).sends[0][2]
    creds = authorize(chal, "REGISTER", "sip:127.0.0.1:5060", header="Authorization")
    reg2 = request(method="REGISTER", host=PHONE, src_port=40000, ruri="sip:127.0.0.1:5060",
                   to="<sip:1001@127.0.0.1>", cseq=2, branch="z9hG4bK-2", extra=creds)
    assert eng.receive(reg2, src, 0.1).sends[0][2].startswith(b"SIP/2.0 200")
    return eng, bans


def test_a_registered_phone_is_not_banned_by_forged_malformed_datagrams() -> None:
    eng, bans = _registered_engine()
    for n in range(10):
        assert eng.receive(b"INVITE sip:x SIP/2.0\r\nVia: broken\r\n\r\n",
                           Source(PUBLIC_UDP, PHONE, 5062), 1.0 + n).reason == "malformed"  # type: ignore[union-attr]
        eng.receive(b"INVITE sip:x SIP/2.0\r\nVia: broken\r\n\r\n",
                    Source(PUBLIC_UDP, SCANNER, 5062), 1.0 + n)
    assert not bans.is_banned(PHONE, 20.0) and bans.tally.spared["malformed"] == 10
    assert bans.is_banned(SCANNER, 20.0)


def test_a_confirmed_dialog_is_proof_and_its_end_takes_the_proof_away() -> None:
    eng = Engine(ProxySettings(), secret=b"k" * 16)
    caller = Source(PUBLIC_UDP, "127.0.0.55", 5061)
    inv = (b"INVITE sip:1000@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.55:5061;branch=z9hG4bK1\r\n"
           b"From: <sip:a@127.0.0.55>;tag=a\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: d1\r\n"
           b"CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.55:5061>\r\nContent-Length: 0\r\n\r\n")
    out = [s for s in eng.receive(inv, caller, 0.0).sends if s[0] >= PRIVATE][0][2]
    assert not eng.proved("127.0.0.55", 0.0)  # an INVITE alone proves nothing
    *_, ok = answer(out, "127.0.0.1", 5070)
    eng.receive(ok, Source(PRIVATE, "127.0.0.1", 5070), 0.1)
    assert eng.proved("127.0.0.55", 0.2)
    okmsg = parse_message(ok)
    bye = (b"BYE sip:a@127.0.0.55:5061 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.55:5061;branch=z9hG4bK2\r\n"
           b"From: <sip:a@127.0.0.55>;tag=a\r\nTo: " + (okmsg.get("to") or b"") +
           b"\r\nCall-ID: d1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
    assert eng.receive(bye, caller, 1.0).kind == "forward"
    assert not eng.proved("127.0.0.55", 1.1)


def test_signatures_missed_before_the_parse_are_caught_after_it() -> None:
    """`User-Agent : friendly-scanner` and a folded line pass the byte check;
    the parsed message is checked again: the same offense (scanner), and a
    drop of the identify stage (`scanner_parsed`), not one of the screen."""
    import re

    eng = make_engine()
    eng.ctx.signatures = re.compile(b"friendly-scanner")
    bans = BanTable(max_offenses=2)
    eng.bans = bans
    spaced = request(host=SCANNER, extra="User-Agent : friendly-scanner\r\n")
    folded = request(host=SCANNER, branch="z9hG4bK-2", extra="User-Agent: sip\r\n friendly-scanner\r\n")
    screen = screen_for(BanTable())
    for data in (spaced, folded):
        assert screen.check(data, SCANNER, 5061, 0.0) is None  # the byte check misses it
        assert eng.receive(data, Source(PUBLIC_UDP, SCANNER, 5061), 0.0).reason == "scanner_parsed"  # type: ignore[union-attr]
    assert eng.tally.dropped["scanner_parsed"] == 2 and bans.is_banned(SCANNER, 0.0)
    assert eng.tally.drops() == {"scanner_parsed": 2} and eng.tally.screen_drops() == {}
    assert bans.offenses.get(SCANNER, 0.0) is None  # banned: the record went into the ban
    assert bans.bans[SCANNER].counts == {"scanner": 2}
