//! The invalidation channel over Redis pub/sub: a connection that publishes, and a
//! task that keeps a subscription and applies what arrives to the local tier.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use session_core::{SessionKey, StoreError};
use tokio::sync::oneshot;

use crate::local::Local;

/// What changed elsewhere: one session, or every session of a user.
pub(crate) enum Message {
    Session(SessionKey),
    User(String),
}

impl Message {
    fn encode(&self) -> String {
        match self {
            Message::Session(key) => format!("k{key}"),
            Message::User(user) => format!("u{user}"),
        }
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        match text.split_at_checked(1)? {
            ("k", key) => SessionKey::parse(key).map(Message::Session),
            ("u", user) => Some(Message::User(user.to_owned())),
            _ => None,
        }
    }
}

pub(crate) struct Channel {
    publisher: ConnectionManager,
    name: String,
    /// Dropped with the store, which ends the subscriber task.
    _stop: oneshot::Sender<()>,
}

impl Channel {
    pub(crate) async fn connect(
        url: &str,
        name: &str,
        local: Arc<Local>,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::unavailable)?;
        let publisher = ConnectionManager::new(client.clone())
            .await
            .map_err(StoreError::unavailable)?;
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(subscribe(
            client,
            name.to_owned(),
            Arc::downgrade(&local),
            stopped,
        ));
        Ok(Self {
            publisher,
            name: name.to_owned(),
            _stop: stop,
        })
    }

    /// Tells the other servers. A failure is logged, not returned: the write it
    /// follows is in the central store already, and a server that cannot hear this
    /// has lost its own subscription to the same Redis, so it is not serving copies.
    pub(crate) async fn publish(&self, message: Message) {
        let mut connection = self.publisher.clone();
        let published: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(&self.name)
            .arg(message.encode())
            .query_async(&mut connection)
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, "session invalidation not published");
        }
    }
}

/// Keeps a subscription to `name` until the store is dropped: while subscribed, the
/// local tier serves copies and drops those named by messages; whenever the
/// subscription is lost, it stops serving and flushes, then subscribes again.
async fn subscribe(
    client: redis::Client,
    name: String,
    local: Weak<Local>,
    mut stopped: oneshot::Receiver<()>,
) {
    let retry = Duration::from_millis(100);
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&name).await?;
            let Some(tier) = local.upgrade() else {
                return Ok(());
            };
            tier.subscribed();
            drop(tier);
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Some(tier) = local.upgrade() else {
                    return Ok(());
                };
                match Message::decode(message.get_payload_bytes()) {
                    Some(Message::Session(key)) => tier.invalidate(&key),
                    Some(Message::User(user)) => tier.invalidate_user(&user),
                    None => tracing::warn!("unreadable session invalidation ignored"),
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        let outcome = tokio::select! {
            outcome = session => outcome,
            _ = &mut stopped => return,
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
            _ = tokio::time::sleep(retry) => {}
            _ = &mut stopped => return,
        }
    }
}
