//! The load test of a user with many sessions (docs/security.md 34): on a
//! redis-server of the run's own, `total` logged-in sessions, `one_user` of them one
//! user's and each of the others its own user's. Reports Redis's memory per session
//! (user indexes included, from its own `used_memory`), the session list and "log out
//! everywhere" of that user timed, and the commands the latter sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use session_kit::store::{Record, SessionId, SessionKey};
use session_kit::{Meta, RedisStore, SessionStore, Timestamp};

use crate::servers::OwnRedis;
use crate::BoxError;

/// Creates in flight at once while the sessions are made.
const IN_FLIGHT: usize = 256;

pub(crate) fn scale(total: usize, one_user: usize) -> Result<String, BoxError> {
    let dir = std::env::temp_dir().join(format!("session-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let redis = OwnRedis::start(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let store = Arc::new(RedisStore::connect(&redis.url()).await?);
        let empty = used_memory(redis.port)?;
        let made = Instant::now();
        futures_util::stream::iter(0..total)
            .map(|i| {
                let store = store.clone();
                let user = if i < one_user {
                    "the-user".to_owned()
                } else {
                    format!("user-{i}")
                };
                async move { store.create(&random_key(i), &record(&user)).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let made = made.elapsed();
        let bytes = (used_memory(redis.port)? - empty) as f64 / total as f64;

        let listed = Instant::now();
        let sessions = store.user_sessions("the-user").await?.len();
        let listed = listed.elapsed();

        let commands = |name: &str| command_calls(redis.port, name);
        let (scripts, ranges) = (commands("evalsha")?, commands("zrange")?);
        let ended_in = Instant::now();
        let ended = store.delete_user_sessions("the-user").await?;
        let ended_in = ended_in.elapsed();
        let (scripts, ranges) = (commands("evalsha")? - scripts, commands("zrange")? - ranges);
        Ok::<_, BoxError>(format!(
            "{total} sessions made in {:.1} s; Redis memory {bytes:.0} bytes a session \
             (a counter, a user, its index entry)\n\
             session list of a user with {one_user}: {sessions} listed in {}\n\
             log out everywhere: {ended} ended in {}, {} round trips \
             ({scripts} scripts, {ranges} page reads)",
            made.as_secs_f64(),
            millis(listed),
            millis(ended_in),
            scripts + ranges,
        ))
    });
    drop(redis);
    std::fs::remove_dir_all(&dir)?;
    report
}

fn millis(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1e3)
}

/// A key of its own for session `i`: the hash of an id made of `i`'s digits.
fn random_key(i: usize) -> SessionKey {
    // 32 base64url characters, as a client sends an id.
    let id = format!("{i:0>32}");
    SessionId::parse(&id)
        .expect("32 base64url characters")
        .key()
}

/// A one-counter session of `user`, with a 30-minute idle timeout.
fn record(user: &str) -> Record {
    let now = Timestamp::now();
    let mut meta = Meta::new(now, now.saturating_add(Duration::from_secs(1800)));
    meta.user_id = Some(user.to_owned());
    Record {
        data: [("n".to_owned(), serde_json::json!(1))]
            .into_iter()
            .collect(),
        meta,
    }
}

fn redis_cli(port: u16, args: &[&str]) -> Result<String, BoxError> {
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()?;
    Ok(String::from_utf8(output.stdout)?)
}

fn used_memory(port: u16) -> Result<i64, BoxError> {
    let info = redis_cli(port, &["info", "memory"])?;
    let line = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .ok_or("no used_memory in INFO")?;
    Ok(line.trim().parse()?)
}

fn command_calls(port: u16, command: &str) -> Result<u64, BoxError> {
    let info = redis_cli(port, &["info", "commandstats"])?;
    let calls = info
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("0");
    Ok(calls.parse()?)
}
