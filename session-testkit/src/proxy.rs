//! A TCP proxy on loopback whose connections a test can cut silently, for stores and
//! channels that must notice a server that stopped answering without closing
//! anything: a partition, a frozen host, a NAT or load balancer that forgot the flow.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let proxy = session_testkit::proxy::CuttableProxy::start(server.local_addr()?).await?;
//! let mut client = tokio::net::TcpStream::connect(proxy.address()).await?;
//! let (mut upstream, _) = server.accept().await?;
//! client.write_all(b"ping").await?;
//! let mut heard = [0; 4];
//! upstream.read_exact(&mut heard).await?;
//! assert_eq!(&heard, b"ping");
//!
//! proxy.cut();
//! client.write_all(b"lost").await?; // accepted, and dropped on the way
//! let silence = tokio::time::timeout(
//!     std::time::Duration::from_millis(50),
//!     upstream.read(&mut heard),
//! );
//! assert!(silence.await.is_err());
//! # Ok(()) }
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards every connection made to [`address`](Self::address) to an upstream
/// server, until [`cut`](Self::cut). Dropping it closes everything.
pub struct CuttableProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    _stop: watch::Sender<()>,
}

struct Shared {
    /// Bumped by every cut: a connection opened before the cut it sees is cut.
    cuts: AtomicU64,
    connections: AtomicUsize,
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cuts: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
        });
        let (stop, stopped) = watch::channel(());
        tokio::spawn(accept(listener, upstream, shared.clone(), stopped));
        Ok(Self {
            address,
            shared,
            _stop: stop,
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `redis://` URL of the proxy, for a Redis upstream.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.address)
    }

    /// From now on, what either side of every connection open now sends is read and
    /// dropped: nothing is closed, nothing answers. Connections made later pass.
    pub fn cut(&self) {
        self.shared.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// How many connections clients have made so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

/// The address of the server that `url` names (`scheme://[user@]host:port[/…]`), for
/// a proxy in front of it.
///
/// ```
/// use session_testkit::proxy::server_address;
///
/// let url = "postgres://postgres@127.0.0.1:5432/test";
/// assert_eq!(server_address(url), "127.0.0.1:5432".parse().unwrap());
/// ```
///
/// # Panics
///
/// If `url` names no server that resolves.
pub fn server_address(url: &str) -> SocketAddr {
    let (start, end) = server_span(url);
    url[start..end]
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .unwrap_or_else(|| panic!("no server address in {url}"))
}

/// `url` with its server replaced by `address`: the same URL, through a proxy.
///
/// ```
/// use session_testkit::proxy::url_via;
///
/// let url = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
/// assert_eq!(
///     url_via(url, "127.0.0.1:4000".parse().unwrap()),
///     "postgres://postgres@127.0.0.1:4000/test?sslmode=disable"
/// );
/// ```
pub fn url_via(url: &str, address: SocketAddr) -> String {
    let (start, end) = server_span(url);
    format!("{}{address}{}", &url[..start], &url[end..])
}

/// Where the `host:port` of `url` begins and ends: after the scheme and any user,
/// before any path or query.
fn server_span(url: &str) -> (usize, usize) {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    let end = url[after_scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |at| after_scheme + at);
    let start = url[after_scheme..end]
        .rfind('@')
        .map_or(after_scheme, |at| after_scheme + at + 1);
    (start, end)
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<()>,
) {
    loop {
        let client = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
            _ = stopped.changed() => return,
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let Ok(server) = TcpStream::connect(upstream).await else {
            continue;
        };
        let generation = shared.cuts.load(Ordering::SeqCst);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        for (from, to) in [(client_read, server_write), (server_read, client_write)] {
            tokio::spawn(forward(
                from,
                to,
                shared.clone(),
                generation,
                stopped.clone(),
            ));
        }
    }
}

/// Copies `from` to `to` until either closes, the proxy is dropped, or (silently) a
/// cut comes after `generation`.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: Arc<Shared>,
    generation: u64,
    mut stopped: watch::Receiver<()>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = stopped.changed() => return,
        };
        let Ok(read @ 1..) = read else {
            return;
        };
        let cut = shared.cuts.load(Ordering::SeqCst) != generation;
        if !cut && to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
