"""The `admin` section: where the admin HTTP endpoint listens, who may use it
(a bearer token and a source-address allowlist), and how readiness is judged
(the OPTIONS pings sbc sends to VOS3000).

`sbc.config` adds this section to `Config` as `admin` and calls `check_admin`
for the rule that spans it and the public listener.  An admin endpoint that
listens beyond loopback without a token is refused: anyone who reaches it
could lift bans and reload the configuration.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Self

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from .base import IPAddress
from .gateways import (
    Networks,
    Port,
    Seconds,
    Section,
    hostport,
    kind,
    problem,
)

__all__ = ["AdminConfig", "check_admin"]

TOKEN_MIN = 16

# RFC 6750 §2.1 b64token: what a bearer token may contain.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _token(value: object) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise problem(f"should be a token string (quote it in YAML), not {kind(value)}")
    if len(value) < TOKEN_MIN:
        raise problem(
            f"should be at least {TOKEN_MIN} characters; make one with `openssl rand -hex 32`"
        )
    if not _TOKEN.fullmatch(value):
        raise problem(
            "may only contain letters, digits and - . _ ~ + / (then = padding), "
            "as an HTTP bearer token"
        )
    return value


Token = Annotated[SecretStr, BeforeValidator(_token)]


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


class AdminConfig(Section):
    """The admin HTTP endpoint: health, metrics, statistics, bans, reload."""

    enabled: Annotated[bool, Field(strict=True)] = True
    host: IPAddress = "127.0.0.1"
    port: Port = 8080
    # Required in `Authorization: Bearer <token>` when set; required when
    # `host` is not a loopback address.
    token: Token | None = None
    # Source addresses allowed at all; anything else gets 403 before the
    # token is looked at.
    allow: Annotated[Networks, Field(min_length=1)] = ("127.0.0.0/8", "::1")
    # Readiness: VOS3000 is sent an OPTIONS every ping_interval_s and must
    # answer within ping_timeout_s.
    ping_interval_s: Seconds = 5.0
    ping_timeout_s: Seconds = 2.0


    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> Self:
        if self.enabled and self.token is None and not _is_loopback(self.host):
            raise problem(
                f"required when host is {self.host}: an admin endpoint reachable from "
                "other machines needs a bearer token (or listen on 127.0.0.1)",
                at=("token",),
                also=("host",),
            )
        return self

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Self:
        if self.ping_timeout_s > self.ping_interval_s:
            raise problem(
                f"must be at most admin.ping_interval_s ({self.ping_interval_s:.15g}): "
                "a ping must be answered or given up before the next one",
                at=("ping_timeout_s",),
                also=("ping_interval_s",),
            )
        return self

    @property
    def hostport(self) -> str:
        return hostport(self.host, self.port)


def check_admin(admin: AdminConfig, public_host: str, public_port: int, public_tcp: bool) -> None:
    """Raise `problem` (located from the `Config` root) when the admin endpoint
    would take the public SIP TCP socket."""
    if not (admin.enabled and public_tcp and admin.port == public_port):
        return
    unspecified = {h for h in (admin.host, public_host) if ipaddress.ip_address(h).is_unspecified}
    if admin.host == public_host or unspecified:
        raise problem(
            f"{admin.hostport} is the public SIP TCP socket "
            f"({hostport(public_host, public_port)}); give the admin endpoint its own port",
            at=("admin", "port"),
            also=("public", "port"),
        )
