"""Gateways, digest accounts, and the auth, registrar and state sections
(sbc/config/gateways.py); their mistakes are in tests/config/cases/gateways.yaml
and auth.yaml."""

from __future__ import annotations

import hashlib

import pytest

from sbc.config import Config, ConfigError, GatewayLimits, parse_config, summary
from sbc.config.gateways import DigestAlgorithm, OptionsMode, UnknownSource
from sbc.config.tls import GatewayTls

from .support import EXAMPLE, assert_one_error, bad_configs, yaml_text


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


@pytest.mark.parametrize(("text", "expected"), bad_configs("gateways") + bad_configs("auth"))
def test_bad_config(text: str, expected: str) -> None:
    assert_one_error(text, expected)
