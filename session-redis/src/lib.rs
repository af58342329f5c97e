//! [`RedisStore`]: sessions in Redis: a standalone server, a Redis Cluster, or the
//! master that Redis Sentinel names, followed through failovers.
//!
//! Every server of an application shares one Redis, so a user stays logged in
//! whichever server answers. Each session is one Redis hash under a hash-tagged key
//! (`{prefix}{<key>}`), so that every operation on a session stays in one slot of a
//! cluster; its TTL is the session's expiry. Writes are Lua scripts: one round trip
//! each, atomic, writing only the fields that changed, never re-creating a session
//! that is gone.
//!
//! | request | Redis round trips |
//! | --- | --- |
//! | no cookie, or a handler that never touches the session | 0 |
//! | reads the session | 1 (`HGETALL`); 2 when the idle timeout is due to be pushed back, which happens at most once per quarter of it per session |
//! | writes the session without reading it | 1: one script, which also restarts the idle timeout from the stored metadata |
//! | reads, then writes the session | 2: the load, then one script |
//! | `Session::update` | load, then `HGET` and one compare-and-set script per attempt |
//!
//! Why the push is not folded into the load: it would make the load a script, and on
//! this project's benchmark machine a script costs Redis 7.8 µs of CPU per read where
//! `HGETALL` costs under 3; a second round trip once every few
//! minutes per session is much the cheaper.
//!
//! An update's attempt fails only when the field changed since it was read. Updates
//! of one field from one process take turns before they read it, so that only
//! updates from other processes make attempts fail: N concurrent increments through
//! one store cost N scripts, not the N²/2 they would racing each other.
//!
//! With [`with_invalidation_channel`](RedisStore::with_invalidation_channel), each
//! script that changes or ends a session also publishes its invalidation, for the
//! tiered stores of other servers, in the same atomic step (one more command inside
//! the script, no round trip).
//!
//! A user's sessions are a sorted set scored by expiry. On a standalone server it is
//! kept in the same script as each write, atomically; on a cluster it lives in its own
//! slot and is kept by a second call after each write (listing skips members whose
//! session is gone). Deleting a session removes its member in a second call. Expired
//! members are dropped whenever the set is written, and the set's own TTL follows its
//! last member, so an index nobody touches again still ends empty.
//!
//! ```no_run
//! # async fn run() -> Result<(), session_core::StoreError> {
//! use session_redis::RedisStore;
//!
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
//! let layer = session_core::SessionLayer::new(store.with_prefix("myapp:session:"));
//! # let _ = layer;
//! # Ok(()) }
//! ```

mod channel;
mod connect;
mod layout;
mod scripts;
mod store;
mod turns;
mod watched;

pub use channel::RedisChannel;
/// The `redis` crate, whose errors are the sources of this store's errors.
pub use redis;
pub use store::RedisStore;
