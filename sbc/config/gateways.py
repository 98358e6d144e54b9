"""Configuration sections for gateways, digest authentication, the registrar and
the state file; the validation helpers every configuration section shares are
defined in `sbc.config.base` and re-exported here.

`sbc.config` builds the whole schema on top of this module: it imports the
shared helpers (`Section`, `problem`, `Port`, ...) from here, as
`sbc.config.defense` and `sbc.config.calls` do, adds these sections to
`Config`, and checks the rules that span several gateways or other sections
(duplicate names, addresses and usernames, egress sockets that collide with
the sbc's own).

A gateway also carries the limits VOS3000 sets per mapping gateway (calls per
second, concurrent calls, call duration), what its TLS connections must show
(`sbc.config.tls.GatewayTls`) and its destination prefixes; the
prefix types are defined here because `sbc.config.calls` uses them for the
global `calls` section too.

Addresses are stored normalised: an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``)
becomes the IPv4 address, because the sbc looks IPv4 sources up as IPv4
whichever socket family they arrive on; a network with its full prefix length
is written as a plain address.  Prefixes are stored as written.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .base import (  # re-exported (__all__): every section imports them from here
    Count,
    Endpoint,
    Loc,
    Port,
    Seconds,
    Section,
    as_text,
    hostport,
    kind,
    lower,
    none_is_default,
    none_is_empty,
    parse_ip,
    problem,
)
from .tls import GatewayTls

__all__ = [
    "Distinct",
    # shared helpers, from sbc.config.base
    "Count",
    "Endpoint",
    "Loc",
    "Port",
    "Seconds",
    "Section",
    "as_text",
    "hostport",
    "kind",
    "lower",
    "none_is_default",
    "none_is_empty",
    "problem",
    # this module's sections
    "AuthConfig",
    "DigestAccount",
    "DigestAlgorithm",
    "EgressConfig",
    "GatewayConfig",
    "GatewayLimits",
    "OptionsMode",
    "RegistrarConfig",
    "StateConfig",
    "UnknownSource",
]


# --------------------------------------------------------------------------
# Addresses


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unmapped(address: _Address) -> _Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _network(value: object) -> str:
    if not isinstance(value, str):
        raise problem(
            "should be an IP address or network string such as \"10.1.0.0/16\" "
            f"(quote IPv6 in YAML), not {kind(value)}"
        )
    text = value.strip()
    if "%" in text:
        raise problem(f"{value!r}: a zone index (%...) is not accepted")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise problem(
                f"{value!r} is not an IP address or network such as 192.0.2.10 or "
                "10.1.0.0/16 (host names are not accepted)"
            ) from None
        address = text.partition("/")[0]
        raise problem(
            f"{value!r} has host bits set: write {loose} for the network, "
            f"or {address} for the one address"
        ) from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        # Sources arriving as ::ffff:a.b.c.d are looked up as IPv4.
        net = ipaddress.IPv4Network(
            (int(net.network_address) & 0xFFFF_FFFF, net.prefixlen - 96)
        )
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def _source_address(value: object) -> tuple[str, int]:
    if not isinstance(value, str):
        raise problem(
            "should be an \"address:port\" string such as \"192.0.2.10:5060\" or "
            f"\"[2001:db8::10]:5060\" (quote it in YAML), not {kind(value)}"
        )
    text = value.strip()
    if text.startswith("["):
        host, close, port = text[1:].partition("]")
        if not close or not port.startswith(":"):
            raise problem(f"{value!r} should be written \"[IPv6 address]:port\"")
        port = port[1:]
    else:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise problem(f"{value!r}: write an IPv6 address in brackets, \"[{host}]:{port}\"")
        if not host:
            raise problem(f"{value!r} should be \"address:port\"; the port is required")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise problem(f"{value!r}: the port should be a number from 1 to 65535")
    try:
        address = _unmapped(ipaddress.ip_address(host))
    except ValueError:
        raise problem(
            f"{value!r}: {host!r} is not an IPv4 or IPv6 address (host names are not accepted)"
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise problem(f"{value!r}: {address} is never the source of a request")
    return (str(address), int(port))


def _egress_host(value: object) -> str:
    address = _unmapped(parse_ip(value))
    if address.is_unspecified or address.is_multicast:
        # VOS3000 tells gateways apart by the source address: it must be one
        # address of this machine, the one VOS3000 is configured with.
        raise problem(f"{address} cannot be an egress address; give one address of this server")
    return str(address)


Network = Annotated[str, BeforeValidator(_network)]
SourceAddress = Annotated[tuple[str, int], BeforeValidator(_source_address)]


def _distinct(values: tuple[Any, ...], info: ValidationInfo) -> tuple[Any, ...]:
    repeated(values, str(info.field_name))
    return values


def _distinct_prefixes(values: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    distinct_prefixes(values, str(info.field_name))
    return values


# An after-validator for a list field: an entry listed twice is an error
# naming the field and the second entry.
Distinct = AfterValidator(_distinct)
Networks = Annotated[tuple[Network, ...], BeforeValidator(none_is_empty), Distinct]


def repeated(values: Sequence[object], what: str) -> None:
    """Refuse an entry listed twice in one list; names the second one."""
    seen: set[object] = set()
    for index, value in enumerate(values):
        if value in seen:
            shown = hostport(*value) if isinstance(value, tuple) else value
            raise problem(f"{shown} is listed twice in {what}", at=(index,))
        seen.add(value)


# --------------------------------------------------------------------------
# Enumerations


class OptionsMode(StrEnum):
    ANSWER = "answer"  # the sbc answers OPTIONS 200 itself
    PASS = "pass"  # relayed to VOS3000


class UnknownSource(StrEnum):
    DROP = "drop"  # silently; a 403 tells a scanner someone is listening
    REJECT = "reject"  # 403 Forbidden, within auth.reply_budget_per_s


class DigestAlgorithm(StrEnum):
    """RFC 7616 §3.3 digest algorithms, in the spelling sent in challenges."""

    SHA_256 = "SHA-256"
    MD5 = "MD5"


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


# --------------------------------------------------------------------------
# Destination prefixes and call limits

_PREFIX_MAX = 32
_PREFIX = re.compile(r"\+?[0-9]+")
_TECH_PREFIX = re.compile(r"\+?[0-9*#]+")


def matched_digits(prefix: str) -> str:
    """The digits a destination prefix is compared on.

    Called numbers are compared without their international prefix, a leading
    '+' or '00' (see `sbc.core.policy.limits.normalise`), so "+44", "0044" and "44"
    match the same numbers.
    """
    if prefix.startswith("+"):
        return prefix[1:]
    if prefix.startswith("00"):
        return prefix[2:]
    return prefix


def _prefix_text(value: object) -> str:
    # YAML reads 0044 as the octal number 36 and +44 as 44: a prefix must
    # reach the sbc exactly as written.
    if not isinstance(value, str):
        raise problem(
            f'should be a quoted string such as "0044" (YAML reads unquoted digits '
            f"as a number), not {kind(value)}"
        )
    text = value.strip()
    if not text:
        raise problem("should not be empty: it would match every number")
    if len(text) > _PREFIX_MAX:
        raise problem(f"should be at most {_PREFIX_MAX} characters, not {len(text)}")
    return text


def _prefix(value: object) -> str:
    text = _prefix_text(value)
    if not _PREFIX.fullmatch(text):
        hint = " ('*' and '#' belong in tech_prefixes)" if "*" in text or "#" in text else ""
        raise problem(f"{text!r}: a prefix is digits, optionally after a leading '+'{hint}")
    if not matched_digits(text):
        raise problem(
            f"{text!r} alone matches nothing: numbers are compared without their "
            "international '+' or '00'; add the country code, e.g. \"0044\""
        )
    return text


def _tech_prefix(value: object) -> str:
    text = _prefix_text(value)
    if not _TECH_PREFIX.fullmatch(text):
        raise problem(
            f"{text!r}: a tech prefix is digits, '*' and '#', optionally after a leading '+'"
        )
    return text


Prefix = Annotated[str, BeforeValidator(_prefix)]
TechPrefix = Annotated[str, BeforeValidator(_tech_prefix)]
# Prefixes: also the same numbers written twice ("+44", "0044").
Prefixes = Annotated[tuple[Prefix, ...], BeforeValidator(none_is_empty),
                     AfterValidator(_distinct_prefixes)]
TechPrefixes = Annotated[tuple[TechPrefix, ...], BeforeValidator(none_is_empty), Distinct]

NonNegative = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]  # 0: unlimited
Burst = Annotated[float, Field(strict=True, ge=1, allow_inf_nan=False)]
Limit = Annotated[int, Field(strict=True, ge=0)]  # 0: unlimited


def distinct_prefixes(values: Sequence[str], what: str) -> None:
    """Refuse a prefix listed twice in one list, also when written differently
    ("+44" and "0044") but matching the same numbers; names the second one."""
    seen: dict[str, str] = {}
    for index, value in enumerate(values):
        digits = matched_digits(value)
        if digits in seen:
            same = "" if seen[digits] == value else f" (as {seen[digits]!r}, the same numbers)"
            raise problem(f"{value!r} is listed twice in {what}{same}", at=(index,))
        seen[digits] = value


def burst_needs_rate(rate: float, burst: float | None, rate_key: str, burst_key: str) -> None:
    """Refuse a bucket size given for a rate that is unlimited."""
    if burst is not None and rate == 0:
        raise problem(
            f"has no effect while {rate_key} is 0 (unlimited); set {rate_key} too, "
            f"or remove {burst_key}",
            at=(burst_key,),
        )


class GatewayLimits(Section):
    """The limits VOS3000 sets per mapping gateway, enforced before a call
    reaches it; 0 is unlimited."""

    cps: NonNegative = 0.0  # initial INVITEs admitted per second (a token bucket)
    cps_burst: Burst | None = None  # None: one second's worth, see `burst`
    max_concurrent: Limit = 0  # calls in progress
    max_duration_s: NonNegative = 0.0  # then the sbc ends the call with BYE to both sides

    @model_validator(mode="after")
    def _burst_with_rate(self) -> Self:
        burst_needs_rate(self.cps, self.cps_burst, "cps", "cps_burst")
        return self

    @property
    def burst(self) -> float:
        """The bucket size: cps_burst, else one second's worth (at least 1)."""
        return self.cps_burst if self.cps_burst is not None else max(1.0, self.cps)


