//! What one request costs the store, and what concurrency costs a library: round
//! trips, statements and commands per request, coherence across servers, and lost
//! updates.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use tower::ServiceExt;

use crate::apps::{router, Lib};
use crate::load::make_sessions;
use crate::servers::psql;
use crate::BoxError;

/// Queries per request, as PostgreSQL counted them: the bench database's committed
/// transactions (each statement outside a transaction commits once), read after the
/// app's pool has closed, which is when a backend's counts are sure to be reported.
pub(crate) fn queries_per_request(lib: Lib, url: &str) -> Result<String, BoxError> {
    const REQUESTS: usize = 200;
    let commits = || -> Result<u64, BoxError> {
        let sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
        Ok(psql(url, sql)?.parse()?)
    };
    let mut report = format!("{lib}:");
    for (label, method, path) in [("read", "GET", "/read"), ("write", "POST", "/write")] {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (before, after) = runtime.block_on(async {
            let app = router(lib, Some(url)).await?;
            let cookies = make_sessions(&app, 100).await?;
            send(&app, method, path, &cookies[0]).await?;
            drop(app);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let before = commits()?;
            let app = router(lib, Some(url)).await?;
            for i in 0..REQUESTS {
                send(&app, method, path, &cookies[i % cookies.len()]).await?;
            }
            drop(app);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok::<_, BoxError>((before, commits()?))
        })?;
        // Starting the second app runs its migration (a few statements) once.
        report.push_str(&format!(
            " {label}: {:.2} statements per request (migration included);",
            after.saturating_sub(before) as f64 / REQUESTS as f64
        ));
    }
    Ok(report)
}

/// Redis commands per request, as the server saw them: `MONITOR` lists every command,
/// and marks those a Lua script ran itself `[0 lua]`. Round trips are the others.
pub(crate) fn commands_per_request(
    lib: Lib,
    redis_url: &str,
    port: u16,
) -> Result<String, BoxError> {
    const REQUESTS: usize = 200;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = router(lib, Some(redis_url)).await?;
        let cookies = make_sessions(&app, 100).await?;
        let mut report = format!("{lib}:");
        for (label, method, path) in [("read", "GET", "/read"), ("write", "POST", "/write")] {
            // Once before counting, so that scripts are loaded and connections made.
            send(&app, method, path, &cookies[0]).await?;
            // Line-buffered, and drained while the requests run: redis-cli buffers a
            // pipe by the block, and a full pipe would stall it and lose the rest.
            let mut monitor = Command::new("stdbuf")
                .args(["-oL", "redis-cli", "-p", &port.to_string(), "monitor"])
                .stdout(Stdio::piped())
                .spawn()?;
            let mut stdout = monitor.stdout.take().ok_or("no monitor output")?;
            let reader = std::thread::spawn(move || {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            for i in 0..REQUESTS {
                send(&app, method, path, &cookies[i % cookies.len()]).await?;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            monitor.kill()?;
            monitor.wait()?;
            let text = reader.join().map_err(|_| "the monitor reader panicked")??;
            let commands: Vec<&str> = text.lines().filter(|line| line.contains('"')).collect();
            let in_scripts = commands
                .iter()
                .filter(|line| line.contains(" lua]"))
                .count();
            let round_trips = commands.len() - in_scripts;
            report.push_str(&format!(
                " {label}: {:.2} round trips, {:.2} commands per request;",
                round_trips as f64 / REQUESTS as f64,
                commands.len() as f64 / REQUESTS as f64,
            ));
        }
        Ok(report)
    })
}

pub(crate) async fn send(
    app: &Router,
    method: &str,
    path: &str,
    cookie: &str,
) -> Result<String, BoxError> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())?;
    let response = app.clone().oneshot(request).await?;
    if !response.status().is_success() {
        return Err(format!("{path} answered {}", response.status()).into());
    }
    let body = http_body_util::BodyExt::collect(response.into_body()).await?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

/// Clients that keep the servers busy in [`coherence`]'s busy mode.
const BUSY_CLIENTS: usize = 16;

