"""The toll-fraud watch's state survives a restart: counters, blocks, calls in
progress (when their dialog did), and the operators' clears, through SQLite."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from sbc.cli import main
from sbc.core.fraud import FraudWatch, Metric, Rule, RuleSet, Threshold
from sbc.state.fraud import FraudKeeper
from sbc.state.store import Store

WALL = 1_765_069_200.0  # 2025-12-07 01:00 UTC
UTC = ZoneInfo("UTC")


def watch_with(*rules: Rule, offset: float = WALL) -> FraudWatch:
    w = FraudWatch()
    w.configure(RuleSet(rules))
    w.wall_offset = offset
    return w


PREMIUM = Rule("premium", UTC, ((Metric.CALLS_PER_MINUTE, Threshold(2, 3)),
                               (Metric.MINUTES_PER_DAY, Threshold(0, 100))),
               prefixes=("900",), cool_off=0.0)


def burst(w: FraudWatch, calls: int, at: float = 10.0) -> None:
    for n in range(calls):
        m = w.match("acme", b"sip:900%d@h" % n, (), at)
        assert m is not None
        if m.block is None:
            w.admit(m, (b"c%d" % n, b"t"), b"c%d" % n, at)


def test_a_block_and_its_counters_come_back_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with Store(path) as store:
        w = watch_with(PREMIUM)
        keeper = FraudKeeper(w, store)
        burst(w, 4)  # three admitted, the block, one refused
        w.answered((b"c0", b"t"), 10.0)
        assert w.blocks(10.0)
        keeper.flush(70.0)
        assert not w.dirty
    # A new process: another monotonic clock (its 0 is 500 s of wall time later).
    with Store(path) as store:
        w2 = watch_with(PREMIUM, offset=WALL + 500.0)
        alive = {(b"c0", b"t")}  # only this call's dialog came back
        assert FraudKeeper(w2, store).restore(0.0, lambda k: k in alive) == 1
        (block,) = w2.blocks(0.0)
        assert block.figure == 3.0 and [s.call_id for s in block.calls] == ["c0", "c1", "c2"]
        assert block.refused == 1
        m = w2.match("acme", b"sip:900555@h", (), 1.0)
        assert m is not None and m.block is block  # still refused after the restart
        scope = w2.scopes[("acme", "premium")]
        assert scope.calls_today == 3
        assert list(w2.live) == [(b"c0", b"t")]
        # Answered at wall +10 s, now wall +500 s: it ran on while sbc was down.
        assert abs(scope.minutes(0.0) * 60 - 490.0) < 0.01


def test_a_changed_rule_does_not_restore_old_counters(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with Store(path) as store:
        w = watch_with(PREMIUM)
        burst(w, 2)
        FraudKeeper(w, store).flush(11.0)
    other = Rule("premium", UTC, PREMIUM.thresholds, prefixes=("881",))
    with Store(path) as store:
        w2 = watch_with(other)
        assert FraudKeeper(w2, store).restore(0.0, lambda k: True) == 0
        assert w2.scopes == {}


def test_the_cli_clear_is_applied_by_the_running_watch_and_recorded(tmp_path: Path,
                                                                      capsys: object) -> None:
    path = tmp_path / "state.sqlite"
    cfg = tmp_path / "sbc.yaml"
    cfg.write_text(f"state: {{path: {path}}}\ngateways: [{{name: acme, ip: [192.0.2.1]}}]\n")
    with Store(path) as store:
        w = watch_with(PREMIUM)
        keeper = FraudKeeper(w, store)
        burst(w, 3)
        keeper.flush(11.0)
        assert main(["fraud", "clear", "--config", str(cfg), "--gateway", "acme",
                     "--rule", "premium", "--by", "noc-bob", "--note", "checked"]) == 0
        assert main(["fraud", "show", "--config", str(cfg)]) == 0
        assert main(["fraud", "clear", "--config", str(cfg), "--gateway", "a b",
                     "--rule", "premium"]) == 2
        (done,) = keeper.poll(20.0)
        assert done.by == "noc-bob" and done.lifted and done.note == "checked"
        assert w.blocks(20.0) == []
        (row,) = store.fraud_clears()
        assert row.applied_wall > 0 and row.lifted and row.by == "noc-bob"
        assert keeper.poll(21.0) == []  # applied once
        # An API clear is written as applied at once.
        keeper.clear("*", "*", "admin", "", 22.0)
        assert [r.by for r in store.fraud_clears()] == ["admin", "noc-bob"]
        assert not store.fraud_clears(pending=True)


def test_a_record_that_does_not_read_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with Store(path) as store:
        w = watch_with(PREMIUM)
        burst(w, 3)
        FraudKeeper(w, store).flush(11.0)
        good = store.load_fraud()[0]
        store.save_fraud([("acme", "premium", {**good, "block": {"metric": "nonsense"}}),
                          ("beta", "premium", {**good, "gateway": "beta"})], [], WALL)
    with Store(path) as store:
        w2 = watch_with(PREMIUM)
        assert FraudKeeper(w2, store).restore(20.0, lambda k: False) == 1
        assert w2.figures["unreadable_records"] == 1 and ("beta", "premium") in w2.scopes
