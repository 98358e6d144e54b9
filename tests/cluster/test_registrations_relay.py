"""Two engines wired together in memory, as two nodes of a cluster: VOS3000
calls a phone registered at node A through node B, which relays the INVITE
(and its CANCEL, ACK, and in-dialog requests it holds no dialog for) one hop
to A's private address; answers come back through B. And what an attacker
cannot do: reach a node's private side from anywhere but a live node or
VOS3000, have a relayed request name anyone but a VOS3000, get a forged or
redirected answer relayed, or send a relay round in circles."""

from __future__ import annotations

from sbc.cluster.registrations import NodeRecord, RegEvent, RegOp, RemoteBindings
from sbc.core.engine import Engine
from sbc.core.identify.registrar import Binding, Registrar
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Source, Verdict
from sbc.sip import parse_message

INST = "0123456789abcdef"
VOS = ("10.0.0.9", 5070)
A_PRIV, B_PRIV = ("10.0.0.1", 5080), ("10.0.0.2", 5080)
A_PUB, B_PUB = ("203.0.113.1", 5060), ("203.0.113.2", 5060)
PHONE = ("198.51.100.7", 5062)
STRANGER = ("10.0.0.66", 5080)
FROM_VOS = Source(PRIVATE, *VOS)
CONTACT = b"sip:1001@192.168.1.20:5062"


def node(name: str, priv: tuple[str, int], pub: tuple[str, int]) -> tuple[Engine, RemoteBindings]:
    settings = ProxySettings(public_host=pub[0], public_port=pub[1], private_host=priv[0],
                             private_port=priv[1], backend_host=VOS[0], backend_port=VOS[1])
    eng = Engine(settings, secret=name.encode() * 16, registrar=Registrar())
    nodes = RemoteBindings(name, own=frozenset([priv, pub]))
    eng.ctx.nodes = nodes
    return eng, nodes


def cluster() -> tuple[Engine, Engine, RemoteBindings]:
    """Node A holds the phone's binding; each node has heard the other."""
    a, a_nodes = node("a", A_PRIV, A_PUB)
    b, b_nodes = node("b", B_PRIV, B_PUB)
    assert a.registrar is not None
    a.registrar.load([Binding("1001", CONTACT, (PUBLIC_UDP, *PHONE), 600.0, b"r", 1, "phones")],
                     0.0)
    a_nodes.node_seen(NodeRecord("b", INST, *B_PRIV), 0.0)
    b_nodes.node_seen(NodeRecord("a", INST, *A_PRIV), 0.0)
    b_nodes.apply(RegEvent(RegOp.BIND, "1001", "a", INST, 1000.0, 1600.0), 0.0, 1000.0)
    return a, b, b_nodes


def request(method: str, call_id: str = "in1", to_tag: str = "", route: str = "",
            uri: str = "sip:1001@10.0.0.2:5080", cseq: int = 1) -> bytes:
    return (f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {VOS[0]}:{VOS[1]};branch=z9hG4bKv{call_id}{cseq}\r\n"
            f"{route}Max-Forwards: 70\r\nFrom: <sip:555@10.0.0.9>;tag=v\r\n"
            f"To: <sip:1001@10.0.0.2>{';tag=' + to_tag if to_tag else ''}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:vos@10.0.0.9:5070>\r\nContent-Length: 0\r\n\r\n").encode()


def answer(req: bytes, status: int, to_tag: str = "p", contact: bool = True) -> bytes:
    msg = parse_message(req)
    lines = [f"SIP/2.0 {status} X".encode()]
    for name, raw in msg.headers:
        if name == "to" and b"tag=" not in raw:
            raw += b";tag=" + to_tag.encode()
        if name in ("via", "from", "to", "call-id", "cseq", "record-route"):
            lines.append(raw)
    if contact:
        lines.append(b"Contact: <" + CONTACT + b">")
    return b"\r\n".join(lines) + b"\r\nContent-Length: 0\r\n\r\n"


def one(v: Verdict) -> tuple[int, tuple[str, int], bytes]:
    assert v.kind in ("forward", "reply"), v
    (send,) = v.sends
    return send


def vias(data: bytes) -> list[bytes]:
    return [raw for name, raw in parse_message(data).headers if name == "via"]


