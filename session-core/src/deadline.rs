//! The store timeout, without a runtime timer per store call.
//!
//! Every store call of a layer has the same timeout, so the calls' deadlines come in
//! the order the calls start. They wait in one queue, and one task per layer (the
//! reaper) sleeps until the oldest deadline, fails the calls still waiting by then
//! and sleeps again. A call costs an allocation and two uncontended locks; it
//! registers no timer. A timer per call (`tokio::time::timeout`) made the runtime
//! wake its own I/O driver through an `eventfd` on about every second request (the
//! driver had parked with no timer pending): a system call and an extra turn of the
//! event loop on a Redis-backed read that otherwise makes two (see BENCHMARKS.md).
//!
//! The reaper sleeps on Tokio's clock, so a test with paused time sees the timeout
//! pass as before. It is spawned on the runtime of the call that finds none running
//! (again after that runtime shut down) and ends when the layer is dropped.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The deadlines of one layer's store calls that are still running.
pub(crate) struct Deadlines {
    inner: Arc<Inner>,
}

struct Inner {
    timeout: Duration,
    queue: Mutex<Queue>,
    /// Wakes an idle reaper when a call starts, and any reaper when the layer goes.
    wake_reaper: Arc<Notify>,
}

struct Queue {
    /// Oldest deadline first; calls that finished are taken off the front lazily.
    calls: VecDeque<Arc<Call>>,
    reaper: Reaper,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reaper {
    /// None running: the next call spawns one.
    Absent,
    /// Asleep until the oldest deadline, which is no later than any new call's.
    Sleeping,
    /// Waiting for a call to start: the queue was empty.
    Idle,
}

struct Call {
    deadline: Instant,
    state: Mutex<CallState>,
}

enum CallState {
    Waiting(Option<Waker>),
    Finished,
    Expired,
}

impl Deadlines {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                timeout,
                queue: Mutex::new(Queue {
                    calls: VecDeque::new(),
                    reaper: Reaper::Absent,
                }),
                wake_reaper: Arc::new(Notify::new()),
            }),
        }
    }

    /// Runs `future` to completion, or gives `None` once the timeout has passed.
    /// Outside a Tokio runtime nothing enforces the timeout.
    pub(crate) async fn bound<F: Future>(&self, future: F) -> Option<F::Output> {
        let call = self.start();
        let _finished = Finished(&call);
        let mut future = pin!(future);
        poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            let mut state = lock(&call.state);
            match &mut *state {
                CallState::Expired => Poll::Ready(None),
                CallState::Waiting(Some(waker)) if waker.will_wake(cx.waker()) => Poll::Pending,
                waiting => {
                    *waiting = CallState::Waiting(Some(cx.waker().clone()));
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn start(&self) -> Arc<Call> {
        let mut queue = lock(&self.inner.queue);
        // Read under the lock, so that the queue stays in deadline order.
        let call = Arc::new(Call {
            deadline: Instant::now() + self.inner.timeout,
            state: Mutex::new(CallState::Waiting(None)),
        });
        while queue
            .calls
            .front()
            .is_some_and(|oldest| oldest.is_finished())
        {
            queue.calls.pop_front();
        }
        queue.calls.push_back(Arc::clone(&call));
        match queue.reaper {
            Reaper::Sleeping => {}
            Reaper::Idle => {
                queue.reaper = Reaper::Sleeping;
                self.inner.wake_reaper.notify_one();
            }
            Reaper::Absent => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    queue.reaper = Reaper::Sleeping;
                    runtime.spawn(reap(
                        Arc::downgrade(&self.inner),
                        Arc::clone(&self.inner.wake_reaper),
                    ));
                }
            }
        }
        call
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.wake_reaper.notify_one();
    }
}

impl Inner {
    /// Fails the calls whose deadline has passed; gives the next deadline, or `None`
    /// when no call is waiting (the reaper is then idle).
    fn expire(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut queue = lock(&self.queue);
        let next = loop {
            let Some(oldest) = queue.calls.front() else {
                queue.reaper = Reaper::Idle;
                break None;
            };
            if oldest.deadline > now && !oldest.is_finished() {
                break Some(oldest.deadline);
            }
            if let Some(call) = queue.calls.pop_front() {
                expired.extend(call.expire());
            }
        };
        drop(queue);
        expired.into_iter().for_each(Waker::wake);
        next
    }
}

