"""The call path makes no reference cycles: what a call allocates is freed by
reference counting alone. sbc runs with the cyclic collector off (frozen
once a second, sbc.io.gcpolicy); a cycle made per call would wait for the
next full collection, so this guards that premise."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from .test_call_identity import (
    BACKEND,
    GW_A,
    GW_B,
    caller_bye,
    establish,
    make_engine,
    offer,
    respond,
    vos_request,
)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_calls_ended_every_way_leave_no_cycles_to_collect(collector_off: None) -> None:
    eng, _ = make_engine(limit=1000)
    now = 0.0
    for i in range(200):
        now += 0.01
        src = GW_A if i % 2 else GW_B
        if i % 4 == 0:  # the caller hangs up
            caller_bye(eng, establish(eng, src, f"c{i}", f"f{i}", now), now)
        elif i % 4 == 1:  # VOS3000 hangs up
            call = establish(eng, src, f"c{i}", f"f{i}", now)
            assert eng.receive(vos_request(call), BACKEND, now).sends
        elif i % 4 == 2:  # refused by VOS3000
            call, _ = offer(eng, src, f"c{i}", f"f{i}", f"z9hG4bK-r{i}", now)
            eng.receive(respond(call.out, 486, "busy"), BACKEND, now)
        else:  # never answered: Timer B
            offer(eng, src, f"c{i}", f"f{i}", f"z9hG4bK-u{i}", now)
    for step in range(200):  # past every linger, set-up timeout and Timer B
        now += 1.0
        eng.on_timer(now)
    assert len(eng.dialogs) == 0 and len(eng.txs) == 0
    assert gc.collect() == 0, "the call path made reference cycles"


def test_a_cycle_is_found_by_the_same_check(collector_off: None) -> None:
    """The check above can fail: one cycle, and collect() reports it."""

    class Node:
        def __init__(self) -> None:
            self.me = self

    Node()
    assert gc.collect() >= 1
