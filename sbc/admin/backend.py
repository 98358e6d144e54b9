"""What the admin application needs from the running sbc (`AdminBackend`), and
helpers that turn core objects into the JSON rows the API returns.

The admin never touches the engine directly: everything goes through this
protocol, read at request or scrape time, so tests drive the application with
a fake and nothing on the packet path updates a metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

from ..core.proxy.dialogs import Dialog
from ..core.verdict import PUBLIC_TCP, PUBLIC_TLS
from .timing import HistogramSnapshot

if TYPE_CHECKING:
    from ..config import Config, GatewayConfig
    from ..core.screen.bans import BanTable


class AdminBackend(Protocol):
    """The running sbc, as the admin application sees it."""

    @property
    def cfg(self) -> Config:
        """The configuration in force (the new one after a successful reload)."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters (each name -> count, by the names of sbc.core.reasons; see
        `Tally.snapshot`): "verdicts" (forward, reply, drop, absorbed: the
        engine's), "screen_drops" (drops before the parse, banned included),
        "drops" (the engine's), "absorbed", "parse_errors", "refusals",
        "offenses", "offenses_spared", "transport", "failovers" (reason ->
        calls sent on to the next VOS3000), "top_dropped_sources"; gauges:
        "bans", "transactions", "dialogs", "tcp_connections",
        "tls_connections"; "udp_public_received". Other keys are passed
        through to /api/stats."""
        ...

    def gateway_figures(self) -> dict[str, dict[str, int]]:
        """Per gateway name: "concurrent", "cps" (calls admitted in the last
        whole second), "admitted", "rejected_<limit>" counts."""
        ...

    def dialogs(self, limit: int) -> list[dict[str, Any]]:
        """At most `limit` dialogs (see `dialog_rows`)."""
        ...

    def bans(self, limit: int) -> list[dict[str, Any]]:
        """At most `limit` active bans, newest first, each `Ban.explain(now)`."""
        ...

    def ban_counts(self) -> dict[str, int]:
        """Active bans by reason."""
        ...

    def ban(self, host: str, seconds: float, reason: str) -> dict[str, Any]:
        """Ban `host` (a normalised IP address) by hand; the ban's explanation."""
        ...

    def unban(self, host: str) -> bool:
        """Lift a ban; False when `host` was not banned."""
        ...

    async def reload(self) -> tuple[bool, str]:
        """Re-read the configuration file: (True, what changed) when swapped
        in, (False, the error) when the old configuration stays."""
        ...

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether at least one VOS3000 address answers the OPTIONS pings,
        with details: "targets" (a row per address: "address", "state"
        up/down/unknown, "priority", ...), "down" (the addresses that are
        down), and "reason" when not ready; see `HealthTable.state`."""
        ...

    def processing_time(self) -> HistogramSnapshot | None:
        """Per-packet processing time (see `PacketTimer`), or None if not measured."""
        ...


# --------------------------------------------------------------------------
# Rows for the API, from core objects (for the backend's implementation)


_TRANSPORT_NAMES: dict[int, str] = {PUBLIC_TCP: "tcp", PUBLIC_TLS: "tls"}


def dialog_row(dlg: Dialog, now: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "call_id": dlg.call_id.decode("utf-8", "replace"),
        "gateway": dlg.gateway,
        "state": dlg.state.value,
        "direction": "inbound" if dlg.inbound else "outbound",
        "peer": _hostport(*dlg.peer),
        "transport": _TRANSPORT_NAMES.get(dlg.peer_channel, "udp"),
        "age_s": round(now - dlg.created, 1),
        "duration_s": round(now - dlg.confirmed_at, 1) if dlg.confirmed_at else 0.0,
    }
    if dlg.bye_at and dlg.active:
        row["ends_in_s"] = round(dlg.bye_at - now, 1)  # the gateway's duration limit
    return row


def dialog_rows(dialogs: Iterable[Dialog], now: float, limit: int,
                active_only: bool = True) -> list[dict[str, Any]]:
    """At most `limit` rows, calls in progress only unless `active_only` is False."""
    chosen = (d for d in dialogs if d.active or not active_only)
    return [dialog_row(d, now) for d in islice(chosen, limit)]


def ban_rows(table: BanTable, now: float, limit: int) -> list[dict[str, Any]]:
    """Active bans, newest first (the table keeps them in the order they were made)."""
    bans = (b for b in reversed(table.bans.values()) if now < b.expires_at)
    return [b.explain(now) for b in islice(bans, limit)]


def ban_counts(table: BanTable, now: float) -> dict[str, int]:
    return dict(Counter(b.reason for b in table.bans.values() if now < b.expires_at))


def gateway_summary(gw: GatewayConfig) -> dict[str, Any]:
    """A gateway's configuration without secrets (digest accounts by user name)."""
    lim = gw.limits
    return {
        "name": gw.name,
        "ip": list(gw.ip),
        "ip_port": [_hostport(h, p) for h, p in gw.ip_port],
        "digest_users": [acc.username for acc in gw.digest],
        "egress": gw.egress.hostport if gw.egress is not None else None,
        "options": gw.options.value,
        "limits": {"cps": lim.cps, "cps_burst": lim.burst, "max_concurrent": lim.max_concurrent,
                   "max_duration_s": lim.max_duration_s},
        "allowed_prefixes": list(gw.allowed_prefixes),
        "blocked_prefixes": list(gw.blocked_prefixes),
        "tech_prefixes": list(gw.tech_prefixes),
    }


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