/// The coherence window, in process: two servers of `lib` (each its own layer and
/// cache) on one Redis. For each of `TRIALS` sessions, made on server A and read on
/// server B (so that B has it cached), a logout on A; from the moment A's response
/// is back, B is asked for the session until it refuses it. Percentiles of that
/// wait, and how many sessions B still served after a second.
///
/// `busy`: three servers, all kept busy meanwhile by [`BUSY_CLIENTS`] clients reading
/// sessions as fast as they are answered, on the same two threads as the servers'
/// subscriptions (as a loaded server runs them).
pub(crate) fn coherence(lib: Lib, url: &str, busy: bool) -> Result<String, BoxError> {
    const TRIALS: usize = 500;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (a, b) = (router(lib, Some(url)).await?, router(lib, Some(url)).await?);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        if busy {
            let c = router(lib, Some(url)).await?;
            let servers = [a.clone(), b.clone(), c];
            let cookies = make_sessions(&servers[0], BUSY_CLIENTS).await?;
            for (i, cookie) in cookies.into_iter().enumerate() {
                let (server, stop) = (servers[i % 3].clone(), stop.clone());
                load.push(tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = send(&server, "GET", "/read", &cookie).await;
                        // A request over a socket gives its thread up; one answered
                        // from the cache in process would not.
                        tokio::task::yield_now().await;
                    }
                }));
            }
        }
        let mut waits = Vec::with_capacity(TRIALS);
        let (mut still_served, mut tried, mut at_once) = (0, 0, 0);
        for cookie in make_sessions(&a, TRIALS).await? {
            // A store that never drops other servers' copies would take a second a
            // trial: twenty such say enough.
            if still_served == 20 {
                break;
            }
            tried += 1;
            if send(&b, "GET", "/read", &cookie).await?.is_empty() {
                return Err("server B does not see a session server A made".into());
            }
            send(&a, "POST", "/logout", &cookie).await?;
            let logged_out = Instant::now();
            for attempt in 0.. {
                if send(&b, "GET", "/read", &cookie).await?.is_empty() {
                    waits.push(logged_out.elapsed().as_secs_f64() * 1e6);
                    at_once += usize::from(attempt == 0);
                    break;
                }
                if logged_out.elapsed() > Duration::from_secs(1) {
                    still_served += 1;
                    break;
                }
                // Let the system run between attempts: on two cores, a loop that never
                // gives its core up delays the very servers it measures, where a real
                // client runs elsewhere.
                std::thread::yield_now();
            }
        }
        let percentile = |waits: &mut Vec<f64>, p: f64| -> String {
            if waits.is_empty() {
                return "–".to_owned();
            }
            waits.sort_by(f64::total_cmp);
            let index = ((waits.len() as f64 * p).ceil() as usize).clamp(1, waits.len()) - 1;
            format!("{:.0} µs", waits[index])
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in load {
            task.await?;
        }
        let channel = if url.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "Redis"
        };
        let servers = if busy { "3, busy" } else { "2, idle" };
        Ok(format!(
            "| {lib} | {channel} | {servers} | {} | {} | {} | {at_once} of {tried} | {still_served} of {tried} |",
            percentile(&mut waits, 0.5),
            percentile(&mut waits, 0.99),
            percentile(&mut waits, 1.0),
        ))
    })
}

/// Lost updates under concurrency, in process: 100 concurrent increments of one
/// session, and 20 trials of two overlapping requests that set different keys.
pub(crate) fn concurrency(lib: Lib, redis_url: Option<&str>) -> Result<String, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = router(lib, redis_url).await?;
        let cookie = make_sessions(&app, 1).await?.remove(0);
        let increments: Vec<_> = (0..100)
            .map(|_| {
                let (app, cookie) = (app.clone(), cookie.clone());
                tokio::spawn(async move { send(&app, "POST", "/incr", &cookie).await })
            })
            .collect();
        for increment in increments {
            increment.await??;
        }
        let counted = send(&app, "GET", "/get/n", &cookie).await?;
        let mut both_kept = 0;
        const TRIALS: usize = 20;
        for _ in 0..TRIALS {
            let cookie = make_sessions(&app, 1).await?.remove(0);
            let (a, b) = tokio::join!(
                send(&app, "POST", "/slow-set/a", &cookie),
                send(&app, "POST", "/slow-set/b", &cookie)
            );
            a?;
            b?;
            let kept_a = !send(&app, "GET", "/get/a", &cookie).await?.is_empty();
            let kept_b = !send(&app, "GET", "/get/b", &cookie).await?.is_empty();
            both_kept += usize::from(kept_a && kept_b);
        }
        Ok(format!(
            "{lib}: 100 concurrent increments ended at {}; two overlapping writes of \
             different keys both kept in {both_kept} of {TRIALS} trials",
            if counted.is_empty() { "0" } else { &counted }
        ))
    })
}
