"""The pure SIP core: message model, parser, stream framing, header helpers.

No asyncio, no sockets, no clock: bytes in, values or SipParseError out.
"""

from .errors import ParseReason, SipParseError
from .headers import (
    SipUri,
    Via,
    format_hostport,
    header_param,
    name_addr_uri,
    parse_params,
    parse_uri,
    parse_via,
    split_hostport,
    split_values,
)
from .message import Header, Message, header_value, serialize
from .parser import StreamFramer, canonical_name, parse_message

__all__ = [
    "Header",
    "Message",
    "ParseReason",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "Via",
    "canonical_name",
    "format_hostport",
    "header_param",
    "header_value",
    "name_addr_uri",
    "parse_message",
    "parse_params",
    "parse_uri",
    "parse_via",
    "serialize",
    "split_hostport",
    "split_values",
]
