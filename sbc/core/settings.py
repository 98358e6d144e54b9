"""The engine's own view of the configuration: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from ..sip import format_hostport


@dataclass(frozen=True, slots=True)
class ProxySettings:
    public_host: str = "127.0.0.1"  # advertised in Via / Record-Route
    public_port: int = 5060
    tls_port: int | None = None  # the public TLS listener (None: no TLS)
    private_host: str = "127.0.0.1"
    private_port: int = 5080
    backend_host: str = "127.0.0.1"
    backend_port: int = 5070
    standby: tuple[tuple[str, int], ...] = ()  # further VOS3000 addresses, in priority order
    failover_timeout: float = 2.0  # no response at all from a target within this: try the next
    failover_on: frozenset[int] = frozenset((500, 503))  # final statuses that try the next target
    down_after: int = 3  # failures in a row that mark a target down
    up_after: int = 2  # successes in a row that mark a down target up
    ping_interval: float = 5.0
    ping_timeout: float = 2.0
    t1: float = 0.5
    t2: float = 4.0
    invite_timeout: float = 32.0  # Timer B
    proxy_timeout: float = 180.0  # Timer C
    linger: float = 32.0
    # An ended dialog routes retransmitted BYEs and the ACK of a refused call
    # for this long (T4, RFC 3261 §17.1.2.2); after it, a late BYE gets 481,
    # which ends the dialog for its sender too (§15.1.1).
    dialog_linger: float = 5.0
    max_transactions: int = 100_000
    max_dialogs: int = 200_000
    dialog_setup_timeout: float = 300.0
    dialog_max_age: float = 86_400.0
    max_datagram: int = 16_384
    max_tcp_message: int = 65_536
    egresses: tuple[tuple[str, int], ...] = ()  # gateways' own private sockets, after `private`
    reject_unknown: bool = False  # 403 instead of silence for unknown sources
    reply_budget_rate: float = 50.0
    reply_budget_burst: float = 100.0
    # (rate per second, burst) of replies to one unauthenticated source, and to one /24 or /64
    reply_budget_per_source: tuple[float, float] = (10.0, 20.0)
    reply_budget_per_net: tuple[float, float] = (50.0, 100.0)
    # Gateways that must show a verified TLS client certificate
    # (gateways[].tls.require_client_cert). The TLS transport checks the
    # certificate at the handshake, by source address; the core admits such a
    # gateway only over TLS, so its addresses over UDP or TCP (and its digest
    # accounts, whose requests the handshake check never saw) are refused.
    cert_gateways: frozenset[str] = frozenset()

    @property
    def backend(self) -> tuple[str, int]:
        return (self.backend_host, self.backend_port)

    @property
    def targets(self) -> tuple[tuple[str, int], ...]:
        """Every VOS3000 address, primary first."""
        return ((self.backend_host, self.backend_port), *self.standby)

    def public_hostport(self) -> str:
        return format_hostport(self.public_host, self.public_port)

    def tls_hostport(self) -> str:
        return format_hostport(self.public_host, self.tls_port or 5061)

    def private_hostport(self) -> str:
        return format_hostport(self.private_host, self.private_port)
