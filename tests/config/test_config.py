"""Configuration loading, validation messages, and log output format."""

from __future__ import annotations

import hashlib
import io
import json
import os
import select
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from sbc.config import (
    BansConfig,
    CallsConfig,
    Config,
    ConfigError,
    FirewallMode,
    GatewayLimits,
    LogFormat,
    LogLevel,
    RateConfig,
    Transport,
    load_config,
    parse_config,
    summary,
)
from sbc.config.defense import DEFAULT_SCANNER_SIGNATURES
from sbc.config.gateways import DigestAlgorithm, OptionsMode, UnknownSource
from sbc.config.tls import GatewayTls
from sbc.io.logsetup import configure_logging, flush_logs, get_logger

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "sbc.example.yaml"
LOCAL = ROOT / "configs" / "local.yaml"


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# --------------------------------------------------------------------------
# Good input


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


def test_defence_defaults() -> None:
    cfg = parse_config("")
    screen, bans, firewall = cfg.screen, cfg.bans, cfg.firewall
    assert screen.scanner_signatures == DEFAULT_SCANNER_SIGNATURES
    assert screen.scanner_signatures[:2] == ("friendly-scanner", "sipvicious")
    assert len(screen.scanner_signatures) == 15
    assert screen.signatures_apply_to_gateways is False
    assert screen.rate_per_ip == RateConfig(rate=20.0, burst=40)
    assert (screen.rate_per_net.rate, screen.rate_per_net.burst) == (200.0, 400)
    assert (screen.rate_per_gateway.rate, screen.rate_per_gateway.burst) == (5000.0, 10_000)
    assert screen.max_sources == 200_000
    assert (bans.max_offenses, bans.findtime_s, bans.bantime_s) == (5, 600.0, 600.0)
    assert (bans.increment, bans.max_bantime_s) == (2.0, 604_800.0)
    assert (bans.exempt, bans.max_entries) == ((), 100_000)
    o = bans.offenses
    assert o.scanner and o.rate_limit and o.digest_failure and o.malformed
    assert o.blocked_destination and o.backend_auth_failure
    assert firewall.mode is FirewallMode.OFF and not firewall.enabled
    assert (firewall.table, firewall.nft_path) == ("sbc", "nft")


def test_defence_values_are_normalised() -> None:
    cfg = parse_config(
        yaml_text("""
            screen:
              scanner_signatures: ["SIPVicious", "Friendly-Scanner", "my scanner/1.0"]
              signatures_apply_to_gateways: true
              rate_per_ip: {rate: 2, burst: 1}
              rate_per_net:
                rate: 0.5
                burst: 3
              rate_per_gateway:
              max_sources: 1000
            bans:
              max_offenses: 1
              findtime_s: 30
              bantime_s: 60
              increment: 1
              max_bantime_s: 60
              exempt: ["192.0.2.0/24", "::ffff:198.51.100.7", "2001:DB8::/32"]
              max_entries: 100
              offenses:
                scanner: false
                backend_auth_failure: false
            firewall:
              mode: NFTables
              table: sbc_bans_1
              nft_path: /usr/sbin/nft
            logging:
              summary_interval_s: 5
        """)
    )
    screen, bans, firewall = cfg.screen, cfg.bans, cfg.firewall
    assert screen.scanner_signatures == ("sipvicious", "friendly-scanner", "my scanner/1.0")
    assert screen.signatures_apply_to_gateways is True
    assert screen.rate_per_ip == RateConfig(rate=2.0, burst=1)
    assert screen.rate_per_net == RateConfig(rate=0.5, burst=3)
    assert screen.rate_per_gateway == Config().screen.rate_per_gateway
    assert screen.max_sources == 1000
    assert (bans.max_offenses, bans.findtime_s, bans.bantime_s) == (1, 30.0, 60.0)
    assert (bans.increment, bans.max_bantime_s, bans.max_entries) == (1.0, 60.0, 100)
    assert bans.exempt == ("192.0.2.0/24", "198.51.100.7", "2001:db8::/32")
    assert bans.offenses.scanner is False and bans.offenses.backend_auth_failure is False
    assert bans.offenses.rate_limit is True
    assert firewall.mode is FirewallMode.NFTABLES and firewall.enabled
    assert (firewall.table, firewall.nft_path) == ("sbc_bans_1", "/usr/sbin/nft")
    assert cfg.logging.summary_interval_s == 5.0


@pytest.mark.parametrize(
    "text",
    [
        "screen:\nbans:\nfirewall:\n",
        "screen:\n  rate_per_ip:\n  rate_per_net:\nbans:\n  offenses:\n  exempt:\n",
        "firewall:\n  mode: off\n",  # YAML 1.1 reads an unquoted off as false
        "firewall:\n  mode: OFF\n",
    ],
)
def test_empty_defence_sections_are_defaults(text: str) -> None:
    assert parse_config(text) == Config()


def test_signatures_may_be_turned_off() -> None:
    assert parse_config("screen: {scanner_signatures: []}").screen.scanner_signatures == ()
    assert parse_config("screen:\n  scanner_signatures:\n").screen.scanner_signatures == ()


def test_bantime_grows_by_increment_up_to_max() -> None:
    bans = BansConfig()
    assert [bans.bantime(n) for n in range(5)] == [600.0, 1200.0, 2400.0, 4800.0, 9600.0]
    assert bans.bantime(10) == 604_800.0
    assert bans.bantime(100_000) == 604_800.0  # no float overflow
    flat = parse_config("bans: {increment: 1.0, bantime_s: 30}").bans
    assert flat.bantime(0) == flat.bantime(50) == 30.0
    assert parse_config("bans: {bantime_s: 60, max_bantime_s: 60}").bans.bantime(3) == 60.0


def test_example_file_loads_and_equals_defaults() -> None:
    assert load_config(EXAMPLE) == Config()
    assert load_config(str(EXAMPLE)) == Config()


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


def test_example_file_defence_examples_are_valid() -> None:
    # Each example line replaces the default line just above it.
    lines = EXAMPLE.read_text().splitlines()
    for default, example in (("exempt: []", "# exempt:"), ('mode: "off"', '# mode: "nftables"')):
        index = [line.strip() for line in lines].index(default)
        assert lines[index + 1].lstrip().startswith(example)
        lines[index] = lines[index + 1].replace("# ", "", 1)
        del lines[index + 1]
    cfg = parse_config("\n".join(lines), "example")
    assert cfg.bans.exempt == ("192.0.2.0/24", "2001:db8:ff::/48")
    assert cfg.firewall.mode is FirewallMode.NFTABLES


def test_example_file_gateway_example_is_valid() -> None:
    # The commented block after `gateways: []` replaces it.
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("gateways: []")
    end = lines.index("", start)
    block = [line.removeprefix("#").removeprefix(" ") for line in lines[start + 1 : end]]
    assert block[0] == "gateways:"
    text = "\n".join(lines[:start] + block + lines[end:])
    cfg = parse_config(text, "example")
    acme, phones = cfg.gateways
    assert acme.name == "acme"
    assert acme.ip == ("198.51.100.10", "203.0.113.0/24", "2001:db8:100::/48")
    assert acme.ip_port == (("192.0.2.20", 5060), ("192.0.2.20", 5062))
    assert acme.egress is not None and acme.egress.address == ("127.0.0.1", 5081)
    assert acme.options is OptionsMode.ANSWER
    assert acme.limits == GatewayLimits(
        cps=10.0, cps_burst=20.0, max_concurrent=100, max_duration_s=7200.0
    )
    assert acme.limits.burst == 20.0
    assert acme.allowed_prefixes == ("+44", "+33")
    assert acme.blocked_prefixes == ("+4490", "+4491")
    assert acme.tech_prefixes == ("9999#",)
    assert acme.tls == GatewayTls(require_client_cert=False)
    assert phones.limits == GatewayLimits() and phones.allowed_prefixes == ()
    first, second = phones.digest
    assert first.password is not None and first.password.get_secret_value() == "change-me"
    assert cfg.realm_for(first) == "sbc"
    assert cfg.realm_for(second) == "pbx"
    # The example hashes are those of the password "secret" in realm "pbx".
    assert second.ha1_md5 is not None and second.ha1_sha256 is not None
    seed = b"1002:pbx:secret"
    assert second.ha1_md5.get_secret_value() == hashlib.md5(seed).hexdigest()
    assert second.ha1_sha256.get_secret_value() == hashlib.sha256(seed).hexdigest()
    assert second.from_cidrs == ("192.0.2.0/24",)


