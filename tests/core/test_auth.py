"""The digest verifier: challenges, a client computing answers to them, and
every way an answer can be turned down (an attacker replaying, redirecting,
guessing names, filling the replay table)."""

from __future__ import annotations

import ipaddress
import textwrap
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbc.config import ConfigError, parse_config
from sbc.core.identify.auth import (
    DEFAULT_ALGORITHMS,
    DIGEST_OFFENSES,
    FUTURE_SKEW,
    Account,
    AuthResult,
    AuthStatus,
    DigestAuth,
    account_from_ha1,
    account_from_password,
)
from sbc.core.identify.gateways import GatewayTable
from sbc.sip.digest import expected_response, ha1, parse_credentials
from sbc.app import accounts, ban_table

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "sbc"
SRC = "198.51.100.7"
OTHER = "198.51.100.8"
T0 = 1000.0
URI = "sip:+15551234567@sbc.example.net"

ALICE = account_from_password("alice", REALM, "gw-alice", "s3cret")
BOB = account_from_ha1("bob", REALM, "gw-bob", ha1("MD5", "bob", REALM, "hunter2"), None)


def make_auth(*accounts: Account, **kwargs: object) -> DigestAuth:
    return DigestAuth(accounts or (ALICE, BOB), secret=SECRET, realm=REALM, **kwargs)  # type: ignore[arg-type]


def challenge_params(line: bytes) -> tuple[str, dict[str, str]]:
    name, _, value = line.partition(b":")
    return name.decode(), parse_credentials(value.strip())


def q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def answer(
    line: bytes,
    username: str = "alice",
    password: str = "s3cret",
    *,
    method: str = "INVITE",
    uri: str = URI,
    nc: int = 1,
    cnonce: str = "0a4f113b",
    qop: str | None = "auth",
    realm: str | None = None,
    nonce: str | None = None,
    omit: tuple[str, ...] = (),
    raw: dict[str, str] | None = None,
) -> bytes:
    """What a client sends in reply to one challenge line; `raw` replaces
    parameters on the wire after the response is computed."""
    _, ch = challenge_params(line)
    algorithm = ch["algorithm"]
    realm = ch["realm"] if realm is None else realm
    nonce = ch["nonce"] if nonce is None else nonce
    nc_s = f"{nc:08x}"
    h = ha1(algorithm, username, realm, password)
    response = expected_response(algorithm, h, nonce, method, uri, qop,
                                 nc_s if qop else None, cnonce if qop else None)
    params: dict[str, str] = {
        "username": q(username),
        "realm": q(realm),
        "nonce": q(nonce),
        "uri": q(uri),
        "response": q(response),
        "algorithm": algorithm,
        "cnonce": q(cnonce),
        "nc": nc_s,
    }
    if qop is not None:
        params["qop"] = qop
    params.update(raw or {})
    for key in omit:
        params.pop(key, None)
    return ("Digest " + ", ".join(f"{k}={v}" for k, v in params.items())).encode()


def line_for(auth: DigestAuth, algorithm: str, host: str = SRC, now: float = T0) -> bytes:
    for line in auth.challenge(host, now, proxy=True):
        if challenge_params(line)[1]["algorithm"] == algorithm:
            return line
    raise AssertionError(f"no {algorithm} challenge")


# --------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
@pytest.mark.parametrize("method", ["INVITE", "REGISTER", "SUBSCRIBE"])
def test_password_account_round_trip(algorithm: str, method: str) -> None:
    auth = make_auth()
    line = line_for(auth, algorithm)
    result = auth.verify(method, URI, answer(line, method=method), SRC, T0 + 1)
    assert result == AuthResult(AuthStatus.OK, ALICE)
    assert result.account is not None and result.account.gateway == "gw-alice"


def test_ha1_account_round_trip() -> None:
    auth = make_auth()
    line = line_for(auth, "MD5")
    result = auth.verify("INVITE", URI, answer(line, "bob", "hunter2"), SRC, T0)
    assert result.status is AuthStatus.OK
    assert result.account is BOB


def test_ha1_account_without_that_algorithm() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    result = auth.verify("INVITE", URI, answer(line, "bob", "hunter2"), SRC, T0)
    assert result == AuthResult(AuthStatus.BAD_RESPONSE, BOB)


