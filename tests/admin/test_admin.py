"""The admin application over a fake backend: every endpoint, access control
(allowlist, token, failed-authentication limits), metrics text, reload
answers, the OpenAPI document; and the `admin:` configuration section."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, test_utils, web
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from sbc.admin import (
    PacketTimer,
    ban_counts,
    ban_rows,
    dialog_rows,
    make_app,
    start_admin,
)
from sbc.admin.auth import FAIL_BURST, LOG_BUDGET
from sbc.admin.openapi import spec
from sbc.admin.timing import HistogramSnapshot
from sbc.config import Config, ConfigError, parse_config
from sbc.config.admin import AdminConfig
from sbc.core.reasons import (
    SCREEN_REASONS,
    STAGE,
    Absorbed,
    DropReason,
    Offense,
    ParseReason,
    Refusal,
    TransportEvent,
)
from sbc.core.screen.bans import BanTable
from sbc.core.tally import Tally
from sbc.core.proxy.dialogs import Dialog, DialogState, DialogTable
from sbc.core.verdict import PUBLIC_TCP, PUBLIC_UDP
from sbc.io.logsetup import configure_logging, flush_logs

TOKEN = "s3cret-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CONFIG = f"""
gateways:
  - name: acme
    ip: ["198.51.100.10"]
    limits: {{cps: 10, max_concurrent: 100}}
    allowed_prefixes: ["+44"]
  - name: phones
    digest:
      - username: "1001"
        password: "very-secret-password"
admin:
  token: "{TOKEN}"
