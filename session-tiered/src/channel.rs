//! The tiered store's side of its invalidation channel: publishing, a task that keeps
//! a subscription and applies what arrives to the local tier, and a task that sends
//! strict mode's markers. The channel itself (Redis pub/sub, PostgreSQL `NOTIFY`, …)
//! is any [`InvalidationChannel`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use session_core::store::{BoxError, Heard, Invalidation, InvalidationChannel};
use tokio::sync::watch;

use crate::local::Local;

/// How long the marker task waits for a marker before it sends another; a read
/// waiting for it gives up sooner (see `TieredStore::load`).
const MARKER_LIMIT: Duration = Duration::from_secs(1);

/// How long a subscription may go without a message before it is asked whether its
/// connection still answers, and how long the answer may take. A connection that died
/// without closing (its server frozen or cut off, a NAT or load balancer that forgot
/// the flow) brings no messages and no error; without the question this server would
/// go on serving copies that others' invalidations no longer reach. So a copy is
/// served at most about twice this long after the last message that could have
/// dropped it was lost.
const QUIET_LIMIT: Duration = Duration::from_secs(1);

/// How long to wait before subscribing again after a subscription ended.
const RESUBSCRIBE: Duration = Duration::from_millis(100);

pub(crate) struct Channel {
    channel: Arc<dyn InvalidationChannel>,
    /// Dropped with the store, which ends the subscriber and marker tasks.
    _stop: watch::Sender<()>,
}

impl Channel {
    /// Starts the subscriber and marker tasks for `local`. Must be called inside a
    /// tokio runtime.
    pub(crate) fn start(channel: Arc<dyn InvalidationChannel>, local: &Arc<Local>) -> Self {
        let (stop, stopped) = watch::channel(());
        tokio::spawn(keep_subscribed(
            channel.clone(),
            Arc::downgrade(local),
            stopped.clone(),
        ));
        tokio::spawn(send_markers(channel.clone(), local.clone(), stopped));
        Self {
            channel,
            _stop: stop,
        }
    }

    /// Tells the other servers. A failure is logged, not returned: the write it
    /// follows is in the central store already, and a server that cannot hear this
    /// has lost its own subscription to the same server, so it is not serving copies.
    pub(crate) async fn publish(&self, message: &Invalidation) {
        publish_logged(self.channel.as_ref(), message).await;
    }

    /// Whether this channel can carry the invalidations of this store's own writes.
    pub(crate) fn can_publish_invalidations(&self) -> bool {
        self.channel.publishes_invalidations()
    }

    /// The shared topic's name.
    pub(crate) fn name(&self) -> &str {
        self.channel.name()
    }

    /// [`publish`](Self::publish) from a task of its own, for a caller that cannot
    /// wait (one being dropped); nothing, outside a tokio runtime.
    pub(crate) fn publish_detached(&self, message: Invalidation) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("session invalidation not published: no runtime");
            return;
        };
        let channel = self.channel.clone();
        runtime.spawn(async move { publish_logged(channel.as_ref(), &message).await });
    }
}

async fn publish_logged(channel: &dyn InvalidationChannel, message: &Invalidation) {
    if let Err(error) = channel.publish(message).await {
        tracing::warn!(%error, "session invalidation not published");
    }
}

/// Sends strict mode's markers on this server's own topic, one at a time, as reads
/// want them, until the store is dropped.
async fn send_markers(
    channel: Arc<dyn InvalidationChannel>,
    local: Arc<Local>,
    mut stopped: watch::Receiver<()>,
) {
    loop {
        let number = tokio::select! {
            number = local.barrier.next() => number,
            _ = stopped.changed() => return,
        };
        if let Err(error) = channel.publish_marker(number).await {
            // The reads waiting for it give up and load from the central store.
            tracing::warn!(%error, "strict mode's marker not published");
            continue;
        }
        tokio::select! {
            () = local.barrier.arrival(number, MARKER_LIMIT) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Subscribes and applies what arrives, again and again until the store is dropped;
/// whenever a subscription ends, the tier stops serving and flushes.
async fn keep_subscribed(
    channel: Arc<dyn InvalidationChannel>,
    local: Weak<Local>,
    mut stopped: watch::Receiver<()>,
) {
    loop {
        let outcome = tokio::select! {
            outcome = listen(channel.as_ref(), &local) => outcome,
            _ = stopped.changed() => return,
        };
        let Some(tier) = local.upgrade() else {
            return;
        };
        tier.lost();
        match outcome {
            Ok(()) => tracing::warn!("session invalidation channel closed; cache bypassed"),
            Err(error) => {
                tracing::warn!(%error, "session invalidation channel down; cache bypassed")
            }
        }
        drop(tier);
        tokio::select! {
            _ = tokio::time::sleep(RESUBSCRIBE) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// One subscription: marks the tier subscribed, then applies what arrives until the
/// subscription is lost or, asked after a quiet spell, does not answer; `Ok` once the
/// store is gone.
async fn listen(channel: &dyn InvalidationChannel, local: &Weak<Local>) -> Result<(), BoxError> {
    let mut subscription = channel.subscribe().await?;
    match local.upgrade() {
        Some(tier) => tier.subscribed(),
        None => return Ok(()),
    }
    loop {
        match tokio::time::timeout(QUIET_LIMIT, subscription.next()).await {
            Ok(heard) => {
                let Some(heard) = heard? else {
                    return Err("the channel's connection closed".into());
                };
                if !apply(local, heard) {
                    return Ok(());
                }
            }
            Err(_quiet) => {
                let ping = subscription.ping();
                if !matches!(tokio::time::timeout(QUIET_LIMIT, ping).await, Ok(Ok(()))) {
                    return Err("the channel's server stopped answering".into());
                }
            }
        }
    }
}

/// Applies one message; `false` once the store is gone.
fn apply(local: &Weak<Local>, heard: Heard) -> bool {
    let Some(tier) = local.upgrade() else {
        return false;
    };
    match heard {
        Heard::Marker(number) => tier.barrier.reached(number),
        Heard::Invalidation(Invalidation::Session(key)) => {
            tier.invalidate(&key);
            tier.heard(&key);
        }
        Heard::Invalidation(Invalidation::User(user)) => tier.invalidate_user(&user),
        Heard::Unreadable => tracing::warn!("unreadable session invalidation ignored"),
    }
    true
}
