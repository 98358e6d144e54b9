"""The health table of VOS3000 addresses: transitions as data, time passed in."""

from __future__ import annotations

import pytest

from sbc.core.proxy.health import Health, HealthTable

A, B, C = ("10.0.0.1", 5060), ("10.0.0.2", 5060), ("10.0.0.3", 5070)


def table(**kw: object) -> HealthTable:
    return HealthTable([A, B, C], **{"down_after": 3, "up_after": 2, **kw})  # type: ignore[arg-type]


def states(h: HealthTable) -> list[str]:
    return [t.state.value for t in h.targets]


def test_starts_unknown_and_usable_in_priority_order() -> None:
    h = table()
    assert states(h) == ["unknown"] * 3
    assert h.order == (0, 1, 2) and h.first == A
    assert h.hosts == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    assert h.by_addr(B) is h.targets[1] and h.by_addr(("10.0.0.2", 5999)) is None
    assert h.by_host("10.0.0.3") is h.targets[2] and h.by_host("10.0.0.9") is None
    with pytest.raises(ValueError):
        HealthTable([])


# (events, expected state): "ok"/"fail" applied in order to one target, down_after=3, up_after=2.
TRANSITIONS = [
    ([], Health.UNKNOWN),
    (["ok"], Health.UP),  # the first answer of an unknown target
    (["fail", "fail"], Health.UNKNOWN),  # fewer than down_after
    (["fail"] * 3, Health.DOWN),
    (["ok", "fail", "fail", "ok", "fail", "fail"], Health.UP),  # not in a row
    (["fail"] * 3 + ["ok"], Health.DOWN),  # fewer than up_after
    (["fail"] * 3 + ["ok", "fail", "ok"], Health.DOWN),  # not in a row
    (["fail"] * 3 + ["ok", "ok"], Health.UP),
    (["ok"] + ["fail"] * 3, Health.DOWN),
]


@pytest.mark.parametrize(("events", "expected"), TRANSITIONS)
def test_transitions(events: list[str], expected: Health) -> None:
    h = table()
    for i, ev in enumerate(events):
        if ev == "ok":
            h.success(0, float(i))
        else:
            h.failure(0, float(i), "test")
    assert h.targets[0].state is expected


def test_changes_are_reported_once_with_old_and_new_state() -> None:
    h = table(down_after=1, up_after=1)
    assert h.success(0, 0.0) is True
    assert h.success(0, 1.0) is False
    assert h.failure(0, 2.0, "gone") is True
    assert [(t.index, old.value, new.value) for t, old, new in h.changes] == [
        (0, "unknown", "up"), (0, "up", "down")]
    assert h.targets[0].since == 2.0


def test_order_skips_down_targets_and_falls_back_to_all() -> None:
    h = table(down_after=1)
    h.failure(0, 0.0, "x")
    assert h.order == (1, 2) and h.first == B
    h.failure(2, 0.0, "x")
    assert h.order == (1,)
    h.failure(1, 0.0, "x")
    # Every target down: try them all in priority order rather than refuse every call.
    assert h.order == (0, 1, 2) and h.first == A


def test_ping_answers_and_timeouts() -> None:
    h = table(down_after=2, up_after=1, timeout=2.0)
    h.ping_sent(0, 1, 0.0)
    h.ping_answered(0, 1, 404, 0.05)  # any answer but 503 proves it is alive
    t = h.targets[0]
    assert t.state is Health.UP and t.last_rtt == pytest.approx(0.05) and t.last_status == 404
    h.ping_answered(0, 1, 200, 0.06)  # a duplicate changes nothing
    assert t.oks == 1
    h.ping_sent(0, 2, 5.0)
    h.ping_timed_out(0, 2, 7.0)
    assert t.fails == 1 and t.reason == "no answer to OPTIONS within 2 s"
    h.ping_answered(0, 2, 200, 7.5)  # late: the timeout already counted
    assert t.fails == 1 and t.state is Health.UP
    h.ping_sent(0, 3, 10.0)
    h.ping_answered(0, 3, 503, 10.01)  # overloaded or in maintenance: a failure
    assert t.state is Health.DOWN and t.reason == "OPTIONS answered 503"
    h.ping_timed_out(0, 3, 12.0)  # answered already: nothing more
    assert t.fails == 2
    h.ping_answered(7, 1, 200, 12.0)  # an index that is not a target
    h.ping_answered(0, 0, 200, 12.0)


def test_a_ping_still_unanswered_when_the_next_goes_out_is_missed() -> None:
    h = table(down_after=2, timeout=5.0, interval=5.0)
    h.ping_sent(1, 1, 0.0)
    h.ping_sent(1, 2, 5.0)
    h.ping_timed_out(1, 1, 5.0)  # its timer fires after: already counted
    assert h.targets[1].fails == 1
    h.ping_sent(1, 3, 10.0)
    assert h.targets[1].state is Health.DOWN


def test_readiness() -> None:
    h = table(down_after=1, up_after=1)
    ok, info = h.state(0.0)
    assert not ok and info["reason"] == "no OPTIONS answered yet"
    assert [r["state"] for r in info["targets"]] == ["unknown"] * 3
    h.ping_sent(0, 1, 0.0)
    h.ping_timed_out(0, 1, 2.0)
    h.ping_sent(1, 2, 0.0)
    h.ping_answered(1, 2, 200, 0.01)
    ok, info = h.state(3.0)
    assert ok and info["down"] == ["10.0.0.1:5060"] and "reason" not in info
    rows = {r["address"]: r for r in info["targets"]}
    assert rows["10.0.0.1:5060"]["state"] == "down"
    assert rows["10.0.0.1:5060"]["reason"] == "no answer to OPTIONS within 2 s"
    assert rows["10.0.0.2:5060"] == {"address": "10.0.0.2:5060", "state": "up", "priority": 1,
                                     "since_s": 3.0, "last_rtt_ms": 10.0, "last_status": 200,
                                     "last_answer_ago_s": 3.0}
    h.failure(1, 4.0, "INVITE unanswered for 2 s")
    ok, info = h.state(4.0)
    assert not ok and info["reason"].startswith("no VOS3000 target is up: 10.0.0.1:5060 down (")
    assert info["down"] == ["10.0.0.1:5060", "10.0.0.2:5060"]


def test_ipv6_hostport() -> None:
    h = HealthTable([("2001:db8::1", 5060)])
    assert h.targets[0].hostport == "[2001:db8::1]:5060"