"""


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeBackend:
    """Implements AdminBackend over real core tables, with canned counters."""

    def __init__(self, cfg: Config, clock: Clock) -> None:
        self._cfg = cfg
        self.clock = clock
        self.table = BanTable()
        self.dialog_table = DialogTable()
        self.ready_state: tuple[bool, dict[str, Any]] = (True, {"last_rtt_ms": 3.2})
        self.reload_result: tuple[bool, str] = (True, "reloaded: 2 gateways")
        self.reload_gate: asyncio.Event | None = None
        self.next_cfg: Config | None = None
        self.timer: PacketTimer | None = None

    @property
    def cfg(self) -> Config:
        return self._cfg

    def stats(self) -> dict[str, Any]:
        return {
            "verdicts": {"forward": 120, "reply": 30, "drop": 7, "absorbed": 11},
            "drops": {"malformed": 4, "unknown_source": 3},
            "screen_drops": {"rate_per_ip": 50, "scanner": 9},
            "absorbed": {"hop_by_hop_100": 8, "ping_answer": 3},
            "parse_errors": {"bad_start_line": 3, "missing_mandatory_header": 1},
            "refusals": {"method_not_allowed": 2},
            "offenses": {"scanner": 9},
            "transport": {"tcp_idle_closed": 2},
            "bans": len(self.table),
            "udp_public_received": 216,
            "transactions": 5,
            "dialogs": len(self.dialog_table),
            "tcp_connections": 1,
            "gateways": self.gateway_figures(),
        }

    def gateway_figures(self) -> dict[str, dict[str, int]]:
        return {
            "acme": {"concurrent": 2, "cps": 1, "admitted": 40, "rejected_gateway_cps": 6,
                     "rejected_not_allowed_destination": 2},
            "phones": {"concurrent": 0, "cps": 0},
        }

    def dialogs(self, limit: int) -> list[dict[str, Any]]:
        return dialog_rows(self.dialog_table, self.clock(), limit)

    def bans(self, limit: int) -> list[dict[str, Any]]:
        return ban_rows(self.table, self.clock(), limit)

    def ban_counts(self) -> dict[str, int]:
        return ban_counts(self.table, self.clock())

    def ban(self, host: str, seconds: float, reason: str) -> dict[str, Any]:
        now = self.clock()
        return self.table.ban(host, now, reason=reason, duration=seconds, manual=True).explain(now)

    def unban(self, host: str) -> bool:
        return self.table.unban(host) is not None

    async def reload(self) -> tuple[bool, str]:
        if self.reload_gate is not None:
            await self.reload_gate.wait()
        if self.reload_result[0] and self.next_cfg is not None:
            self._cfg = self.next_cfg
        return self.reload_result

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return self.ready_state

    def processing_time(self) -> HistogramSnapshot | None:
        return self.timer.snapshot() if self.timer is not None else None


Make = Callable[..., Awaitable[test_utils.TestClient[web.Request, web.Application]]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(clock: Clock) -> FakeBackend:
    return FakeBackend(parse_config(CONFIG), clock)


@pytest.fixture
async def make(clock: Clock) -> AsyncIterator[Make]:
    clients: list[test_utils.TestClient[web.Request, web.Application]] = []

    async def make_client(backend: FakeBackend, admin: AdminConfig | None = None
                          ) -> test_utils.TestClient[web.Request, web.Application]:
        app = make_app(backend, admin or backend.cfg.admin, clock=clock)
        client = test_utils.TestClient(test_utils.TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make_client
    for client in clients:
        await client.close()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    yield out
    configure_logging()


def lines(out: io.StringIO, event: str) -> list[dict[str, Any]]:
    flush_logs()
    found = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return [f for f in found if f.get("event") == event]


PROTECTED = [
    ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/api/stats"),
    ("GET", "/api/gateways"), ("GET", "/api/dialogs"), ("GET", "/api/bans"),
    ("POST", "/api/bans"), ("DELETE", "/api/bans/192.0.2.1"), ("POST", "/api/reload"),
    ("GET", "/no/such/path"),
]

# --------------------------------------------------------------------------
# Health and readiness


async def test_healthz_needs_no_token(make: Make, backend: FakeBackend) -> None:
    client = await make(backend)
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    assert resp.headers["Cache-Control"] == "no-store"


async def test_readyz_follows_the_backend(make: Make, backend: FakeBackend) -> None:
    client = await make(backend)
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"ready": True, "last_rtt_ms": 3.2}
    backend.ready_state = (False, {"reason": "no answer to OPTIONS for 4.0 s (deadline 2 s)"})
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["ready"] is False and body["reason"].startswith("no answer to OPTIONS")


async def test_readyz_answers_503_when_the_check_breaks(make: Make, backend: FakeBackend,
                                                        logs: io.StringIO) -> None:
    def broken() -> tuple[bool, dict[str, Any]]:
        raise RuntimeError("boom")

    backend.ready = broken  # type: ignore[method-assign]
    client = await make(backend)
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["ready"] is False
    assert lines(logs, "admin_ready_failed")


# --------------------------------------------------------------------------
# Access control


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_401_without_token(make: Make, backend: FakeBackend, method: str,
                                 path: str) -> None:
    client = await make(backend)
    resp = await client.request(method, path)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="sbc admin"'
    assert await resp.json() == {"error": "a valid bearer token is required"}


async def test_401_with_a_wrong_token(make: Make, backend: FakeBackend) -> None:
    client = await make(backend)
    for header in ("Bearer nope", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"):
        resp = await client.get("/api/stats", headers={"Authorization": header})
        assert resp.status == 401, header
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    resp = await client.get("/api/stats", headers={"Authorization": f"bearer  {TOKEN} "})
    assert resp.status == 200


@pytest.mark.parametrize(("method", "path"), [*PROTECTED, ("GET", "/healthz"),
                                              ("GET", "/readyz"), ("GET", "/")])
async def test_403_from_a_source_outside_the_allowlist(make: Make, backend: FakeBackend,
                                                       method: str, path: str) -> None:
    # The test client connects from 127.0.0.1, which this allowlist leaves out;
    # the check comes before the token.
    admin = AdminConfig(token=SecretStr(TOKEN), allow=("10.0.0.0/8", "2001:db8::/32"))
    client = await make(backend, admin)
    resp = await client.request(method, path, headers=AUTH)
    assert resp.status == 403
    assert await resp.json() == {"error": "source address not allowed"}


async def test_allowlist_takes_ipv4_mapped_and_zoned_sources() -> None:
    from sbc.admin.auth import AccessControl, source_address

    access = AccessControl(AdminConfig(allow=("192.0.2.0/24", "fe80::/10")), Clock())
    assert access.allowed(source_address("::ffff:192.0.2.7"))
    assert access.allowed(source_address("fe80::1%eth0"))
    assert not access.allowed(source_address("198.51.100.1"))
    assert not access.allowed(source_address(None))
    assert not access.allowed(source_address("not-an-address"))


async def test_failed_authentication_is_rate_limited_per_source(
        make: Make, backend: FakeBackend, clock: Clock, logs: io.StringIO) -> None:
    client = await make(backend)
    for _ in range(int(FAIL_BURST)):
        assert (await client.get("/api/bans")).status == 401
    resp = await client.get("/api/bans")
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    # Past the budget even the right token is refused: no oracle for guesses.
    assert (await client.get("/api/bans", headers=AUTH)).status == 429
    # Probes and the page stay open.
    assert (await client.get("/healthz")).status == 200
    clock.t += 7.0  # one attempt earned back
    assert (await client.get("/api/bans", headers=AUTH)).status == 200
    assert (await client.get("/api/bans")).status == 401
    assert (await client.get("/api/bans")).status == 429
    refused = {(f["reason"]) for f in lines(logs, "admin_refused")}
    assert refused == {"token_missing", "auth_rate_limited"}


async def test_refusal_lines_are_budgeted_per_second(make: Make, backend: FakeBackend,
                                                     clock: Clock, logs: io.StringIO) -> None:
    admin = AdminConfig(token=SecretStr(TOKEN), allow=("10.0.0.0/8",))
    client = await make(backend, admin)
    for _ in range(LOG_BUDGET + 20):
        assert (await client.get("/api/stats", headers=AUTH)).status == 403
    assert len(lines(logs, "admin_refused")) == LOG_BUDGET
    clock.t += 1.0
    assert (await client.get("/api/stats")).status == 403
    last = lines(logs, "admin_refused")[-1]
    assert last["not_logged"] == 20
    assert last["reason"] == "source_not_allowed" and last["source"] == "127.0.0.1"
    assert TOKEN not in logs.getvalue()


async def test_cross_origin_posts_are_refused(make: Make, backend: FakeBackend) -> None:
    client = await make(backend)
    evil = {**AUTH, "Origin": "http://evil.example"}
    resp = await client.post("/api/reload", headers=evil)
    assert resp.status == 403
    assert await resp.json() == {"error": "cross-origin request refused"}
    own = f"http://{client.host}:{client.port}"
    assert (await client.post("/api/reload", headers={**AUTH, "Origin": own})).status == 200
    # A read is harmless: the browser keeps a cross-origin answer from the page.
    assert (await client.get("/api/stats", headers=evil)).status == 200


async def test_without_token_the_host_must_be_an_address(make: Make, backend: FakeBackend) -> None:
    # A page whose DNS name rebinds to 127.0.0.1 sends its own name as Host.
    client = await make(backend, AdminConfig())
    assert (await client.get("/api/stats")).status == 200
    assert (await client.get("/api/stats", headers={"Host": "localhost:8080"})).status == 200
    assert (await client.get("/api/stats", headers={"Host": "[::1]:8080"})).status == 200
    resp = await client.get("/api/stats", headers={"Host": "rebind.example:8080"})
    assert resp.status == 403


async def raw_status(client: test_utils.TestClient[web.Request, web.Application],
                     target: str) -> int:
    """The status of a request whose target goes out byte for byte."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                 .encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


