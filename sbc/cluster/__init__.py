"""Several sbc nodes acting as one: the bans they share through Redis (or Valkey).

Redis holds the cluster's bans in force and announces each change on a
channel; every node applies what the others announce to its own ban table
(and through the ban keeper to its nftables set), and keeps serving on its
own table when Redis is away.

The pure part takes time as an argument and opens no socket: the events and
their strict reading (`events`), the merge rules (`merge`), the link's state
machine (`link`), what to publish and how to apply (`sync`), the key names
and server-side scripts (`keys`). `redis_link` is the asyncio shell that
moves the bytes.

Registrations likewise: which node holds which phone and where each live
node takes relayed calls (`registrations`, pure), moved by
`registrations_link`; the hop itself is the core's (sbc.core.proxy.relay).
"""

from .events import BanEvent, Invalid, Op, decode, encode
from .link import Link, LinkState, Transition
from .merge import Outcome, judge
from .sync import BanSync, Outbox

__all__ = ["BanEvent", "BanSync", "Invalid", "Link", "LinkState", "Op", "Outbox", "Outcome",
           "Transition", "decode", "encode", "judge"]
