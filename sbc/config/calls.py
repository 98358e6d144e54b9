"""The `calls` section: limits on calls towards VOS3000 for all gateways
together, the destination controls that apply to every gateway, and how often
call state is saved.

Each gateway's own limits and prefixes are part of its `GatewayConfig`
(`limits`, `allowed_prefixes`, `blocked_prefixes`, `tech_prefixes`), defined
with the prefix types in `sbc.config.gateways`; `sbc.config` adds this section
to `Config` as `calls` and calls `check_calls` for the rules that span it, the
gateways and the sip section.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Self

from pydantic import Field, model_validator

from .gateways import (
    Burst,
    GatewayConfig,
    Limit,
    NonNegative,
    Prefixes,
    Section,
    TechPrefixes,
    burst_needs_rate,
    matched_digits,
    problem,
)

__all__ = ["CallsConfig", "check_calls"]


class CallsConfig(Section):
    """Limits for all gateways together and global destination controls; 0 is
    unlimited."""

    max_cps: NonNegative = 0.0  # initial INVITEs admitted per second (a token bucket)
    max_cps_burst: Burst | None = None  # None: one second's worth, see `burst`
    max_concurrent: Limit = 0
    blocked_prefixes: Prefixes = ()  # for every gateway, on top of its own
    tech_prefixes: TechPrefixes = ()  # for every gateway, as well as its own
    # Retry-After (RFC 3261 §20.33) on a 503 for a call over a limit.
    retry_after_s: Annotated[int, Field(strict=True, ge=1, le=3600)] = 5
    # How often changed dialog state is written to the state file: a restart
    # loses at most this much.
    persist_interval_s: Annotated[float, Field(strict=True, gt=0, le=60, allow_inf_nan=False)] = 1.0



    @model_validator(mode="after")
    def _burst_with_rate(self) -> Self:
        burst_needs_rate(self.max_cps, self.max_cps_burst, "max_cps", "max_cps_burst")
        return self

    @property
    def burst(self) -> float:
        """The bucket size: max_cps_burst, else one second's worth (at least 1)."""
        if self.max_cps_burst is not None:
            return self.max_cps_burst
        return max(1.0, self.max_cps)


def check_calls(
    gateways: Sequence[GatewayConfig], calls: CallsConfig, dialog_max_age_s: float
) -> None:
    """Raise `problem` (located from the `Config` root) for the first conflict
    between a gateway's call controls and the calls or sip section."""
    blocked = {matched_digits(p): (k, p) for k, p in enumerate(calls.blocked_prefixes)}
    for g, gw in enumerate(gateways):
        at = ("gateways", g)
        for j, prefix in enumerate(gw.allowed_prefixes):
            if matched_digits(prefix) in blocked:
                k, same = blocked[matched_digits(prefix)]
                raise problem(
                    f"{prefix!r} is allowed here but calls.blocked_prefixes[{k}] ({same!r}) "
                    "blocks it for every gateway; a blocked prefix wins",
                    at=(*at, "allowed_prefixes", j),
                )
        duration = gw.limits.max_duration_s
        if duration >= dialog_max_age_s:
            # The dialog is forgotten at that age (sip.dialog_max_age_s), so the
            # sbc would never send the BYEs that end the call.
            raise problem(
                f"must be less than sip.dialog_max_age_s ({dialog_max_age_s:.15g}): "
                "a call is forgotten at that age, before the sbc could end it",
                at=(*at, "limits", "max_duration_s"),
                also=("sip", "dialog_max_age_s"),
            )
