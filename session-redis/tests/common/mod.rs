//! The shared Redis as a store, and the servers of the test kit.

#![allow(dead_code, unreachable_pub)] // Each test binary uses its own part of this.

use session_redis::RedisStore;
pub use session_testkit::redis_servers::*;

/// A store on the shared server under a prefix no other test uses.
pub async fn shared_store() -> RedisStore {
    shared_store_with_prefix().await.0
}

/// The same, with the prefix, for tests that look at the raw keys.
pub async fn shared_store_with_prefix() -> (RedisStore, String) {
    let store = on_shared_server(|url| async move { RedisStore::connect(&url).await }).await;
    let prefix = unique_prefix();
    (store.with_prefix(prefix.clone()), prefix)
}