def test_vos3000_calls_a_phone_registered_at_another_node_through_this_one() -> None:
    a, b, b_nodes = cluster()
    # B holds no binding of 1001: one hop to A's private address, no Record-Route of B's
    ch, to, relayed = one(b.receive(request("INVITE"), FROM_VOS, 1.0))
    assert (ch, to) == (PRIVATE, A_PRIV)
    top, under = vias(relayed)[:2]
    assert top.startswith(b"Via: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKsbcrl")
    assert b"received=10.0.0.9" in under and b"Record-Route" not in relayed
    assert b_nodes.counts["routed"] == 1
    # A takes it as from VOS3000: to the phone, record-routed through A
    ch, to, invite = one(a.receive(relayed, Source(PRIVATE, *B_PRIV), 1.01))
    assert (ch, to) == (PUBLIC_UDP, PHONE)
    assert invite.startswith(b"INVITE " + CONTACT) and b"Record-Route: <sip:10.0.0.1:5080" in invite
    dlg = a.dialogs.get(b"in1", b"v")
    assert dlg is not None and dlg.backend == VOS and dlg.egress == PRIVATE
    # the phone rings and answers: through A, through B, to VOS3000
    for status in (180, 200):
        ch, to, back = one(a.receive(answer(invite, status), Source(PUBLIC_UDP, *PHONE), 1.1))
        assert (ch, to) == (PRIVATE, B_PRIV)
        ch, to, final = one(b.receive(back, Source(PRIVATE, *A_PRIV), 1.11))
        assert (ch, to) == (PRIVATE, VOS) and final.startswith(b"SIP/2.0 %d" % status)
        assert [v[:30] for v in vias(final)] == [b"Via: SIP/2.0/UDP 10.0.0.9:5070"]
    assert a.dialogs.active("phones") == 1 and len(b.dialogs) == 0
    # VOS3000 follows A's Record-Route: the ACK goes straight to A
    route = "Route: <sip:10.0.0.1:5080;lr;r2=on>, <sip:203.0.113.1:5060;lr;r2=on>\r\n"
    ack = request("ACK", to_tag="p", route=route, uri=CONTACT.decode())
    assert one(a.receive(ack, FROM_VOS, 1.2))[1] == PHONE
    # a VOS3000 that sends the BYE to B all the same: B relays it by its Route
    bye = request("BYE", to_tag="p", route=route, uri=CONTACT.decode(), cseq=2)
    ch, to, relayed_bye = one(b.receive(bye, FROM_VOS, 2.0))
    assert (ch, to) == (PRIVATE, A_PRIV)
    ch, to, out = one(a.receive(relayed_bye, Source(PRIVATE, *B_PRIV), 2.01))
    assert to == PHONE and a.dialogs.active("phones") == 0
    ch, to, ok = one(a.receive(answer(out, 200), Source(PUBLIC_UDP, *PHONE), 2.1))
    assert one(b.receive(ok, Source(PRIVATE, *A_PRIV), 2.11))[1] == VOS


def test_cancel_and_the_non_2xx_ack_follow_the_invite_to_the_same_node() -> None:
    a, b, _ = cluster()
    _, _, relayed = one(b.receive(request("INVITE"), FROM_VOS, 1.0))
    _, _, invite = one(a.receive(relayed, Source(PRIVATE, *B_PRIV), 1.0))
    ch, to, cancel = one(b.receive(request("CANCEL"), FROM_VOS, 1.5))
    assert to == A_PRIV and vias(cancel)[0] == vias(relayed)[0]  # the INVITE's branch (§16.11)
    _, to, out = one(a.receive(cancel, Source(PRIVATE, *B_PRIV), 1.5))
    assert to == PHONE and out.startswith(b"CANCEL ")
    _, _, busy = one(a.receive(answer(invite, 487), Source(PUBLIC_UDP, *PHONE), 1.6))
    assert one(b.receive(busy, Source(PRIVATE, *A_PRIV), 1.6))[1] == VOS
    _, to, ack = one(b.receive(request("ACK", to_tag="p"), FROM_VOS, 1.7))
    assert to == A_PRIV and one(a.receive(ack, Source(PRIVATE, *B_PRIV), 1.7))[1] == PHONE


