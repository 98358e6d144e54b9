"""Where the shared limits live in Redis, and the two scripts that change
them (each atomic on the server, on the server's clock: `TIME`).

- `<prefix>cps:<gateway>` (`*`: all gateways): a token bucket, a hash of the
  tokens left (`t`) and when it was last filled (`s`, microseconds);
- `<prefix>slots:<gateway>`: a sorted set, one member per call in progress
  (`<node>:<digest of gateway, Call-ID, From-tag>`), scored by when it
  expires (milliseconds); a node refreshes its members while the calls live,
  so a dead node's calls are pruned by the next script after their expiry;
- `<prefix>leases:<gateway>`: a hash, per node, the free slots it holds and
  until when (`<count>:<expiry ms>`);
- `<prefix>limits:settle`: exists while grants are capped at each node's
  fallback share (after a node comes back from a fallback, or after Redis
  lost its keys: `<prefix>limits:epoch` missing);
- `<prefix>node:<name>`: a node's heartbeat, with a TTL.

What a script reads that is not what it wrote (another type under the key, a
field that is not a number) is removed and reported (`bad`), never an error.
"""

from __future__ import annotations

__all__ = ["LimitKeys", "SLOTS_SCRIPT", "TOKENS_SCRIPT"]

# KEYS: bucket. ARGV: rate per s, capacity, wanted, key ttl ms.
# Returns {granted, bad}. The stamp is kept in microseconds with every digit
# (`tostring` keeps 14 of the 16, and each call rounding it down would refill
# the bucket by up to 50 us worth of tokens: over-granting under load).
TOKENS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate, cap, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bad = 0
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', KEYS[1]); bad = 1; kind = 'none' end
local tokens, stamp = cap, now
if kind == 'hash' then
  local v = redis.call('HMGET', KEYS[1], 't', 's')
  tokens, stamp = tonumber(v[1]), tonumber(v[2])
  if not tokens or not stamp or tokens ~= tokens or stamp ~= stamp or tokens < 0
     or tokens > cap or stamp > now + 60000000 then
    tokens, stamp, bad = 0, now, 1
  end
end
if now > stamp then tokens = math.min(cap, tokens + (now - stamp) * rate / 1000000) end
local granted = math.max(0, math.min(want, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {granted, bad}
"""

# KEYS: slots, leases, settle, epoch.
# ARGV: node, limit, ttl ms, want, keep, share, mine, settle ms, start (1: a
# node back from a fallback), number of adds, the adds, then the removals.
# Returns {granted, calls in the cluster, other nodes' leases, bad, settling}.
SLOTS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local want, keep, share, mine = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local settle_ms, start, nadd = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local bad = 0
local expected = {'zset', 'hash'}
for i = 1, 2 do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= expected[i] and kind ~= 'none' then redis.call('DEL', KEYS[i]); bad = bad + 1 end
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('SET', KEYS[4], now)
  start = 1
end
if start == 1 and settle_ms > 0 and redis.call('PTTL', KEYS[3]) < settle_ms then
  redis.call('SET', KEYS[3], node, 'PX', settle_ms)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local expiry = now + ttl
for i = 11, 10 + nadd do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
for i = 11 + nadd, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
local others = 0
local leases = redis.call('HGETALL', KEYS[2])
for i = 1, #leases, 2 do
  local field, value = leases[i], leases[i + 1]
  local n, e = string.match(value, '^(%d+):(%d+)$')
  n, e = tonumber(n), tonumber(e)
  if not n or not e then
    redis.call('HDEL', KEYS[2], field); bad = bad + 1
  elseif e <= now then
    redis.call('HDEL', KEYS[2], field)
  elseif field ~= node then
    others = others + n
  end
end
local calls = redis.call('ZCARD', KEYS[1])
local grant = math.min(want, limit - calls - others)
local settling = redis.call('EXISTS', KEYS[3])
if settling == 1 then grant = math.min(grant, share - mine) end
grant = math.max(grant, keep, 0)
if grant > 0 then
  redis.call('HSET', KEYS[2], node, grant .. ':' .. expiry)
else
  redis.call('HDEL', KEYS[2], node)
end
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
redis.call('PEXPIRE', KEYS[2], 2 * ttl)
return {grant, calls, others, bad, settling}
"""


class LimitKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.settle = f"{prefix}limits:settle"
        self.epoch = f"{prefix}limits:epoch"
        self.node_pattern = f"{prefix}node:*"

    def tokens(self, name: str) -> str:
        return f"{self.prefix}cps:{name}"

    def slots(self, name: str) -> list[str]:
        return [f"{self.prefix}slots:{name}", f"{self.prefix}leases:{name}", self.settle,
                self.epoch]

    def node(self, name: str) -> str:
        return f"{self.prefix}node:{name}"