def test_ha1_sha256_account() -> None:
    carol = account_from_ha1("carol", REALM, "gw-carol", None,
                             ha1("SHA-256", "carol", REALM, "pw").upper())
    auth = make_auth(carol)
    ok = auth.verify("INVITE", URI, answer(line_for(auth, "SHA-256"), "carol", "pw"), SRC, T0)
    assert ok.status is AuthStatus.OK
    md5 = auth.verify("INVITE", URI, answer(line_for(auth, "MD5"), "carol", "pw"), SRC, T0)
    assert md5.status is AuthStatus.BAD_RESPONSE


def test_missing_algorithm_means_md5() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "MD5"), omit=("algorithm",))
    assert auth.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.OK


def test_algorithm_name_is_case_insensitive_and_response_hex_too() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), raw={"algorithm": "sha-256"})
    assert auth.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.OK
    params = parse_credentials(answer(line_for(auth, "MD5"), nc=2))
    upper = answer(line_for(auth, "MD5"), nc=2, raw={"response": q(params["response"].upper())})
    assert auth.verify("INVITE", URI, upper, SRC, T0).status is AuthStatus.OK


# --------------------------------------------------------------------------
# The answer is bound to its request (RFC 7616 §3.4.6)


def test_answer_redirected_to_another_destination_is_refused() -> None:
    """An attacker who sees an answer on its way (or gets it ahead of its
    request) puts it on an INVITE to a number of its own: refused whatever
    the password, and the real request still goes through afterwards."""
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"))  # hashed for URI
    premium = "sip:+8821234567@sbc.example.net"
    assert auth.verify("INVITE", premium, creds, SRC, T0) == AuthResult(AuthStatus.URI_MISMATCH)
    assert auth.nonce_entries == 0  # nothing recorded: the honest request is not spent
    assert auth.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.OK


@pytest.mark.parametrize(
    "request_uri",
    ["sip:+15551234567@SBC.Example.NET", "sip:+1555123456%37@sbc.example.net",
     "SIP:+15551234567@sbc.example.net;unknown=1"],
)
def test_uri_compared_as_rfc3261_says(request_uri: str) -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "MD5"))
    assert auth.verify("INVITE", request_uri, creds, SRC, T0).status is AuthStatus.OK


@pytest.mark.parametrize(
    "request_uri",
    ["sip:+15551234568@sbc.example.net", "sip:+15551234567@sbc.example.net:5060",
     "sips:+15551234567@sbc.example.net", "sip:+15551234567@sbc.example.net;transport=tcp",
     "sip:10.0.0.5:5060"],
)
def test_uri_not_the_request_uri(request_uri: str) -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "MD5"))
    assert auth.verify("INVITE", request_uri, creds, SRC, T0) == AuthResult(
        AuthStatus.URI_MISMATCH)


@pytest.mark.parametrize(("omit", "override"), [(("uri",), {}), ((), {"uri": '""'})])
def test_missing_uri(omit: tuple[str, ...], override: dict[str, str]) -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), omit=omit, raw=override)
    assert auth.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.URI_MISMATCH


def test_uri_mismatch_says_nothing_of_the_user_name() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    for username, password in (("alice", "s3cret"), ("alice", "guess"), ("mallory", "x")):
        creds = answer(line, username, password, uri="sip:900@sbc.example.net")
        assert auth.verify("INVITE", URI, creds, SRC, T0) == AuthResult(AuthStatus.URI_MISMATCH)


def test_uri_mismatch_with_a_foreign_nonce_is_challenged() -> None:
    # Only a source that received our nonce can earn the 400 (and its offense):
    # a datagram forged in a victim's name is challenged, never held against it.
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256", host=OTHER), uri="sip:900@x")
    assert auth.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.BAD_NONCE


# --------------------------------------------------------------------------
# user@domain user names (sipsak sends `1001@`, some phones `1001@host`)


@pytest.mark.parametrize("sent", ["alice@", "alice@sbc.example.net", "alice@x@y"])
@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_user_at_domain_is_the_account(sent: str, algorithm: str) -> None:
    auth = make_auth()
    creds = answer(line_for(auth, algorithm), sent, method="REGISTER")  # HA1 over `sent`
    assert auth.verify("REGISTER", URI, creds, SRC, T0) == AuthResult(AuthStatus.OK, ALICE)


def test_user_at_domain_with_the_wrong_password() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "MD5"), "alice@", "guess")
    assert auth.verify("INVITE", URI, creds, SRC, T0) == AuthResult(AuthStatus.BAD_RESPONSE, ALICE)


