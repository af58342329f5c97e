//! Benchmark harness: session-kit beside tower-sessions and a bare axum router, in one
//! run, on the same machine, alternating.
//!
//! Run with: `cargo run --release -p session-bench -- run` (needs `wrk`; see
//! BENCHMARKS.md for what it measures and how to read it).
//!
//! Subcommands:
//!
//! - `run [--seconds N] [--cycles N]`: the whole benchmark, printing a markdown table.
//! - `serve --lib L --port P --cookies FILE`: one app on a one-thread runtime, with
//!   10,000 sessions made through its own layer and their cookies written to FILE.
//! - `memory --lib L [--sessions N]`: heap bytes per live session, in a fresh process.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sessions made before the load, spread over by the "many sessions" scenarios.
const SESSIONS: usize = 10_000;

/// What serves the benchmark routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lib {
    /// The same routes with no session layer: the ceiling.
    Bare,
    SessionKit,
    TowerSessions,
}

impl Lib {
    const ALL: [Lib; 3] = [Lib::Bare, Lib::SessionKit, Lib::TowerSessions];

    fn parse(name: &str) -> Result<Self, BoxError> {
        Self::ALL
            .into_iter()
            .find(|lib| lib.name() == name)
            .ok_or_else(|| format!("unknown lib {name:?}").into())
    }

    fn name(self) -> &'static str {
        match self {
            Lib::Bare => "bare",
            Lib::SessionKit => "session-kit",
            Lib::TowerSessions => "tower-sessions",
        }
    }
}

impl fmt::Display for Lib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Distinct values for writes, so that every write really changes the session.
type Counter = Arc<AtomicU64>;

/// The app under test. Routes: `GET /read` reads the user from the session, `POST
/// /write` sets a key to a new value, `POST /login` makes a session with a user.
fn router(lib: Lib) -> Router {
    let counter = Counter::default();
    match lib {
        Lib::Bare => Router::new()
            .route("/read", get(|| async { "user-0" }))
            .route(
                "/write",
                post(|State(c): State<Counter>| async move {
                    c.fetch_add(1, Ordering::Relaxed).to_string()
                }),
            )
            .route("/login", post(|| async { "ok" }))
            .with_state(counter),
        Lib::SessionKit => {
            use session_kit::{MemoryStore, Session, SessionError, SessionLayer};
            async fn read(session: Session) -> Result<String, SessionError> {
                Ok(session.get::<String>("user").await?.unwrap_or_default())
            }
            async fn write(session: Session, State(c): State<Counter>) -> Result<(), SessionError> {
                session
                    .insert("last", c.fetch_add(1, Ordering::Relaxed))
                    .await
            }
            async fn login(session: Session, State(c): State<Counter>) -> Result<(), SessionError> {
                let n = c.fetch_add(1, Ordering::Relaxed);
                session.insert("user", format!("user-{n}")).await
            }
            let layer = SessionLayer::builder(MemoryStore::new())
                .with_secure(false)
                .build()
                .expect("a valid layer");
            Router::new()
                .route("/read", get(read))
                .route("/write", post(write))
                .route("/login", post(login))
                .layer(layer)
                .with_state(counter)
        }
        Lib::TowerSessions => {
            use tower_sessions::{MemoryStore, Session, SessionManagerLayer};
            fn failed(_: tower_sessions::session::Error) -> StatusCode {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            async fn read(session: Session) -> Result<String, StatusCode> {
                let user = session.get::<String>("user").await.map_err(failed)?;
                Ok(user.unwrap_or_default())
            }
            async fn write(session: Session, State(c): State<Counter>) -> Result<(), StatusCode> {
                let n = c.fetch_add(1, Ordering::Relaxed);
                session.insert("last", n).await.map_err(failed)
            }
            async fn login(session: Session, State(c): State<Counter>) -> Result<(), StatusCode> {
                let n = c.fetch_add(1, Ordering::Relaxed);
                session
                    .insert("user", format!("user-{n}"))
                    .await
                    .map_err(failed)
            }
            Router::new()
                .route("/read", get(read))
                .route("/write", post(write))
                .route("/login", post(login))
                .layer(SessionManagerLayer::new(MemoryStore::default()).with_secure(false))
                .with_state(counter)
        }
    }
}

/// Makes `count` sessions through the app's own layer and returns their cookies
/// (`name=value`). The bare router sets no cookie; it gets cookies of the same size.
async fn make_sessions(app: &Router, count: usize) -> Result<Vec<String>, BoxError> {
    let mut cookies = Vec::with_capacity(count);
    for i in 0..count {
        let request = Request::post("/login").body(Body::empty())?;
        let response = app.clone().oneshot(request).await?;
        if !response.status().is_success() {
            return Err(format!("login answered {}", response.status()).into());
        }
        let cookie = match response.headers().get(header::SET_COOKIE) {
            Some(value) => value
                .to_str()?
                .split(';')
                .next()
                .unwrap_or_default()
                .to_owned(),
            None => format!("id=bare{i:027}"),
        };
        cookies.push(cookie);
    }
    Ok(cookies)
}

fn serve(lib: Lib, port: u16, cookie_file: &Path) -> Result<(), BoxError> {
    // One worker thread: wrk gets the other core, so the server is what saturates.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = router(lib);
        let cookies = make_sessions(&app, SESSIONS).await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        // Written last and renamed into place: its existence means "ready".
        let partial = cookie_file.with_extension("partial");
        std::fs::write(&partial, cookies.join("\n") + "\n")?;
        std::fs::rename(&partial, cookie_file)?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Heap bytes per live session, and the resident memory they added, for `count`
/// sessions made through the app's layer.
fn memory(lib: Lib, count: usize) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = router(lib);
        // Warm up whatever the first request allocates once.
        make_sessions(&app, 1).await?;
        let rss_before = resident_bytes()?;
        let region = Region::new(ALLOCATOR);
        let cookies = make_sessions(&app, count).await?;
        drop(cookies);
        let change = region.change();
        let rss_after = resident_bytes()?;
        let heap = change.bytes_allocated as i64 - change.bytes_deallocated as i64
            + change.bytes_reallocated as i64;
        println!(
            "{lib} heap_bytes_per_session={} rss_bytes_per_session={}",
            heap / count as i64,
            (rss_after as i64 - rss_before as i64) / count as i64
        );
        Ok(())
    })
}

