"""Which VOS3000 addresses are up: a health table, one row per configured
target, in priority order (the primary first, then the standbys).

Semantics follow what operators know from Kamailio's dispatcher:
- a target starts `unknown`, and is used for calls like an `up` one;
- each failure (an OPTIONS ping unanswered within the timeout, answered 503,
  or an INVITE that got no response at all) counts; `down_after` failures in
  a row mark it `down`;
- each success (any other answer to a ping, any response to an INVITE other
  than a failover status) counts; `up_after` in a row mark a `down` target
  `up` again. The first success marks an `unknown` target `up`.
A 503 to OPTIONS is a failure: VOS3000 says it is overloaded or in
maintenance (RFC 3261 §21.5.4). Any other answer (a 404, a 403) proves it
is alive.

New calls try the targets that are not down, in priority order. When every
target is down they try all of them in priority order anyway: a VOS3000 that
stopped answering OPTIONS (or a lost probe path) must not stop every call.

Pure: time is passed in; the engine sends the pings and reports the answers.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from ..verdict import Addr


class Health(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class Target:
    __slots__ = (
        "addr",
        "fails",
        "hostport",
        "index",
        "last_answer",
        "last_rtt",
        "last_status",
        "oks",
        "ping_sent",
        "ping_seq",
        "reason",
        "since",
        "state",
    )

    def __init__(self, index: int, addr: Addr) -> None:
        self.index = index
        self.addr = addr
        host, port = addr
        self.hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.state = Health.UNKNOWN
        self.fails = 0  # failures in a row
        self.oks = 0  # successes in a row
        self.since: float | None = None  # when the state last changed
        self.reason = ""  # the last failure
        self.ping_seq = 0  # the ping awaiting an answer, 0: none
        self.ping_sent = 0.0
        self.last_rtt: float | None = None
        self.last_status: int | None = None
        self.last_answer: float | None = None


class HealthTable:
    """`order` (targets to try for a new call) and `first` (where a new
    out-of-dialog request goes) are recomputed only when a state changes, so
    the packet path reads a cached value."""

    __slots__ = (
        "_by_addr",
        "_by_host",
        "changes",
        "down_after",
        "first",
        "hosts",
        "interval",
        "order",
        "targets",
        "timeout",
        "up_after",
    )

    def __init__(self, addrs: tuple[Addr, ...] | list[Addr], down_after: int = 3,
                 up_after: int = 2, interval: float = 5.0, timeout: float = 2.0) -> None:
        if not addrs:
            raise ValueError("at least one target")
        self.targets = [Target(i, a) for i, a in enumerate(addrs)]
        self.down_after = max(1, down_after)
        self.up_after = max(1, up_after)
        self.interval = interval
        self.timeout = timeout
        self.hosts = frozenset(a[0] for a in addrs)
        self._by_addr = {t.addr: t for t in self.targets}
        self._by_host: dict[str, Target] = {}
        for t in self.targets:
            self._by_host.setdefault(t.addr[0], t)
        self.changes: list[tuple[Target, Health, Health]] = []  # (target, old, new), not yet reported
        self.order: tuple[int, ...] = ()
        self.first: Addr = addrs[0]
        self._recompute()

    def __len__(self) -> int:
        return len(self.targets)

    def _recompute(self) -> None:
        usable = tuple(t.index for t in self.targets if t.state is not Health.DOWN)
        self.order = usable or tuple(range(len(self.targets)))
        self.first = self.targets[self.order[0]].addr

    # ------------------------------------------------------------------ lookups

    def by_addr(self, addr: Addr) -> Target | None:
        return self._by_addr.get(addr)

    def by_host(self, host: str) -> Target | None:
        """The first target on `host` (VOS3000 may send from another port)."""
        return self._by_host.get(host)

    def is_up(self, index: int) -> bool:
        return self.targets[index].state is Health.UP

    # ------------------------------------------------------------------ evidence

    def success(self, index: int, now: float) -> bool:
        """An answer from the target; True when its state changed."""
        t = self.targets[index]
        t.fails = 0
        t.oks += 1
        if t.state is Health.UP or (t.state is Health.DOWN and t.oks < self.up_after):
            return False
        return self._set(t, Health.UP, now)

    def failure(self, index: int, now: float, reason: str) -> bool:
        """No answer (or a refusal) from the target; True when its state changed."""
        t = self.targets[index]
        t.oks = 0
        t.fails += 1
        t.reason = reason
        if t.state is Health.DOWN or t.fails < self.down_after:
            return False
        return self._set(t, Health.DOWN, now)

    def _set(self, t: Target, state: Health, now: float) -> bool:
        self.changes.append((t, t.state, state))
        t.state = state
        t.since = now
        self._recompute()
        return True

    # ------------------------------------------------------------------ pings

    def ping_sent(self, index: int, seq: int, now: float) -> None:
        t = self.targets[index]
        if t.ping_seq:  # the previous one is still unanswered: missed (timeout == interval)
            self.failure(index, now, f"no answer to OPTIONS within {self.timeout:g} s")
        t.ping_seq = seq
        t.ping_sent = now

    def ping_answered(self, index: int, seq: int, status: int, now: float) -> None:
        """A final response to ping `seq`; a late or duplicate one is ignored
        (its timeout already counted)."""
        if not 0 <= index < len(self.targets):
            return
        t = self.targets[index]
        if seq == 0 or t.ping_seq != seq:
            return
        t.ping_seq = 0
        t.last_rtt = now - t.ping_sent
        t.last_status = status
        t.last_answer = now
        if status == 503:
            self.failure(index, now, "OPTIONS answered 503")
        else:
            self.success(index, now)

    def ping_timed_out(self, index: int, seq: int, now: float) -> None:
        t = self.targets[index]
        if t.ping_seq != seq:
            return  # answered in time, or a newer ping went out
        t.ping_seq = 0
        self.failure(index, now, f"no answer to OPTIONS within {self.timeout:g} s")

    # ------------------------------------------------------------------ readiness

    def state(self, now: float) -> tuple[bool, dict[str, Any]]:
        """What /readyz shows: ready while at least one target is up."""
        rows = []
        for t in self.targets:
            row: dict[str, Any] = {"address": t.hostport, "state": t.state.value,
                                   "priority": t.index}
            if t.since is not None:
                row["since_s"] = round(now - t.since, 1)
            if t.last_rtt is not None:
                row["last_rtt_ms"] = round(t.last_rtt * 1000, 1)
                row["last_status"] = t.last_status
            if t.last_answer is not None:
                row["last_answer_ago_s"] = round(now - t.last_answer, 1)
            if t.state is not Health.UP and t.reason:
                row["reason"] = t.reason
            rows.append(row)
        info: dict[str, Any] = {"ping_interval_s": self.interval, "ping_timeout_s": self.timeout,
                                "targets": rows}
        down = [t.hostport for t in self.targets if t.state is Health.DOWN]
        if down:
            info["down"] = down
        if any(t.state is Health.UP for t in self.targets):
            return True, info
        if all(t.state is Health.UNKNOWN and not t.reason for t in self.targets):
            return False, {**info, "reason": "no OPTIONS answered yet"}
        why = "; ".join(f"{t.hostport} {t.state.value}" + (f" ({t.reason})" if t.reason else "")
                        for t in self.targets)
        return False, {**info, "reason": f"no VOS3000 target is up: {why}"}