def test_user_at_domain_answer_hashed_over_the_bare_name_is_refused() -> None:
    # The HA1 covers the user name as sent (RFC 7616 §3.4.2): a response made
    # for "alice" does not answer for "alice@host".
    auth = make_auth()
    line = line_for(auth, "MD5")
    params = parse_credentials(answer(line))
    creds = answer(line, raw={"username": q("alice@host"), "response": q(params["response"])})
    assert auth.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.BAD_RESPONSE


def test_user_at_domain_of_an_ha1_account() -> None:
    # Only a password can hash "bob@host"; the stored HA1 answers to "bob" only.
    auth = make_auth()
    line = line_for(auth, "MD5")
    assert auth.verify("INVITE", URI, answer(line, "bob@host", "hunter2"), SRC,
                       T0) == AuthResult(AuthStatus.BAD_RESPONSE, BOB)
    assert auth.verify("INVITE", URI, answer(line, "bob", "hunter2"), SRC, T0).status is (
        AuthStatus.OK)


def test_user_at_domain_shares_the_account_replay_memory() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    assert auth.verify("INVITE", URI, answer(line, "alice", nc=1), SRC, T0).status is AuthStatus.OK
    again = answer(line, "alice@elsewhere", nc=1)
    assert auth.verify("INVITE", URI, again, SRC, T0) == AuthResult(AuthStatus.REPLAY, ALICE)


def test_at_sign_alone_is_no_account() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "MD5"), "@alice")
    assert auth.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.UNKNOWN_ACCOUNT


def test_method_is_part_of_the_digest() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), method="INVITE")
    assert auth.verify("BYE", URI, creds, SRC, T0).status is AuthStatus.BAD_RESPONSE


# --------------------------------------------------------------------------
# Refusals


def test_no_credentials() -> None:
    assert make_auth().verify("INVITE", URI, None, SRC, T0) == AuthResult(AuthStatus.NO_CREDENTIALS)


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_wrong_password(algorithm: str) -> None:
    auth = make_auth()
    creds = answer(line_for(auth, algorithm), password="guess")
    assert auth.verify("INVITE", URI, creds, SRC, T0) == AuthResult(AuthStatus.BAD_RESPONSE, ALICE)


def test_unknown_user_costs_a_hash_too() -> None:
    """An unknown user's answer is checked against a decoy HA1, not turned
    down before any hashing: a guess at a user name takes as long as a
    guess at a password. The decoy admits nothing, even with its own HA1."""
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    decoy = auth._decoy["SHA-256"]  # noqa: SLF001 - the decoy itself is what is tested
    _, ch = challenge_params(line)
    response = expected_response("SHA-256", decoy, ch["nonce"], "INVITE", URI, "auth",
                                 "00000001", "0a4f113b")
    creds = answer(line, "mallory", raw={"response": q(response)})
    assert auth.verify("INVITE", URI, creds, SRC, T0) == AuthResult(AuthStatus.UNKNOWN_ACCOUNT)


def test_unknown_user_and_wrong_realm() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    assert auth.verify("INVITE", URI, answer(line, "mallory"), SRC, T0).status is (
        AuthStatus.UNKNOWN_ACCOUNT)
    other_realm = answer(line, realm="elsewhere")
    assert auth.verify("INVITE", URI, other_realm, SRC, T0).status is AuthStatus.UNKNOWN_ACCOUNT


def test_nonce_from_another_address() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256", host=OTHER))
    assert auth.verify("INVITE", URI, creds, SRC, T0) == AuthResult(AuthStatus.BAD_NONCE)


def test_nonce_bound_to_address_not_spelling() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256", host="::ffff:" + SRC))
    assert auth.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.OK
    v6 = answer(line_for(auth, "SHA-256", host="2001:DB8:0:0::1"))
    assert auth.verify("INVITE", URI, v6, "2001:db8::1", T0).status is AuthStatus.OK


def _flip(nonce: str, i: int) -> str:
    c = "B" if nonce[i] != "B" else "C"
    return nonce[:i] + c + nonce[i + 1 :]


@pytest.mark.parametrize("index", [0, 5, 10, 11, 20, 31])
def test_tampered_nonce(index: int) -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    nonce = challenge_params(line)[1]["nonce"]
    creds = answer(line, nonce=_flip(nonce, index))
    assert auth.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.BAD_NONCE


