"""The listener (public, private, backend), sip, limits and logging sections
(sbc/config/schema.py): defaults, normalised values, the summary, and every
mistake in them (tests/config/cases/schema.yaml)."""

from __future__ import annotations

import pytest

from sbc.config import Config, LogFormat, LogLevel, Transport, parse_config, summary
from sbc.config.gateways import DigestAlgorithm, UnknownSource

from .support import EXAMPLE, assert_one_error, bad_configs, yaml_text


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "{}", "---\n"])
def test_empty_text_gives_defaults(text: str) -> None:
    cfg = parse_config(text)
    assert cfg == Config()
    assert cfg.public.address == ("127.0.0.1", 5060)
    assert cfg.public.transports == (Transport.UDP, Transport.TCP)
    assert cfg.public.advertise_host is None
    assert cfg.public.advertised == "127.0.0.1"
    assert cfg.private.address == ("127.0.0.1", 5080)
    assert cfg.backend.address == ("127.0.0.1", 5070)
    assert (cfg.sip.t1_ms, cfg.sip.t2_ms) == (500, 4000)
    assert (cfg.sip.t1, cfg.sip.t2) == (0.5, 4.0)
    assert cfg.sip.invite_timeout_s == 32.0
    assert cfg.sip.proxy_timeout_s == 180.0
    assert cfg.sip.transaction_linger_s == 32.0
    assert cfg.sip.max_transactions == 100_000
    assert cfg.sip.max_dialogs == 200_000
    assert cfg.sip.dialog_setup_timeout_s == 300.0
    assert cfg.sip.dialog_max_age_s == 86_400.0
    assert cfg.limits.max_datagram == 16_384
    assert cfg.limits.max_tcp_message == 65_536
    assert cfg.limits.tcp_buffer == 131_072
    assert cfg.limits.max_tcp_connections == 10_000
    assert cfg.limits.tcp_idle_timeout_s == 600.0
    assert cfg.logging.format is LogFormat.JSON
    assert cfg.logging.level is LogLevel.INFO
    assert cfg.gateways == ()
    assert cfg.auth.realm == "sbc"
    assert cfg.auth.nonce_ttl_s == 300.0
    assert cfg.auth.algorithms == (DigestAlgorithm.MD5, DigestAlgorithm.SHA_256)
    assert cfg.auth.unknown_source is UnknownSource.DROP
    assert (cfg.auth.reply_budget_per_s, cfg.auth.reply_budget_burst) == (50.0, 100)
    assert (cfg.registrar.min_expires_s, cfg.registrar.max_expires_s) == (60, 3600)
    assert (cfg.registrar.default_expires_s, cfg.registrar.max_contacts) == (3600, 5)
    assert cfg.state.path == "sbc-state.sqlite"
    assert cfg.logging.summary_interval_s == 60.0
    calls = cfg.calls
    assert (calls.max_cps, calls.max_cps_burst, calls.burst) == (0.0, None, 1.0)
    assert calls.max_concurrent == 0
    assert (calls.blocked_prefixes, calls.tech_prefixes) == ((), ())
    assert (calls.retry_after_s, calls.persist_interval_s) == (5, 1.0)


def test_values_are_normalised() -> None:
    cfg = parse_config(
        yaml_text("""
            public:
              host: "0:0:0:0:0:0:0:1"
              transports: [TCP]
              port: 5062
            private:
              host: "::1"
              advertise_host: "2001:db8::5"
            backend:
              host: "::1"
            sip:
              invite_timeout_s: 5
            logging:
              level: WARNING
              format: Console
        """)
    )
    assert cfg.public.host == "::1"
    assert cfg.public.transports == (Transport.TCP,)
    assert cfg.public.udp is False and cfg.public.tcp is True
    assert cfg.public.hostport == "[::1]:5062"
    assert cfg.private.advertised_hostport == "[2001:db8::5]:5080"
    assert cfg.sip.invite_timeout_s == 5.0
    assert cfg.logging.level is LogLevel.WARNING
    assert cfg.logging.format is LogFormat.CONSOLE


def test_section_with_everything_commented_out_is_defaults() -> None:
    cfg = parse_config("sip:\n  # t1_ms: 100\nlimits:\n")
    assert cfg.sip == Config().sip
    assert cfg.limits == Config().limits


def test_advertise_host_for_wildcard_listener() -> None:
    cfg = parse_config("public:\n  host: 0.0.0.0\n  advertise_host: 203.0.113.7\n")
    assert cfg.public.address == ("0.0.0.0", 5060)
    assert cfg.public.advertised == "203.0.113.7"


def test_models_are_frozen() -> None:
    cfg = parse_config("")
    with pytest.raises(ValueError):
        cfg.public.port = 1


def test_summary() -> None:
    assert summary(parse_config("")) == {
        "public": "127.0.0.1:5060",
        "transports": "udp,tcp",
        "private": "127.0.0.1:5080",
        "backend": "127.0.0.1:5070",
        "gateways": "0",
    }
    cfg = parse_config("public: {host: 0.0.0.0, advertise_host: 198.51.100.1, transports: [udp]}")
    assert summary(cfg) == {
        "public": "0.0.0.0:5060",
        "transports": "udp",
        "private": "127.0.0.1:5080",
        "backend": "127.0.0.1:5070",
        "gateways": "0",
        "public_advertised": "198.51.100.1:5060",
    }


def test_example_file_commented_examples_are_valid() -> None:
    # Each example line replaces the `advertise_host: null` just above it.
    uncommented = []
    for line in EXAMPLE.read_text().splitlines():
        if line.strip() == "advertise_host: null":
            continue
        if line.lstrip().startswith("# advertise_host:"):
            line = line.replace("# advertise_host:", "advertise_host:", 1)
        uncommented.append(line)
    text = "\n".join(uncommented)
    cfg = parse_config(text, "example")
    assert cfg.public.advertised == "203.0.113.10"
    assert cfg.private.advertised == "10.0.0.5"


@pytest.mark.parametrize(("text", "expected"), bad_configs("schema"))
def test_bad_config(text: str, expected: str) -> None:
    assert_one_error(text, expected)
