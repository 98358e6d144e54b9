"""The state of a node's link to Redis, as a small machine with time passed in.

connecting ──ok──► connected ──failure──► lost ──ok──► connected
     └─────────────failure──────────────────┘

Only a change of state is reported (a `Transition`, which the shell logs as
one line): a server that stays down for an hour costs one line when it goes
and one when it comes back, with the failures in between counted. While
not connected the node is degraded: it serves on its own bans, and the next
attempt waits a delay that doubles from `retry_min_s` up to `retry_max_s`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Link", "LinkState", "Transition"]


class LinkState(StrEnum):
    CONNECTING = "connecting"  # not yet connected since start
    CONNECTED = "connected"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Transition:
    old: LinkState
    new: LinkState
    at: float
    down_for_s: float = 0.0  # lost -> connected: how long the link was down
    failures: int = 0  # failed attempts while down
    error: str = ""


class Link:
    def __init__(self, now: float, retry_min_s: float = 0.1, retry_max_s: float = 2.0) -> None:
        self.state = LinkState.CONNECTING
        self.since = now
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.failures = 0  # in a row, since the last success
        self.transitions = 0
        self.last_error = ""

    @property
    def connected(self) -> bool:
        return self.state is LinkState.CONNECTED

    @property
    def degraded(self) -> bool:
        return self.state is not LinkState.CONNECTED

    def succeeded(self, now: float) -> Transition | None:
        """A connection is up (and synchronised)."""
        if self.state is LinkState.CONNECTED:
            return None
        t = Transition(self.state, LinkState.CONNECTED, now, now - self.since, self.failures)
        self._enter(LinkState.CONNECTED, now)
        self.failures = 0
        return t

    def failed(self, now: float, error: str) -> Transition | None:
        """An attempt or a live connection failed (refused, timed out, dropped)."""
        self.failures += 1
        self.last_error = error
        if self.state is LinkState.LOST:
            return None
        t = Transition(self.state, LinkState.LOST, now, error=error)
        self._enter(LinkState.LOST, now)
        return t

    def retry_delay(self) -> float:
        """How long to wait before the next attempt."""
        if self.failures == 0:
            return 0.0
        return min(self.retry_max_s, self.retry_min_s * 2.0 ** min(self.failures - 1, 30))

    def _enter(self, state: LinkState, now: float) -> None:
        self.state = state
        self.since = now
        self.transitions += 1