@pytest.mark.parametrize("target", ["/healthz/../api/bans", "/static/../api/bans",
                                    "/static/%2e%2e/api/bans", "//api/bans", "/./api/bans",
                                    "/api/bans/", "/healthz?x=/../api/bans"])
async def test_public_paths_do_not_open_others(make: Make, backend: FakeBackend,
                                               target: str) -> None:
    client = await make(backend)
    status = await raw_status(client, target)
    assert status == (200 if target.startswith("/healthz?") else 401), target


async def test_access_rules_follow_a_reload_on_the_same_socket(
        make: Make, backend: FakeBackend, logs: io.StringIO) -> None:
    client = await make(backend)
    new_token = "another-token-abcdefghijkl"
    backend.next_cfg = parse_config(CONFIG.replace(TOKEN, new_token))
    assert (await client.post("/api/reload", headers=AUTH)).status == 200
    assert (await client.get("/api/stats", headers=AUTH)).status == 401
    assert (await client.get("/api/stats",
                             headers={"Authorization": f"Bearer {new_token}"})).status == 200
    assert lines(logs, "admin_access_updated")


async def test_a_new_address_keeps_the_old_rules_until_restart(
        make: Make, backend: FakeBackend, logs: io.StringIO) -> None:
    client = await make(backend)
    # Moved to another port without a token: the running socket keeps its token.
    backend.next_cfg = parse_config(CONFIG.replace(f'token: "{TOKEN}"', "port: 8081"))
    assert (await client.post("/api/reload", headers=AUTH)).status == 200
    assert (await client.get("/api/stats")).status == 401
    assert (await client.get("/api/stats", headers=AUTH)).status == 200
    (line,) = lines(logs, "admin_restart_needed")
    assert line["configured"] == "127.0.0.1:8081"


# --------------------------------------------------------------------------
# Endpoints


async def test_index_is_a_placeholder_page_without_token(make: Make,
                                                         backend: FakeBackend) -> None:
    client = await make(backend)
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert "sbc admin" in await resp.text()


