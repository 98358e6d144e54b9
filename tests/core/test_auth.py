"""The digest verifier: challenges, a client computing answers to them, and
every way an answer can be turned down."""

from __future__ import annotations

import ipaddress
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbc.core.auth import (
    FUTURE_SKEW,
    Account,
    AuthResult,
    AuthStatus,
    DigestAuth,
    account_from_ha1,
    account_from_password,
)
from sbc.sip.digest import expected_response, ha1, parse_credentials

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
    result = auth.verify(method, answer(line, method=method), SRC, T0 + 1)
    assert result == AuthResult(AuthStatus.OK, ALICE)
    assert result.account is not None and result.account.gateway == "gw-alice"


def test_ha1_account_round_trip() -> None:
    auth = make_auth()
    line = line_for(auth, "MD5")
    result = auth.verify("INVITE", answer(line, "bob", "hunter2"), SRC, T0)
    assert result.status is AuthStatus.OK
    assert result.account is BOB


def test_ha1_account_without_that_algorithm() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    result = auth.verify("INVITE", answer(line, "bob", "hunter2"), SRC, T0)
    assert result == AuthResult(AuthStatus.BAD_RESPONSE, BOB)


def test_ha1_sha256_account() -> None:
    carol = account_from_ha1("carol", REALM, "gw-carol", None,
                             ha1("SHA-256", "carol", REALM, "pw").upper())
    auth = make_auth(carol)
    ok = auth.verify("INVITE", answer(line_for(auth, "SHA-256"), "carol", "pw"), SRC, T0)
    assert ok.status is AuthStatus.OK
    md5 = auth.verify("INVITE", answer(line_for(auth, "MD5"), "carol", "pw"), SRC, T0)
    assert md5.status is AuthStatus.BAD_RESPONSE


def test_missing_algorithm_means_md5() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "MD5"), omit=("algorithm",))
    assert auth.verify("INVITE", creds, SRC, T0).status is AuthStatus.OK


def test_algorithm_name_is_case_insensitive_and_response_hex_too() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), raw={"algorithm": "sha-256"})
    assert auth.verify("INVITE", creds, SRC, T0).status is AuthStatus.OK
    params = parse_credentials(answer(line_for(auth, "MD5"), nc=2))
    upper = answer(line_for(auth, "MD5"), nc=2, raw={"response": q(params["response"].upper())})
    assert auth.verify("INVITE", upper, SRC, T0).status is AuthStatus.OK


def test_uri_need_not_match_the_request_uri() -> None:
    # verify() is never told the Request-URI: the digest binds the uri
    # parameter the client hashed, whatever a NAT or proxy did to the start line.
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), uri="sip:10.0.0.5:5060")
    assert auth.verify("INVITE", creds, SRC, T0).status is AuthStatus.OK


def test_method_is_part_of_the_digest() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), method="INVITE")
    assert auth.verify("BYE", creds, SRC, T0).status is AuthStatus.BAD_RESPONSE


# --------------------------------------------------------------------------
# Refusals


def test_no_credentials() -> None:
    assert make_auth().verify("INVITE", None, SRC, T0) == AuthResult(AuthStatus.NO_CREDENTIALS)


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_wrong_password(algorithm: str) -> None:
    auth = make_auth()
    creds = answer(line_for(auth, algorithm), password="guess")
    assert auth.verify("INVITE", creds, SRC, T0) == AuthResult(AuthStatus.BAD_RESPONSE, ALICE)


def test_unknown_user_and_wrong_realm() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    assert auth.verify("INVITE", answer(line, "mallory"), SRC, T0).status is (
        AuthStatus.UNKNOWN_ACCOUNT)
    other_realm = answer(line, realm="elsewhere")
    assert auth.verify("INVITE", other_realm, SRC, T0).status is AuthStatus.UNKNOWN_ACCOUNT


def test_nonce_from_another_address() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256", host=OTHER))
    assert auth.verify("INVITE", creds, SRC, T0) == AuthResult(AuthStatus.BAD_NONCE)


def test_nonce_bound_to_address_not_spelling() -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256", host="::ffff:" + SRC))
    assert auth.verify("INVITE", creds, SRC, T0).status is AuthStatus.OK
    v6 = answer(line_for(auth, "SHA-256", host="2001:DB8:0:0::1"))
    assert auth.verify("INVITE", v6, "2001:db8::1", T0).status is AuthStatus.OK


def _flip(nonce: str, i: int) -> str:
    c = "B" if nonce[i] != "B" else "C"
    return nonce[:i] + c + nonce[i + 1 :]


@pytest.mark.parametrize("index", [0, 5, 10, 11, 20, 31])
def test_tampered_nonce(index: int) -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    nonce = challenge_params(line)[1]["nonce"]
    creds = answer(line, nonce=_flip(nonce, index))
    assert auth.verify("INVITE", creds, SRC, T0).status is AuthStatus.BAD_NONCE