def test_example_file_blocked_prefixes_example_is_valid() -> None:
    # The commented list after `blocked_prefixes: []` replaces it.
    lines = EXAMPLE.read_text().splitlines()
    start = [line.strip() for line in lines].index("blocked_prefixes: []")
    end = lines.index("", start)
    block = [line.replace("# ", "", 1) for line in lines[start + 1 : end]]
    assert block[0].split("#")[0].strip() == "blocked_prefixes:"
    cfg = parse_config("\n".join(lines[:start] + block + lines[end:]), "example")
    assert cfg.calls.blocked_prefixes[:3] == ("+979", "+881", "+882")
    assert len(cfg.calls.blocked_prefixes) == 16
    assert cfg.calls == CallsConfig(blocked_prefixes=cfg.calls.blocked_prefixes)


def test_local_file() -> None:
    cfg = load_config(LOCAL)
    assert cfg.public.address == ("127.0.0.1", 5060)
    assert cfg.public.transports == (Transport.UDP, Transport.TCP)
    assert cfg.private.address == ("127.0.0.1", 5080)
    assert cfg.backend.address == ("127.0.0.1", 5070)
    assert cfg.logging.format is LogFormat.CONSOLE
    assert cfg.logging.level is LogLevel.INFO
    (local,) = cfg.gateways
    assert (local.name, local.ip, local.ip_port, local.digest) == ("local", ("127.0.0.0/8",), (), ())
    assert local.egress is None


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


# --------------------------------------------------------------------------
# Gateways, auth, registrar, state


def test_gateways_are_normalised() -> None:
    cfg = parse_config(
        yaml_text("""
            gateways:
              - name: acme
                ip:
                  - 192.0.2.10
                  - 10.1.0.0/255.255.0.0
                  - "2001:DB8:0::/32"
                  - "::ffff:198.51.100.0/120"
                  - "::ffff:198.51.100.77"
                  - 203.0.113.5/32
                ip_port: ["192.0.2.20:5060", "[2001:db8::0:1]:5062", "[::ffff:192.0.2.21]:5060"]
                egress: {host: 127.0.0.1, port: 5081}
                options: PASS
              - name: phones
                digest:
                  - username: "1001"
                    password: "secret"
                  - username: "alice.smith"
                    ha1_md5: "0123456789ABCDEF0123456789ABCDEF"
                    realm: pbx
                    from_cidrs: ["192.0.2.0/24", "2001:db8::5"]
            auth:
              algorithms: [md5, sha-256]
              unknown_source: REJECT
              nonce_ttl_s: 60
              reply_budget_per_s: 5
        """)
    )
    acme, phones = cfg.gateways
    assert isinstance(cfg.gateways, tuple)
    assert acme.ip == (
        "192.0.2.10",
        "10.1.0.0/16",
        "2001:db8::/32",
        "198.51.100.0/24",
        "198.51.100.77",
        "203.0.113.5",
    )
    assert acme.ip_port == (("192.0.2.20", 5060), ("2001:db8::1", 5062), ("192.0.2.21", 5060))
    assert acme.egress is not None
    assert (acme.egress.address, acme.egress.hostport) == (("127.0.0.1", 5081), "127.0.0.1:5081")
    assert acme.options is OptionsMode.PASS
    assert acme.digest == ()
    assert phones.options is OptionsMode.ANSWER and phones.egress is None
    first, second = phones.digest
    assert first.password is not None and first.password.get_secret_value() == "secret"
    assert first.algorithms == {DigestAlgorithm.MD5, DigestAlgorithm.SHA_256}
    assert second.ha1_md5 is not None
    assert second.ha1_md5.get_secret_value() == "0123456789abcdef0123456789abcdef"
    assert second.algorithms == {DigestAlgorithm.MD5}
    assert second.from_cidrs == ("192.0.2.0/24", "2001:db8::5")
    assert (cfg.realm_for(first), cfg.realm_for(second)) == ("sbc", "pbx")
    assert cfg.auth.algorithms == (DigestAlgorithm.MD5, DigestAlgorithm.SHA_256)
    assert cfg.auth.unknown_source is UnknownSource.REJECT
    assert (cfg.auth.nonce_ttl_s, cfg.auth.reply_budget_per_s) == (60.0, 5.0)
    assert summary(cfg)["gateways"] == "2"


def test_secrets_stay_out_of_repr() -> None:
    cfg = parse_config(
        'gateways: [{name: a, digest: [{username: "u", password: "hunter2"},'
        ' {username: "v", ha1_sha256: "' + "ab" * 32 + '"}]}]'
    )
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg)
    assert "ab" * 32 not in repr(cfg)


@pytest.mark.parametrize(
    "text",
    ["gateways:\n", "gateways: []\n", "gateways:\n# - name: x\n", "auth:\nregistrar:\nstate:\n"],
)
def test_empty_gateway_sections_are_defaults(text: str) -> None:
    assert parse_config(text) == Config()


def test_overlapping_networks_in_different_gateways_are_allowed() -> None:
    cfg = parse_config(
        yaml_text("""
            gateways:
              - {name: wide, ip: [10.0.0.0/8]}
              - {name: narrow, ip: [10.1.0.0/16], ip_port: ["10.0.0.1:5060"]}
              - {name: host, ip: [10.0.0.1]}
        """)
    )
    assert [g.name for g in cfg.gateways] == ["wide", "narrow", "host"]


def test_egresses_may_share_the_private_host() -> None:
    cfg = parse_config(
        yaml_text("""
            private: {host: 10.0.0.5, port: 5080}
            backend: {host: 10.0.0.9, port: 5060}
            gateways:
              - {name: a, ip: [192.0.2.1], egress: {host: 10.0.0.5, port: 5081}}
              - {name: b, ip: [192.0.2.2], egress: {host: 10.0.0.5, port: 5082}}
              - {name: c, ip: [192.0.2.3]}
        """)
    )
    assert [g.egress.port if g.egress else None for g in cfg.gateways] == [5081, 5082, None]


def test_registrar_bounds_may_be_equal() -> None:
    cfg = parse_config("registrar: {min_expires_s: 300, max_expires_s: 300, default_expires_s: 300}")
    assert cfg.registrar.min_expires_s == cfg.registrar.max_expires_s == 300


def test_unknown_key_in_gateway_lists_the_keys() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("gateways:\n  - name: a\n    ip: [192.0.2.1]\n    zzz: 1\n", "x.yaml")
    assert str(info.value) == (
        "x.yaml:4: gateways[0].zzz: unknown key; expected one of: "
        "name, ip, ip_port, digest, egress, options, limits, allowed_prefixes, "
        "blocked_prefixes, tech_prefixes, tls"
    )


# --------------------------------------------------------------------------
# Call limits and destination controls


def test_call_limits_and_prefixes() -> None:
    cfg = parse_config(
        yaml_text("""
            gateways:
              - name: acme
                ip: [192.0.2.10]
                limits:
                  cps: 0.5
                  max_concurrent: 30
                  max_duration_s: 3600
                allowed_prefixes: ["+44", " 0033 ", "1"]
                blocked_prefixes: ["+4490", "0"]
                tech_prefixes: ["9999#", "*77", "+12"]
              - name: burst
                ip: [192.0.2.11]
                limits: {cps: 20, cps_burst: 5}
              - name: plain
                ip: [192.0.2.12]
                limits:
                allowed_prefixes:
            calls:
              max_cps: 150
              max_cps_burst: 300.5
              max_concurrent: 1000
              blocked_prefixes: ["+979", "00881", "1900"]
              tech_prefixes: ["#1#"]
              retry_after_s: 3600
              persist_interval_s: 60
        """)
    )
    acme, burst, plain = cfg.gateways
    assert acme.limits == GatewayLimits(cps=0.5, max_concurrent=30, max_duration_s=3600.0)
    assert acme.limits.burst == 1.0  # one second's worth, at least one call
    assert acme.allowed_prefixes == ("+44", "0033", "1")  # stored as written
    assert acme.blocked_prefixes == ("+4490", "0")
    assert acme.tech_prefixes == ("9999#", "*77", "+12")
    assert (burst.limits.cps, burst.limits.cps_burst, burst.limits.burst) == (20.0, 5.0, 5.0)
    assert parse_config(
        "gateways: [{name: a, ip: [192.0.2.1], limits: {cps: 20}}]"
    ).gateways[0].limits.burst == 20.0
    assert plain.limits == GatewayLimits() and plain.allowed_prefixes == ()
    assert (plain.limits.cps, plain.limits.max_concurrent, plain.limits.max_duration_s) == (
        0.0,
        0,
        0.0,
    )
    calls = cfg.calls
    assert (calls.max_cps, calls.max_cps_burst, calls.burst) == (150.0, 300.5, 300.5)
    assert parse_config("calls: {max_cps: 0.25}").calls.burst == 1.0
    assert parse_config("calls: {max_cps: 40}").calls.burst == 40.0
    assert calls.max_concurrent == 1000
    assert calls.blocked_prefixes == ("+979", "00881", "1900")
    assert calls.tech_prefixes == ("#1#",)
    assert (calls.retry_after_s, calls.persist_interval_s) == (3600, 60.0)


