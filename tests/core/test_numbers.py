"""The called number of a Request-URI (sbc.core.policy.numbers): a table of the
spellings a destination list must see through, and properties over every
spelling: separators never matter, a blocked prefix is blocked however the
number is written, and nothing a list cannot read is ever admitted."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sbc.core.policy.limits import BLOCKED, NOT_ALLOWED, UNREADABLE, CallPolicy, GatewayPolicy, PrefixSet
from sbc.core.policy.numbers import called, dialled, longest_first, matched, normalise

# As in test_fuzz.py: keep hypothesis's patch writer from turning a warning
# into an error that would hide a falsifying example.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass

PROPS = settings(max_examples=300, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])

TECH = longest_first(("9999#", "12*"))


# --------------------------------------------------------------------------
# Tables


@pytest.mark.parametrize(("uri", "readings"), [
    # The spellings of issue 14 item 7, all of them 900123.
    (b"tel:900123", ("900123",)),
    (b"tel:+900123", ("900123",)),
    (b"sip:(900)123@127.0.0.1", ("900123",)),
    (b"sip:++900123@127.0.0.1", ("900123",)),
    # ... and the ones that passed before.
    (b"sip:900123@127.0.0.1:5060", ("900123",)),
    (b"sip:00900123@127.0.0.1", ("900123",)),
    (b"sip:+900123@127.0.0.1", ("900123",)),
    (b"sip:+9-00-123@127.0.0.1", ("900123",)),
    (b"sip:%39%30%30123@127.0.0.1", ("900123",)),
    (b"sip:9999%23900123@127.0.0.1", ("900123",)),  # the tech prefix 9999#, escaped
    (b"sip:9999#900123@127.0.0.1", ("900123",)),
    # Schemes and their case.
    (b"sips:+900123@127.0.0.1", ("900123",)),
    (b"SIP:900123@127.0.0.1", ("900123",)),
    (b"TEL:+900123", ("900123",)),
    # RFC 3966 visual separators, anywhere.
    (b"tel:+9.0.0-1(2)3", ("900123",)),
    (b"tel:(+)900123", ("900123",)),
    (b"sip:%2B900%20123@127.0.0.1", ("900123",)),  # escaped '+' and space
    # Parameters: of the number, of the URI, a password.
    (b"sip:+900123@127.0.0.1;user=phone", ("900123",)),
    (b"sip:+900123;isub=12;ext=4@127.0.0.1;user=phone", ("900123",)),
    (b"tel:+900123;ext=55;isub=7", ("900123",)),
    (b"sip:900123:secret@127.0.0.1", ("900123",)),
    (b"sip:900123@127.0.0.1;transport=tcp?subject=x", ("900123",)),
    # phone-context (RFC 3966 §5.1.5): a global prefix gives a second reading.
    (b"tel:123;phone-context=+900", ("123", "900123")),
    (b"tel:123;Phone-Context=+9-00", ("123", "900123")),
    (b"sip:123;phone-context=+900@127.0.0.1;user=phone", ("123", "900123")),
    (b"tel:123;phone-context=example.com", ("123",)),
    (b"tel:+44123;phone-context=+900", ("44123",)),  # a global number needs no context
    # Tech prefixes: the longest one that fits.
    (b"sip:12*900123@127.0.0.1", ("900123",)),
    (b"sip:9999#00900123@127.0.0.1", ("900123",)),
    # A national number keeps its 0.
    (b"sip:0900123@127.0.0.1", ("0900123",)),
])
def test_spellings(uri: bytes, readings: tuple[str, ...]) -> None:
    assert called(uri, TECH) == readings


@pytest.mark.parametrize("uri", [
    b"sip:127.0.0.1",  # no user part
    b"sip:@127.0.0.1",
    b"sip:;user=phone@127.0.0.1",
    b"sip:alice@127.0.0.1",  # letters where digits are expected
    b"sip:900abc@127.0.0.1",
    b"sip:900%3B123@127.0.0.1",  # an escaped ';' is no separator
    b"sip:%39%3@127.0.0.1",  # a broken escape
    b"sip:%2539%2530%2530@127.0.0.1",  # escaped twice: '%39%30%30' is not digits
    b"sip:%D9%A9%D9%A0%D9%A0123@127.0.0.1",  # Arabic-Indic digits: not ASCII
    b"sip:\xff900@127.0.0.1",
    b"sip:-.()@127.0.0.1",  # separators only: an empty number
    b"sip:+@127.0.0.1",
    b"sip:00@127.0.0.1",
    b"sip:9999#@127.0.0.1",  # a tech prefix and nothing after it
    b"sip:+00900123@127.0.0.1",  # two international prefixes: which one?
    b"sip:000900123@127.0.0.1",
    b"sip:+0900123@127.0.0.1",  # no country code starts with 0
    b"sip:00+900123@127.0.0.1",
    b"sip:+9999#900123@127.0.0.1",  # a tech prefix inside the international form
    b"sip:77#900123@127.0.0.1",  # a tech prefix this gateway does not have
    b"sip:*67900123@127.0.0.1",
    b"tel:9001A3",  # tel allows hex digits; a list does not
    b"tel:",
    b"tel:;phone-context=+900",
    b"tel:123;phone-context=",  # a context that names nothing
    b"tel:123;phone-context=+abc",  # a second reading that is no number
    b"sip:900123@[::1",  # unparsable
    b"sip:900123@127.0.0.1:99999",
    b"sip:900123@",
    b"urn:service:sos",  # another scheme
    b"im:900123@127.0.0.1",
    b"900123",
    b"",
])
def test_unreadable(uri: bytes) -> None:
    assert called(uri, TECH) == ()


def test_dialled_keeps_the_number_as_written() -> None:
    assert dialled(b"sip:+9-00%20123;isub=1:pw@h") == ("+9-00 123",)
    assert dialled(b"tel:123;phone-context=+900") == ("123", "+900123")
    assert dialled(b"sip:h") == ()


def test_normalise_compares_prefixes_as_numbers() -> None:
    for spelling in ("+44", "0044", "44", "++44", "+4-4"):
        assert normalise(spelling) == "44"
    assert normalise("9999#008613800", ("12*", "9999#")) == "8613800"
    assert normalise("0900") == "0900"


def test_longest_tech_prefix_wins() -> None:
    assert longest_first(("9", "", "999#", "99")) == ("999#", "99", "9")
    assert matched("999#900", longest_first(("9", "999#"))) == "900"


# --------------------------------------------------------------------------
# Properties

SEPARATORS = st.sampled_from("-.() ")
DIGITS = st.text("0123456789", min_size=0, max_size=12)
# A prefix as config allows it; what follows it, any digits.
PREFIX = st.builds(lambda first, rest: first + rest, st.sampled_from("123456789"),
                   st.text("0123456789", max_size=5))
INTERNATIONAL = st.sampled_from(["", "+", "++", "00"])


@st.composite
def with_separators(draw: st.DrawFn, text: str) -> str:
    """`text` with visual separators inserted at any places."""
    out = []
    for ch in text:
        out.extend(draw(st.lists(SEPARATORS, max_size=2)))
        out.append(ch)
    out.extend(draw(st.lists(SEPARATORS, max_size=2)))
    return "".join(out)


@st.composite
def escaped(draw: st.DrawFn, text: str) -> str:
    """`text` with any of its characters written as %XX."""
    return "".join(f"%{ord(ch):02X}" if draw(st.booleans()) else ch for ch in text)


@st.composite
def request_uri(draw: st.DrawFn, number: str) -> bytes:
    """A Request-URI dialling `number`, in any scheme and with any harmless parameters."""
    scheme = draw(st.sampled_from(["sip", "sips", "tel", "SIP", "Tel"]))
    user = draw(escaped(number)) if draw(st.booleans()) else number
    user_params = draw(st.sampled_from(["", ";isub=12", ";ext=7", ";postd=pp22"]))
    if scheme.lower() == "tel":
        return f"{scheme}:{user}{user_params}".encode()
    password = draw(st.sampled_from(["", ":secret"]))
    host = draw(st.sampled_from(["127.0.0.1", "vos.example:5060", "[2001:db8::1]"]))
    params = draw(st.sampled_from(["", ";user=phone", ";transport=tcp;user=phone"]))
    headers = draw(st.sampled_from(["", "?subject=x"]))
    return f"{scheme}:{user}{user_params}{password}@{host}{params}{headers}".encode()


def spellings(digits: str) -> st.SearchStrategy[str]:
    """`digits` (an international number) written any way it can be dialled."""
    return st.tuples(st.sampled_from(["", *TECH]), INTERNATIONAL).flatmap(
        lambda t: with_separators(t[0] + t[1] + digits))


NUMBER_TEXT = st.text("0123456789+#*-.() ", max_size=16)


@PROPS
@given(st.data(), NUMBER_TEXT)
def test_separators_anywhere_never_change_the_reading(data: st.DataObject, number: str) -> None:
    spread = data.draw(with_separators(number))
    assert matched(spread, TECH) == matched(number, TECH)
    assume(all(ch not in number for ch in "#"))  # '#' has no place unescaped in a sip user part
    assert called(f"sip:{spread}@h".encode(), TECH) == called(f"sip:{number}@h".encode(), TECH)


@PROPS
@given(st.data(), PREFIX, DIGITS)
def test_a_blocked_prefix_is_blocked_in_any_spelling(data: st.DataObject, prefix: str,
                                                     rest: str) -> None:
    number = data.draw(spellings(prefix + rest))
    uri = data.draw(request_uri(number))
    assert called(uri, TECH) == (prefix + rest,)
    for blocked in (prefix, "+" + prefix, "00" + prefix):  # the prefix as config may write it
        policy = CallPolicy({"gw": GatewayPolicy(tech=TECH)}, blocked=[blocked])
        assert policy.check("gw", dialled(uri), 0, 0, 0.0) is BLOCKED
        per_gateway = CallPolicy({"gw": GatewayPolicy(blocked=PrefixSet([blocked]), tech=TECH)})
        assert per_gateway.check("gw", dialled(uri), 0, 0, 0.0) is BLOCKED


@PROPS
@given(st.data(), PREFIX, PREFIX, st.sampled_from(["", "+", "00"]))
def test_a_local_number_in_a_blocked_context_is_blocked(data: st.DataObject, prefix: str,
                                                        local: str, plus: str) -> None:
    # tel:123;phone-context=+900 is 900123 to a next hop that reads the context,
    # 123 to one that does not: blocked on either reading.
    uri = (f"tel:{data.draw(with_separators(local))}"
           f";phone-context=+{data.draw(with_separators(prefix))}").encode()
    assert called(uri) == (local, prefix + local)
    for blocked in (plus + prefix, local):
        policy = CallPolicy({"gw": GatewayPolicy()}, blocked=[blocked])
        assert policy.check("gw", dialled(uri), 0, 0, 0.0) is BLOCKED


@PROPS
@given(st.binary(max_size=60) | st.text("sipte:l+0123456789%;=@-.()#*?abcx[]", max_size=40)
       .map(str.encode), st.sampled_from(["86", "1", "0"]))
def test_nothing_unread_is_admitted(uri: bytes, allowed: str) -> None:
    """Whatever the URI, reading it never raises; under a list every reading
    admitted is plain digits in the international form and allowed."""
    readings = called(uri, TECH)
    policy = CallPolicy({"gw": GatewayPolicy(allowed=PrefixSet([allowed]), tech=TECH)})
    verdict = policy.check("gw", dialled(uri), 0, 0, 0.0)
    if not readings:
        assert verdict is UNREADABLE
    for r in readings:
        assert r.isascii() and r.isdigit() and not r.startswith(("00", "+"))
        assert matched(r) == r  # the reading of a reading is itself
    if verdict is None:
        assert readings and all(r.startswith(allowed) for r in readings)
    else:
        assert verdict in (UNREADABLE, NOT_ALLOWED)


@PROPS
@given(st.sampled_from(["", "+", "00"]), st.text("0123456789", min_size=1, max_size=6), DIGITS)
def test_prefixes_and_numbers_are_normalised_alike(intl: str, prefix: str, rest: str) -> None:
    """A number written with a configured prefix as its start is matched by it,
    or is unreadable (and so refused): never read past it."""
    assume(normalise(intl + prefix))  # config refuses "00" or "+": they would match nothing
    # A national prefix "0" followed by "0" spells the international "00":
    # "001…" is +1…, which a block on national "0" is not about.
    assume(intl or prefix.startswith("00") or not (prefix + rest).startswith("00"))
    reading = matched(intl + prefix + rest)
    if reading is not None:
        assert PrefixSet([intl + prefix]).match(reading) is not None
