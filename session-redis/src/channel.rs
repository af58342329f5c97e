//! [`RedisChannel`]: the invalidation channel over Redis pub/sub, on a server or on the
//! master that Redis Sentinel names.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::sentinel::SentinelClient;
use redis::AsyncConnectionConfig;
use session_core::store::{
    async_trait, own_topic, BoxError, Heard, Invalidation, InvalidationChannel, Subscription,
};
use session_core::StoreError;
use tokio::task::JoinHandle;

use crate::connect::sentinel_client;

/// How long a `PUBLISH` may go unanswered before it is sent again on another
/// connection; answered in well under a millisecond by a server that is there.
const PUBLISH_LIMIT: Duration = Duration::from_millis(250);

/// How long a subscription has to be set up: a server that accepts connections but
/// does not answer would hold the attempt until TCP gives up.
const SUBSCRIPTION_SETUP: Duration = Duration::from_secs(2);

/// How often the subscription over Sentinel checks that its Sentinel still answers.
const SENTINEL_CHECK: Duration = Duration::from_secs(1);

/// Invalidations over Redis pub/sub, for a tiered store: on a server
/// ([`connect`](Self::connect)), or on whichever server Redis Sentinel names master
/// ([`sentinel`](Self::sentinel)).
///
/// ```no_run
/// # async fn run() -> Result<(), session_core::StoreError> {
/// use session_redis::RedisChannel;
///
/// let channel = RedisChannel::connect("redis://127.0.0.1:6379", "myapp:invalidate").await?;
/// # let _ = channel;
/// # Ok(()) }
/// ```
pub struct RedisChannel {
    shared: String,
    own: String,
    server: Server,
}

enum Server {
    /// The publisher holds the client that subscriptions connect with too.
    Address(Box<Publisher>),
    /// Only strict mode's markers are published over Sentinel, on the connection
    /// beside the subscription (in the slot while it lasts): they must go through the
    /// node they are awaited on.
    Sentinel {
        sentinel: Arc<tokio::sync::Mutex<SentinelClient>>,
        master_name: Arc<str>,
        beside: Arc<Mutex<Option<MultiplexedConnection>>>,
    },
}

impl RedisChannel {
    /// Pub/sub on `name` at `url` (`redis://host:port`): one connection publishes,
    /// one per subscription listens.
    pub async fn connect(url: &str, name: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::unavailable)?;
        let publisher = Publisher::connect(client)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(Self {
            shared: name.to_owned(),
            own: own_topic(name, ":")?,
            server: Server::Address(Box::new(publisher)),
        })
    }

    /// Pub/sub on `name` on the master that the Sentinels at `sentinels`
    /// (`redis://host:26379`) name for `master_name`, followed through failovers.
    ///
    /// It publishes no invalidations ([`publishes_invalidations`] is `false`): one
    /// published on a master about to be replaced could reach nobody. The central
    /// store must publish them inside its writes
    /// ([`RedisStore::with_invalidation_channel`](crate::RedisStore::with_invalidation_channel)).
    ///
    /// A subscription ends (and the tiered store bypasses its cache until the next is
    /// up) when its connection is lost, when a Sentinel announces a new master
    /// (`+switch-master`: how a master that stopped answering without closing its
    /// connections is noticed), or when the Sentinel stops answering.
    ///
    /// [`publishes_invalidations`]: InvalidationChannel::publishes_invalidations
    pub fn sentinel<I, U>(sentinels: I, master_name: &str, name: &str) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let sentinel = sentinel_client(sentinels, master_name).map_err(StoreError::unavailable)?;
        Ok(Self {
            shared: name.to_owned(),
            own: own_topic(name, ":")?,
            server: Server::Sentinel {
                sentinel: Arc::new(tokio::sync::Mutex::new(sentinel)),
                master_name: master_name.into(),
                beside: Arc::default(),
            },
        })
    }
}

impl fmt::Debug for RedisChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisChannel")
            .field("name", &self.shared)
            .field(
                "server",
                &match self.server {
                    Server::Address(_) => "address",
                    Server::Sentinel { .. } => "sentinel",
                },
            )
            .finish()
    }
}

#[async_trait]
impl InvalidationChannel for RedisChannel {
    fn name(&self) -> &str {
        &self.shared
    }

    async fn publish(&self, invalidation: &Invalidation) -> Result<(), BoxError> {
        match &self.server {
            Server::Address(publisher) => {
                publisher
                    .publish(&self.shared, &invalidation.encode())
                    .await
            }
            Server::Sentinel { .. } => {
                Err("invalidations over Sentinel are the central store's to publish".into())
            }
        }
    }

    async fn publish_marker(&self, number: u64) -> Result<(), BoxError> {
        let marker = Heard::marker(number);
        match &self.server {
            Server::Address(publisher) => publisher.publish(&self.own, &marker).await,
            Server::Sentinel { beside, .. } => {
                let connection = beside.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let mut connection = connection.ok_or("the channel is not subscribed")?;
                publish(&mut connection, &self.own, &marker).await
            }
        }
    }

