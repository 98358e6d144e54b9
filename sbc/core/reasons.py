"""Every name sbc counts a message or an event under: one registry.

Like aioquic's `QuicErrorCode`, each kind of name is one `StrEnum`, and
nothing in the core spells one as a free string (tests/core/test_reasons.py
walks the package to make sure). The counter table (tally.py), the admin
stats, the Prometheus metrics, the summary log line, the dashboard and the
tests all read these members, so a name means the same thing everywhere.

- `DropReason`: why a message was dropped: nothing goes on and nobody is
  answered. Each belongs to one `Stage` of the picture in DESIGN.md (`STAGE`,
  as data): the screen's drops happen before the parse and are counted apart
  from the engine's.
- `Absorbed`: a message sbc consumes by design, as a SIP proxy must: a
  retransmission its transaction already answered, the ACK of a final answer
  it sent itself, VOS3000's 100 Trying, the answers to sbc's own pings, BYEs
  and CANCELs, a late answer from a VOS3000 a call has moved on from. Not an
  attack and not a loss: never counted as a drop.
- `Refusal`: why sbc answered a request itself with an error (a 4xx, or a
  challenge) instead of passing it on.
- `Offense`: what counts towards a ban of the source (screen/bans.py).
- `TransportEvent`: what the TCP/TLS/UDP transports report: a connection
  closed for breaking a limit, an error on a socket, a flow that is gone.
- `ParseReason`: why a message failed to parse; the sip layer's own names
  (sbc.sip.errors), re-exported here so the registry is complete.
"""

from __future__ import annotations

from enum import StrEnum

from ..sip.errors import ParseReason

__all__ = [
    "CONNECTION_OFFENSES",
    "SCREEN_REASONS",
    "STAGE",
    "Absorbed",
    "DropReason",
    "Offense",
    "ParseReason",
    "Refusal",
    "Stage",
    "TransportEvent",
]


class Stage(StrEnum):
    """The step of DESIGN.md's picture a drop happens in."""

    SCREEN = "screen"  # raw bytes, before any parse
    PARSE = "parse"  # the bytes are no SIP message sbc accepts
    IDENTIFY = "identify"  # who is this: gateway, digest account, VOS3000, or nobody
    MATCH = "match"  # whose is this: the dialog, transaction or branch it claims
    POLICY = "policy"  # within the budgets sbc allows itself
    ROUTE = "route"  # where it would go
    INTERNAL = "internal"  # a bug of ours, at the cost of one message


class DropReason(StrEnum):
    """Why a message was dropped: silence, counted by reason."""

    # screen (screen/screen.py, and the banned fast path of Engine.receive)
    BANNED = "banned"
    RATE_PER_IP = "rate_per_ip"
    RATE_PER_NET = "rate_per_net"
    RATE_PER_GATEWAY = "rate_per_gateway"
    SCANNER = "scanner"  # a signature in the raw bytes
    UNTRUSTED_OPTIONS = "untrusted_options"
    # what `UNKNOWN_SOURCE` would be after the parse, decided before it when
    # nothing could admit the source (no digest accounts, unknown sources dropped)
    UNKNOWN_SOURCE_SCREENED = "unknown_source_screened"
    # parse
    MALFORMED = "malformed"  # by parse reason in the parse_errors table
    # identify
    UNKNOWN_SOURCE = "unknown_source"  # no gateway, no account, no dialog
    SCANNER_PARSED = "scanner_parsed"  # a signature only the parsed message shows
    CLIENT_CERT_REQUIRED = "client_cert_required"  # a response or ACK, not over TLS
    MALFORMED_CREDENTIALS = "malformed_credentials"  # digest credentials that cannot be read
    NOT_BACKEND = "not_backend"  # on a private socket, from no VOS3000 address
    # relayed by another node, naming no VOS3000 under its Via (core/proxy/relay.py)
    RELAY_NOT_FROM_BACKEND = "relay_not_from_backend"
    # match
    NO_DIALOG = "no_dialog"  # an ACK with a To-tag of no dialog (never answered)
    NO_TRANSACTION = "no_transaction"  # an ACK out of dialog that matches no transaction
    DIALOG_NOT_OWNER = "dialog_not_owner"  # a stranger, or the wrong VOS3000 or egress
    VIA_NOT_OURS = "via_not_ours"  # a response without our Via on top
    RESPONSE_NOT_OURS = "response_not_ours"  # a branch not signed for its sender
    RESPONSE_NOT_TO_BACKEND = "response_not_to_backend"  # its next Via is no VOS3000 address
    # route
    NO_NEXT_VIA = "no_next_via"  # a response with nowhere to go (RFC 3261 §16.7 step 3)
    # policy
    REPLY_BUDGET = "reply_budget"  # a refusal over the global reply budget: silence instead
    REPLY_BUDGET_SOURCE = "reply_budget_source"  # over the source's (or its network's) budget
    # internal
    INTERNAL_ERROR = "internal_error"


