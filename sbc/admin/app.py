"""The admin HTTP application (aiohttp), run inside sbc's event loop.

`make_app` builds it over an `AdminBackend`; `start_admin` binds it to the
configured address. Every handler reads the backend when asked and returns
JSON; nothing here runs per packet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ..config.admin import AdminConfig
from ..io.logsetup import get_logger
from .auth import AccessControl, Handler, source_address
from .backend import AdminBackend, gateway_summary
from .calls import add_calls
from .fraud import add_fraud
from .metrics import make_registry
from .openapi import spec
from .stats import render_text, rule_table

log = get_logger("sbc.admin")

STATIC = Path(__file__).with_name("static")
MAX_BODY = 64 * 1024
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
MAX_BAN_SECONDS = 365 * 86400.0
DEFAULT_BAN_SECONDS = 86400.0
_REASON = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

BACKEND = web.AppKey("backend", AdminBackend)
ACCESS = web.AppKey("access", AccessControl)
REGISTRY = web.AppKey("registry", CollectorRegistry)
RELOAD_LOCK = web.AppKey("reload_lock", asyncio.Lock)

PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sbc admin</title></head>
<body><h1>sbc admin</h1>
<p>The dashboard is not installed. The API is described at
<a href="/openapi.json">/openapi.json</a> (send the bearer token).</p>
</body></html>
"""

_dumps = partial(json.dumps, default=str, ensure_ascii=False)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


