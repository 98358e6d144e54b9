"""The `cluster` section (sbc/config/cluster.py): off by default, the URL and
password rules, the node name, what the summary and start-up line show, and
that changing it needs a restart."""

from __future__ import annotations

import re
import socket

import pytest

from sbc.app import restart_needed
from sbc.cli import main
from sbc.config import parse_config, summary

from .support import config_error, yaml_text


def test_off_by_default_and_absent_from_the_summary() -> None:
    cfg = parse_config("")
    c = cfg.cluster
    assert not c.enabled and c.url is None and c.key_prefix == "sbc:"
    assert c.node == (re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64] or "sbc")
    assert (c.connect_timeout_s, c.timeout_s, c.ping_interval_s, c.retry_max_s,
            c.max_pending) == (1.0, 0.5, 1.0, 2.0, 10_000)
    assert "cluster" not in summary(cfg) and "node" not in summary(cfg)


def test_summary_names_the_cluster_without_its_password_and_the_node() -> None:
    cfg = parse_config(yaml_text("""
        cluster:
          enabled: true
          url: "rediss://:s3cr%40t@redis.example:6380/2"
          node: "pop1-a"
          key_prefix: "edge:"
    """))
    assert summary(cfg)["cluster"] == "rediss://:***@redis.example:6380/2"
    assert summary(cfg)["node"] == "pop1-a"
    assert cfg.cluster.redis_password == "s3cr@t"
    apart = parse_config('cluster: {enabled: true, url: "redis://10.0.0.5:6379", password: "pw"}\n')
    assert apart.cluster.redis_password == "pw" and summary(apart)["cluster"] == "redis://10.0.0.5:6379"
    assert "pw" not in repr(apart.cluster)


def test_check_config_prints_cluster_and_node(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text('cluster: {enabled: true, url: "redis://u:pw@127.0.0.1:6379/0", node: n1}\n')
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cluster=redis://u:***@127.0.0.1:6379/0" in out and "node=n1" in out and "pw" not in out


@pytest.mark.parametrize(("text", "error"), [
    ("cluster: {enabled: true}\n", "x.yaml:1: cluster.url: the cluster needs its Redis server"),
    ('cluster: {url: "http://h:1"}\n', "x.yaml:1: cluster.url: should start with redis://"),
    ('cluster: {url: "redis://"}\n', "x.yaml:1: cluster.url: names no server"),
    ('cluster: {url: "redis://h:99999"}\n', "x.yaml:1: cluster.url: not a URL"),
    ('cluster: {url: "redis://h:6379/db"}\n', "x.yaml:1: cluster.url: /db: the path is a database"),
    ('cluster: {url: 6379}\n', "x.yaml:1: cluster.url: should be a redis:// or rediss:// URL"),
    ('cluster:\n  url: "redis://:a@h/0"\n  password: "b"\n',
     "x.yaml:3: cluster.password: the password is given twice"),
    ('cluster: {node: "a b"}\n', "x.yaml:1: cluster.node: should be 1 to 64 of letters"),
    ('cluster: {key_prefix: "a b"}\n', "x.yaml:1: cluster.key_prefix: should be 1 to 32"),
    ("cluster: {timeout_s: 0}\n", "x.yaml:1: cluster.timeout_s: Input should be greater than 0"),
    ("cluster: {max_pending: 0}\n", "x.yaml:1: cluster.max_pending:"),
    ("cluster: {redis: x}\n", "x.yaml:1: cluster.redis:"),
])
def test_mistakes_name_the_field_and_line(text: str, error: str) -> None:
    assert str(config_error(text)).startswith(error), str(config_error(text))


def test_changing_the_cluster_needs_a_restart() -> None:
    old = parse_config("")
    new = parse_config('cluster: {enabled: true, url: "redis://127.0.0.1:6379"}\n')
    assert restart_needed(old, new) == "cluster: changing it needs a restart"
