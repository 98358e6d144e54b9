"""The screen, bans and firewall sections (sbc/config/defense.py); their
mistakes are in tests/config/cases/defense.yaml."""

from __future__ import annotations

import pytest

from sbc.config import BansConfig, Config, ConfigError, FirewallMode, RateConfig, parse_config
from sbc.config.defense import DEFAULT_SCANNER_SIGNATURES

from .support import EXAMPLE, assert_one_error, bad_configs, yaml_text


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


@pytest.mark.parametrize(("text", "expected"), bad_configs("defense"))
def test_bad_config(text: str, expected: str) -> None:
    assert_one_error(text, expected)