# --------------------------------------------------------------------------
# Handlers


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC / "index.html"
    if page.is_file():
        return web.FileResponse(page)
    return web.Response(text=PLACEHOLDER, content_type="text/html")


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        ok, details = request.app[BACKEND].ready()
    except Exception as e:  # the probe must answer, whatever broke
        log.error("admin_ready_failed", error=repr(e)[:200])
        return _json({"ready": False, "reason": "readiness check failed"}, 503)
    return _json({**details, "ready": ok}, 200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": content_type})


async def openapi(request: web.Request) -> web.Response:
    return _json(spec())


async def stats(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    table = rule_table(backend.stats(), backend.gateway_figures())
    fmt = request.query.get("format", "json")
    if fmt == "text":
        return web.Response(text=render_text(table), content_type="text/plain")
    if fmt != "json":
        return _error(400, "format is json or text")
    return _json(table)


async def gateways(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    figures = backend.gateway_figures()
    rows = []
    for gw in backend.cfg.gateways:
        rows.append({**gateway_summary(gw), "figures": figures.get(gw.name, {})})
    return _json({"gateways": rows})


def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise web.HTTPBadRequest(text=_dumps({"error": f"limit is 1 to {MAX_LIMIT}"}),
                                 content_type="application/json")
    return int(text)


async def dialogs(request: web.Request) -> web.Response:
    limit = _limit(request)
    rows = request.app[BACKEND].dialogs(limit + 1)
    return _json({"count": min(len(rows), limit), "truncated": len(rows) > limit,
                  "dialogs": rows[:limit]})


async def registrations(request: web.Request) -> web.Response:
    """The registered phones: this node's bindings, then (in a cluster) the
    other nodes' this node knows of, each row naming its node."""
    limit = _limit(request)
    listing = getattr(request.app[BACKEND], "registrations", None)
    rows = listing(limit + 1) if listing is not None else []
    return _json({"count": min(len(rows), limit), "truncated": len(rows) > limit,
                  "registrations": rows[:limit]})


async def bans(request: web.Request) -> web.Response:
    limit = _limit(request)
    backend = request.app[BACKEND]
    rows = backend.bans(limit + 1)
    return _json({"count": min(len(rows), limit), "truncated": len(rows) > limit,
                  "by_reason": backend.ban_counts(), "bans": rows[:limit]})


def _host(value: object) -> str | None:
    """A normalised IP address (IPv4-mapped IPv6 as IPv4), or None."""
    if not isinstance(value, str) or "%" in value:
        return None
    addr = source_address(value.strip())
    return str(addr) if addr is not None else None


async def ban(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return _error(415, "send application/json")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "the body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "the body should be an object: {host, seconds, reason}")
    unknown = set(body) - {"host", "seconds", "reason"}
    if unknown:
        return _error(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    host = _host(body.get("host"))
    if host is None:
        return _error(400, "host should be an IPv4 or IPv6 address")
    seconds = body.get("seconds", DEFAULT_BAN_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or not 0 < seconds <= MAX_BAN_SECONDS:
        return _error(400, f"seconds should be a number above 0, at most {MAX_BAN_SECONDS:g}")
    reason = body.get("reason", "manual")
    if not isinstance(reason, str) or not _REASON.fullmatch(reason):
        return _error(400, "reason should be 1 to 64 of letters, digits and _ . : -")
    explained = request.app[BACKEND].ban(host, float(seconds), reason)
    log.info("admin_ban", host=host, seconds=seconds, reason=reason, by=request.remote)
    return _json(explained, 201)


async def unban(request: web.Request) -> web.Response:
    host = _host(request.match_info["host"])
    if host is None:
        return _error(400, "host should be an IPv4 or IPv6 address")
    if not request.app[BACKEND].unban(host):
        return _error(404, f"{host} is not banned")
    log.info("admin_unban", host=host, by=request.remote)
    return _json({"host": host, "unbanned": True})


async def reload(request: web.Request) -> web.Response:
    lock = request.app[RELOAD_LOCK]
    if lock.locked():
        return _error(409, "a reload is already running")
    async with lock:
        try:
            ok, message = await request.app[BACKEND].reload()
        except Exception as e:  # a bug in the reload must still answer, and log once
            log.error("admin_reload_failed", error=repr(e)[:500], by=request.remote)
            return _json({"ok": False, "error": "reload failed: internal error"}, 500)
    log.info("admin_reload", ok=ok, message=message[:2000], by=request.remote)
    if ok:
        return _json({"ok": True, "message": message})
    return _json({"ok": False, "error": message}, 422)


# --------------------------------------------------------------------------
# Application


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Headers on every answer; errors as JSON; a handler's bug becomes a 500
    and one log line."""
    try:
        response = await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        body = e.text if e.content_type == "application/json" and e.text else \
            _dumps({"error": e.reason})
        kept = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "retry-after")}
        response = web.Response(text=body, status=e.status, content_type="application/json",
                                headers=kept)
    except Exception as e:  # one request fails, the admin (and sbc) go on
        log.error("admin_handler_failed", path=request.path[:200], error=repr(e)[:500])
        response = _error(500, "internal error")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def make_app(backend: AdminBackend, cfg: AdminConfig, *,
             clock: Callable[[], float] = time.monotonic,
             process_metrics: bool = True) -> web.Application:
    """The admin application over `backend`. Access rules come from `cfg`, and
    follow `backend.cfg.admin` after a reload (see `AccessControl`)."""
    access = AccessControl(cfg, clock, lambda: backend.cfg.admin)
    app = web.Application(middlewares=[_guard, access.middleware], client_max_size=MAX_BODY)
    app[BACKEND] = backend
    app[ACCESS] = access
    app[REGISTRY] = make_registry(backend, access.refused, process=process_metrics)
    app[RELOAD_LOCK] = asyncio.Lock()
    r = app.router
    r.add_get("/", index)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", openapi)
    r.add_get("/api/stats", stats)
    r.add_get("/api/gateways", gateways)
    r.add_get("/api/dialogs", dialogs)
    r.add_get("/api/registrations", registrations)
    r.add_get("/api/bans", bans)
    r.add_post("/api/bans", ban)
    r.add_delete("/api/bans/{host}", unban)
    r.add_post("/api/reload", reload)
    add_fraud(app, getattr(backend, "fraud", None), app[REGISTRY])  # toll fraud (sbc.admin.fraud)
    add_calls(app, getattr(backend, "trace", None), app[REGISTRY])  # calls, traces (sbc.admin.calls)
    if STATIC.is_dir():
        r.add_static("/static/", STATIC, append_version=False)
    return app


async def start_admin(backend: AdminBackend, cfg: AdminConfig) -> web.AppRunner | None:
    """Serve the admin on `cfg.host:cfg.port` in the running loop; None when
    disabled. Raises OSError when the address cannot be bound. Stop it with
    `await runner.cleanup()`."""
    if not cfg.enabled:
        return None
    runner = web.AppRunner(make_app(backend, cfg), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    log.info("admin_listening", address=cfg.hostport, token=cfg.token is not None,
             allow=list(cfg.allow), open_beyond_loopback=not ipaddress.ip_address(cfg.host).is_loopback)
    return runner