async def test_metrics_parse_and_carry_gateway_labels(make: Make, backend: FakeBackend) -> None:
    backend.table.ban("192.0.2.9", 1000.0, reason="scanner")
    backend.table.ban("192.0.2.10", 1000.0, reason="scanner")
    backend.table.ban("192.0.2.11", 1000.0, reason="manual", manual=True)
    backend.timer = PacketTimer()
    for seconds in (0.00001, 0.00003, 0.0002, 0.5):
        backend.timer.observe(seconds)
    client = await make(backend)
    resp = await client.get("/metrics", headers=AUTH)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}

    def samples(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples
                if not s.name.endswith("_created")}

    packets = samples("sbc_packets")
    assert packets[(("verdict", "forward"),)] == 120
    assert packets[(("verdict", "drop"),)] == 7 + 59  # the engine's and the screen's
    assert packets[(("verdict", "absorbed"),)] == 11  # not drops
    drops = samples("sbc_drops")
    assert drops[(("reason", "rate_per_ip"), ("stage", "screen"))] == 50
    assert drops[(("reason", "unknown_source"), ("stage", "identify"))] == 3
    assert drops[(("reason", "malformed"), ("stage", "parse"))] == 4
    assert sum(drops.values()) == packets[(("verdict", "drop"),)]
    assert samples("sbc_absorbed") == {(("reason", "hop_by_hop_100"),): 8,
                                       (("reason", "ping_answer"),): 3}
    assert samples("sbc_refusals") == {(("reason", "method_not_allowed"),): 2}
    assert samples("sbc_offenses") == {(("kind", "scanner"),): 9}
    assert samples("sbc_parse_errors")[(("reason", "bad_start_line"),)] == 3
    assert samples("sbc_gateway_calls_admitted")[(("gateway", "acme"),)] == 40
    assert samples("sbc_gateway_concurrent_calls") == {(("gateway", "acme"),): 2,
                                                       (("gateway", "phones"),): 0}
    assert samples("sbc_gateway_cps")[(("gateway", "acme"),)] == 1
    assert samples("sbc_gateway_rejects") == {
        (("gateway", "acme"), ("limit", "gateway_cps")): 6,
        (("gateway", "acme"), ("limit", "not_allowed_destination")): 2}
    assert samples("sbc_gateway_max_concurrent")[(("gateway", "acme"),)] == 100
    assert samples("sbc_gateway_max_cps")[(("gateway", "acme"),)] == 10
    assert samples("sbc_bans_active") == {(): 3}
    assert samples("sbc_bans_active_by_reason") == {(("reason", "manual"),): 1,
                                                   (("reason", "scanner"),): 2}
    assert samples("sbc_backend_ready") == {(): 1}
    assert samples("sbc_dialogs") == {(): 0}
    hist = families["sbc_processing_seconds"]
    assert hist.type == "histogram"
    by_le = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert by_le["2.5e-05"] == 1 and by_le["0.0001"] == 2 and by_le["+Inf"] == 4
    assert "process_resident_memory_bytes" in families or "process_cpu_seconds" in families


async def test_metrics_without_histogram_and_not_ready(make: Make, backend: FakeBackend) -> None:
    backend.ready_state = (False, {"reason": "no OPTIONS answered yet"})
    client = await make(backend)
    text = await (await client.get("/metrics", headers=AUTH)).text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "sbc_processing_seconds" not in names
    assert "sbc_backend_ready 0.0" in text


async def test_metrics_per_vos3000_address(make: Make, backend: FakeBackend) -> None:
    backend.ready_state = (True, {"targets": [
        {"address": "10.0.0.1:5060", "state": "down", "priority": 0},
        {"address": "10.0.0.2:5060", "state": "up", "priority": 1},
        {"state": "up"}, "junk"], "down": ["10.0.0.1:5060"]})
    client = await make(backend)
    text = await (await client.get("/metrics", headers=AUTH)).text()
    up = {tuple(sorted(s.labels.items())): s.value
          for f in text_string_to_metric_families(text) if f.name == "sbc_backend_target_up"
          for s in f.samples}
    assert up == {(("priority", "0"), ("state", "down"), ("target", "10.0.0.1:5060")): 0,
                  (("priority", "1"), ("state", "up"), ("target", "10.0.0.2:5060")): 1}
    resp = await client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["down"] == ["10.0.0.1:5060"]


async def test_metrics_count_refused_admin_requests(make: Make, backend: FakeBackend) -> None:
    client = await make(backend)
    await client.get("/api/stats")
    text = await (await client.get("/metrics", headers=AUTH)).text()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "sbc_admin_refused"]
    assert [(s.labels, s.value) for s in family.samples if s.name.endswith("_total")] == [
        ({"reason": "token_missing"}, 1.0)]


