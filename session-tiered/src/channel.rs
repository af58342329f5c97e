//! The invalidation channel: a connection that publishes, a task that keeps a
//! subscription and applies what arrives to the local tier, and a task that sends
//! strict mode's markers. Over Redis pub/sub, or PostgreSQL `LISTEN`/`NOTIFY` (feature
//! `postgres`).

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::sentinel::SentinelClient;
use redis::AsyncConnectionConfig;
use session_core::{BoxError, SessionKey, StoreError};
use tokio::sync::watch;

use crate::local::Local;

/// How long the marker task waits for a marker before it sends another; a read
/// waiting for it gives up sooner (see `TieredStore::load`).
const MARKER_LIMIT: Duration = Duration::from_secs(1);

/// The longest identifier PostgreSQL keeps whole, in bytes.
#[cfg(feature = "postgres")]
const POSTGRES_IDENTIFIER_MAX: usize = 63;

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

#[derive(Clone)]
enum Publisher {
    Redis(Arc<RedisPublisher>),
    /// A connection to the master the subscription listens on, while it does: over
    /// Sentinel, strict mode's markers must go through the node they are awaited on.
    Beside(Arc<Mutex<Option<MultiplexedConnection>>>),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl Publisher {
    async fn publish(&self, channel: &str, payload: String) -> Result<(), BoxError> {
        match self {
            Publisher::Redis(publisher) => publisher.publish(channel, payload).await,
            Publisher::Beside(slot) => {
                let connection = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let mut connection = connection.ok_or("the channel is not subscribed")?;
                redis_publish(&mut connection, channel, &payload).await
            }
            #[cfg(feature = "postgres")]
            Publisher::Postgres(pool) => postgres_publish(pool, channel, payload).await,
        }
    }
}

/// How long a `PUBLISH` (or a `NOTIFY`) may go unanswered before it is sent again on
/// another connection; answered in well under a millisecond by a server that is there.
const PUBLISH_LIMIT: Duration = Duration::from_millis(250);

/// `NOTIFY` through `pool`; one that goes unanswered for [`PUBLISH_LIMIT`] is sent
/// again on another connection, as over Redis. The connection that did not answer is
/// closed rather than put back: sqlx tests a connection put back mid-statement with a
/// ping of no time limit, which on a connection that died without closing would hold
/// one of the pool's two places until TCP gave up; with both so held, no invalidation
/// would go out at all.
#[cfg(feature = "postgres")]
async fn postgres_publish(
    pool: &sqlx::PgPool,
    channel: &str,
    payload: String,
) -> Result<(), BoxError> {
    let mut failure: BoxError = "not published".into();
    for _ in 0..2 {
        let mut connection = pool.acquire().await?;
        let notify = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(&payload)
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

/// The connection invalidations are published on, replaced when a publish fails or
/// goes unanswered: one that died without closing (a partition, a NAT or load
/// balancer that forgot the flow) would otherwise swallow every invalidation until
/// TCP gave up, minutes later, while the other servers go on serving what it
/// should have dropped. Publishing twice is harmless: an invalidation drops a copy.
struct RedisPublisher {
    client: redis::Client,
    config: AsyncConnectionConfig,
    /// The current connection, numbered so that a publish that saw one fail drops
    /// that one, not a newer one.
    current: Mutex<(u64, Option<MultiplexedConnection>)>,
}

impl RedisPublisher {
    async fn connect(client: redis::Client) -> Result<Self, BoxError> {
        // No response timeout of the crate's: `publish` has its own limit.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(SUBSCRIPTION_SETUP))
            .set_response_timeout(None);
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Self {
            client,
            config,
            current: Mutex::new((1, Some(connection))),
        })
    }

    async fn publish(&self, channel: &str, payload: String) -> Result<(), BoxError> {
        let mut failure: BoxError = "not published".into();
        for _ in 0..2 {
            let (number, mut connection) = self.connection().await?;
            let published = redis_publish(&mut connection, channel, &payload);
            match tokio::time::timeout(PUBLISH_LIMIT, published).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => failure = error,
                Err(_) => failure = "the channel's server did not answer".into(),
            }
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if current.0 == number {
                current.1 = None;
            }
        }
        Err(failure)
    }

    async fn connection(&self) -> Result<(u64, MultiplexedConnection), BoxError> {
        if let (number, Some(connection)) = &*self.current.lock().unwrap_or_else(|e| e.into_inner())
        {
            return Ok((*number, connection.clone()));
        }
        let made = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.1.is_none() {
            *current = (current.0 + 1, Some(made));
        }
        let connection = current.1.clone().expect("set just now");
        Ok((current.0, connection))
    }
}

async fn redis_publish(
    connection: &mut impl redis::aio::ConnectionLike,
    channel: &str,
    payload: &str,
) -> Result<(), BoxError> {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async::<i64>(connection)
        .await
        .map(drop)
        .map_err(Into::into)
}

/// The channels a subscription listens on: the shared one, and this server's own,
/// where only its markers arrive.
#[derive(Clone)]
struct Names {
    shared: String,
    own: String,
}

impl Names {
    /// `own` is the shared name with `separator` and 16 random hex digits; unknown to
    /// any other server, so no one else's markers (or a forged one) arrive on it.
    fn new(shared: &str, separator: &str) -> Result<Self, StoreError> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|error| StoreError::unavailable(error.to_string()))?;
        let suffix: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self {
            shared: shared.to_owned(),
            own: format!("{shared}{separator}{suffix}"),
        })
    }
}