def test_only_live_nodes_and_vos3000_reach_the_private_side() -> None:
    a, b, _ = cluster()
    _, _, relayed = one(b.receive(request("INVITE"), FROM_VOS, 1.0))
    # the same bytes from an address that is no live node (nor VOS3000)
    v = a.receive(relayed, Source(PRIVATE, *STRANGER), 1.0)
    assert v.kind == "drop" and v.reason == "not_backend"  # type: ignore[union-attr]
    # B's port, another port: not B
    v = a.receive(relayed, Source(PRIVATE, B_PRIV[0], 5999), 1.0)
    assert v.kind == "drop" and v.reason == "not_backend"  # type: ignore[union-attr]
    # a live node relaying what no VOS3000 sent: the Via under its own names a stranger
    forged = relayed.replace(b"received=10.0.0.9", b"received=10.0.0.66")
    v = a.receive(forged, Source(PRIVATE, *B_PRIV), 1.0)
    assert v.kind == "drop" and v.reason == "relay_not_from_backend"  # type: ignore[union-attr]
    assert len(a.dialogs) == 0
    # B's heartbeat is not heard again: B is no longer a node to A
    v = a.receive(relayed, Source(PRIVATE, *B_PRIV), 30.0)
    assert v.kind == "drop" and v.reason == "not_backend"  # type: ignore[union-attr]


def test_forged_and_redirected_answers_are_not_relayed() -> None:
    a, b, _ = cluster()
    _, _, relayed = one(b.receive(request("INVITE"), FROM_VOS, 1.0))
    _, _, invite = one(a.receive(relayed, Source(PRIVATE, *B_PRIV), 1.0))
    _, _, back = one(a.receive(answer(invite, 200), Source(PUBLIC_UDP, *PHONE), 1.1))
    # from VOS3000's own address (no node), with B's relay branch: not signed for it
    v = b.receive(back, FROM_VOS, 1.2)
    assert v.kind == "drop" and v.reason == "response_not_ours"  # type: ignore[union-attr]
    # from A, but pointed at another address than the VOS3000 the branch was signed for
    moved = back.replace(b"received=10.0.0.9", b"received=10.0.0.66")
    v = b.receive(moved, Source(PRIVATE, *A_PRIV), 1.2)
    assert v.kind == "drop" and v.reason == "response_not_to_backend"  # type: ignore[union-attr]
    # a made-up relay branch from A
    top = vias(back)[0]
    made_up = back.replace(top, top[:top.index(b"branch=") + 7] + b"z9hG4bKsbcrl00" + b"0" * 32)
    v = b.receive(made_up, Source(PRIVATE, *A_PRIV), 1.2)
    assert v.kind == "drop" and v.reason == "response_not_ours"  # type: ignore[union-attr]
    assert one(b.receive(back, Source(PRIVATE, *A_PRIV), 1.3))[1] == VOS  # the real one goes


def test_a_relayed_request_is_never_relayed_again_and_an_unknown_phone_is_480() -> None:
    a, b, b_nodes = cluster()
    a_nodes = a.ctx.nodes
    assert isinstance(a_nodes, RemoteBindings)
    # A no longer holds the phone but has heard (wrongly) that B does: no ping-pong
    assert a.registrar is not None
    a.registrar.expire(601.0)
    a_nodes.node_seen(NodeRecord("b", INST, *B_PRIV), 600.0)
    a_nodes.apply(RegEvent(RegOp.BIND, "1001", "b", INST, 1600.0, 2200.0), 600.0, 1600.0)
    b_nodes.node_seen(NodeRecord("a", INST, *A_PRIV), 600.0)
    b_nodes.apply(RegEvent(RegOp.BIND, "1001", "a", INST, 1601.0, 2200.0), 600.0, 1601.0)
    _, to, relayed = one(b.receive(request("INVITE"), FROM_VOS, 601.5))
    assert to == A_PRIV
    ch, to, refused = one(a.receive(relayed, Source(PRIVATE, *B_PRIV), 601.5))
    assert to == B_PRIV and refused.startswith(b"SIP/2.0 480")
    ch, to, out = one(b.receive(refused, Source(PRIVATE, *A_PRIV), 601.5))
    assert (ch, to) == (PRIVATE, VOS) and out.startswith(b"SIP/2.0 480")
    # an account no node holds: 480 from B itself, as on a single node
    ch, to, out = one(b.receive(request("INVITE", call_id="x", uri="sip:2002@10.0.0.2"),
                                FROM_VOS, 602.0))
    assert to == VOS and out.startswith(b"SIP/2.0 480")
