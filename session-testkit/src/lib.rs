//! The session-kit store contract as tests.
//!
//! A store crate runs the whole contract with one macro call in its tests; each rule
//! becomes its own `#[tokio::test]`, so a failure names the rule it broke. The
//! expression is evaluated inside each test's async body, once per test, so it may
//! `.await` and should give every test a store that does not disturb the others
//! (unique key prefixes or tables, for a shared server):
//!
//! ```
//! # mod doc {
//! use session_memory::MemoryStore;
//!
//! session_testkit::conformance_tests!(MemoryStore::new());
//! # }
//! ```
//!
//! The rules are also public functions in [`contract`], for a store that wants to
//! run some of them its own way. Besides the contract the kit has what its tests use:
//! [`InstrumentedStore`] (counts calls, injects faults and id collisions), and an
//! in-process [`app`] with a cookie-keeping [`Client`], the [`outage`] scenario
//! for stores with a server, the rule of stores that announce their writes
//! ([`announcements`]), and a TCP [`proxy`] whose connections a test cuts silently.
//!
//! The caller needs `tokio` (with `macros` and `rt-multi-thread`) among its
//! dev-dependencies.

pub mod announcements;
mod app;
pub mod contract;
pub mod outage;
pub mod proxy;
mod wrappers;

pub use app::{app, App, Client, Pause, Reply};
pub use wrappers::InstrumentedStore;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_core::{SessionId, SessionKey, Timestamp};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A clock for `SessionLayerBuilder::with_clock` that a test moves forward: it runs
/// `set_ahead` ahead of the real time. Clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct MockClock {
    ahead_ms: Arc<AtomicI64>,
}

impl MockClock {
    /// A clock on the real time.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, runs `ahead` ahead of the real time.
    pub fn set_ahead(&self, ahead: Duration) {
        let millis = i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX);
        self.ahead_ms.store(millis, Ordering::SeqCst);
    }

    /// The clock to hand to the layer.
    pub fn now_fn(&self) -> impl Fn() -> Timestamp + Send + Sync + 'static {
        let ahead = self.ahead_ms.clone();
        move || {
            Timestamp::from_unix_millis(
                Timestamp::now().unix_millis() + ahead.load(Ordering::SeqCst),
            )
        }
    }
}

/// A random, well-formed session id as a client would send it: what an attacker can
/// make up.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("OS randomness");
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 63)]))
        .collect()
}

/// The key of a random id.
pub fn random_key() -> SessionKey {
    SessionId::parse(&random_token())
        .expect("a well-formed token")
        .key()
}

/// A user id no other test uses.
pub fn random_user() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("OS randomness");
    format!("user-{:016x}", u64::from_le_bytes(bytes))
}

/// Generates one `#[tokio::test]` per rule of the store contract, each running it
/// against the store that `$store` (evaluated inside the test) gives.
#[macro_export]
macro_rules! conformance_tests {
    ($store:expr) => {
        $crate::conformance_tests!(@tests ($store)
            load_of_unknown_key_is_none
            create_then_load_round_trips
            load_without_waiting_agrees_with_load
            create_never_overwrites
            save_applies_changes_not_snapshots

            save_stores_metadata
            save_unloaded_restarts_the_idle_timeout
            save_unloaded_never_creates_or_revives
            writes_never_create
            delete_removes_the_record
            expired_records_are_never_returned
            touch_extends_expiry
            update_is_atomic
            update_can_decline
            user_index_lists_and_ends_sessions
            user_index_skips_expired_sessions
            attacker_chosen_id_is_never_adopted
            stored_key_is_not_a_cookie
            cycle_id_keeps_data_and_ends_the_old_id
            forced_collision_never_overwrites
            stale_save_after_logout_does_not_resurrect
            stale_unread_save_after_logout_does_not_resurrect
            an_unread_write_is_one_store_call
            parallel_requests_keep_disjoint_keys
            concurrent_increments_are_not_lost
            timeouts_follow_stored_times
            logout_ends_the_session_everywhere
            logout_everywhere_ends_every_session_of_the_user
            session_cap_ends_older_sessions
            load_error_is_not_no_session
        );
    };
    (@tests ($store:expr) $($rule:ident)*) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    $crate::contract::$rule($store).await;
                }
            )*
        }
    };
}