@pytest.mark.parametrize(
    "nonce",
    ["", "x", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "A" * 32, "A" * 31 + "=",
     "A" * 33, "A" * 31 + "+", "A" * 31 + "/", "\u00e9" * 32],
)
def test_foreign_nonce(nonce: str) -> None:
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), nonce=nonce)
    assert auth.verify("INVITE", creds, SRC, T0).status is AuthStatus.BAD_NONCE


def test_nonce_from_another_secret() -> None:
    other = DigestAuth([ALICE], secret=b"x" * 32, realm=REALM)
    creds = answer(line_for(other, "SHA-256"))
    assert make_auth().verify("INVITE", creds, SRC, T0).status is AuthStatus.BAD_NONCE


def test_expired_nonce() -> None:
    auth = make_auth(nonce_ttl=60.0)
    line = line_for(auth, "SHA-256")
    assert auth.verify("INVITE", answer(line), SRC, T0 + 60.0).status is AuthStatus.OK
    right = answer(line, nc=2)
    assert auth.verify("INVITE", right, SRC, T0 + 60.01) == AuthResult(AuthStatus.STALE, ALICE)
    wrong = answer(line, password="guess", nc=3)
    assert auth.verify("INVITE", wrong, SRC, T0 + 60.01).status is AuthStatus.BAD_RESPONSE


def test_nonce_from_the_future() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256", now=T0 + FUTURE_SKEW + 1)
    assert auth.verify("INVITE", answer(line), SRC, T0).status is AuthStatus.STALE
    near = line_for(auth, "SHA-256", now=T0 + FUTURE_SKEW - 1)
    assert auth.verify("INVITE", answer(near), SRC, T0).status is AuthStatus.OK


def test_stale_answer_then_fresh_challenge() -> None:
    auth = make_auth(nonce_ttl=10.0)
    old = line_for(auth, "MD5")
    assert auth.verify("INVITE", answer(old), SRC, T0 + 11).status is AuthStatus.STALE
    lines = auth.challenge(SRC, T0 + 11, proxy=True, stale=True)
    assert all(b"stale=true" in line for line in lines)
    fresh = next(line for line in lines if b"algorithm=MD5" in line)
    assert auth.verify("INVITE", answer(fresh), SRC, T0 + 12).status is AuthStatus.OK


def test_nc_replay() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    assert auth.verify("INVITE", answer(line, nc=1), SRC, T0).status is AuthStatus.OK
    assert auth.verify("INVITE", answer(line, nc=1), SRC, T0 + 1) == AuthResult(
        AuthStatus.REPLAY, ALICE)
    assert auth.verify("INVITE", answer(line, nc=5), SRC, T0 + 2).status is AuthStatus.OK
    assert auth.verify("INVITE", answer(line, nc=4), SRC, T0 + 3).status is AuthStatus.REPLAY
    assert auth.verify("INVITE", answer(line, nc=5), SRC, T0 + 4).status is AuthStatus.REPLAY
    assert auth.verify("INVITE", answer(line, nc=6), SRC, T0 + 5).status is AuthStatus.OK


def test_failed_answers_are_not_counted() -> None:
    auth = make_auth()
    line = line_for(auth, "SHA-256")
    bad = answer(line, password="guess", nc=9)
    assert auth.verify("INVITE", bad, SRC, T0).status is AuthStatus.BAD_RESPONSE
    assert auth.nonce_entries == 0
    assert auth.verify("INVITE", answer(line, nc=1), SRC, T0).status is AuthStatus.OK
    assert auth.nonce_entries == 1


def test_replay_memory_is_per_account() -> None:
    auth = make_auth()
    line = line_for(auth, "MD5")
    assert auth.verify("INVITE", answer(line), SRC, T0).status is AuthStatus.OK
    bob = answer(line, "bob", "hunter2")
    assert auth.verify("INVITE", bob, SRC, T0).status is AuthStatus.OK
    assert auth.verify("INVITE", bob, SRC, T0).status is AuthStatus.REPLAY


def test_missing_qop_is_refused() -> None:
    # The RFC 2069 form (no qop, nc or cnonce) computed correctly is still refused.
    auth = make_auth()
    creds = answer(line_for(auth, "SHA-256"), qop=None, omit=("nc", "cnonce"))
    assert "qop" not in parse_credentials(creds)
    assert auth.verify("INVITE", creds, SRC, T0) == AuthResult(AuthStatus.BAD_RESPONSE, ALICE)


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
        (("uri",), {}),
        ((), {"uri": '""'}),
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
    assert auth.verify("INVITE", creds, SRC, T0) == AuthResult(AuthStatus.BAD_RESPONSE, ALICE)


