"""Configuration sections for the defences in front of the SIP engine: the
screening of raw packets (scanner signatures, rate limits), the inline ban
list (fail2ban-like), and the optional kernel firewall offload.

`sbc.config` adds these sections to `Config` as `screen`, `bans` and
`firewall`; the shared field helpers come from `sbc.config.gateways`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, model_validator

from .gateways import (
    Count,
    Distinct,
    Networks,
    Seconds,
    Section,
    as_text,
    kind,
    lower,
    none_is_empty,
    problem,
)

__all__ = [
    "DEFAULT_SCANNER_SIGNATURES",
    "BansConfig",
    "FirewallConfig",
    "FirewallMode",
    "OffensesConfig",
    "RateConfig",
    "ScreenConfig",
]


def _defaults_for_null(data: Any, fields: tuple[str, ...]) -> Any:
    # A sub-section with every key below it commented out reads as null.
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if not (v is None and k in fields)}
    return data


# --------------------------------------------------------------------------
# Screening


# User-Agent (and From/To display name) fragments of SIP scanning and
# brute-force tools: SIPVicious ("friendly-scanner", "sipvicious"), sipcli,
# VaxSIPUserAgent, sipsak-like scanners, SIPArmyKnife, sipbomber, smap, ...
DEFAULT_SCANNER_SIGNATURES: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sipscan",
    "pplsip",
    "sundayddr",
    "iwar",
    "sip-scan",
    "smap",
    "siparmyknife",
    "sipbomber",
    "voipscan",
    "sipptk",
    "cisco-scanner",
)

_SIGNATURE_MAX = 64


def _signature(value: object) -> str:
    if not isinstance(value, str):
        raise problem(f"should be a string (quote it in YAML), not {kind(value)}")
    if not value.strip():
        # An empty or blank fragment would match every User-Agent and ban everyone.
        raise problem("should not be empty or blank: it would match every request")
    if len(value) > _SIGNATURE_MAX:
        raise problem(f"should be at most {_SIGNATURE_MAX} characters, not {len(value)}")
    if not all(" " <= c <= "~" for c in value):
        raise problem(f"{value!r}: only printable ASCII characters are matched")
    return value.lower()


Signature = Annotated[str, BeforeValidator(_signature)]
Rate = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]


class RateConfig(Section):
    """A token bucket: `rate` packets per second on average, `burst` at once."""

    rate: Rate
    burst: Count


class ScreenConfig(Section):
    """Cheap checks on the raw bytes of every packet, before any parse."""

    scanner_signatures: Annotated[tuple[Signature, ...], BeforeValidator(none_is_empty),
                                  Distinct] = (
        DEFAULT_SCANNER_SIGNATURES
    )
    signatures_apply_to_gateways: Annotated[bool, Field(strict=True)] = False
    rate_per_ip: RateConfig = RateConfig(rate=20.0, burst=40)
    rate_per_net: RateConfig = RateConfig(rate=200.0, burst=400)  # a /24 or a /64
    rate_per_gateway: RateConfig = RateConfig(rate=5000.0, burst=10_000)
    max_sources: Annotated[int, Field(strict=True, ge=1000)] = 200_000

    @model_validator(mode="before")
    @classmethod
    def _empty_rates(cls, data: Any) -> Any:
        return _defaults_for_null(data, ("rate_per_ip", "rate_per_net", "rate_per_gateway"))



# --------------------------------------------------------------------------
# Bans


class OffensesConfig(Section):
    """Which events count towards a ban."""

    scanner: Annotated[bool, Field(strict=True)] = True
    rate_limit: Annotated[bool, Field(strict=True)] = True
    digest_failure: Annotated[bool, Field(strict=True)] = True
    malformed: Annotated[bool, Field(strict=True)] = True
    blocked_destination: Annotated[bool, Field(strict=True)] = True
    backend_auth_failure: Annotated[bool, Field(strict=True)] = True  # a 401/403 from VOS3000
    # A TCP or TLS connection closed for breaking a limit: too many from one
    # address, too slow or silent, over its buffer, a failed or late TLS
    # handshake, a client certificate refused.
    connection: Annotated[bool, Field(strict=True)] = True


class BansConfig(Section):
    """Sources banned for a while after repeated offenses, like fail2ban."""

    max_offenses: Count = 5
    findtime_s: Seconds = 600.0
    bantime_s: Seconds = 600.0
    increment: Annotated[float, Field(strict=True, ge=1.0, allow_inf_nan=False)] = 2.0
    max_bantime_s: Seconds = 604_800.0
    exempt: Networks = ()
    max_entries: Annotated[int, Field(strict=True, ge=100)] = 100_000
    offenses: OffensesConfig = OffensesConfig()

    @model_validator(mode="before")
    @classmethod
    def _empty_offenses(cls, data: Any) -> Any:
        return _defaults_for_null(data, ("offenses",))


    @model_validator(mode="after")
    def _longest_not_below_first(self) -> Self:
        if self.max_bantime_s < self.bantime_s:
            raise problem(
                f"must be at least bans.bantime_s ({self.bantime_s:.15g})",
                at=("max_bantime_s",),
                also=("bantime_s",),
            )
        return self

    def bantime(self, previous_bans: int) -> float:
        """Seconds of the ban that follows `previous_bans` earlier ones."""
        if previous_bans <= 0:
            return self.bantime_s
        try:
            longer = self.bantime_s * self.increment**previous_bans
        except OverflowError:
            return self.max_bantime_s
        return min(longer, self.max_bantime_s)


# --------------------------------------------------------------------------
# Firewall


class FirewallMode(StrEnum):
    OFF = "off"
    NFTABLES = "nftables"  # banned addresses go into a set of an nftables table


def _mode(value: object) -> object:
    # YAML 1.1 reads an unquoted `off` (and `no`) as false.
    return FirewallMode.OFF.value if value is False else lower(value)


_TABLE = re.compile(r"[a-z0-9_]{1,32}")


def _table(value: str) -> str:
    if not _TABLE.fullmatch(value):
        raise problem(
            f"{value!r}: an nftables table name here is 1 to 32 lower-case letters, "
            "digits or '_'"
        )
    return value


def _command(value: str) -> str:
    if not value.strip() or any(c < " " or c == "\x7f" for c in value):
        raise problem("should be a program name or path, such as nft or /usr/sbin/nft")
    return value


class FirewallConfig(Section):
    """Optional offload of bans into the kernel."""

    mode: Annotated[FirewallMode, BeforeValidator(_mode)] = FirewallMode.OFF
    table: Annotated[str, BeforeValidator(_table), as_text("a table name")] = "sbc"
    nft_path: Annotated[str, BeforeValidator(_command), as_text("a program name")] = "nft"

    @property
    def enabled(self) -> bool:
        return self.mode is not FirewallMode.OFF
