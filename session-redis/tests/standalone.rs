//! `RedisStore` against a real standalone Redis: the machine's shared server for the
//! contract, servers of the tests' own where they count commands.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::OwnRedis;
use http::StatusCode;
use session_core::store::{Record, Updated};
use session_core::{Meta, SessionKey, SessionLayer, SessionStore, Timestamp};
use session_redis::RedisStore;
use session_testkit::{app, random_key, random_user, Client, MockClock};

session_testkit::conformance_tests!(common::shared_store().await);

/// A connection of the test's own to the shared server, for looking at raw keys.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn keys_under(
    connection: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(connection)
        .await
        .unwrap()
}

/// docs/security.md 3 and 13 in Redis: keys hold the hash, never the token, and every
/// session key carries a TTL matching its expiry.
#[tokio::test]
async fn keys_are_hashed_and_expire() {
    let (store, prefix) = common::shared_store_with_prefix().await;
    let app = app(SessionLayer::new(store.clone()), None);
    let mut client = Client::new(&app);
    let user = random_user();
    client.post(&format!("/login/{user}")).await;
    let token = client.cookie.clone().unwrap();

    let mut connection = raw(&common::redis_url()).await;
    let keys = keys_under(&mut connection, &prefix).await;
    assert_eq!(keys.len(), 2, "{keys:?}"); // the session and the user index
    for key in &keys {
        assert!(!key.contains(&token), "the raw token is in a key");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            ttl > 29 * 60 * 1000 && ttl <= 30 * 60 * 1000,
            "{key}: PTTL {ttl}"
        );
    }
    let session_key = keys.iter().find(|k| !k.contains("user:")).unwrap();
    let fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(session_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(
        fields.iter().all(|(_, value)| !value.contains(&token)),
        "the token is stored"
    );
    store.delete_user_sessions(&user).await.unwrap();
    assert!(keys_under(&mut connection, &prefix)
        .await
        .iter()
        .all(|k| k.contains("user:")));
}

/// docs/security.md 28 in Redis: a record that does not decode is no session — never a
/// panic, never a 500 — on a read and on a write that does not read.
#[tokio::test]
async fn corrupt_records_are_treated_as_absent() {
    let (store, prefix) = common::shared_store_with_prefix().await;
    let app = app(SessionLayer::new(store.clone()), None);
    let mut client = Client::new(&app);
    client.post("/set/a/1").await;
    let key = client.key().unwrap();
    let record = store.load(&key).await.unwrap().unwrap();
    assert_eq!(record.data.get("a"), Some(&serde_json::json!("1")));

    let mut connection = raw(&common::redis_url()).await;
    let redis_key = format!("{prefix}{{{key}}}");
    // Bytes that are no text, in a field's name, the user or the expiry, are as
    // corrupt as text that does not parse.
    for (field, garbage) in [
        (&b"d:a"[..], &b"{not json"[..]),
        (b"m", b"[]"),
        (b"e", b"soon"),
        (b"zz", b"1"),
        (b"d:\xff", b"1"),
        (b"u", b"\xff\xfe"),
        (b"e", b"\xff"),
        // An idle timeout no layer writes: the expiry it makes is out of range.
        (b"m", br#"{"c":0,"x":{"i":1e300}}"#),
    ] {
        let shown = format!(
            "{}={}",
            String::from_utf8_lossy(field),
            String::from_utf8_lossy(garbage)
        );
        let saved: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&redis_key)
            .query_async(&mut connection)
            .await
            .unwrap();
        redis::cmd("HSET")
            .arg(&redis_key)
            .arg(field)
            .arg(garbage)
            .query_async::<i64>(&mut connection)
            .await
            .unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None, "{shown}");
        let mut replay = client.clone();
        let reply = replay.get("/get/a").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "null")
        );
        // A write that does not read: never an error; a record whose expiry,
        // metadata or user does not decode is no session (the script reads only
        // those fields back), so the write is dropped as for any session gone, and
        // the client's cookie left alone.
        let mut writer = client.clone();
        let reply = writer.post("/set/b/2").await;
        assert_eq!(reply.status, StatusCode::OK, "{shown}");
        assert_eq!(reply.set_cookies(), Vec::<&str>::new(), "{shown}");
        if garbage.ends_with(b"1e300}}") {
            // The script refused it before writing anything (it used to write the
            // fields, then fail on the expiry: a 503, and a change kept in part).
            let written: bool = redis::cmd("HEXISTS")
                .arg(&redis_key)
                .arg("d:b")
                .query_async(&mut connection)
                .await
                .unwrap();
            assert!(!written, "{shown}: the write was kept in part");
        }
        // An update and a logout: never "the store is down".
        let reply = client.clone().post("/incr/n").await;
        assert_eq!(reply.status, StatusCode::OK, "{shown}: update");
        let reply = client.clone().post("/logout").await;
        assert_eq!(reply.status, StatusCode::OK, "{shown}: logout");
        // Put the record back as it was for the next kind of corruption.
        redis::cmd("DEL")
            .arg(&redis_key)
            .query_async::<i64>(&mut connection)
            .await
            .unwrap();
        let mut restore = redis::cmd("HSET");
        restore.arg(&redis_key);
        for (f, v) in saved {
            restore.arg(f).arg(v);
        }
        restore.query_async::<i64>(&mut connection).await.unwrap();
        redis::cmd("PEXPIRE")
            .arg(&redis_key)
            .arg(60_000)
            .query_async::<i64>(&mut connection)
            .await
            .unwrap();
    }
    store.delete(&key).await.unwrap();
}

