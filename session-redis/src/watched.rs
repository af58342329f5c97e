//! A connection that is replaced when it fails: to a server at a fixed address, to
//! whichever server Redis Sentinel names master, or to a Redis Cluster. The `redis`
//! crate's `ConnectionManager` reconnects when a connection closes, and its cluster
//! connection on some errors, but a connection that died without closing (a frozen
//! server, a partition, a NAT or load balancer that forgot the flow) closes nothing:
//! it is waited on until TCP gives up, minutes later, however soon the server can be
//! reached again (the cluster connection only retries on it). And `SentinelClient`
//! hands out plain connections that stay with a master after it dies or is demoted.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::sentinel::SentinelClient;
use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind,
    Value,
};

/// After connecting failed, how long requests fail at once with that failure rather
/// than try again: a server that is down does not make every request wait on a
/// connection attempt (and the sentinels) of its own, one after another.
const RESOLVE_BACKOFF: Duration = Duration::from_millis(100);

/// How long a server may take to answer a `PING` when a request gave up waiting on it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the connection goes.
pub(crate) enum Server {
    /// The server at a fixed address.
    Address(redis::Client),
    /// Whichever server the sentinels name master.
    Sentinel(SentinelClient),
    /// A cluster, through any of its nodes (the client carries its own settings).
    Cluster(ClusterClient),
}

impl Server {
    async fn connect(&mut self, config: &AsyncConnectionConfig) -> RedisResult<Live> {
        match self {
            Server::Address(client) => client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .map(Live::Single),
            Server::Sentinel(sentinel) => sentinel
                .get_async_connection_with_config(config)
                .await
                .map(Live::Single),
            Server::Cluster(cluster) => cluster.get_async_connection().await.map(Live::Cluster),
        }
    }
}

/// A connection in use: to one server, or to every master of a cluster.
#[derive(Clone)]
enum Live {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Live {
    /// Whether every server behind the connection still answers.
    async fn probe(&mut self) -> RedisResult<Value> {
        let ping = redis::cmd("PING");
        match self {
            Live::Single(connection) => connection.send_packed_command(&ping).await,
            Live::Cluster(connection) => {
                let every_master = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                connection.route_command(ping, every_master).await
            }
        }
    }
}

impl ConnectionLike for Live {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Live::Single(connection) => connection.req_packed_command(cmd),
            Live::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Live::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Live::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Live::Single(connection) => connection.get_db(),
            Live::Cluster(connection) => connection.get_db(),
        }
    }
}

/// A connection to one server, to the master of one Redis Sentinel service, or to a
/// Redis Cluster. Clones share it.
///
/// A command that finds the connection lost gets its error (it may have run: a script
/// is not sent twice), and the next command connects again (asking the sentinels for
/// the master). A command that a demoted master refuses as `READONLY` did not run,
/// so it is sent once more, to the master the sentinels name now. A command its caller
/// gives up on has the connection checked with a `PING`, since a server that stopped
/// answering (frozen, or cut off) closes nothing and so reports no error.
#[derive(Clone)]
pub(crate) struct WatchedConnection(Arc<Shared>);

struct Shared {
    /// Connecting one at a time: requests that find no connection wait for the
    /// attempt under way, not start their own.
    server: tokio::sync::Mutex<Server>,
    config: AsyncConnectionConfig,
    link: Mutex<Link>,
    /// A check of the current connection is under way.
    probing: AtomicBool,
}

/// The connection in use, if any, and what became of the last attempt to connect.
#[derive(Default)]
struct Link {
    /// Counts connections made, so that a request that saw one fail drops that one,
    /// not a newer one another request has made meanwhile.
    generation: u64,
    connection: Option<Live>,
    /// The last failure to connect, and when.
    failure: Option<(Instant, RedisError)>,
}

