"""Sources that proved they are at their address by answering what sbc sent
there: a request authenticated with a nonce sbc bound to that address. Kept
for the nonce's life, in a bounded table (the oldest proof goes first when
it is full); the other proofs (a live registration, a confirmed dialog, an
open TCP/TLS connection) live in their own tables.
"""

from __future__ import annotations

from collections import OrderedDict


class Proofs:
    __slots__ = ("_until", "max_entries")

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def note(self, host: str, until: float) -> None:
        table = self._until
        table.pop(host, None)
        table[host] = until
        while len(table) > self.max_entries:
            table.popitem(last=False)

    def has(self, host: str, now: float) -> bool:
        until = self._until.get(host)
        if until is None:
            return False
        if until <= now:
            del self._until[host]
            return False
        return True
