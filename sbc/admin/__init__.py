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

from .app import make_app, start_admin
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
