"""Offenses and bans, inline (what fail2ban does from logs, done per packet).

`max_offenses` offenses within `findtime` ban a source for `bantime`; each
repeat ban of the same source lasts `increment` times longer than the one
before, up to `max_bantime` (fail2ban's bantime.increment / recidive). Exempt
sources (gateways, configured CIDRs) are never banned automatically; an
operator can ban and unban anything by hand.

Offense kinds are `Offense` members (sbc.core.reasons); each one recorded,
and each one a proved source is spared, is counted in the engine's tally.
Every table here is keyed by an address an attacker chooses, so each has a
hard cap (`max_entries`) and expiry. Ban and unban events go to `listener`
(the shell logs them, stores them in SQLite and mirrors them into nftables).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..reasons import Offense
from ..tally import Tally
from .offenses import OffenseTable


@dataclass(slots=True)
class Ban:
    host: str
    reason: str  # the offense that tipped it over, or "manual"
    counts: dict[str, int] = field(default_factory=dict)
    first_seen: float = 0.0
    last_seen: float = 0.0
    level: int = 1  # 1 for a first ban, n for the n-th
    banned_at: float = 0.0
    expires_at: float = 0.0
    manual: bool = False
    node: str = ""  # in a cluster, the node that made the ban (sbc.cluster)

    def explain(self, now: float) -> dict[str, object]:
        return {**({"node": self.node} if self.node else {}),
            "host": self.host, "reason": self.reason, "offenses": dict(self.counts),
            "first_seen_ago_s": round(now - self.first_seen, 1),
            "last_seen_ago_s": round(now - self.last_seen, 1),
            "ban_level": self.level, "expires_in_s": round(self.expires_at - now, 1),
            "manual": self.manual,
        }


Listener = Callable[[str, Ban], None]


def _no_listener(event: str, ban: Ban) -> None:
    return None


class BanTable:
    __slots__ = (
        "_heap",
        "bans",
        "bantime",
        "counted",
        "exempt",
        "increment",
        "levels",
        "listener",
        "max_bantime",
        "max_entries",
        "max_offenses",
        "offenses",
        "proved",
        "tally",
    )

    def __init__(self, *, max_offenses: int = 5, findtime: float = 600.0, bantime: float = 600.0,
                 increment: float = 2.0, max_bantime: float = 604_800.0, max_entries: int = 100_000,
                 exempt: Callable[[str], bool] | None = None,
                 counted: frozenset[Offense] | None = None,
                 listener: Listener | None = None,
                 proved: Callable[[str, float], bool] | None = None) -> None:
        self.max_offenses = max_offenses
        self.bantime = bantime
        self.increment = increment
        self.max_bantime = max_bantime
        self.max_entries = max_entries
        self.exempt = exempt or (lambda host: False)
        self.counted = counted  # offense kinds that count; None: all
        self.listener = listener or _no_listener
        # Whether a source has shown it is really at its address (a live
        # registration, a confirmed dialog, a recent authenticated request, an
        # open connection): such a source is never banned for what a forged
        # UDP datagram can cause. Those offenses are only counted, by kind.
        self.proved = proved or (lambda host, now: False)
        # Where offenses are counted: the engine's tally once it owns this table.
        self.tally = Tally()
        self.bans: OrderedDict[str, Ban] = OrderedDict()
        # how many times a source was banned (recidive), oldest first
        self.levels: OrderedDict[str, int] = OrderedDict()
        self.offenses = OffenseTable(max_entries, findtime)
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self.bans)

    def take_rules(self, other: BanTable) -> None:
        """The rules of `other` (limits, ban times, exemptions, what counts),
        this table's bans and offenses kept: a reload."""
        for attr in ("max_offenses", "bantime", "increment", "max_bantime", "max_entries",
                     "exempt", "counted"):
            setattr(self, attr, getattr(other, attr))
        self.offenses.window = other.offenses.window

    def is_banned(self, host: str, now: float) -> bool:
        ban = self.bans.get(host)
        return ban is not None and now < ban.expires_at

    def offense(self, host: str, kind: Offense, now: float, spoofable: bool = False) -> Ban | None:
        """Record an offense; the Ban if this one earned it. `spoofable`: the
        packet came over UDP and proves nothing about its source address
        (a scanner signature, a rate-limit hit, a malformed datagram)."""
        ban = self.bans.get(host)
        if ban is not None and now < ban.expires_at:
            return None
        if self.counted is not None and kind not in self.counted:
            return None
        if self.exempt(host):
            return None
        if spoofable and self.proved(host, now):
            self.tally.spared[kind] += 1
            return None
        self.tally.offenses[kind] += 1
        offenses = self.offenses
        if offenses.note(host, kind, now) < self.max_offenses:
            return None
        rec = offenses.get(host, now)
        assert rec is not None
        return self.ban(host, now, reason=kind, counts=dict(rec.kinds), first_seen=rec.first_seen)

    def ban(self, host: str, now: float, *, reason: str = "manual", duration: float | None = None,
            counts: dict[str, int] | None = None, first_seen: float | None = None,
            manual: bool = False) -> Ban:
        level = self.levels.pop(host, 0) + 1
        self.levels[host] = level
        while len(self.levels) > self.max_entries:
            self.levels.popitem(last=False)
        if duration is None:
            duration = min(self.bantime * self.increment ** (level - 1), self.max_bantime)
        ban = Ban(host, reason, counts or {}, first_seen if first_seen is not None else now, now,
                  level, now, now + duration, manual)
        self._put(ban)
        self.offenses.forget(host)
        self.listener("ban", ban)
        return ban

    def unban(self, host: str) -> Ban | None:
        ban = self.bans.pop(host, None)
        if ban is not None:
            self.listener("unban", ban)
        return ban

    def expire(self, now: float) -> list[Ban]:
        """Lift bans whose time is up (each reported to the listener)."""
        lifted = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, host = heapq.heappop(heap)
            ban = self.bans.get(host)
            if ban is not None and ban.expires_at == at:
                del self.bans[host]
                lifted.append(ban)
                self.listener("unban", ban)
        return lifted

    def restore(self, ban: Ban, level_only: bool = False) -> None:
        """Put back a ban (or only its level) kept across a restart; no listener call."""
        self.levels[ban.host] = max(self.levels.get(ban.host, 0), ban.level)
        if not level_only:
            self._put(ban)

    def _put(self, ban: Ban) -> None:
        bans = self.bans
        bans.pop(ban.host, None)
        bans[ban.host] = ban
        while len(bans) > self.max_entries:
            bans.popitem(last=False)  # the oldest ban goes first
        heapq.heappush(self._heap, (ban.expires_at, ban.host))
        if len(self._heap) > 4 * self.max_entries:
            self._heap = [(b.expires_at, h) for h, b in bans.items()]
            heapq.heapify(self._heap)
