"""Readiness: is VOS3000 answering the OPTIONS pings sbc sends it?

Pure bookkeeping with time passed in; the shell sends a ping when `due(now)`
says so, reports `sent(now)` and, when a response to it comes back,
`answered(now, status)`. `state(now)` is what `/readyz` shows: ready while the
latest ping was answered within `timeout` and pings keep being answered.
Any response counts as an answer (a 404 or 403 still proves VOS3000 is up).
"""

from __future__ import annotations

from typing import Any


class PingTracker:
    __slots__ = (
        "failure",
        "interval",
        "last_answer",
        "last_rtt",
        "last_sent",
        "last_status",
        "outstanding",
        "timeout",
    )

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.last_sent: float | None = None
        self.outstanding: float | None = None  # when the unanswered ping was sent
        self.last_answer: float | None = None  # when the last in-time answer came
        self.last_rtt: float | None = None
        self.last_status: int | None = None
        self.failure: str | None = None  # why the last finished ping failed, if it did

    def due(self, now: float) -> bool:
        return self.last_sent is None or now - self.last_sent >= self.interval

    def sent(self, now: float) -> None:
        self.last_sent = now
        if self.outstanding is not None and now - self.outstanding <= self.timeout:
            return  # the earlier ping is still within its deadline: time from it
        if self.outstanding is not None:
            self.failure = f"no answer to OPTIONS within {self.timeout:g} s"
        self.outstanding = now

    def answered(self, now: float, status: int) -> None:
        if self.outstanding is None:
            return  # a duplicate, or a response to a ping already answered
        rtt = now - self.outstanding
        self.outstanding = None
        self.last_rtt = rtt
        self.last_status = status
        if rtt > self.timeout:
            self.failure = f"OPTIONS answered after {rtt:.1f} s (deadline {self.timeout:g} s)"
        else:
            self.failure = None
            self.last_answer = now

    def state(self, now: float) -> tuple[bool, dict[str, Any]]:
        info: dict[str, Any] = {"ping_interval_s": self.interval, "ping_timeout_s": self.timeout}
        if self.last_rtt is not None:
            info["last_rtt_ms"] = round(self.last_rtt * 1000, 1)
            info["last_status"] = self.last_status
        if self.last_answer is not None:
            info["last_answer_ago_s"] = round(now - self.last_answer, 1)
        if self.outstanding is not None and now - self.outstanding > self.timeout:
            return False, {**info, "reason": f"no answer to OPTIONS for "
                                             f"{now - self.outstanding:.1f} s "
                                             f"(deadline {self.timeout:g} s)"}
        if self.failure is not None:
            return False, {**info, "reason": self.failure}
        if self.last_answer is None:
            return False, {**info, "reason": "no OPTIONS answered yet"}
        if now - self.last_answer > self.interval + self.timeout:
            return False, {**info, "reason": f"no OPTIONS answered for "
                                             f"{now - self.last_answer:.1f} s"}
        return True, info