@pytest.mark.parametrize(
    "nonce",
    ["", "x", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "A" * 32, "A" * 31 + "=",
     "A" * 33, "A" * 31 + "+", "A" * 31 + "/", "\u00e9" * 32],
)
def test_foreign_nonce(nonce: str) -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), nonce=nonce)
    assert auth.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.BAD_NONCE


def test_nonce_from_another_secret() -> None:
    other = DigestAuth([ALICE], secret=b"x" * 32, realm=REALM)
    creds = answer(line_for(other, "SHA-256"))
    assert make_auth().verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.BAD_NONCE


def test_expired_nonce() -> None:
    auth = make_auth(nonce_ttl=60.0)
    line = line_for(auth, "SHA-256")
    assert auth.verify("INVITE", URI, answer(line), SRC, T0 + 60.0).status is AuthStatus.OK
    right = answer(line, nc=2)
    assert auth.verify("INVITE", URI, right, SRC, T0 + 60.01) == AuthResult(AuthStatus.STALE, ALICE)
    wrong = answer(line, password="guess", nc=3)
    assert auth.verify("INVITE", URI, wrong, SRC, T0 + 60.01).status is AuthStatus.BAD_RESPONSE


def test_nonce_from_the_future() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256", now=T0 + FUTURE_SKEW + 1)
    assert auth.verify("INVITE", URI, answer(line), SRC, T0).status is AuthStatus.STALE
    near = line_for(auth, "SHA-256", now=T0 + FUTURE_SKEW - 1)
    assert auth.verify("INVITE", URI, answer(near), SRC, T0).status is AuthStatus.OK


def test_stale_answer_then_fresh_challenge() -> None:
    auth = make_auth(nonce_ttl=10.0)
    old = line_for(auth, "MD5")
    assert auth.verify("INVITE", URI, answer(old), SRC, T0 + 11).status is AuthStatus.STALE
    lines = auth.challenge(SRC, T0 + 11, proxy=True, stale=True)
    assert all(b"stale=true" in line for line in lines)
    fresh = next(line for line in lines if b"algorithm=MD5" in line)
    assert auth.verify("INVITE", URI, answer(fresh), SRC, T0 + 12).status is AuthStatus.OK


def test_nc_replay() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    assert auth.verify("INVITE", URI, answer(line, nc=1), SRC, T0).status is AuthStatus.OK
    assert auth.verify("INVITE", URI, answer(line, nc=1), SRC, T0 + 1) == AuthResult(
        AuthStatus.REPLAY, ALICE)
    assert auth.verify("INVITE", URI, answer(line, nc=5), SRC, T0 + 2).status is AuthStatus.OK
    assert auth.verify("INVITE", URI, answer(line, nc=4), SRC, T0 + 3).status is AuthStatus.REPLAY
    assert auth.verify("INVITE", URI, answer(line, nc=5), SRC, T0 + 4).status is AuthStatus.REPLAY
    assert auth.verify("INVITE", URI, answer(line, nc=6), SRC, T0 + 5).status is AuthStatus.OK


def test_failed_answers_are_not_counted() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    bad = answer(line, password="guess", nc=9)
    assert auth.verify("INVITE", URI, bad, SRC, T0).status is AuthStatus.BAD_RESPONSE
    assert auth.nonce_entries == 0
    assert auth.verify("INVITE", URI, answer(line, nc=1), SRC, T0).status is AuthStatus.OK
    assert auth.nonce_entries == 1


def test_replay_memory_is_per_account() -> None:
    auth = make_auth()
    line = line_for(auth, "MD5")
    assert auth.verify("INVITE", URI, answer(line), SRC, T0).status is AuthStatus.OK
    bob = answer(line, "bob", "hunter2")
    assert auth.verify("INVITE", URI, bob, SRC, T0).status is AuthStatus.OK
    assert auth.verify("INVITE", URI, bob, SRC, T0).status is AuthStatus.REPLAY


def test_missing_qop_is_refused() -> None:
    # The RFC 2069 form (no qop, nc or cnonce) computed correctly is still refused.
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), qop=None, omit=("nc", "cnonce"))
    assert "qop" not in parse_credentials(creds)
    assert auth.verify("INVITE", URI, creds, SRC, T0) == AuthResult(AuthStatus.BAD_RESPONSE, ALICE)


