//! The Lua scripts behind the queue: taking, adopting, putting back, reaping.

use redis::Script;
use std::sync::LazyLock;

/// The end of [`TAKE`] and [`ADOPT`], once `item` is popped: parks it in the
/// in-flight table until ARGV[3], the deadline on the Redis clock when the
/// client knows that clock (else, absent or `0`, TIME + ARGV[1]), and returns it with its attempt
/// number when ARGV[2] is `1` (`receive`; a `get` has no use for it). Attempts
/// are counted when an item comes back (reaped or nacked), not when it is
/// taken, so the take itself writes nothing but the park. Inline, without
/// helper functions: this runs once per item, and every call counts.
const PARK: &str = r"
if not item then return false end
local id = string.sub(item, 5, 20)
redis.call('HSET', base .. ':fly', id, item)
local deadline = ARGV[3]
if not deadline or deadline == '0' then
  local t = redis.call('TIME')
  deadline = t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[1]
end
redis.call('ZADD', base .. ':vis', deadline, id)
if ARGV[2] == '1' then
  return {item, 1 + (tonumber(redis.call('HGET', base .. ':att', id)) or 0)}
end
return {item, 1}";

/// Settles the items of earlier `get`s, then takes one waiting item into
/// flight, if there is one.
/// KEYS[1] = base, ARGV[1] = visibility (ms), ARGV[2] = `1` for the attempt
/// number, ARGV[3] = deadline (ms, Redis clock; `0` when unknown), ARGV[4..] =
/// ids to settle (at most [`MAX_SETTLED_PER_TAKE`]). Sent on the shared command
/// connection, so concurrent takes are pipelined with every other command.
///
/// Settling inside the script, rather than in commands sent beside it, saves
/// Redis three commands to parse, run and answer per item: the queue workload
/// is bound by Redis's time per item.
pub(super) static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "local base = KEYS[1]
if #ARGV > 3 then
  redis.call('ZREM', base .. ':vis', unpack(ARGV, 4))
  redis.call('HDEL', base .. ':fly', unpack(ARGV, 4))
  redis.call('HDEL', base .. ':att', unpack(ARGV, 4))
end
local item = redis.call('RPOP', base){PARK}"
    ))
});

/// How many settlements one [`TAKE`] carries at most (Lua's `unpack` puts
/// them all on its stack); any more wait for the next take or the flusher.
pub(super) const MAX_SETTLED_PER_TAKE: usize = 256;

/// Adopts an item a blocking pop just moved into the processing list.
/// KEYS[1] = base, ARGV[1..2] as for [`TAKE`] (the deadline is taken from the
/// Redis clock: the pop may have waited long). Sent with `EVALSHA` right behind the
/// pop, in the same pipeline.
pub(super) static ADOPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "local base = KEYS[1]
local item = redis.call('LPOP', base .. ':p'){PARK}"
    ))
});

/// Puts an in-flight item back at the head of the queue, counting the attempt
/// unless ARGV[2] is `1` (the item never reached a caller). KEYS[1] = base,
/// ARGV[1] = id. Its source is also sent with `EVAL` from `Drop`, where there is
/// no way to load it first.
pub(super) const NACK_LUA: &str = r"
local base = KEYS[1]
if redis.call('ZREM', base .. ':vis', ARGV[1]) == 1 then
  local item = redis.call('HGET', base .. ':fly', ARGV[1])
  redis.call('HDEL', base .. ':fly', ARGV[1])
  if item then
    if ARGV[2] ~= '1' then redis.call('HINCRBY', base .. ':att', ARGV[1], 1) end
    redis.call('RPUSH', base, item)
  end
  return 1
end
return 0";

pub(super) static NACK: LazyLock<Script> = LazyLock::new(|| Script::new(NACK_LUA));

/// Reaps; returns the number of waiting items and the Redis clock (`TIME`).
/// KEYS[1] = base.
pub(super) static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local base = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', base .. ':vis', '-inf', now, 'LIMIT', 0, 256)
for _, id in ipairs(due) do
  local item = redis.call('HGET', base .. ':fly', id)
  redis.call('ZREM', base .. ':vis', id)
  redis.call('HDEL', base .. ':fly', id)
  if item then
    redis.call('HINCRBY', base .. ':att', id, 1)
    redis.call('RPUSH', base, item)
  end
end
if redis.call('SET', base .. ':reap', '1', 'NX', 'PX', 1000) then
  local item = redis.call('RPOP', base .. ':p')
  while item do
    redis.call('RPUSH', base, item)
    item = redis.call('RPOP', base .. ':p')
  end
end
return {redis.call('LLEN', base), t[1], t[2]}",
    )
});
