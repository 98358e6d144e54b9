"""The header helpers: Via, SIP URIs, name-addr values, host:port, value lists."""

from __future__ import annotations

import pytest

from sbc.sip import (
    SipParseError,
    format_hostport,
    header_param,
    name_addr_uri,
    parse_params,
    parse_uri,
    parse_via,
    split_hostport,
    split_values,
)

# --------------------------------------------------------------------------
# Via


@pytest.mark.parametrize(
    ("value", "transport", "host", "port", "params"),
    [
        (b"SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds", "UDP",
         "pc33.atlanta.example.com", None, {b"branch": b"z9hG4bK776asdhds"}),
        (b"SIP/2.0/TCP 192.0.2.1:5061;branch=z9hG4bKx;rport", "TCP", "192.0.2.1", 5061,
         {b"branch": b"z9hG4bKx", b"rport": None}),
        (b"sip/2.0/tls proxy.example.com:5061", "TLS", "proxy.example.com", 5061, {}),
        (b"SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKv6", "UDP", "2001:db8::1", 5060,
         {b"branch": b"z9hG4bKv6"}),
        (b"SIP/2.0/UDP [2001:db8::1];branch=z9hG4bKv6", "UDP", "2001:db8::1", None,
         {b"branch": b"z9hG4bKv6"}),
        (b"SIP/2.0/UDP h ; BRANCH = z9hG4bK1 ; TTL=16 ;maddr=224.2.0.1", "UDP", "h", None,
         {b"branch": b"z9hG4bK1", b"ttl": b"16", b"maddr": b"224.2.0.1"}),
        (b"SIP/2.0/UDP   h:5070  ;received=192.0.2.9", "UDP", "h", 5070,
         {b"received": b"192.0.2.9"}),
        (b"SIP/2.0/WSS abc.invalid;branch=z9hG4bK;alias", "WSS", "abc.invalid", None,
         {b"branch": b"z9hG4bK", b"alias": None}),
        # Whitespace around the slashes and tabs as LWS (RFC 3261 §25.1; the
        # `wsinv` message of RFC 4475 §3.1.1.1).
        (b"SIP  /   2.0  /  UDP  192.0.2.2;branch=390skdjuw", "UDP", "192.0.2.2", None,
         {b"branch": b"390skdjuw"}),
        (b"SIP/2.0/UDP\th;branch=z9hG4bKtab", "UDP", "h", None, {b"branch": b"z9hG4bKtab"}),
        (b"SIP/2.0/UDP\th:5070 ;rport", "UDP", "h", 5070, {b"rport": None}),
        (b"SIP\t/ 2.0/tcp\t h", "TCP", "h", None, {}),
    ],
)
def test_parse_via(value: bytes, transport: str, host: str, port: int | None,
                   params: dict[bytes, bytes | None]) -> None:
    via = parse_via(value)
    assert (via.transport, via.host, via.port, via.params) == (transport, host, port, params)
    assert via.branch == params.get(b"branch")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "bad_via"),
        (b"SIP/2.0/UDP", "bad_via"),  # no space, no sent-by
        (b" SIP/2.0/UDP h", "bad_via"),
        (b"SIP/2.0 h", "bad_via"),
        (b"SIP/3.0/UDP h", "bad_via"),
        (b"HTTP/2.0/UDP h", "bad_via"),
        (b"SIP/2.0/UDP/X h", "bad_via"),
        (b"SIP/2.0/ h", "bad_via"),
        (b"SIP/2.0/UDP\t", "bad_host"),
        (b"SIP/2.0/\xff h", "bad_via"),
        (b"SIP/2.0/UDP ", "bad_host"),
        (b"SIP/2.0/UDP ;branch=z9hG4bK1", "bad_host"),
        (b"SIP/2.0/UDP h:port", "bad_port"),
        (b"SIP/2.0/UDP h:0", "bad_port"),
        (b"SIP/2.0/UDP h:65536", "bad_port"),
        (b"SIP/2.0/UDP [2001:db8::1", "bad_ipv6_reference"),
        (b"SIP/2.0/UDP [2001:db8::1]5060", "bad_hostport"),
        (b"SIP/2.0/UDP h\xe9", "bad_host"),
    ],
)
def test_parse_via_refuses(value: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_via(value)
    assert info.value.reason == reason
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    ("value", "address"),
    [
        # RFC 3261 §18.2.2: the sent-by, default port 5060.
        (b"SIP/2.0/UDP h", ("h", 5060)),
        (b"SIP/2.0/UDP h:5070", ("h", 5070)),
        # received overrides the host, not the port.
        (b"SIP/2.0/UDP h:5070;received=192.0.2.9", ("192.0.2.9", 5070)),
        # RFC 3581 §4: rport with a value overrides the port.
        (b"SIP/2.0/UDP h:5070;received=192.0.2.9;rport=40000", ("192.0.2.9", 40000)),
        (b"SIP/2.0/UDP h;rport=40000;received=192.0.2.9", ("192.0.2.9", 40000)),
        (b"SIP/2.0/UDP h:5070;rport=40000", ("h", 40000)),
        # rport without a value is the client's request to fill it in, not a port.
        (b"SIP/2.0/UDP h:5070;rport;received=192.0.2.9", ("192.0.2.9", 5070)),
        (b"SIP/2.0/UDP h;rport=", ("h", 5060)),
        (b"SIP/2.0/UDP h:5070;rport=abc", ("h", 5070)),
        # Ports no socket can take fall back to the sent-by.
        (b"SIP/2.0/UDP h:5070;rport=0", ("h", 5070)),
        (b"SIP/2.0/UDP h:5070;rport=65536", ("h", 5070)),
        (b"SIP/2.0/UDP h:5070;rport=000005060", ("h", 5070)),
        (b"SIP/2.0/UDP h:5070;rport=" + b"1" * 5000, ("h", 5070)),
        (b"SIP/2.0/UDP h;rport=65535", ("h", 65535)),
        (b"SIP/2.0/UDP [2001:db8::1]:5062;received=2001:db8::9;rport=5999",
         ("2001:db8::9", 5999)),
        (b"SIP/2.0/UDP [2001:db8::1]", ("2001:db8::1", 5060)),
    ],
)
def test_reply_address(value: bytes, address: tuple[str, int]) -> None:
    assert parse_via(value).reply_address() == address


