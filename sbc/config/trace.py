"""The `trace` and `hep` sections: the per-call SIP trace sbc keeps (shown on
the dashboard, as JSON and as pcap) and the HEP v3 copy of every message it
sends to a Homer collector. Both off by default.

`trace.max_bytes` caps the ring (messages and their bookkeeping); the
oldest calls go first. `refused_share` of it holds Call-IDs that sbc only
ever refused or dropped, sampled at `refused_sample_rate`, so a flood of
them never evicts the traces of real calls (sbc.trace.ring).

`hep` sends each message, as it passes, to `host:port` over UDP or TCP with
`capture_id` and an optional `auth_key`; at most `queue` messages wait, the
rest are counted as lost. Messages of no call (refused, dropped, pings'
answers) go at `refused_sample_rate` too.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from .base import IPAddress, Port, Section, problem

__all__ = ["HepConfig", "TraceConfig"]

Rate = Annotated[float, Field(strict=False, ge=0, le=1, allow_inf_nan=False)]


class TraceConfig(Section):
    enabled: bool = False
    max_bytes: Annotated[int, Field(strict=True, ge=65536, le=1 << 34)] = 32 * 1024 * 1024
    max_calls: Annotated[int, Field(strict=True, ge=1, le=10_000_000)] = 20_000
    max_call_bytes: Annotated[int, Field(strict=True, ge=4096, le=1 << 26)] = 256 * 1024
    refused_share: Annotated[float, Field(strict=False, ge=0, le=0.5, allow_inf_nan=False)] = 0.1
    refused_sample_rate: Rate = 0.1

    @model_validator(mode="after")
    def _call_fits(self) -> Self:
        if self.max_call_bytes > self.max_bytes * (1 - self.refused_share):
            raise problem("should be at most max_bytes less its refused_share",
                          at=("max_call_bytes",), also=("max_bytes",))
        return self


class HepConfig(Section):
    enabled: bool = False
    host: IPAddress = "127.0.0.1"
    port: Port = 9060
    transport: Literal["udp", "tcp"] = "udp"
    capture_id: Annotated[int, Field(strict=True, ge=0, le=0xFFFFFFFF)] = 2001
    auth_key: Annotated[str, Field(max_length=256)] | None = None
    queue: Annotated[int, Field(strict=True, ge=16, le=1_000_000)] = 10_000
    refused_sample_rate: Rate = 0.1