async def test_stats_are_counters_per_rule(make: Make, backend: FakeBackend) -> None:
    client = await make(backend)
    resp = await client.get("/api/stats", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    chains = {c["chain"]: c for c in body["chains"]}
    assert list(chains) == ["screen", "parse", "engine", "absorbed", "refusals", "limits"]
    assert chains["screen"]["packets"] == 59
    assert chains["screen"]["rules"][0] == {"rule": "rate_per_ip", "target": "DROP",
                                            "packets": 50}
    assert chains["engine"]["policy"] == {"forward": 120, "reply": 30}
    assert chains["engine"]["rules"] == [
        {"rule": "malformed", "stage": "parse", "target": "DROP", "packets": 4},
        {"rule": "unknown_source", "stage": "identify", "target": "DROP", "packets": 3}]
    assert chains["absorbed"]["packets"] == 11 and chains["absorbed"]["rules"][0] == {
        "rule": "hop_by_hop_100", "target": "ABSORB", "packets": 8}
    assert chains["refusals"]["rules"] == [
        {"rule": "method_not_allowed", "target": "REPLY", "packets": 2}]
    assert {"rule": "not_allowed_destination", "gateway": "acme", "target": "REPLY 403",
            "packets": 2} in chains["limits"]["rules"]
    assert {"rule": "gateway_cps", "gateway": "acme", "target": "REPLY 503",
            "packets": 6} in chains["limits"]["rules"]
    assert body["gauges"]["transactions"] == 5
    assert body["counters"]["udp_public_received"] == 216


class TallyBackend(FakeBackend):
    """The fake backend, its counters from a real Tally in which every name
    of sbc.core.reasons has been counted once."""

    def __init__(self, cfg: Config, clock: Clock) -> None:
        super().__init__(cfg, clock)
        tally = self.tally = Tally()
        tally.banned[0] += 1
        for reason in DropReason:
            if reason in SCREEN_REASONS:
                tally.screened(reason, "192.0.2.1")
            else:
                tally.verdicts["drop"] += 1
                tally.dropped[reason] += 1
        for absorbed in Absorbed:
            tally.verdicts["drop"] += 1
            tally.dropped[absorbed] += 1
        tally.parse_errors.update(ParseReason)
        tally.refusals.update(Refusal)
        tally.offenses.update(Offense)
        tally.spared.update(Offense)
        tally.transport.update(TransportEvent)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), **self.tally.snapshot(),
                "top_dropped_sources": self.tally.top()}


async def test_metrics_and_stats_name_exactly_the_registry(make: Make, clock: Clock) -> None:
    backend = TallyBackend(parse_config(CONFIG), clock)
    client = await make(backend)
    text = await (await client.get("/metrics", headers=AUTH)).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def labels(name: str, label: str) -> list[str]:
        return [s.labels[label] for s in families[name].samples if s.name.endswith("_total")]

    def names(enum: Any) -> set[str]:
        return {m.value for m in enum}

    drops = {s.labels["reason"]: s.labels["stage"] for s in families["sbc_drops"].samples
             if s.name.endswith("_total")}
    assert drops == {r.value: STAGE[r].value for r in DropReason}
    assert sorted(labels("sbc_absorbed", "reason")) == sorted(names(Absorbed))
    assert sorted(labels("sbc_refusals", "reason")) == sorted(names(Refusal))
    assert sorted(labels("sbc_offenses", "kind")) == sorted(names(Offense))
    assert sorted(labels("sbc_offenses_spared", "kind")) == sorted(names(Offense))
    assert sorted(labels("sbc_parse_errors", "reason")) == sorted(names(ParseReason))
    assert sorted(labels("sbc_transport_events", "event")) == sorted(names(TransportEvent))
    packets = {s.labels["verdict"]: s.value for s in families["sbc_packets"].samples
               if s.name.endswith("_total")}
    assert packets["drop"] == len(DropReason) + 1  # the banned one twice: fast path and screen
    assert packets["absorbed"] == len(Absorbed)

    body = await (await client.get("/api/stats", headers=AUTH)).json()
    chains = {c["chain"]: c["rules"] for c in body["chains"]}
    assert {r["rule"] for r in chains["screen"]} == {r.value for r in SCREEN_REASONS}
    assert {r["rule"]: r["stage"] for r in chains["engine"]} == {
        r.value: STAGE[r].value for r in DropReason if r not in SCREEN_REASONS}
    assert {r["rule"] for r in chains["absorbed"]} == names(Absorbed)
    assert {r["rule"] for r in chains["refusals"]} == names(Refusal)
    assert {r["rule"] for r in chains["parse"]} == names(ParseReason)
    assert body["verdicts"] == {"forward": 0, "reply": 0,
                                "drop": len(DropReason) - len(SCREEN_REASONS),
                                "absorbed": len(Absorbed)}
    counters = body["counters"]
    for key, enum in (("offenses", Offense), ("offenses_spared", Offense),
                      ("transport", TransportEvent)):
        assert set(counters[key]) == names(enum), key


async def test_stats_as_text_like_iptables(make: Make, backend: FakeBackend) -> None:
    client = await make(backend)
    resp = await client.get("/api/stats?format=text", headers=AUTH)
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    assert "Chain screen (59 packets)" in text
    assert "Chain engine (7 packets, forward 120, reply 30)" in text
    assert any(line.split() == ["6", "REPLY", "503", "gateway_cps", "acme"]
               for line in text.splitlines())
    assert (await client.get("/api/stats?format=xml", headers=AUTH)).status == 400


