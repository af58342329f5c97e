//! PostgreSQL out of reach (SECURITY.md 16 and 18): the store reaches the server
//! through a TCP proxy that the test owns and cuts. Requests fail closed and fast while
//! it is cut, and succeed again, with every session intact, once it is back, without
//! restarting the application.

#![cfg(feature = "postgres")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use session_core::SessionLayer;
use session_sql::PostgresStore;
use session_testkit::{app, Client};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

fn postgres_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Forwards a loopback port to the server, until cut: then it stops listening and
/// drops every connection, as a dead network would.
struct Proxy {
    port: u16,
    target: SocketAddr,
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
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
    fn cut(&mut self) {
        self.tasks.abort_all();
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

/// A table of the test's own, dropped when the test ends, however it ends.
struct Table(String);

impl Drop for Table {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                &postgres_url(),
                "-qc",
                &format!("DROP TABLE IF EXISTS {}", self.0),
            ])
            .status();
    }
}

fn assert_failed_closed(reply: &session_testkit::Reply, waited: Duration) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_fails_closed_and_recovers() {
    let url = postgres_url();
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    let target: SocketAddr = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let mut proxy = Proxy::start(target).await;
    let proxied = url.replace(host_port, &format!("127.0.0.1:{}", proxy.port));

    let table = Table(format!("session_kit_test_fault_{}", proxy.port));
    let store = PostgresStore::connect(&proxied)
        .await
        .unwrap()
        .with_table(&table.0)
        .unwrap();
    store.migrate().await.unwrap();
    let app = app(SessionLayer::new(store), None);
    let mut clients = Vec::new();
    for i in 0..10 {
        let mut client = Client::new(&app);
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
    let mut newcomer = Client::new(&app);
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