def test_reply_address_default_port() -> None:
    assert parse_via(b"SIP/2.0/TLS h").reply_address(5061) == ("h", 5061)


# --------------------------------------------------------------------------
# URIs


@pytest.mark.parametrize(
    ("uri", "scheme", "user", "host", "port", "params"),
    [
        (b"sip:bob@biloxi.example.com", "sip", b"bob", "biloxi.example.com", None, {}),
        (b"sips:bob@biloxi.example.com:5061", "sips", b"bob", "biloxi.example.com", 5061, {}),
        (b"SIP:Bob@BILOXI.example.COM", "sip", b"Bob", "biloxi.example.com", None, {}),
        (b"sip:192.0.2.4", "sip", None, "192.0.2.4", None, {}),
        (b"sip:p1.example.com;lr", "sip", None, "p1.example.com", None, {b"lr": None}),
        (b"sip:alice:secret@atlanta.example.com;transport=tcp", "sip", b"alice:secret",
         "atlanta.example.com", None, {b"transport": b"tcp"}),
        (b"sip:+12125551212@gw.example.com:5070;user=phone;LR", "sip", b"+12125551212",
         "gw.example.com", 5070, {b"user": b"phone", b"lr": None}),
        (b"sip:alice@atlanta.example.com?subject=project%20x&priority=urgent", "sip", b"alice",
         "atlanta.example.com", None, {}),
        (b"sip:alice@atlanta.example.com;maddr=239.255.255.1?h=v", "sip", b"alice",
         "atlanta.example.com", None, {b"maddr": b"239.255.255.1"}),
        (b"sip:[2001:db8::1]", "sip", None, "2001:db8::1", None, {}),
        (b"sip:alice@[2001:DB8::1]:5060;transport=udp", "sip", b"alice", "2001:db8::1", 5060,
         {b"transport": b"udp"}),
        (b"sip:[2001:db8::1];lr", "sip", None, "2001:db8::1", None, {b"lr": None}),
        (b"sips:[::1]:5061", "sips", None, "::1", 5061, {}),
        (b"sip:user;npdi@h", "sip", b"user;npdi", "h", None, {}),
        (b"sip:@h", "sip", b"", "h", None, {}),
    ],
)
def test_parse_uri(uri: bytes, scheme: str, user: bytes | None, host: str, port: int | None,
                   params: dict[bytes, bytes | None]) -> None:
    u = parse_uri(uri)
    assert (u.scheme, u.user, u.host, u.port, u.params) == (scheme, user, host, port, params)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (b"", "bad_uri_scheme"),
        (b"bob@h", "bad_uri_scheme"),
        (b":bob@h", "bad_uri_scheme"),
        (b"tel:+12125551212", "bad_uri_scheme"),
        (b"http://h/", "bad_uri_scheme"),
        (b"sip:", "bad_host"),
        (b"sip:bob@", "bad_host"),
        (b"sip:bob@;lr", "bad_host"),
        (b"sip:bob@h:x", "bad_port"),
        (b"sip:bob@h:99999", "bad_port"),
        (b"sip:[2001:db8::1", "bad_ipv6_reference"),
        (b"sip:[2001:db8::1]x", "bad_hostport"),
        (b"sip:[]:5060", "bad_host"),
        (b"sip:b\xc3\xb6b@h\xc3\xb6st", "bad_host"),
    ],
)
def test_parse_uri_refuses(uri: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri(uri)
    assert info.value.reason == reason


# --------------------------------------------------------------------------
# name-addr / addr-spec values


@pytest.mark.parametrize(
    ("value", "uri", "tag"),
    [
        (b"<sip:alice@atlanta.example.com>;tag=1928301774", b"sip:alice@atlanta.example.com",
         b"1928301774"),
        (b"Alice <sip:alice@atlanta.example.com>;tag=1928301774",
         b"sip:alice@atlanta.example.com", b"1928301774"),
        (b'"Alice" <sip:alice@atlanta.example.com> ; tag = 88', b"sip:alice@atlanta.example.com",
         b"88"),
        (b"Bob <sip:bob@biloxi.example.com>", b"sip:bob@biloxi.example.com", None),
        # addr-spec form: parameters after the URI are header parameters (RFC 3261 §20.10).
        (b"sip:alice@atlanta.example.com;tag=1928301774", b"sip:alice@atlanta.example.com",
         b"1928301774"),
        (b"sip:alice@atlanta.example.com", b"sip:alice@atlanta.example.com", None),
        (b"  sip:alice@h ;TAG=x", b"sip:alice@h", b"x"),
        # In name-addr form a URI parameter called tag is not the header's tag.
        (b"<sip:alice@h;tag=uri>", b"sip:alice@h;tag=uri", None),
        (b"<sip:alice@h;tag=uri>;tag=hdr", b"sip:alice@h;tag=uri", b"hdr"),
        # Quoted display names may contain the delimiters.
        (b'"A <b> c" <sip:a@h>;tag=t1', b"sip:a@h", b"t1"),
        (b'"Smith; John" <sip:a@h>;tag=t2', b"sip:a@h", b"t2"),
        (b'"Smith, John" <sip:a@h>;tag=t3', b"sip:a@h", b"t3"),
        (b'"say \\"<hi>\\"; ok" <sip:a@h>;tag=t4', b"sip:a@h", b"t4"),
        (b'  "lead" <sip:a@h>;tag=t5', b"sip:a@h", b"t5"),
        (b'"" <sip:a@h>;tag=t6', b"sip:a@h", b"t6"),
        (b"<sip:[2001:db8::1]:5060;lr>;tag=v6", b"sip:[2001:db8::1]:5060;lr", b"v6"),
        (b"<sip:a@h>;tag", b"sip:a@h", None),
        (b"<sip:a@h>;expires=60;tag=z", b"sip:a@h", b"z"),
    ],
)
def test_name_addr(value: bytes, uri: bytes, tag: bytes | None) -> None:
    assert name_addr_uri(value) == uri
    assert header_param(value, b"tag") == tag


def test_header_param_other_names() -> None:
    value = b"<sip:a@h>;expires=60;q=0.5;+sip.instance=\"<urn:x>\""
    assert header_param(value, b"expires") == b"60"
    assert header_param(value, b"q") == b"0.5"
    assert header_param(value, b"missing") is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"<sip:a@h", "bad_name_addr"),
        (b"Alice <sip:a@h;tag=1", "bad_name_addr"),
        (b'"Alice <sip:a@h>', "unterminated_display_name"),
        (b'"Alice \\" <sip:a@h>', "unterminated_display_name"),
        (b'"\\', "unterminated_display_name"),
    ],
)
def test_name_addr_refuses(value: bytes, reason: str) -> None:
    for helper in (name_addr_uri, lambda v: header_param(v, b"tag")):
        with pytest.raises(SipParseError) as info:
            helper(value)
        assert info.value.reason == reason


