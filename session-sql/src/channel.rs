//! [`PostgresChannel`]: the invalidation channel over PostgreSQL `LISTEN`/`NOTIFY`.

use std::fmt;
use std::time::Duration;

use session_core::store::{
    async_trait, own_topic, BoxError, Heard, Invalidation, InvalidationChannel, Subscription,
};
use session_core::{StoreError, StoreErrorKind};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use crate::ConfigError;

/// How long a `NOTIFY` may go unanswered before it is sent again on another
/// connection; answered in well under a millisecond by a server that is there.
const PUBLISH_LIMIT: Duration = Duration::from_millis(250);

/// How long a subscription has to be set up: a server that accepts connections but
/// does not answer would hold the attempt until TCP gives up.
const SUBSCRIPTION_SETUP: Duration = Duration::from_secs(2);

/// The longest identifier PostgreSQL keeps whole, in bytes.
const IDENTIFIER_MAX: usize = 63;

/// The longest shared channel name: this server's own, 17 bytes longer, must be a
/// whole identifier too.
const CHANNEL_NAME_MAX: usize = IDENTIFIER_MAX - 17;

/// Invalidations over PostgreSQL `NOTIFY` (through a small pool) and `LISTEN` (on a
/// connection per subscription), for a tiered store in front of a central store in
/// the same database.
///
/// ```no_run
/// # async fn run() -> Result<(), session_core::StoreError> {
/// use session_sql::PostgresChannel;
///
/// let channel = PostgresChannel::connect("postgres://localhost/app", "app_invalidate").await?;
/// # let _ = channel;
/// # Ok(()) }
/// ```
pub struct PostgresChannel {
    url: String,
    shared: String,
    own: String,
    pool: PgPool,
}

impl PostgresChannel {
    /// `NOTIFY` and `LISTEN` on `name` (letters, digits and `_`, at most 46 of them,
    /// so that this server's own channel, 17 bytes longer, is an identifier too).
    pub async fn connect(url: &str, name: &str) -> Result<Self, StoreError> {
        validate_channel(name).map_err(|error| StoreError::new(StoreErrorKind::Other, error))?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(2))
            // A ping before each publish would cost a round trip, and on a connection
            // gone silent wait out the acquire timeout: `notify` has a limit.
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(Self {
            url: url.to_owned(),
            shared: name.to_owned(),
            own: own_topic(name, "_")?,
            pool,
        })
    }

    /// `NOTIFY` through the pool; one that goes unanswered for [`PUBLISH_LIMIT`] is
    /// sent again on another connection. The connection that did not answer is
    /// closed rather than put back: sqlx tests a connection put back mid-statement
    /// with a ping of no time limit, which on a connection that died without closing
    /// would hold one of the pool's two places until TCP gave up; with both so held,
    /// no invalidation would go out at all.
    async fn notify(&self, topic: &str, payload: &str) -> Result<(), BoxError> {
        let mut failure: BoxError = "not published".into();
        for _ in 0..2 {
            let mut connection = self.pool.acquire().await?;
            let notify = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(topic)
                .bind(payload)
                .execute(&mut *connection);
            match tokio::time::timeout(PUBLISH_LIMIT, notify).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(error)) => failure = error.into(),
                Err(_) => failure = "the channel's server did not answer".into(),
            }
            drop(connection.detach());
        }
        Err(failure)
    }
}

/// A channel name goes into SQL text (`pg_notify` inside a store's statements): only
/// plain identifiers short enough for this server's own channel are accepted.
pub(crate) fn validate_channel(name: &str) -> Result<(), ConfigError> {
    let valid = (1..=CHANNEL_NAME_MAX).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::InvalidChannelName(name.to_owned()))
    }
}

impl fmt::Debug for PostgresChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresChannel")
            .field("name", &self.shared)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl InvalidationChannel for PostgresChannel {
    fn name(&self) -> &str {
        &self.shared
    }

    async fn publish(&self, invalidation: &Invalidation) -> Result<(), BoxError> {
        self.notify(&self.shared, &invalidation.encode()).await
    }

    async fn publish_marker(&self, number: u64) -> Result<(), BoxError> {
        self.notify(&self.own, &Heard::marker(number)).await
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, BoxError> {
        let setup = async {
            let mut listener = PgListener::connect(&self.url).await?;
            // A lost connection is reported at once (`Ok(None)`), not mended behind
            // our back: notifications sent meanwhile are lost, so the tier must flush.
            listener.eager_reconnect(false);
            listener
                .listen_all([self.shared.as_str(), self.own.as_str()])
                .await?;
            Ok::<_, BoxError>(listener)
        };
        let listener = tokio::time::timeout(SUBSCRIPTION_SETUP, setup)
            .await
            .map_err(|_| "the channel's server did not answer")??;
        Ok(Box::new(PostgresSubscription {
            listener,
            own: self.own.clone(),
        }))
    }
}

struct PostgresSubscription {
    listener: PgListener,
    own: String,
}

#[async_trait]
impl Subscription for PostgresSubscription {
    async fn next(&mut self) -> Result<Option<Heard>, BoxError> {
        // `try_recv` is cancel-safe: a notification half read when the wait ends is
        // kept for the next call.
        let Some(notification) = self.listener.try_recv().await? else {
            return Ok(None);
        };
        let own = notification.channel() == self.own;
        Ok(Some(Heard::decode(own, notification.payload().as_bytes())))
    }

    async fn ping(&mut self) -> Result<(), BoxError> {
        // Notifications that arrive meanwhile are kept for `try_recv`.
        sqlx::query("SELECT 1").execute(&mut self.listener).await?;
        Ok(())
    }
}
