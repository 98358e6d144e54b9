"""The one error the SIP core raises for bad input.

Every way a datagram or a TCP byte stream can be wrong ends here, carrying the
status a server would answer with: 400 for a malformed message, 513 when it is
too large (RFC 3261 §21.5.14), 505 for another SIP version (§21.5.20), and
the two refusals a proxy owes before it forwards anything (§16.3): 416 for a
Request-URI scheme it does not serve and 420 for a Proxy-Require it does not
support. Callers decide whether to answer or to drop; the reason is a short
fixed name, so metrics and logs can count it without embedding
attacker-controlled bytes, and the reply phrase is made from that name only.
"""

from __future__ import annotations

# Reply phrases for the reasons whose name does not spell the phrase well by
# itself (header names keep their canonical spelling). Any other reason reads
# as its words, capitalised: "bad_request_uri" -> "Bad Request Uri".
PHRASES: dict[str, bytes] = {
    "duplicate_call_id": b"Duplicate Call-ID",
    "duplicate_cseq": b"Duplicate CSeq",
    "duplicate_from": b"Duplicate From",
    "duplicate_to": b"Duplicate To",
    "duplicate_max_forwards": b"Duplicate Max-Forwards",
    "duplicate_content_length": b"Duplicate Content-Length",
    "cseq_method_mismatch": b"CSeq Method Mismatch",
    "bad_cseq": b"Bad CSeq",
    "bad_call_id": b"Bad Call-ID",
    "bad_content_length": b"Bad Content-Length",
    "missing_content_length": b"Missing Content-Length",
    "body_shorter_than_content_length": b"Body Shorter Than Content-Length",
    "body_longer_than_content_length": b"Body Longer Than Content-Length",
    "bad_max_forwards": b"Bad Max-Forwards",
    "bad_request_uri": b"Bad Request-URI",
    "request_uri_brackets": b"Request-URI In Angle Brackets",
    "request_uri_space": b"Space In Request-URI",
    "request_uri_headers": b"Headers In Request-URI",
    "request_line_spaces": b"Extra Space In Request-Line",
    "bad_request_line": b"Bad Request-Line",
    "bad_name_addr": b"Bad Name-Addr",
    "missing_mandatory_header": b"Missing Required Header",
    "control_char": b"Control Character In Message",
    "bad_via": b"Bad Via",
    "bad_branch": b"Bad Via Branch",
    "bad_sip_version": b"Version Not Supported",
    "unsupported_uri_scheme": b"Unsupported URI Scheme",
    "proxy_require": b"Bad Extension",
    "too_large": b"Message Too Large",
}


def reply_phrase(reason: str) -> bytes:
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

    def __init__(self, reason: str, status_hint: int = 400, extra: tuple[bytes, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint
        self.extra = extra
