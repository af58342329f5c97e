//! The Lua scripts that make each write one atomic round trip.
//!
//! A session is one hash: `e` its expiry (Unix ms, also the key's `PEXPIREAT`), `m` its
//! metadata as JSON, `u` its user (set at creation only), and `d:<name>` per data key,
//! holding the value as JSON. A user's sessions are a sorted set, scored by expiry.
//!
//! Every script takes the session hash as `KEYS[1]`. Where `KEYS[2]` is given (a
//! standalone server) the script also keeps the user index in the same atomic step;
//! on a cluster the index lives in another slot and `INDEX` keeps it in a second call.

use redis::Script;

/// Index maintenance shared by the scripts: add or raise the member, drop expired
/// members, and let the index key itself expire with its last member, so that an index
/// nobody reads again still ends empty.
const INDEX_FUNCTION: &str = r#"
local function reindex(index, member, score, create)
  if create then
    redis.call('ZADD', index, score, member)
  else
    redis.call('ZADD', index, 'XX', 'GT', score, member)
  end
  local now = redis.call('TIME')
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now[1] * 1000 + math.floor(now[2] / 1000))
  local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIREAT', index, last[2])
  end
end
"#;

/// Reads a session and pushes its expiry back when due, by the rule of
/// `session_core::Refresh::due`: to `min(now + idle, deadline)` once that gains at
/// least a quarter of the idle timeout. `ARGV`: now, the default idle timeout (both
/// ms), and the user index prefix ('' on a cluster, where the caller keeps the index).
/// Returns `{refreshed (0/1), HGETALL pairs}`, `{0, {}}` for no session.
const LOAD: &str = r#"
local fields = redis.call('HGETALL', KEYS[1])
local expires_at, meta, user, expires_at_slot
for i = 1, #fields, 2 do
  local field = fields[i]
  if field == 'e' then
    expires_at, expires_at_slot = tonumber(fields[i + 1]), i + 1
  elseif field == 'm' then
    meta = fields[i + 1]
  elseif field == 'u' then
    user = fields[i + 1]
  end
end
if not expires_at or not meta then
  return {0, fields}
end
local ok, decoded = pcall(cjson.decode, meta)
if not ok or type(decoded) ~= 'table' then
  return {0, fields}
end
local idle = tonumber(ARGV[2])
if type(decoded.x) == 'table' and type(decoded.x.i) == 'number' then
  idle = decoded.x.i * 1000
end
local target = tonumber(ARGV[1]) + idle
if type(decoded.d) == 'number' and decoded.d < target then
  target = decoded.d
end
if target - expires_at < idle / 4 then
  return {0, fields}
end
local text = string.format('%.0f', target)
redis.call('HSET', KEYS[1], 'e', text)
redis.call('PEXPIREAT', KEYS[1], text)
if user and ARGV[3] ~= '' then
  reindex(ARGV[3] .. '{' .. user .. '}', KEYS[1], text, false)
end
fields[expires_at_slot] = text
return {1, fields}
"#;

/// `ARGV`: expiry, metadata JSON, user ('' for none), then field/value pairs.
/// Returns 1 if created, 0 if a live record is there.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'e', ARGV[1], 'm', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'u', ARGV[3])
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if KEYS[2] and ARGV[3] ~= '' then
  reindex(KEYS[2], KEYS[1], ARGV[1], true)
end
return 1
"#;

/// `ARGV`: expiry, metadata JSON, cleared ('1'/'0'), number of removed fields, the
/// removed fields, then field/value pairs to set. Returns 1 if saved, 0 if missing.
const SAVE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[3] == '1' then
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 2) == 'd:' then
      redis.call('HDEL', KEYS[1], field)
    end
  end
end
local removed = tonumber(ARGV[4])
for i = 5, 4 + removed do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
for i = 5 + removed, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'e', ARGV[1], 'm', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if KEYS[2] then
  reindex(KEYS[2], KEYS[1], ARGV[1], false)
end
return 1
"#;

/// `ARGV`: expiry. Returns 1 if touched, 0 if missing.
const TOUCH: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'e', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if KEYS[2] then
  reindex(KEYS[2], KEYS[1], ARGV[1], false)
end
return 1
"#;

/// Compare-and-set of one field. `ARGV`: field, '1' if the field is expected absent
/// else '0', the expected value, the new value, expiry, metadata JSON. Returns `{1}` if
/// set, `{0}` if the session is missing, `{2, current}` if the field changed meanwhile.
const COMPARE_AND_SET: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
local expected_absent = ARGV[2] == '1'
if (expected_absent and current) or (not expected_absent and current ~= ARGV[3]) then
  return {2, current}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4], 'e', ARGV[5], 'm', ARGV[6])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
if KEYS[2] then
  reindex(KEYS[2], KEYS[1], ARGV[5], false)
end
return {1}
"#;

/// Deletes a session. Returns its user ('' for none), whose index the caller then
/// cleans: the index may live in another slot.
const DELETE: &str = r#"
local user = redis.call('HGET', KEYS[1], 'u')
redis.call('DEL', KEYS[1])
return user or ''
"#;

/// The index step alone, for a cluster. `ARGV`: member, score, '1' to add it.
const INDEX: &str = r#"
reindex(KEYS[1], ARGV[1], ARGV[2], ARGV[3] == '1')
return 1
"#;

/// The scripts, compiled once per store (each keeps its SHA-1 for `EVALSHA`).
pub(crate) struct Scripts {
    pub(crate) load: Script,
    pub(crate) create: Script,
    pub(crate) save: Script,
    pub(crate) touch: Script,
    pub(crate) compare_and_set: Script,
    pub(crate) delete: Script,
    pub(crate) index: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with_index = |body: &str| Script::new(&format!("{INDEX_FUNCTION}{body}"));
        Self {
            load: with_index(LOAD),
            create: with_index(CREATE),
            save: with_index(SAVE),
            touch: with_index(TOUCH),
            compare_and_set: with_index(COMPARE_AND_SET),
            delete: Script::new(DELETE),
            index: with_index(INDEX),
        }
    }
}
