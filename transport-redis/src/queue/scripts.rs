//! The Lua scripts behind the queue: taking, adopting, putting back, reaping.
//!
//! A queue element is an encoded envelope, or, once the item has come back
//! (reaped or nacked), `"\x01" <times it came back, decimal> "\x00"` followed by
//! the envelope (see [`super::element`]). Carrying the count in the element
//! keeps it with the item wherever the item goes, so taking and settling touch
//! no attempts table.

use redis::Script;
use std::sync::LazyLock;

/// The end of [`TAKE`] and [`ADOPT`], once `item` is popped (and `fly`, `vis`
/// name the in-flight hash and deadline set): parks it in the
/// in-flight table until ARGV[2], the deadline on the Redis clock when the
/// client knows that clock (else, absent or `0`, TIME + ARGV[1]), and returns
/// it. The id is read the way [`super::element::Element::parse`] reads it.
/// Inline, without helper functions: this runs once per item, and every call
/// counts.
const PARK: &str = r"
if not item then return false end
local body = 1
if string.byte(item, 1) == 1 then
  local at = string.find(item, '\0', 2, true)
  if at then body = at + 1 end
end
local id = string.sub(item, body + 4, body + 19)
if #id < 16 then id = id .. string.rep('\0', 16 - #id) end
redis.call('HSET', fly, id, item)
local deadline = ARGV[2]
if not deadline or deadline == '0' then
  local t = redis.call('TIME')
  deadline = t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[1]
end
redis.call('ZADD', vis, deadline, id)
return item";

/// Takes one waiting item into flight, if there is one.
/// KEYS[1] = base, ARGV[1] = visibility (ms), ARGV[2] = deadline (ms, Redis
/// clock; `0` when unknown). Sent on the shared command connection, so
/// concurrent takes are pipelined with every other command.
pub(super) static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "local base = KEYS[1]
local fly, vis = base .. ':fly', base .. ':vis'
local item = redis.call('RPOP', base){PARK}"
    ))
});

/// Adopts an item a blocking pop just moved into the processing list.
/// KEYS[1] = base, ARGV[1] = visibility (ms); the deadline is taken from the
/// Redis clock (the pop may have waited long). Sent with `EVALSHA` right behind
/// the pop, in the same pipeline.
pub(super) static ADOPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "local base = KEYS[1]
local fly, vis = base .. ':fly', base .. ':vis'
local item = redis.call('LPOP', base .. ':p'){PARK}"
    ))
});

/// A Lua function: the element `item` with one more return counted.
const COUNT_RETURN: &str = r"
local function count_return(item)
  local count, body = 0, item
  if string.byte(item, 1) == 1 then
    local at = string.find(item, '\0', 2, true)
    if at then
      count = tonumber(string.sub(item, 2, at - 1)) or 0
      body = string.sub(item, at + 1)
    end
  end
  return '\1' .. (count + 1) .. '\0' .. body
end";

/// Puts an in-flight item back at the head of the queue, counting the return
/// unless ARGV[2] is `1` (the item never reached a caller). KEYS[1] = base,
/// ARGV[1] = id. Its source is also sent with `EVAL` from `Drop`, where there
/// is no way to load it first.
pub(super) static NACK_LUA: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{COUNT_RETURN}
local base = KEYS[1]
if redis.call('ZREM', base .. ':vis', ARGV[1]) == 1 then
  local item = redis.call('HGET', base .. ':fly', ARGV[1])
  redis.call('HDEL', base .. ':fly', ARGV[1])
  if item then
    if ARGV[2] ~= '1' then item = count_return(item) end
    redis.call('RPUSH', base, item)
  end
  return 1
end
return 0"
    )
});

pub(super) static NACK: LazyLock<Script> = LazyLock::new(|| Script::new(&NACK_LUA));

/// A Lua function: moves everything left in the processing list `list` of a
/// `get` lane back to the head of queue `base` (its newest first, so the oldest
/// is taken first), each return counted, and forgets the lane `name`.
const RETURN_LANE: &str = r"
local function return_lane(base, list, name)
  local item = redis.call('LPOP', list)
  while item do
    redis.call('RPUSH', base, count_return(item))
    item = redis.call('LPOP', list)
  end
  redis.call('ZREM', base .. ':gs', name)
end";

/// Closes a `get` lane: pushes back the items whose callers left, trims the
/// settled ones, returns whatever else is left (see [`super::lane`]) and
/// forgets the lane. KEYS[1] = base, KEYS[2] = the lane's list, ARGV[1] = its
/// name, ARGV[2] = how many items at its right end are settled, ARGV[3..] =
/// elements to push back, oldest first. Sent with `EVAL`, from the writer or
/// at shutdown, where there is no way to load it first; a broken lane sends
/// no counts, and everything in it comes back.
pub(super) static CLOSE_LANE_LUA: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{COUNT_RETURN}{RETURN_LANE}
local base, list = KEYS[1], KEYS[2]
for i = #ARGV, 3, -1 do
  redis.call('RPUSH', base, ARGV[i])
end
local settled = tonumber(ARGV[2]) or 0
if settled > 0 then redis.call('LTRIM', list, 0, -settled - 1) end
return_lane(base, list, ARGV[1])
return 0"
    )
});

/// Registers a `get` lane until TIME + ARGV[1] ms. KEYS[1] = base, ARGV[2] =
/// the lane's name. Used only when the client does not know the Redis clock
/// (otherwise a plain `ZADD` does it).
pub(super) const REGISTER_LANE_LUA: &str = r"
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1] .. ':gs', t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[1], ARGV[2])
return 0";

/// Reaps; returns the number of waiting items and the Redis clock (`TIME`).
/// KEYS[1] = base. Besides in-flight items whose visibility expired, it
/// returns the items of `get` lanes whose registration lapsed (their bus is
/// gone).
pub(super) static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{COUNT_RETURN}{RETURN_LANE}
local base = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', base .. ':gs', '-inf', now, 'LIMIT', 0, 64)
for _, name in ipairs(lapsed) do
  return_lane(base, base .. ':g:' .. name, name)
end
local due = redis.call('ZRANGEBYSCORE', base .. ':vis', '-inf', now, 'LIMIT', 0, 256)
for _, id in ipairs(due) do
  local item = redis.call('HGET', base .. ':fly', id)
  redis.call('ZREM', base .. ':vis', id)
  redis.call('HDEL', base .. ':fly', id)
  if item then
    redis.call('RPUSH', base, count_return(item))
  end
end
if redis.call('SET', base .. ':reap', '1', 'NX', 'PX', 1000) then
  local item = redis.call('RPOP', base .. ':p')
  while item do
    redis.call('RPUSH', base, item)
    item = redis.call('RPOP', base .. ':p')
  end
end
return {{redis.call('LLEN', base), t[1], t[2]}}"
    ))
});