async def test_gateways_show_config_and_figures_without_secrets(make: Make,
                                                                backend: FakeBackend) -> None:
    client = await make(backend)
    resp = await client.get("/api/gateways", headers=AUTH)
    assert resp.status == 200
    text = await resp.text()
    assert "very-secret-password" not in text
    acme, phones = json.loads(text)["gateways"]
    assert acme["name"] == "acme" and acme["ip"] == ["198.51.100.10"]
    assert acme["limits"] == {"cps": 10.0, "cps_burst": 10.0, "max_concurrent": 100,
                              "max_duration_s": 0.0}
    assert acme["allowed_prefixes"] == ["+44"]
    assert acme["figures"]["admitted"] == 40 and acme["figures"]["concurrent"] == 2
    assert phones["digest_users"] == ["1001"]
    assert phones["figures"] == {"concurrent": 0, "cps": 0}


def dialog(call_id: bytes, gateway: str, now: float, *, confirmed: bool = True,
           channel: int = PUBLIC_UDP) -> Dialog:
    d = Dialog(call_id, ("203.0.113.5", 5060), channel, now - 30.0, now + 3600.0, gateway)
    if confirmed:
        d.state = DialogState.CONFIRMED
        d.confirmed_at = now - 20.0
        d.bye_at = now + 100.0
    return d


