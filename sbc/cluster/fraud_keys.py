"""Where the toll-fraud watch's shared state lives in Redis, and the two
server-side scripts that change blocks (each atomic on the server, so a
block and a clear of the same scope at once leave one answer).

- `<prefix>fraud:block:<gateway>:<rule>`: the block in force, its event
  (sbc.cluster.fraud_events) as the value, its remaining time as the key's
  TTL (a block until an operator clears it: `UNTIL_CLEARED_S`, renewed
  whenever a node pushes the blocks in force);
- `<prefix>fraud:cleared:<gateway>:<rule>` (either may be `*`): when an
  operator last cleared that pattern (milliseconds of wall time), kept
  `MARK_S`, so a block made before the clear is not stored again;
- `<prefix>fraud:n:<rule>`: a hash, one field per node and gateway
  (`<node>|<gateway>`) holding that node's figures (a contribution),
  expiring `COUNTS_TTL_S` after the last write;
- `<prefix>fraud`: the channel announcing every stored block and every clear.

Gateway and rule names are letters, digits and `_ . -`: a `:` in a key is
always a separator.
"""

from __future__ import annotations

__all__ = ["BLOCK_SCRIPT", "CLEAR_SCRIPT", "FraudKeys"]

UNTIL_CLEARED_S = 30 * 86400
MARK_S = 30 * 86400
COUNTS_TTL_S = 300

# KEYS: block, then the four clear marks covering it (exact, gateway:*, *:rule, *:*).
# ARGV: payload, ttl ms, made ms, channel.
# Returns 1 stored and announced, 0 kept one ending as late, -1 cleared since it was made.
BLOCK_SCRIPT = """
for i = 2, 5 do
  local m = redis.call('GET', KEYS[i])
  if m and tonumber(m) and tonumber(m) >= tonumber(ARGV[3]) then return -1 end
end
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""

# KEYS: the clear mark of the pattern, then the block keys it lifts.
# ARGV: payload, at ms, mark ttl ms, channel.
CLEAR_SCRIPT = """
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
local before = redis.call('GET', KEYS[1])
if not (before and tonumber(before) and tonumber(before) > tonumber(ARGV[2])) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""


class FraudKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.channel = f"{prefix}fraud"
        self.block_pattern = f"{prefix}fraud:block:*"

    def block(self, gateway: str, rule: str) -> str:
        return f"{self.prefix}fraud:block:{gateway}:{rule}"

    def blocks_of(self, gateway: str, rule: str) -> str:
        """The SCAN pattern of the blocks a clear of (gateway, rule) lifts."""
        return f"{self.prefix}fraud:block:{gateway}:{rule}"  # "*" matches any name

    def mark(self, gateway: str, rule: str) -> str:
        return f"{self.prefix}fraud:cleared:{gateway}:{rule}"

    def marks(self, gateway: str, rule: str) -> list[str]:
        return [self.mark(gateway, rule), self.mark(gateway, "*"), self.mark("*", rule),
                self.mark("*", "*")]

    def counts(self, rule: str) -> str:
        return f"{self.prefix}fraud:n:{rule}"
