"""The one error the SIP core raises for bad input.

Every way a datagram or a TCP byte stream can be wrong ends here, carrying the
status a server would answer with (400 for a malformed message, 513 when it is
too large, RFC 3261 §21.5.14). Callers decide whether to answer or to drop; the
reason is a short fixed name, so metrics and logs can count it without
embedding attacker-controlled bytes.
"""

from __future__ import annotations


class SipParseError(ValueError):
    """Input that is not a SIP message we accept."""

    __slots__ = ("reason", "status_hint")

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint
