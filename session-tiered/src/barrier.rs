//! Strict mode's sync point: a marker this server publishes on a channel of its own
//! and waits to receive back on its subscription.
//!
//! The subscription is one ordered stream: Redis appends every message for one
//! subscriber to that connection in the order it ran the `PUBLISH`es, whatever their
//! channels, and PostgreSQL delivers notifications in commit order. So once a marker
//! published after a read began comes back, every invalidation acknowledged before
//! the read began has been applied to the cache, and what the cache still holds is
//! current. Reads in flight share markers: one marker is out at a time, and the next
//! one serves every read that began while it was out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Notify};

pub(crate) struct Barrier {
    /// The number of the latest marker sent, or about to be.
    sent: AtomicU64,
    /// The highest marker number a read waits for.
    wanted: AtomicU64,
    /// Wakes the task that sends markers.
    want: Notify,
    /// The highest marker number received back.
    reached: watch::Sender<u64>,
}

impl Barrier {
    pub(crate) fn new() -> Self {
        Self {
            sent: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            want: Notify::new(),
            reached: watch::Sender::new(0),
        }
    }

    /// Waits until a marker sent after this call came back: `false` if none did
    /// within `limit` (the channel is slow or down), and the caller must not trust
    /// the cache.
    pub(crate) async fn pass(&self, limit: Duration) -> bool {
        // A marker numbered above what was sent when this read began is sent after
        // it began: the number is taken before the marker is published.
        let needed = self.sent.load(Ordering::SeqCst) + 1;
        let mut reached = self.reached.subscribe();
        self.wanted.fetch_max(needed, Ordering::SeqCst);
        self.want.notify_one();
        let came_back = matches!(
            tokio::time::timeout(limit, reached.wait_for(|reached| *reached >= needed)).await,
            Ok(Ok(_))
        );
        came_back
    }

    /// A marker came back on the subscription.
    pub(crate) fn reached(&self, number: u64) {
        self.reached.send_if_modified(|reached| {
            let later = number > *reached;
            if later {
                *reached = number;
            }
            later
        });
    }

    /// The number of the next marker to send, once a read wants one.
    pub(crate) async fn next(&self) -> u64 {
        loop {
            let wanted = self.want.notified();
            if self.wanted.load(Ordering::SeqCst) > self.sent.load(Ordering::SeqCst) {
                return self.sent.fetch_add(1, Ordering::SeqCst) + 1;
            }
            wanted.await;
        }
    }

    /// Waits up to `limit` for marker `number` to come back, so that one marker is
    /// out at a time and the reads that begin meanwhile share the next.
    pub(crate) async fn arrival(&self, number: u64, limit: Duration) {
        let mut reached = self.reached.subscribe();
        let _ = tokio::time::timeout(limit, reached.wait_for(|reached| *reached >= number)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Stands in for the channel: sends markers and, when told, delivers them.
    fn sender(barrier: &Arc<Barrier>) -> tokio::sync::mpsc::UnboundedReceiver<u64> {
        let (sent, delivered) = tokio::sync::mpsc::unbounded_channel();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            loop {
                let number = barrier.next().await;
                if sent.send(number).is_err() {
                    return;
                }
                barrier.arrival(number, Duration::from_secs(5)).await;
            }
        });
        delivered
    }

    #[tokio::test]
    async fn a_read_waits_for_a_marker_sent_after_it_began() {
        let barrier = Arc::new(Barrier::new());
        let mut markers = sender(&barrier);
        let first = tokio::spawn({
            let barrier = barrier.clone();
            async move { barrier.pass(Duration::from_secs(5)).await }
        });
        let number = markers.recv().await.unwrap();
        // A read that begins while that marker is out needs the next one.
        let second = tokio::spawn({
            let barrier = barrier.clone();
            async move { barrier.pass(Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        barrier.reached(number);
        assert!(first.await.unwrap());
        assert!(!second.is_finished());
        let next = markers.recv().await.unwrap();
        assert_eq!(next, number + 1);
        barrier.reached(next);
        assert!(second.await.unwrap());
    }

    #[tokio::test]
    async fn reads_in_flight_share_one_marker() {
        let barrier = Arc::new(Barrier::new());
        let mut markers = sender(&barrier);
        let reads: Vec<_> = (0..50)
            .map(|_| {
                let barrier = barrier.clone();
                tokio::spawn(async move { barrier.pass(Duration::from_secs(5)).await })
            })
            .collect();
        tokio::task::yield_now().await;
        let number = markers.recv().await.unwrap();
        barrier.reached(number);
        for read in reads {
            assert!(read.await.unwrap());
        }
        assert!(
            markers.try_recv().is_err(),
            "one marker served all 50 reads"
        );
    }

    #[tokio::test]
    async fn a_marker_that_never_comes_back_fails_the_read() {
        let barrier = Arc::new(Barrier::new());
        let _markers = sender(&barrier);
        assert!(!barrier.pass(Duration::from_millis(200)).await);
    }
}
