"""The `lanes` section: a UDP socket of its own for gateways and proved
sources (the trusted lane), served before everyone else, and a reserve of
TCP/TLS connection slots for them.

With `trusted_port` unset the lanes are off. With it set and
`firewall.mode: nftables`, the kernel steers the packets of gateways and
proved sources from the public port to it (an internal port nobody reaches
directly); without nftables it is a second public port that gateways are
told to send to. `check_lanes` keeps the port clear of sbc's other sockets.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from .base import Count, Port, Seconds, Section, hostport, problem

__all__ = ["LanesConfig", "check_lanes"]


class LanesConfig(Section):
    trusted_port: Port | None = None  # None: one public socket (lanes off)
    untrusted_budget: Count = 64  # untrusted datagrams served per turn before the trusted lane again
    trusted_check_every: Count = 8  # untrusted datagrams between two looks at the trusted socket
    stranger_backlog: Count = 1024  # strangers' datagrams on the trusted port waiting their turn
    proof_timeout_s: Seconds = 300.0  # a confirmed dialog's peer stays proved this long, renewed while it holds
    max_proved: Count = 65_536  # proved sources at most (kernel set and table)
    # TCP/TLS slots under limits.max_tcp_connections only gateways and proved
    # sources may take (at most a tenth of the cap is reserved, whatever is set)
    reserved_connections: Annotated[int, Field(strict=True, ge=0)] = 100

    def reserve_of(self, max_connections: int) -> int:
        return min(self.reserved_connections, max_connections // 10)


def check_lanes(lanes: LanesConfig, public: Any, private: Any, gateways: Any) -> None:
    """The trusted port is a UDP socket of its own: not the public port, the
    private one or a gateway's egress on the same address."""
    port = lanes.trusted_port
    if port is None:
        return
    taken: list[tuple[tuple[str | int, ...], str, int]] = [
        (("public", "port"), public.host, public.port),
        (("private", "port"), private.host, private.port),
    ]
    for i, gw in enumerate(gateways):
        if gw.egress is not None:
            taken.append((("gateways", i, "egress", "port"), gw.egress.host, gw.egress.port))
    for at, host, other in taken:
        if other == port and (host == public.host or _any(host) or _any(public.host)):
            raise problem(
                f"{hostport(public.host, port)} is already {'.'.join(map(str, at))}; the "
                "trusted lane needs a UDP port of its own", at=("lanes", "trusted_port"), also=at)


def _any(host: str) -> bool:
    return host in ("0.0.0.0", "::")