pub(crate) struct Channel {
    publisher: Publisher,
    names: Names,
    /// Dropped with the store, which ends the subscriber and marker tasks.
    _stop: watch::Sender<()>,
}

impl Channel {
    /// Redis pub/sub on `name`.
    pub(crate) async fn redis(
        url: &str,
        name: &str,
        local: &Arc<Local>,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::unavailable)?;
        let publisher = RedisPublisher::connect(client.clone())
            .await
            .map_err(StoreError::unavailable)?;
        let names = Names::new(name, ":")?;
        let subscription = {
            let names = names.clone();
            move |local: Weak<Local>| redis_subscription(client.clone(), names.clone(), local)
        };
        Ok(Self::start(
            Publisher::Redis(Arc::new(publisher)),
            names,
            local,
            subscription,
        ))
    }

    /// Redis pub/sub on `name`, on whichever server the Sentinels behind `sentinel` name
    /// master of `master_name`. Only strict mode's markers are published here: every
    /// invalidation comes from the central store, inside its writes on that master.
    pub(crate) fn redis_sentinel(
        sentinel: SentinelClient,
        master_name: &str,
        name: &str,
        local: &Arc<Local>,
    ) -> Result<Self, StoreError> {
        let names = Names::new(name, ":")?;
        let slot = Arc::new(Mutex::new(None));
        let subscription = {
            let names = names.clone();
            let sentinel = Arc::new(tokio::sync::Mutex::new(sentinel));
            let master_name: Arc<str> = master_name.into();
            let slot = slot.clone();
            move |local: Weak<Local>| {
                sentinel_subscription(
                    sentinel.clone(),
                    master_name.clone(),
                    names.clone(),
                    local,
                    slot.clone(),
                )
            }
        };
        Ok(Self::start(
            Publisher::Beside(slot),
            names,
            local,
            subscription,
        ))
    }

    /// PostgreSQL `NOTIFY` on `name` (a channel name: letters, digits and `_`, at most
    /// 46 of them, so that this server's own channel, 17 characters longer, is a valid
    /// identifier too).
    #[cfg(feature = "postgres")]
    pub(crate) async fn postgres(
        url: &str,
        name: &str,
        local: &Arc<Local>,
    ) -> Result<Self, StoreError> {
        let names = Names::new(name, "_")?;
        // PostgreSQL cuts longer identifiers short on `LISTEN` but refuses them in
        // `pg_notify`: the two would never meet.
        if names.own.len() > POSTGRES_IDENTIFIER_MAX {
            return Err(StoreError::new(
                session_core::StoreErrorKind::Other,
                format!("the channel name {name:?} is longer than 46 bytes"),
            ));
        }
        let publisher = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(2))
            // A ping before each publish would cost a round trip, and on a connection
            // gone silent wait out the acquire timeout: `postgres_publish` has a limit.
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(StoreError::unavailable)?;
        let url = url.to_owned();
        let subscription = {
            let names = names.clone();
            move |local: Weak<Local>| postgres_subscription(url.clone(), names.clone(), local)
        };
        Ok(Self::start(
            Publisher::Postgres(publisher),
            names,
            local,
            subscription,
        ))
    }

    fn start<F, Fut>(
        publisher: Publisher,
        names: Names,
        local: &Arc<Local>,
        subscription: F,
    ) -> Self
    where
        F: FnMut(Weak<Local>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(());
        tokio::spawn(keep_subscribed(
            Arc::downgrade(local),
            stopped.clone(),
            subscription,
        ));
        tokio::spawn(send_markers(
            local.clone(),
            publisher.clone(),
            names.own.clone(),
            stopped,
        ));
        Self {
            publisher,
            names,
            _stop: stop,
        }
    }

    /// Tells the other servers. A failure is logged, not returned: the write it
    /// follows is in the central store already, and a server that cannot hear this
    /// has lost its own subscription to the same server, so it is not serving copies.
    pub(crate) async fn publish(&self, message: &Message) {
        publish_logged(&self.publisher, &self.names.shared, message).await;
    }

    /// Whether this channel can carry the invalidations of this store's own writes:
    /// over Sentinel, only the central store's may be relied on.
    pub(crate) fn can_publish_invalidations(&self) -> bool {
        !matches!(self.publisher, Publisher::Beside(_))
    }

    /// The shared channel's name.
    pub(crate) fn name(&self) -> &str {
        &self.names.shared
    }

    /// [`publish`](Self::publish) from a task of its own, for a caller that cannot
    /// wait (one being dropped); nothing, outside a tokio runtime.
    pub(crate) fn publish_detached(&self, message: Message) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("session invalidation not published: no runtime");
            return;
        };
        let (publisher, channel) = (self.publisher.clone(), self.names.shared.clone());
        runtime.spawn(async move { publish_logged(&publisher, &channel, &message).await });
    }
}

