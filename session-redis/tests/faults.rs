//! Outages of a redis-server each test owns (SECURITY.md 16 and 18): requests fail
//! closed and fast while it is down or frozen, and succeed again, with every session
//! intact, once it is back, without restarting the application.

mod common;

use std::time::{Duration, Instant};

use common::OwnRedis;
use http::StatusCode;
use session_core::SessionLayer;
use session_redis::RedisStore;
use session_testkit::{app, App, Client};

async fn app_on(server: &OwnRedis) -> App {
    let store = RedisStore::connect(&server.url()).await.unwrap();
    // The default layer: a one-second store timeout.
    app(SessionLayer::new(store), None)
}

/// Requests until one succeeds, for at most `limit`; returns how long it took.
async fn until_ok(client: &mut Client, path: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let reply = client.get(path).await;
        if reply.status == StatusCode::OK {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no recovery within {limit:?}: {}",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    // machine, and fails if a request waits on a dead server unbounded.
    assert!(waited < Duration::from_secs(3), "took {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_fails_closed_and_recovers_without_a_restart() {
    let mut server = OwnRedis::start();
    let app = app_on(&server).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut client = Client::new(&app);
        client.post(&format!("/login/user-{i}")).await;
        client.post(&format!("/set/marker/{i}")).await;
        clients.push(client);
    }
    server.kill();
    for client in clients.iter_mut().take(5) {
        let cookie = client.cookie.clone();
        let started = Instant::now();
        let reply = client.get("/user").await;
        assert_failed_closed(&reply, started.elapsed());
        assert_eq!(client.cookie, cookie);
    }
    // A write, and a new visitor's first write, fail closed too.
    let started = Instant::now();
    let reply = clients[0].post("/set/during/outage").await;
    assert_failed_closed(&reply, started.elapsed());
    let mut newcomer = Client::new(&app);
    let reply = newcomer.post("/set/x/1").await;
    assert_failed_closed(&reply, Duration::ZERO);
    assert_eq!(newcomer.cookie, None);

    server.restart();
    until_ok(&mut clients[0], "/user", Duration::from_secs(15)).await;
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            client.get("/user").await.body,
            format!("user-{i}"),
            "session {i} was lost"
        );
        assert_eq!(client.get("/get/marker").await.body, format!("\"{i}\""));
    }
    assert_eq!(clients[0].get("/get/during").await.body, "null");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_times_out_and_recovers() {
    let server = OwnRedis::start();
    let app = app_on(&server).await;
    let mut client = Client::new(&app);
    client.post("/login/frozen-user").await;
    server.freeze(true);
    let started = Instant::now();
    let reply = client.get("/user").await;
    let waited = started.elapsed();
    assert_failed_closed(&reply, waited);
    assert!(
        waited >= Duration::from_millis(900),
        "answered before the timeout: {waited:?}"
    );
    server.freeze(false);
    until_ok(&mut client, "/user", Duration::from_secs(15)).await;
    assert_eq!(client.get("/user").await.body, "frozen-user");
}