@pytest.mark.parametrize(
    "text",
    ["calls:\n", "calls:\n  blocked_prefixes:\n  tech_prefixes:\n  max_cps_burst: null\n"],
)
def test_empty_calls_section_is_defaults(text: str) -> None:
    assert parse_config(text) == Config()


def test_overlapping_prefixes_are_allowed() -> None:
    # A longer blocked prefix carves a range out of an allowed one, and the
    # same prefix may be blocked both globally and for one gateway.
    cfg = parse_config(
        yaml_text("""
            calls: {blocked_prefixes: ["+881"]}
            gateways:
              - name: a
                ip: [192.0.2.1]
                allowed_prefixes: ["+44", "+88"]
                blocked_prefixes: ["+449", "00881"]
                tech_prefixes: ["9", "99"]
        """)
    )
    assert cfg.gateways[0].blocked_prefixes == ("+449", "00881")


def test_max_duration_just_below_dialog_max_age() -> None:
    cfg = parse_config(
        "sip: {dialog_max_age_s: 3600}\n"
        "gateways: [{name: a, ip: [192.0.2.1], limits: {max_duration_s: 3599.5}}]\n"
    )
    assert cfg.gateways[0].limits.max_duration_s == 3599.5


# --------------------------------------------------------------------------
# Bad input: (name, yaml, expected "line: path: message" fragments)