/// Nanoseconds and heap allocations per request through the app in-process (no
/// network), for `count` requests of `scenario`: the layer's own cost, without the
/// noise of a load run.
fn in_process(lib: Lib, scenario: Scenario, count: usize) -> Result<(f64, f64), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = router(lib);
        let mut cookies = make_sessions(&app, SESSIONS).await?;
        if scenario.hot {
            cookies.truncate(1);
        }
        let (method, path) = if scenario.write {
            ("POST", "/write")
        } else {
            ("GET", "/read")
        };
        let started = Instant::now();
        let region = Region::new(ALLOCATOR);
        for i in 0..count {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header(header::COOKIE, &cookies[i % cookies.len()])
                .body(Body::empty())?;
            let response = app.clone().oneshot(request).await?;
            if !response.status().is_success() {
                return Err(format!("{path} answered {}", response.status()).into());
            }
        }
        let elapsed = started.elapsed();
        let allocations = region.change().allocations;
        Ok((
            elapsed.as_nanos() as f64 / count as f64,
            allocations as f64 / count as f64,
        ))
    })
}

fn resident_bytes() -> Result<u64, BoxError> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("unexpected /proc/self/statm")?
        .parse()?;
    Ok(pages * 4096)
}

/// One load scenario: a route, and whether requests spread over every session or
/// all carry one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scenario {
    write: bool,
    hot: bool,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario {
            write: false,
            hot: false,
        },
        Scenario {
            write: false,
            hot: true,
        },
        Scenario {
            write: true,
            hot: false,
        },
        Scenario {
            write: true,
            hot: true,
        },
    ];
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let route = if self.write { "write" } else { "read" };
        let spread = if self.hot {
            "one hot session"
        } else {
            "10,000 sessions"
        };
        write!(f, "{route}, {spread}")
    }
}

struct Server {
    lib: Lib,
    child: Child,
    cookies: PathBuf,
    hot_cookie: PathBuf,
    port: u16,
}

/// What one load slice measured.
struct Slice {
    requests_per_second: f64,
    /// Server CPU time (user + system) per request, in microseconds.
    cpu_us_per_request: f64,
}

