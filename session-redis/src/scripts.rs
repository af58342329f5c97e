//! The Lua scripts that make each write one atomic round trip.
//!
//! They write the layout `layout.rs` describes.
//!
//! Every script takes the session hash as `KEYS[1]`. Where `KEYS[2]` is given (a
//! standalone server) the script also keeps the user index in the same atomic step;
//! on a cluster the index lives in another slot and `INDEX` keeps it in a second call.
//!
//! The scripts that change or end a session call `announce()` once they have. With
//! an invalidation channel it publishes the session's invalidation, in the same atomic
//! step as the write; its channel and message are the first two `ARGV`, taken off
//! before the script reads its own.

use std::fmt;

use redis::{Cmd, ErrorKind, FromRedisValue, RedisWrite, Script, ServerErrorKind, ToRedisArgs};
use serde_json::Value;
use session_core::store::Invalidation;
use session_core::{Meta, SessionKey, StoreError};

use crate::layout::DATA_FIELD_PREFIX;
use crate::watched::WatchedConnection;

/// `announce()` without an invalidation channel.
const SILENT: &str = "local function announce() end\n";

/// `announce()` with one.
const ANNOUNCING: &str = r#"
local channel = table.remove(ARGV, 1)
local message = table.remove(ARGV, 1)
local function announce()
  redis.call('PUBLISH', channel, message)
end
"#;

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

/// The writing shared by the scripts.
///
/// `hset_record` writes the expiry `e`, the metadata `m` and the user `u` when given,
/// and the field/value pairs `ARGV[from..]`, in one `HSET` unless the pairs outgrow
/// what Lua's stack takes at once (8,000 values): each `redis.call` costs.
///
/// `remove_fields` applies the removals of a save: `ARGV[at]` is '1' to remove every
/// data field, `ARGV[at + 1]` the number of removed fields, which follow. It returns
/// where the field/value pairs start.
const WRITE_FUNCTIONS: &str = r#"
local function hset_record(key, from, expires, meta, user)
  local last = math.min(from + 3993, #ARGV)
  if meta and user then
    redis.call('HSET', key, 'e', expires, 'm', meta, 'u', user, unpack(ARGV, from, last))
  elseif meta then
    redis.call('HSET', key, 'e', expires, 'm', meta, unpack(ARGV, from, last))
  else
    redis.call('HSET', key, 'e', expires, unpack(ARGV, from, last))
  end
  for i = last + 1, #ARGV, 4000 do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + 3999, #ARGV)))
  end
end

local function remove_fields(key, at)
  if ARGV[at] == '1' then
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, 2) == 'd:' then
        redis.call('HDEL', key, field)
      end
    end
  end
  local removed = tonumber(ARGV[at + 1])
  for i = at + 2, at + 1 + removed, 4000 do
    redis.call('HDEL', key, unpack(ARGV, i, math.min(i + 3999, at + 1 + removed)))
  end
  return at + 2 + removed
end
"#;

/// `ARGV`: expiry, metadata JSON, user ('' for none), then field/value pairs.
/// Returns 1 if created, 0 if a live record is there.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
hset_record(KEYS[1], 4, ARGV[1], ARGV[2], ARGV[3] ~= '' and ARGV[3] or nil)
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if KEYS[2] and ARGV[3] ~= '' then
  reindex(KEYS[2], KEYS[1], ARGV[1], true)
end
return 1
"#;

