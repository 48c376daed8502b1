"""Every Lua script of the hot cache, in one place.

Sentinel members come from :mod:`feed.keys`, formatted into the script text once at
import, so the scripts and the Python side can never disagree on them. Each script
touches only the keys it is given, so on a Redis Cluster a one-key call runs on that
key's node.
"""

from __future__ import annotations

from feed import keys


def _lua_string(value: str) -> str:
    """``value`` as a Lua string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Trim a timeline-like sorted set to ``keep`` members once it outgrows them. The set then
# no longer holds the whole history, so the COMPLETE sentinel goes, first, so that it does
# not count against ``keep``; the oldest entries go next (sentinels sit at +inf and stay).
_TRIM = f"""
local function trim(key, keep)
  if redis.call('ZCARD', key) > keep then
    redis.call('ZREM', key, {_lua_string(keys.COMPLETE)})
    redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  end
end
"""

# Push one koo into each existing set (an active reader's timeline, a cached author's
# recent koos) and trim it; returns how many sets took it. Sets that do not exist stay
# absent. KEYS sets; ARGV: score, member, keep (entries plus sentinels). Several keys
# in one call only on a standalone Redis: a Redis Cluster refuses keys of several slots.
PUSH = _TRIM + """
local keep = tonumber(ARGV[3])
local pushed = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', key, ARGV[1], ARGV[2])
    trim(key, keep)
    pushed = pushed + 1
  end
end
return pushed
"""

# Merge many entries into an existing timeline and trim it; 1 if it exists, else 0.
# KEYS[1]; ARGV: keep, score1, member1, score2, member2, ...
MERGE = _TRIM + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
trim(KEYS[1], tonumber(ARGV[1]))
return 1
"""

# HMGET the same fields of many hashes, one reply (standalone Redis). KEYS; ARGV fields.
HMGET_MANY = """
local rows = {}
for i = 1, #KEYS do rows[i] = redis.call('HMGET', KEYS[i], unpack(ARGV)) end
return rows
"""

# Add members to a set only if it has been loaded. KEYS[1]; ARGV members
SADD_IF_LOADED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('SADD', KEYS[1], unpack(ARGV))
"""

# HINCRBY a field of an existing hash. KEYS[1]; ARGV field, delta
HINCR_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
"""

# HINCRBYFLOAT a field of an existing hash. KEYS[1]; ARGV field, delta
HINCRFLOAT_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1], ARGV[2])
"""

# Release a lock only if we still hold it. KEYS[1]; ARGV token
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

SCRIPTS = {
    "push": PUSH,
    "merge": MERGE,
    "hmget_many": HMGET_MANY,
    "sadd_if_loaded": SADD_IF_LOADED,
    "hincr_if_exists": HINCR_IF_EXISTS,
    "hincrfloat_if_exists": HINCRFLOAT_IF_EXISTS,
    "unlock": UNLOCK,
}
