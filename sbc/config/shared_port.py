"""`public.reuse_port`: several sbc nodes on one host share the public SIP
port (SO_REUSEPORT), one process per core, and what that asks of the rest of
the configuration.

The kernel hands each datagram (UDP) or each new connection (TCP, TLS) to
one of the sockets bound with SO_REUSEPORT by a hash of source and
destination address and port, so one source keeps reaching one node while
the group of nodes stays the same. What must then hold, checked here where
one file can tell:

- the nodes split the callers between them, so they must share their bans
  and call limits: `cluster.enabled`;
- each node replaces its own nftables table at start: with
  `firewall.mode: nftables` each node needs a table of its own, written out
  (`firewall.table: sbc_a`, `sbc_b`, ...); one default table would be taken
  over by whichever node started last;
- the kernel lanes (`lanes.trusted_port` with nftables) cannot be shared:
  every node's table would rewrite the public port to the trusted port and
  then drop, as "reached directly", what another node's table rewrote. The
  lanes on two ports (without nftables) work: both ports are shared.

Everything else that must differ between the nodes (the private socket,
each gateway's egress, the admin port, the state file, the cluster node
name) is refused by the kernel or the cluster at start when it does not:
a second bind of the same private address fails, a second node name is
announced twice.
"""

from __future__ import annotations

from typing import Any

from .base import problem

__all__ = ["check_shared_port"]


def check_shared_port(cfg: Any) -> None:
    """The rules above, for a whole `Config` with `public.reuse_port` set."""
    if not cfg.public.reuse_port:
        return
    at = ("public", "reuse_port")
    if not cfg.cluster.enabled:
        raise problem(
            "nodes sharing the public port split the callers between them; set "
            "cluster.enabled (one Redis) so they share their bans and call limits",
            at=("cluster", "enabled"), also=at)
    firewall = cfg.firewall
    if firewall.enabled and cfg.lanes.trusted_port is not None:
        raise problem(
            "the kernel lanes (lanes.trusted_port with firewall.mode: nftables) "
            "cannot be shared by nodes on one port: each node's table would drop "
            "what another's steered; run the lanes on two ports (firewall.mode: off) "
            "or one node per address",
            at=("lanes", "trusted_port"), also=at)
    if firewall.enabled and "table" not in firewall.model_fields_set:
        raise problem(
            "each node on a shared port replaces its own nftables table at start: "
            "give every node its own firewall.table (sbc_a, sbc_b, ...)",
            at=("firewall", "table"), also=at)
