//! The invalidation channel: a connection that publishes, and a task that keeps a
//! subscription and applies what arrives to the local tier. Over Redis pub/sub, or
//! PostgreSQL `LISTEN`/`NOTIFY` (feature `postgres`).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use session_core::{BoxError, SessionKey, StoreError};
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

enum Publisher {
    Redis(ConnectionManager),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

pub(crate) struct Channel {
    publisher: Publisher,
    name: String,
    /// Dropped with the store, which ends the subscriber task.
    _stop: oneshot::Sender<()>,
}

impl Channel {
    /// Redis pub/sub on `name`.
    pub(crate) async fn redis(
        url: &str,
        name: &str,
        local: &Arc<Local>,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::unavailable)?;
        let publisher = ConnectionManager::new(client.clone())
            .await
            .map_err(StoreError::unavailable)?;
        let name = name.to_owned();
        let subscription = {
            let name = name.clone();
            move |local: Weak<Local>| redis_subscription(client.clone(), name.clone(), local)
        };
        Ok(Self::start(
            Publisher::Redis(publisher),
            name,
            local,
            subscription,
        ))
    }

    /// PostgreSQL `NOTIFY` on `name` (a channel name: letters, digits and `_`).
    #[cfg(feature = "postgres")]
    pub(crate) async fn postgres(
        url: &str,
        name: &str,
        local: &Arc<Local>,
    ) -> Result<Self, StoreError> {
        let publisher = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(StoreError::unavailable)?;
        let (url, name) = (url.to_owned(), name.to_owned());
        let subscription = {
            let name = name.clone();
            move |local: Weak<Local>| postgres_subscription(url.clone(), name.clone(), local)
        };
        Ok(Self::start(
            Publisher::Postgres(publisher),
            name,
            local,
            subscription,
        ))
    }

    fn start<F, Fut>(
        publisher: Publisher,
        name: String,
        local: &Arc<Local>,
        subscription: F,
    ) -> Self
    where
        F: FnMut(Weak<Local>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(keep_subscribed(
            Arc::downgrade(local),
            stopped,
            subscription,
        ));
        Self {
            publisher,
            name,
            _stop: stop,
        }
    }

    /// Tells the other servers. A failure is logged, not returned: the write it
    /// follows is in the central store already, and a server that cannot hear this
    /// has lost its own subscription to the same server, so it is not serving copies.
    pub(crate) async fn publish(&self, message: Message) {
        let payload = message.encode();
        let published: Result<(), BoxError> = match &self.publisher {
            Publisher::Redis(connection) => redis::cmd("PUBLISH")
                .arg(&self.name)
                .arg(payload)
                .query_async::<i64>(&mut connection.clone())
                .await
                .map(drop)
                .map_err(Into::into),
            #[cfg(feature = "postgres")]
            Publisher::Postgres(pool) => sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.name)
                .bind(payload)
                .execute(pool)
                .await
                .map(drop)
                .map_err(Into::into),
        };
        if let Err(error) = published {
            tracing::warn!(%error, "session invalidation not published");
        }
    }
}

/// Runs `subscription` (connect, subscribe, mark the tier subscribed, apply messages
/// until the connection is lost) again and again until the store is dropped; whenever
/// it ends, the tier stops serving and flushes.
async fn keep_subscribed<F, Fut>(
    local: Weak<Local>,
    mut stopped: oneshot::Receiver<()>,
    mut subscription: F,
) where
    F: FnMut(Weak<Local>) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let retry = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            outcome = subscription(local.clone()) => outcome,
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

/// Applies one message; `false` once the store is gone.
fn apply(local: &Weak<Local>, payload: &[u8]) -> bool {
    let Some(tier) = local.upgrade() else {
        return false;
    };
    match Message::decode(payload) {
        Some(Message::Session(key)) => tier.invalidate(&key),
        Some(Message::User(user)) => tier.invalidate_user(&user),
        None => tracing::warn!("unreadable session invalidation ignored"),
    }
    true
}

fn subscribed(local: &Weak<Local>) -> bool {
    local.upgrade().map(|tier| tier.subscribed()).is_some()
}

async fn redis_subscription(
    client: redis::Client,
    name: String,
    local: Weak<Local>,
) -> Result<(), BoxError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&name).await?;
    if !subscribed(&local) {
        return Ok(());
    }
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        if !apply(&local, message.get_payload_bytes()) {
            break;
        }
    }
    Ok(())
}

#[cfg(feature = "postgres")]
async fn postgres_subscription(
    url: String,
    name: String,
    local: Weak<Local>,
) -> Result<(), BoxError> {
    let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
    // A lost connection is reported at once (`Ok(None)`), not mended behind our back:
    // notifications sent meanwhile are lost, so the tier must flush first.
    listener.eager_reconnect(false);
    listener.listen(&name).await?;
    if !subscribed(&local) {
        return Ok(());
    }
    while let Some(notification) = listener.try_recv().await? {
        if !apply(&local, notification.payload().as_bytes()) {
            break;
        }
    }
    Ok(())
}
