"""`public.reuse_port` (sbc/config/shared_port.py): off by default, on the
start line when set, and refused where nodes sharing the port would not
share bans and limits or would fight over one nftables table."""

from __future__ import annotations

import pytest

from sbc.app import restart_needed
from sbc.config import ConfigError, parse_config, summary

CLUSTER = "cluster: {enabled: true, url: 'redis://127.0.0.1:6379/0', node: a}\n"


def test_off_by_default_and_on_the_start_line_when_set() -> None:
    cfg = parse_config("")
    assert cfg.public.reuse_port is False and "reuse_port" not in summary(cfg)
    shared = parse_config("public: {reuse_port: true}\n" + CLUSTER)
    assert shared.public.reuse_port is True and summary(shared)["reuse_port"] == "on"
    assert restart_needed(cfg, shared) == "public: changing it needs a restart"


def test_two_ports_lanes_and_own_tables_are_accepted() -> None:
    parse_config("public: {reuse_port: true}\nlanes: {trusted_port: 5062}\n" + CLUSTER)
    cfg = parse_config("public: {reuse_port: true}\nfirewall: {mode: nftables, table: sbc_a}\n"
                       + CLUSTER)
    assert cfg.firewall.table == "sbc_a"


@pytest.mark.parametrize("text, where, words", [
    ("public: {reuse_port: true}\n", "cluster.enabled", "share their bans and call limits"),
    ("public: {reuse_port: true}\nfirewall: {mode: nftables}\n" + CLUSTER,
     "firewall.table", "its own firewall.table"),
    ("public: {reuse_port: true}\nfirewall: {mode: nftables, table: sbc_a}\n"
     "lanes: {trusted_port: 5062}\n" + CLUSTER, "lanes.trusted_port", "kernel lanes"),
    ("public: {reuse_port: 1}\n" + CLUSTER, "public.reuse_port", "valid boolean"),
])
def test_refused_where_nodes_would_not_share(text: str, where: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "x.yaml")
    message = str(err.value)
    assert where in message and words in message, message