@pytest.mark.parametrize(
    ("omit", "override"),
    [
        ((), {"qop": "auth-int"}),
        ((), {"qop": '"auth,auth-int"'}),
        (("nc",), {}),
        ((), {"nc": "1"}),
        ((), {"nc": "000000001"}),
        ((), {"nc": "0000000g"}),
        ((), {"nc": '" 0000001"'}),
        (("cnonce",), {}),
        ((), {"cnonce": '""'}),
        ((), {"algorithm": "MD5-sess"}),
        ((), {"algorithm": "SHA-512-256"}),
        ((), {"response": '"0123"'}),
        ((), {"response": '"' + "z" * 64 + '"'}),
        ((), {"response": '"\u00e9"'}),
    ],
)
def test_bad_answers(omit: tuple[str, ...], override: dict[str, str]) -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), omit=omit, raw=override)
    assert auth.verify("INVITE", URI, creds, SRC, T0) == AuthResult(AuthStatus.BAD_RESPONSE, ALICE)


def test_algorithm_not_configured() -> None:
    full = make_auth()
    only_sha = make_auth(algorithms=("SHA-256",))
    lines = only_sha.challenge(SRC, T0, proxy=False)
    assert len(lines) == 1 and b"algorithm=SHA-256" in lines[0]
    # Same secret, so the MD5 challenge's nonce is valid for both.
    creds = answer(line_for(full, "MD5"))
    assert only_sha.verify("INVITE", URI, creds, SRC, T0).status is AuthStatus.BAD_RESPONSE


@pytest.mark.parametrize(
    "creds",
    [
        b"",
        b"Basic YWxpY2U6czNjcmV0",
        b'Digest username="alice"',
        b'Digest realm="sbc", nonce="x", response="y", uri="z"',
        b'Digest username="alice", realm="sbc", nonce="x", uri="z"',
        b'Digest username="alice", realm="sbc", nonce="x", response="y", response="y"',
        b"Digest \xff",
        b"x" * 5000,
    ],
)
def test_malformed(creds: bytes) -> None:
    assert make_auth().verify("INVITE", URI, creds, SRC, T0) == AuthResult(AuthStatus.MALFORMED)


# --------------------------------------------------------------------------
# Source restriction


def test_from_cidrs() -> None:
    nets = (ipaddress.ip_network("198.51.100.0/30"), ipaddress.ip_network("2001:db8::/32"))
    dave = account_from_password("dave", REALM, "gw-dave", "pw", from_cidrs=nets)
    auth = make_auth(dave)

    def try_from(host: str) -> AuthStatus:
        return auth.verify("INVITE", URI, answer(line_for(auth, "MD5", host=host), "dave", "pw"),
                           host, T0).status

    assert try_from("198.51.100.2") is AuthStatus.OK
    assert try_from("::ffff:198.51.100.3") is AuthStatus.OK
    assert try_from("2001:db8::5") is AuthStatus.OK
    assert try_from(SRC) is AuthStatus.SOURCE_NOT_ALLOWED
    assert try_from("2001:db9::5") is AuthStatus.SOURCE_NOT_ALLOWED
    assert try_from("not-an-address") is AuthStatus.SOURCE_NOT_ALLOWED
    result = auth.verify("INVITE", URI, answer(line_for(auth, "MD5"), "dave", "pw"), SRC, T0)
    assert result == AuthResult(AuthStatus.SOURCE_NOT_ALLOWED, dave)


# --------------------------------------------------------------------------
# from_must_match: the From URI's user must be the account's user name


@pytest.mark.parametrize(
    ("from_value", "allowed"),
    [
        (b"<sip:alice@sbc.example.net>;tag=1", True),
        (b'"Alice" <sip:alice@198.51.100.7:5060;transport=udp>;tag=1', True),
        (b"sip:alice@sbc.example.net;tag=1", True),
        (b"<sip:%61lice@sbc.example.net>", True),
        (b"<sips:alice:pw@sbc.example.net>", True),
        (b"<sip:+15551234567@sbc.example.net>;tag=1", False),  # a caller ID of its choosing
        (b"<sip:Alice@sbc.example.net>", False),
        (b"<sip:alice2@sbc.example.net>", False),
        (b"<sip:sbc.example.net>", False),
        (b"<tel:+15551234567>", False),
        (b"<sip:alice@", False),
        (b"", False),
    ],
)
def test_caller_allowed(from_value: bytes, allowed: bool) -> None:
    strict = account_from_password("alice", REALM, "gw", "pw", from_must_match=True)
    assert strict.caller_allowed(from_value) is allowed
    assert ALICE.caller_allowed(from_value)  # off by default: a trunk's many caller IDs
    ha1_strict = account_from_ha1("alice", REALM, "gw", "0" * 32, None, from_must_match=True)
    assert ha1_strict.caller_allowed(from_value) is allowed


