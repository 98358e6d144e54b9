"""Digest math and wire forms: RFC test vectors, the credentials parser (any
bytes give a dict or SipParseError), and challenge lines."""

from __future__ import annotations

import hashlib
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbc.sip import SipParseError
from sbc.sip.digest import (
    ALGORITHMS,
    MAX_CREDENTIALS_PARAMS,
    MAX_CREDENTIALS_SIZE,
    canonical_algorithm,
    challenge_line,
    expected_response,
    ha1,
    hash_hex,
    parse_credentials,
    same_uri,
)

# See tests/sip/test_fuzz.py: keep hypothesis's patch writer from turning a
# failing property into a warning-as-error.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass

FUZZ = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------
# Test vectors

RFC2617_AUTHORIZATION = (
    b'Digest username="Mufasa",\r\n'
    b'     realm="testrealm@host.com",\r\n'
    b'     nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n'
    b'     uri="/dir/index.html",\r\n'
    b"     qop=auth,\r\n"
    b"     nc=00000001,\r\n"
    b'     cnonce="0a4f113b",\r\n'
    b'     response="6629fae49393a05397450978507c4ef1",\r\n'
    b'     opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def test_rfc2617_md5_vector() -> None:
    """RFC 2617 §3.5."""
    params = parse_credentials(RFC2617_AUTHORIZATION)
    h = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert h == hash_hex("MD5", "Mufasa:testrealm@host.com:Circle Of Life")
    got = expected_response("MD5", h, params["nonce"], "GET", params["uri"],
                            params["qop"], params["nc"], params["cnonce"])
    assert got == params["response"] == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_vectors(algorithm: str, response: str) -> None:
    """RFC 7616 §3.9.1 (note the lower-case "of" in that RFC's password)."""
    h = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    got = expected_response(algorithm, h, RFC7616_NONCE, "GET", "/dir/index.html",
                            "auth", "00000001", RFC7616_CNONCE)
    assert got == response


def test_rfc2069_form_without_qop() -> None:
    h = ha1("MD5", "Mufasa", "testrealm@host.com", "CircleOfLife")
    ha2 = hashlib.md5(b"GET:/dir/index.html").hexdigest()
    want = hashlib.md5(f"{h}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}".encode()).hexdigest()
    got = expected_response("MD5", h, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET",
                            "/dir/index.html", None, None, None)
    assert got == want


def test_hash_hex_is_lower_hex_of_utf8() -> None:
    assert hash_hex("SHA-256", "ü") == hashlib.sha256("ü".encode()).hexdigest()
    assert hash_hex("MD5", "") == "d41d8cd98f00b204e9800998ecf8427e"
    assert len(hash_hex("SHA-256", "x")) == 64


def test_expected_response_rejects_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError):
        expected_response("MD5", "0" * 32, "n", "GET", "/", "auth-int", "00000001", "c")
    with pytest.raises(ValueError):
        expected_response("MD5", "0" * 32, "n", "GET", "/", "auth", None, "c")


@pytest.mark.parametrize(
    ("name", "canonical"),
    [(None, "MD5"), ("MD5", "MD5"), ("md5", "MD5"), ("sha-256", "SHA-256"),
     ("SHA-256", "SHA-256"), ("MD5-sess", None), ("SHA-512-256", None), ("", None)],
)
def test_canonical_algorithm(name: str | None, canonical: str | None) -> None:
    assert canonical_algorithm(name) == canonical


# --------------------------------------------------------------------------
# parse_credentials


