//! What the outage tests of every SQL store share: a TCP proxy the test owns and
//! cuts, a table dropped however the test ends, and the outage scenario itself.

#![allow(dead_code, unreachable_pub)] // Each test binary uses its own part of this.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use session_testkit::{App, Client, Reply};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Forwards a loopback port to the server, until cut: then it stops listening and
/// drops every connection, as a dead network would.
pub struct Proxy {
    pub port: u16,
    target: SocketAddr,
    tasks: JoinSet<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Self {
            port,
            target,
            tasks: JoinSet::new(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target;
        self.tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
    }

    /// Stops listening and drops every connection (the listener task owns them).
    pub fn cut(&mut self) {
        self.tasks.abort_all();
    }

    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

/// The host and port of a database URL (`scheme://user@host:port/db`).
pub async fn server_address(url: &str) -> SocketAddr {
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// `url` with its server replaced by the proxy's port.
pub fn through(url: &str, proxy: &Proxy) -> String {
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    url.replace(host_port, &format!("127.0.0.1:{}", proxy.port))
}

/// A table of the test's own, dropped by `command` (a database client) when the test
/// ends, however it ends.
pub struct Table {
    pub name: String,
    pub drop_with: Vec<String>,
}

impl Drop for Table {
    fn drop(&mut self) {
        let (program, args) = self.drop_with.split_first().unwrap();
        let sql = format!("DROP TABLE IF EXISTS {}", self.name);
        let _ = std::process::Command::new(program)
            .args(args)
            .arg(sql)
            .status();
    }
}

fn assert_failed_closed(reply: &Reply, waited: Duration) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers[http::header::RETRY_AFTER], "1");
    assert!(
        reply.set_cookies().is_empty(),
        "a cookie was set or cleared"
    );
    // The default store timeout is one second; the bound leaves room for a loaded
    // machine, and fails if a request waits on an unreachable server unbounded.
    assert!(waited < Duration::from_secs(3), "took {waited:?}");
}

/// SECURITY.md 16 and 18: with the proxy cut, requests with a cookie, and a
/// newcomer's first write, fail closed and fast; restored, requests succeed again,
/// every session intact, without restarting `app`.
pub async fn fails_closed_and_recovers(app: &App, proxy: &mut Proxy) {
    let mut clients = Vec::new();
    for i in 0..10 {
        let mut client = Client::new(app);
        client.post(&format!("/login/user-{i}")).await;
        client.post(&format!("/set/marker/{i}")).await;
        clients.push(client);
    }

    proxy.cut();
    for client in clients.iter_mut().take(3) {
        let cookie = client.cookie.clone();
        let started = Instant::now();
        let reply = client.get("/user").await;
        assert_failed_closed(&reply, started.elapsed());
        assert_eq!(client.cookie, cookie);
    }
    let mut newcomer = Client::new(app);
    let started = Instant::now();
    let reply = newcomer.post("/set/x/1").await;
    assert_failed_closed(&reply, started.elapsed());

    proxy.restore().await;
    let started = Instant::now();
    while clients[0].get("/user").await.status != StatusCode::OK {
        assert!(started.elapsed() < Duration::from_secs(15), "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            client.get("/user").await.body,
            format!("user-{i}"),
            "session {i} was lost"
        );
        assert_eq!(client.get("/get/marker").await.body, format!("\"{i}\""));
    }
}
