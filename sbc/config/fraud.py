"""The `fraud` section: the toll-fraud watch's rules, its table caps and its
webhook. Empty by default: no rule, no cost on the call path.

Each rule names gateways (none: every gateway), destination prefixes (none:
every destination; written like `blocked_prefixes`), an optional window
(`hours: "HH:MM-HH:MM"`, may wrap midnight; `weekdays: [mon, ...]`), its
`timezone` (IANA name, read with zoneinfo; day boundaries and the window are
local to it), thresholds (`warning` and/or `critical` per figure),
`cool_off_s` (0: a block stands until an operator clears it) and `cut_calls`.
`sbc.config.schema` adds the section to `Config` and calls `check_fraud` for
what spans sections (gateway names).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, model_validator

from .base import Count, Section, kind, none_is_default, none_is_empty, problem
from .gateways import GatewayConfig, Prefixes

__all__ = ["FraudConfig", "FraudRule", "check_fraud", "zone"]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HOURS = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Figure = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


def _name(value: object) -> object:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        shown = repr(value) if isinstance(value, str) else kind(value)
        raise problem(f"should be 1 to 64 of letters, digits and _ . -, not {shown}")
    return value


def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _timezone(value: object) -> object:
    if not isinstance(value, str):
        raise problem(f"should be a time zone name such as \"Europe/London\", not {kind(value)}")
    try:
        zone(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise problem(f"{value!r} is not a time zone this system knows (IANA name, "
                      "e.g. \"UTC\", \"Asia/Shanghai\")") from None
    return value


def _hours(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, str) or not _HOURS.fullmatch(value.strip()):
        raise problem("should be \"HH:MM-HH:MM\" (local time; may wrap midnight, "
                      "e.g. \"20:00-08:00\")")
    start, end = value.strip().split("-")
    if end > "24:00":
        raise problem(f"{end}: the day ends at 24:00")
    return value.strip()


def _weekdays(value: object) -> object:
    value = none_is_empty(value)
    if not isinstance(value, (list, tuple)):
        raise problem(f"should be a list of days ({', '.join(WEEKDAYS)}), not {kind(value)}")
    out = []
    for v in value:
        day = v.strip().lower()[:3] if isinstance(v, str) else None
        if day not in WEEKDAYS:
            raise problem(f"{v!r} is not a day: use {', '.join(WEEKDAYS)}")
        if day in out:
            raise problem(f"{v!r} is listed twice")
        out.append(day)
    return tuple(out)


def _gateways(value: object) -> object:
    value = none_is_empty(value)
    if value == "*" or value == ["*"] or value == ("*",):
        return ()
    return value


class Level(Section):
    warning: Figure = 0.0  # 0: no warning
    critical: Figure = 0.0  # 0: no block

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.warning == 0 and self.critical == 0:
            raise problem("give warning, critical or both (a figure above 0)")
        if self.warning and self.critical and self.warning > self.critical:
            raise problem(f"warning ({self.warning:g}) is above critical ({self.critical:g})",
                          at=("warning",), also=("critical",))
        return self


class Thresholds(Section):
    calls_per_minute: Level | None = None  # new calls in the last 60 s
    concurrent: Level | None = None  # calls in progress to the rule's destinations
    calls_per_day: Level | None = None  # new calls since local midnight
    minutes_per_day: Level | None = None  # answered minutes today, running calls live
    sequential: Level | None = None  # calls in a row to one number

    @model_validator(mode="after")
    def _some(self) -> Self:
        if not any(getattr(self, f) is not None for f in type(self).model_fields):
            raise problem("a rule needs at least one threshold: calls_per_minute, concurrent, "
                          "calls_per_day, minutes_per_day or sequential")
        return self


class Window(Section):
    hours: Annotated[str | None, BeforeValidator(_hours)] = None  # "HH:MM-HH:MM"; None: all day
    weekdays: Annotated[tuple[str, ...], BeforeValidator(_weekdays)] = WEEKDAYS

    @property
    def minutes(self) -> tuple[int, int]:
        if self.hours is None:
            return (0, 0)
        a, b = self.hours.split("-")
        return (int(a[:2]) * 60 + int(a[3:]), (int(b[:2]) * 60 + int(b[3:])) % 1440)


class FraudRule(Section):
    name: Annotated[str, BeforeValidator(_name)]
    gateways: Annotated[tuple[str, ...], BeforeValidator(_gateways)] = ()  # none or "*": all
    prefixes: Prefixes = ()  # none: every destination
    window: Window | None = None
    timezone: Annotated[str, BeforeValidator(_timezone)] = "UTC"
    thresholds: Thresholds
    cool_off_s: Annotated[float, Field(strict=True, ge=0, le=30 * 86400,
                                       allow_inf_nan=False)] = 3600.0
    cut_calls: bool = False
    sequential_gap_s: Annotated[float, Field(strict=True, gt=0, le=7 * 86400,
                                             allow_inf_nan=False)] = 3600.0


def _webhook_url(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, str):
        raise problem(f"should be an http:// or https:// URL, not {kind(value)}")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise problem("should be an http:// or https:// URL with a host")
    return value.strip()


class Webhook(Section):
    url: Annotated[str | None, BeforeValidator(_webhook_url)] = None  # None: no webhook
    timeout_s: Annotated[float, Field(strict=True, gt=0, le=60, allow_inf_nan=False)] = 5.0
    retries: Annotated[int, Field(strict=True, ge=0, le=20)] = 3  # after the first attempt
    retry_delay_s: Annotated[float, Field(strict=True, gt=0, le=300, allow_inf_nan=False)] = 1.0
    queue: Count = 1000  # alerts waiting to be posted; beyond, dropped and counted


class FraudConfig(Section):
    rules: Annotated[tuple[FraudRule, ...], BeforeValidator(none_is_empty)] = ()
    webhook: Annotated[Webhook, BeforeValidator(none_is_default)] = Field(default_factory=Webhook)
    max_numbers: Count = 1000  # per gateway and rule: numbers followed for sequential calls

    @model_validator(mode="after")
    def _distinct_names(self) -> Self:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise problem(f"{rule.name!r} is the name of an earlier rule",
                              at=("rules", i, "name"))
            seen.add(rule.name)
        return self


def check_fraud(fraud: FraudConfig, gateways: Sequence[GatewayConfig]) -> None:
    """Every gateway a rule names is configured (located from the Config root)."""
    names = {gw.name for gw in gateways}
    for i, rule in enumerate(fraud.rules):
        for j, name in enumerate(rule.gateways):
            if name not in names:
                raise problem(f"{name!r} is not a configured gateway (gateways[].name)",
                              at=("fraud", "rules", i, "gateways", j))