/// `ARGV`: expiry, metadata JSON, cleared ('1'/'0'), number of removed fields, the
/// removed fields, then field/value pairs to set. Returns 1 if saved, 0 if missing.
///
/// Every script sets the TTL last: an expiry that has passed meanwhile (a deadline
/// reached while the request ran) then deletes what was written, where a TTL set
/// first would delete the key and let the writes re-create it without one.
const SAVE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
hset_record(KEYS[1], remove_fields(KEYS[1], 3), ARGV[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if KEYS[2] then
  reindex(KEYS[2], KEYS[1], ARGV[1], false)
end
announce()
return 1
"#;

/// A save of a session the caller has not read: the script restarts the idle timeout
/// itself, by `Refresh::expires_at`'s rule on the stored metadata, and leaves the
/// metadata as it is. `ARGV`: the layer's time, its idle timeout in ms, the prefix of
/// user index keys ('' on a cluster, where the index is in another slot), then as
/// `SAVE` from its third argument on. Returns `{0}` if no live record is there,
/// `{1, e, m, u}` with the fields as they were if saved.
///
/// On a standalone server the index key is built here from the stored user, the one
/// key a script cannot be handed in advance.
const SAVE_UNLOADED: &str = r#"
local stored = redis.call('HMGET', KEYS[1], 'e', 'm', 'u')
local now = tonumber(ARGV[1])
local expires_at = tonumber(stored[1])
if not expires_at or not stored[2] or expires_at <= now then
  return {0}
end
local decoded, meta = pcall(cjson.decode, stored[2])
if not decoded or type(meta) ~= 'table' then
  return {0}
end
local deadline = meta['d']
if deadline ~= nil and (type(deadline) ~= 'number' or deadline <= now) then
  return {0}
end
local idle = tonumber(ARGV[2])
if type(meta['x']) == 'table' and type(meta['x']['i']) == 'number' then
  idle = meta['x']['i'] * 1000
end
local new_expiry = now + idle
if deadline and deadline < new_expiry then
  new_expiry = deadline
end
-- Metadata no layer wrote (an idle timeout of 1e300) would make an expiry Redis
-- refuses, after the fields were written: checked before anything is.
if new_expiry ~= new_expiry or new_expiry < 0 or new_expiry > 1e15 then
  return {0}
end
new_expiry = string.format('%.0f', new_expiry)
hset_record(KEYS[1], remove_fields(KEYS[1], 4), new_expiry)
redis.call('PEXPIREAT', KEYS[1], new_expiry)
if stored[3] and ARGV[3] ~= '' then
  reindex(ARGV[3] .. '{' .. stored[3] .. '}', KEYS[1], new_expiry, false)
end
announce()
return {1, stored[1], stored[2], stored[3]}
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
announce()
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
announce()
return {1}
"#;

/// Deletes a session. Returns its user ('' for none), whose index the caller then
/// cleans: the index may live in another slot. Announces even a session that was not
/// there: a tiered store checks the channel that way.
const DELETE: &str = r#"
local user = redis.call('HGET', KEYS[1], 'u')
redis.call('DEL', KEYS[1])
announce()
return user or ''
"#;

/// Takes a user's index for "log out everywhere": `KEYS[1]`, the index, is moved into
/// `KEYS[2]`, the set of sessions being ended (merged with what an earlier call left
/// there). A login from now on starts a new index, so that a storm of them cannot
/// keep the call going, and every session created before it is in the set it ends.
/// Returns how many sessions the set holds.
const TAKE_INDEX: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'AGGREGATE', 'MAX')
    redis.call('DEL', KEYS[1])
    local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
    if last[2] then
      redis.call('PEXPIREAT', KEYS[2], last[2])
    end
  else
    redis.call('RENAME', KEYS[1], KEYS[2])
  end
end
return redis.call('ZCARD', KEYS[2])
"#;

/// Ends a page of the sessions being ended (a standalone server). `KEYS[1]`: the set,
/// then its members to end, which leave it. Announces the user's invalidation once.
/// Returns how many sessions ended.
///
/// On one server a session is in its user's index only if it was created for that
/// user (the index is written in the same step), and a session's user never changes
/// (a login gives a new key): the page is deleted as it is, one `DEL` for all, which
/// costs Redis about 2 µs a session where a check of each session's user cost 6.5.
const END_SESSIONS: &str = r#"
local ended = 0
for i = 2, #KEYS, 4000 do
  local last = math.min(i + 3999, #KEYS)
  ended = ended + redis.call('DEL', unpack(KEYS, i, last))
  redis.call('ZREM', KEYS[1], unpack(KEYS, i, last))
end
announce()
return ended
"#;

/// Ends one session if it is `ARGV[1]`'s (a cluster, where a page of sessions spans
/// slots). Returns 1 if it ended.
const END_SESSION: &str = r#"
if redis.call('HGET', KEYS[1], 'u') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  announce()
  return 1
end
return 0
"#;

/// The index step alone, for a cluster. `ARGV`: member, score, '1' to add it.
const INDEX: &str = r#"
reindex(KEYS[1], ARGV[1], ARGV[2], ARGV[3] == '1')
return 1
"#;

/// A script the store runs, and whether it calls `announce()`.
pub(crate) struct StoreScript {
    script: Script,
    announces: bool,
}

/// The scripts, compiled once per store (each keeps its SHA-1 for `EVALSHA`).
pub(crate) struct Scripts {
    pub(crate) create: StoreScript,
    pub(crate) save: StoreScript,
    pub(crate) save_unloaded: StoreScript,
    pub(crate) touch: StoreScript,
    pub(crate) compare_and_set: StoreScript,
    pub(crate) delete: StoreScript,
    pub(crate) index: StoreScript,
    pub(crate) take_index: StoreScript,
    pub(crate) end_sessions: StoreScript,
    pub(crate) end_session: StoreScript,
    /// Where the scripts that call `announce()` publish, if anywhere.
    channel: Option<String>,
}

impl Scripts {
    pub(crate) fn new(channel: Option<String>) -> Self {
        let announce = if channel.is_some() {
            ANNOUNCING
        } else {
            SILENT
        };
        let announcing = |body: &str| StoreScript {
            script: Script::new(&format!(
                "{announce}{INDEX_FUNCTION}{WRITE_FUNCTIONS}{body}"
            )),
            announces: true,
        };
        // `create` and `index` announce nothing: no server can have a copy of a
        // session being created, and the index is not a session.
        let silent = |body: &str| StoreScript {
            script: Script::new(&format!("{INDEX_FUNCTION}{WRITE_FUNCTIONS}{body}")),
            announces: false,
        };
        Self {
            create: silent(CREATE),
            save: announcing(SAVE),
            save_unloaded: announcing(SAVE_UNLOADED),
            touch: announcing(TOUCH),
            compare_and_set: announcing(COMPARE_AND_SET),
            delete: StoreScript {
                script: Script::new(&format!("{announce}{DELETE}")),
                announces: true,
            },
            index: silent(INDEX),
            take_index: silent(TAKE_INDEX),
            end_sessions: announcing(END_SESSIONS),
            end_session: announcing(END_SESSION),
            channel,
        }
    }

    /// A call of `script` with `keys`, on the session `key`: a script that calls
    /// `announce()` gets the invalidation of `key` as its first arguments when there
    /// is a channel.
    pub(crate) fn call<'a>(
        &self,
        script: &'a StoreScript,
        keys: &[&str],
        key: &SessionKey,
    ) -> ScriptCall<'a> {
        self.announcing(script, keys, Invalidation::Session(*key))
    }

    /// A call of `script` with `keys` that announces the end of `user`'s sessions.
    pub(crate) fn call_for_user<'a>(
        &self,
        script: &'a StoreScript,
        keys: &[&str],
        user: &str,
    ) -> ScriptCall<'a> {
        self.announcing(script, keys, Invalidation::User(user.to_owned()))
    }

    fn announcing<'a>(
        &self,
        script: &'a StoreScript,
        keys: &[&str],
        invalidation: Invalidation,
    ) -> ScriptCall<'a> {
        let mut call = ScriptCall::new(&script.script, keys);
        if let (true, Some(channel)) = (script.announces, &self.channel) {
            call.arg(channel.as_str()).arg_fmt(invalidation);
        }
        call
    }
}

