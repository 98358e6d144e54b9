"""The sbc configuration: one YAML file validated by a pydantic schema.

This module owns the schema (every option, its default and its limits), the
loading of the file, and the translation of every way a file can be wrong --
unreadable, bad YAML, a typo'd key, a value out of range, two settings that
contradict each other -- into one `ConfigError` whose text names the field, the
problem, and the file and line, one problem per line::

    configs/x.yaml:12: public.port: Input should be less than or equal to 65535

The YAML text is composed into a node tree first so that every key path can be
mapped back to the line it was written on; pydantic's error locations are then
resolved against that map.  All models are frozen and refuse unknown keys.

The gateway, auth, registrar and state sections live in `sbc.config_gateways`,
together with the error and field helpers every section uses.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import UnionType
from typing import Annotated, Any, Self, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .config_gateways import (
    AuthConfig,
    Count,
    DigestAccount,
    GatewayConfig,
    Loc,
    Port,
    RegistrarConfig,
    Seconds,
    Section,
    StateConfig,
    check_gateways,
    hostport,
    kind,
    problem,
)

__all__ = [
    "AuthConfig",
    "BackendConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DigestAccount",
    "GatewayConfig",
    "LimitsConfig",
    "LogFormat",
    "LogLevel",
    "LoggingConfig",
    "PrivateConfig",
    "PublicConfig",
    "RegistrarConfig",
    "SipConfig",
    "StateConfig",
    "Transport",
    "hostport",
    "load_config",
    "parse_config",
    "summary",
]


# --------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file."""

    path: str  # dotted key path, e.g. "public.port"; "" for the file as a whole
    message: str
    line: int | None  # 1-based, None when the problem has no place in the file

    def format(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; str() has one problem per line."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = tuple(issues)
        super().__init__("\n".join(issue.format(source) for issue in self.issues))

    @classmethod
    def single(cls, source: str, message: str, line: int | None = None, path: str = "") -> Self:
        return cls(source, [ConfigIssue(path, message, line)])


# --------------------------------------------------------------------------
# Field types


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _ip_address(value: object) -> str:
    # YAML 1.1 reads some unquoted IPv6 forms (1:2:3:4:5:6:7:8) as base-60
    # integers, so a non-string here usually means "quote it".
    if not isinstance(value, str):
        raise problem(
            "Input should be an IP address string (quote IPv6 addresses in YAML), "
            f"not {kind(value)}"
        )
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise problem(
            f"{value!r} is not an IPv4 or IPv6 address (host names are not accepted)"
        ) from None


def _optional_ip_address(value: object) -> str | None:
    return None if value is None else _ip_address(value)


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


IPAddress = Annotated[str, BeforeValidator(_ip_address)]
OptionalIPAddress = Annotated[str | None, BeforeValidator(_optional_ip_address)]


def _is_unspecified(host: str) -> bool:
    return ipaddress.ip_address(host).is_unspecified


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


# --------------------------------------------------------------------------
# Sections


class _Endpoint(Section):
    host: IPAddress = "127.0.0.1"
    port: Port = 5060

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to bind or send to."""
        return (self.host, self.port)

    @property
    def hostport(self) -> str:
        return hostport(self.host, self.port)


class _Listener(_Endpoint):
    """A socket of the sbc itself, optionally known to peers by another address."""

    advertise_host: OptionalIPAddress = None

    @field_validator("advertise_host")
    @classmethod
    def _concrete_advertise_host(cls, value: str | None) -> str | None:
        if value is not None and _is_unspecified(value):
            raise problem(f"{value} cannot be advertised; give the address peers reach")
        return value

    @model_validator(mode="after")
    def _advertise_needed(self) -> Self:
        # A Via or Record-Route naming 0.0.0.0 would send responses and in-dialog
        # requests nowhere (RFC 3261 §18.2.2, §16.6 step 4).
        if self.advertise_host is None and _is_unspecified(self.host):
            raise problem(
                f"required when host is {self.host} (listening on all interfaces): "
                "the address written into Via and Record-Route",
                at=("advertise_host",),
                also=("host",),
            )
        return self

    @property
    def advertised(self) -> str:
        """The address written into Via and Record-Route."""
        return self.advertise_host or self.host

    @property
    def advertised_hostport(self) -> str:
        return hostport(self.advertised, self.port)


class PublicConfig(_Listener):
    """The public SIP side: callers and carriers."""

    host: IPAddress = "127.0.0.1"
    port: Port = 5060
    transports: Annotated[
        tuple[Annotated[Transport, BeforeValidator(_lower)], ...], Field(min_length=1)
    ] = (Transport.UDP, Transport.TCP)

    @field_validator("transports")
    @classmethod
    def _no_duplicates(cls, value: tuple[Transport, ...]) -> tuple[Transport, ...]:
        seen: set[Transport] = set()
        for index, transport in enumerate(value):
            if transport in seen:
                raise problem(f"{transport.value!r} is listed twice", at=(index,))
            seen.add(transport)
        return value

    @property
    def udp(self) -> bool:
        return Transport.UDP in self.transports

    @property
    def tcp(self) -> bool:
        return Transport.TCP in self.transports


class PrivateConfig(_Listener):
    """The private side towards VOS3000: one UDP socket."""

    host: IPAddress = "127.0.0.1"
    port: Port = 5080


class BackendConfig(_Endpoint):
    """The VOS3000 softswitch that every accepted request is relayed to."""

    host: IPAddress = "127.0.0.1"
    port: Port = 5070

    @field_validator("host")
    @classmethod
    def _concrete_host(cls, value: str) -> str:
        if _is_unspecified(value):
            raise problem(f"{value} is not an address a request can be sent to")
        return value


class SipConfig(Section):
    """Protocol timers (RFC 3261 §17) and table caps."""

    t1_ms: Annotated[int, Field(strict=True, ge=50, le=5000)] = 500
    t2_ms: Annotated[int, Field(strict=True, ge=50)] = 4000
    invite_timeout_s: Seconds = 32.0
    proxy_timeout_s: Seconds = 180.0
    transaction_linger_s: Seconds = 32.0
    max_transactions: Count = 100_000
    max_dialogs: Count = 200_000
    dialog_setup_timeout_s: Seconds = 300.0
    dialog_max_age_s: Seconds = 86_400.0

    @model_validator(mode="after")
    def _t2_not_below_t1(self) -> Self:
        # T2 caps the doubling retransmit interval that starts at T1 (§17.1.2.2).
        if self.t2_ms < self.t1_ms:
            raise problem(
                f"must be at least sip.t1_ms ({self.t1_ms})", at=("t2_ms",), also=("t1_ms",)
            )
        return self

    @property
    def t1(self) -> float:
        """T1 in seconds."""
        return self.t1_ms / 1000

    @property
    def t2(self) -> float:
        """T2 in seconds."""
        return self.t2_ms / 1000


class LimitsConfig(Section):
    """Size and count caps on what the transports accept."""

    max_datagram: Annotated[int, Field(strict=True, ge=512, le=65507)] = 16_384
    max_tcp_message: Annotated[int, Field(strict=True, ge=1024)] = 65_536
    tcp_buffer: Count = 131_072
    max_tcp_connections: Count = 10_000
    tcp_idle_timeout_s: Seconds = 600.0

    @model_validator(mode="after")
    def _buffer_holds_a_message(self) -> Self:
        if self.tcp_buffer < self.max_tcp_message:
            raise problem(
                f"must be at least limits.max_tcp_message ({self.max_tcp_message})",
                at=("tcp_buffer",),
                also=("max_tcp_message",),
            )
        return self


class LoggingConfig(Section):
    format: Annotated[LogFormat, BeforeValidator(_lower)] = LogFormat.JSON
    level: Annotated[LogLevel, BeforeValidator(_lower)] = LogLevel.INFO


_SECTIONS = ("public", "private", "backend", "sip", "limits", "logging", "auth", "registrar",
             "state")


class Config(Section):
    """The whole configuration; every section is optional."""

    public: PublicConfig = Field(default_factory=PublicConfig)
    private: PrivateConfig = Field(default_factory=PrivateConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    sip: SipConfig = Field(default_factory=SipConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    gateways: tuple[GatewayConfig, ...] = ()
    auth: AuthConfig = Field(default_factory=AuthConfig)
    registrar: RegistrarConfig = Field(default_factory=RegistrarConfig)
    state: StateConfig = Field(default_factory=StateConfig)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `sip:` with every option below it commented out reads as null.
        if isinstance(data, dict):
            out = {k: ({} if v is None and k in _SECTIONS else v) for k, v in data.items()}
            if out.get("gateways", ()) is None:
                out["gateways"] = ()
            return out
        return data

    def realm_for(self, account: DigestAccount) -> str:
        """The realm `account` authenticates in: its own, else auth.realm."""
        return account.realm if account.realm is not None else self.auth.realm

    @model_validator(mode="after")
    def _no_overlap_or_loop(self) -> Self:
        public, private, backend = self.public, self.private, self.backend
        if private.port == public.port and (
            private.host == public.host
            or _is_unspecified(private.host)
            or _is_unspecified(public.host)
        ):
            raise problem(
                f"private {private.hostport} overlaps public {public.hostport}; "
                "the two sides need their own sockets (change private.port)",
                at=("private", "port"),
                also=("public", "port"),
            )
        own: list[tuple[Loc, str, int]] = [
            (("public",), public.host, public.port),
            (("private",), private.host, private.port),
        ]
        if public.advertise_host is not None:
            own.append((("public", "advertise_host"), public.advertise_host, public.port))
        if private.advertise_host is not None:
            own.append((("private", "advertise_host"), private.advertise_host, private.port))
        for field, host, port in own:
            if backend.port != port:
                continue
            if backend.host == host or (_is_unspecified(host) and _is_loopback(backend.host)):
                raise problem(
                    f"{backend.hostport} is the sbc's own address {hostport(host, port)} "
                    f"({_format_loc(field)}); requests to VOS3000 would loop back into the sbc",
                    at=("backend",),
                    also=field,
                )
        return self

    @model_validator(mode="after")
    def _gateways_consistent(self) -> Self:
        check_gateways(self.gateways, self.auth, self.public, self.private, self.backend)
        return self


def summary(cfg: Config) -> dict[str, str]:
    """A small flat dict for the start-up log line."""
    out = {
        "public": cfg.public.hostport,
        "transports": ",".join(t.value for t in cfg.public.transports),
        "private": cfg.private.hostport,
        "backend": cfg.backend.hostport,
        "gateways": str(len(cfg.gateways)),
    }
    if cfg.public.advertise_host is not None:
        out["public_advertised"] = cfg.public.advertised_hostport
    if cfg.private.advertise_host is not None:
        out["private_advertised"] = cfg.private.advertised_hostport
    return out


# --------------------------------------------------------------------------
# Loading

_Path = tuple[str, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate a configuration file; raises only ConfigError."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError.single(source, "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError.single(source, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError.single(source, f"cannot read: {exc.strerror or exc}") from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate configuration text; `source` names it in errors."""
    data, lines = _parse_yaml(text, source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # A list whose only item is invalid is also "too short"; the item says why.
        deeper = {tuple(err["loc"][:n]) for err in errors for n in range(len(err["loc"]))}
        issues = [
            _issue(err, lines)
            for err in errors
            if not (err["type"] == "too_short" and tuple(err["loc"]) in deeper)
        ]
        issues.sort(key=lambda issue: issue.line or 0)
        raise ConfigError(source, issues) from None


def _parse_yaml(text: str, source: str) -> tuple[dict[Any, Any], dict[_Path, int]]:
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:  # empty file, or only comments
            return {}, {}
        lines, duplicates = _line_map(node)
        if duplicates:
            raise ConfigError(source, duplicates)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = (exc.problem or "invalid YAML").removeprefix("but ")
        if exc.context:
            where = ""
            if exc.context_mark is not None and exc.context_mark is not mark:
                where = f" at line {exc.context_mark.line + 1}"
            problem = f"{problem} ({exc.context}{where})"
        line = None if mark is None else mark.line + 1
        raise ConfigError.single(source, f"invalid YAML: {problem}", line) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        message = f"invalid YAML: character #x{exc.character:04x} is not allowed ({exc.reason})"
        raise ConfigError.single(source, message, line) from None
    except yaml.YAMLError as exc:
        raise ConfigError.single(source, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError.single(source, "invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:  # a document with no content, e.g. "---"
        return {}, {}
    if not isinstance(data, dict):
        shape = "a list" if isinstance(data, list) else f"a single {type(data).__name__} value"
        raise ConfigError.single(
            source,
            f"the top level must be a mapping of sections (public:, private:, ...), not {shape}",
            node.start_mark.line + 1,
        )
    return data, lines


def _line_map(root: yaml.Node) -> tuple[dict[_Path, int], list[ConfigIssue]]:
    """Map each key path (sequence indexes as strings) to its 1-based line."""
    lines: dict[_Path, int] = {}
    duplicates: list[ConfigIssue] = []
    stack: list[tuple[yaml.Node, _Path, frozenset[int]]] = [(root, (), frozenset())]
    while stack:
        node, path, ancestors = stack.pop()
        if id(node) in ancestors:  # a recursive alias
            continue
        ancestors = ancestors | {id(node)}
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key_path = (*path, key_node.value)
                line = key_node.start_mark.line + 1
                if key_path in lines:
                    duplicates.append(
                        ConfigIssue(
                            ".".join(key_path),
                            f"duplicate key (first given at line {lines[key_path]})",
                            line,
                        )
                    )
                    continue
                lines[key_path] = line
                stack.append((value_node, key_path, ancestors))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                item_path = (*path, str(index))
                lines[item_path] = item.start_mark.line + 1
                stack.append((item, item_path, ancestors))
    duplicates.sort(key=lambda issue: issue.line or 0)
    return lines, duplicates


def _issue(err: Any, lines: dict[_Path, int]) -> ConfigIssue:
    base: Loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    loc: Loc = (*base, *ctx.get("at", ()))
    line, depth = _find_line(lines, loc)
    if "also" in ctx and depth < len(loc):
        also_line, also_depth = _find_line(lines, (*base, *ctx["also"]))
        if also_depth > depth:
            line = also_line
    return ConfigIssue(_format_loc(loc), _message(err, loc), line)


def _find_line(lines: dict[_Path, int], loc: Iterable[str | int]) -> tuple[int | None, int]:
    """The line of the deepest prefix of `loc` written in the file, and its depth."""
    key = tuple(str(part) for part in loc)
    for depth in range(len(key), 0, -1):
        line = lines.get(key[:depth])
        if line is not None:
            return line, depth
    return None, 0


def _format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: Any, loc: Sequence[str | int]) -> str:
    error_type = err["type"]
    if error_type == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            return f"unknown key (did you mean {close[0]!r}?)"
        return f"unknown key; expected one of: {', '.join(known)}"
    if error_type in ("model_type", "model_attributes_type", "dict_type"):
        return f"should be a mapping of keys, not {kind(err.get('input'))}"
    if error_type in ("tuple_type", "list_type"):
        return f"should be a list, not {kind(err.get('input'))}"
    if error_type == "too_short":
        return "should not be empty"
    return str(err["msg"])


def _known_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys of the section at `loc`, e.g. ("gateways", 0, "egress")."""
    annotation: Any = Config
    for part in loc:
        if isinstance(part, int):  # an item of a list: tuple[Model, ...]
            args = get_args(annotation)
            annotation = args[0] if get_origin(annotation) is tuple and args else None
            continue
        model = _model_of(annotation)
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return []
        annotation = field.annotation
    model = _model_of(annotation)
    return list(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model in `Model` or `Model | None`, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        for arg in get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None
