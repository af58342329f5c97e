//! Telling at once that a database refuses connections. sqlx's pool takes a refused
//! connection for a server still starting and tries again until its acquire timeout,
//! so with the server down every request waited out the layer's store timeout (a
//! second) before its 503, where Redis fails in about 2 ms.
//!
//! An acquire that has not finished after [`GRACE`], while the pool has room for a
//! connection, is waiting for a new connection: the store then connects
//! to the server itself, and gives up on the acquire if that connection is refused.
//! A pool that is merely busy (all its connections in use) waits for one of them and
//! is never probed: a probe is a connection that ends before its handshake, which
//! MySQL counts against the client's host (`max_connect_errors`). One probe runs at a
//! time per store; a server that accepted is not asked again for [`RECENT`]; a
//! refusal is never taken as still holding (it costs nobody anything to be refused
//! again), so a server back up is used at once.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// How long an acquire may take before the server is asked whether it is there: an
/// idle connection comes in microseconds, a new one in about a millisecond.
const GRACE: Duration = Duration::from_millis(5);

/// How long a server that accepted a probe is taken to be up.
const RECENT: Duration = Duration::from_millis(100);

/// How long a probe waits for the server's answer: a server that does not answer is
/// not refusing, and the store timeout takes care of it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the database listens (sealed: named by `Dialect`, built only here).
#[derive(Clone, Debug)]
pub enum Address {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl Address {
    /// Whether a connection to the server is refused now (nothing listens on its
    /// port, or its socket file is gone).
    async fn refuses(&self) -> bool {
        let refused =
            |kind: ErrorKind| matches!(kind, ErrorKind::ConnectionRefused | ErrorKind::NotFound);
        let connected = async {
            match self {
                Self::Tcp { host, port } => tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map(drop),
                #[cfg(unix)]
                Self::Unix(path) => tokio::net::UnixStream::connect(path).await.map(drop),
                #[cfg(not(unix))]
                Self::Unix(_) => Ok(()),
            }
        };
        match tokio::time::timeout(PROBE_TIMEOUT, connected).await {
            Ok(Err(error)) => refused(error.kind()),
            Ok(Ok(())) | Err(_) => false,
        }
    }
}

/// The server of a store's pool, and when it last accepted a probe.
#[derive(Debug)]
pub(crate) struct Endpoint {
    address: Address,
    /// When a probe last found the server accepting connections.
    accepted_at: Mutex<Option<Instant>>,
}

impl Endpoint {
    pub(crate) fn new(address: Address) -> Self {
        Self {
            address,
            accepted_at: Mutex::new(None),
        }
    }

    /// Resolves once the server is seen to refuse connections, [`GRACE`] at the
    /// earliest; pends while it accepts them. `connecting` says whether the pool is
    /// opening a connection (it has room for one): it is asked only then.
    pub(crate) async fn refused(&self, connecting: impl Fn() -> bool) {
        tokio::time::sleep(GRACE).await;
        loop {
            if connecting() {
                let mut accepted_at = self.accepted_at.lock().await;
                if accepted_at.is_none_or(|at| at.elapsed() >= RECENT) {
                    if self.address.refuses().await {
                        return;
                    }
                    *accepted_at = Some(Instant::now());
                }
            }
            tokio::time::sleep(RECENT).await;
        }
    }
}
