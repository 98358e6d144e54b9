"""Bans across restarts and an operator's hand, through the SQLite store."""

from __future__ import annotations

from pathlib import Path

from sbc.state.bans import BanKeeper, manual_ban, manual_unban
from sbc.core.screen.bans import BanTable
from sbc.state.store import Store


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeKernel:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def add(self, host: str, timeout_s: float) -> None:
        self.calls.append(("add", host))

    def remove(self, host: str) -> None:
        self.calls.append(("remove", host))


def keeper(path: Path, clock: Clock, kernel: FakeKernel | None = None) -> tuple[BanKeeper, BanTable]:
    table = BanTable(max_offenses=2, bantime=600.0, increment=2.0)
    return BanKeeper(table, Store(path), clock, kernel=kernel), table


def test_ban_survives_restart_and_repeat_offender_grows(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    clock = Clock()
    kernel = FakeKernel()
    k, table = keeper(db, clock, kernel)
    table.offense("203.0.113.9", "scanner", clock())
    assert table.offense("203.0.113.9", "scanner", clock()) is not None
    assert kernel.calls == [("add", "203.0.113.9")]
    k.flush()
    k.store.close()

    # A restart (new monotonic clock origin): still banned, same expiry in wall time.
    clock2 = Clock(5.0)
    k2, table2 = keeper(db, clock2)
    assert table2.is_banned("203.0.113.9", clock2())
    remaining = table2.bans["203.0.113.9"].expires_at - clock2()
    assert 590 < remaining <= 600
    # It ends; the next ban is twice as long (level remembered through the file).
    clock2.t += 601
    k2.poll(clock2())
    assert not table2.is_banned("203.0.113.9", clock2())
    table2.offense("203.0.113.9", "scanner", clock2())
    ban = table2.offense("203.0.113.9", "scanner", clock2())
    assert ban is not None and ban.level == 2 and ban.expires_at - ban.banned_at == 1200.0
    k2.flush()
    k2.store.close()


def test_operator_ban_and_unban_reach_a_running_sbc(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    clock = Clock()
    k, table = keeper(db, clock)
    operator = Store(db)
    manual_ban(operator, "198.51.100.20", 3600, reason="abuse report")
    k.poll(clock())
    ban = table.bans["198.51.100.20"]
    assert ban.manual and ban.reason == "abuse report" and table.is_banned("198.51.100.20", clock())
    assert manual_unban(operator, "198.51.100.20")
    clock.t += 1
    k.poll(clock())
    assert not table.is_banned("198.51.100.20", clock())
    assert not manual_unban(operator, "192.0.2.99")
    operator.close()
    k.store.close()


def test_an_operators_ban_and_unban_are_on_disk_at_once(tmp_path: Path) -> None:
    """No flush, no poll: a process killed right after the API answered
    still has the operator's ban (and later the unban) in its file."""
    db = tmp_path / "state.sqlite"
    clock = Clock()
    k, table = keeper(db, clock)
    table.ban("198.51.100.7", clock(), reason="operator", duration=3600.0, manual=True)
    on_disk = {r.host: r for r in Store(db).load_bans()}
    assert "198.51.100.7" in on_disk and not on_disk["198.51.100.7"].lifted
    table.offense("203.0.113.9", "scanner", clock())
    table.offense("203.0.113.9", "scanner", clock())  # automatic: batched
    assert "203.0.113.9" not in {r.host for r in Store(db).load_bans()}
    assert k.lift("198.51.100.7")
    on_disk = {r.host: r for r in Store(db).load_bans()}
    assert on_disk["198.51.100.7"].lifted
