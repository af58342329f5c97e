//! The coherence window while the servers are busy, checked the same way over every
//! channel: a logout on one server, and how long another, loaded with reads, still
//! serves the session from its copy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use session_core::store::Record;
use session_core::{Meta, SessionStore, Timestamp};
use session_testkit::random_key;
use session_tiered::TieredStore;

/// Tasks reading cached sessions on the servers while the trials run.
const READERS: usize = 12;
const TRIALS: usize = 100;

/// A channel that never delivers lets a server serve its copy until the copy's idle
/// timeout (ten minutes here): a bound far above a working channel's window (well
/// under a millisecond on loopback) and far below that.
const BOUND: Duration = Duration::from_millis(500);

fn record() -> Record {
    let now = Timestamp::now();
    Record {
        data: [("a".to_owned(), json!(1))].into_iter().collect(),
        meta: Meta::new(now, now.saturating_add(Duration::from_secs(600))),
    }
}

/// Three servers `servers` over one central store, kept busy by readers on the
/// threads their subscriptions run on; a session made on the first and cached on the
/// second is deleted on the first, `TRIALS` times: the second stops serving it within
/// `BOUND` every time. Prints the window's percentiles.
pub(crate) async fn logouts_reach_a_busy_server<S: SessionStore>(servers: [TieredStore<S>; 3]) {
    let servers = Arc::new(servers);
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..READERS {
        let (servers, stop) = (servers.clone(), stop.clone());
        let key = random_key();
        servers[0].create(&key, &record()).await.unwrap();
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                servers[i % 3].load(&key).await.unwrap();
                // A server's requests give their thread up at their sockets.
                tokio::task::yield_now().await;
            }
        }));
    }
    let [a, b, _] = &*servers;
    let mut waits = Vec::with_capacity(TRIALS);
    for _ in 0..TRIALS {
        let key = random_key();
        a.create(&key, &record()).await.unwrap();
        assert!(b.load(&key).await.unwrap().is_some(), "b does not see it");
        a.delete(&key).await.unwrap();
        let deleted = Instant::now();
        while b.load(&key).await.unwrap().is_some() {
            assert!(
                deleted.elapsed() < BOUND,
                "b served a deleted session for {BOUND:?}"
            );
            tokio::task::yield_now().await;
        }
        waits.push(deleted.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    waits.sort();
    let at = |p: f64| waits[((waits.len() as f64 * p).ceil() as usize).clamp(1, waits.len()) - 1];
    eprintln!(
        "coherence, three busy servers: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
