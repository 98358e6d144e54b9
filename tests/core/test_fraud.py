"""The toll-fraud watch in memory, each test playing the fraudster: calls go
through the real engine (gateway identification, limits, the dialog table),
VOS3000 answers with the stand-in's replies, and time is moved by the test."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from sbc.core.engine import Engine
from sbc.core.fraud import (
    UNREADABLE,
    FraudWatch,
    Level,
    Metric,
    Rule,
    RuleSet,
    Threshold,
    Window,
)
from sbc.core.fraud.counters import MinuteRing, SeqTable, Seen
from sbc.core.fraud.explain import alert_view, block_view, view
from sbc.core.identify.gateways import GatewayInfo, GatewayTable
from sbc.core.reasons import Refusal
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Source, Verdict
from sbc.sip import parse_message
from tools.standin import answer

ACME = Source(PUBLIC_UDP, "127.0.0.2", 5061)
BETA = Source(PUBLIC_UDP, "127.0.0.3", 5061)
BACKEND = Source(PRIVATE, "127.0.0.1", 5070)
UTC = ZoneInfo("UTC")
# Monday 2026-12-07 01:00 UTC: engine time 0.0 is this wall-clock moment.
MONDAY_1AM = datetime(2026, 12, 7, 1, 0, tzinfo=timezone.utc).timestamp()


def invite(n: int, number: str = "900123", src: Source = ACME) -> bytes:
    return (
        f"INVITE sip:{number}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src.host}:{src.port};branch=z9hG4bK-{n}\r\n"
        f"From: <sip:a@{src.host}>;tag=f{n}\r\nTo: <sip:{number}@127.0.0.1>\r\n"
        f"Call-ID: call-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{src.host}:{src.port}>\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def rule(name: str = "premium", prefixes: tuple[str, ...] = ("900",), **kw: object) -> Rule:
    thresholds = tuple((Metric(m), Threshold(*t))  # type: ignore[misc]
                       for m, t in dict(kw.pop("thresholds", {})).items())  # type: ignore[call-overload]
    return Rule(name, UTC, thresholds, prefixes=prefixes, **kw)  # type: ignore[arg-type]


def make(*rules: Rule, offset: float = MONDAY_1AM, **watch_kw: int) -> tuple[Engine, FraudWatch]:
    eng = Engine(ProxySettings(), secret=b"k" * 16,
                 gateways=GatewayTable([("acme", ["127.0.0.2"], []), ("beta", ["127.0.0.3"], [])]),
                 gateway_info={"acme": GatewayInfo("acme", 0, "answer"),
                               "beta": GatewayInfo("beta", 0, "answer")})
    watch = FraudWatch(**watch_kw)
    watch.configure(RuleSet(rules, tech={"acme": (), "beta": ()}))
    watch.wall_offset = offset
    eng.ctx.fraud = watch
    return eng, watch


def forwarded(v: Verdict) -> bytes | None:
    """The INVITE that went on to VOS3000, or None."""
    out = [s[2] for s in v.sends if s[0] >= PRIVATE and s[2].startswith(b"INVITE")]
    return out[0] if out else None


def call(eng: Engine, n: int, now: float, number: str = "900123", src: Source = ACME,
         answer_it: bool = False) -> Verdict:
    v = eng.receive(invite(n, number, src), src, now)
    out = forwarded(v)
    if out is not None and answer_it:
        *_, ok = answer(out, "127.0.0.1", 5070)
        eng.receive(ok, BACKEND, now)
    return v


def refused_403(v: Verdict) -> bool:
    return forwarded(v) is None and v.sends[0][2].startswith(b"SIP/2.0 403 Fraud Suspected")


def levels(watch: FraudWatch) -> list[tuple[str, str, float]]:
    out = [(a.metric.value, a.level.value, a.figure) for a in watch.events]
    watch.events.clear()
    return out


# --------------------------------------------------------------------------
# Thresholds


def test_premium_burst_warns_then_blocks_and_the_next_call_never_reaches_vos3000() -> None:
    eng, watch = make(rule(thresholds={"calls_per_minute": (3, 5)}, cool_off=600.0))
    for n in range(1, 3):
        assert forwarded(call(eng, n, n * 1.0)) is not None
    assert levels(watch) == []
    assert forwarded(call(eng, 3, 3.0)) is not None  # the third crosses the warning
    assert levels(watch) == [("calls_per_minute", "warning", 3.0)]
    assert forwarded(call(eng, 4, 4.0)) is not None
    assert forwarded(call(eng, 5, 5.0)) is not None  # the fifth crosses critical: still admitted
    (critical,) = list(watch.events)
    assert (critical.level, critical.figure, critical.threshold) == (Level.CRITICAL, 5.0, 5.0)
    assert [s.call_id for s in critical.calls] == [f"call-{n}" for n in range(1, 6)]
    assert {s.number for s in critical.calls} == {"900123"}
    body = alert_view(critical, watch.wall_offset)
    assert body["blocked"] is True and body["blocked_until"] == "2026-12-07T01:10:05+00:00"
    assert "calls_per_minute 5 >= critical 5" in body["why"] and "600 s" in body["clears"]

    v = call(eng, 6, 6.0)  # the first refused: detection delay of one call
    assert refused_403(v)
    assert eng.tally.refusals[Refusal.FRAUD_SUSPECTED] == 1
    assert not eng.dialogs.get(b"call-6", b"f6")  # no call state, VOS3000 saw nothing
    (block,) = watch.blocks(6.0)
    explained = block_view(block, watch.wall_offset, 6.0)
    assert explained["refused"] == 1 and explained["figure"] == 5.0
    assert explained["clears"].startswith("in 599 s")
    # A retransmission of the refused INVITE gets the same 403 and is not counted again.
    assert refused_403(call(eng, 6, 6.5))
    assert block.refused == 1


def test_the_same_gateway_calling_elsewhere_and_another_gateway_still_pass() -> None:
    eng, watch = make(rule(thresholds={"calls_per_minute": (0, 2)}))
    call(eng, 1, 0.0)
    call(eng, 2, 0.1)
    assert refused_403(call(eng, 3, 0.2))
    assert forwarded(call(eng, 4, 0.3, number="442071838750")) is not None  # not premium
    assert forwarded(call(eng, 5, 0.4, src=BETA)) is not None  # the other gateway
    assert [(b.gateway, b.rule) for b in watch.blocks(0.5)] == [("acme", "premium")]


def test_a_three_hour_call_trips_the_minutes_rule_while_it_runs_and_is_cut() -> None:
    eng, watch = make(rule(thresholds={"minutes_per_day": (30, 60)}, cut_calls=True))
    call(eng, 1, 0.0, answer_it=True)
    assert eng.dialogs.active("acme") == 1
    t = 0.0
    while t < 1799.0:  # one tick a second, as the shell runs it
        t += 1.0
        assert not eng.fraud_tick(t)
    assert levels(watch) == []
    assert eng.fraud_tick(1800.0) == [] and levels(watch) == [("minutes_per_day", "warning", 30.0)]
    for t in range(1801, 3600):
        assert eng.fraud_tick(float(t)) == []
    assert not watch.blocks(3599.0)
    sends = eng.fraud_tick(3600.0)  # 60 minutes: the block, and the call cut there and then
    byes = [s for s in sends if s[2].startswith(b"BYE")]
    assert {s[0] for s in byes} == {PUBLIC_UDP, PRIVATE}  # to the caller and to VOS3000
    assert levels(watch) == [("minutes_per_day", "critical", 60.0)]
    assert eng.dialogs.active("acme") == 0 and watch.figures["cut"] == 1
    assert refused_403(call(eng, 2, 3601.0))  # and no new call to the range


def test_calls_in_progress_count_until_they_end() -> None:
    eng, watch = make(rule(thresholds={"concurrent": (2, 3)}, cool_off=60.0))
    call(eng, 1, 0.0, answer_it=True)
    call(eng, 2, 0.1, answer_it=True)
    assert levels(watch) == [("concurrent", "warning", 2.0)]
    scope = watch.scopes[("acme", "premium")]
    # The third crosses critical while it rings: counted from the forwarded INVITE.
    v = call(eng, 3, 0.2)
    out = forwarded(v)
    assert out is not None and [b.figure for b in watch.blocks(0.2)] == [3.0]
    assert levels(watch) == [("concurrent", "critical", 3.0)]
    # The callee refuses it: it ends, and the figure falls with it (the block stands).
    busy = answer(out, "127.0.0.1", 5070)[0].replace(b"100 Trying", b"486 Busy Here")
    eng.receive(busy.replace(b"To: <sip:900123@127.0.0.1>", b"To: <sip:900123@127.0.0.1>;tag=b"),
                BACKEND, 0.3)
    assert scope.figure(Metric.CONCURRENT, 0.3) == 2.0
    assert refused_403(call(eng, 4, 0.4))
    assert scope.figure(Metric.CONCURRENT, 0.4) == 2.0  # a refused call is no call in progress


def test_sequential_calls_to_one_number() -> None:
    eng, watch = make(rule(prefixes=(), thresholds={"sequential": (3, 4)},
                           sequential_gap=300.0))
    for n in range(1, 11):  # ten different numbers: no run
        call(eng, n, float(n), number=f"44207183{n:04d}")
    assert levels(watch) == []
    for n in range(11, 14):
        call(eng, n, float(n), number="4420000000")
    assert levels(watch) == [("sequential", "warning", 3.0)]
    # A pause longer than the gap starts the run again.
    call(eng, 14, 400.0, number="4420000000")
    assert levels(watch) == []
    for n in range(15, 18):
        call(eng, n, 400.0 + n, number="4420000000")
    assert [x[1] for x in levels(watch)] == ["critical"]
    assert refused_403(call(eng, 18, 420.0, number="4420000000"))
    (block,) = watch.blocks(420.0)
    assert [s.call_id for s in block.calls] == ["call-14", "call-15", "call-16", "call-17"]


def test_calls_per_day_restart_at_local_midnight() -> None:
    shanghai = Rule("daily", ZoneInfo("Asia/Shanghai"),
                    ((Metric.CALLS_PER_DAY, Threshold(0, 3)),), prefixes=("900",), cool_off=60.0)
    # 2026-12-07 15:00 UTC is 23:00 in Shanghai: midnight comes an hour later.
    eng, watch = make(shanghai, offset=datetime(2026, 12, 7, 15, 0, tzinfo=timezone.utc).timestamp())
    for n in range(1, 4):
        call(eng, n, n * 100.0)
    assert refused_403(call(eng, 4, 330.0))
    # The block runs out after its minute, yet the day's count stands: the next call trips again.
    assert forwarded(call(eng, 5, 361.0)) is not None
    assert refused_403(call(eng, 6, 362.0))
    assert [a.level for a in watch.events] == [Level.CRITICAL, Level.CRITICAL]
    # Past local midnight (3600 s on), a new day.
    assert forwarded(call(eng, 7, 3700.0)) is not None
    assert watch.scopes[("acme", "daily")].day == "2026-12-08"
    assert watch.scopes[("acme", "daily")].calls_today == 1


# --------------------------------------------------------------------------
# Windows, cool-off, operators


def test_a_rule_outside_its_hours_is_inactive() -> None:
    office = rule(thresholds={"calls_per_minute": (0, 2)},
                  window=Window(9 * 60, 17 * 60, frozenset(range(5))))  # Mon-Fri 09-17
    eng, watch = make(office)  # Monday 01:00: outside
    for n in range(1, 11):
        assert forwarded(call(eng, n, n * 0.1)) is not None
    assert levels(watch) == [] and watch.scopes == {}
    # Monday 10:00: inside, the same burst is stopped.
    at = 9 * 3600.0
    call(eng, 11, at)
    call(eng, 12, at + 0.1)
    assert refused_403(call(eng, 13, at + 0.2))
    # Saturday 10:00 (5 days on): outside again, a fresh burst is not even counted.
    sat = at + 5 * 86400.0
    watch.clear("*", "*", "test", sat)
    for n in range(14, 20):
        assert forwarded(call(eng, n, sat + n)) is not None


def test_night_window_wraps_midnight() -> None:
    w = Window(22 * 60, 6 * 60)
    assert w.active(datetime(2026, 12, 7, 23, 30)) and w.active(datetime(2026, 12, 7, 5, 59))
    assert not w.active(datetime(2026, 12, 7, 6, 0)) and not w.active(datetime(2026, 12, 7, 12, 0))


def test_cool_off_expires() -> None:
    eng, watch = make(rule(thresholds={"calls_per_minute": (0, 3)}, cool_off=60.0))
    for n in range(1, 4):
        call(eng, n, 0.0)
    assert refused_403(call(eng, 4, 59.9))
    eng.fraud_tick(60.0)  # the tick lifts it as the cool-off ends
    assert watch.blocks(60.0) == []
    assert forwarded(call(eng, 5, 60.5)) is not None


def test_an_operator_clears_a_block_that_would_stand_forever() -> None:
    eng, watch = make(rule(thresholds={"calls_per_day": (0, 2)}, cool_off=0.0))
    call(eng, 1, 0.0)
    call(eng, 2, 1.0)
    assert refused_403(call(eng, 3, 10_000.0))  # cool_off 0: until cleared
    (done,) = watch.clear("acme", "premium", "noc-alice", 10_001.0, note="customer confirmed")
    assert done.lifted and done.by == "noc-alice"
    assert forwarded(call(eng, 4, 10_002.0)) is not None  # counting starts again from the clear
    assert watch.scopes[("acme", "premium")].calls_today == 1
    shown = view(watch, 10_003.0)
    assert shown["cleared"][0]["by"] == "noc-alice" and shown["cleared"][0]["lifted_block"]
    assert shown["blocks"] == []
    assert watch.clear("nobody", "premium", "x", 10_004.0) == []


# --------------------------------------------------------------------------
# Bounds and odd input


def test_tables_hold_at_their_bound() -> None:
    table = SeqTable(cap=100, gap=60.0)
    for n in range(1000):
        table.add(Seen(f"c{n}", f"{n:08d}", float(n) / 100), float(n) / 100)
    assert len(table) == 100 and table.evicted == 900
    assert next(iter(table.runs)) == "00000900"  # the least recently dialled went first
    table.expire(100.0)  # 60 s after the last call
    assert len(table) == 0
    ring = MinuteRing()
    for n in range(10_000):
        ring.add(n * 0.01)
    assert ring.count(99.99) == 6000  # the last 60 whole seconds only
    assert ring.count(1000.0) == 0

    # Through the engine: a gateway dialling 5,000 distinct numbers keeps the cap.
    eng, watch = make(rule(prefixes=(), thresholds={"sequential": (0, 50)}), max_numbers=64,
                      max_live=10)
    for n in range(5000):
        call(eng, n, n * 0.001, number=f"4420{n:07d}")
    scope = watch.scopes[("acme", "premium")]
    assert len(scope.seq) == 64 and scope.seq.evicted == 5000 - 64
    assert len(watch.live) == 10 and watch.figures["untracked"] == 5000 - 10
    assert len(scope.recent) == 20


def test_an_unreadable_number_fails_closed() -> None:
    """A Request-URI that names no number the watch can read (letters, an
    escape that decodes to nothing, `+00`) counts against every rule of its
    gateway that has prefixes, under one key: it cannot slip past a premium
    rule by spelling, and a block of that rule refuses it too. Refusing such
    calls outright would make a watch a second destination list; counting
    them keeps the watch a watch and still closes the gap."""
    eng, watch = make(rule(thresholds={"calls_per_minute": (0, 3), "sequential": (0, 10)}))
    for n, odd in enumerate(("premium-line", "%E2%82%AC", "+00900123"), start=1):
        assert forwarded(call(eng, n, float(n), number=odd)) is not None
    scope = watch.scopes[("acme", "premium")]
    assert [s.number for s in scope.recent] == [UNREADABLE] * 3
    assert watch.figures["unreadable"] == 3 and scope.seq.runs[UNREADABLE].count == 3
    assert refused_403(call(eng, 4, 4.0, number="nine-hundred"))
    assert refused_403(call(eng, 5, 4.1))  # the real premium number too: the same block
    assert forwarded(call(eng, 6, 4.2, number="442071838750")) is not None  # readable, elsewhere


def test_tech_prefixes_and_phone_context_readings() -> None:
    watch = FraudWatch()
    watch.configure(RuleSet([rule(thresholds={"calls_per_minute": (0, 5)})],
                            tech={"acme": ("9999#",)}))
    assert watch.match("acme", b"sip:9999%23900123@h", (), 0.0) is not None
    assert watch.match("acme", b"sip:00900123@h", (), 0.0) is not None
    assert watch.match("acme", b"sip:123;phone-context=+900@h", (), 0.0) is not None
    assert watch.match("acme", b"sip:4420@h", (), 0.0) is None
    assert watch.match("nobody", b"sip:900@h", (), 0.0) is not None  # every gateway


def test_no_rule_for_the_gateway_costs_one_lookup() -> None:
    watch = FraudWatch()
    watch.configure(RuleSet([Rule("r", UTC, ((Metric.CONCURRENT, Threshold(1, 2)),),
                                  gateways=frozenset({"beta"}))]))
    assert watch.match("acme", b"sip:900@h", (), 0.0) is None
    assert watch.scopes == {}


def test_reload_keeps_the_counters_of_unchanged_rules() -> None:
    eng, watch = make(rule(thresholds={"calls_per_minute": (0, 10)}),
                      rule("other", ("881",), thresholds={"calls_per_day": (0, 10)}))
    for n in range(1, 4):
        call(eng, n, float(n))
        call(eng, 100 + n, float(n), number="881555")
    # New thresholds for "premium" (same scope); "other" gets another prefix.
    watch.configure(RuleSet([rule(thresholds={"calls_per_minute": (2, 4)}),
                             rule("other", ("882",), thresholds={"calls_per_day": (0, 10)})]))
    assert watch.scopes[("acme", "premium")].minute.count(4.0) == 3
    assert ("acme", "other") not in watch.scopes
    call(eng, 4, 4.0)  # the fourth, under the new critical of 4
    assert refused_403(call(eng, 5, 4.5))


def test_cut_calls_waits_for_an_early_call_to_be_answered() -> None:
    eng, watch = make(rule(thresholds={"calls_per_minute": (0, 2)}, cut_calls=True))
    call(eng, 1, 0.0, answer_it=True)
    v = call(eng, 2, 0.1)  # ringing when the block comes
    assert watch.blocks(0.1)
    sends = eng.fraud_tick(1.0)
    assert len([s for s in sends if s[2].startswith(b"BYE")]) == 2  # the answered one
    assert watch.to_cut == [(b"call-2", b"f2")]
    out = forwarded(v)
    assert out is not None
    *_, ok = answer(out, "127.0.0.1", 5070)
    eng.receive(ok, BACKEND, 1.5)
    byes = [parse_message(s[2]) for s in eng.fraud_tick(2.0) if s[2].startswith(b"BYE")]
    assert [m.call_id for m in byes] == [b"call-2", b"call-2"]
    assert eng.dialogs.active("acme") == 0
