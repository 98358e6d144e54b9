"""The sbc configuration: one YAML file validated by a pydantic schema.

This package owns the schema (every option, its default and its limits), the
loading of the file, and the translation of every way a file can be wrong --
unreadable, bad YAML, a typo'd key, a value out of range, two settings that
contradict each other -- into one `ConfigError` whose text names the field, the
problem, and the file and line, one problem per line::

    configs/x.yaml:12: public.port: Input should be less than or equal to 65535

All models are frozen and refuse unknown keys.  `_schema` holds the listener,
backend, SIP, limits and logging sections and `Config` itself; `_load` reads
the file and maps errors back to lines.  The gateway, auth, registrar and state
sections live in `sbc.config.gateways`, which also re-exports the error and
field helpers every section uses (from `sbc.config.base`); the global call limits (`calls`) live in
`sbc.config.calls`; the screening, ban and firewall sections live in
`sbc.config.defense`; the TLS section and a gateway's TLS requirements live in
`sbc.config.tls`; the two lanes (`lanes`) live in `sbc.config.lanes`.
"""

from .calls import CallsConfig
from .defense import (
    BansConfig,
    FirewallConfig,
    FirewallMode,
    OffensesConfig,
    RateConfig,
    ScreenConfig,
)
from .gateways import (
    AuthConfig,
    DigestAccount,
    GatewayConfig,
    GatewayLimits,
    RegistrarConfig,
    StateConfig,
    hostport,
)
from .tls import GatewayTls, TlsConfig
from .lanes import LanesConfig
from .load import ConfigError, ConfigIssue, load_config, parse_config
from .schema import (
    BackendConfig,
    BackendTarget,
    Config,
    LimitsConfig,
    LogFormat,
    LoggingConfig,
    LogLevel,
    PrivateConfig,
    PublicConfig,
    SipConfig,
    Transport,
    lanes_mode,
    summary,
)

__all__ = [
    "AuthConfig",
    "BackendConfig",
    "BackendTarget",
    "BansConfig",
    "CallsConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DigestAccount",
    "FirewallConfig",
    "FirewallMode",
    "GatewayConfig",
    "GatewayLimits",
    "GatewayTls",
    "LanesConfig",
    "LimitsConfig",
    "LogFormat",
    "LogLevel",
    "LoggingConfig",
    "OffensesConfig",
    "PrivateConfig",
    "PublicConfig",
    "RateConfig",
    "RegistrarConfig",
    "ScreenConfig",
    "SipConfig",
    "StateConfig",
    "TlsConfig",
    "Transport",
    "hostport",
    "lanes_mode",
    "load_config",
    "parse_config",
    "summary",
]
