"""The screen's per-source tables under a flood of fresh sources: a first
sight (a first packet, a first offense) costs a fixed array slot and no
object; state is made for a source seen again, is never pushed out by
sources seen once, stays within its cap, and expires. The byte check of
scanner signatures matches its earlier form on every variant of the head."""

from __future__ import annotations

import random
import re

from sbc.core.engine import Engine
from sbc.core.identify.gateways import GatewayTable
from sbc.core.screen.bans import BanTable
from sbc.core.screen.offenses import OffenseTable
from sbc.core.screen.ratelimit import SourceBuckets
from sbc.core.screen.screen import Screen
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PUBLIC_TCP, PUBLIC_UDP, Drop, Source, Verdict


def fresh(n: int, first: int = 0) -> list[str]:
    return [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(first, first + n)]


# ---------------------------------------------------------------- rate buckets


class ReferenceBuckets:
    """The buckets as they were: one (tokens, stamp) per key from its first packet."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.table: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float) -> bool:
        b = self.table.get(key)
        if b is None:
            self.table[key] = (self.burst - 1.0, now)
            return True
        tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
        if tokens < 1.0:
            self.table[key] = (tokens, now)
            return False
        self.table[key] = (tokens - 1.0, now)
        return True


def test_buckets_decide_as_exact_per_source_buckets() -> None:
    rng = random.Random(7)
    for rate, burst in ((20.0, 40.0), (1.0, 1.0), (10.0, 5.0), (0.5, 3.0)):
        new, ref = SourceBuckets(rate, burst, 1000), ReferenceBuckets(rate, burst)
        keys = fresh(20)
        now = 0.0
        for _ in range(5000):
            now += rng.choice((0.0, 0.001, 0.01, 0.1, 0.5, 3.0, 10.0))
            key = rng.choice(keys)
            assert new.take(key, now) == ref.take(key, now), (rate, burst, key, now)


def test_a_first_packet_makes_no_bucket_and_a_second_does() -> None:
    b = SourceBuckets(20.0, 40.0, 1000)
    assert b.take("10.0.0.1", 0.0) and len(b) == 0
    assert b.take("10.0.0.1", 0.5) and list(b) == ["10.0.0.1"]
    assert b.get("10.0.0.1") == (39.0, 0.5)  # 39 left at 0.0, +10 refilled, capped at 40, -1
    # Seen again only after its bucket had refilled (burst / rate = 2 s): a first sight again.
    assert b.take("10.0.0.2", 0.0) and b.take("10.0.0.2", 2.5) and "10.0.0.2" not in b


def test_fresh_sources_never_push_out_a_bucket() -> None:
    b = SourceBuckets(1.0, 2.0, 1000)
    for t in (0.0, 0.0):
        b.take("192.0.2.1", t)
    assert not b.take("192.0.2.1", 0.0)  # over its rate
    for i, host in enumerate(fresh(200_000)):  # a million-source flood, scaled down
        assert b.take(host, i * 1e-6)
    assert list(b) == ["192.0.2.1"]
    assert not b.take("192.0.2.1", 0.3)  # still limited: its state survived the flood


def test_buckets_are_capped_at_their_bound_and_fixed_in_size() -> None:
    b = SourceBuckets(20.0, 40.0, 1000)
    slots = len(b.seen_key)
    hosts = fresh(5000)
    for host in hosts:  # each seen twice: each gets a bucket
        b.take(host, 0.0)
        b.take(host, 0.0)
    assert len(b) == 1000 and list(b)[-1] == hosts[-1]  # the oldest went first
    assert len(b.seen_key) == len(b.seen_at) == slots == 1024  # fixed: the flood changed nothing
    b.expire(1.0, 5000)
    assert len(b) == 1000  # not refilled yet
    b.expire(2.1, 5000)
    assert len(b) == 0


# ---------------------------------------------------------------- offenses


def test_a_first_offense_is_counted_without_a_record() -> None:
    t = OffenseTable(max_entries=100, window=60.0)
    assert t.note("10.0.0.1", "scanner", 1.0) == 1
    assert len(t) == 0 and t.count("10.0.0.1", 2.0) == 1
    rec = t.get("10.0.0.1", 2.0)
    assert rec is not None and (rec.first_seen, rec.last_seen, rec.total, rec.kinds) == (
        1.0, 1.0, 1, {"scanner": 1})
    assert t.note("10.0.0.1", "rate_limit", 5.0) == 2 and len(t) == 1
    rec = t.get("10.0.0.1", 5.0)
    assert rec is not None and (rec.first_seen, rec.last_seen, rec.total, rec.kinds) == (
        1.0, 5.0, 2, {"scanner": 1, "rate_limit": 1})
    # Outside the window a first offense counts for nothing, and so does a record.
    assert t.note("10.0.0.2", "scanner", 0.0) == 1 and t.count("10.0.0.2", 61.0) == 0
    assert t.note("10.0.0.2", "scanner", 61.0) == 1
    assert t.count("10.0.0.1", 66.0) == 0 and t.note("10.0.0.1", "scanner", 66.0) == 1
    t.forget("10.0.0.2")
    assert t.count("10.0.0.2", 61.0) == 0


def test_fresh_offenders_never_push_out_a_record() -> None:
    t = OffenseTable(max_entries=100, window=600.0)
    t.note("192.0.2.1", "scanner", 0.0)
    t.note("192.0.2.1", "scanner", 0.0)
    for host in fresh(100_000):
        assert t.note(host, "scanner", 1.0) == 1
    assert len(t) == 1 and t.count("192.0.2.1", 2.0) == 2


def test_offense_records_are_capped_at_their_bound_and_expire() -> None:
    t = OffenseTable(max_entries=100, window=10.0)
    hosts = fresh(500)
    for i, host in enumerate(hosts):
        t.note(host, "scanner", i * 0.01)
        t.note(host, "scanner", i * 0.01)
    assert len(t) == 100 and t.count(hosts[-1], 5.0) == 2 and t.count(hosts[0], 5.0) == 0
    assert t.expire(14.9) == 90 and len(t) == 10  # those of 4.9 s or later stay


def test_a_fresh_source_flood_then_a_scanner_is_banned_at_the_fifth_offense() -> None:
    bans = BanTable(max_offenses=5, findtime=600.0, max_entries=100)
    screen = Screen(bans, GatewayTable([("gw", ["127.0.0.1"], [])]), signatures=["friendly-scanner"])
    scan = (b"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n"
            b"User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n")
    for i, host in enumerate(fresh(20_000)):  # one scanner packet each: one offense each
        assert screen.check(scan, host, 5060, i * 1e-5) == "scanner"
    assert len(bans) == 0 and len(bans.offenses) == 0 and len(screen.per_ip) == 0
    verdicts = [screen.check(scan, "203.0.113.9", 5060, 1.0) for _ in range(7)]
    assert verdicts == ["scanner"] * 5 + ["banned"] * 2
    assert bans.bans["203.0.113.9"].counts == {"scanner": 5}


# ---------------------------------------------------------------- scanner signatures


def reference_scanner(sig: re.Pattern[bytes], data: bytes) -> bool:
    """The byte check as it was: the first of each header, values sliced out."""
    end = data.find(b"\r\n\r\n")
    low = (data if end < 0 else data[:end]).lower()
    for marker, display_only in ((b"\nuser-agent:", False), (b"\nfrom:", True), (b"\nto:", True),
                                 (b"\nf:", True), (b"\nt:", True)):
        i = low.find(marker)
        if i < 0:
            continue
        i += len(marker)
        j = low.find(b"\r", i)
        value = low[i:j] if j >= 0 else low[i:]
        if display_only:
            value = value.split(b"<", 1)[0]
        if value and sig.search(value) is not None:
            return True
    return False


def test_the_byte_check_matches_its_reference_on_every_variant() -> None:
    screen = Screen(BanTable(), None, signatures=["friendly-scanner", "sipvicious", "iwar"])
    sig = screen.signatures
    assert sig is not None
    rng = random.Random(11)
    names = ["User-Agent", "user-agent", "USER-AGENT", "From", "FROM", "f", "F", "To", "t", "T",
             "Via", "Call-ID", "Contact"]
    values = [" friendly-scanner", " SIPVicious 0.3", " x", "", ' "iwar" <sip:1@x>',
              " <sip:iwar@x>", ' "Bob" <sip:1@x>;tag=1', " sipviciou", " Friendly-Scanner<"]
    for _ in range(4000):
        lines = [f"{rng.choice(names)}:{rng.choice(values)}" for _ in range(rng.randint(0, 6))]
        body = rng.choice(["", "User-Agent: friendly-scanner\r\n", "f: iwar\r\n"])
        head = "\r\n".join(["INVITE sip:1@x SIP/2.0", *lines])
        data = (head + rng.choice(["\r\n\r\n" + body, "\r\n", ""])).encode()
        assert screen._scanner(data) == reference_scanner(sig, data), data


# ---------------------------------------------------------------- the engine's one ban check


def reason(verdict: Verdict) -> str | None:
    return verdict.reason if isinstance(verdict, Drop) else None


def test_receive_and_the_receiver_share_one_screen_and_ban_table() -> None:
    eng = Engine(ProxySettings(), secret=b"k" * 16, gateways=GatewayTable([("gw", ["127.0.0.1"], [])]))
    bans = BanTable()
    eng.bans = bans
    eng.screen = Screen(bans, eng.gateways, closed=True)
    receive = eng.receiver(PUBLIC_UDP)
    data = b"INVITE sip:1@x SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    assert reason(receive(data, "198.51.100.7", 5060, 0.0)) == "unknown_source_screened"
    bans.ban("198.51.100.7", 0.0)
    assert reason(receive(data, "198.51.100.7", 5060, 1.0)) == "banned"
    tcp = eng.receive(data, Source(PUBLIC_TCP, "198.51.100.7", 40000), 1.0)
    assert reason(tcp) == "banned" and tcp.close
    assert eng.tally.banned_drops == 2
    # A reload's new ban table and screen reach the receiver made before it.
    eng.bans = BanTable()
    eng.screen = Screen(eng.bans, eng.gateways, closed=False)
    assert reason(receive(data, "198.51.100.7", 5060, 2.0)) != "banned"
    eng.screen = None
    verdict = eng.receive(data, Source(PUBLIC_UDP, "198.51.100.7", 5060), 3.0)
    assert reason(verdict) not in ("banned", "unknown_source_screened")