async def test_dialogs_list_calls_in_progress(make: Make, backend: FakeBackend,
                                              clock: Clock) -> None:
    now = clock()
    backend.dialog_table.add(dialog(b"a@x", "acme", now))
    backend.dialog_table.add(dialog(b"b@x", "acme", now, confirmed=False, channel=PUBLIC_TCP))
    ended = dialog(b"c@x", "phones", now)
    backend.dialog_table.add(ended)
    backend.dialog_table.end(ended)
    client = await make(backend)
    resp = await client.get("/api/dialogs", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["count"] == 2 and body["truncated"] is False
    first, second = body["dialogs"]
    assert first == {"call_id": "a@x", "gateway": "acme", "state": "confirmed",
                     "direction": "outbound", "peer": "203.0.113.5:5060", "transport": "udp",
                     "age_s": 30.0, "duration_s": 20.0, "ends_in_s": 100.0}
    assert second["state"] == "early" and second["transport"] == "tcp"
    body = await (await client.get("/api/dialogs?limit=1", headers=AUTH)).json()
    assert body["count"] == 1 and body["truncated"] is True
    for bad in ("0", "-1", "x", "100001", "1.5"):
        resp = await client.get(f"/api/dialogs?limit={bad}", headers=AUTH)
        assert resp.status == 400, bad
        assert "limit" in (await resp.json())["error"]


async def test_bans_list_ban_and_unban(make: Make, backend: FakeBackend, clock: Clock,
                                       logs: io.StringIO) -> None:
    backend.table.ban("192.0.2.50", clock() - 10, reason="scanner", counts={"scanner": 5})
    client = await make(backend)
    body = await (await client.get("/api/bans", headers=AUTH)).json()
    assert body["count"] == 1 and body["by_reason"] == {"scanner": 1}
    assert body["bans"][0]["host"] == "192.0.2.50"
    assert body["bans"][0]["offenses"] == {"scanner": 5}

    resp = await client.post("/api/bans", headers=AUTH,
                             json={"host": "2001:DB8::7", "seconds": 3600, "reason": "fraud"})
    assert resp.status == 201
    ban = await resp.json()
    assert ban["host"] == "2001:db8::7" and ban["reason"] == "fraud" and ban["manual"] is True
    assert ban["expires_in_s"] == 3600.0
    body = await (await client.get("/api/bans", headers=AUTH)).json()
    assert [b["host"] for b in body["bans"]] == ["2001:db8::7", "192.0.2.50"]  # newest first
    assert lines(logs, "admin_ban")[0]["host"] == "2001:db8::7"

    resp = await client.post("/api/bans", headers=AUTH, json={"host": "::ffff:192.0.2.60"})
    assert (await resp.json())["host"] == "192.0.2.60"  # default reason and duration
    assert backend.table.bans["192.0.2.60"].expires_at == clock() + 86400.0

    resp = await client.delete("/api/bans/2001:db8::7", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"host": "2001:db8::7", "unbanned": True}
    assert (await client.delete("/api/bans/2001:db8::7", headers=AUTH)).status == 404
    assert (await client.delete("/api/bans/nonsense", headers=AUTH)).status == 400
    assert "2001:db8::7" not in backend.table.bans
    assert lines(logs, "admin_unban")


@pytest.mark.parametrize("body", [
    {"host": "example.com"}, {"host": 3232235777}, {},
    {"host": "192.0.2.1", "seconds": 0}, {"host": "192.0.2.1", "seconds": -5},
    {"host": "192.0.2.1", "seconds": "60"}, {"host": "192.0.2.1", "seconds": True},
    {"host": "192.0.2.1", "seconds": 1e12},
    {"host": "192.0.2.1", "reason": "two words"}, {"host": "192.0.2.1", "reason": ""},
    {"host": "192.0.2.1", "reason": "x" * 65}, {"host": "192.0.2.1", "until": 5},
    ["192.0.2.1"],
])
async def test_ban_refuses_bad_input(make: Make, backend: FakeBackend, body: Any) -> None:
    client = await make(backend)
    resp = await client.post("/api/bans", headers=AUTH, json=body)
    assert resp.status == 400
    assert "error" in await resp.json()
    assert len(backend.table) == 0


async def test_ban_needs_a_json_body(make: Make, backend: FakeBackend) -> None:
    client = await make(backend)
    resp = await client.post("/api/bans", headers=AUTH, data="host=192.0.2.1")
    assert resp.status == 415
    resp = await client.post("/api/bans", headers={**AUTH, "Content-Type": "application/json"},
                             data="{not json")
    assert resp.status == 400
    resp = await client.post("/api/bans", headers={**AUTH, "Content-Type": "application/json"},
                             data=b"[" * 70_000)
    assert resp.status == 413
    assert "error" in await resp.json()


async def test_reload_success_and_failure(make: Make, backend: FakeBackend,
                                          logs: io.StringIO) -> None:
    client = await make(backend)
    resp = await client.post("/api/reload", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"ok": True, "message": "reloaded: 2 gateways"}
    error = "sbc.yaml:12: public.port: Input should be less than or equal to 65535"
    backend.reload_result = (False, error)
    resp = await client.post("/api/reload", headers=AUTH)
    assert resp.status == 422
    assert await resp.json() == {"ok": False, "error": error}
    assert [line["ok"] for line in lines(logs, "admin_reload")] == [True, False]


async def test_one_reload_at_a_time(make: Make, backend: FakeBackend) -> None:
    backend.reload_gate = asyncio.Event()
    client = await make(backend)
    first = asyncio.ensure_future(client.post("/api/reload", headers=AUTH))
    for _ in range(100):
        await asyncio.sleep(0.01)
        second = await client.post("/api/reload", headers=AUTH)
        if second.status == 409:
            break
    assert second.status == 409
    backend.reload_gate.set()
    assert (await first).status == 200


async def test_a_handler_bug_is_a_json_500(make: Make, backend: FakeBackend,
                                           logs: io.StringIO) -> None:
    def broken() -> dict[str, Any]:
        raise KeyError("verdicts")

    backend.stats = broken  # type: ignore[method-assign]
    client = await make(backend)
    resp = await client.get("/api/stats", headers=AUTH)
    assert resp.status == 500
    assert await resp.json() == {"error": "internal error"}
    assert lines(logs, "admin_handler_failed")[0]["path"] == "/api/stats"


async def test_unknown_paths_and_methods_are_json(make: Make, backend: FakeBackend) -> None:
    client = await make(backend)
    resp = await client.get("/nope", headers=AUTH)
    assert resp.status == 404 and await resp.json() == {"error": "Not Found"}
    resp = await client.put("/api/bans", headers=AUTH)
    assert resp.status == 405 and "POST" in resp.headers["Allow"]


# --------------------------------------------------------------------------
# OpenAPI


async def test_openapi_document_is_valid_and_matches_the_routes(make: Make,
                                                                backend: FakeBackend) -> None:
    client = await make(backend)
    resp = await client.get("/openapi.json", headers=AUTH)
    assert resp.status == 200
    doc = await resp.json()
    validate(doc)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    app = make_app(backend, backend.cfg.admin)
    routed = {(r.resource.canonical, r.method) for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None
              and not r.resource.canonical.startswith("/static")}
    assert documented == routed


def test_openapi_security_marks_the_open_paths() -> None:
    doc = spec()
    open_paths = {p for p, ops in doc["paths"].items()
                  if any(op.get("security") == [{}] for op in ops.values())}
    assert open_paths == {"/", "/healthz", "/readyz"}


# --------------------------------------------------------------------------
# Serving in the loop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_start_admin_serves_and_stops(backend: FakeBackend) -> None:
    admin = AdminConfig(port=free_port(), token=SecretStr(TOKEN))
    runner = await start_admin(backend, admin)
    assert runner is not None
    try:
        async with ClientSession() as session:
            url = f"http://127.0.0.1:{admin.port}"
            async with session.get(url + "/healthz") as resp:
                assert resp.status == 200
            async with session.get(url + "/api/stats", headers=AUTH) as resp:
                assert resp.status == 200
        with pytest.raises(OSError):
            await start_admin(backend, admin)  # the port is taken
    finally:
        await runner.cleanup()
    assert await start_admin(backend, AdminConfig(enabled=False)) is None


# --------------------------------------------------------------------------
# Helpers the backend uses


def test_packet_timer() -> None:
    t = PacketTimer((0.001, 0.01))
    for s in (0.0005, 0.001, 0.002, 1.0):
        t.observe(s)
    snap = t.snapshot()
    assert snap.buckets == ((0.001, 2), (0.01, 3), (float("inf"), 4))
    assert snap.observations == 4 and snap.sum == pytest.approx(1.0035)
    with pytest.raises(ValueError):
        PacketTimer((0.01, 0.001))


def test_ban_rows_skip_expired_and_cap(clock: Clock) -> None:
    table = BanTable()
    now = clock()
    table.ban("192.0.2.1", now - 1000, reason="scanner", duration=10)  # expired, not yet swept
    for i in range(5):
        table.ban(f"192.0.2.{10 + i}", now, reason="rate_limit")
    rows = ban_rows(table, now, 3)
    assert [r["host"] for r in rows] == ["192.0.2.14", "192.0.2.13", "192.0.2.12"]
    assert ban_counts(table, now) == {"rate_limit": 5}


def test_dialog_rows_cap_and_state(clock: Clock) -> None:
    table = DialogTable()
    for i in range(4):
        table.add(dialog(b"%d" % i, "acme", clock()))
    assert len(dialog_rows(table, clock(), 2)) == 2
    ended = table.get(b"0", b"")
    assert ended is not None
    table.end(ended)
    assert len(dialog_rows(table, clock(), 10)) == 3
    assert len(dialog_rows(table, clock(), 10, active_only=False)) == 4


# --------------------------------------------------------------------------
# The admin: configuration section


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "x.yaml")
    return str(e.value)