async fn publish_logged(publisher: &Publisher, channel: &str, message: &Message) {
    if let Err(error) = publisher.publish(channel, message.encode()).await {
        tracing::warn!(%error, "session invalidation not published");
    }
}

/// Sends strict mode's markers on this server's own channel, one at a time, as reads
/// want them, until the store is dropped.
async fn send_markers(
    local: Arc<Local>,
    publisher: Publisher,
    own: String,
    mut stopped: watch::Receiver<()>,
) {
    loop {
        let number = tokio::select! {
            number = local.barrier.next() => number,
            _ = stopped.changed() => return,
        };
        if let Err(error) = publisher.publish(&own, format!("b{number}")).await {
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

/// Runs `subscription` (connect, subscribe, mark the tier subscribed, apply messages
/// until the connection is lost) again and again until the store is dropped; whenever
/// it ends, the tier stops serving and flushes.
async fn keep_subscribed<F, Fut>(
    local: Weak<Local>,
    mut stopped: watch::Receiver<()>,
    mut subscription: F,
) where
    F: FnMut(Weak<Local>) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let retry = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            outcome = subscription(local.clone()) => outcome,
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
            _ = tokio::time::sleep(retry) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Applies one message that arrived on `channel`; `false` once the store is gone.
fn apply(local: &Weak<Local>, names: &Names, channel: &str, payload: &[u8]) -> bool {
    let Some(tier) = local.upgrade() else {
        return false;
    };
    if channel == names.own {
        match marker_number(payload) {
            Some(number) => tier.barrier.reached(number),
            None => tracing::warn!("unreadable strict mode marker ignored"),
        }
        return true;
    }
    match Message::decode(payload) {
        Some(Message::Session(key)) => {
            tier.invalidate(&key);
            tier.heard(&key);
        }
        Some(Message::User(user)) => tier.invalidate_user(&user),
        None => tracing::warn!("unreadable session invalidation ignored"),
    }
    true
}

fn marker_number(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload)
        .ok()?
        .strip_prefix('b')?
        .parse()
        .ok()
}

fn subscribed(local: &Weak<Local>) -> bool {
    local.upgrade().map(|tier| tier.subscribed()).is_some()
}

/// How long a subscription may go without a message before it is asked whether its
/// connection still answers, and how long the answer may take. A connection that died
/// without closing (its server frozen or cut off, a NAT or load balancer that forgot
/// the flow) brings no messages and no error; without the question this server would
/// go on serving copies that others' invalidations no longer reach. So a copy is
/// served at most about twice this long after the last message that could have
/// dropped it was lost.
const QUIET_LIMIT: Duration = Duration::from_secs(1);

/// How long a subscription has to be set up: a server that accepts connections but
/// does not answer would hold the attempt until TCP gives up.
const SUBSCRIPTION_SETUP: Duration = Duration::from_secs(2);

async fn redis_subscription(
    client: redis::Client,
    names: Names,
    local: Weak<Local>,
) -> Result<(), BoxError> {
    let setup = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&[&names.shared, &names.own]).await?;
        Ok::<_, BoxError>(pubsub)
    };
    let pubsub = tokio::time::timeout(SUBSCRIPTION_SETUP, setup)
        .await
        .map_err(|_| "the channel's server did not answer")??;
    if !subscribed(&local) {
        return Ok(());
    }
    redis_listen(pubsub, &names, &local).await
}

