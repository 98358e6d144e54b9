"""How an event from another node meets this node's ban table: the merge
rules, pure (times passed in, the table read, nothing written).

A ban from elsewhere is taken when it ends later than what this node has: the
longer expiry wins, so a remote event never shortens a local ban. An unban
lifts a ban made before it, never one this node made since. A node's own
announcements come back to it on the channel and are ignored (the echo).
An automatic ban of a source this node exempts (its gateways, its exempt
networks) is refused: only an operator's ban reaches those.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum

from ..core.screen.bans import Ban
from .events import BanEvent, Op

__all__ = ["EPSILON_S", "Outcome", "ban_of", "event_of", "judge", "to_wall"]

# Expiries closer than this are the same ban seen twice (the monotonic and
# wall clocks are read a moment apart).
EPSILON_S = 0.5
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


class Outcome(StrEnum):
    APPLIED = "applied"  # banned (or lifted) here
    ECHO = "echo"  # our own announcement
    LONGER_LOCAL = "longer_local"  # this node's ban ends as late or later
    EXPIRED = "expired"  # over already
    EXEMPT = "exempt"  # an automatic ban of a source this node exempts
    NOT_BANNED = "not_banned"  # an unban of a source not banned here
    NEWER_LOCAL = "newer_local"  # an unban older than this node's ban
    INVALID = "invalid"  # a malformed payload (sbc.cluster.events)


def to_wall(t: float, mono_now: float, wall_now: float) -> float:
    return wall_now + (t - mono_now)


def judge(event: BanEvent, current: Ban | None, *, instance: str, mono_now: float,
          wall_now: float, exempt: Callable[[str], bool]) -> Outcome:
    """What to do with `event`, given this node's ban of its host (`current`)."""
    if event.instance == instance:
        return Outcome.ECHO
    if current is not None and current.expires_at <= mono_now:
        current = None  # ran out, not yet swept
    if event.op is Op.UNBAN:
        if current is None:
            return Outcome.NOT_BANNED
        if to_wall(current.banned_at, mono_now, wall_now) > event.at_wall + EPSILON_S:
            return Outcome.NEWER_LOCAL
        return Outcome.APPLIED
    if event.expires_wall <= wall_now:
        return Outcome.EXPIRED
    if not event.manual and exempt(event.host):
        return Outcome.EXEMPT
    if current is not None and \
            to_wall(current.expires_at, mono_now, wall_now) + EPSILON_S >= event.expires_wall:
        return Outcome.LONGER_LOCAL
    return Outcome.APPLIED


def ban_of(event: BanEvent, mono_now: float, wall_now: float) -> Ban:
    """The table's Ban (monotonic times) for a ban event."""
    def mono(t: float) -> float:
        return mono_now + (t - wall_now)

    return Ban(event.host, event.reason, dict(event.counts), mono(event.first_seen_wall),
               mono(event.at_wall), event.level, mono(event.at_wall), mono(event.expires_wall),
               event.manual, event.node)


def event_of(op: Op, ban: Ban, *, node: str, instance: str, mono_now: float, wall_now: float,
             at_wall: float | None = None) -> BanEvent:
    """The event announcing `ban` (or its lifting at `at_wall`, default now)."""
    def wall(t: float) -> float:
        return to_wall(t, mono_now, wall_now)

    banned = wall(ban.banned_at)
    at = banned if op is Op.BAN else (wall_now if at_wall is None else at_wall)
    reason = _NOT_NAME.sub("_", ban.reason)[:64] or "manual"  # `sbc ban --reason` is free text
    return BanEvent(op, ban.host, at, ban.node or node, instance, reason, min(ban.level, 1000),
                    wall(ban.expires_at), min(wall(ban.first_seen), banned), ban.manual,
                    dict(ban.counts))