BAD: list[tuple[str, str, str]] = [
    (
        "port_too_big",
        """
        public:
          host: 127.0.0.1
          port: 70000
        """,
        "x.yaml:3: public.port: Input should be less than or equal to 65535",
    ),
    (
        "port_zero",
        """
        backend:
          port: 0
        """,
        "x.yaml:2: backend.port: Input should be greater than or equal to 1",
    ),
    (
        "host_name_not_ip",
        """
        public:
          port: 5060
          host: sbc.example.com
        """,
        "x.yaml:3: public.host: 'sbc.example.com' is not an IPv4 or IPv6 address",
    ),
    (
        "bad_ipv4",
        """
        private:
          host: 10.0.0.300
        """,
        "x.yaml:2: private.host: '10.0.0.300' is not an IPv4 or IPv6 address",
    ),
    (
        "unquoted_ipv6_read_as_number",
        """
        backend:
          host: 1:2:3:4:5:6:7:8
        """,
        "x.yaml:2: backend.host: Input should be an IP address string (quote IPv6",
    ),
    (
        "unknown_key",
        """
        public:
          host: 127.0.0.1
          prot: 5060
        """,
        "x.yaml:3: public.prot: unknown key (did you mean 'port'?)",
    ),
    (
        "unknown_section",
        """
        sip:
          t1_ms: 500
        limit:
          max_datagram: 1000
        """,
        "x.yaml:3: limit: unknown key (did you mean 'limits'?)",
    ),
    (
        "string_for_int",
        """
        sip:
          t1_ms: "500"
        """,
        "x.yaml:2: sip.t1_ms: Input should be a valid integer",
    ),
    (
        "bool_for_int",
        """
        limits:
          max_tcp_connections: yes
        """,
        "x.yaml:2: limits.max_tcp_connections: Input should be a valid integer",
    ),
    (
        "scalar_for_section",
        """
        logging: json
        """,
        "x.yaml:1: logging: should be a mapping of keys, not a string",
    ),
    (
        "string_for_list",
        """
        public:
          transports: udp
        """,
        "x.yaml:2: public.transports: should be a list, not a string",
    ),
    (
        "unknown_transport",
        """
        public:
          transports:
            - udp
            - sctp
        """,
        "x.yaml:4: public.transports[1]: Input should be 'udp', 'tcp' or 'tls'",
    ),
    (
        "duplicate_transport",
        """
        public:
          transports:
            - tcp
            - TCP
        """,
        "x.yaml:4: public.transports[1]: 'tcp' is listed twice",
    ),
    (
        "no_transport",
        """
        public:
          transports: []
        """,
        "x.yaml:2: public.transports: should not be empty",
    ),
    (
        "t1_out_of_range",
        """
        sip:
          t1_ms: 10
        """,
        "x.yaml:2: sip.t1_ms: Input should be greater than or equal to 50",
    ),
    (
        "t2_below_t1",
        """
        sip:
          t1_ms: 1000
          t2_ms: 800
        """,
        "x.yaml:3: sip.t2_ms: must be at least sip.t1_ms (1000)",
    ),
    (
        "t1_above_default_t2",
        """
        sip:
          invite_timeout_s: 10.0
          t1_ms: 4500
        """,
        "x.yaml:3: sip.t2_ms: must be at least sip.t1_ms (4500)",
    ),
    (
        "zero_timeout",
        """
        sip:
          proxy_timeout_s: 0
        """,
        "x.yaml:2: sip.proxy_timeout_s: Input should be greater than 0",
    ),
    (
        "infinite_timeout",
        """
        sip:
          dialog_max_age_s: .inf
        """,
        "x.yaml:2: sip.dialog_max_age_s: Input should be a finite number",
    ),
    (
        "zero_table_cap",
        """
        sip:
          max_dialogs: 0
        """,
        "x.yaml:2: sip.max_dialogs: Input should be greater than or equal to 1",
    ),
    (
        "datagram_too_small",
        """
        limits:
          max_datagram: 100
        """,
        "x.yaml:2: limits.max_datagram: Input should be greater than or equal to 512",
    ),
    (
        "tcp_buffer_below_message",
        """
        limits:
          max_tcp_message: 4096
          tcp_buffer: 2048
        """,
        "x.yaml:3: limits.tcp_buffer: must be at least limits.max_tcp_message (4096)",
    ),
    (
        "tcp_message_above_default_buffer",
        """
        limits:
          max_tcp_message: 262144
        """,
        "x.yaml:2: limits.tcp_buffer: must be at least limits.max_tcp_message (262144)",
    ),
    (
        "bad_log_level",
        """
        logging:
          format: json
          level: verbose
        """,
        "x.yaml:3: logging.level: Input should be 'debug', 'info', 'warning' or 'error'",
    ),
    (
        "wildcard_advertised",
        """
        public:
          advertise_host: 0.0.0.0
        """,
        "x.yaml:2: public.advertise_host: 0.0.0.0 cannot be advertised",
    ),
    (
        "wildcard_without_advertise_host",
        """
        public:
          port: 5060
          host: "::"
        """,
        "x.yaml:3: public.advertise_host: required when host is ::",
    ),
    (
        "backend_equals_public",
        """
        public:
          host: 127.0.0.1
          port: 5060
        backend:
          host: 127.0.0.1
          port: 5060
        """,
        "x.yaml:4: backend: 127.0.0.1:5060 is the sbc's own address 127.0.0.1:5060 (public)",
    ),
    (
        "public_moved_onto_default_backend",
        """
        public:
          port: 5070
        """,
        "x.yaml:1: backend: 127.0.0.1:5070 is the sbc's own address 127.0.0.1:5070 (public)",
    ),
    (
        "backend_equals_private",
        """
        backend:
          port: 5080
        """,
        "x.yaml:1: backend: 127.0.0.1:5080 is the sbc's own address 127.0.0.1:5080 (private)",
    ),
    (
        "backend_on_loopback_of_wildcard_public",
        """
        public:
          host: 0.0.0.0
          advertise_host: 192.0.2.1
        backend:
          port: 5060
        """,
        "x.yaml:4: backend: 127.0.0.1:5060 is the sbc's own address 0.0.0.0:5060 (public)",
    ),
    (
        "backend_equals_advertised",
        """
        private:
          advertise_host: 192.0.2.9
        backend:
          host: 192.0.2.9
          port: 5080
        """,
        (
            "x.yaml:3: backend: 192.0.2.9:5080 is the sbc's own address "
            "192.0.2.9:5080 (private.advertise_host)"
        ),
    ),
    (
        "private_equals_public",
        """
        public:
          port: 5060
        private:
          host: 127.0.0.1
          port: 5060
        """,
        "x.yaml:5: private.port: private 127.0.0.1:5060 overlaps public 127.0.0.1:5060",
    ),
    (
        "public_moved_onto_default_private",
        """
        logging:
          level: info
        public:
          port: 5080
        """,
        "x.yaml:4: private.port: private 127.0.0.1:5080 overlaps public 127.0.0.1:5080",
    ),
    (
        "duplicate_key",
        """
        public:
          port: 5060
          host: 127.0.0.1
          port: 5062
        """,
        "x.yaml:4: public.port: duplicate key (first given at line 2)",
    ),
    (
        "yaml_bad_indent",
        """
        public:
          host: 127.0.0.1
           port: 5060
        """,
        "x.yaml:3: invalid YAML: mapping values are not allowed here",
    ),
    (
        "yaml_unclosed_bracket",
        """
        public:
          transports: [udp, tcp
        backend:
          port: 5070
        """,
        "x.yaml:3: invalid YAML:",
    ),
    (
        "yaml_tab_indent",
        "public:\n\thost: 127.0.0.1\n",
        "x.yaml:2: invalid YAML:",
    ),
    (
        "yaml_unsafe_tag",
        """
        public: !!python/object/apply:os.system ["true"]
        """,
        "x.yaml:1: invalid YAML: could not determine a constructor",
    ),
    (
        "two_documents",
        """
        public: {}
        ---
        sip: {}
        """,
        "x.yaml:2: invalid YAML: found another document",
    ),
    (
        "top_level_list",
        """
        - public
        - private
        """,
        "x.yaml:1: the top level must be a mapping of sections (public:, private:, ...), not a list",
    ),
    (
        "top_level_scalar",
        """
        # just a word
        public
        """,
        "x.yaml:2: the top level must be a mapping of sections",
    ),    # ---- gateways
    (
        "gateway_without_any_identification",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
          - name: empty
            options: pass
        """,
        "x.yaml:4: gateways[1]: gateway 'empty' needs at least one of ip, ip_port or digest",
    ),
    (
        "gateway_with_empty_lists",
        """
        gateways:
          - name: empty
            ip: []
            digest:
        """,
        "x.yaml:2: gateways[0]: gateway 'empty' needs at least one of ip, ip_port or digest",
    ),
    (
        "gateway_name_missing",
        """
        gateways:
          - ip: [192.0.2.1]
        """,
        "x.yaml:2: gateways[0].name: Field required",
    ),
    (
        "gateway_name_bad_characters",
        """
        gateways:
          - name: "acme corp"
            ip: [192.0.2.1]
        """,
        "x.yaml:2: gateways[0].name: 'acme corp': a gateway name is 1 to 64 letters, digits",
    ),
    (
        "gateway_name_too_long",
        f"""
        gateways:
          - ip: [192.0.2.1]
            name: {"a" * 65}
        """,
        "x.yaml:3: gateways[0].name: 'aaaa",
    ),
    (
        "gateway_name_number",
        """
        gateways:
          - name: 1001
            ip: [192.0.2.1]
        """,
        "x.yaml:2: gateways[0].name: should be a name string (quote it in YAML), not a number",
    ),
    (
        "gateway_duplicate_name",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
          - name: other
            ip: [192.0.2.2]
          - name: acme
            ip: [192.0.2.3]
        """,
        "x.yaml:6: gateways[2].name: gateway name 'acme' is already used by gateways[0]",
    ),
    (
        "gateway_unknown_key",
        """
        gateways:
          - name: acme
            ips: [192.0.2.1]
        """,
        "x.yaml:3: gateways[0].ips: unknown key (did you mean 'ip'?)",
    ),
    (
        "gateway_unknown_key_in_egress",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
            egress:
              host: 127.0.0.1
              port: 5081
              hots: 127.0.0.2
        """,
        "x.yaml:7: gateways[0].egress.hots: unknown key (did you mean 'host'?)",
    ),
    (
        "gateway_unknown_key_in_digest",
        """
        gateways:
          - name: acme
            digest:
              - username: "1001"
                password: "x"
                relam: "r"
        """,
        "x.yaml:6: gateways[0].digest[0].relam: unknown key (did you mean 'realm'?)",
    ),
    (
        "gateways_not_a_list",
        """
        gateways:
          name: acme
        """,
        "x.yaml:1: gateways: should be a list, not a dict",
    ),
    (
        "gateway_ip_not_a_list",
        """
        gateways:
          - name: acme
            ip: 192.0.2.1
        """,
        "x.yaml:3: gateways[0].ip: should be a list, not a string",
    ),
    (
        "ip_host_bits_set",
        """
        gateways:
          - name: acme
            ip:
              - 10.1.0.0/16
              - 10.2.3.4/16
        """,
        (
            "x.yaml:5: gateways[0].ip[1]: '10.2.3.4/16' has host bits set: "
            "write 10.2.0.0/16 for the network, or 10.2.3.4 for the one address"
        ),
    ),
    (
        "ipv6_host_bits_set",
        """
        gateways:
          - name: acme
            ip: ["2001:db8::1/32"]
        """,
        "x.yaml:3: gateways[0].ip[0]: '2001:db8::1/32' has host bits set: write 2001:db8::/32",
    ),
    (
        "ip_not_an_address",
        """
        gateways:
          - name: acme
            ip: [pbx.example.com]
        """,
        "x.yaml:3: gateways[0].ip[0]: 'pbx.example.com' is not an IP address or network",
    ),
    (
        "ip_prefix_too_long",
        """
        gateways:
          - name: acme
            ip: [10.0.0.0/33]
        """,
        "x.yaml:3: gateways[0].ip[0]: '10.0.0.0/33' is not an IP address or network",
    ),
    (
        "ip_unquoted_ipv6_read_as_number",
        """
        gateways:
          - name: acme
            ip: [1:2:3:4:5:6:7:8]
        """,
        "x.yaml:3: gateways[0].ip[0]: should be an IP address or network string",
    ),
    (
        "ip_listed_twice_in_one_gateway",
        """
        gateways:
          - name: acme
            ip:
              - 192.0.2.1
              - 192.0.2.1/32
        """,
        "x.yaml:5: gateways[0].ip[1]: 192.0.2.1 is listed twice in ip",
    ),
    (
        "ip_in_two_gateways",
        """
        gateways:
          - name: acme
            ip: [10.1.0.0/16]
          - name: other
            ip:
              - 192.0.2.0/24
              - "::ffff:10.1.0.0/112"
        """,
        (
            "x.yaml:7: gateways[1].ip[1]: 10.1.0.0/16 is already listed for gateway 'acme'; "
            "an address or network belongs to one gateway"
        ),
    ),
    (
        "ipv6_in_two_gateways",
        """
        gateways:
          - name: acme
            ip: ["2001:db8:0::/48"]
          - name: other
            ip: ["2001:DB8::/48"]
        """,
        "x.yaml:5: gateways[1].ip[0]: 2001:db8::/48 is already listed for gateway 'acme'",
    ),
    (
        "ip_port_in_two_gateways",
        """
        gateways:
          - name: acme
            ip_port: ["[::1]:5062"]
          - name: other
            ip_port:
              - "192.0.2.1:5060"
              - "[0:0::1]:5062"
        """,
        "x.yaml:7: gateways[1].ip_port[1]: [::1]:5062 is already listed for gateway 'acme'",
    ),
    (
        "ip_port_listed_twice_in_one_gateway",
        """
        gateways:
          - name: acme
            ip_port: ["192.0.2.1:5060", "192.0.2.1:5060"]
        """,
        "x.yaml:3: gateways[0].ip_port[1]: 192.0.2.1:5060 is listed twice in ip_port",
    ),
    (
        "ip_port_without_port",
        """
        gateways:
          - name: acme
            ip_port: ["192.0.2.1"]
        """,
        "x.yaml:3: gateways[0].ip_port[0]: '192.0.2.1' should be \"address:port\"",
    ),
    (
        "ip_port_unbracketed_ipv6",
        """
        gateways:
          - name: acme
            ip_port: ["2001:db8::1:5060"]
        """,
        (
            "x.yaml:3: gateways[0].ip_port[0]: '2001:db8::1:5060': write an IPv6 address "
            "in brackets, \"[2001:db8::1]:5060\""
        ),
    ),
    (
        "ip_port_port_out_of_range",
        """
        gateways:
          - name: acme
            ip_port: ["192.0.2.1:65536"]
        """,
        "x.yaml:3: gateways[0].ip_port[0]: '192.0.2.1:65536': the port should be a number",
    ),
    (
        "ip_port_host_name",
        """
        gateways:
          - name: acme
            ip_port: ["pbx.example.com:5060"]
        """,
        "x.yaml:3: gateways[0].ip_port[0]: 'pbx.example.com:5060': 'pbx.example.com' is not",
    ),
    (
        "ip_port_unspecified",
        """
        gateways:
          - name: acme
            ip_port: ["0.0.0.0:5060"]
        """,
        "x.yaml:3: gateways[0].ip_port[0]: '0.0.0.0:5060': 0.0.0.0 is never the source",
    ),
    (
        "options_unknown",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
            options: reply
        """,
        "x.yaml:4: gateways[0].options: Input should be 'answer' or 'pass'",
    ),
    # ---- digest accounts
    (
        "digest_password_and_ha1",
        """
        gateways:
          - name: acme
            digest:
              - username: "1001"
                password: "secret"
                ha1_md5: "0123456789abcdef0123456789abcdef"
        """,
        "x.yaml:6: gateways[0].digest[0].ha1_md5: give either password or ha1_md5, not both",
    ),
    (
        "digest_no_secret",
        """
        gateways:
          - name: acme
            digest:
              - username: "1001"
                realm: "r"
        """,
        (
            "x.yaml:4: gateways[0].digest[0]: account '1001' needs a password, "
            "or ha1_md5 and/or ha1_sha256"
        ),
    ),
    (
        "digest_ha1_wrong_length",
        """
        gateways:
          - name: acme
            digest:
              - username: "1001"
                ha1_sha256: "0123456789abcdef0123456789abcdef"
        """,
        (
            "x.yaml:5: gateways[0].digest[0].ha1_sha256: should be 64 hexadecimal digits: "
            "SHA-256(username:realm:password)"
        ),
    ),
    (
        "digest_ha1_not_hex",
        """
        gateways:
          - name: acme
            digest:
              - username: "1001"
                ha1_md5: "0123456789abcdef0123456789abcdeg"
        """,
        "x.yaml:5: gateways[0].digest[0].ha1_md5: should be 32 hexadecimal digits",
    ),
    (
        "digest_username_number",
        """
        gateways:
          - name: acme
            digest:
              - username: 1001
                password: "x"
        """,
        "x.yaml:4: gateways[0].digest[0].username: should be a user name string (quote it",
    ),
    (
        "digest_password_number",
        """
        gateways:
          - name: acme
            digest:
              - username: "1001"
                password: 1234
        """,
        "x.yaml:5: gateways[0].digest[0].password: should be a password string (quote it",
    ),
    (
        "digest_password_empty",
        """
        gateways:
          - name: acme
            digest:
              - username: "1001"
                password: ""
        """,
        "x.yaml:5: gateways[0].digest[0].password: should not be empty",
    ),
    (
        "digest_username_with_quote",
        """
        gateways:
          - name: acme
            digest:
              - username: 'a"b'
                password: "x"
        """,
        "x.yaml:4: gateways[0].digest[0].username: 'a\"b': a user name is 1 to 128 characters",
    ),
    (
        "digest_realm_with_backslash",
        """
        gateways:
          - name: acme
            digest:
              - username: "1001"
                password: "x"
                realm: 'a\\b'
        """,
        "x.yaml:6: gateways[0].digest[0].realm: 'a\\\\b': a realm is 1 to 128 characters",
    ),
    (
        "digest_from_cidrs_host_bits",
        """
        gateways:
          - name: acme
            digest:
              - username: "1001"
                password: "x"
                from_cidrs: [192.0.2.1/24]
        """,
        "x.yaml:6: gateways[0].digest[0].from_cidrs[0]: '192.0.2.1/24' has host bits set",
    ),
    (
        "digest_duplicate_username_across_gateways",
        """
        gateways:
          - name: acme
            digest:
              - username: "1001"
                password: "x"
          - name: other
            digest:
              - username: "1002"
                password: "y"
              - username: "1001"
                password: "z"
        """,
        (
            "x.yaml:10: gateways[1].digest[1].username: user name '1001' is already an "
            "account of gateway 'acme'; user names are unique across all gateways"
        ),
    ),
    (
        "digest_duplicate_username_in_one_gateway",
        """
        gateways:
          - name: acme
            digest:
              - {username: "1001", password: "x"}
              - {username: "1001", password: "y"}
        """,
        (
            "x.yaml:5: gateways[0].digest[1].username: user name '1001' is already an "
            "account of this gateway"
        ),
    ),
    (
        "digest_hash_for_no_offered_algorithm",
        """
        auth:
          algorithms: [SHA-256]
        gateways:
          - name: acme
            digest:
              - username: "1001"
                ha1_md5: "0123456789abcdef0123456789abcdef"
        """,
        (
            "x.yaml:6: gateways[0].digest[0]: account '1001' has only ha1_md5, which none "
            "of auth.algorithms (SHA-256) can use"
        ),
    ),
    # ---- egress
    (
        "egress_equals_public",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
            egress:
              host: 127.0.0.1
              port: 5060
        """,
        (
            "x.yaml:4: gateways[0].egress: 127.0.0.1:5060 is already used by public "
            "(127.0.0.1:5060); each gateway's egress needs its own address:port"
        ),
    ),
    (
        "egress_on_port_of_wildcard_public",
        """
        public:
          host: 0.0.0.0
          advertise_host: 203.0.113.1
        gateways:
          - name: acme
            ip: [192.0.2.1]
            egress: {host: 10.0.0.5, port: 5060}
        """,
        "x.yaml:7: gateways[0].egress: 10.0.0.5:5060 is already used by public (0.0.0.0:5060)",
    ),
    (
        "egress_equals_private",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
            egress: {host: 127.0.0.1, port: 5080}
        """,
        "x.yaml:4: gateways[0].egress: 127.0.0.1:5080 is already used by private",
    ),
    (
        "egress_equals_private_advertised",
        """
        private:
          advertise_host: 10.0.0.5
        gateways:
          - name: acme
            ip: [192.0.2.1]
            egress: {host: 10.0.0.5, port: 5080}
        """,
        "x.yaml:6: gateways[0].egress: 10.0.0.5:5080 is already used by private.advertise_host",
    ),
    (
        "egress_equals_backend",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
            egress: {host: 127.0.0.1, port: 5070}
        """,
        "x.yaml:4: gateways[0].egress: 127.0.0.1:5070 is already used by backend",
    ),
    (
        "egress_equals_other_gateway_egress",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
            egress: {host: 127.0.0.1, port: 5081}
          - name: other
            ip: [192.0.2.2]
            egress:
              port: 5081
              host: 127.0.0.1
        """,
        (
            "x.yaml:7: gateways[1].egress: 127.0.0.1:5081 is already the egress of gateway "
            "'acme'; VOS3000 could not tell the two apart"
        ),
    ),
    (
        "egress_ip_version_differs_from_backend",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
            egress:
              host: "::1"
              port: 5081
        """,
        "x.yaml:5: gateways[0].egress.host: ::1 and the backend 127.0.0.1 are of different IP",
    ),
    (
        "egress_unspecified",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
            egress: {host: 0.0.0.0, port: 5081}
        """,
        "x.yaml:4: gateways[0].egress.host: 0.0.0.0 cannot be an egress address",
    ),
    (
        "egress_without_port",
        """
        gateways:
          - name: acme
            ip: [192.0.2.1]
            egress: {host: 127.0.0.1}
        """,
        "x.yaml:4: gateways[0].egress.port: Field required",
    ),
    # ---- auth
    (
        "auth_no_algorithms",
        """
        auth:
          algorithms: []
        """,
        "x.yaml:2: auth.algorithms: should not be empty",
    ),
    (
        "auth_algorithm_twice",
        """
        auth:
          algorithms: [MD5, SHA-256, md5]
        """,
        "x.yaml:2: auth.algorithms[2]: MD5 is listed twice in algorithms",
    ),
    (
        "auth_unknown_algorithm",
        """
        auth:
          algorithms:
            - SHA-512-256
        """,
        "x.yaml:3: auth.algorithms[0]: Input should be 'SHA-256' or 'MD5'",
    ),
    (
        "auth_nonce_ttl_zero",
        """
        auth:
          nonce_ttl_s: 0
        """,
        "x.yaml:2: auth.nonce_ttl_s: Input should be greater than 0",
    ),
    (
        "auth_unknown_source_bad",
        """
        auth:
          unknown_source: ignore
        """,
        "x.yaml:2: auth.unknown_source: Input should be 'drop' or 'reject'",
    ),
    (
        "auth_reply_budget_zero",
        """
        auth:
          reply_budget_per_s: 0
        """,
        "x.yaml:2: auth.reply_budget_per_s: Input should be greater than or equal to 1",
    ),
    (
        "auth_reply_burst_zero",
        """
        auth:
          reply_budget_burst: 0
        """,
        "x.yaml:2: auth.reply_budget_burst: Input should be greater than or equal to 1",
    ),
    (
        "auth_realm_empty",
        """
        auth:
          realm: ""
        """,
        "x.yaml:2: auth.realm: '': a realm is 1 to 128 characters",
    ),
    # ---- registrar
    (
        "registrar_max_below_min",
        """
        registrar:
          min_expires_s: 600
          max_expires_s: 300
          default_expires_s: 450
        """,
        "x.yaml:3: registrar.max_expires_s: must be at least registrar.min_expires_s (600)",
    ),
    (
        "registrar_default_below_min",
        """
        registrar:
          default_expires_s: 30
        """,
        "x.yaml:2: registrar.default_expires_s: must be at least registrar.min_expires_s (60)",
    ),
    (
        "registrar_default_above_max",
        """
        registrar:
          max_expires_s: 1800
        """,
        "x.yaml:2: registrar.default_expires_s: must be at most registrar.max_expires_s (1800)",
    ),
    (
        "registrar_max_contacts_zero",
        """
        registrar:
          max_contacts: 0
        """,
        "x.yaml:2: registrar.max_contacts: Input should be greater than or equal to 1",
    ),
    # ---- state
    (
        "state_path_empty",
        """
        state:
          path: ""
        """,
        "x.yaml:2: state.path: should be a file name",
    ),
    (
        "state_path_not_a_string",
        """
        state:
          path: [a, b]
        """,
        "x.yaml:2: state.path: should be a file name string (quote it in YAML), not a list",
    ),
    # ---- screen
    (
        "screen_not_a_mapping",
        """
        screen: [a]
        """,
        "x.yaml:1: screen: should be a mapping of keys, not a list",
    ),
    (
        "screen_signatures_not_a_list",
        """
        screen:
          scanner_signatures: sipvicious
        """,
        "x.yaml:2: screen.scanner_signatures: should be a list, not a string",
    ),
    (
        "screen_signature_empty",
        """
        screen:
          scanner_signatures:
            - sipvicious
            - ""
        """,
        "x.yaml:4: screen.scanner_signatures[1]: should not be empty or blank",
    ),
    (
        "screen_signature_blank",
        """
        screen:
          scanner_signatures: ["  "]
        """,
        "x.yaml:2: screen.scanner_signatures[0]: should not be empty or blank",
    ),
    (
        "screen_signature_not_a_string",
        """
        screen:
          scanner_signatures:
            - 42
        """,
        "x.yaml:3: screen.scanner_signatures[0]: should be a string (quote it in YAML), not a",
    ),
    (
        "screen_signature_too_long",
        f"""
        screen:
          scanner_signatures:
            - {"x" * 65}
        """,
        "x.yaml:3: screen.scanner_signatures[0]: should be at most 64 characters, not 65",
    ),
    (
        "screen_signature_not_ascii",
        """
        screen:
          scanner_signatures:
            - "sípvicious"
        """,
        "x.yaml:3: screen.scanner_signatures[0]: 'sípvicious': only printable ASCII",
    ),
    (
        "screen_signature_control_character",
        """
        screen:
          scanner_signatures: ["a\\tb"]
        """,
        "x.yaml:2: screen.scanner_signatures[0]: 'a\\tb': only printable ASCII",
    ),
    (
        "screen_signature_repeated_in_other_case",
        """
        screen:
          scanner_signatures:
            - SIPVicious
            - smap
            - sipvicious
        """,
        "x.yaml:5: screen.scanner_signatures[2]: sipvicious is listed twice in scanner_signatures",
    ),
    (
        "screen_apply_to_gateways_not_bool",
        """
        screen:
          signatures_apply_to_gateways: "yes"
        """,
        "x.yaml:2: screen.signatures_apply_to_gateways: Input should be a valid boolean",
    ),
    (
        "screen_rate_zero",
        """
        screen:
          rate_per_ip: {rate: 0, burst: 40}
        """,
        "x.yaml:2: screen.rate_per_ip.rate: Input should be greater than 0",
    ),
    (
        "screen_rate_negative",
        """
        screen:
          rate_per_net:
            rate: -1
            burst: 1
        """,
        "x.yaml:3: screen.rate_per_net.rate: Input should be greater than 0",
    ),
    (
        "screen_rate_infinite",
        """
        screen:
          rate_per_gateway:
            burst: 1
            rate: .inf
        """,
        "x.yaml:4: screen.rate_per_gateway.rate: Input should be a finite number",
    ),
    (
        "screen_burst_zero",
        """
        screen:
          rate_per_gateway:
            rate: 100
            burst: 0
        """,
        "x.yaml:4: screen.rate_per_gateway.burst: Input should be greater than or equal to 1",
    ),
    (
        "screen_burst_fraction",
        """
        screen:
          rate_per_ip: {rate: 1, burst: 1.5}
        """,
        "x.yaml:2: screen.rate_per_ip.burst: Input should be a valid integer",
    ),
    (
        "screen_burst_missing",
        """
        screen:
          rate_per_net:
            rate: 10
        """,
        "x.yaml:2: screen.rate_per_net.burst: Field required",
    ),
    (
        "screen_rate_not_a_mapping",
        """
        screen:
          rate_per_ip: 20
        """,
        "x.yaml:2: screen.rate_per_ip: should be a mapping of keys, not a number",
    ),
    (
        "screen_rate_unknown_key",
        """
        screen:
          rate_per_ip:
            rate: 20
            burst: 40
            brust: 40
        """,
        "x.yaml:5: screen.rate_per_ip.brust: unknown key (did you mean 'burst'?)",
    ),
    (
        "screen_max_sources_too_small",
        """
        screen:
          max_sources: 999
        """,
        "x.yaml:2: screen.max_sources: Input should be greater than or equal to 1000",
    ),
    (
        "screen_unknown_key",
        """
        screen:
          rate_per_host: {rate: 1, burst: 1}
        """,
        "x.yaml:2: screen.rate_per_host: unknown key (did you mean 'rate_per_net'?)",
    ),
    # ---- bans
    (
        "bans_max_offenses_zero",
        """
        bans:
          max_offenses: 0
        """,
        "x.yaml:2: bans.max_offenses: Input should be greater than or equal to 1",
    ),
    (
        "bans_findtime_zero",
        """
        bans:
          findtime_s: 0
        """,
        "x.yaml:2: bans.findtime_s: Input should be greater than 0",
    ),
    (
        "bans_bantime_negative",
        """
        bans:
          bantime_s: -600
        """,
        "x.yaml:2: bans.bantime_s: Input should be greater than 0",
    ),
    (
        "bans_bantime_infinite",
        """
        bans:
          bantime_s: .inf
        """,
        "x.yaml:2: bans.bantime_s: Input should be a finite number",
    ),
    (
        "bans_findtime_not_a_number",
        """
        bans:
          findtime_s: 10m
        """,
        "x.yaml:2: bans.findtime_s: Input should be a valid number",
    ),
    (
        "bans_increment_below_one",
        """
        bans:
          increment: 0.5
        """,
        "x.yaml:2: bans.increment: Input should be greater than or equal to 1",
    ),
    (
        "bans_increment_nan",
        """
        bans:
          increment: .nan
        """,
        "x.yaml:2: bans.increment: Input should be a finite number",
    ),
    (
        "bans_max_bantime_below_bantime",
        """
        bans:
          bantime_s: 3600
          max_bantime_s: 600
        """,
        "x.yaml:3: bans.max_bantime_s: must be at least bans.bantime_s (3600)",
    ),
    (
        "bans_bantime_above_default_max",
        """
        bans:
          findtime_s: 60
          bantime_s: 1000000
        """,
        "x.yaml:3: bans.max_bantime_s: must be at least bans.bantime_s (1000000)",
    ),
    (
        "bans_max_bantime_infinite",
        """
        bans:
          max_bantime_s: .inf
        """,
        "x.yaml:2: bans.max_bantime_s: Input should be a finite number",
    ),
    (
        "bans_exempt_not_an_address",
        """
        bans:
          exempt:
            - office.example.com
        """,
        "x.yaml:3: bans.exempt[0]: 'office.example.com' is not an IP address or network",
    ),
    (
        "bans_exempt_host_bits",
        """
        bans:
          exempt: [192.0.2.7/24]
        """,
        "x.yaml:2: bans.exempt[0]: '192.0.2.7/24' has host bits set",
    ),
    (
        "bans_exempt_repeated",
        """
        bans:
          exempt:
            - 192.0.2.0/24
            - "::ffff:192.0.2.0/120"
        """,
        "x.yaml:4: bans.exempt[1]: 192.0.2.0/24 is listed twice in exempt",
    ),
    (
        "bans_exempt_not_a_list",
        """
        bans:
          exempt: 192.0.2.1
        """,
        "x.yaml:2: bans.exempt: should be a list, not a string",
    ),
    (
        "bans_max_entries_too_small",
        """
        bans:
          max_entries: 99
        """,
        "x.yaml:2: bans.max_entries: Input should be greater than or equal to 100",
    ),
    (
        "bans_offense_not_bool",
        """
        bans:
          offenses:
            scanner: true
            malformed: 1
        """,
        "x.yaml:4: bans.offenses.malformed: Input should be a valid boolean",
    ),
    (
        "bans_offense_unknown",
        """
        bans:
          offenses:
            digest_failures: true
        """,
        "x.yaml:3: bans.offenses.digest_failures: unknown key (did you mean 'digest_failure'?)",
    ),
    # ---- firewall
    (
        "firewall_mode_unknown",
        """
        firewall:
          mode: iptables
        """,
        "x.yaml:2: firewall.mode: Input should be 'off' or 'nftables'",
    ),
    (
        "firewall_mode_on",
        """
        firewall:
          mode: on
        """,
        "x.yaml:2: firewall.mode: Input should be 'off' or 'nftables'",
    ),
    (
        "firewall_table_upper_case",
        """
        firewall:
          mode: nftables
          table: SBC
        """,
        "x.yaml:3: firewall.table: 'SBC': an nftables table name here is 1 to 32 lower-case",
    ),
    (
        "firewall_table_too_long",
        f"""
        firewall:
          table: {"t" * 33}
        """,
        "x.yaml:2: firewall.table: '" + "t" * 33 + "': an nftables table name",
    ),
    (
        "firewall_table_empty",
        """
        firewall:
          table: ""
        """,
        "x.yaml:2: firewall.table: '': an nftables table name",
    ),
    (
        "firewall_table_dash",
        """
        firewall:
          table: sbc-bans
        """,
        "x.yaml:2: firewall.table: 'sbc-bans': an nftables table name",
    ),
    (
        "firewall_table_not_a_string",
        """
        firewall:
          table: 1
        """,
        "x.yaml:2: firewall.table: should be a table name string (quote it in YAML), not a number",
    ),
    (
        "firewall_nft_path_empty",
        """
        firewall:
          nft_path: " "
        """,
        "x.yaml:2: firewall.nft_path: should be a program name or path",
    ),
    (
        "firewall_nft_path_not_a_string",
        """
        firewall:
          nft_path: [nft]
        """,
        "x.yaml:2: firewall.nft_path: should be a program name string (quote it in YAML)",
    ),
    # ---- call limits
    (
        "limits_cps_negative",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits:
              cps: -1
        """,
        "x.yaml:5: gateways[0].limits.cps: Input should be greater than or equal to 0",
    ),
    (
        "limits_cps_infinite",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits: {cps: .inf}
        """,
        "x.yaml:4: gateways[0].limits.cps: Input should be a finite number",
    ),
    (
        "limits_cps_text",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits:
              cps: 10/s
        """,
        "x.yaml:5: gateways[0].limits.cps: Input should be a valid number",
    ),
    (
        "limits_cps_burst_below_one",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits:
              cps: 5
              cps_burst: 0.5
        """,
        "x.yaml:6: gateways[0].limits.cps_burst: Input should be greater than or equal to 1",
    ),
    (
        "limits_cps_burst_without_cps",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits:
              max_concurrent: 10
              cps_burst: 20
        """,
        (
            "x.yaml:6: gateways[0].limits.cps_burst: has no effect while cps is 0 (unlimited); "
            "set cps too, or remove cps_burst"
        ),
    ),
    (
        "limits_max_concurrent_fraction",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits:
              max_concurrent: 2.5
        """,
        "x.yaml:5: gateways[0].limits.max_concurrent: Input should be a valid integer",
    ),
    (
        "limits_max_concurrent_negative",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits:
              max_concurrent: -1
        """,
        "x.yaml:5: gateways[0].limits.max_concurrent: Input should be greater than or equal to 0",
    ),
    (
        "limits_max_duration_negative",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits:
              max_duration_s: -5
        """,
        "x.yaml:5: gateways[0].limits.max_duration_s: Input should be greater than or equal to 0",
    ),
    (
        "limits_max_duration_beyond_dialog_max_age",
        """
        sip:
          dialog_max_age_s: 3600
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits:
              max_duration_s: 3600
        """,
        (
            "x.yaml:7: gateways[0].limits.max_duration_s: must be less than "
            "sip.dialog_max_age_s (3600): a call is forgotten at that age, before the sbc "
            "could end it"
        ),
    ),
    (
        "limits_max_duration_beyond_default_dialog_max_age",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits: {max_duration_s: 100000}
        """,
        (
            "x.yaml:4: gateways[0].limits.max_duration_s: must be less than "
            "sip.dialog_max_age_s (86400)"
        ),
    ),
    (
        "limits_unknown_key",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits:
              max_cps: 10
        """,
        "x.yaml:5: gateways[0].limits.max_cps: unknown key (did you mean 'cps'?)",
    ),
    (
        "limits_not_a_mapping",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            limits: 10
        """,
        "x.yaml:4: gateways[0].limits: should be a mapping of keys, not a number",
    ),
    # ---- destination prefixes
    (
        "prefix_unquoted_number",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            blocked_prefixes:
              - 0044
        """,
        (
            'x.yaml:5: gateways[0].blocked_prefixes[0]: should be a quoted string such as "0044" '
            "(YAML reads unquoted digits as a number), not a number"
        ),
    ),
    (
        "prefix_letters",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            allowed_prefixes: ["44", "UK"]
        """,
        (
            "x.yaml:4: gateways[0].allowed_prefixes[1]: 'UK': a prefix is digits, "
            "optionally after a leading '+'"
        ),
    ),
    (
        "prefix_plus_inside",
        """
        calls:
          blocked_prefixes: ["44+9"]
        """,
        (
            "x.yaml:2: calls.blocked_prefixes[0]: '44+9': a prefix is digits, "
            "optionally after a leading '+'"
        ),
    ),
    (
        "prefix_plus_alone",
        """
        calls:
          blocked_prefixes: ["+"]
        """,
        "x.yaml:2: calls.blocked_prefixes[0]: '+': a prefix is digits",
    ),
    (
        "prefix_star_outside_tech",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            blocked_prefixes:
              - "9999#44"
        """,
        (
            "x.yaml:5: gateways[0].blocked_prefixes[0]: '9999#44': a prefix is digits, "
            "optionally after a leading '+' ('*' and '#' belong in tech_prefixes)"
        ),
    ),
    (
        "prefix_empty",
        """
        calls:
          blocked_prefixes: ["  "]
        """,
        "x.yaml:2: calls.blocked_prefixes[0]: should not be empty: it would match every number",
    ),
    (
        "prefix_too_long",
        f"""
        calls:
          blocked_prefixes: ["{"1" * 33}"]
        """,
        "x.yaml:2: calls.blocked_prefixes[0]: should be at most 32 characters, not 33",
    ),
    (
        "prefix_only_international_00",
        """
        calls:
          blocked_prefixes: ["00"]
        """,
        (
            "x.yaml:2: calls.blocked_prefixes[0]: '00' alone matches nothing: numbers are "
            "compared without their international '+' or '00'"
        ),
    ),
    (
        "prefix_repeated",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            allowed_prefixes:
              - "44"
              - "33"
              - "44"
        """,
        "x.yaml:7: gateways[0].allowed_prefixes[2]: '44' is listed twice in allowed_prefixes",
    ),
    (
        "prefix_repeated_in_another_form",
        """
        calls:
          blocked_prefixes:
            - "+881"
            - "00881"
        """,
        (
            "x.yaml:4: calls.blocked_prefixes[1]: '00881' is listed twice in blocked_prefixes "
            "(as '+881', the same numbers)"
        ),
    ),
    (
        "prefix_allowed_and_blocked",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            allowed_prefixes: ["+44", "+33"]
            blocked_prefixes:
              - "+49"
              - "0033"
        """,
        (
            "x.yaml:7: gateways[0].blocked_prefixes[1]: '0033' is in both blocked_prefixes and "
            "allowed_prefixes[1] ('+33'); a blocked prefix wins, so the allowed one is never used"
        ),
    ),
    (
        "prefix_allowed_but_blocked_globally",
        """
        calls:
          blocked_prefixes: ["+979", "+881"]
        gateways:
          - name: a
            ip: [192.0.2.1]
            allowed_prefixes:
              - "44"
              - "881"
        """,
        (
            "x.yaml:8: gateways[0].allowed_prefixes[1]: '881' is allowed here but "
            "calls.blocked_prefixes[1] ('+881') blocks it for every gateway; a blocked prefix wins"
        ),
    ),
    (
        "prefixes_not_a_list",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            blocked_prefixes: "900"
        """,
        "x.yaml:4: gateways[0].blocked_prefixes: should be a list, not a string",
    ),
    (
        "tech_prefix_letters",
        """
        gateways:
          - name: a
            ip: [192.0.2.1]
            tech_prefixes: ["99a#"]
        """,
        (
            "x.yaml:4: gateways[0].tech_prefixes[0]: '99a#': a tech prefix is digits, '*' and '#', "
            "optionally after a leading '+'"
        ),
    ),
    (
        "tech_prefix_unquoted",
        """
        calls:
          tech_prefixes: [9999]
        """,
        'x.yaml:2: calls.tech_prefixes[0]: should be a quoted string such as "0044"',
    ),
    (
        "tech_prefix_too_long",
        f"""
        calls:
          tech_prefixes: ["{"#" * 33}"]
        """,
        "x.yaml:2: calls.tech_prefixes[0]: should be at most 32 characters, not 33",
    ),
    (
        "tech_prefix_empty",
        """
        calls:
          tech_prefixes: [""]
        """,
        "x.yaml:2: calls.tech_prefixes[0]: should not be empty",
    ),
    (
        "tech_prefix_repeated",
        """
        calls:
          tech_prefixes:
            - "9999#"
            - "9999#"
        """,
        "x.yaml:4: calls.tech_prefixes[1]: 9999# is listed twice in tech_prefixes",
    ),
    # ---- calls
    (
        "calls_max_cps_negative",
        """
        calls:
          max_cps: -0.5
        """,
        "x.yaml:2: calls.max_cps: Input should be greater than or equal to 0",
    ),
    (
        "calls_max_cps_bool",
        """
        calls:
          max_cps: true
        """,
        "x.yaml:2: calls.max_cps: Input should be a valid number",
    ),
    (
        "calls_max_cps_burst_without_max_cps",
        """
        calls:
          max_concurrent: 100
          max_cps_burst: 10
        """,
        (
            "x.yaml:3: calls.max_cps_burst: has no effect while max_cps is 0 (unlimited); "
            "set max_cps too, or remove max_cps_burst"
        ),
    ),
    (
        "calls_max_cps_burst_zero",
        """
        calls:
          max_cps: 10
          max_cps_burst: 0
        """,
        "x.yaml:3: calls.max_cps_burst: Input should be greater than or equal to 1",
    ),
    (
        "calls_max_concurrent_negative",
        """
        calls:
          max_concurrent: -1
        """,
        "x.yaml:2: calls.max_concurrent: Input should be greater than or equal to 0",
    ),
    (
        "calls_retry_after_zero",
        """
        calls:
          retry_after_s: 0
        """,
        "x.yaml:2: calls.retry_after_s: Input should be greater than or equal to 1",
    ),
    (
        "calls_retry_after_too_long",
        """
        calls:
          retry_after_s: 3601
        """,
        "x.yaml:2: calls.retry_after_s: Input should be less than or equal to 3600",
    ),
    (
        "calls_retry_after_fraction",
        """
        calls:
          retry_after_s: 2.5
        """,
        "x.yaml:2: calls.retry_after_s: Input should be a valid integer",
    ),
    (
        "calls_persist_interval_zero",
        """
        calls:
          persist_interval_s: 0
        """,
        "x.yaml:2: calls.persist_interval_s: Input should be greater than 0",
    ),
    (
        "calls_persist_interval_too_long",
        """
        calls:
          persist_interval_s: 61
        """,
        "x.yaml:2: calls.persist_interval_s: Input should be less than or equal to 60",
    ),
    (
        "calls_persist_interval_nan",
        """
        calls:
          persist_interval_s: .nan
        """,
        "x.yaml:2: calls.persist_interval_s: Input should be a finite number",
    ),
    (
        "calls_unknown_key",
        """
        calls:
          max_cps: 10
          max_concurent: 10
        """,
        "x.yaml:3: calls.max_concurent: unknown key (did you mean 'max_concurrent'?)",
    ),
    (
        "calls_not_a_mapping",
        """
        calls: [1]
        """,
        "x.yaml:1: calls: should be a mapping of keys, not a list",
    ),
    # ---- logging
    (
        "logging_summary_interval_zero",
        """
        logging:
          summary_interval_s: 0
        """,
        "x.yaml:2: logging.summary_interval_s: Input should be greater than 0",
    ),
    (
        "logging_summary_interval_infinite",
        """
        logging:
          format: json
          summary_interval_s: .inf
        """,
        "x.yaml:3: logging.summary_interval_s: Input should be a finite number",
    ),
    (
        "logging_summary_interval_bool",
        """
        logging:
          summary_interval_s: true
        """,
        "x.yaml:2: logging.summary_interval_s: Input should be a valid number",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text(text), "x.yaml")
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert len(info.value.issues) == 1


def test_every_problem_reported_one_per_line_in_file_order() -> None:
    text = yaml_text("""
        sip:
          t1_ms: 1
        public:
          port: 0
          host: nowhere
        extra: 1
    """)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "multi.yaml")
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        ["multi.yaml:2", "sip.t1_ms"],
        ["multi.yaml:4", "public.port"],
        ["multi.yaml:5", "public.host"],
        ["multi.yaml:6", "extra"],
    ]
    assert [(i.path, i.line) for i in info.value.issues] == [
        ("sip.t1_ms", 2),
        ("public.port", 4),
        ("public.host", 5),
        ("extra", 6),
    ]


def test_rate_needs_both_rate_and_burst() -> None:
    text = yaml_text("""
        screen:
          rate_per_ip:
            rate: 20
            brust: 40
    """)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml")
    assert str(info.value).splitlines() == [
        "x.yaml:2: screen.rate_per_ip.burst: Field required",
        "x.yaml:4: screen.rate_per_ip.brust: unknown key (did you mean 'burst'?)",
    ]


def test_load_config_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "sbc.yaml"
    path.write_text("public:\n  port: 99999\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:2: public.port: Input should be less than or equal to 65535"
    )
    assert info.value.source == str(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"public:\n  host: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not UTF-8 text")


def test_control_character_reports_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("public:\n  host: a\x07b\n", "x.yaml")
    assert str(info.value).startswith("x.yaml:2: invalid YAML: character #x0007")


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [*x]\n",  # recursive alias
        "a: " + "[" * 5000 + "]" * 5000 + "\n",  # absurd nesting
        "base: &b {port: 5090}\npublic:\n  <<: *b\n  <<: *b\n",
    ],
    ids=["recursive_alias", "deep_nesting", "merge_keys"],
)
def test_odd_yaml_is_still_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(text, "odd.yaml")


def test_merge_key_is_honoured() -> None:
    text = "public: &p\n  host: 10.0.0.1\nprivate:\n  <<: *p\n  port: 5090\n"
    cfg = parse_config(text)
    assert cfg.private.address == ("10.0.0.1", 5090)


# --------------------------------------------------------------------------
# Logging


@pytest.fixture
def reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def written(stream: io.StringIO) -> str:
    """What the logger wrote to `stream`, its buffer flushed first."""
    flush_logs()
    return stream.getvalue()


def test_json_log_lines(reset_structlog: None) -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    log = get_logger("sbc.test")
    log.info("started", public="127.0.0.1:5060")
    log.debug("filtered out")
    log.warning("odd", count=3)
    lines = written(out).splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"event", "level", "timestamp", "logger"} <= record.keys()
        assert record["logger"] == "sbc.test"
        assert record["timestamp"].endswith("Z")
    assert records[0]["event"] == "started"
    assert records[0]["level"] == "info"
    assert records[0]["public"] == "127.0.0.1:5060"
    assert records[1]["level"] == "warning"
    assert records[1]["count"] == 3


def test_json_exception_is_one_line(reset_structlog: None) -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("sbc.test").exception("failed")
    (line,) = written(out).splitlines()
    record = json.loads(line)
    assert record["level"] == "error"
    assert "RuntimeError: boom" in record["exception"]


def test_reconfigure_switches_stream_format_and_level(reset_structlog: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", stream=first)
    get_logger("a").info("one")
    configure_logging("console", "debug", stream=second)
    get_logger("b").debug("two", k="v")
    assert json.loads(written(first))["event"] == "one"
    text = written(second)
    assert text.count("\n") == 1
    assert "two" in text and "k=v" in text and "debug" in text
    with pytest.raises(ValueError):
        json.loads(text)


def test_logger_created_before_configuration(reset_structlog: None) -> None:
    log = get_logger("early")  # as a module-level logger would be
    out = io.StringIO()
    configure_logging("json", "warning", stream=out)
    log.info("hidden")
    log.error("shown")
    assert [json.loads(line)["event"] for line in written(out).splitlines()] == ["shown"]


def test_used_logger_follows_reconfiguration(reset_structlog: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    log = get_logger("cached")
    configure_logging("json", "info", stream=first)
    log.info("one")
    log.debug("hidden")
    first.close()  # as a test's stream is, once the test is over
    configure_logging("console", "debug", stream=second)
    log.debug("two")
    text = written(second)
    assert text.count("\n") == 1 and "two" in text and "[cached]" in text


def test_bound_child_logger_follows_stream(reset_structlog: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", stream=first)
    child = get_logger("conn").bind(peer="192.0.2.1:5060")
    child.info("one")
    first.close()
    configure_logging("json", "info", stream=second)
    child.info("two")
    record = json.loads(written(second))
    assert (record["event"], record["peer"], record["logger"]) == ("two", "192.0.2.1:5060", "conn")


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "loud")])
def test_configure_logging_rejects_unknown(fmt: str, level: str) -> None:
    with pytest.raises(ValueError):
        configure_logging(fmt, level, stream=io.StringIO())


def test_log_line_is_flushed_before_exit() -> None:
    # The child logs one line, then waits on stdin: the line must reach the
    # pipe while the process is still alive (a block-buffered stdout would
    # hold it until exit).
    script = (
        "import sys\n"
        "from sbc.io.logsetup import configure_logging, get_logger\n"
        "configure_logging('json', 'info')\n"
        "get_logger('child').info('ready', port=5060)\n"
        "sys.stdin.read()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONUNBUFFERED", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no log line within 20 s"
        line = proc.stdout.readline()
        assert proc.poll() is None
        record = json.loads(line)
        assert record["event"] == "ready"
        assert record["port"] == 5060
    finally:
        proc.kill()
        proc.communicate()
