"""The core's timers: a cancel removes its entry at once (nothing waits for a
rebuild that walks every timer), the bucket keys stay bounded, and the
order of firing is the heap's (deadline, then push order), checked against
a plain sorted model over random pushes, cancels and pops."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.core.proxy.timers import NEAR, RES, TimerHeap, TimerKind


def test_a_cancel_leaves_nothing_behind_even_hours_ahead() -> None:
    """Ended calls cancel their maximum age and duration limit, hours away:
    each entry goes at once, not at the next rebuild (the old heap kept up
    to half its entries cancelled, and rebuilt them all in one go)."""
    t = TimerHeap()
    t.pop_due(1000.0)
    live = [t.push(1000.0 + 30 + i % 32, TimerKind.DIALOG_EXPIRE, object()) for i in range(20_000)]
    for i in range(50_000):  # calls that come and go
        far = t.push(1000.0 + 7200 + i * 0.001, TimerKind.DURATION, object())
        near = t.push(1000.0 + 0.5, TimerKind.RETRANSMIT, object())
        t.cancel(far)
        t.cancel(near)
        assert t.size == len(t) == len(live)
    assert t.next_deadline() == 1030.0
    # the keys: the lingering dialogs' 32 seconds of fine buckets, plus the
    # emptied ones not yet at the top: bounded by the window, not by calls
    assert t.buckets <= NEAR * RES + 7200 + 2


def test_a_far_deadline_fires_exactly_when_its_time_comes() -> None:
    t = TimerHeap()
    t.pop_due(0.0)
    far = t.push(3600.25, TimerKind.DURATION, "call")
    near = t.push(10.0, TimerKind.RETRANSMIT, "tx")
    assert t.next_deadline() == 10.0
    assert t.pop_due(10.0) == [(10.0, TimerKind.RETRANSMIT, "tx")]
    assert t.next_deadline() == 3600.25
    assert t.pop_due(3600.24) == []
    assert t.pop_due(3600.25) == [(3600.25, TimerKind.DURATION, "call")]
    assert not t.pending(far) and not t.pending(near)
    assert len(t) == 0 and t.next_deadline() is None and t.size == 0


ops = st.lists(st.one_of(
    st.tuples(st.just("push"), st.floats(0, 500, allow_nan=False)),
    st.tuples(st.just("cancel"), st.integers(0, 200)),
    st.tuples(st.just("pop"), st.floats(0, 520, allow_nan=False)),
    st.tuples(st.just("next"), st.just(0.0)),
), max_size=200)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_the_wheel_fires_like_a_sorted_list(script: list[tuple[str, float]]) -> None:
    t = TimerHeap()
    model: dict[int, tuple[float, int]] = {}  # id -> (deadline, push order)
    entries = []
    now = 0.0
    for op, arg in script:
        if op == "push":
            deadline = now + arg
            n = len(entries)
            entries.append(t.push(deadline, TimerKind.PING, n))
            model[n] = (deadline, n)
        elif op == "cancel" and entries:
            n = int(arg) % len(entries)
            t.cancel(entries[n])
            model.pop(n, None)
        elif op == "pop":
            now = max(now, arg)
            got = [obj for _, _, obj in t.pop_due(now)]
            want = [n for n, _ in sorted(model.items(), key=lambda kv: kv[1]) if model[n][0] <= now]
            assert got == want
            for n in want:
                del model[n]
        else:
            want_at = min((d for d, _ in model.values()), default=None)
            assert t.next_deadline() == want_at
        assert len(t) == len(model) == t.size
        assert all(t.pending(entries[n]) for n in model)