# --------------------------------------------------------------------------
# Value lists, parameters, host:port


@pytest.mark.parametrize(
    ("value", "values"),
    [
        (b"a", [b"a"]),
        (b"  a  ", [b"a"]),
        (b"", [b""]),
        (b"a, b ,c", [b"a", b"b", b"c"]),
        (b"<sip:a;x=1,2>, <sip:b>", [b"<sip:a;x=1,2>", b"<sip:b>"]),
        (b'"a, b" <sip:a>,<sip:b>', [b'"a, b" <sip:a>', b"<sip:b>"]),
        (b'"a \\" , b" <sip:a>, c', [b'"a \\" , b" <sip:a>', b"c"]),
        (b'"<" <sip:a>, c', [b'"<" <sip:a>', b"c"]),
        (b"SIP/2.0/UDP h;branch=1,SIP/2.0/UDP [::1]:5060;branch=2",
         [b"SIP/2.0/UDP h;branch=1", b"SIP/2.0/UDP [::1]:5060;branch=2"]),
    ],
)
def test_split_values(value: bytes, values: list[bytes]) -> None:
    assert split_values(value) == values


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"a,", "empty_value"),
        (b",a", "empty_value"),
        (b"a,,b", "empty_value"),
        (b"a, ,b", "empty_value"),
        (b'"a, b', "unterminated_value"),
        (b"<sip:a, b", "unterminated_value"),
        (b'"a\\", b', "unterminated_value"),
        (b'"a,\\', "unterminated_value"),
    ],
)
def test_split_values_refuses(value: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        split_values(value)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("text", "params"),
    [
        (b"", {}),
        (b";", {}),
        (b";lr", {b"lr": None}),
        (b"lr;Transport=TCP", {b"lr": None, b"transport": b"TCP"}),
        (b" ; a = 1 ;; b= ", {b"a": b"1", b"b": b""}),
        (b";a=1;a=2", {b"a": b"2"}),
        (b";x=a=b", {b"x": b"a=b"}),
    ],
)
def test_parse_params(text: bytes, params: dict[bytes, bytes | None]) -> None:
    assert parse_params(text) == params


