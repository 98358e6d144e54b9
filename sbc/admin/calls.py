"""Recent calls and their SIP traces in the admin application:
`GET /api/calls` (one record per call, newest first; `gateway`, `status`,
`number` and `limit` filter), `GET /api/calls/{call_id}/trace` (its
messages, in order, with direction, addresses, transport, µs time and the
whole text) and `GET /api/calls/{call_id}/pcap` (the same as a pcap file).
While tracing is off (the `trace` section) the list is empty and the
trace and pcap of any call answer 404."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from .trace_metrics import TraceCollector

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 500
_SAFE = re.compile(r"[^A-Za-z0-9_.@-]+")


class CallsBackend(Protocol):
    """What the admin needs of the trace's shell (sbc.io.trace.TraceService)."""

    @property
    def enabled(self) -> bool: ...
    def calls(self, limit: int = 1000) -> list[dict[str, Any]]: ...
    def trace(self, call_id: str) -> dict[str, Any] | None: ...
    def pcap(self, call_id: str) -> bytes | None: ...
    def figures(self) -> dict[str, Any]: ...


CALLS = web.AppKey("calls", CallsBackend)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             dumps=lambda d: json.dumps(d, default=str, ensure_ascii=False))


_OFF = {"error": "tracing is off (the trace section's enabled)"}


def _backend(request: web.Request) -> CallsBackend | None:
    backend = request.app.get(CALLS)
    return backend if backend is not None and backend.enabled else None


def matches(record: dict[str, Any], gateway: str, status: str, number: str) -> bool:
    """The filters of /api/calls: gateway exactly, status as a code ("486"),
    a class ("4xx"), "answered", "failed" or "ongoing", number as a part of
    the caller's or the callee's."""
    if gateway and record.get("gateway") != gateway:
        return False
    code = record.get("status")
    if status:
        if status == "answered":
            ok = code is not None and 200 <= code < 300
        elif status == "failed":
            ok = code is not None and code >= 300
        elif status == "ongoing":
            ok = code is None
        elif len(status) == 3 and status.endswith("xx") and status[0].isdigit():
            ok = code is not None and code // 100 == int(status[0])
        else:
            ok = str(code) == status
        if not ok:
            return False
    return not number or number in record.get("from", "") or number in record.get("to", "")


async def calls(request: web.Request) -> web.Response:
    backend = _backend(request)
    if backend is None:  # the list is empty, not missing: the dashboard polls it
        return _json({"calls": [], "trace": {"enabled": False}})
    q = request.query
    try:
        limit = int(q.get("limit", DEFAULT_LIMIT))
    except ValueError:
        return _json({"error": "limit should be a whole number"}, 400)
    if not 1 <= limit <= MAX_LIMIT:
        return _json({"error": f"limit should be 1 to {MAX_LIMIT}"}, 400)
    gateway, status, number = (q.get(k, "")[:64] for k in ("gateway", "status", "number"))
    rows = [r for r in backend.calls(MAX_LIMIT) if matches(r, gateway, status, number)]
    return _json({"calls": rows[:limit], "trace": backend.figures()})


async def trace(request: web.Request) -> web.Response:
    backend = _backend(request)
    if backend is None:
        return _json(_OFF, 404)
    found = backend.trace(request.match_info["call_id"])
    if found is None:
        return _json({"error": "no such call in the trace"}, 404)
    return _json(found)


async def pcap(request: web.Request) -> web.StreamResponse:
    backend = _backend(request)
    if backend is None:
        return _json(_OFF, 404)
    call_id = request.match_info["call_id"]
    data = backend.pcap(call_id)
    if data is None:
        return _json({"error": "no such call in the trace"}, 404)
    name = _SAFE.sub("_", call_id)[:80] or "call"
    return web.Response(body=data, content_type="application/vnd.tcpdump.pcap",
                        headers={"Content-Disposition": f'attachment; filename="{name}.pcap"'})


def add_calls(app: web.Application, backend: CallsBackend | None,
              registry: CollectorRegistry | None = None) -> None:
    """The routes (answering 404 without a trace) and, with a trace service
    and a registry, its metrics (sbc.admin.trace_metrics). A Call-ID may hold
    a slash (RFC 3261 §25.1 `word`): the route takes everything up to the
    last path segment."""
    app.router.add_get("/api/calls", calls)
    app.router.add_get("/api/calls/{call_id:.+}/trace", trace)
    app.router.add_get("/api/calls/{call_id:.+}/pcap", pcap)
    if backend is not None:
        app[CALLS] = backend
        if registry is not None:
            registry.register(TraceCollector(backend))
