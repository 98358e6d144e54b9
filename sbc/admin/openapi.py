"""The OpenAPI 3.1 description of the admin endpoints, served at /openapi.json.

Written by hand; the tests check it against the OpenAPI schema and against
the application's routes, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from ..core.reasons import Stage

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_ERROR = _json("Error", _ref("Error"))
_REFUSALS = {
    "401": {**_json("Missing or wrong bearer token", _ref("Error")),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    "403": _json("Source address not allowed, or a cross-origin request", _ref("Error")),
    "429": {**_json("Too many failed authentications from this source", _ref("Error")),
            "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
}
_OPEN: list[dict[str, list[str]]] = [{}]  # security requirement that may be met by no credentials
_LIMIT = {"name": "limit", "in": "query", "required": False,
          "description": "Most rows returned (1 to 100000, default 1000)",
          "schema": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 1000}}

_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    "Health": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string", "const": "ok"}}},
    "Ready": {"type": "object", "required": ["ready"],
              "properties": {"ready": {"type": "boolean"},
                             "reason": {"type": "string",
                                        "description": "Why not ready (absent when ready)"},
                             "targets": {"type": "array", "description": "Each VOS3000 address",
                                         "items": {"type": "object", "properties": {
                                             "address": {"type": "string"},
                                             "state": {"enum": ["unknown", "up", "down"]},
                                             "priority": {"type": "integer"}}}},
                             "down": {"type": "array", "items": {"type": "string"},
                                      "description": "The VOS3000 addresses that are down"}},
              "additionalProperties": True},
    "Rule": {"type": "object", "required": ["rule", "target", "packets"],
             "properties": {"rule": {"type": "string"}, "target": {"type": "string"},
                            "packets": {"type": "integer"}, "gateway": {"type": "string"},
                            "stage": {"type": "string", "enum": [*map(str, Stage), "engine"],
                                      "description": "The stage of an engine drop"}}},
    "Chain": {"type": "object", "required": ["chain", "packets", "rules"],
              "properties": {"chain": {"type": "string",
                                       "enum": ["screen", "parse", "engine", "absorbed",
                                                "refusals", "limits"]},
                             "packets": {"type": "integer"},
                             "rules": {"type": "array", "items": _ref("Rule")},
                             "policy": _COUNTS}},
    "Stats": {"type": "object", "required": ["chains", "verdicts", "gauges", "counters"],
              "properties": {"chains": {"type": "array", "items": _ref("Chain")},
                             "verdicts": _COUNTS, "gauges": _COUNTS,
                             "counters": {"type": "object",
                                          "description": "The raw counters sbc keeps"}}},
    "Gateway": {"type": "object", "required": ["name", "figures"],
                "properties": {
                    "name": {"type": "string"},
                    "ip": {"type": "array", "items": {"type": "string"}},
                    "ip_port": {"type": "array", "items": {"type": "string"}},
                    "digest_users": {"type": "array", "items": {"type": "string"}},
                    "egress": {"type": ["string", "null"]},
                    "options": {"type": "string", "enum": ["answer", "pass"]},
                    "limits": {"type": "object", "properties": {
                        "cps": {"type": "number"}, "cps_burst": {"type": "number"},
                        "max_concurrent": {"type": "integer"},
                        "max_duration_s": {"type": "number"}}},
                    "allowed_prefixes": {"type": "array", "items": {"type": "string"}},
                    "blocked_prefixes": {"type": "array", "items": {"type": "string"}},
                    "tech_prefixes": {"type": "array", "items": {"type": "string"}},
                    "figures": {"description": "concurrent, cps, admitted, rejected_<limit>",
                                **_COUNTS}}},
    "Gateways": {"type": "object", "required": ["gateways"],
                 "properties": {"gateways": {"type": "array", "items": _ref("Gateway")}}},
    "Dialog": {"type": "object", "required": ["call_id", "gateway", "state"],
               "properties": {"call_id": {"type": "string"}, "gateway": {"type": "string"},
                              "state": {"type": "string",
                                        "enum": ["early", "confirmed", "ended"]},
                              "direction": {"type": "string", "enum": ["inbound", "outbound"]},
                              "peer": {"type": "string"},
                              "transport": {"type": "string", "enum": ["udp", "tcp", "tls"]},
                              "age_s": {"type": "number"}, "duration_s": {"type": "number"},
                              "ends_in_s": {"type": "number"}},
               "additionalProperties": True},
    "Dialogs": {"type": "object", "required": ["count", "truncated", "dialogs"],
                "properties": {"count": {"type": "integer"}, "truncated": {"type": "boolean"},
                               "dialogs": {"type": "array", "items": _ref("Dialog")}}},
    "Registrations": {"type": "object", "required": ["count", "truncated", "registrations"],
                      "properties": {"count": {"type": "integer"},
                                     "truncated": {"type": "boolean"},
                                     "registrations": {"type": "array", "items": {
                                         "type": "object", "required": ["aor", "node"],
                                         "properties": {"aor": {"type": "string"},
                                                        "node": {"type": ["string", "null"]},
                                                        "expires_s": {"type": "number"}},
                                         "additionalProperties": True}}}},
    "Ban": {"type": "object", "required": ["host", "reason", "expires_in_s"],
            "properties": {"host": {"type": "string"}, "reason": {"type": "string"},
                           "offenses": _COUNTS,
                           "first_seen_ago_s": {"type": "number"},
                           "last_seen_ago_s": {"type": "number"},
                           "ban_level": {"type": "integer"},
                           "expires_in_s": {"type": "number"},
                           "manual": {"type": "boolean"}},
            "additionalProperties": True},
    "Bans": {"type": "object", "required": ["count", "truncated", "by_reason", "bans"],
             "properties": {"count": {"type": "integer"}, "truncated": {"type": "boolean"},
                            "by_reason": _COUNTS,
                            "bans": {"type": "array", "items": _ref("Ban")}}},
    "BanRequest": {"type": "object", "required": ["host"], "additionalProperties": False,
                   "properties": {
                       "host": {"type": "string", "description": "IPv4 or IPv6 address"},
                       "seconds": {"type": "number", "exclusiveMinimum": 0,
                                   "maximum": 31536000, "default": 86400},
                       "reason": {"type": "string", "maxLength": 64,
                                  "pattern": "^[A-Za-z0-9_.:-]+$", "default": "manual"}}},
    "Unbanned": {"type": "object", "required": ["host", "unbanned"],
                 "properties": {"host": {"type": "string"}, "unbanned": {"type": "boolean"}}},
    "Reloaded": {"type": "object", "required": ["ok"],
                 "properties": {"ok": {"type": "boolean"}, "message": {"type": "string"},
                                "error": {"type": "string"}}},
}


def _op(summary: str, responses: dict[str, Any], *, open_: bool = False,
        **more: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses}}
    if open_:
        op["security"] = _OPEN
        op["responses"]["403"] = _REFUSALS["403"]
    else:
        op["responses"].update(_REFUSALS)
    op.update(more)
    return op


def spec(version: str = "0.1.0") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "sbc admin", "version": version,
                 "description": "Health, metrics, statistics, gateways, calls, bans and "
                                "reload of the sbc in front of VOS3000. Every request must "
                                "come from an allowed source address; all but /, /healthz "
                                "and /readyz need the bearer token when one is configured."},
        "security": [{"bearer": []}],
        "paths": {
            "/": {"get": _op("Dashboard page", {"200": {
                "description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
                open_=True, operationId="dashboard")},
            "/healthz": {"get": _op("The process is alive", {"200": _json("Alive", _ref("Health"))},
                                    open_=True, operationId="healthz")},
            "/readyz": {"get": _op("A VOS3000 address answers the OPTIONS pings", {
                "200": _json("Ready", _ref("Ready")),
                "503": _json("Not ready, with the reason", _ref("Ready"))},
                open_=True, operationId="readyz")},
            "/metrics": {"get": _op("Prometheus metrics", {"200": {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}},
                operationId="metrics")},
            "/openapi.json": {"get": _op("This document", {"200": _json(
                "OpenAPI document", {"type": "object"})}, operationId="openapi")},
            "/api/stats": {"get": _op("Counters per rule, like iptables -L -v", {
                "200": {"description": "Chains and rules",
                        "content": {_JSON: {"schema": _ref("Stats")},
                                    "text/plain": {"schema": {"type": "string"}}}}},
                operationId="stats",
                parameters=[{"name": "format", "in": "query", "required": False,
                             "schema": {"type": "string", "enum": ["json", "text"]}}])},
            "/api/gateways": {"get": _op("Gateways: configuration and live figures", {
                "200": _json("Gateways", _ref("Gateways"))}, operationId="gateways")},
            "/api/dialogs": {"get": _op("Calls in progress", {
                "200": _json("Dialogs", _ref("Dialogs")), "400": _ERROR},
                operationId="dialogs", parameters=[_LIMIT])},
            "/api/registrations": {"get": _op(
                "Registered phones: this node's bindings, then the other nodes' it knows of", {
                    "200": _json("Registrations", _ref("Registrations")), "400": _ERROR},
                operationId="registrations", parameters=[_LIMIT])},
            "/api/bans": {
                "get": _op("Active bans, newest first, with why", {
                    "200": _json("Bans", _ref("Bans")), "400": _ERROR},
                    operationId="listBans", parameters=[_LIMIT]),
                "post": _op("Ban a source by hand", {
                    "201": _json("The ban", _ref("Ban")), "400": _ERROR},
                    operationId="ban",
                    requestBody={"required": True,
                                 "content": {_JSON: {"schema": _ref("BanRequest")}}}),
            },
            "/api/bans/{host}": {"delete": _op("Lift a ban", {
                "200": _json("Lifted", _ref("Unbanned")), "400": _ERROR,
                "404": _json("Not banned", _ref("Error"))},
                operationId="unban",
                parameters=[{"name": "host", "in": "path", "required": True,
                             "schema": {"type": "string"}}])},
            "/api/reload": {"post": _op("Re-read the configuration file", {
                "200": _json("Swapped in", _ref("Reloaded")),
                "409": _json("A reload is already running", _ref("Error")),
                "422": _json("Invalid; the old configuration stays", _ref("Reloaded"))},
                operationId="reload")},
            # the toll-fraud watch (sbc.admin.fraud)
            "/api/fraud": {"get": _op("Toll-fraud watch: rules, blocks, alerts with why, figures", {
                "200": _json("The watch", {"type": "object"}), "404": _ERROR},
                operationId="fraud")},
            "/api/fraud/clear": {"post": _op("Lift a toll-fraud block and restart its counters", {
                "200": _json("Cleared", {"type": "object"}), "400": _ERROR, "404": _ERROR},
                operationId="fraudClear",
                requestBody={"required": True, "content": {_JSON: {"schema": {
                    "type": "object", "required": ["gateway", "rule"],
                    "properties": {"gateway": {"type": "string"}, "rule": {"type": "string"},
                                   "by": {"type": "string"}, "note": {"type": "string"}}}}}})},
            # calls and their SIP traces (sbc.admin.calls)
            "/api/calls": {"get": _op("Recent calls, newest first (empty while tracing is off)", {
                "200": _json("Calls and the ring's figures", {"type": "object"}), "400": _ERROR},
                operationId="calls",
                parameters=[{"name": n, "in": "query", "required": False,
                             "schema": {"type": "string"}}
                            for n in ("gateway", "status", "number", "limit")])},
            "/api/calls/{call_id}/trace": {"get": _op("A call's SIP messages, in order", {
                "200": _json("The call and its messages", {"type": "object"}), "404": _ERROR},
                operationId="callTrace",
                parameters=[{"name": "call_id", "in": "path", "required": True,
                             "schema": {"type": "string"}}])},
            "/api/calls/{call_id}/pcap": {"get": _op("A call's SIP messages as a pcap file", {
                "200": {"description": "pcap", "content": {"application/vnd.tcpdump.pcap": {
                    "schema": {"type": "string", "format": "binary"}}}}, "404": _ERROR},
                operationId="callPcap",
                parameters=[{"name": "call_id", "in": "path", "required": True,
                             "schema": {"type": "string"}}])},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
    }