/// Round trips so far, for requests that load, write and push expiries back: each is
/// an `HGETALL` (a load) or an `EVALSHA` (a script), or an `EVAL` or `SCRIPT LOAD` the
/// first time a script runs. No script runs `HGETALL` itself.
fn round_trips(server: &OwnRedis) -> u64 {
    ["hgetall", "evalsha", "eval", "script|load"]
        .iter()
        .map(|command| server.command_calls(command))
        .sum()
}

/// Round trips per request, counted by the server: none without a cookie, one for a
/// read, one for a write that does not read, two for one that does, and one more only
/// when the idle timeout is pushed back.
#[tokio::test]
async fn requests_cost_the_fewest_round_trips() {
    let server = OwnRedis::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let app = app(SessionLayer::new(store), None);
    let mut client = Client::new(&app);
    // Each script's first run loads it.
    client.post("/set/a/1").await;
    client.post("/set/b/2").await;
    client.post("/paused-set/b/3").await;

    let before = round_trips(&server);
    let mut anonymous = Client::new(&app);
    for _ in 0..100 {
        anonymous.get("/get/a").await;
    }
    assert_eq!(
        round_trips(&server) - before,
        0,
        "cookie-less requests reached Redis"
    );

    let before = round_trips(&server);
    for _ in 0..100 {
        assert_eq!(client.get("/get/a").await.body, "\"1\"");
    }
    assert_eq!(
        round_trips(&server) - before,
        100,
        "a read is not one round trip"
    );

    let before = round_trips(&server);
    for i in 0..100 {
        client.post(&format!("/set/c/{i}")).await;
    }
    assert_eq!(
        round_trips(&server) - before,
        100,
        "a write without a read is not one round trip"
    );

    let before = round_trips(&server);
    for i in 0..100 {
        client.post(&format!("/paused-set/c/{i}")).await;
    }
    assert_eq!(
        round_trips(&server) - before,
        200,
        "a read and a write are not two round trips"
    );
    assert_eq!(client.get("/get/c").await.body, "\"99\"");

    let before = round_trips(&server);
    for _ in 0..100 {
        client.get("/noop").await;
    }
    assert_eq!(
        round_trips(&server) - before,
        0,
        "an untouched session reached Redis"
    );
}