# --------------------------------------------------------------------------
# Configuration: what reaches the verifier


def _config(account: str) -> str:
    return textwrap.dedent("""
        gateways:
          - name: phones
            digest:
              - username: "1001"
                password: "pw"
    """) + textwrap.indent(textwrap.dedent(account), " " * 8)


def test_config_from_must_match_reaches_the_account() -> None:
    cfg = parse_config(_config("from_must_match: true\n"), "x.yaml")
    (acc,) = accounts(cfg)
    assert acc.from_must_match and acc.password == "pw"
    (default,) = accounts(parse_config(_config(""), "x.yaml"))
    assert not default.from_must_match
    assert parse_config("", "x.yaml").auth.algorithms == ("MD5", "SHA-256")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_config('from_must_match: "yes"\n'),
         "x.yaml:7: gateways[0].digest[0].from_must_match: Input should be a valid boolean"),
        (_config("from_must_match: 1\n"),
         "x.yaml:7: gateways[0].digest[0].from_must_match: Input should be a valid boolean"),
        (_config("").replace('"1001"', '"1001@pbx.example"'),
         "x.yaml:5: gateways[0].digest[0].username: '1001@pbx.example': a user name has no '@'"),
    ],
)
def test_config_digest_account_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml")
    assert str(info.value).startswith(expected), str(info.value)


def test_digest_offenses_count_under_the_digest_failure_switch() -> None:
    cfg = parse_config(_config(""), "x.yaml")
    counted = ban_table(cfg, GatewayTable([])).counted
    assert counted is not None and DIGEST_OFFENSES <= counted
    off = parse_config("bans: {offenses: {digest_failure: false}}", "x.yaml")
    counted = ban_table(off, GatewayTable([])).counted
    assert counted is not None and not DIGEST_OFFENSES & counted


# --------------------------------------------------------------------------
# Challenges