/// Applies what arrives on `pubsub` until its connection is lost or, asked after a
/// quiet spell, does not answer; `Ok` once the store is gone.
async fn redis_listen(
    pubsub: redis::aio::PubSub,
    names: &Names,
    local: &Weak<Local>,
) -> Result<(), BoxError> {
    let (mut sink, mut messages) = pubsub.split();
    loop {
        match tokio::time::timeout(QUIET_LIMIT, messages.next()).await {
            Ok(Some(message)) => {
                let channel = message.get_channel_name();
                if !apply(local, names, channel, message.get_payload_bytes()) {
                    return Ok(());
                }
            }
            Ok(None) => return Err("the channel's connection closed".into()),
            Err(_quiet) => {
                let ping = sink.ping::<redis::Value>();
                if !matches!(tokio::time::timeout(QUIET_LIMIT, ping).await, Ok(Ok(_))) {
                    return Err("the channel's server stopped answering".into());
                }
            }
        }
    }
}

/// How often the subscription over Sentinel checks that its Sentinel still answers.
const SENTINEL_CHECK: Duration = Duration::from_secs(1);

/// How long the Sentinel and the master it names have to set a subscription up.
const SENTINEL_SETUP: Duration = Duration::from_secs(2);

/// The subscription over Sentinel: on the master the Sentinels name, with the
/// connection strict mode's markers are published on beside it (in `slot` while the
/// subscription lasts), until either connection is lost or a Sentinel announces a new
/// master. A master that stops answering closes nothing, so without the announcement
/// this server would stay subscribed to it, hearing none of the invalidations the
/// central store publishes on the new master. The Sentinel is asked every second
/// whether it still answers, since a Sentinel cut off would announce nothing either.
async fn sentinel_subscription(
    sentinel: Arc<tokio::sync::Mutex<SentinelClient>>,
    master_name: Arc<str>,
    names: Names,
    local: Weak<Local>,
    slot: Arc<Mutex<Option<MultiplexedConnection>>>,
) -> Result<(), BoxError> {
    // Announcements first: a switch after the master is found is then heard. A
    // master that is named but frozen would answer none of this: the setup has a
    // limit, and the next attempt asks the Sentinels again.
    let setup = async {
        let mut sentinel = sentinel.lock().await;
        let mut announcements = sentinel
            .async_get_sentinel_client()
            .await?
            .get_async_pubsub()
            .await?;
        announcements.subscribe("+switch-master").await?;
        let master = sentinel.async_get_client().await?;
        drop(sentinel);
        let publisher = master.get_multiplexed_async_connection().await?;
        let mut pubsub = master.get_async_pubsub().await?;
        pubsub.subscribe(&[&names.shared, &names.own]).await?;
        Ok::<_, BoxError>((announcements, publisher, pubsub))
    };
    let (announcements, publisher, pubsub) =
        tokio::time::timeout(SENTINEL_SETUP, setup)
            .await
            .map_err(|_| "the Sentinel or the master it names did not answer")??;
    let (mut sentinel_sink, mut announcements) = announcements.split();
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(publisher);
    let watch_sentinel = async {
        let mut check = tokio::time::interval(SENTINEL_CHECK);
        loop {
            tokio::select! {
                announcement = announcements.next() => {
                    let Some(announcement) = announcement else {
                        return Err::<(), BoxError>("the Sentinel's connection closed".into());
                    };
                    let payload = String::from_utf8_lossy(announcement.get_payload_bytes());
                    if payload.split(' ').next() == Some(&*master_name) {
                        return Err(format!("the Sentinel switched the master: {payload}").into());
                    }
                }
                _ = check.tick() => {
                    let ping = sentinel_sink.ping::<redis::Value>();
                    let answered = tokio::time::timeout(SENTINEL_CHECK, ping).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        return Err("the Sentinel stopped answering".into());
                    }
                }
            }
        }
    };
    let ended = async {
        if !subscribed(&local) {
            return Ok(());
        }
        tokio::select! {
            ended = redis_listen(pubsub, &names, &local) => ended,
            ended = watch_sentinel => ended,
        }
    }
    .await;
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
    ended
}

