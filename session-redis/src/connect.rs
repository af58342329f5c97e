//! Connecting a [`RedisStore`]: to a server, a Redis Cluster, or the master Redis
//! Sentinel names.

use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, RedisError, RedisResult};
use session_core::StoreError;

use crate::layout::Keys;
use crate::scripts::Scripts;
use crate::watched::{Server, WatchedConnection};
use crate::RedisStore;

/// What the connection goes to: a cluster keeps a user's index in another slot than
/// the user's sessions.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    Standalone,
    Sentinel,
    Cluster,
}

/// How long a connection attempt may take, and on a cluster a command too, inside the
/// driver. The layer's own store timeout (one second by default) is what requests see.
/// A standalone connection gives commands no timeout of its own: the layer's bounds
/// every call already, and a second timer per command made the runtime wake its
/// driver through a system call on most requests.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(2);

/// A single connection's settings: a limit on connecting, none on commands.
fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(DRIVER_TIMEOUT))
        .set_response_timeout(None)
}

/// A client of the master the Sentinels at `sentinels` name for `master_name`.
pub(crate) fn sentinel_client<I, U>(sentinels: I, master_name: &str) -> RedisResult<SentinelClient>
where
    I: IntoIterator<Item = U>,
    U: AsRef<str>,
{
    let sentinels: Vec<String> = sentinels
        .into_iter()
        .map(|url| url.as_ref().to_owned())
        .collect();
    SentinelClient::build(
        sentinels,
        master_name.to_owned(),
        None,
        SentinelServerType::Master,
    )
}

pub(crate) fn unavailable(error: RedisError) -> StoreError {
    StoreError::unavailable(error)
}

impl RedisStore {
    /// Connects to a standalone Redis at `url` (`redis://host:port/db`). The connection
    /// is multiplexed and reconnects by itself when the server comes back.
    ///
    /// Commands carry no timeout of their own: behind a [`SessionLayer`] its store
    /// timeout bounds every call. Code that calls the store directly, outside a
    /// request, bounds it with `tokio::time::timeout`.
    ///
    /// [`SessionLayer`]: session_core::SessionLayer
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let connection = WatchedConnection::connect(Server::Address(client), connection_config())
            .await
            .map_err(unavailable)?;
        Ok(Self::new(connection, Topology::Standalone))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port`).
    pub async fn connect_cluster<I, U>(nodes: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|u| u.as_ref().to_owned()).collect();
        let client = ClusterClient::builder(nodes)
            .connection_timeout(DRIVER_TIMEOUT)
            .response_timeout(DRIVER_TIMEOUT)
            .retries(2)
            .build()
            .map_err(unavailable)?;
        let connection = WatchedConnection::connect(Server::Cluster(client), connection_config())
            .await
            .map_err(unavailable)?;
        Ok(Self::new(connection, Topology::Cluster))
    }

    /// Connects to the master that the Redis Sentinels at `sentinels`
    /// (`redis://host:26379`) name for `master_name`, and follows it through
    /// failovers: when the master is lost, or turns out to be a replica, the store asks
    /// the sentinels again and connects to the master they name then.
    ///
    /// While a failover is under way requests fail closed, as they do while a
    /// standalone server is down: with the layer's 503 and `Retry-After`, the cookie
    /// kept. A write sent to a demoted master is refused by it (`READONLY`) and sent
    /// once more, to the new master; a write whose connection broke is not sent again,
    /// since it may have run. A master that stops answering without closing its
    /// connections (frozen, or cut off) is noticed too: when a request gives up waiting
    /// on it, the store sends it a `PING`, and drops the connection if that goes
    /// unanswered for a second.
    ///
    /// For a master that needs a password, a database other than 0, or TLS, build the
    /// `SentinelClient` yourself and pass it to
    /// [`connect_sentinel_client`](Self::connect_sentinel_client).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), session_core::StoreError> {
    /// let store = session_redis::RedisStore::connect_sentinel(
    ///     ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"],
    ///     "mymaster",
    /// )
    /// .await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect_sentinel<I, U>(sentinels: I, master_name: &str) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let client = sentinel_client(sentinels, master_name).map_err(unavailable)?;
        Self::connect_sentinel_client(client).await
    }

    /// Like [`connect_sentinel`](Self::connect_sentinel), with a `SentinelClient` built
    /// by the caller (`SentinelServerType::Master`), which can carry the master's
    /// password, database and TLS settings.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), session_core::StoreError> {
    /// use session_redis::redis::sentinel::{
    ///     SentinelClient, SentinelNodeConnectionInfo, SentinelServerType,
    /// };
    /// use session_redis::redis::RedisConnectionInfo;
    ///
    /// let master = SentinelNodeConnectionInfo::default()
    ///     .set_redis_connection_info(RedisConnectionInfo::default().set_db(2));
    /// let client = SentinelClient::build(
    ///     vec!["redis://127.0.0.1:26379"],
    ///     "mymaster".to_owned(),
    ///     Some(master),
    ///     SentinelServerType::Master,
    /// )
    /// .expect("valid sentinel addresses");
    /// let store = session_redis::RedisStore::connect_sentinel_client(client).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect_sentinel_client(client: SentinelClient) -> Result<Self, StoreError> {
        let connection = WatchedConnection::connect(Server::Sentinel(client), connection_config())
            .await
            .map_err(unavailable)?;
        Ok(Self::new(connection, Topology::Sentinel))
    }

    fn new(connection: WatchedConnection, topology: Topology) -> Self {
        Self {
            connection,
            topology,
            keys: Keys::new("session:"),
            scripts: Arc::new(Scripts::new(None)),
            turns: Arc::default(),
        }
    }
}
