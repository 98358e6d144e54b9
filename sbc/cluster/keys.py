"""Where the cluster's bans live in Redis, and the two server-side scripts that
change them (each atomic on the server, so two nodes banning or unbanning the
same host at once leave one answer).

- `<prefix>ban:<host>`: the ban in force, its event (sbc.cluster.events) as
  the value, the ban's remaining time as the key's TTL (Redis forgets an
  expired ban by itself);
- `<prefix>lifted:<host>`: when the host was last unbanned (milliseconds of
  wall time), kept as long as the lifted ban would have lasted, so a node
  coming back with an older ban of that host does not bring it back;
- `<prefix>bans`: the channel announcing every stored ban and every unban.

BAN stores a ban unless the cluster already has one ending as late or later
(the longer expiry wins), or the host was unbanned after this ban was made;
it announces only what it stored. UNBAN deletes, leaves the mark, announces.
"""

from __future__ import annotations

from .events import BanEvent

__all__ = ["BAN_SCRIPT", "UNBAN_SCRIPT", "Keys"]

# KEYS: ban key, lifted key. ARGV: payload, ttl_ms, banned_ms, channel.
# Returns 1 stored and announced, 0 kept the longer ban, -1 lifted since.
BAN_SCRIPT = """
local lifted = redis.call('GET', KEYS[2])
if lifted and tonumber(lifted) and tonumber(lifted) >= tonumber(ARGV[3]) then return -1 end
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""

# KEYS: ban key, lifted key. ARGV: payload, at_ms, mark_ttl_ms, channel.
UNBAN_SCRIPT = """
redis.call('DEL', KEYS[1])
local before = redis.call('GET', KEYS[2])
if not (before and tonumber(before) and tonumber(before) > tonumber(ARGV[2])) then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""

MIN_MARK_MS = 60_000


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.channel = f"{prefix}bans"
        self.ban_pattern = f"{prefix}ban:*"

    def ban(self, host: str) -> str:
        return f"{self.prefix}ban:{host}"

    def lifted(self, host: str) -> str:
        return f"{self.prefix}lifted:{host}"

    def args(self, event: BanEvent, payload: bytes,
             wall_now: float) -> tuple[list[str], list[bytes | str | int]] | None:
        """The script's keys and arguments for `event`; None for a ban that
        is already over."""
        keys = [self.ban(event.host), self.lifted(event.host)]
        if event.op == "ban":
            ttl_ms = int((event.expires_wall - wall_now) * 1000)
            if ttl_ms <= 0:
                return None
            return keys, [payload, ttl_ms, int(event.at_wall * 1000), self.channel]
        mark_ms = max(MIN_MARK_MS, int((event.expires_wall - wall_now) * 1000))
        return keys, [payload, int(event.at_wall * 1000), mark_ms, self.channel]
