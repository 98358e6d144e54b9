"""What every configuration section shares: the frozen `Section` base that
refuses unknown keys, the `problem` error that names a field (and the other
field involved) so the loader can point at the file's line, and the small
field types and before-validators (ports, seconds, counts, text, case), and
`Endpoint`, a host and port.

`sbc.config.gateways` re-exports all of it, so sections may import these names
from either module.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

Loc = tuple[str | int, ...]


def problem(message: str, at: Loc = (), also: Loc | None = None) -> PydanticCustomError:
    """A validation error raised by the configuration's own checks.

    `at` is a key path below the validator's location that the error is really
    about, so a check on the `sip` section as a whole can name `sip.t2_ms`.
    `also` is the other field involved, relative to the same location: when it
    was written in the file and `at` was not (a default caused the conflict),
    the error is reported at its line.
    """
    ctx: dict[str, Any] = {"message": message, "at": at}
    if also is not None:
        ctx["also"] = also
    return PydanticCustomError("sbc_config", "{message}", ctx)


def kind(value: object) -> str:
    """How a YAML value reads to an operator: "a string", "a number", ..."""
    if value is None:
        return "empty"
    return {str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), f"a {type(value).__name__}"
    )


def hostport(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host (RFC 3261 §25.1 hostport)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_ip(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address as written in the file, or the config error that says why not.

    YAML 1.1 reads some unquoted IPv6 forms (1:2:3:4:5:6:7:8) as base-60
    integers, so a non-string here usually means "quote it"."""
    if not isinstance(value, str):
        raise problem(
            "Input should be an IP address string (quote IPv6 addresses in YAML), "
            f"not {kind(value)}"
        )
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise problem(
            f"{value!r} is not an IPv4 or IPv6 address (host names are not accepted)"
        ) from None


def _ip_address(value: object) -> str:
    return str(parse_ip(value))


def _optional_ip_address(value: object) -> str | None:
    return None if value is None else _ip_address(value)


IPAddress = Annotated[str, BeforeValidator(_ip_address)]
OptionalIPAddress = Annotated[str | None, BeforeValidator(_optional_ip_address)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(strict=True, ge=1, le=65535)]


class Endpoint(Section):
    """An address and port (a socket of sbc's, or a peer's); subclasses give
    `host` its own validation and defaults."""

    host: str
    port: Port

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to bind or send to."""
        return (self.host, self.port)

    @property
    def hostport(self) -> str:
        return hostport(self.host, self.port)
Seconds = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=1)]


def as_text(what: str) -> Any:
    """A before-validator refusing non-strings with a hint to quote the value.

    YAML reads `1001` as a number, `0100` as 64 and `yes` as true; a user name
    or password must reach the sbc exactly as written.
    """

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise problem(f"should be {what} string (quote it in YAML), not {kind(value)}")
        return value

    return BeforeValidator(check)


def none_is_empty(value: object) -> object:
    # `digest:` with every entry below it commented out reads as null.
    return () if value is None else value


def none_is_default(value: object) -> object:
    # A sub-section with every key below it commented out reads as null.
    return {} if value is None else value


def lower(value: object) -> object:
    """A before-validator for names written in any case ("UDP", "Reject")."""
    return value.lower() if isinstance(value, str) else value