class Absorbed(StrEnum):
    """A message sbc consumes by design (RFC 3261's transaction and proxy
    rules, and sbc's own requests); counted, never a drop."""

    RETRANSMISSION = "retransmission"  # an INVITE again: its transaction answers (§17.2.1)
    ACK_ABSORBED = "ack_absorbed"  # the ACK of a non-2xx final answer sbc sent (§17.2.1)
    HOP_BY_HOP_100 = "hop_by_hop_100"  # VOS3000's 100 Trying: sbc sent its own (§16.7 step 3)
    LATE_PROVISIONAL = "late_provisional"  # a provisional after the final answer
    LATE_RESPONSE = "late_response"  # from a VOS3000 the call failed over from
    PING_ANSWER = "ping_answer"  # the answer to sbc's OPTIONS ping
    BYE_ANSWER = "bye_answer"  # the answer to a BYE sbc sent (duration limit)
    CANCEL_ANSWER = "cancel_answer"  # the 200 for a CANCEL sbc sent


class Refusal(StrEnum):
    """Why sbc answered a request with an error (or a challenge) itself."""

    UNKNOWN_SOURCE = "unknown_source"  # 403, with auth.unknown_source: reject
    CLIENT_CERT_REQUIRED = "client_cert_required"  # 403: the gateway must come over TLS
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    MALFORMED = "malformed"  # 400, 416, 420, 505, 513 naming the fault, to a gateway
    PRELOADED_ROUTE = "preloaded_route"  # a customer's Route headers, removed (the request goes on)
    NO_TRANSACTION = "no_transaction"  # 481 to a CANCEL
    NO_DIALOG = "no_dialog"  # 481
    DIALOG_ENDED = "dialog_ended"  # 481
    DIALOG_EXISTS = "dialog_exists"  # 482: a second INVITE with a live call's identity
    DIALOG_NOT_OWNER = "dialog_not_owner"  # 403
    # digest (RFC 3261 §22, RFC 8760): challenges (401/407) ...
    NO_CREDENTIALS = "no_credentials"
    BAD_NONCE = "bad_nonce"
    STALE = "stale"
    REPLAY = "replay"
    NONCE_TABLE_FULL = "nonce_table_full"
    # ... and refusals
    DIGEST_FAILURE = "digest_failure"  # 403
    DIGEST_URI_MISMATCH = "digest_uri_mismatch"  # 400
    DIGEST_FROM_MISMATCH = "digest_from_mismatch"  # 403
    FRAUD_SUSPECTED = "fraud_suspected"  # 403: a toll-fraud block stands (sbc.core.fraud)


class Offense(StrEnum):
    """What counts towards a ban of its source (`bans.offenses` switches them)."""

    SCANNER = "scanner"
    RATE_LIMIT = "rate_limit"
    MALFORMED = "malformed"
    BLOCKED_DESTINATION = "blocked_destination"
    BACKEND_AUTH_FAILURE = "backend_auth_failure"  # a 401/403 from VOS3000 to that source
    NO_DIALOG = "no_dialog"
    DIALOG_NOT_OWNER = "dialog_not_owner"
    DIGEST_FAILURE = "digest_failure"
    DIGEST_URI_MISMATCH = "digest_uri_mismatch"
    DIGEST_FROM_MISMATCH = "digest_from_mismatch"
    # a TCP or TLS connection closed for breaking a limit (CONNECTION_OFFENSES)
    TCP_PER_SOURCE_CAP = "tcp_per_source_cap"
    TCP_MESSAGE_DEADLINE = "tcp_message_deadline"
    TCP_NO_MESSAGE = "tcp_no_message"
    TCP_FRAMING = "tcp_framing"
    TLS_HANDSHAKE_TIMEOUT = "tls_handshake_timeout"
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
    TLS_CLIENT_CERT_MISSING = "tls_client_cert_missing"
    TLS_CLIENT_CERT_SUBJECT = "tls_client_cert_subject"


