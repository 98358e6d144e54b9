"""The screen on raw bytes, and bans: in memory, time passed in."""

from __future__ import annotations

import pytest

from sbc.core.screen.bans import BanTable
from sbc.core.identify.gateways import GatewayTable
from sbc.core.screen.screen import Screen

SIGS = ["friendly-scanner", "sipvicious", "sipcli", "vaxsipuseragent", "sipscan", "pplsip",
        "sundayddr", "iwar", "sip-scan"]


def msg(method: str = "INVITE", ua: str = "Linphone/5", from_name: str = "Alice",
        to_name: str = "", compact: bool = False) -> bytes:
    f, t = ("f", "t") if compact else ("From", "To")
    return (
        f"{method} sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.66:5060;branch=z9hG4bK1\r\n"
        f'{f}: "{from_name}" <sip:100@127.0.0.1>;tag=1\r\n{t}: "{to_name}" <sip:100@127.0.0.1>\r\n'
        f"Call-ID: x\r\nCSeq: 1 {method}\r\nUser-Agent: {ua}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def make(**kw: object) -> tuple[Screen, BanTable]:
    bans = BanTable(max_offenses=kw.pop("max_offenses", 5), bantime=100.0, findtime=60.0,  # type: ignore[arg-type]
                    exempt=lambda h: h == "127.0.0.1")
    table = GatewayTable([("gw", ["127.0.0.1"], [])])
    screen = Screen(bans, table, signatures=SIGS, **kw)  # type: ignore[arg-type]
    return screen, bans


@pytest.mark.parametrize("data", [
    msg(ua="friendly-scanner"),
    msg(ua="SIPVicious 0.2.8"),
    msg(ua="x", from_name="sipvicious"),
    msg(ua="x", to_name="VaxSIPUserAgent", compact=True),
    msg(method="REGISTER", ua="sipcli/v1.8"),
])
def test_scanner_signatures_dropped(data: bytes) -> None:
    screen, _ = make()
    assert screen.check(data, "127.0.0.66", 5060, 0.0) == "scanner"


def test_signature_elsewhere_is_not_a_hit() -> None:
    screen, _ = make()
    # In a URI user part, not a display name or User-Agent: not a scanner signature.
    data = msg().replace(b"sip:100@", b"sip:sipvicious@")
    assert screen.check(data, "127.0.0.66", 5060, 0.0) is None


def test_gateway_user_agent_exempt_unless_configured() -> None:
    screen, _ = make()
    assert screen.check(msg(ua="sipcli"), "127.0.0.1", 5060, 0.0) is None
    screen, _ = make(apply_to_gateways=True)
    assert screen.check(msg(ua="sipcli"), "127.0.0.1", 5060, 0.0) == "scanner"


def test_options_only_from_gateways() -> None:
    screen, _ = make()
    assert screen.check(msg("OPTIONS"), "127.0.0.66", 5060, 0.0) == "untrusted_options"
    assert screen.check(msg("OPTIONS"), "127.0.0.1", 5060, 0.0) is None


def test_rate_per_ip_then_ban() -> None:
    screen, bans = make(rate_per_ip=(10.0, 5.0))
    verdicts = [screen.check(msg(), "127.0.0.66", 5060, 0.0) for _ in range(15)]
    assert verdicts[:5] == [None] * 5
    assert verdicts[5:10] == ["rate_per_ip"] * 5  # five offenses: banned
    assert verdicts[10:] == ["banned"] * 5
    ban = bans.bans["127.0.0.66"]
    assert ban.reason == "rate_limit" and ban.counts == {"rate_limit": 5}
    # Tokens come back with time, but the ban holds until it expires.
    assert screen.check(msg(), "127.0.0.66", 5060, 50.0) == "banned"
    assert [b.host for b in bans.expire(100.1)] == ["127.0.0.66"]
    assert screen.check(msg(), "127.0.0.66", 5060, 100.2) is None


def test_rate_per_net_catches_distributed_sources() -> None:
    screen, _ = make(rate_per_ip=(1000.0, 1000.0), rate_per_net=(1.0, 10.0))
    results = [screen.check(msg(), f"127.0.9.{i}", 5060, 0.0) for i in range(1, 30)]
    assert results.count(None) == 10 and results.count("rate_per_net") == 19


def test_gateways_have_their_own_rate() -> None:
    screen, bans = make(rate_per_gateway=(1.0, 3.0))
    results = [screen.check(msg(), "127.0.0.1", 5060, 0.0) for _ in range(10)]
    assert results.count("rate_per_gateway") == 7
    assert len(bans) == 0  # gateways are never banned automatically


def test_tables_are_capped() -> None:
    screen, _ = make(max_sources=1000)
    for i in range(5000):
        screen.check(msg(), f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 5060, 0.0)
    assert len(screen.per_ip) <= 1000 and len(screen.per_net) <= 1000


def test_repeat_offender_ban_grows_to_a_maximum() -> None:
    bans = BanTable(max_offenses=2, bantime=10.0, increment=3.0, max_bantime=50.0, findtime=5.0)
    durations = []
    t = 0.0
    for _ in range(4):
        bans.offense("198.51.100.1", "scanner", t)
        ban = bans.offense("198.51.100.1", "scanner", t)
        assert ban is not None
        durations.append(ban.expires_at - ban.banned_at)
        t = ban.expires_at + 1
        bans.expire(t)
    assert durations == [10.0, 30.0, 50.0, 50.0]
    assert bans.levels["198.51.100.1"] == 4


def test_offenses_outside_findtime_do_not_add_up() -> None:
    bans = BanTable(max_offenses=3, findtime=10.0)
    for t in (0.0, 11.0, 22.0, 33.0):
        assert bans.offense("198.51.100.2", "digest_failure", t) is None
    assert bans.offense("198.51.100.2", "digest_failure", 34.0) is None
    assert bans.offense("198.51.100.2", "digest_failure", 35.0) is not None


def test_exempt_and_uncounted_never_banned() -> None:
    bans = BanTable(max_offenses=1, exempt=lambda h: h == "192.0.2.1",
                    counted=frozenset({"scanner"}))
    assert bans.offense("192.0.2.1", "scanner", 0.0) is None
    assert bans.offense("192.0.2.2", "malformed", 0.0) is None
    assert bans.offense("192.0.2.2", "scanner", 0.0) is not None


def test_ban_table_capped_and_explains_itself() -> None:
    events: list[str] = []
    bans = BanTable(max_offenses=1, max_entries=100, listener=lambda ev, b: events.append(ev))
    for i in range(300):
        bans.offense(f"10.0.{i >> 8}.{i & 255}", "scanner", float(i))
    assert len(bans) == 100 and len(bans.offenses) <= 100 and len(bans.levels) <= 100
    assert events.count("ban") == 300
    info = bans.bans["10.0.1.43"].explain(299.0)
    assert info["reason"] == "scanner" and info["offenses"] == {"scanner": 1} and info["ban_level"] == 1
    assert bans.unban("10.0.1.43") is not None and events[-1] == "unban"


def test_closed_screen_drops_unknown_sources_before_the_parse() -> None:
    peers = {"127.0.0.77"}
    screen, _ = make(closed=True, has_peer=peers.__contains__)
    for method in ("INVITE", "REGISTER", "BYE"):
        assert screen.check(msg(method), "127.0.0.66", 5060, 0.0) == "unknown_source_screened"
    assert screen.check(b"SIP/2.0 200 OK\r\n\r\n", "127.0.0.66", 5060, 0.0) == "unknown_source_screened"
    # A gateway, and an address that still has a dialog, are parsed as before.
    assert screen.check(msg(), "127.0.0.1", 5060, 0.0) is None
    assert screen.check(msg("BYE"), "127.0.0.77", 5060, 0.0) is None
    # Scanners and untrusted OPTIONS keep their own, more telling reasons.
    assert screen.check(msg(ua="friendly-scanner"), "127.0.0.67", 5060, 0.0) == "scanner"
    assert screen.check(msg("OPTIONS"), "127.0.0.68", 5060, 0.0) == "untrusted_options"


def test_open_screen_leaves_unknown_sources_to_the_engine() -> None:
    screen, _ = make()  # digest accounts exist, or unknown sources get a 403
    assert screen.check(msg(), "127.0.0.66", 5060, 0.0) is None


def test_new_connections_spend_the_source_rate() -> None:
    screen, bans = make(rate_per_ip=(1.0, 2.0))
    assert screen.connection("127.0.0.66", 40000, 0.0) is None
    assert screen.connection("127.0.0.66", 40001, 0.0) is None
    assert screen.connection("127.0.0.66", 40002, 0.0) == "rate_per_ip"
    assert bans.offenses.count("127.0.0.66", 0.0) == 1
    assert screen.connection("127.0.0.66", 40003, 1.0) is None  # a token back after 1 s
    # A gateway has its own, higher rate and never an offense.
    assert all(screen.connection("127.0.0.1", p, 0.0) is None for p in range(100))
