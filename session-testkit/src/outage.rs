//! The outage scenario every store with a server runs (docs/security.md 16 and 18): while
//! the store is out of reach, requests fail closed and fast; once it is back, they
//! succeed again, with every session intact, without restarting the application.

use std::future::Future;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::app::{App, Client, Reply};

/// A way for a test to take its store's server out of reach and bring it back: stop
/// and restart a process of its own, or cut and restore a proxy in front of it.
pub trait Outage {
    /// Takes the server out of reach.
    fn cut(&mut self);
    /// Brings it back.
    fn restore(&mut self) -> impl Future<Output = ()>;
}

/// Asserts that `reply` is the layer's default answer to a store failure — 503 with
/// `Retry-After`, no cookie set or cleared — and came within a few seconds (the
/// default store timeout is one second; the bound leaves room for a loaded machine and
/// fails a request that waits on a dead server unbounded).
pub fn assert_failed_closed(reply: &Reply, waited: Duration) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers[http::header::RETRY_AFTER], "1");
    assert!(
        reply.set_cookies().is_empty(),
        "a cookie was set or cleared"
    );
    assert!(waited < Duration::from_secs(3), "took {waited:?}");
}

/// Sends `GET path` until it succeeds, for at most `limit`.
pub async fn until_ok(client: &mut Client, path: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let reply = client.get(path).await;
        if reply.status == StatusCode::OK {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "no recovery within {limit:?}: {}",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The scenario: twenty logged-in clients; the outage; reads, a write of an existing
/// session and a newcomer's first write all fail closed, change no cookie and write
/// nothing; the server comes back; every session is there as it was.
pub async fn fails_closed_and_recovers(app: &App, outage: &mut impl Outage) {
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut client = Client::new(app);
        client.post(&format!("/login/user-{i}")).await;
        client.post(&format!("/set/marker/{i}")).await;
        clients.push(client);
    }

    outage.cut();
    for client in clients.iter_mut().take(5) {
        let cookie = client.cookie.clone();
        let started = Instant::now();
        let reply = client.get("/user").await;
        assert_failed_closed(&reply, started.elapsed());
        assert_eq!(client.cookie, cookie);
    }
    let started = Instant::now();
    let reply = clients[0].post("/set/during/outage").await;
    assert_failed_closed(&reply, started.elapsed());
    let mut newcomer = Client::new(app);
    let started = Instant::now();
    let reply = newcomer.post("/set/x/1").await;
    assert_failed_closed(&reply, started.elapsed());
    assert_eq!(newcomer.cookie, None);

    outage.restore().await;
    until_ok(&mut clients[0], "/user", Duration::from_secs(15)).await;
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            client.get("/user").await.body,
            format!("user-{i}"),
            "session {i} was lost"
        );
        assert_eq!(client.get("/get/marker").await.body, format!("\"{i}\""));
    }
    assert_eq!(
        clients[0].get("/get/during").await.body,
        "null",
        "a failed write was kept"
    );
}
