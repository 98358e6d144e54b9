"""The pure half of the shared bans, without a network: the merge rules (the
longer expiry wins, unbans lift only older bans, exempt sources), no echo (a
remote ban is applied without being announced again), the bounded publish
queue, the link's state machine, and the purity of the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sbc.cluster.events import BanEvent, Op, encode
from sbc.cluster.link import Link, LinkState
from sbc.cluster.merge import Outcome, judge
from sbc.cluster.sync import BanSync, Outbox, PushResult
from sbc.core.screen.bans import Ban, BanTable
from sbc.state.bans import BanKeeper
from sbc.state.store import Store

MONO, WALL = 1000.0, 1_700_000_000.0
ME, OTHER = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"


def _event(op: Op = Op.BAN, host: str = "203.0.113.7", *, at: float = WALL,
           expires: float = WALL + 600, manual: bool = False,
           instance: str = OTHER) -> BanEvent:
    return BanEvent(op, host, at, "node-b", instance, "scanner", 1, expires, at, manual,
                    {"scanner": 3})


def _local(expires_in: float, banned_ago: float = 0.0) -> Ban:
    return Ban("203.0.113.7", "scanner", {}, MONO - banned_ago, MONO - banned_ago, 1,
               MONO - banned_ago, MONO + expires_in)


def _judge(event: BanEvent, current: Ban | None, exempt: bool = False) -> Outcome:
    return judge(event, current, instance=ME, mono_now=MONO, wall_now=WALL,
                 exempt=lambda host: exempt)


# ---------------------------------------------------------------- merge rules

def test_the_longer_expiry_wins() -> None:
    assert _judge(_event(expires=WALL + 600), None) is Outcome.APPLIED
    assert _judge(_event(expires=WALL + 600), _local(300)) is Outcome.APPLIED
    assert _judge(_event(expires=WALL + 300), _local(600)) is Outcome.LONGER_LOCAL
    assert _judge(_event(expires=WALL + 600.2), _local(600)) is Outcome.LONGER_LOCAL  # same ban
    assert _judge(_event(expires=WALL + 600), _local(-1)) is Outcome.APPLIED  # local ran out


def test_own_echo_expired_and_exempt_are_not_applied() -> None:
    assert _judge(_event(instance=ME), None) is Outcome.ECHO
    assert _judge(_event(at=WALL - 700, expires=WALL - 100), None) is Outcome.EXPIRED
    assert _judge(_event(), None, exempt=True) is Outcome.EXEMPT
    assert _judge(_event(manual=True), None, exempt=True) is Outcome.APPLIED  # an operator's


def test_an_unban_lifts_only_an_older_ban() -> None:
    unban = _event(Op.UNBAN, at=WALL)
    assert _judge(unban, None) is Outcome.NOT_BANNED
    assert _judge(unban, _local(600, banned_ago=10)) is Outcome.APPLIED
    newer = Ban("203.0.113.7", "scanner", {}, MONO + 5, MONO + 5, 1, MONO + 5, MONO + 600)
    assert _judge(unban, newer) is Outcome.NEWER_LOCAL


# ---------------------------------------------------------------- sync over a real keeper

class Clock:
    t = MONO

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def keeper(tmp_path: Path) -> BanKeeper:
    return BanKeeper(BanTable(max_offenses=1, bantime=600.0), Store(tmp_path / "s.sqlite"),
                     Clock())


def _sync(keeper: BanKeeper, max_pending: int = 100) -> BanSync:
    sync = BanSync(keeper, node="node-a", instance=ME, now=MONO, max_pending=max_pending)
    keeper.node, keeper.publish = "node-a", sync.local
    return sync


def test_a_local_ban_is_queued_with_this_nodes_name(keeper: BanKeeper) -> None:
    sync = _sync(keeper)
    ban = keeper.table.ban("198.51.100.1", MONO, reason="scanner")
    assert ban.node == "node-a" and ban.explain(MONO)["node"] == "node-a"
    (event,) = sync.outbox.take(10)
    assert (event.op, event.host, event.node, event.instance) == (Op.BAN, "198.51.100.1",
                                                                   "node-a", ME)
    assert event.expires_wall == pytest.approx(event.at_wall + 600)


def test_a_remote_ban_is_applied_and_not_announced_again(keeper: BanKeeper) -> None:
    sync = _sync(keeper)
    outcome, _, _ = sync.receive(encode(_event()), MONO, WALL)
    assert outcome is Outcome.APPLIED
    ban = keeper.table.bans["203.0.113.7"]
    assert ban.node == "node-b" and ban.expires_at == pytest.approx(MONO + 600)
    assert keeper.table.is_banned("203.0.113.7", MONO + 1)
    assert len(sync.outbox) == 0  # no echo loop
    # the same event again (a second delivery) changes nothing
    assert sync.receive(encode(_event()), MONO, WALL)[0] is Outcome.LONGER_LOCAL
    # the remote unban lifts it, without announcing it either
    assert sync.receive(encode(_event(Op.UNBAN, at=WALL + 1)), MONO, WALL)[0] is Outcome.APPLIED
    assert "203.0.113.7" not in keeper.table.bans and len(sync.outbox) == 0
    assert keeper._pending["203.0.113.7"].lifted  # stored like any unban


def test_a_shorter_remote_ban_never_shortens_a_local_one(keeper: BanKeeper) -> None:
    sync = _sync(keeper)
    keeper.table.ban("203.0.113.7", MONO, reason="scanner", duration=3600)
    sync.outbox.take(10)
    assert sync.receive(encode(_event(expires=WALL + 60)), MONO, WALL)[0] is Outcome.LONGER_LOCAL
    assert keeper.table.bans["203.0.113.7"].expires_at == MONO + 3600
    assert keeper.table.bans["203.0.113.7"].node == "node-a"


def test_only_operator_unbans_are_announced_not_expiries(keeper: BanKeeper) -> None:
    sync = _sync(keeper)
    keeper.table.ban("198.51.100.1", MONO, reason="scanner", duration=10)
    keeper.table.ban("198.51.100.2", MONO, reason="scanner", duration=100)
    sync.outbox.take(10)
    keeper.table.expire(MONO + 20)
    assert len(sync.outbox) == 0
    assert keeper.lift("198.51.100.2")
    (event,) = sync.outbox.take(10)
    assert (event.op, event.host) == (Op.UNBAN, "198.51.100.2")


def test_a_remote_ban_survives_a_restart_with_its_node(keeper: BanKeeper, tmp_path: Path) -> None:
    sync = _sync(keeper)
    sync.receive(encode(_event()), MONO, WALL)
    keeper.flush()
    again = BanKeeper(BanTable(), keeper.store, Clock())
    assert again.table.bans["203.0.113.7"].node == "node-b"


def test_malformed_entries_are_counted_not_raised(keeper: BanKeeper) -> None:
    sync = _sync(keeper)
    for payload in (b"", b"junk", b'{"v":1}', encode(_event())[:-3]):
        outcome, event, reason = sync.receive(payload, MONO, WALL)
        assert outcome is Outcome.INVALID and event is None and reason
    assert sync.received[Outcome.INVALID] == 4 and not keeper.table.bans


def test_a_ban_lifted_in_the_cluster_meanwhile_is_lifted_here(keeper: BanKeeper) -> None:
    sync = _sync(keeper)
    keeper.table.ban("198.51.100.1", MONO, reason="scanner")
    (event,) = sync.outbox.take(10)
    sync.pushed(event, PushResult.LIFTED)
    assert "198.51.100.1" not in keeper.table.bans and len(sync.outbox) == 0
    assert sync.sent == {"lifted": 1}


def test_in_force_lists_what_a_reconnection_pushes(keeper: BanKeeper) -> None:
    sync = _sync(keeper)
    keeper.table.ban("198.51.100.1", MONO, reason="scanner", duration=10)
    sync.receive(encode(_event()), MONO, WALL)
    hosts = {e.host: e.node for e in sync.in_force(MONO + 20, WALL + 20)}
    assert hosts == {"203.0.113.7": "node-b"}  # the expired one is not pushed


# ---------------------------------------------------------------- the bounded queue

def test_a_flood_of_bans_fills_the_queue_to_its_bound_and_counts_the_rest(
        keeper: BanKeeper) -> None:
    sync = _sync(keeper, max_pending=10)
    sync.resync = False
    for i in range(100):
        keeper.table.ban(f"198.51.{i // 250}.{i % 250 + 1}", MONO, reason="scanner")
    assert len(sync.outbox) == 10 and sync.outbox.dropped == 90
    assert sync.resync  # what was dropped is pushed with every ban in force later
    assert sync.stats()["dropped"] == 90


def test_outbox_keeps_one_event_per_host_and_puts_a_failed_batch_back_in_front() -> None:
    box = Outbox(3)
    a1, b1, a2 = _event(host="10.0.0.1"), _event(host="10.0.0.2"), _event(Op.UNBAN, "10.0.0.1")
    assert box.put(a1) and box.put(b1) and box.put(a2)
    assert len(box) == 2
    batch = box.take(1)
    assert batch == [b1]
    box.put(_event(host="10.0.0.3"))
    box.put_back(batch)
    assert [e.host for e in box.take(10)] == ["10.0.0.2", "10.0.0.1", "10.0.0.3"]
    box.put(_event(host="10.0.0.4"))
    box.put(_event(host="10.0.0.5"))
    box.put(_event(host="10.0.0.6"))
    box.put_back([_event(host="10.0.0.7")])
    assert len(box) == 3 and box.dropped == 1


# ---------------------------------------------------------------- the link

def test_link_reports_each_change_once_and_backs_off() -> None:
    link = Link(0.0, retry_min_s=0.1, retry_max_s=1.0)
    assert link.state is LinkState.CONNECTING and link.degraded
    t = link.succeeded(1.0)
    assert t is not None and (t.old, t.new) == (LinkState.CONNECTING, LinkState.CONNECTED)
    assert link.succeeded(2.0) is None and not link.degraded
    lost = link.failed(10.0, "refused")
    assert lost is not None and (lost.old, lost.new, lost.error) == (
        LinkState.CONNECTED, LinkState.LOST, "refused")
    delays = [link.retry_delay()]
    for n in range(6):
        assert link.failed(11.0 + n, "refused") is None  # no line per failure
        delays.append(link.retry_delay())
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    back = link.succeeded(20.0)
    assert back is not None and back.new is LinkState.CONNECTED
    assert (back.down_for_s, back.failures) == (10.0, 7)
    assert link.retry_delay() == 0.0 and link.transitions == 3


def test_a_first_connection_that_fails_is_one_transition() -> None:
    link = Link(0.0)
    t = link.failed(0.5, "timeout")
    assert t is not None and (t.old, t.new) == (LinkState.CONNECTING, LinkState.LOST)
    assert link.failed(1.0, "timeout") is None and link.degraded


# ---------------------------------------------------------------- purity

IMPURE = {"asyncio", "socket", "os", "time", "sqlite3", "logging", "structlog", "redis",
          "uvloop", "aiohttp", "ssl", "subprocess", "threading"}


@pytest.mark.parametrize("module", ["__init__", "events", "keys", "link", "merge", "sync"])
def test_the_pure_part_opens_no_socket_and_reads_no_clock(module: str) -> None:
    path = Path(__file__).resolve().parents[2] / "sbc" / "cluster" / f"{module}.py"
    tops: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
            elif node.level and node.module and node.module.startswith(("io", "state", "redis")):
                tops.add(node.module)
    assert not tops & IMPURE, tops & IMPURE
    assert not {t for t in tops if t.startswith(("io", "state", "redis_link"))}
