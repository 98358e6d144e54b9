"""Keeps the proved sources (sbc.core.screen.lanes.TrustedSources) in step
with the engine, and the kernel's `proved4` / `proved6` sets in step with
them, as BanKeeper does for bans.

A source proves itself by a registration (until its binding expires) or by a
confirmed dialog (for `lanes.proof_timeout_s`); the engine reports both
through its sinks, which this keeper wraps. Gateways (by address) are left
out: they ride the trusted lane by configuration. The periodic sweep renews
the proofs that still hold (`Engine.proved`: a registration, a dialog, an
open connection) and lets the others lapse; a kernel element lives a little
longer than its proof (KERNEL_SLACK_S), so the sweep can renew it in time,
and lapses by itself if sbc is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core.proxy.dialogs import DialogState
from ..core.screen.lanes import TrustedSources

if TYPE_CHECKING:
    from ..core.engine import Engine
    from ..core.identify.registrar import Binding
    from ..core.proxy.dialogs import Dialog
    from ..firewall.nftset import NftBanSet

KERNEL_SLACK_S = 30.0


class TrustedKeeper:
    def __init__(self, engine: Engine, sources: TrustedSources, clock: Callable[[], float], *,
                 proof_timeout_s: float, kernel: NftBanSet | None = None) -> None:
        self.engine = engine
        self.sources = sources
        self.clock = clock
        self.proof_timeout_s = proof_timeout_s
        self.kernel = kernel
        self.pair_hosts: frozenset[str] = frozenset()  # hosts of ip_port gateways

    def attach(self) -> None:
        """Hear of confirmed dialogs and registrations beside whoever listens now."""
        engine = self.engine
        on_dialog, on_bindings = engine.on_dialog, engine.on_bindings

        def dialog(event: str, dlg: Dialog) -> None:
            on_dialog(event, dlg)
            self.dialog(event, dlg)

        def bindings(aor: str, found: list[Binding]) -> None:
            on_bindings(aor, found)
            self.bindings(found)

        engine.on_dialog = dialog
        engine.on_bindings = bindings

    # ------------------------------------------------------------------ proofs

    def is_gateway(self, host: str, port: int) -> bool:
        gateways = self.engine.gateways
        return gateways is not None and gateways.by_source(host, port) is not None

    def trusted(self, host: str, port: int) -> bool:
        """Rides the trusted lane: a gateway by address, or a proved source."""
        return host in self.sources or self.is_gateway(host, port)

    def trusted_host(self, host: str) -> bool:
        """May take a reserved connection slot (any source port)."""
        return (host in self.sources or host in self.pair_hosts
                or self.is_gateway(host, 1))

    def dialog(self, event: str, dlg: Dialog) -> None:
        if event == "confirmed":
            now = self.clock()
            self.prove(dlg.peer[0], dlg.peer[1], now + self.proof_timeout_s, now)

    def bindings(self, found: list[Binding]) -> None:
        now = self.clock()
        for b in found:
            if b.expires_at > now:
                self.prove(b.source[1], b.source[2], b.expires_at, now)  # (channel, host, port)

    def prove(self, host: str, port: int, until: float, now: float) -> None:
        if self.is_gateway(host, port):
            return
        if self.sources.prove(host, until) and self.kernel is not None:
            self.kernel.add(host, until - now + KERNEL_SLACK_S, kind="proved")

    # ------------------------------------------------------------------ upkeep

    def sweep(self, now: float) -> None:
        renewed, lapsed = self.sources.expire(now, self.engine.proved, self.proof_timeout_s)
        if self.kernel is None:
            return
        for host, until in renewed:
            self.kernel.add(host, until - now + KERNEL_SLACK_S, kind="proved")
        for host in lapsed:
            self.kernel.remove(host, kind="proved")

    def restore(self, now: float) -> None:
        """At start: the registrations and confirmed dialogs sbc kept; and
        every proof into the kernel again (its table was just loaded)."""
        engine = self.engine
        registrar = engine.registrar
        if registrar is not None:
            for aor in registrar.aors():
                self.bindings(registrar.bindings(aor))
        for dlg in engine.dialogs:
            if dlg.state is DialogState.CONFIRMED:
                self.prove(dlg.peer[0], dlg.peer[1], now + self.proof_timeout_s, now)
        self.kernel_restore(now)

    def kernel_restore(self, now: float) -> None:
        if self.kernel is None:
            return
        for host in self.sources.hosts():
            until = self.sources.until(host)
            if until is not None:
                self.kernel.add(host, max(until - now, 1.0) + KERNEL_SLACK_S, kind="proved")

    def stats(self) -> dict[str, int]:
        return {"proved": len(self.sources), "proved_refused": self.sources.refused}
