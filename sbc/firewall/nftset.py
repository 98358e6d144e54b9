"""The kernel's set of banned addresses, kept in step with the sbc's ban table.

When the sbc bans a source it also adds the address to the nftables set
`banned4` or `banned6` of its table, with the ban's duration as the element's
timeout, so the kernel drops the source's packets before they reach user space;
an unban deletes it again.  The kernel expires elements itself, so a ban that
simply runs out needs no call.

Bans arrive in bursts (a scan from many addresses), so requests are queued and
applied in batches: the first one waits up to `batch_window_s` for company, then
one `nft -f -` transaction applies them all.  The queue is bounded: when the
kernel side falls behind, the oldest requests are dropped and counted.  Nothing
here raises into the caller: a failing `nft` is logged (at most once per
`log_interval_s`) and counted, and the sbc keeps dropping banned sources in
user space either way.

The same queue keeps the sets of proved sources (`proved4` / `proved6`,
see sbc.firewall.steer) in step: `add(..., kind="proved")` and
`remove(..., kind="proved")`, with the proof's remaining time as timeout.

An nftables transaction is all or nothing, and deleting an element that is not
there (it expired a moment ago) is an error that would undo the whole batch.
Each command is therefore written so that it holds whatever the set contains:
an element is first added (a no-op when present), then deleted, then added
again with its new timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..io.logsetup import get_logger
from .render import BAN_SET_SIZE, render

__all__ = ["NftBanSet"]

log = get_logger("sbc.firewall")

# The kernel refuses very long timeouts; a ban this long is permanent in effect.
MAX_TIMEOUT_S = 365 * 86_400.0

# "/dev/stdin:3:35-43: Error: Could not process rule: No such file or directory"
_ERROR_LINE = re.compile(r"^[^\n:]*:(\d+):[\d-]+: Error:", re.MULTILINE)
_MAX_RETRIES = 8
_SETS = ("banned", "proved")


@dataclass(frozen=True, slots=True)
class _Op:
    kind: str  # "add", "remove", "flush"
    host: str = ""
    family: int = 4
    timeout_s: float = math.inf
    set: str = "banned"  # the sets banned4/6, or proved4/6


class NftBanSet:
    """Mirror bans into the `banned4` / `banned6` sets of `inet <table>`.

    `ruleset` is what `setup` loads: normally the whole rendered ruleset
    (`from_config`); None loads only the ban sets and a chain that drops their
    members, leaving anything already in the table alone.  `command_prefix` is
    put in front of the nft command, e.g. ``("ip", "netns", "exec", "ns1")``.
    `on_reset` is called when the table had vanished and was created again, so
    the caller can queue the bans in force once more.
    """

    def __init__(
        self,
        table: str = "sbc",
        *,
        nft: str = "nft",
        ruleset: str | None = None,
        command_prefix: Sequence[str] = (),
        command_timeout_s: float = 5.0,
        batch_window_s: float = 0.05,
        max_batch: int = 1000,
        max_pending: int = 100_000,
        log_interval_s: float = 10.0,
        on_reset: Callable[[], object] | None = None,
    ) -> None:
        self.table = table
        self.nft = nft
        self.ruleset = ruleset
        self.command_prefix = tuple(command_prefix)
        self.command_timeout_s = command_timeout_s
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.log_interval_s = log_interval_s
        self.on_reset = on_reset
        self._pending: deque[_Op] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._last_log = -math.inf
        self._suppressed = 0
        self.counters: dict[str, int] = dict.fromkeys(
            ("added", "removed", "flushed", "batches", "failed_batches", "failed_ops",
             "dropped", "invalid", "setup_failures"),
            0,
        )

    @classmethod
    def from_config(cls, cfg: Any, **kwargs: Any) -> NftBanSet:
        """For `cfg` (a `sbc.config.Config`): its table, nft path and whole ruleset,
        and room in the queue for every ban the ban table can hold."""
        kwargs.setdefault("ruleset", render(cfg, "nftables"))
        kwargs.setdefault("max_pending", max(10_000, cfg.bans.max_entries))
        return cls(cfg.firewall.table, nft=cfg.firewall.nft_path, **kwargs)

    # ------------------------------------------------------------------
    # The caller's side.  add, remove and flush only queue (they never block
    # and never fail); drain waits for the kernel.

    async def setup(self) -> bool:
        """Create the table and sets; True when nft accepted it.

        With a whole ruleset the table is replaced and its ban sets start
        empty: add the bans in force again afterwards.
        """
        ok, error = await self._run(self.ruleset if self.ruleset is not None else self._minimal())
        if not ok:
            self.counters["setup_failures"] += 1
            log.error("firewall_setup_failed", table=self.table, error=error)
        self._start()
        return ok

    def add(self, host: str, timeout_s: float, kind: str = "banned") -> None:
        """Queue a ban of `host` for `timeout_s` seconds (math.inf: until
        removed); with kind "proved", its proof instead."""
        address = self._address(host)
        if address is None:
            return
        if not timeout_s > 0 or kind not in _SETS:  # also NaN
            self.counters["invalid"] += 1
            return
        self._enqueue(_Op("add", str(address), address.version, timeout_s, kind))

    def remove(self, host: str, kind: str = "banned") -> None:
        """Queue the end of `host`'s ban (or proof); nothing happens if it has none."""
        address = self._address(host)
        if address is not None and kind in _SETS:
            self._enqueue(_Op("remove", str(address), address.version, set=kind))

    def flush(self) -> None:
        """Queue emptying both ban sets (after everything queued before)."""
        self._enqueue(_Op("flush"))

    async def drain(self) -> None:
        """Wait until everything queued so far has been applied or has failed."""
        self._start()
        while self._pending or not self._idle.is_set():
            await self._idle.wait()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Apply what is queued (waiting at most `timeout_s`), then stop."""
        if self._worker is None:
            return
        try:
            await asyncio.wait_for(self.drain(), timeout_s)
        except TimeoutError:
            pass
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stats(self) -> dict[str, int]:
        return {**self.counters, "pending": len(self._pending)}

    # ------------------------------------------------------------------
    # Queue and batches

    def _address(self, host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            address = ipaddress.ip_address(host.strip().strip("[]"))
        except (ValueError, AttributeError):
            self.counters["invalid"] += 1
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return address

    def _enqueue(self, op: _Op) -> None:
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.counters["dropped"] += 1
        self._pending.append(op)
        self._idle.clear()
        self._wake.set()
        self._start()

    def _start(self) -> None:
        if self._worker is None or self._worker.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop yet: `setup` starts the worker
                return
            self._worker = loop.create_task(self._work())

    async def _work(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.batch_window_s)
            while self._pending:
                n = min(len(self._pending), self.max_batch)
                batch = [self._pending.popleft() for _ in range(n)]
                try:
                    await self._apply(_coalesce(batch))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 -- the worker must outlive any bug
                    self._failed(len(batch), f"{type(exc).__name__}: {exc}")

    async def _apply(self, ops: list[_Op]) -> None:
        self.counters["batches"] += 1
        table_checked = False
        for _ in range(_MAX_RETRIES):
            if not ops:
                return
            script, lines = self._script(ops)
            ok, error = await self._run(script)
            if ok:
                self._done(ops)
                return
            if not table_checked:
                # The table or its sets may be gone (a `nft flush ruleset` by
                # hand): put them back once and retry.
                table_checked = True
                if not await self._table_exists() and await self.setup():
                    log.warning("firewall_table_recreated", table=self.table)
                    if self.on_reset is not None:
                        self.on_reset()
                    continue
                self.counters["failed_batches"] += 1
            bad = {lines[n] for n in map(int, _ERROR_LINE.findall(error)) if n in lines}
            if not bad:
                self._failed(len(ops), error)
                return
            self._failed(len(bad), error)
            ops = [op for i, op in enumerate(ops) if i not in bad]
        self._failed(len(ops), "too many failing commands in one batch")

    def _done(self, ops: list[_Op]) -> None:
        for op in ops:
            key = {"add": "added", "remove": "removed", "flush": "flushed"}[op.kind]
            self.counters[key] += 1

    def _failed(self, n: int, error: str) -> None:
        self.counters["failed_ops"] += n
        now = time.monotonic()
        if now - self._last_log < self.log_interval_s:
            self._suppressed += 1
            return
        log.warning("firewall_update_failed", table=self.table, ops=n, error=error[:500],
                    suppressed=self._suppressed)
        self._last_log = now
        self._suppressed = 0

    # ------------------------------------------------------------------
    # nft

    def _script(self, ops: list[_Op]) -> tuple[str, dict[int, int]]:
        """The nft commands for `ops`, and for each line number the op it belongs to."""
        out: list[str] = []
        lines: dict[int, int] = {}
        t = self.table
        for i, op in enumerate(ops):
            if op.kind == "flush":
                cmds = [f"flush set inet {t} banned4", f"flush set inet {t} banned6"]
            else:
                where = f"inet {t} {op.set}{op.family}"
                cmds = [f"add element {where} {{ {op.host} }}",
                        f"delete element {where} {{ {op.host} }}"]
                if op.kind == "add":
                    cmds.append(f"add element {where} {{ {op.host}{_timeout(op.timeout_s)} }}")
            for cmd in cmds:
                out.append(cmd)
                lines[len(out)] = i
        return "\n".join(out) + "\n", lines

    def _minimal(self) -> str:
        t = self.table
        return "\n".join((
            f"add table inet {t}",
            f"add set inet {t} banned4 {{ type ipv4_addr; flags timeout; size {BAN_SET_SIZE}; }}",
            f"add set inet {t} banned6 {{ type ipv6_addr; flags timeout; size {BAN_SET_SIZE}; }}",
            (f"add chain inet {t} bans "
             "{ type filter hook input priority filter - 5; policy accept; }"),
            f"flush chain inet {t} bans",
            f"add rule inet {t} bans ip saddr @banned4 drop",
            f"add rule inet {t} bans ip6 saddr @banned6 drop",
        )) + "\n"

    async def _table_exists(self) -> bool:
        ok, _ = await self._exec(("list", "set", "inet", self.table, "banned4"), None)
        return ok

    async def _run(self, script: str) -> tuple[bool, str]:
        return await self._exec(("-f", "-"), script.encode())

    async def _exec(self, args: Sequence[str], stdin: bytes | None) -> tuple[bool, str]:
        argv = [*self.command_prefix, self.nft, *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return False, f"cannot run {argv[0]}: {exc.strerror or exc}"
        try:
            _, err = await asyncio.wait_for(proc.communicate(stdin), self.command_timeout_s)
        except BaseException as exc:  # timeout or cancellation: leave no process behind
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError):
                return False, f"{' '.join(argv)} took longer than {self.command_timeout_s:g}s"
            raise
        text = err.decode(errors="replace").strip()
        if proc.returncode != 0:
            return False, text or f"{argv[0]} exited with status {proc.returncode}"
        return True, text


def _timeout(seconds: float) -> str:
    if math.isinf(seconds):
        return ""
    ms = max(1, round(min(seconds, MAX_TIMEOUT_S) * 1000))
    return f" timeout {ms // 1000}s" if ms % 1000 == 0 else f" timeout {ms}ms"


def _coalesce(ops: list[_Op]) -> list[_Op]:
    """Only the last request per address counts; a flush makes earlier bans
    moot (proofs are not flushed)."""
    last_flush = max((i for i, op in enumerate(ops) if op.kind == "flush"), default=-1)
    latest: dict[tuple[str, int, str], _Op] = {}
    for i, op in enumerate(ops):
        if op.kind == "flush" or (i < last_flush and op.set == "banned"):
            continue
        key = (op.set, op.family, op.host)
        latest.pop(key, None)  # keep the order of the latest request
        latest[key] = op
    head = [ops[last_flush]] if last_flush >= 0 else []
    return head + list(latest.values())