impl WatchedConnection {
    /// Connects to `server` with `config`.
    pub(crate) async fn connect(
        server: Server,
        config: AsyncConnectionConfig,
    ) -> RedisResult<Self> {
        let connection = Self(Arc::new(Shared {
            server: tokio::sync::Mutex::new(server),
            config,
            link: Mutex::default(),
            probing: AtomicBool::new(false),
        }));
        connection.current().await?;
        Ok(connection)
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        // The lock guards plain assignments: a panic cannot leave it half-written.
        self.0
            .link
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection to the server, made first if there is none.
    async fn current(&self) -> RedisResult<(u64, Live)> {
        {
            let link = self.link();
            if let Some(connection) = &link.connection {
                return Ok((link.generation, connection.clone()));
            }
        }
        let mut server = self.0.server.lock().await;
        {
            let link = self.link();
            if let Some(connection) = &link.connection {
                return Ok((link.generation, connection.clone()));
            }
            if let Some((failed_at, error)) = &link.failure {
                if failed_at.elapsed() < RESOLVE_BACKOFF {
                    return Err(error.clone());
                }
            }
        }
        let connected = server.connect(&self.0.config).await;
        let mut link = self.link();
        match connected {
            Ok(connection) => {
                link.generation += 1;
                link.connection = Some(connection.clone());
                link.failure = None;
                Ok((link.generation, connection))
            }
            Err(error) => {
                match &*server {
                    Server::Address(_) => tracing::warn!(%error, "Redis: server not reachable"),
                    Server::Sentinel(_) => {
                        tracing::warn!(%error, "Redis Sentinel: no master reachable")
                    }
                    Server::Cluster(_) => tracing::warn!(%error, "Redis Cluster: not reachable"),
                }
                link.failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Checks, from a task of its own, that connection `generation` still answers
    /// (`PING`, within [`PROBE_TIMEOUT`]), and drops it if not. One check at a time.
    fn probe(&self, generation: u64) {
        let connection = {
            let link = self.link();
            match &link.connection {
                Some(connection) if link.generation == generation => connection.clone(),
                _ => return,
            }
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.0.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            let mut connection = connection;
            let answer = tokio::time::timeout(PROBE_TIMEOUT, connection.probe()).await;
            if !matches!(answer, Ok(Ok(_))) {
                tracing::warn!("Redis: the server stopped answering; connecting again");
                this.forget(generation);
            }
            this.0.probing.store(false, Ordering::Release);
        });
    }

    /// Drops connection `generation` if it is still the current one.
    fn forget(&self, generation: u64) {
        let mut link = self.link();
        if link.generation == generation {
            link.connection = None;
        }
    }

    /// Sends with `send` over the current connection, and deals with its failure:
    /// `refused` tells whether the reply is a demoted master's `READONLY` (a reply,
    /// not an error, for the `redis` crate at this level; it comes only over Sentinel,
    /// and from a standalone server that is a replica, where the second try meets it
    /// again and returns it).
    async fn request<T, F, R>(&self, send: F, refused: fn(&T) -> bool) -> RedisResult<T>
    where
        F: Fn(Live) -> R,
        R: Future<Output = RedisResult<T>>,
    {
        let (generation, connection) = self.current().await?;
        let watch = Unanswered {
            connection: self,
            generation,
        };
        let result = send(connection).await;
        std::mem::forget(watch);
        match result {
            Ok(reply) if refused(&reply) => {
                self.forget(generation);
                let (_, connection) = self.current().await?;
                send(connection).await
            }
            Err(error) if error.is_unrecoverable_error() || error.is_io_error() => {
                self.forget(generation);
                Err(error)
            }
            result => result,
        }
    }
}

/// A command in flight on connection `generation`. Dropped before the command ends (the
/// caller gave up: the layer's store timeout, or a client gone), it has the connection
/// checked: a server that stopped answering without closing its connections (frozen,
/// or cut off by a partition) returns no error for the connection to be replaced on,
/// and would hold every request hostage after it can be reached again, or after the
/// Sentinel has promoted another.
struct Unanswered<'a> {
    connection: &'a WatchedConnection,
    generation: u64,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        self.connection.probe(self.generation);
    }
}

fn is_read_only(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(error) if error.kind() == Some(ServerErrorKind::ReadOnly))
}

impl ConnectionLike for WatchedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.request(
            move |mut connection| async move { connection.req_packed_command(cmd).await },
            is_read_only,
        ))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.request(
            move |mut connection| async move {
                connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            },
            // Refused at the first command, the server was a replica from the start:
            // none of the pipeline wrote.
            |replies| replies.first().is_some_and(is_read_only),
        ))
    }

    fn get_db(&self) -> i64 {
        self.link()
            .connection
            .as_ref()
            .map_or(0, ConnectionLike::get_db)
    }
}