impl Server {
    fn start(lib: Lib, port: u16, dir: &Path) -> Result<Self, BoxError> {
        let cookies = dir.join(format!("{lib}.cookies"));
        let _ = std::fs::remove_file(&cookies);
        let child = Command::new(std::env::current_exe()?)
            .args([
                "serve",
                "--lib",
                lib.name(),
                "--port",
                &port.to_string(),
                "--cookies",
            ])
            .arg(&cookies)
            .stdout(Stdio::null())
            .spawn()?;
        let hot_cookie = dir.join(format!("{lib}.hot"));
        Ok(Self {
            lib,
            child,
            cookies,
            hot_cookie,
            port,
        })
    }

    /// Waits until the server has made its sessions and listens.
    fn wait_ready(&self) -> Result<(), BoxError> {
        let started = Instant::now();
        while !self.cookies.exists() {
            if started.elapsed() > Duration::from_secs(120) {
                return Err(format!("{} did not start", self.lib).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let all = std::fs::read_to_string(&self.cookies)?;
        let first = all.lines().next().unwrap_or_default();
        std::fs::write(&self.hot_cookie, format!("{first}\n"))?;
        Ok(())
    }

    /// CPU time the server has used so far, in clock ticks (user + system).
    fn cpu_ticks(&self) -> Result<u64, BoxError> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .ok_or("unexpected /proc/PID/stat")?
            .1
            .split_whitespace()
            .collect();
        Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
    }

    fn load(&self, scenario: Scenario, seconds: u64, script: &Path) -> Result<Slice, BoxError> {
        let cookies = if scenario.hot {
            &self.hot_cookie
        } else {
            &self.cookies
        };
        let (method, path) = if scenario.write {
            ("POST", "/write")
        } else {
            ("GET", "/read")
        };
        let ticks_before = self.cpu_ticks()?;
        let output = Command::new("wrk")
            .args(["-t1", "-c32", &format!("-d{seconds}s"), "-s"])
            .arg(script)
            .arg(format!("http://127.0.0.1:{}", self.port))
            .arg("--")
            .arg(cookies)
            .args([method, path])
            .output()
            .map_err(|e| format!("running wrk ({e}); install it with `apt-get install wrk`"))?;
        let ticks = self.cpu_ticks()? - ticks_before;
        let text = String::from_utf8_lossy(&output.stdout);
        if text.contains("Non-2xx") || text.contains("Socket errors") {
            return Err(format!("errors under load:\n{text}").into());
        }
        // wrk prints "Requests/sec: N" and "  N requests in 2.00s, …".
        let requests_per_second: f64 = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
            .ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?
            .trim()
            .parse()?;
        let requests: f64 = text
            .lines()
            .find(|line| line.contains(" requests in "))
            .and_then(|line| line.split_whitespace().next())
            .ok_or_else(|| format!("no request count in wrk output:\n{text}"))?
            .parse()?;
        // Linux reports CPU time in ticks of 1/100 s (USER_HZ).
        let cpu_us_per_request = ticks as f64 * 10_000.0 / requests;
        Ok(Slice {
            requests_per_second,
            cpu_us_per_request,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Per scenario: each library's slices, and the ratios to the bare router taken slice
/// by slice (each against the bare slice of the same cycle).
#[derive(Default)]
struct Measured {
    rps: BTreeMap<Lib, Vec<f64>>,
    cpu: BTreeMap<Lib, Vec<f64>>,
    ratio_to_bare: BTreeMap<Lib, Vec<f64>>,
    ratio_to_tower: Vec<f64>,
}

fn run(seconds: u64, cycles: usize) -> Result<(), BoxError> {
    let dir = std::env::temp_dir().join(format!("session-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("cookies.lua");
    std::fs::write(&script, include_str!("../lua/cookies.lua"))?;

    // All three servers run at once; only the one under load uses the CPU.
    let servers = Lib::ALL
        .into_iter()
        .enumerate()
        .map(|(i, lib)| Server::start(lib, 39_100 + i as u16, &dir))
        .collect::<Result<Vec<_>, _>>()?;
    for server in &servers {
        server.wait_ready()?;
    }

    let mut results: BTreeMap<Scenario, Measured> = BTreeMap::new();
    for scenario in Scenario::ALL {
        let measured = results.entry(scenario).or_default();
        for cycle in 0..cycles {
            // Short slices, alternating, in a rotating order: drift over the run
            // touches the libraries of one cycle alike, and their ratio cancels it.
            let mut slices = BTreeMap::new();
            for i in 0..servers.len() {
                let server = &servers[(cycle + i) % servers.len()];
                let slice = server.load(scenario, seconds, &script)?;
                eprintln!(
                    "{scenario:<28} cycle {cycle:>2} {:>14} {:>9.0} req/s {:>6.1} µs CPU/req",
                    server.lib, slice.requests_per_second, slice.cpu_us_per_request
                );
                slices.insert(server.lib, slice);
            }
            let bare = slices[&Lib::Bare].requests_per_second;
            for (lib, slice) in &slices {
                measured
                    .rps
                    .entry(*lib)
                    .or_default()
                    .push(slice.requests_per_second);
                measured
                    .cpu
                    .entry(*lib)
                    .or_default()
                    .push(slice.cpu_us_per_request);
                measured
                    .ratio_to_bare
                    .entry(*lib)
                    .or_default()
                    .push(slice.requests_per_second / bare);
            }
            measured.ratio_to_tower.push(
                slices[&Lib::SessionKit].requests_per_second
                    / slices[&Lib::TowerSessions].requests_per_second,
            );
        }
    }
    drop(servers);

    println!(
        "{cycles} cycles of {seconds} s slices per scenario, alternating; wrk -t1 -c32; each \
         server on one thread. Medians.\n"
    );
    println!("| scenario | bare req/s | session-kit req/s | tower-sessions req/s | session-kit / bare | tower-sessions / bare | session-kit / tower-sessions |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (scenario, m) in &mut results {
        let mut rps = |lib| median(m.rps.get_mut(&lib).expect("measured"));
        let (bare, kit, tower) = (
            rps(Lib::Bare),
            rps(Lib::SessionKit),
            rps(Lib::TowerSessions),
        );
        let mut ratio = |lib| median(m.ratio_to_bare.get_mut(&lib).expect("measured"));
        let (kit_ratio, tower_ratio) = (ratio(Lib::SessionKit), ratio(Lib::TowerSessions));
        println!(
            "| {scenario} | {bare:.0} | {kit:.0} | {tower:.0} | {kit_ratio:.2} | {tower_ratio:.2} | {:.2} |",
            median(&mut m.ratio_to_tower)
        );
    }
    println!("\nServer CPU time per request (µs, median):\n");
    println!("| scenario | bare | session-kit | tower-sessions |");
    println!("| --- | ---: | ---: | ---: |");
    for (scenario, m) in &mut results {
        let mut cpu = |lib| median(m.cpu.get_mut(&lib).expect("measured"));
        let (bare, kit, tower) = (
            cpu(Lib::Bare),
            cpu(Lib::SessionKit),
            cpu(Lib::TowerSessions),
        );
        println!("| {scenario} | {bare:.1} | {kit:.1} | {tower:.1} |");
    }
    println!();
    for lib in [Lib::SessionKit, Lib::TowerSessions] {
        let output = Command::new(std::env::current_exe()?)
            .args(["memory", "--lib", lib.name(), "--sessions", "100000"])
            .output()?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lib = || Lib::parse(flag(&args, "--lib").ok_or("--lib is required")?);
    match args.first().map(String::as_str) {
        Some("run") => run(
            flag(&args, "--seconds").unwrap_or("2").parse()?,
            flag(&args, "--cycles").unwrap_or("9").parse()?,
        ),
        Some("serve") => serve(
            lib()?,
            flag(&args, "--port").ok_or("--port is required")?.parse()?,
            Path::new(flag(&args, "--cookies").ok_or("--cookies is required")?),
        ),
        Some("in-process") => {
            let count = flag(&args, "--requests").unwrap_or("1000000").parse()?;
            for scenario in Scenario::ALL {
                let (ns, allocations) = in_process(lib()?, scenario, count)?;
                println!(
                    "{} {scenario}: {ns:.0} ns/request, {allocations:.1} allocations/request",
                    lib()?
                );
            }
            Ok(())
        }
        Some("memory") => memory(
            lib()?,
            flag(&args, "--sessions").unwrap_or("100000").parse()?,
        ),
        _ => Err(
            "usage: session-bench run [--seconds N] [--cycles N] | serve --lib L --port P \
                  --cookies FILE | memory --lib L [--sessions N]"
                .into(),
        ),
    }
}
