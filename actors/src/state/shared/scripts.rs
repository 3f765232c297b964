//! The Lua scripts: what must be one atomic step in Redis.

/// Raises each field of hash KEYS[1] to the value after it in ARGV, never
/// lowering one: two instances may write in any order.
pub(super) const RAISE: &str = r"
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0";

/// KEYS[1]: the caller's liveness key, renewed here; KEYS[2..]: dedup keys.
/// ARGV: instance id, lease ms, window ms, liveness key prefix. Answers 1
/// (mine), 0 (taken) or 2 (pending with a live owner) per dedup key.
pub(super) const CLAIM: &str = r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
local out = {}
for i = 2, #KEYS do
  -- A new id, the common case, costs one call; GET only when it is not.
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[3]) then
    out[i - 1] = 1
  else
    local v = redis.call('GET', KEYS[i])
    if v == 'd' or v == ARGV[1] then
      out[i - 1] = 0
    elseif v and redis.call('EXISTS', ARGV[4] .. v) == 1 then
      out[i - 1] = 2
    elseif v then
      redis.call('SET', KEYS[i], ARGV[1], 'KEEPTTL')
      out[i - 1] = 1
    else
      -- Gone since the SET (an eviction): claim it afresh.
      redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[3])
      out[i - 1] = 1
    end
  end
end
return out";

/// KEYS: dedup keys; ARGV[1]: instance id. Deletes each key that this
/// instance still holds (not durable, not taken over); answers how many.
pub(super) const RELEASE: &str = r"
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
return n";