    fn publishes_invalidations(&self) -> bool {
        matches!(self.server, Server::Address(_))
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, BoxError> {
        let topics = [self.shared.as_str(), self.own.as_str()];
        match &self.server {
            Server::Address(publisher) => {
                let setup = async {
                    let mut pubsub = publisher.client.get_async_pubsub().await?;
                    pubsub.subscribe(&topics).await?;
                    Ok::<_, BoxError>(pubsub)
                };
                let pubsub = tokio::time::timeout(SUBSCRIPTION_SETUP, setup)
                    .await
                    .map_err(|_| "the channel's server did not answer")??;
                let (sink, messages) = pubsub.split();
                Ok(Box::new(RedisSubscription {
                    sink,
                    messages,
                    own: self.own.clone(),
                    sentinel: None,
                }))
            }
            Server::Sentinel {
                sentinel,
                master_name,
                beside,
            } => sentinel_subscription(sentinel, master_name, &topics, &self.own, beside).await,
        }
    }
}

/// The subscription over Sentinel: on the master the Sentinels name, with the
/// connection strict mode's markers are published on beside it, and a task that
/// watches the Sentinel for a new master. A master that stops answering closes
/// nothing, so without the announcement this server would stay subscribed to it,
/// hearing none of the invalidations the central store publishes on the new master.
/// The Sentinel is asked every second whether it still answers, since a Sentinel cut
/// off would announce nothing either.
async fn sentinel_subscription(
    sentinel: &tokio::sync::Mutex<SentinelClient>,
    master_name: &Arc<str>,
    topics: &[&str; 2],
    own: &str,
    beside: &Arc<Mutex<Option<MultiplexedConnection>>>,
) -> Result<Box<dyn Subscription>, BoxError> {
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
        pubsub.subscribe(topics).await?;
        Ok::<_, BoxError>((announcements, publisher, pubsub))
    };
    let (announcements, publisher, pubsub) = tokio::time::timeout(SUBSCRIPTION_SETUP, setup)
        .await
        .map_err(|_| "the Sentinel or the master it names did not answer")??;
    *beside.lock().unwrap_or_else(|e| e.into_inner()) = Some(publisher);
    let watch = tokio::spawn(watch_sentinel(announcements, master_name.clone()));
    let (sink, messages) = pubsub.split();
    Ok(Box::new(RedisSubscription {
        sink,
        messages,
        own: own.to_owned(),
        sentinel: Some(SentinelWatch {
            task: watch,
            beside: beside.clone(),
        }),
    }))
}

/// Ends with the reason the subscription must be given up: a new master, or a
/// Sentinel that no longer answers.
async fn watch_sentinel(announcements: redis::aio::PubSub, master_name: Arc<str>) -> BoxError {
    let (mut sink, mut announcements) = announcements.split();
    let mut check = tokio::time::interval(SENTINEL_CHECK);
    loop {
        tokio::select! {
            announcement = announcements.next() => {
                let Some(announcement) = announcement else {
                    return "the Sentinel's connection closed".into();
                };
                let payload = String::from_utf8_lossy(announcement.get_payload_bytes());
                if payload.split(' ').next() == Some(&*master_name) {
                    return format!("the Sentinel switched the master: {payload}").into();
                }
            }
            _ = check.tick() => {
                let ping = sink.ping::<redis::Value>();
                let answered = tokio::time::timeout(SENTINEL_CHECK, ping).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return "the Sentinel stopped answering".into();
                }
            }
        }
    }
}

struct RedisSubscription {
    sink: PubSubSink,
    messages: PubSubStream,
    own: String,
    sentinel: Option<SentinelWatch>,
}

/// What a subscription over Sentinel holds besides its connection.
struct SentinelWatch {
    task: JoinHandle<BoxError>,
    beside: Arc<Mutex<Option<MultiplexedConnection>>>,
}

impl Drop for SentinelWatch {
    fn drop(&mut self) {
        self.task.abort();
        *self.beside.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn next(&mut self) -> Result<Option<Heard>, BoxError> {
        let message = match &mut self.sentinel {
            None => self.messages.next().await,
            Some(watch) => tokio::select! {
                message = self.messages.next() => message,
                ended = &mut watch.task => {
                    return Err(ended.unwrap_or_else(|error| error.to_string().into()));
                }
            },
        };
        Ok(message.map(|message| {
            let own = message.get_channel_name() == self.own;
            Heard::decode(own, message.get_payload_bytes())
        }))
    }

    async fn ping(&mut self) -> Result<(), BoxError> {
        self.sink.ping::<redis::Value>().await?;
        Ok(())
    }
}

/// The connection invalidations are published on, replaced when a publish fails or
/// goes unanswered: one that died without closing (a partition, a NAT or load
/// balancer that forgot the flow) would otherwise swallow every invalidation until
/// TCP gave up, minutes later, while the other servers go on serving what it
/// should have dropped. Publishing twice is harmless: an invalidation drops a copy.
struct Publisher {
    client: redis::Client,
    config: AsyncConnectionConfig,
    /// The current connection, numbered so that a publish that saw one fail drops
    /// that one, not a newer one.
    current: Mutex<(u64, Option<MultiplexedConnection>)>,
}

impl Publisher {
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

    async fn publish(&self, topic: &str, payload: &str) -> Result<(), BoxError> {
        let mut failure: BoxError = "not published".into();
        for _ in 0..2 {
            let (number, mut connection) = self.connection().await?;
            let published = publish(&mut connection, topic, payload);
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

async fn publish(
    connection: &mut MultiplexedConnection,
    topic: &str,
    payload: &str,
) -> Result<(), BoxError> {
    redis::cmd("PUBLISH")
        .arg(topic)
        .arg(payload)
        .query_async::<i64>(connection)
        .await
        .map(drop)
        .map_err(Into::into)
}