/// A write that never read its session restarts the idle timeout in Redis, by the
/// layer's clock and the session's own idle timeout: the field, the key's TTL and the
/// user index's score all move together, in the write's one round trip.
#[tokio::test]
async fn an_unread_write_restarts_the_expiry_and_the_index() {
    let server = OwnRedis::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let clock = MockClock::new();
    let layer = SessionLayer::builder(store.clone())
        .with_expiry(session_core::Expiry::on_inactivity(Duration::from_secs(
            50 * 60,
        )))
        .with_clock(clock.now_fn())
        .build()
        .unwrap();
    let app = app(layer, None);
    let mut client = Client::new(&app);
    let user = random_user();
    client.post(&format!("/login/{user}")).await;
    client.post("/set/a/1").await; // loads the script
    let key = client.key().unwrap();

    clock.set_ahead(Duration::from_secs(20 * 60));
    let before = round_trips(&server);
    assert_eq!(client.post("/set/b/2").await.status, 200);
    assert_eq!(round_trips(&server) - before, 1);
    let record = store.load(&key).await.unwrap().unwrap();
    let expected = Timestamp::now().unix_millis() + 70 * 60_000;
    assert!(
        (record.meta.expires_at.unix_millis() - expected).abs() < 5_000,
        "{record:?}"
    );
    assert_eq!(record.meta.user_id.as_deref(), Some(user.as_str()));
    let pttl: i64 = server
        .cli(&["pttl", &format!("session:{{{key}}}")])
        .trim()
        .parse()
        .unwrap();
    assert!((pttl - 70 * 60_000).abs() < 5_000, "PTTL {pttl}");
    let index = format!("session:user:{{{user}}}");
    let score = server.cli(&["zscore", &index, &format!("session:{{{key}}}")]);
    assert_eq!(
        score.trim().parse::<i64>().unwrap(),
        record.meta.expires_at.unix_millis()
    );
}

/// A read that is due to push the idle timeout back costs one more round trip, the
/// user's index following; the reads after it, until the next quarter of the idle
/// timeout has passed, cost one and write nothing.
#[tokio::test]
async fn a_due_expiry_push_costs_one_more_round_trip_once() {
    let server = OwnRedis::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let clock = MockClock::new();
    let layer = SessionLayer::builder(store.clone())
        .with_clock(clock.now_fn())
        .build()
        .unwrap();
    let app = app(layer, None);
    let mut client = Client::new(&app);
    let user = random_user();
    let minutes = |m: i64| m * 60_000;
    client.post(&format!("/login/{user}")).await;
    clock.set_ahead(Duration::from_secs(20 * 60));
    client.get("/user").await; // the first push loads the touch script
    let key = client.key().unwrap();

    clock.set_ahead(Duration::from_secs(40 * 60));
    let before = round_trips(&server);
    assert_eq!(client.get("/user").await.body, user);
    assert_eq!(round_trips(&server) - before, 2, "not a load and a push");
    let record = store.load(&key).await.unwrap().unwrap();
    let pushed = Timestamp::now().unix_millis() + minutes(70);
    assert!(
        (record.meta.expires_at.unix_millis() - pushed).abs() < 5_000,
        "{record:?}"
    );
    let pttl: i64 = server
        .cli(&["pttl", &format!("session:{{{key}}}")])
        .trim()
        .parse()
        .unwrap();
    assert!((pttl - minutes(70)).abs() < 5_000, "PTTL {pttl}");
    let index = format!("session:user:{{{user}}}");
    let score = server.cli(&["zscore", &index, &format!("session:{{{key}}}")]);
    assert_eq!(
        score.trim().parse::<i64>().unwrap(),
        record.meta.expires_at.unix_millis()
    );

    // A minute later nothing is due: the read is one round trip and writes nothing.
    clock.set_ahead(Duration::from_secs(41 * 60));
    let (before, writes) = (round_trips(&server), server.command_calls("hset"));
    client.get("/user").await;
    assert_eq!(round_trips(&server) - before, 1);
    assert_eq!(server.command_calls("hset"), writes);
}

