"""The `cluster` section: several sbc nodes sharing their bans and call
limits through Redis (or Valkey). Off by default: one node needs no Redis.

`url` names the server (`redis://` in the clear, `rediss://` over TLS, an
optional `/db` number); the password goes either in the URL
(`redis://:secret@host:6379/0`) or in `password`, not both. `node` names
this node in every ban it makes (default: the host name), `key_prefix` is put
in front of every key and channel, so several clusters can share one server.
The timeouts bound every Redis command: a slow or unreachable server never
holds up SIP, sbc keeps serving on its own bans and its share of each limit
(the limit ÷ live nodes) and says so (see sbc.cluster). `share_limits`
switches the shared limits off (each node then applies every limit alone);
`slot_ttl_s` is how long a dead node's calls keep their slots;
`fallback_nodes` is what a node that never reached Redis divides by.
`share_registrations` switches off the shared registrations (a phone is then
known to the node it registered at only); `max_remote_bindings` bounds the
other nodes' bindings a node keeps. `share_fraud` switches off the shared
toll-fraud watch (each node then counts, blocks and clears alone).
"""

from __future__ import annotations

import re
import socket
from typing import Annotated, Self
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from .base import Count, Seconds, Section, kind, problem

__all__ = ["ClusterConfig", "cluster_summary", "safe_url"]

_NODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PREFIX = re.compile(r"[A-Za-z0-9_.:{}-]{1,32}")
_SCHEMES = ("redis", "rediss")


def _node(value: object) -> object:
    if not isinstance(value, str) or not _NODE.fullmatch(value):
        shown = repr(value) if isinstance(value, str) else kind(value)
        raise problem(f"should be 1 to 64 of letters, digits and _ . -, not {shown}")
    return value


def _prefix(value: object) -> object:
    if not isinstance(value, str) or not _PREFIX.fullmatch(value):
        raise problem("should be 1 to 32 of letters, digits and _ . : { } -")
    return value


def _url(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, str):
        raise problem(f"should be a redis:// or rediss:// URL, not {kind(value)}")
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as e:
        raise problem(f"not a URL: {e}") from None
    if parts.scheme not in _SCHEMES:
        raise problem(f"should start with redis:// or rediss:// (TLS), not {parts.scheme or value!r}")
    if not parts.hostname:
        raise problem("names no server: redis://HOST:PORT")
    if port == 0:
        raise problem("port 0 is not a server's port")
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise problem(f"/{path}: the path is a database number, e.g. /0")
    return value.strip()


def _password(value: object) -> object:
    if value is not None and not isinstance(value, str):
        raise problem(f"should be a password string (quote it in YAML), not {kind(value)}")
    return value


def _hostname() -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64]
    return name or "sbc"


def safe_url(url: str) -> str:
    """`url` without its password (for logs and summaries)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class ClusterConfig(Section):
    enabled: bool = False
    url: Annotated[str | None, BeforeValidator(_url)] = None  # redis://host:6379/0, rediss:// for TLS
    password: Annotated[SecretStr | None, BeforeValidator(_password)] = None  # or in the URL
    node: Annotated[str, BeforeValidator(_node)] = Field(default_factory=_hostname)
    key_prefix: Annotated[str, BeforeValidator(_prefix)] = "sbc:"
    connect_timeout_s: Seconds = 1.0  # to open a connection
    timeout_s: Seconds = 0.5  # for one command (or one pipelined batch)
    ping_interval_s: Seconds = 1.0  # how often the link is checked
    retry_max_s: Seconds = 2.0  # longest wait between two reconnection attempts
    max_pending: Count = 10_000  # ban events waiting to be published; beyond, dropped and counted
    # Call limits (CPS, concurrency) across the nodes (README, "Running several nodes").
    share_limits: bool = True
    slot_ttl_s: Seconds = 6.0  # a call's slot outlives its node by this much; refreshed every third
    fallback_nodes: Count = 2  # nodes to divide limits by before Redis has ever answered
    # The toll-fraud watch's blocks, clears and counters across the nodes (sbc.cluster.fraud_share).
    share_fraud: bool = True
    # Registrations: each node's bindings known to all; a call from VOS3000 for
    # a phone bound at another node is relayed there (README, "Running several nodes").
    share_registrations: bool = True
    max_remote_bindings: Count = 100_000  # the other nodes' bindings kept here; beyond, refused

    @model_validator(mode="after")
    def _usable(self) -> Self:
        if self.enabled and self.url is None:
            raise problem("the cluster needs its Redis server: set cluster.url "
                          "(redis://HOST:6379/0, or rediss:// for TLS)", at=("url",),
                          also=("enabled",))
        if self.url is not None and self.password is not None \
                and urlsplit(self.url).password is not None:
            raise problem("the password is given twice: in cluster.url and in cluster.password",
                          at=("password",), also=("url",))
        return self

    @property
    def redis_password(self) -> str | None:
        """The password to send (the field's, else the URL's), or None."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.url is not None and urlsplit(self.url).password is not None:
            return unquote(urlsplit(self.url).password or "")
        return None

    @property
    def display_url(self) -> str:
        return safe_url(self.url) if self.url is not None else ""


def cluster_summary(cluster: ClusterConfig) -> dict[str, str]:
    """The start-up line's fields: the cluster (URL without password) and this node."""
    if not cluster.enabled:
        return {}
    return {"cluster": cluster.display_url, "node": cluster.node}