#[cfg(feature = "postgres")]
async fn postgres_subscription(
    url: String,
    names: Names,
    local: Weak<Local>,
) -> Result<(), BoxError> {
    let setup = async {
        let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
        // A lost connection is reported at once (`Ok(None)`), not mended behind our
        // back: notifications sent meanwhile are lost, so the tier must flush first.
        listener.eager_reconnect(false);
        listener
            .listen_all([names.shared.as_str(), names.own.as_str()])
            .await?;
        Ok::<_, BoxError>(listener)
    };
    let mut listener = tokio::time::timeout(SUBSCRIPTION_SETUP, setup)
        .await
        .map_err(|_| "the channel's server did not answer")??;
    if !subscribed(&local) {
        return Ok(());
    }
    loop {
        // `try_recv` is cancel-safe: a notification half read when the wait ends is
        // kept for the next call.
        match tokio::time::timeout(QUIET_LIMIT, listener.try_recv()).await {
            Ok(received) => {
                let Some(notification) = received? else {
                    return Err("the channel's connection closed".into());
                };
                let (channel, payload) = (notification.channel(), notification.payload());
                if !apply(&local, &names, channel, payload.as_bytes()) {
                    return Ok(());
                }
            }
            Err(_quiet) => {
                // Notifications that arrive meanwhile are kept for `try_recv`.
                let ping = sqlx::query("SELECT 1").execute(&mut listener);
                if !matches!(tokio::time::timeout(QUIET_LIMIT, ping).await, Ok(Ok(_))) {
                    return Err("the channel's server stopped answering".into());
                }
            }
        }
    }
}
