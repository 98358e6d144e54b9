"""The admin endpoint: an aiohttp application on a private address, with a
bearer token and a source-address allowlist (DESIGN.md, "admin").

- `app`: `make_app` (the routes) and `start_admin` (bind it in the running loop);
- `backend`: `AdminBackend`, what the application needs from the running sbc,
  and helpers that turn core objects into API rows;
- `auth`: access control (allowlist, token, failed-authentication limits);
- `metrics`: the Prometheus collector, read at scrape time;
- `stats`: counters per rule, like `iptables -L -v`;
- `openapi`: the OpenAPI description served at /openapi.json;
- `timing`: `PacketTimer`, per-packet processing time as histogram counts.
"""

from typing import Any

from .backend import AdminBackend, ban_counts, ban_rows, dialog_row, dialog_rows, gateway_summary
from .timing import HistogramSnapshot, PacketTimer

__all__ = [
    "AdminBackend",
    "HistogramSnapshot",
    "PacketTimer",
    "ban_counts",
    "ban_rows",
    "dialog_row",
    "dialog_rows",
    "gateway_summary",
    "make_app",
    "start_admin",
]


def __getattr__(name: str) -> Any:
    """`make_app` and `start_admin` on first use: the application pulls in
    aiohttp (some 20 MiB of a process), which an sbc with its admin endpoint
    off never loads."""
    if name in ("make_app", "start_admin"):
        from . import app
        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