/// The user index never grows without bound: 10,000 sessions of 100 users expire,
/// and without anyone logging in again every key, index included, is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_leave_no_index_behind() {
    let server = OwnRedis::start();
    let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let users: Vec<String> = (0..100).map(|_| random_user()).collect();
    let expires_at = Timestamp::now().saturating_add(Duration::from_secs(2));
    let tasks: Vec<_> = (0..10_000)
        .map(|i| {
            let store = store.clone();
            let mut meta = Meta::new(Timestamp::now(), expires_at);
            meta.user_id = Some(users[i % users.len()].clone());
            tokio::spawn(async move {
                let record = Record {
                    data: Default::default(),
                    meta,
                };
                store.create(&random_key(), &record).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(server.cli(&["dbsize"]).trim(), "10100");
    assert_eq!(store.user_sessions(&users[0]).await.unwrap().len(), 100);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    // Redis expires keys lazily and in the background; wait for it, without reading
    // any index (which would clean it).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.cli(&["dbsize"]).trim() != "0" && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        server.cli(&["dbsize"]).trim(),
        "0",
        "keys outlived their sessions"
    );
}

/// A redis-server of the test's own, a store on it, and a session in it with no data
/// that expires in a minute.
async fn own_server_with_a_session() -> (OwnRedis, RedisStore, SessionKey, Record) {
    let server = OwnRedis::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let now = Timestamp::now();
    let key = random_key();
    let created = Record {
        data: Default::default(),
        meta: Meta::new(now, now.saturating_add(Duration::from_secs(60))),
    };
    store.create(&key, &created).await.unwrap();
    (server, store, key, created)
}

/// A write whose expiry has already passed (a deadline reached while the request
/// ran) ends the session: it never leaves a key without a TTL behind.
#[tokio::test]
async fn a_write_past_its_expiry_leaves_no_key() {
    let (server, store, key, created) = own_server_with_a_session().await;
    let now = created.meta.created_at;
    let mut past = created.meta.clone();
    past.expires_at = Timestamp::from_unix_millis(now.unix_millis() - 1_000);
    let changes = session_core::store::Changes {
        set: [("k".to_owned(), serde_json::json!(1))]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    store.save(&key, &changes, &past).await.unwrap();
    assert_eq!(server.cli(&["dbsize"]).trim(), "0", "a save left a key");
    store.create(&key, &created).await.unwrap();
    store.touch(&key, &past).await.unwrap();
    assert_eq!(server.cli(&["dbsize"]).trim(), "0", "a touch left a key");
    store.create(&key, &created).await.unwrap();
    let set_one = |_: Option<&serde_json::Value>| Some(serde_json::json!(1));
    store.update(&key, "n", &set_one, &past).await.unwrap();
    assert_eq!(server.cli(&["dbsize"]).trim(), "0", "an update left a key");
}

/// A server that lost its scripts (a restart, `SCRIPT FLUSH`, a failover to a replica
/// that never ran them) has each one loaded again by the first write that needs it,
/// which then runs: every kind of write, each after a flush, does its work, and
/// loads its script once.
#[tokio::test]
async fn scripts_the_server_lost_are_loaded_again() {
    let server = OwnRedis::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let now = Timestamp::now();
    let key = random_key();
    let user = random_user();
    let mut meta = Meta::new(now, now.saturating_add(Duration::from_secs(60)));
    meta.user_id = Some(user.clone());
    let record = Record {
        data: [("a".to_owned(), serde_json::json!(1))]
            .into_iter()
            .collect(),
        meta: meta.clone(),
    };
    let set = |name: &str, value: i64| session_core::store::Changes {
        set: [(name.to_owned(), serde_json::json!(value))]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let flushed = || {
        assert_eq!(server.cli(&["script", "flush"]).trim(), "OK");
        server.command_calls("script|load")
    };

    let loads = flushed();
    assert_eq!(
        store.create(&key, &record).await.unwrap(),
        session_core::store::Created::Written
    );
    assert_eq!(server.command_calls("script|load"), loads + 1);

    let loads = flushed();
    assert_eq!(
        store.save(&key, &set("b", 2), &meta).await.unwrap(),
        session_core::store::Saved::Applied
    );
    assert_eq!(server.command_calls("script|load"), loads + 1);

    let loads = flushed();
    let refresh = session_core::store::Refresh {
        now,
        idle_timeout: Duration::from_secs(60),
    };
    let previous = store
        .save_unloaded(&key, &set("c", 3), &refresh)
        .await
        .unwrap();
    assert_eq!(previous.and_then(|meta| meta.user_id), Some(user.clone()));
    assert_eq!(server.command_calls("script|load"), loads + 1);

    let loads = flushed();
    let add_one = |n: Option<&serde_json::Value>| {
        Some(serde_json::json!(
            n.and_then(|n| n.as_i64()).unwrap_or(0) + 1
        ))
    };
    store.update(&key, "a", &add_one, &meta).await.unwrap();
    assert_eq!(server.command_calls("script|load"), loads + 1);

    let loads = flushed();
    assert_eq!(
        store.touch(&key, &meta).await.unwrap(),
        session_core::store::Saved::Applied
    );
    assert_eq!(server.command_calls("script|load"), loads + 1);

    let loaded = store.load(&key).await.unwrap().expect("the session");
    let data: Vec<(String, serde_json::Value)> = loaded
        .data
        .iter()
        .map(|(name, value)| (name.to_owned(), value.clone()))
        .collect();
    assert_eq!(
        data,
        [
            ("a".to_owned(), serde_json::json!(2)),
            ("b".to_owned(), serde_json::json!(2)),
            ("c".to_owned(), serde_json::json!(3)),
        ]
    );
    assert_eq!(store.user_sessions(&user).await.unwrap().len(), 1);

    let loads = flushed();
    store.delete(&key).await.unwrap();
    assert_eq!(server.command_calls("script|load"), loads + 1);
    assert!(store.load(&key).await.unwrap().is_none());
    assert!(store.user_sessions(&user).await.unwrap().is_empty());
}

/// `update` of a field whose bytes are no text (or text that is no JSON) finds no
/// session, as `load` finds none in such a record, and leaves the field as it was:
/// not "Redis is down".
#[tokio::test]
async fn an_update_of_a_field_that_is_no_text_finds_no_session() {
    let (server, store, key, Record { meta, .. }) = own_server_with_a_session().await;
    let redis_key = format!("session:{{{key}}}");
    let mut connection = raw(&server.url()).await;
    redis::cmd("HSET")
        .arg(&redis_key)
        .arg("d:n")
        .arg(&b"\xff\xfe"[..])
        .query_async::<i64>(&mut connection)
        .await
        .unwrap();
    let set_one = |_: Option<&serde_json::Value>| Some(serde_json::json!(1));
    let updated = store.update(&key, "n", &set_one, &meta).await.unwrap();
    assert_eq!(updated, Updated::Missing);
    let field: Vec<u8> = redis::cmd("HGET")
        .arg(&redis_key)
        .arg("d:n")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(field, b"\xff\xfe", "the update changed the field");
}

/// Concurrent updates of one field through one store take turns instead of racing:
/// 100 increments at once cost Redis 100 compare-and-set scripts (racing each other,
/// thousands), and every one of them lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_through_one_store_cost_one_script_each() {
    let (server, store, key, Record { meta, .. }) = own_server_with_a_session().await;
    let store = Arc::new(store);
    let increment = |n: Option<&serde_json::Value>| {
        Some(serde_json::json!(
            n.and_then(serde_json::Value::as_u64).unwrap_or(0) + 1
        ))
    };
    // The first run loads the script.
    store.update(&key, "n", &increment, &meta).await.unwrap();

    let before = server.command_calls("evalsha");
    let updates: Vec<_> = (0..100)
        .map(|_| {
            let (store, meta) = (Arc::clone(&store), meta.clone());
            tokio::spawn(async move { store.update(&key, "n", &increment, &meta).await })
        })
        .collect();
    for update in updates {
        update.await.unwrap().unwrap();
    }
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(
        loaded.data.get("n"),
        Some(&serde_json::json!(101)),
        "increments were lost"
    );
    assert_eq!(
        server.command_calls("evalsha") - before,
        100,
        "updates of one store raced each other"
    );
}

/// A session with more keys than Lua's stack takes in one call (the scripts write
/// them in chunks) is created, saved and read back whole, with its user.
#[tokio::test]
async fn a_session_with_thousands_of_keys_is_written_whole() {
    let store = common::shared_store().await;
    let now = Timestamp::now();
    let key = random_key();
    let value = |i: usize| serde_json::json!(format!("value-{i}"));
    let mut meta = Meta::new(now, now.saturating_add(Duration::from_secs(60)));
    meta.user_id = Some(random_user());
    let created = Record {
        data: (0..5_000).map(|i| (format!("k{i}"), value(i))).collect(),
        meta: meta.clone(),
    };
    store.create(&key, &created).await.unwrap();
    let changes = session_core::store::Changes {
        removed: (0..10).map(|i| format!("k{i}")).collect(),
        set: (2_500..7_500)
            .map(|i| (format!("k{i}"), value(i + 1)))
            .collect(),
        ..Default::default()
    };
    store.save(&key, &changes, &meta).await.unwrap();

    let loaded = store.load(&key).await.unwrap().expect("the session");
    assert_eq!(loaded.meta.user_id, meta.user_id);
    assert_eq!(loaded.data.len(), 7_490);
    for i in 0..7_500 {
        let expected = match i {
            0..10 => None,
            10..2_500 => Some(value(i)),
            _ => Some(value(i + 1)),
        };
        assert_eq!(loaded.data.get(&format!("k{i}")), expected.as_ref(), "k{i}");
    }
    store.delete(&key).await.unwrap();
}

/// The whole contract again, on a store that announces its writes: the scripts take
/// the announcement's arguments off before their own.
mod with_an_invalidation_channel {
    session_testkit::conformance_tests!(crate::common::shared_store()
        .await
        .with_invalidation_channel(format!(
            "test:invalidate:{}",
            &session_testkit::random_token()[..16]
        )));
}

/// With an invalidation channel, each write that changes or ends a session publishes
/// `k<key>` in the same script (the testkit's rule); without one, nothing.
#[tokio::test]
async fn writes_announce_their_sessions_on_the_invalidation_channel() {
    use futures_util::StreamExt;

    let channel = format!("test:invalidate:{}", &session_testkit::random_token()[..16]);
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut subscription = client.get_async_pubsub().await.unwrap();
    subscription.subscribe(&channel).await.unwrap();
    let (forward, mut announced) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = subscription.on_message();
        while let Some(message) = messages.next().await {
            let payload = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
            if forward.send(payload).is_err() {
                break;
            }
        }
    });

    // A store without the channel announces nothing: the first message is the rule's.
    let silent = common::shared_store().await;
    let key = random_key();
    let now = Timestamp::now();
    let record = Record {
        data: session_core::store::Data::new(),
        meta: Meta::new(now, now.saturating_add(Duration::from_secs(600))),
    };
    silent.create(&key, &record).await.unwrap();
    silent.delete(&key).await.unwrap();
    let store = silent.with_invalidation_channel(channel);
    session_testkit::announcements::writes_announce_their_sessions(store, &mut announced).await;
}

/// docs/security.md 34: "log out everywhere" of 100,000 sessions of one user, while
/// logins of that user keep coming, in a bounded number of round trips: two per
/// 2,000 sessions (it took two per session, and 40,000 of them outlasted the store
/// timeout eleven times in a row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_of_100_000_sessions_wins_against_a_login_storm() {
    use futures_util::StreamExt;

    const SESSIONS: usize = 100_000;
    let most_pages = 2 * SESSIONS.div_ceil(2000) as u64 + 10;
    let server = OwnRedis::start();
    let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let user = random_user();
    let record = session_testkit::storm::login_record(&user);
    futures_util::stream::iter(0..SESSIONS)
        .map(|_| {
            let (store, record) = (store.clone(), record.clone());
            async move { store.create(&random_key(), &record).await.unwrap() }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    let ranges = server.command_calls("zrange");
    let loads = server.command_calls("hgetall");
    let logins =
        session_testkit::storm::log_out_everywhere_against_a_login_storm(store, &user, SESSIONS)
            .await;
    // Both calls of log out everywhere page through what they end; each login's
    // script reads its index's last member, and the listing reads the index once.
    let pages_read = server.command_calls("zrange") - ranges - logins as u64;
    assert!(pages_read <= most_pages, "{pages_read} pages");
    // No session is read one by one (it took a load and a script per session): the
    // loads are the check's own, of the storm's logins from before the call.
    let loads = server.command_calls("hgetall") - loads;
    assert!(loads <= logins as u64, "{loads} loads for {logins} logins");
}