@pytest.mark.parametrize(
    ("configured", "order"),
    [(("SHA-256", "MD5"), ["SHA-256", "MD5"]), (("MD5", "SHA-256"), ["MD5", "SHA-256"]),
     (("md5", "sha-256"), ["MD5", "SHA-256"]), (("sha-256",), ["SHA-256"]),
     (("MD5", "md5"), ["MD5"])],
)
@pytest.mark.parametrize("proxy", [True, False])
@pytest.mark.parametrize("stale", [True, False])
def test_challenge_lines(configured: tuple[str, ...], order: list[str], proxy: bool,
                         stale: bool) -> None:
    # RFC 8760 §2.4: the server lists them in its preference, the configured order.
    auth = make_auth(algorithms=configured)
    lines = auth.challenge(SRC, T0, proxy=proxy, stale=stale)
    parsed = [challenge_params(line) for line in lines]
    assert [p["algorithm"] for _, p in parsed] == order
    assert list(auth.algorithms) == order
    for line, (name, params) in zip(lines, parsed):
        assert name == ("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        assert b'qop="auth"' in line
        assert params["qop"] == "auth"
        assert params["realm"] == REALM
        assert (b"stale=true" in line) is stale
        assert len(params["nonce"]) == 32


def test_default_challenge_first_is_md5() -> None:
    """What a client that reads only the first challenge and knows only MD5
    (baresip 1.0, sipsak) does: answer the first line with MD5. It works."""
    assert DEFAULT_ALGORITHMS == ("MD5", "SHA-256")
    auth = make_auth()
    first = auth.challenge(SRC, T0, proxy=False)[0]
    assert challenge_params(first)[1]["algorithm"] == "MD5"
    assert auth.verify("REGISTER", URI, answer(first, method="REGISTER"), SRC,
                       T0).status is AuthStatus.OK


def test_challenge_costs_no_memory() -> None:
    auth = make_auth()
    for i in range(1000):
        auth.challenge(f"203.0.113.{i % 256}", T0 + i, proxy=True)
    assert auth.nonce_entries == 0


def test_nonces_differ_by_time_and_address() -> None:
    auth = make_auth()
    a = auth.make_nonce(SRC, T0)
    assert a == auth.make_nonce(SRC, T0)
    assert a != auth.make_nonce(SRC, T0 + 0.001)
    assert a != auth.make_nonce(OTHER, T0)


def test_nonce_at_extreme_times() -> None:
    auth = make_auth()
    # A clock before zero is clamped to 0 (the same nonce twice: nc goes up);
    # a nonce time past 64 bits is clamped and seen as expired.
    for nc, now, status in ((1, 0.0, AuthStatus.OK), (2, -5.0, AuthStatus.OK),
                            (1, 1e30, AuthStatus.STALE)):
        line = line_for(auth, "SHA-256", now=now)
        assert auth.verify("INVITE", URI, answer(line, nc=nc), SRC, now).status is status
    nan = auth.challenge(SRC, float("nan"), proxy=True)
    assert all(b'qop="auth"' in line for line in nan)


# --------------------------------------------------------------------------
# The replay table's bound


def test_nonce_table_full_fails_closed() -> None:
    """The attacker fills the replay table, then replays an answer it saw
    earlier: the table never forgets a live nonce to make room, so the replay
    is refused; new nonces are asked again (stale) until room comes back."""
    auth = make_auth(max_nonce_entries=3, nonce_ttl=60.0)
    lines = [line_for(auth, "SHA-256", now=T0 + i) for i in range(5)]
    for i in range(3):
        assert auth.verify("INVITE", URI, answer(lines[i]), SRC, T0 + i).status is AuthStatus.OK
    for i in (3, 4):
        assert auth.verify("INVITE", URI, answer(lines[i]), SRC, T0 + i) == AuthResult(
            AuthStatus.NONCE_TABLE_FULL, ALICE)
    assert auth.nonce_entries == 3
    # Every answer verified before is still remembered: none is accepted twice.
    for i in range(3):
        assert auth.verify("INVITE", URI, answer(lines[i]), SRC, T0 + 5).status is (
            AuthStatus.REPLAY)
    # A known nonce's next count is still fine: its record is there.
    assert auth.verify("INVITE", URI, answer(lines[0], nc=2), SRC, T0 + 6).status is AuthStatus.OK
    # Once the oldest nonce has expired, its room goes to a new one.
    fresh = line_for(auth, "SHA-256", now=T0 + 60.5)
    assert auth.verify("INVITE", URI, answer(fresh), SRC, T0 + 60.5).status is AuthStatus.OK
    assert auth.nonce_entries == 3


def test_nonce_table_full_sweeps_an_expired_entry_behind_live_ones() -> None:
    # An old nonce verified late expires before the younger ones verified
    # earlier: a full table finds it wherever it is.
    auth = make_auth(max_nonce_entries=3, nonce_ttl=60.0)
    young = [line_for(auth, "SHA-256", now=T0 + 50 + i) for i in range(2)]
    old = line_for(auth, "SHA-256", now=T0)
    for line in young:
        assert auth.verify("INVITE", URI, answer(line), SRC, T0 + 52).status is AuthStatus.OK
    assert auth.verify("INVITE", URI, answer(old), SRC, T0 + 53).status is AuthStatus.OK
    newer = line_for(auth, "SHA-256", now=T0 + 61)
    assert auth.verify("INVITE", URI, answer(newer), SRC, T0 + 61).status is AuthStatus.OK
    assert auth.nonce_entries == 3
    for line in young:  # the live ones were kept
        assert auth.verify("INVITE", URI, answer(line), SRC, T0 + 62).status is AuthStatus.REPLAY


def test_nonce_table_drops_expired_entries() -> None:
    auth = make_auth(nonce_ttl=10.0)
    for i in range(4):
        line = line_for(auth, "SHA-256", now=T0 + i)
        assert auth.verify("INVITE", URI, answer(line), SRC, T0 + i).status is AuthStatus.OK
    assert auth.nonce_entries == 4
    later = line_for(auth, "SHA-256", now=T0 + 12.5)
    assert auth.verify("INVITE", URI, answer(later), SRC, T0 + 12.5).status is AuthStatus.OK
    # Nonces issued at T0, T0+1 and T0+2 have expired; T0+3 and the new one stay.
    assert auth.nonce_entries == 2


def test_nonce_table_bound_under_load() -> None:
    auth = make_auth(max_nonce_entries=100)
    statuses = []
    lines = [line_for(auth, "MD5", now=T0 + i / 1000) for i in range(250)]
    for i, line in enumerate(lines):
        statuses.append(auth.verify("INVITE", URI, answer(line), SRC, T0 + i / 1000).status)
    assert statuses == [AuthStatus.OK] * 100 + [AuthStatus.NONCE_TABLE_FULL] * 150
    assert auth.nonce_entries == 100
    # Whatever was admitted once is not admitted again.
    for line in lines:
        assert auth.verify("INVITE", URI, answer(line), SRC, T0 + 1).status is not AuthStatus.OK


# --------------------------------------------------------------------------
# Construction


def test_has_accounts() -> None:
    assert make_auth().has_accounts
    assert not DigestAuth([], secret=SECRET, realm=REALM).has_accounts


def test_account_factories() -> None:
    assert set(ALICE.ha1) == {"SHA-256", "MD5"}
    assert ALICE.ha1["MD5"] == ha1("MD5", "alice", REALM, "s3cret")
    assert set(BOB.ha1) == {"MD5"}
    with pytest.raises(ValueError):
        account_from_ha1("x", REALM, "g", None, None)
    with pytest.raises(ValueError):
        account_from_ha1("x", REALM, "g", "abc", None)
    with pytest.raises(ValueError):
        account_from_ha1("x", REALM, "g", None, "0" * 32)
    with pytest.raises(ValueError):
        account_from_ha1("x", REALM, "g", "g" * 32, None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b"short"},
        {"algorithms": ()},
        {"algorithms": ("SHA-256", "MD5-sess")},
        {"nonce_ttl": 0.0},
        {"max_nonce_entries": 0},
    ],
)
def test_bad_construction(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"secret": SECRET, "realm": REALM}
    args.update(kwargs)
    with pytest.raises(ValueError):
        DigestAuth([ALICE], **args)  # type: ignore[arg-type]