class TransportEvent(StrEnum):
    """What the transports report (screen/conns.py decides the connection limits)."""

    TCP_PER_SOURCE_CAP = "tcp_per_source_cap"  # refused at accept
    TCP_CONNECTION_CAP = "tcp_connection_cap"  # refused at accept (the global cap)
    TCP_IDLE_CLOSED = "tcp_idle_closed"
    TCP_MESSAGE_DEADLINE = "tcp_message_deadline"  # slowloris
    TCP_NO_MESSAGE = "tcp_no_message"  # connected, and said nothing in time
    TCP_FRAMING = "tcp_framing"  # by parse reason in the parse_errors table
    TLS_HANDSHAKE_TIMEOUT = "tls_handshake_timeout"
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
    TLS_CLIENT_CERT_MISSING = "tls_client_cert_missing"
    TLS_CLIENT_CERT_SUBJECT = "tls_client_cert_subject"
    TLS_ERROR = "tls_error"  # a TLS record that fails after the handshake
    UDP_ERROR = "udp_error"  # ICMP port unreachable and the like
    TCP_FLOW_GONE = "tcp_flow_gone"  # something to send on a connection that has closed
    TLS_FLOW_GONE = "tls_flow_gone"


# The stage of every drop reason.
STAGE: dict[DropReason, Stage] = {
    DropReason.BANNED: Stage.SCREEN,
    DropReason.RATE_PER_IP: Stage.SCREEN,
    DropReason.RATE_PER_NET: Stage.SCREEN,
    DropReason.RATE_PER_GATEWAY: Stage.SCREEN,
    DropReason.SCANNER: Stage.SCREEN,
    DropReason.UNTRUSTED_OPTIONS: Stage.SCREEN,
    DropReason.UNKNOWN_SOURCE_SCREENED: Stage.SCREEN,
    DropReason.MALFORMED: Stage.PARSE,
    DropReason.UNKNOWN_SOURCE: Stage.IDENTIFY,
    DropReason.SCANNER_PARSED: Stage.IDENTIFY,
    DropReason.CLIENT_CERT_REQUIRED: Stage.IDENTIFY,
    DropReason.MALFORMED_CREDENTIALS: Stage.IDENTIFY,
    DropReason.NOT_BACKEND: Stage.IDENTIFY,
    DropReason.RELAY_NOT_FROM_BACKEND: Stage.IDENTIFY,
    DropReason.NO_DIALOG: Stage.MATCH,
    DropReason.NO_TRANSACTION: Stage.MATCH,
    DropReason.DIALOG_NOT_OWNER: Stage.MATCH,
    DropReason.VIA_NOT_OURS: Stage.MATCH,
    DropReason.RESPONSE_NOT_OURS: Stage.MATCH,
    DropReason.RESPONSE_NOT_TO_BACKEND: Stage.MATCH,
    DropReason.NO_NEXT_VIA: Stage.ROUTE,
    DropReason.REPLY_BUDGET: Stage.POLICY,
    DropReason.REPLY_BUDGET_SOURCE: Stage.POLICY,
    DropReason.INTERNAL_ERROR: Stage.INTERNAL,
}

# The drops before the parse.
SCREEN_REASONS = frozenset(r for r, stage in STAGE.items() if stage is Stage.SCREEN)

# The connection closes that are the source's fault, and the offense each is
# (the idle timeout and the global cap are not).
CONNECTION_OFFENSES: dict[TransportEvent, Offense] = {
    TransportEvent.TCP_PER_SOURCE_CAP: Offense.TCP_PER_SOURCE_CAP,
    TransportEvent.TCP_MESSAGE_DEADLINE: Offense.TCP_MESSAGE_DEADLINE,
    TransportEvent.TCP_NO_MESSAGE: Offense.TCP_NO_MESSAGE,
    TransportEvent.TCP_FRAMING: Offense.TCP_FRAMING,
    TransportEvent.TLS_HANDSHAKE_TIMEOUT: Offense.TLS_HANDSHAKE_TIMEOUT,
    TransportEvent.TLS_HANDSHAKE_FAILED: Offense.TLS_HANDSHAKE_FAILED,
    TransportEvent.TLS_CLIENT_CERT_MISSING: Offense.TLS_CLIENT_CERT_MISSING,
    TransportEvent.TLS_CLIENT_CERT_SUBJECT: Offense.TLS_CLIENT_CERT_SUBJECT,
}
