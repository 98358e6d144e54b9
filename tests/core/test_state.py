"""Transaction and dialog transitions as data (h11's test_state.py style):
every (state, event) pair either leads where the table says or raises and
leaves the state as it was."""

from __future__ import annotations

import itertools

import pytest

from sbc.core.proxy.dialogs import (
    DIALOG_TRANSITIONS,
    Dialog,
    DialogEvent,
    DialogState,
    IllegalDialogEvent,
)
from sbc.core.proxy.timers import TimerHeap, TimerKind
from sbc.core.proxy.transactions import TRANSITIONS, IllegalTransition, InviteTx, TxEvent, TxState


def _tx(state: TxState) -> InviteTx:
    tx = InviteTx(b"z9hG4bKk", ("127.0.0.1", 5060), 0, 0.0)
    tx.state = state
    return tx


@pytest.mark.parametrize(("state", "event"), list(itertools.product(TxState, TxEvent)))
def test_transaction_events_follow_the_table_or_raise(state: TxState, event: TxEvent) -> None:
    tx = _tx(state)
    expected = TRANSITIONS[state].get(event)
    assert tx.can(event) is (expected is not None)
    if expected is None:
        with pytest.raises(IllegalTransition):
            tx.step(event)
        assert tx.state is state
    else:
        tx.step(event)
        assert tx.state is expected


def test_final_states_take_nothing_but_2xx_copies() -> None:
    assert TRANSITIONS[TxState.COMPLETED] == {}
    assert TRANSITIONS[TxState.ACCEPTED] == {TxEvent.SUCCESS: TxState.ACCEPTED}


def _dialog(state: DialogState) -> Dialog:
    d = Dialog(b"c", ("127.0.0.1", 5060), 0, 0.0, 1.0, tag=b"t")
    d.state = state
    return d


@pytest.mark.parametrize(("state", "event"), list(itertools.product(DialogState, DialogEvent)))
def test_dialog_events_follow_the_table_or_raise(state: DialogState, event: DialogEvent) -> None:
    d = _dialog(state)
    expected = DIALOG_TRANSITIONS[state].get(event)
    if expected is None:
        with pytest.raises(IllegalDialogEvent):
            d.step(event)
        assert d.state is state
    else:
        d.step(event)
        assert d.state is expected


def test_answer_tags_are_bounded() -> None:
    d = _dialog(DialogState.EARLY)
    assert all(d.add_answer_tag(b"%d" % i) for i in range(4))
    assert not d.add_answer_tag(b"overflow")
    assert d.add_answer_tag(b"0")  # known already
    assert d.answer_tags == [b"0", b"1", b"2", b"3"]


def test_cancelled_timers_let_go_and_the_heap_compacts() -> None:
    heap = TimerHeap()
    entries = [heap.push(float(i), TimerKind.DIALOG_EXPIRE, object()) for i in range(1000)]
    for e in entries[:900]:
        heap.cancel(e)
    assert len(heap) == 100
    assert heap.size < 200  # compacted: cancelled entries do not pile up until their deadline
    assert not any(heap.pending(e) for e in entries[:900])
    due = heap.pop_due(2000.0)
    assert [d for d, _, _ in due] == [float(i) for i in range(900, 1000)]
    assert len(heap) == 0 and heap.next_deadline() is None


def test_a_fired_timer_cancelled_later_changes_nothing() -> None:
    heap = TimerHeap()
    e = heap.push(1.0, TimerKind.PING, (0, 1))
    keep = heap.push(5.0, TimerKind.PING, (0, 2))
    assert [k for _, k, _ in heap.pop_due(1.0)] == [TimerKind.PING]
    heap.cancel(e)
    assert len(heap) == 1 and heap.next_deadline() == 5.0
    heap.cancel(keep)
    assert len(heap) == 0 and heap.next_deadline() is None