def test_duplicate_account() -> None:
    with pytest.raises(ValueError):
        make_auth(ALICE, account_from_password("alice", REALM, "other", "pw"))
    # The same username in another realm is another account.
    make_auth(ALICE, account_from_password("alice", "other-realm", "other", "pw"))


# --------------------------------------------------------------------------
# verify() never raises


@FUZZ
@given(st.binary(max_size=600), st.text(max_size=20), st.text(max_size=45))
def test_verify_any_bytes(creds: bytes, method: str, host: str) -> None:
    result = make_auth().verify(method, URI, creds, host, T0)
    assert result.status in (AuthStatus.MALFORMED, AuthStatus.BAD_NONCE)


_FIELD = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["auth", "auth-int", "00000001", "ffffffff", "MD5", "SHA-256", "sha-256",
                     "alice", "bob", REALM, "0" * 32, "0" * 64, ""]),
)
_KEYS = ["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce"]


@FUZZ
@given(st.dictionaries(st.sampled_from(_KEYS), st.one_of(st.none(), _FIELD), max_size=4),
       st.dictionaries(st.sampled_from(["opaque", "stale", "userhash", "username*", "x"]),
                       _FIELD, max_size=3),
       st.sampled_from(["SHA-256", "MD5"]), st.integers(0, 3),
       st.floats(allow_nan=True, allow_infinity=True),
       st.sampled_from([SRC, OTHER, "::ffff:" + SRC, "", "garbage"]))
def test_verify_mutated_answers(changes: dict[str, str | None], extra: dict[str, str],
                                algorithm: str, nc: int, later: float, host: str) -> None:
    """Start from a right answer and break it: reaches every refusal."""
    auth = make_auth(ALICE, BOB, max_nonce_entries=2)
    params = parse_credentials(answer(line_for(auth, algorithm), nc=nc))
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    params.update(extra)
    creds = "Digest " + ", ".join(f"{k}={q(v)}" for k, v in params.items())
    data = creds.encode("utf-8", "surrogatepass")
    for _ in range(2):
        result = auth.verify("INVITE", URI, data, host, T0 + later)
        assert isinstance(result.status, AuthStatus)
        assert (result.account is None) == (result.status in (
            AuthStatus.MALFORMED, AuthStatus.BAD_NONCE, AuthStatus.UNKNOWN_ACCOUNT,
            AuthStatus.URI_MISMATCH))
