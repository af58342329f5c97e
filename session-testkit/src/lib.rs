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
//! ([`announcements`]), a TCP [`proxy`] whose connections a test cuts silently, and,
//! with the feature `redis-servers`, Redis servers a test owns (`redis_servers`:
//! standalone, a cluster, a Sentinel group).
//!
//! The caller needs `tokio` (with `macros` and `rt-multi-thread`) among its
//! dev-dependencies.

pub mod announcements;
mod app;
pub mod contract;
pub mod outage;
pub mod proxy;
#[cfg(feature = "redis-servers")]
pub mod redis_servers;
pub mod storm;
mod wrappers;

pub use app::{app, send, App, Client, Pause, Reply};
pub use wrappers::InstrumentedStore;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_core::store::SessionId;
use session_core::{SessionKey, Timestamp};

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

/// Runs `count` tasks, the `i`th made by `task(i)`, released together by a barrier
/// once all are spawned, and gives their outputs in order: how a test of a race makes
/// its requests overlap.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let doubled = session_testkit::released_together(4, |i| async move { i * 2 }).await;
/// assert_eq!(doubled, [0, 2, 4, 6]);
/// # }
/// ```
pub async fn released_together<T, F, Fut>(count: usize, task: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(count));
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (start, work) = (start.clone(), task(i));
            tokio::spawn(async move {
                start.wait().await;
                work.await
            })
        })
        .collect();
    let mut outputs = Vec::with_capacity(count);
    for task in tasks {
        outputs.push(task.await.expect("the task ran"));
    }
    outputs
}

/// Logs `user` in `count` times at once (released together), the `i`th through
/// `servers[i % servers.len()]`, each as a client of its own, and says how many of
/// those clients are logged in once every login has returned.
pub async fn concurrent_logins(servers: &[App], user: &str, count: usize) -> usize {
    let path = format!("/login/{user}");
    let mut clients = released_together(count, |i| {
        let (mut client, path) = (Client::new(&servers[i % servers.len()]), path.clone());
        async move {
            client.post(&path).await;
            client
        }
    })
    .await;
    let mut logged_in = 0;
    for client in &mut clients {
        if client.get("/user").await.body == user {
            logged_in += 1;
        }
    }
    logged_in
}

/// Generates one `#[tokio::test]` per rule of the store contract
/// ([`contract::RULES`]), each running it against the store that `$store` (evaluated
/// inside the test) gives.
#[macro_export]
macro_rules! conformance_tests {
    ($store:expr) => {
        $crate::__for_each_rule!($crate::conformance_tests, @tests ($store));
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