def test_parse_rfc2617_example() -> None:
    assert parse_credentials(RFC2617_AUTHORIZATION) == {
        "username": "Mufasa",
        "realm": "testrealm@host.com",
        "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "uri": "/dir/index.html",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "0a4f113b",
        "response": "6629fae49393a05397450978507c4ef1",
        "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'digest username="a"', {"username": "a"}),
        (b'DIGEST USERNAME="a" , Realm = "r"', {"username": "a", "realm": "r"}),
        (b'Digest\tusername="a",realm="r"  ', {"username": "a", "realm": "r"}),
        (b'Digest username="a\\"b\\\\c"', {"username": 'a"b\\c'}),
        (b'Digest username="a, b", realm="x,y"', {"username": "a, b", "realm": "x,y"}),
        (b'Digest username="", uri=sip:bob@example.com;transport=udp',
         {"username": "", "uri": "sip:bob@example.com;transport=udp"}),
        (b"Digest algorithm=SHA-256, qop=auth, nc=0000000a",
         {"algorithm": "SHA-256", "qop": "auth", "nc": "0000000a"}),
        ('Digest username="J\u00f6rg"'.encode(), {"username": "J\u00f6rg"}),
        (b'Digest nonce="a=b==", x=y=z', {"nonce": "a=b==", "x": "y=z"}),
    ],
)
def test_parse_accepts(value: bytes, expected: dict[str, str]) -> None:
    assert parse_credentials(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"Digest",
        b"Digest ",
        b'Basic dXNlcjpwYXNz',
        b'Basic username="a"',
        b'Digestusername="a"',
        b'Digest username="a",',
        b'Digest ,username="a"',
        b'Digest username="a",,realm="r"',
        b'Digest username="a" realm="r"',
        b'Digest username="a',
        b'Digest username="a\\"',
        b'Digest username',
        b'Digest username=',
        b'Digest ="a"',
        b'Digest user name="a"',
        b'Digest username="a", username="b"',
        b'Digest username="a", USERNAME="b"',
        b'Digest username=a"b"',
        b'Digest username="a\x00"',
        b'Digest username="a\x7f"',
        b'Digest username="\xff"',
        b'Digest username="a"\x0b',
    ],
)
def test_parse_rejects(value: bytes) -> None:
    with pytest.raises(SipParseError) as exc:
        parse_credentials(value)
    assert exc.value.reason == "bad_credentials"
    assert exc.value.status_hint == 400


def test_parse_size_cap() -> None:
    head = b'Digest username="'
    fits = head + b"a" * (MAX_CREDENTIALS_SIZE - len(head) - 1) + b'"'
    assert len(fits) == MAX_CREDENTIALS_SIZE
    assert parse_credentials(fits)["username"] == "a" * (MAX_CREDENTIALS_SIZE - len(head) - 1)
    too_long = head + b"a" * (MAX_CREDENTIALS_SIZE - len(head)) + b'"'
    with pytest.raises(SipParseError):
        parse_credentials(too_long)


def test_parse_param_count_cap() -> None:
    def value(n: int) -> bytes:
        return b"Digest " + b", ".join(b"p%d=v" % i for i in range(n))

    assert len(parse_credentials(value(MAX_CREDENTIALS_PARAMS))) == MAX_CREDENTIALS_PARAMS
    with pytest.raises(SipParseError):
        parse_credentials(value(MAX_CREDENTIALS_PARAMS + 1))


@FUZZ
@given(st.binary(max_size=600))
def test_parse_any_bytes(data: bytes) -> None:
    try:
        parse_credentials(data)
    except SipParseError:
        pass


@FUZZ
@given(st.lists(st.sampled_from(
    [b"Digest ", b"digest", b" ", b"\t", b"\r\n ", b",", b"=", b'"', b"\\", b"username",
     b"realm", b"nonce", b"a", b"0", b"\xc3\xa9", b"\xff", b"\x00", b"sip:x@y"]),
    max_size=40))
def test_parse_any_token_soup(parts: list[bytes]) -> None:
    try:
        parse_credentials(b"".join(parts))
    except SipParseError:
        pass


_NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
_VALUES = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=30)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@FUZZ
@given(st.dictionaries(_NAMES, _VALUES, min_size=1, max_size=MAX_CREDENTIALS_PARAMS),
       st.sampled_from([",", ", ", " ,", ",\r\n  ", "\t,\t"]))
def test_parse_round_trip(params: dict[str, str], sep: str) -> None:
    value = "Digest " + sep.join(f"{k}={_quote(v)}" for k, v in params.items())
    data = value.encode()
    if len(data) > MAX_CREDENTIALS_SIZE:
        return
    assert parse_credentials(data) == params


# --------------------------------------------------------------------------
# challenge_line


def test_challenge_line() -> None:
    line = challenge_line("WWW-Authenticate", "sbc", "abc_-123", "SHA-256")
    assert line == (b'WWW-Authenticate: Digest realm="sbc", nonce="abc_-123", '
                    b'algorithm=SHA-256, qop="auth"')


def test_challenge_line_stale_opaque() -> None:
    line = challenge_line("Proxy-Authenticate", "sbc", "n", "MD5", stale=True, opaque="op")
    assert line == (b'Proxy-Authenticate: Digest realm="sbc", nonce="n", opaque="op", '
                    b'algorithm=MD5, qop="auth", stale=true')


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_challenge_line_parses_back(algorithm: str) -> None:
    line = challenge_line("WWW-Authenticate", 'we"ird\\realm', "n", algorithm, stale=True)
    name, _, value = line.partition(b":")
    assert name == b"WWW-Authenticate"
    assert parse_credentials(value.strip()) == {
        "realm": 'we"ird\\realm', "nonce": "n", "algorithm": algorithm, "qop": "auth",
        "stale": "true",
    }