async fn reap(inner: Weak<Inner>, wake_reaper: Arc<Notify>) {
    // A runtime that shuts down drops this task: the next call spawns another.
    let _gone = Gone(inner.clone());
    loop {
        let Some(next) = inner.upgrade().map(|inner| inner.expire()) else {
            return;
        };
        match next {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => wake_reaper.notified().await,
        }
    }
}

struct Gone(Weak<Inner>);

impl Drop for Gone {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            lock(&inner.queue).reaper = Reaper::Absent;
        }
    }
}

impl Call {
    fn is_finished(&self) -> bool {
        matches!(*lock(&self.state), CallState::Finished)
    }

    /// Marks a call that is still waiting expired, and gives its waker.
    fn expire(&self) -> Option<Waker> {
        let mut state = lock(&self.state);
        match std::mem::replace(&mut *state, CallState::Expired) {
            CallState::Waiting(waker) => waker,
            finished => {
                *state = finished;
                None
            }
        }
    }
}

/// Marks the call finished however its future ends (completed, timed out or dropped).
struct Finished<'a>(&'a Call);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        *lock(&self.0.state) = CallState::Finished;
    }
}

/// Nothing panics while holding these locks; a poisoned one is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_outlives_the_timeout_gives_none_at_the_timeout() {
        let deadlines = Deadlines::new(Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(deadlines.bound(std::future::pending::<()>()).await, None);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_completes_in_time_gives_its_output() {
        let deadlines = Deadlines::new(Duration::from_millis(300));
        let slow = async {
            tokio::time::sleep(Duration::from_millis(299)).await;
            7
        };
        assert_eq!(deadlines.bound(slow).await, Some(7));
        assert_eq!(deadlines.bound(async { 8 }).await, Some(8));
    }

    #[tokio::test(start_paused = true)]
    async fn overlapping_calls_each_get_their_own_deadline() {
        let deadlines = Arc::new(Deadlines::new(Duration::from_millis(100)));
        let started = Instant::now();
        let mut calls = Vec::new();
        for i in 0..10u64 {
            let deadlines = Arc::clone(&deadlines);
            calls.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30 * i)).await;
                let hangs = i % 2 == 0;
                let result = deadlines
                    .bound(async move {
                        if hangs {
                            std::future::pending::<()>().await;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    })
                    .await;
                (i, result.is_some(), started.elapsed())
            }));
        }
        for call in calls {
            let (i, completed, at) = call.await.unwrap();
            if i % 2 == 0 {
                assert!(!completed, "call {i} should have timed out");
                assert_eq!(at, Duration::from_millis(30 * i + 100), "call {i}");
            } else {
                assert!(completed, "call {i} should have completed");
                assert_eq!(at, Duration::from_millis(30 * i + 50), "call {i}");
            }
        }
        // Nothing is left waiting, and the reaper went idle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let queue = lock(&deadlines.inner.queue);
        assert!(queue.calls.is_empty());
        assert!(queue.reaper == Reaper::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_is_not_woken_and_an_idle_reaper_wakes_for_the_next() {
        let deadlines = Deadlines::new(Duration::from_millis(100));
        let dropped = tokio::time::timeout(
            Duration::from_millis(10),
            deadlines.bound(std::future::pending::<()>()),
        )
        .await;
        assert!(dropped.is_err());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(lock(&deadlines.inner.queue).reaper == Reaper::Idle);
        let started = Instant::now();
        assert_eq!(deadlines.bound(std::future::pending::<()>()).await, None);
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[test]
    fn a_runtime_that_shuts_down_leaves_the_next_one_a_reaper() {
        let deadlines = Deadlines::new(Duration::from_millis(20));
        for _ in 0..3 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let hung = runtime.block_on(deadlines.bound(std::future::pending::<()>()));
            assert_eq!(hung, None);
        }
    }

    #[tokio::test]
    async fn the_reaper_ends_with_the_layer() {
        let deadlines = Deadlines::new(Duration::from_secs(60));
        assert_eq!(deadlines.bound(async { 1 }).await, Some(1));
        let inner = Arc::downgrade(&deadlines.inner);
        let wake_reaper = Arc::clone(&deadlines.inner.wake_reaper);
        drop(deadlines);
        assert!(inner.upgrade().is_none());
        // The reaper, woken by the drop, has let go of its handle on the signal.
        for _ in 0..100 {
            if Arc::strong_count(&wake_reaper) == 1 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the reaper is still running");
    }
}