# --------------------------------------------------------------------------
# Gateways

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Written inside a quoted-string in WWW-Authenticate / Authorization (RFC 3261
# §25.1): no quote, backslash or control character.
_USERNAME = re.compile(r'[^\x00-\x20\x7f"\\]{1,128}')
_REALM = re.compile(r'[^\x00-\x1f\x7f"\\]{1,128}')


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise problem(
            f"{value!r}: a gateway name is 1 to 64 letters, digits, '_', '.' or '-'"
        )
    return value


def _check_username(value: str) -> str:
    if not _USERNAME.fullmatch(value):
        raise problem(
            f"{value!r}: a user name is 1 to 128 characters without spaces, "
            "quotes, backslashes or control characters"
        )
    if "@" in value:
        # A digest user name sent as user@domain is the account `user`
        # (sbc.core.identify.auth), so an account named with an "@" is never found.
        raise problem(
            f"{value!r}: a user name has no '@'; clients that send "
            f"{value.partition('@')[0]!r}@domain are account {value.partition('@')[0]!r}"
        )
    return value


def _check_realm(value: str) -> str:
    if not _REALM.fullmatch(value):
        raise problem(
            f"{value!r}: a realm is 1 to 128 characters without quotes, "
            "backslashes or control characters"
        )
    return value


def _check_password(value: str) -> str:
    if not value:
        raise problem("should not be empty")
    return value


def _ha1(digits: int, formula: str) -> Any:
    def check(value: object) -> str:
        if value is not None:
            if not isinstance(value, str):
                raise problem(f"should be a string of {digits} hex digits, not {kind(value)}")
            value = value.strip().lower()
            if len(value) != digits or not all(c in "0123456789abcdef" for c in value):
                raise problem(
                    f"should be {digits} hexadecimal digits: {formula}(username:realm:password)"
                )
        return value  # type: ignore[return-value]

    return BeforeValidator(check)


# Before-validators run last to first: the string check comes last.
GatewayName = Annotated[str, BeforeValidator(_check_name), as_text("a name")]
Username = Annotated[str, BeforeValidator(_check_username), as_text("a user name")]
Realm = Annotated[str, BeforeValidator(_check_realm), as_text("a realm")]
Password = Annotated[SecretStr, BeforeValidator(_check_password), as_text("a password")]


class DigestAccount(Section):
    """One SIP account that authenticates with digest (RFC 3261 §22, RFC 7616).

    Give the password, or instead the HA1 hash(es) of username:realm:password,
    so the password itself need not be stored.  Secrets are `SecretStr`: they
    print as `**********`; read them with `.get_secret_value()`.
    """

    username: Username
    password: Password | None = None
    ha1_md5: Annotated[SecretStr | None, _ha1(32, "MD5")] = None
    ha1_sha256: Annotated[SecretStr | None, _ha1(64, "SHA-256")] = None
    realm: Realm | None = None  # None: auth.realm (see Config.realm_for)
    from_cidrs: Networks = ()
    # Requests must carry the user name as the From URI's user (else 403, an
    # offense). Off by default: a trunk presents many caller IDs.
    from_must_match: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _one_kind_of_secret(self) -> Self:
        hashes = [n for n in ("ha1_md5", "ha1_sha256") if getattr(self, n) is not None]
        if self.password is not None and hashes:
            raise problem(
                f"give either password or {' / '.join(hashes)}, not both",
                at=(hashes[0],),
            )
        if self.password is None and not hashes:
            raise problem(
                f"account {self.username!r} needs a password, or ha1_md5 and/or ha1_sha256"
            )
        return self

    @property
    def algorithms(self) -> frozenset[DigestAlgorithm]:
        """The algorithms this account can answer a challenge with."""
        if self.password is not None:
            return frozenset(DigestAlgorithm)
        out = set()
        if self.ha1_md5 is not None:
            out.add(DigestAlgorithm.MD5)
        if self.ha1_sha256 is not None:
            out.add(DigestAlgorithm.SHA_256)
        return frozenset(out)


class EgressConfig(Endpoint):
    """A private socket of the sbc used for one gateway's traffic to VOS3000."""

    host: Annotated[str, BeforeValidator(_egress_host)]
    port: Port


class GatewayConfig(Section):
    """A customer or peer (a mapping gateway, in VOS3000's words)."""

    name: GatewayName
    ip: Networks = ()
    ip_port: Annotated[tuple[SourceAddress, ...], BeforeValidator(none_is_empty), Distinct] = ()
    digest: Annotated[tuple[DigestAccount, ...], BeforeValidator(none_is_empty)] = ()
    egress: EgressConfig | None = None
    options: Annotated[OptionsMode, BeforeValidator(lower)] = OptionsMode.ANSWER
    limits: Annotated[GatewayLimits, BeforeValidator(none_is_default)] = GatewayLimits()
    # Destinations are the called number, after a tech prefix is stripped;
    # the request itself goes to VOS3000 unchanged.
    allowed_prefixes: Prefixes = ()  # if any: only these destinations
    blocked_prefixes: Prefixes = ()  # refused with 403, an offense
    tech_prefixes: TechPrefixes = ()
    # What its TLS connections must show (a client certificate, its name).
    tls: Annotated[GatewayTls, BeforeValidator(none_is_default)] = GatewayTls()





    @model_validator(mode="after")
    def _identifiable(self) -> Self:
        if not (self.ip or self.ip_port or self.digest):
            raise problem(
                f"gateway {self.name!r} needs at least one of ip, ip_port or digest; "
                "otherwise no request can ever be recognised as coming from it"
            )
        return self

    @model_validator(mode="after")
    def _allowed_or_blocked(self) -> Self:
        allowed = {matched_digits(p): (i, p) for i, p in enumerate(self.allowed_prefixes)}
        for j, prefix in enumerate(self.blocked_prefixes):
            if matched_digits(prefix) in allowed:
                i, same = allowed[matched_digits(prefix)]
                raise problem(
                    f"{prefix!r} is in both blocked_prefixes and allowed_prefixes[{i}] "
                    f"({same!r}); a blocked prefix wins, so the allowed one is never used",
                    at=("blocked_prefixes", j),
                )
        return self


# --------------------------------------------------------------------------
# Authentication, registrar, state


class AuthConfig(Section):
    """Digest challenges and what unidentified sources get back."""

    realm: Realm = "sbc"
    nonce_ttl_s: Seconds = 300.0
    # The challenges go out in this order (RFC 8760 §2.4: the server's
    # preference). MD5 first, for the clients that read only the first one.
    algorithms: Annotated[
        tuple[Annotated[DigestAlgorithm, BeforeValidator(_upper)], ...], Field(min_length=1)
    ] = (DigestAlgorithm.MD5, DigestAlgorithm.SHA_256)
    unknown_source: Annotated[UnknownSource, BeforeValidator(lower)] = UnknownSource.DROP
    reply_budget_per_s: Annotated[float, Field(strict=True, ge=1, allow_inf_nan=False)] = 50.0
    reply_budget_burst: Count = 100

    @field_validator("algorithms")
    @classmethod
    def _no_repeated_algorithms(
        cls, value: tuple[DigestAlgorithm, ...]
    ) -> tuple[DigestAlgorithm, ...]:
        repeated([a.value for a in value], "algorithms")
        return value


class RegistrarConfig(Section):
    """REGISTER handling for digest accounts (RFC 3261 §10.3)."""

    min_expires_s: Count = 60
    max_expires_s: Count = 3600
    default_expires_s: Count = 3600
    max_contacts: Count = 5

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_expires_s < self.min_expires_s:
            raise problem(
                f"must be at least registrar.min_expires_s ({self.min_expires_s})",
                at=("max_expires_s",),
                also=("min_expires_s",),
            )
        if self.default_expires_s < self.min_expires_s:
            raise problem(
                f"must be at least registrar.min_expires_s ({self.min_expires_s})",
                at=("default_expires_s",),
                also=("min_expires_s",),
            )
        if self.default_expires_s > self.max_expires_s:
            raise problem(
                f"must be at most registrar.max_expires_s ({self.max_expires_s})",
                at=("default_expires_s",),
                also=("max_expires_s",),
            )
        return self


def _state_path(value: object) -> object:
    if isinstance(value, str) and (not value.strip() or "\x00" in value):
        raise problem("should be a file name")
    return value


class StateConfig(Section):
    """Where state that must survive a restart is kept."""

    # Relative to the working directory of the process, not to the config file.
    path: Annotated[str, BeforeValidator(_state_path), as_text("a file name")] = "sbc-state.sqlite"
