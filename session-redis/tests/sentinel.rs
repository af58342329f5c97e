//! `RedisStore` over Redis Sentinel (docs/security.md 19): a master, a replica and a
//! Sentinel on loopback that these tests start. The whole store contract through the
//! Sentinel; a failover, where requests fail closed while the master is gone and
//! succeed again, every session intact, once the replica is promoted; and a write
//! that a demoted master refuses, sent again to the new one.

mod common;

use std::time::{Duration, Instant};

use common::{SentinelGroup, SENTINEL_MASTER};
use session_core::store::{Changes, Record, Saved};
use session_core::{Meta, SessionLayer, SessionStore, Timestamp};
use session_redis::RedisStore;
use session_testkit::outage::{self, Outage};
use session_testkit::{app, Client};

async fn store_on(group: &SentinelGroup) -> RedisStore {
    RedisStore::connect_sentinel(group.sentinel_urls(), SENTINEL_MASTER)
        .await
        .expect("the test Sentinel names a reachable master")
        .with_prefix(format!("test:{}:", &session_testkit::random_token()[..16]))
}

async fn sentinel_store() -> RedisStore {
    store_on(common::shared_sentinel_group()).await
}

session_testkit::conformance_tests!(sentinel_store().await);

/// The master crashes: requests fail closed until the Sentinel has promoted the
/// replica, then succeed on it with every session written before the crash, without
/// restarting the application.
struct Failover<'a>(&'a mut SentinelGroup, Option<u16>);

impl Outage for Failover<'_> {
    fn cut(&mut self) {
        self.1 = Some(self.0.kill_master());
    }

    async fn restore(&mut self) {
        let old = self.1.expect("cut first");
        let group = &*self.0;
        tokio::task::block_in_place(|| group.wait_for_failover(old));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_fails_closed_then_recovers_every_session() {
    let mut group = common::own_sentinel_group();
    let first_master = group.master_port();
    let app = app(SessionLayer::new(store_on(&group).await), None);
    outage::fails_closed_and_recovers(&app, &mut Failover(&mut group, None)).await;
    assert_ne!(group.master_port(), first_master);
    // Writes go to the new master too.
    let mut client = Client::new(&app);
    client.post("/login/after-failover").await;
    assert_eq!(client.get("/user").await.body, "after-failover");
}

/// A master that stops answering without closing its connections (frozen, as behind a
/// partition): requests time out and fail closed; the store does not wait for it to
/// come back, but follows the Sentinel to the promoted replica, with every session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_is_left_for_the_promoted_replica() {
    let mut group = common::own_sentinel_group();
    let app = app(SessionLayer::new(store_on(&group).await), None);
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut client = Client::new(&app);
        client.post(&format!("/login/frozen-{i}")).await;
        clients.push(client);
    }
    let frozen = tokio::task::block_in_place(|| group.freeze_master());
    let started = Instant::now();
    let reply = clients[0].get("/user").await;
    outage::assert_failed_closed(&reply, started.elapsed());
    tokio::task::block_in_place(|| group.wait_for_failover(frozen));
    outage::until_ok(&mut clients[0], "/user", Duration::from_secs(15)).await;
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.get("/user").await.body, format!("frozen-{i}"));
    }
    group.thaw(frozen);
}

/// A master turned replica by hand (no Sentinel failover, so no client is
/// disconnected) refuses the store's next write as `READONLY`: nothing ran, so the
/// store asks the Sentinel again and sends the write to the master it names now. The
/// request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_by_a_demoted_master_goes_to_the_new_one() {
    let group = common::own_sentinel_group();
    let store = store_on(&group).await;
    let now = Timestamp::now();
    let meta = Meta::new(now, now.saturating_add(Duration::from_secs(600)));
    let key = session_testkit::random_key();
    let record = Record {
        data: Default::default(),
        meta: meta.clone(),
    };
    store.create(&key, &record).await.unwrap();

    let old = group.master_port();
    let new = group.replica_port();
    tokio::task::block_in_place(|| {
        common::wait_replicated(old);
        group.sentinel_cli(&["sentinel", "remove", SENTINEL_MASTER]);
        assert_eq!(common::cli(new, &["replicaof", "no", "one"]).trim(), "OK");
        let old_port = old.to_string();
        let new_port = new.to_string();
        assert_eq!(
            common::cli(old, &["replicaof", "127.0.0.1", &new_port]).trim(),
            "OK"
        );
        let monitored = group.sentinel_cli(&[
            "sentinel",
            "monitor",
            SENTINEL_MASTER,
            "127.0.0.1",
            &new_port,
            "1",
        ]);
        assert_eq!(monitored.trim(), "OK");
        assert_eq!(group.master_port(), new, "was {old_port}");
    });

    let mut changes = Changes::default();
    changes
        .set
        .insert("written".to_owned(), serde_json::json!("after the switch"));
    assert_eq!(
        store.save(&key, &changes, &meta).await.unwrap(),
        Saved::Applied
    );
    let loaded = store
        .load(&key)
        .await
        .unwrap()
        .expect("the session is kept");
    assert_eq!(
        loaded.data.get("written"),
        Some(&serde_json::json!("after the switch"))
    );
    assert!(common::cli(new, &["role"]).starts_with("master"));
}

/// Through the Sentinel, requests cost what they cost on a standalone server: a read
/// one `HGETALL` on the master, a write that does not read one script; and the
/// Sentinel is not asked again while the master answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_costs_no_round_trip_per_request() {
    let group = common::own_sentinel_group();
    let app = app(SessionLayer::new(store_on(&group).await), None);
    let mut client = Client::new(&app);
    // The first run of each script loads it.
    client.post("/set/a/1").await;
    client.post("/set/a/2").await;
    let master = group.master_port();
    let round_trips =
        || common::command_calls(master, "hgetall") + common::command_calls(master, "evalsha");
    // A Sentinel keeps no per-command counts; its total counts each INFO after
    // answering it.
    let asked = || {
        group
            .sentinel_cli(&["info", "stats"])
            .lines()
            .find_map(|line| {
                line.trim()
                    .strip_prefix("total_commands_processed:")?
                    .parse::<u64>()
                    .ok()
            })
            .expect("a command count")
    };
    let (trips_before, asked_before) = tokio::task::block_in_place(|| (round_trips(), asked()));
    assert!(
        asked_before > 0,
        "the count misses the store's questions at connect"
    );
    for i in 0..10 {
        assert_eq!(client.get("/get/a").await.body, "\"2\"");
        client.post(&format!("/set/b/{i}")).await;
    }
    let (trips_after, asked_after) = tokio::task::block_in_place(|| (round_trips(), asked()));
    assert_eq!(trips_after - trips_before, 20);
    assert_eq!(
        asked_after,
        asked_before + 1,
        "the Sentinel was asked during requests (the one is the first INFO)"
    );
}

/// No Sentinel listening, or one that knows no such master: `connect_sentinel` fails
/// with an error, soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_without_a_master_is_an_error() {
    let nothing = format!("redis://127.0.0.1:{}", common::free_port());
    let started = Instant::now();
    assert!(RedisStore::connect_sentinel([nothing], SENTINEL_MASTER)
        .await
        .is_err());
    let group = common::shared_sentinel_group();
    assert!(
        RedisStore::connect_sentinel(group.sentinel_urls(), "no-such-master")
            .await
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
