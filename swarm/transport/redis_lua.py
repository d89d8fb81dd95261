"""The Lua scripts of the Redis transport: each one is a single atomic round trip.

Channels are arguments, not keys, because channels are not keys in Redis Cluster.
"""

# Append to the log and fan out in one atomic round trip.
# One server: PUBLISH, the channel an argument. A cluster: sharded SPUBLISH, the channel named as
# a key (scripts name all their keys; it hashes to the swarm's slot), so the message stays inside
# the shard that owns the swarm.
# The message also names the entry before it, so receivers detect a dropped message exactly.
PUBLISH_LUA = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if last[1] then prev = last[1][1] end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
redis.call('PUBLISH', ARGV[2], prev .. ' ' .. id .. ' ' .. ARGV[1])
return {id, redis.call('XLEN', KEYS[1]), prev}
"""
SHARDED_PUBLISH_LUA = PUBLISH_LUA.replace("'PUBLISH', ARGV[2]", "'SPUBLISH', KEYS[2]")

# A random value set once per swarm: when Redis comes back without it, it lost the swarm's data
# (stream ids are time based, so a wiped log cannot be told from a live one by its ids).
EPOCH_LUA = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

ACQUIRE_LEASE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

RELEASE_LEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Returns 1 stored, 0 refused (would move the covered id backwards or past the log's last id),
# -1 not the lease holder.
PUT_SNAPSHOT_LUA = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local last = '0-0'
if redis.call('EXISTS', KEYS[3]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[3])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
if less(last, ARGV[3]) then return 0 end
local old = redis.call('HGET', KEYS[2], ARGV[2])
if old then
  local space = string.find(old, ' ', 1, true)
  if space and less(ARGV[3], string.sub(old, 1, space - 1)) then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ' ' .. ARGV[4])
return 1
"""

# Stamped with the server's clock so presence does not depend on the nodes' clocks agreeing.
# KEYS: nodes, files. ARGV: node, summary JSON, ttl ms, per-file facts JSON ('' = unchanged).
# Returns whether the node's per-file facts are stored (a Redis that lost its data has none).
# Allowed when Redis is out of memory (Redis 7+): the heartbeat is how `swarm status` learns
# that this node cannot publish; older servers get the same script without the flag.
OOM_FLAG = "#!lua flags=allow-oom\n"
HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
end
redis.call('HSET', KEYS[1], ARGV[1],
  '{"seen_ms":' .. now .. ',"ttl_ms":' .. ARGV[3] .. ',"info":' .. ARGV[2] .. '}')
return redis.call('HEXISTS', KEYS[2], ARGV[1])
"""