/// One call of a script: `EVALSHA`, the script's hash, its keys and its arguments,
/// each argument's bytes written once, straight into the command that carries them.
/// The `redis` crate's `ScriptInvocation` keeps every argument in a vector of its own
/// and copies them into the command when it sends it; with the strings they were
/// made from first, a write's arguments cost about twenty allocations.
pub(crate) struct ScriptCall<'a> {
    script: &'a Script,
    command: Cmd,
}

impl<'a> ScriptCall<'a> {
    /// A call of `script` with `keys`, all of them: their count comes first.
    fn new(script: &'a Script, keys: &[&str]) -> Self {
        let mut command = redis::cmd("EVALSHA");
        command.arg(script.get_hash()).arg(keys.len());
        for key in keys {
            command.arg(*key);
        }
        Self { script, command }
    }

    /// Adds `arg` to `ARGV`.
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.command.arg(arg);
        self
    }

    /// Adds `arg`'s text to `ARGV`, formatted in place.
    pub(crate) fn arg_fmt(&mut self, arg: impl fmt::Display) -> &mut Self {
        self.command.write_arg_fmt(arg);
        self
    }

    /// Adds the field that holds the data key `name`.
    pub(crate) fn data_field(&mut self, name: &str) -> &mut Self {
        self.arg_fmt(format_args!("{DATA_FIELD_PREFIX}{name}"))
    }

    /// Adds `value` as its JSON text.
    pub(crate) fn json(&mut self, value: &Value) -> &mut Self {
        // `Value`'s `Display` is its compact JSON.
        self.arg_fmt(value)
    }

    /// Adds `meta` as its JSON text.
    pub(crate) fn meta(&mut self, meta: &Meta) -> Result<&mut Self, serde_json::Error> {
        serde_json::to_writer(self.command.writer_for_next_arg(), meta)?;
        Ok(self)
    }

    /// Runs the call. A script the server lacks is loaded and the call sent again; it
    /// can be missing again at the call after the load, when a Sentinel connection
    /// moved to a new master in between, so a second `NOSCRIPT` gets one more load.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        connection: &mut WatchedConnection,
    ) -> Result<T, StoreError> {
        let mut loads_left = 2;
        loop {
            match self.command.query_async(connection).await {
                Err(error)
                    if loads_left > 0
                        && error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                {
                    loads_left -= 1;
                    self.script
                        .load_async(connection)
                        .await
                        .map_err(StoreError::unavailable)?;
                }
                result => return result.map_err(StoreError::unavailable),
            }
        }
    }
}