def test_algorithm_not_configured() -> None:
    full = make_auth()
    only_sha = make_auth(algorithms=("SHA-256",))
    lines = only_sha.challenge(SRC, T0, proxy=False)
    assert len(lines) == 1 and b"algorithm=SHA-256" in lines[0]
    # Same secret, so the MD5 challenge's nonce is valid for both.
    creds = answer(line_for(full, "MD5"))
    assert only_sha.verify("INVITE", creds, SRC, T0).status is AuthStatus.BAD_RESPONSE


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
    assert make_auth().verify("INVITE", creds, SRC, T0) == AuthResult(AuthStatus.MALFORMED)


# --------------------------------------------------------------------------
# Source restriction


def test_from_cidrs() -> None:
    nets = (ipaddress.ip_network("198.51.100.0/30"), ipaddress.ip_network("2001:db8::/32"))
    dave = account_from_password("dave", REALM, "gw-dave", "pw", from_cidrs=nets)
    auth = make_auth(dave)

    def try_from(host: str) -> AuthStatus:
        return auth.verify("INVITE", answer(line_for(auth, "MD5", host=host), "dave", "pw"),
                           host, T0).status

    assert try_from("198.51.100.2") is AuthStatus.OK
    assert try_from("::ffff:198.51.100.3") is AuthStatus.OK
    assert try_from("2001:db8::5") is AuthStatus.OK
    assert try_from(SRC) is AuthStatus.SOURCE_NOT_ALLOWED
    assert try_from("2001:db9::5") is AuthStatus.SOURCE_NOT_ALLOWED
    assert try_from("not-an-address") is AuthStatus.SOURCE_NOT_ALLOWED
    result = auth.verify("INVITE", answer(line_for(auth, "MD5"), "dave", "pw"), SRC, T0)
    assert result == AuthResult(AuthStatus.SOURCE_NOT_ALLOWED, dave)


# --------------------------------------------------------------------------
# Challenges


@pytest.mark.parametrize("configured", [("SHA-256", "MD5"), ("MD5", "SHA-256"), ("md5", "sha-256")])
@pytest.mark.parametrize("proxy", [True, False])
@pytest.mark.parametrize("stale", [True, False])
def test_challenge_lines(configured: tuple[str, ...], proxy: bool, stale: bool) -> None:
    auth = make_auth(algorithms=configured)
    lines = auth.challenge(SRC, T0, proxy=proxy, stale=stale)
    parsed = [challenge_params(line) for line in lines]
    assert [p["algorithm"] for _, p in parsed] == ["SHA-256", "MD5"]
    for line, (name, params) in zip(lines, parsed):
        assert name == ("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        assert b'qop="auth"' in line
        assert params["qop"] == "auth"
        assert params["realm"] == REALM
        assert (b"stale=true" in line) is stale
        assert len(params["nonce"]) == 32


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
        assert auth.verify("INVITE", answer(line, nc=nc), SRC, now).status is status
    nan = auth.challenge(SRC, float("nan"), proxy=True)
    assert all(b'qop="auth"' in line for line in nan)


# --------------------------------------------------------------------------
# The replay table's bound


def test_nonce_table_bound() -> None:
    auth = make_auth(max_nonce_entries=3)
    lines = [line_for(auth, "SHA-256", now=T0 + i) for i in range(5)]
    for i, line in enumerate(lines):
        assert auth.verify("INVITE", answer(line), SRC, T0 + i).status is AuthStatus.OK
        assert auth.nonce_entries == min(i + 1, 3)
    # The newest entries are still remembered.
    for i in (2, 3, 4):
        assert auth.verify("INVITE", answer(lines[i]), SRC, T0 + 5).status is AuthStatus.REPLAY
    assert auth.nonce_entries == 3


def test_nonce_table_drops_expired_entries() -> None:
    auth = make_auth(nonce_ttl=10.0)
    for i in range(4):
        line = line_for(auth, "SHA-256", now=T0 + i)
        assert auth.verify("INVITE", answer(line), SRC, T0 + i).status is AuthStatus.OK
    assert auth.nonce_entries == 4
    later = line_for(auth, "SHA-256", now=T0 + 12.5)
    assert auth.verify("INVITE", answer(later), SRC, T0 + 12.5).status is AuthStatus.OK
    # Nonces issued at T0, T0+1 and T0+2 have expired; T0+3 and the new one stay.
    assert auth.nonce_entries == 2


def test_nonce_table_default_bound_under_load() -> None:
    auth = make_auth(max_nonce_entries=100)
    for i in range(250):
        line = line_for(auth, "MD5", now=T0 + i / 1000)
        assert auth.verify("INVITE", answer(line), SRC, T0 + i / 1000).status is AuthStatus.OK
    assert auth.nonce_entries == 100


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
    result = make_auth().verify(method, creds, host, T0)
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
        result = auth.verify("INVITE", data, host, T0 + later)
        assert isinstance(result.status, AuthStatus)
        assert (result.account is None) == (result.status in (
            AuthStatus.MALFORMED, AuthStatus.BAD_NONCE, AuthStatus.UNKNOWN_ACCOUNT))