@pytest.mark.parametrize(
    ("header", "realm", "algorithm"),
    [
        ("Authorization", "sbc", "MD5"),
        ("WWW-Authenticate", "sbc\r\nX-Injected: 1", "MD5"),
        ("WWW-Authenticate", "sbc\x00", "MD5"),
        ("WWW-Authenticate", "sbc", "MD5-sess"),
        ("WWW-Authenticate", "sbc", "md5"),
    ],
)
def test_challenge_line_rejects(header: str, realm: str, algorithm: str) -> None:
    with pytest.raises(ValueError):
        challenge_line(header, realm, "n", algorithm)


# --------------------------------------------------------------------------
# same_uri: RFC 3261 §19.1.4


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # The equivalent pairs of RFC 3261 §19.1.4.
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
        ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
         "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
        ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
         "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
        # And what the same rules give otherwise.
        ("SIP:1001@127.0.0.1:5060", "sip:1001@127.0.0.1:5060"),
        ("sip:1001@[::1]:5060", "sip:1001@[0:0::1]:5060"),
        ("sip:1001@[2001:DB8::1]", "sip:1001@[2001:db8::1]"),
        ("sip:%31001@host", "sip:1001@host"),
        ("sip:1001@host;user=phone", "sip:1001@host;USER=Phone"),
        ("sip:1001@host;lr", "sip:1001@host;LR"),
        ("sip:alice:pw@host", "sip:%61lice:pw@host"),
        ("sip:+15551234567;npdi@host", "sip:+15551234567;npdi@host"),
        ("tel:+15551234567", "TEL:+15551234567"),
        ("sip:host;x=%41", "sip:host;x=a"),
    ],
)
def test_same_uri_equivalent(a: str, b: str) -> None:
    assert same_uri(a, b)
    assert same_uri(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # The pairs RFC 3261 §19.1.4 says are not equivalent.
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        # Each rule on its own.
        ("sip:1001@host", "sips:1001@host"),
        ("sip:1001@host", "sip:1002@host"),
        ("sip:1001@host", "sip:host"),
        ("sip:1001@host:5060", "sip:1001@host:5061"),
        ("sip:1001@host", "sip:1001@other"),
        ("sip:alice:pw@host", "sip:alice:PW@host"),
        ("sip:alice:pw@host", "sip:alice@host"),
        ("sip:1001@host;transport=tcp", "sip:1001@host;transport=udp"),
        ("sip:1001@host;user=phone", "sip:1001@host"),
        ("sip:1001@host;ttl=1", "sip:1001@host"),
        ("sip:1001@host;method=INVITE", "sip:1001@host"),
        ("sip:1001@host;maddr=192.0.2.1", "sip:1001@host"),
        ("sip:1001@host;x=1", "sip:1001@host;x=2"),
        ("sip:a%40b@host", "sip:a@b@host"),  # an escaped reserved character stays itself
        ("sip:host?a=1", "sip:host?a=1&b=2"),
        ("sip:host?a=x", "sip:host?a=X"),
        ("tel:+15551234567", "sip:+15551234567@host"),
        ("tel:+15551234567", "tel:+15551234568"),
        # Garbage equals only itself.
        ("sip:", "SIP:"),
        ("sip:1001@host:99999", "sip:1001@host:99999;x"),
        ("sip:1001@[::1", "sip:1001@[::1;x"),
        ("sip:host;x;x", "sip:host;x"),
        ("", "sip:host"),
        ("sip:host", "host"),
    ],
)
def test_same_uri_different(a: str, b: str) -> None:
    assert not same_uri(a, b)
    assert not same_uri(b, a)


@FUZZ
@given(st.text(max_size=60), st.text(max_size=60))
def test_same_uri_any_text(a: str, b: str) -> None:
    """Never raises; reflexive and symmetric for any text."""
    assert same_uri(a, a)
    assert same_uri(a, b) == same_uri(b, a)


_URI_PART = st.sampled_from(["sip:", "SIP:", "sips:", "1001", "%31", "@", ":", "5060", ";",
                             "transport=", "TCP", "udp", "lr", "?", "&", "=", "[::1]",
                             "host", "HOST", "%40", "user=phone", "x"])


@FUZZ
@given(st.lists(_URI_PART, max_size=12), st.lists(_URI_PART, max_size=12))
def test_same_uri_token_soup(a: list[str], b: list[str]) -> None:
    x, y = "".join(a), "".join(b)
    assert same_uri(x, x)
    assert same_uri(x, y) == same_uri(y, x)
