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

# The realtime stream's part of a delivery. A reader with a live stream (the key exists
# only while they stream, or did a short while ago) gets the koo appended to it once:
# the seen set says whether an earlier delivery of the same koo (announce, push, a
# retried chunk) already did. ``a``: score, member, author, maxlen, seen_keep, ttl.
# Written: {id of the entry before, id of the new entry}; 0 streamed before; -1 no live
# stream. The pair lets an API process that has passed the entry before send the koo
# without reading the stream back.
_LIVE_KOO = """
local function live_koo(live, seen, a)
  if redis.call('EXISTS', live) == 0 then return -1 end
  if redis.call('ZADD', seen, 'NX', a[1], a[2]) == 0 then return 0 end
  local seen_keep = tonumber(a[5])
  if redis.call('ZCARD', seen) > seen_keep then
    redis.call('ZREMRANGEBYRANK', seen, 0, -(seen_keep + 1))
  end
  redis.call('EXPIRE', seen, a[6])
  local last = redis.call('XREVRANGE', live, '+', '-', 'COUNT', 1)
  local before = '0-0'
  if last[1] then before = last[1][1] end
  local id = redis.call('XADD', live, 'MAXLEN', '~', a[4], '*', 't', 'koo', 'k', a[2],
                        'a', a[3], 'c', a[1])
  return {before, id}
end
"""

# PUSH, and the live stream of each reader who has one, in the same call: for a reader
# who never streamed the extra cost is one EXISTS. KEYS: per reader its timeline, live
# stream and seen set; ARGV: score, member, keep, author, maxlen, seen_keep, ttl.
# Returns {timelines pushed, then for each reader whose live stream grew: its index
# (1-based), the id of the entry before and the id of the new entry}.
PUSH_LIVE = _TRIM + _LIVE_KOO + """
local keep = tonumber(ARGV[3])
local a = {ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7]}
local pushed = 0
local out = {0}
for i = 1, #KEYS, 3 do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', key, ARGV[1], ARGV[2])
    trim(key, keep)
    pushed = pushed + 1
  end
  local grew = live_koo(KEYS[i + 1], KEYS[i + 2], a)
  if type(grew) == 'table' then
    out[#out + 1] = (i + 2) / 3
    out[#out + 1] = grew[1]
    out[#out + 1] = grew[2]
  end
end
out[1] = pushed
return out
"""

# A koo for live streams only (a celebrity's, pulled by every other reader). KEYS: per
# reader its live stream and seen set; ARGV: score, member, author, maxlen, seen_keep,
# ttl. Returns one reply of live_koo per reader.
LIVE_KOO = _LIVE_KOO + """
local out = {}
for i = 1, #KEYS, 2 do out[#out + 1] = live_koo(KEYS[i], KEYS[i + 1], ARGV) end
return out
"""

# A note (``remove`` of a koo, ``rel`` when the reader's relations changed) appended to
# each existing live stream. KEYS live streams; ARGV: type, koo_id ("" if none), maxlen.
# Returns the index (1-based) of each stream that took it.
LIVE_NOTE = """
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[3], '*', 't', ARGV[1], 'k', ARGV[2])
    out[#out + 1] = i
  end
end
return out
"""

SCRIPTS = {
    "push": PUSH,
    "merge": MERGE,
    "hmget_many": HMGET_MANY,
    "sadd_if_loaded": SADD_IF_LOADED,
    "hincr_if_exists": HINCR_IF_EXISTS,
    "hincrfloat_if_exists": HINCRFLOAT_IF_EXISTS,
    "unlock": UNLOCK,
    "push_live": PUSH_LIVE,
    "live_koo": LIVE_KOO,
    "live_note": LIVE_NOTE,
}
