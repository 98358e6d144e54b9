"""sbc.io.gcpolicy: the collector off, a freeze per tick, a full collection
at its interval that frees cycles and reports them; stop() restores it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from sbc.io.gcpolicy import FullCollection, GcPolicy


@pytest.fixture
def restore_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_start_turns_the_collector_off_and_freezes_what_lives(restore_gc: None) -> None:
    policy = GcPolicy(0.0)
    policy.start()
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0
    policy.stop()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_tick_freezes_new_objects_without_collecting(restore_gc: None) -> None:
    seen: list[FullCollection] = []
    policy = GcPolicy(0.0, full_interval=600.0, on_full=seen.append)
    policy.start()
    before = gc.get_freeze_count()
    keep = [[i] for i in range(1000)]  # tracked containers that stay alive
    policy.tick(1.0)
    assert gc.get_freeze_count() >= before + 1000
    assert seen == [] and policy.fulls == 0
    assert len(keep) == 1000


def test_the_full_collection_frees_cycles_at_its_interval(restore_gc: None) -> None:
    seen: list[FullCollection] = []
    policy = GcPolicy(0.0, full_interval=10.0, on_full=seen.append)
    policy.start()
    cycle = _Cycle()
    gone = weakref.ref(cycle)
    del cycle
    policy.tick(5.0)  # frozen with the rest, not collected
    assert gone() is not None and seen == []
    policy.tick(10.0)
    assert gone() is None
    assert len(seen) == 1 and seen[0].collected >= 1 and seen[0].pause_s >= 0
    assert policy.fulls == 1 and policy.freed >= 1
    assert not gc.isenabled()  # still off after the full collection
    policy.tick(15.0)
    assert policy.fulls == 1  # the next one is due at 20
