//! A channel gone silent, checked the same way over every channel.

use std::time::{Duration, Instant};

use session_core::{SessionKey, SessionStore};
use session_testkit::proxy::CuttableProxy;
use session_tiered::TieredStore;

/// `a` listens through `proxy` and holds `key` cached; `b` listens directly. The
/// proxy cuts `a`'s connections silently and `b` deletes the session: `a` stops
/// serving it once its quiet subscription goes unanswered, though the invalidation
/// never reaches it, and subscribes again on a new connection. Gives how long `a`
/// served the deleted session.
pub(crate) async fn a_silent_channel_stops_serving<S: SessionStore>(
    proxy: &CuttableProxy,
    a: &TieredStore<S>,
    b: &TieredStore<S>,
    key: &SessionKey,
) -> Duration {
    let connections = proxy.connections();
    proxy.cut();
    let cut = Instant::now();
    b.delete(key).await.unwrap();
    while a.load(key).await.unwrap().is_some() {
        assert!(
            cut.elapsed() < Duration::from_secs(4),
            "a deleted session still served 4 s after the channel went silent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopped_after = cut.elapsed();
    while !a.is_coherent() {
        assert!(
            cut.elapsed() < Duration::from_secs(6),
            "never subscribed again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(proxy.connections() > connections);
    eprintln!("stopped serving {stopped_after:?} after the cut");
    stopped_after
}