def test_admin_defaults() -> None:
    admin = Config().admin
    assert admin == AdminConfig()
    assert (admin.enabled, admin.host, admin.port, admin.token) == (True, "127.0.0.1", 8080, None)
    assert admin.allow == ("127.0.0.0/8", "::1")
    assert (admin.ping_interval_s, admin.ping_timeout_s) == (5.0, 2.0)
    cfg = parse_config('admin:\n  allow: ["127.0.0.0/8", "::1/128"]\n  ping_interval_s: 5\n')
    assert cfg.admin == admin
    assert parse_config("admin:\n").admin == admin


def test_admin_beyond_loopback_needs_a_token() -> None:
    assert config_error("admin:\n  host: 0.0.0.0\n") == (
        "x.yaml:2: admin.token: required when host is 0.0.0.0: an admin endpoint reachable "
        "from other machines needs a bearer token (or listen on 127.0.0.1)")
    assert "admin.token: required when host is 10.0.0.5" in config_error(
        "admin: {host: 10.0.0.5}")
    cfg = parse_config(f'admin: {{host: 10.0.0.5, token: "{TOKEN}", allow: [10.0.0.0/24]}}')
    assert cfg.admin.token is not None and cfg.admin.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(cfg)
    assert parse_config("admin: {host: 10.0.0.5, enabled: false}").admin.enabled is False
    assert parse_config("admin: {host: '::1'}").admin.host == "::1"


@pytest.mark.parametrize(("text", "message"), [
    ("admin: {token: short}", "x.yaml:1: admin.token: should be at least 16 characters"),
    ("admin: {token: 'has spaces in the token'}", "admin.token: may only contain"),
    ("admin: {token: 1234567890123456789}", "admin.token: should be a token string"),
    ("admin: {host: admin.example}", "admin.host: 'admin.example' is not an IPv4 or IPv6"),
    ("admin: {port: 0}", "admin.port: Input should be greater than or equal to 1"),
    ("admin: {allow: []}", "admin.allow: should not be empty"),
    ("admin: {allow: [10.0.0.1/8]}", "admin.allow[0]: '10.0.0.1/8' has host bits set"),
    ("admin: {allow: ['::1', '::1/128']}", "admin.allow[1]: ::1 is listed twice in allow"),
    ("admin: {ping_timeout_s: 6}", "admin.ping_timeout_s: must be at most admin.ping_int"),
    ("admin: {ping_interval_s: 0}", "admin.ping_interval_s: Input should be greater than 0"),
    ("admin: {enabled: 'yes'}", "admin.enabled: Input should be a valid boolean"),
    ("admin: {tokn: x}", "admin.tokn: unknown key (did you mean 'token'?)"),
    ("admin: {port: 5060}", "admin.port: 127.0.0.1:5060 is the public SIP TCP socket"),
])
def test_admin_config_errors_name_the_field(text: str, message: str) -> None:
    assert message in config_error(text)


def test_example_file_token_example_is_valid() -> None:
    path = Path(__file__).parents[2] / "configs" / "sbc.example.yaml"
    lines = path.read_text().splitlines()
    index = [line.strip() for line in lines].index("token: null")
    assert lines[index + 1].lstrip().startswith("# token:")
    lines[index] = lines[index + 1].replace("# ", "", 1)
    del lines[index + 1]
    token = parse_config("\n".join(lines), "example").admin.token
    assert token is not None and len(token.get_secret_value()) == 32


def test_admin_port_may_match_a_udp_only_public_port() -> None:
    cfg = parse_config("public: {transports: [udp]}\nadmin: {port: 5060}")
    assert cfg.admin.port == 5060
