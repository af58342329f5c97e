//! Outages of a redis-server each test owns (docs/security.md 16 and 18): requests fail
//! closed and fast while it is down or frozen, and succeed again, with every session
//! intact, once it is back, without restarting the application.

mod common;

use std::time::{Duration, Instant};

use common::OwnRedis;
use session_core::SessionLayer;
use session_redis::RedisStore;
use session_testkit::outage::{self, Outage};
use session_testkit::proxy::CuttableProxy;
use session_testkit::{app, App, Client};

async fn app_on(server: &OwnRedis) -> App {
    let store = RedisStore::connect(&server.url()).await.unwrap();
    // The default layer: a one-second store timeout.
    app(SessionLayer::new(store), None)
}

/// The test's own server, stopped at once as a crash would, and started again.
struct Crash<'a>(&'a mut OwnRedis);

impl Outage for Crash<'_> {
    fn cut(&mut self) {
        self.0.kill();
    }

    async fn restore(&mut self) {
        self.0.restart();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_fails_closed_and_recovers_without_a_restart() {
    let mut server = OwnRedis::start();
    let app = app_on(&server).await;
    outage::fails_closed_and_recovers(&app, &mut Crash(&mut server)).await;
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
    outage::assert_failed_closed(&reply, waited);
    assert!(
        waited >= Duration::from_millis(900),
        "answered before the timeout: {waited:?}"
    );
    server.freeze(false);
    outage::until_ok(&mut client, "/user", Duration::from_secs(15)).await;
    assert_eq!(client.get("/user").await.body, "frozen-user");
}

/// A connection that died without closing (a partition, a NAT or load balancer that
/// forgot the flow: what is sent is lost, nothing answers, nothing closes) is checked
/// once a request gives up on it, and replaced: requests fail closed for about the
/// store timeout and the check, then succeed on a new connection, the session intact.
/// (The `redis` crate's `ConnectionManager` waited on such a connection until TCP gave
/// up, minutes later.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gone_silent_is_replaced() {
    let server = OwnRedis::start();
    let proxy = CuttableProxy::start(([127, 0, 0, 1], server.port).into())
        .await
        .unwrap();
    let store = RedisStore::connect(&proxy.redis_url()).await.unwrap();
    let app = app(SessionLayer::new(store), None);
    let mut client = Client::new(&app);
    client.post("/login/cut-off-user").await;
    let connections = proxy.connections();

    proxy.cut();
    let started = Instant::now();
    let reply = client.get("/user").await;
    outage::assert_failed_closed(&reply, started.elapsed());
    outage::until_ok(&mut client, "/user", Duration::from_secs(10)).await;
    let back_after = started.elapsed();
    assert_eq!(client.get("/user").await.body, "cut-off-user");
    assert_eq!(proxy.connections(), connections + 1);
    eprintln!("back {back_after:?} after the cut");
}

/// The same on a Redis Cluster whose every node the store reaches through a proxy
/// (each node announces its proxy's port): with every connection cut silently, a
/// request that gives up has every master asked for a `PING`, and the unanswered
/// cluster connection is replaced. (The `redis` crate's cluster connection retries a
/// timed-out command on the same connection, and never recovered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_gone_silent_is_reconnected() {
    let cluster = common::Cluster::start();
    let mut proxies = Vec::new();
    for port in &cluster.ports {
        let proxy = CuttableProxy::start(([127, 0, 0, 1], *port).into())
            .await
            .unwrap();
        let announced = proxy.address().port().to_string();
        common::cli(
            *port,
            &["CONFIG", "SET", "cluster-announce-port", &announced],
        );
        proxies.push(proxy);
    }
    // Every node tells the proxies' ports once gossip has spread them.
    let proxied: Vec<String> = proxies
        .iter()
        .map(|proxy| proxy.address().port().to_string())
        .collect();
    let started = Instant::now();
    while !cluster.ports.iter().all(|port| {
        let slots = common::cli(*port, &["CLUSTER", "SLOTS"]);
        proxied
            .iter()
            .all(|announced| slots.contains(announced.as_str()))
    }) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gossip never spread"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = RedisStore::connect_cluster(proxies.iter().map(CuttableProxy::redis_url))
        .await
        .unwrap();
    let app = app(SessionLayer::new(store), None);
    let mut clients = Vec::new();
    for user in 0..6 {
        let mut client = Client::new(&app);
        client.post(&format!("/login/user-{user}")).await;
        clients.push(client);
    }

    proxies.iter().for_each(CuttableProxy::cut);
    let started = Instant::now();
    let reply = clients[0].get("/user").await;
    outage::assert_failed_closed(&reply, started.elapsed());
    for (user, client) in clients.iter_mut().enumerate() {
        outage::until_ok(client, "/user", Duration::from_secs(10)).await;
        assert_eq!(client.get("/user").await.body, format!("user-{user}"));
    }
    eprintln!("every user back {:?} after the cut", started.elapsed());
}
