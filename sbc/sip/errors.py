"""The one error the SIP core raises for bad input, and the names of its reasons.

Every way a datagram or a TCP byte stream can be wrong ends here, carrying the
status a server would answer with: 400 for a malformed message, 513 when it is
too large (RFC 3261 §21.5.14), 505 for another SIP version (§21.5.20), and
the two refusals a proxy owes before it forwards anything (§16.3): 416 for a
Request-URI scheme it does not serve and 420 for a Proxy-Require it does not
support. Callers decide whether to answer or to drop; the reason is a member
of `ParseReason`, so metrics and logs count it without embedding
attacker-controlled bytes, and the reply phrase is made from that name only.
The engine counts every parse failure by this reason (sbc.core.reasons
re-exports it beside the engine's own names).
"""

from __future__ import annotations

from enum import StrEnum


class ParseReason(StrEnum):
    """Why a message (or a TCP/TLS stream's framing) was not accepted."""

    # framing and size
    TOO_LARGE = "too_large"  # 513
    STREAM_BUFFER_FULL = "stream_buffer_full"  # 513
    NO_HEADER_END = "no_header_end"
    BAD_LINE_BREAK = "bad_line_break"
    CONTROL_CHAR = "control_char"
    # start line
    BAD_REQUEST_LINE = "bad_request_line"
    REQUEST_LINE_SPACES = "request_line_spaces"
    BAD_STATUS_LINE = "bad_status_line"
    BAD_STATUS_CODE = "bad_status_code"
    BAD_SIP_VERSION = "bad_sip_version"  # 505
    BAD_REQUEST_URI = "bad_request_uri"
    REQUEST_URI_BRACKETS = "request_uri_brackets"
    REQUEST_URI_SPACE = "request_uri_space"
    REQUEST_URI_HEADERS = "request_uri_headers"
    UNSUPPORTED_URI_SCHEME = "unsupported_uri_scheme"  # 416
    # header lines
    BAD_HEADER_NAME = "bad_header_name"
    BAD_HEADER_LINE = "bad_header_line"
    FOLD_WITHOUT_HEADER = "fold_without_header"
    EMPTY_VALUE = "empty_value"
    UNTERMINATED_VALUE = "unterminated_value"
    MISSING_MANDATORY_HEADER = "missing_mandatory_header"
    DUPLICATE_CALL_ID = "duplicate_call_id"
    DUPLICATE_CSEQ = "duplicate_cseq"
    DUPLICATE_FROM = "duplicate_from"
    DUPLICATE_TO = "duplicate_to"
    DUPLICATE_MAX_FORWARDS = "duplicate_max_forwards"
    DUPLICATE_CONTENT_LENGTH = "duplicate_content_length"
    # header values
    BAD_CALL_ID = "bad_call_id"
    BAD_CSEQ = "bad_cseq"
    CSEQ_METHOD_MISMATCH = "cseq_method_mismatch"
    BAD_MAX_FORWARDS = "bad_max_forwards"
    BAD_VIA = "bad_via"
    BAD_BRANCH = "bad_branch"
    BAD_NAME_ADDR = "bad_name_addr"
    BAD_QUOTED_STRING = "bad_quoted_string"
    BAD_DISPLAY_NAME = "bad_display_name"
    UNTERMINATED_DISPLAY_NAME = "unterminated_display_name"
    BAD_URI_SCHEME = "bad_uri_scheme"
    BAD_HOST = "bad_host"
    BAD_HOSTPORT = "bad_hostport"
    BAD_IPV6_REFERENCE = "bad_ipv6_reference"
    BAD_PORT = "bad_port"
    BAD_DATE = "bad_date"
    BAD_PROXY_REQUIRE = "bad_proxy_require"
    PROXY_REQUIRE = "proxy_require"  # 420
    BAD_CREDENTIALS = "bad_credentials"  # an Authorization the digest code cannot read
    # body
    BAD_CONTENT_LENGTH = "bad_content_length"
    MISSING_CONTENT_LENGTH = "missing_content_length"
    BODY_SHORTER_THAN_CONTENT_LENGTH = "body_shorter_than_content_length"
    BODY_LONGER_THAN_CONTENT_LENGTH = "body_longer_than_content_length"


# Reply phrases for the reasons whose name does not spell the phrase well by
# itself (header names keep their canonical spelling). Any other reason reads
# as its words, capitalised: "bad_date" -> "Bad Date".
PHRASES: dict[ParseReason, bytes] = {
    ParseReason.DUPLICATE_CALL_ID: b"Duplicate Call-ID",
    ParseReason.DUPLICATE_CSEQ: b"Duplicate CSeq",
    ParseReason.DUPLICATE_FROM: b"Duplicate From",
    ParseReason.DUPLICATE_TO: b"Duplicate To",
    ParseReason.DUPLICATE_MAX_FORWARDS: b"Duplicate Max-Forwards",
    ParseReason.DUPLICATE_CONTENT_LENGTH: b"Duplicate Content-Length",
    ParseReason.CSEQ_METHOD_MISMATCH: b"CSeq Method Mismatch",
    ParseReason.BAD_CSEQ: b"Bad CSeq",
    ParseReason.BAD_CALL_ID: b"Bad Call-ID",
    ParseReason.BAD_CONTENT_LENGTH: b"Bad Content-Length",
    ParseReason.MISSING_CONTENT_LENGTH: b"Missing Content-Length",
    ParseReason.BODY_SHORTER_THAN_CONTENT_LENGTH: b"Body Shorter Than Content-Length",
    ParseReason.BODY_LONGER_THAN_CONTENT_LENGTH: b"Body Longer Than Content-Length",
    ParseReason.BAD_MAX_FORWARDS: b"Bad Max-Forwards",
    ParseReason.BAD_REQUEST_URI: b"Bad Request-URI",
    ParseReason.REQUEST_URI_BRACKETS: b"Request-URI In Angle Brackets",
    ParseReason.REQUEST_URI_SPACE: b"Space In Request-URI",
    ParseReason.REQUEST_URI_HEADERS: b"Headers In Request-URI",
    ParseReason.REQUEST_LINE_SPACES: b"Extra Space In Request-Line",
    ParseReason.BAD_REQUEST_LINE: b"Bad Request-Line",
    ParseReason.BAD_NAME_ADDR: b"Bad Name-Addr",
    ParseReason.MISSING_MANDATORY_HEADER: b"Missing Required Header",
    ParseReason.CONTROL_CHAR: b"Control Character In Message",
    ParseReason.BAD_VIA: b"Bad Via",
    ParseReason.BAD_BRANCH: b"Bad Via Branch",
    ParseReason.BAD_SIP_VERSION: b"Version Not Supported",
    ParseReason.UNSUPPORTED_URI_SCHEME: b"Unsupported URI Scheme",
    ParseReason.PROXY_REQUIRE: b"Bad Extension",
    ParseReason.TOO_LARGE: b"Message Too Large",
}


def reply_phrase(reason: ParseReason) -> bytes:
    """The Reason-Phrase of a reply that refuses for `reason` (a fixed name)."""
    phrase = PHRASES.get(reason)
    if phrase is None:
        phrase = reason.replace("_", " ").title().encode("ascii", "replace")
    return phrase


class SipParseError(ValueError):
    """Input that is not a SIP message we accept.

    `extra` holds header lines a reply must carry (the Unsupported list of a
    420, RFC 3261 §20.40)."""

    __slots__ = ("extra", "reason", "status_hint")

    def __init__(self, reason: ParseReason, status_hint: int = 400,
                 extra: tuple[bytes, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint
        self.extra = extra