@pytest.mark.parametrize(
    ("hostport", "result"),
    [
        (b"h", ("h", None)),
        (b"h:5060", ("h", 5060)),
        (b"h:1", ("h", 1)),
        (b"h:65535", ("h", 65535)),
        (b"h:", ("h", None)),
        (b"192.0.2.1:5070", ("192.0.2.1", 5070)),
        (b"[2001:db8::1]", ("2001:db8::1", None)),
        (b"[2001:db8::1]:5060", ("2001:db8::1", 5060)),
        (b"[::1]:", ("::1", None)),
    ],
)
def test_split_hostport(hostport: bytes, result: tuple[str, int | None]) -> None:
    assert split_hostport(hostport) == result


@pytest.mark.parametrize(
    ("hostport", "reason"),
    [
        (b"", "bad_host"),
        (b":5060", "bad_host"),
        (b"[]", "bad_host"),
        (b"[]:5060", "bad_host"),
        (b"[2001:db8::1", "bad_ipv6_reference"),
        (b"[2001:db8::1]5060", "bad_hostport"),
        (b"[2001:db8::1]x:5060", "bad_hostport"),
        (b"h:0", "bad_port"),
        (b"h:65536", "bad_port"),
        (b"h:000001", "bad_port"),
        (b"h:-1", "bad_port"),
        (b"h:+5", "bad_port"),
        (b"h:5 ", "bad_port"),
        (b"h:\xd9\xa1", "bad_port"),  # an Arabic-Indic digit is not a port
        (b"h:" + b"9" * 5000, "bad_port"),
        (b"[2001:db8::1]:x", "bad_port"),
        (b"h\xff:5060", "bad_host"),
        (b"[\xff]", "bad_host"),
    ],
)
def test_split_hostport_refuses(hostport: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        split_hostport(hostport)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("h", None, "h"),
        ("h", 5060, "h:5060"),
        ("2001:db8::1", None, "[2001:db8::1]"),
        ("2001:db8::1", 5060, "[2001:db8::1]:5060"),
    ],
)
def test_format_hostport_round_trips(host: str, port: int | None, text: str) -> None:
    assert format_hostport(host, port) == text
    assert split_hostport(text.encode()) == (host, port)
