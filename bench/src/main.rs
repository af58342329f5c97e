//! Benchmark harness: session-kit beside tower-sessions and a bare axum router, in one
//! run, on the same machine, alternating.
//!
//! Run with: `cargo run --release -p session-bench -- run` (needs `wrk`; see
//! BENCHMARKS.md for what it measures and how to read it).
//!
//! Subcommands:
//!
//! - `run [--store S] [--seconds N] [--cycles N] [--libs bare,L,…] [--scenarios
//!   read,read-hot,write,write-hot]`: the whole benchmark (or the scenarios named),
//!   printing markdown tables.
//! - `serve --lib L --port P --cookies FILE`: one app on a one-thread runtime, with
//!   10,000 sessions made through its own layer and their cookies written to FILE.
//! - `memory --lib L [--sessions N]`: heap bytes per live session, in a fresh process.
//! - `in-process --lib L [--requests N] [--scenarios S,…] [--url URL]`: nanoseconds and
//!   heap allocations per request with no network, for every scenario or those
//!   named (`read`, `read-hot`, `write`, `write-hot`); what
//!   `scripts/instructions-per-request` counts under callgrind.
//! - `concurrency --lib L [--url URL]`: the lost-update figures alone.
//! - `commands --lib L --url URL`: Redis round trips and commands per request alone.
//! - `coherence --lib L --url URL`: after a logout on one server, how long another
//!   still serves the session (two servers in process on one Redis).

mod apps;
mod speed;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::ServiceExt;

use crate::apps::{router, Backend, Lib};
use crate::speed::SpeedWatch;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sessions made before the load, spread over by the "many sessions" scenarios.
const SESSIONS: usize = 10_000;

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

fn serve(lib: Lib, port: u16, cookie_file: &Path, redis: Option<&str>) -> Result<(), BoxError> {
    // One worker thread: wrk gets the other core, so the server is what saturates.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = router(lib, redis).await?;
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
        let app = router(lib, None).await?;
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
fn in_process(
    lib: Lib,
    scenario: Scenario,
    count: usize,
    redis: Option<&str>,
) -> Result<(f64, f64), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = router(lib, redis).await?;
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

    /// A scenario by its short name: `read`, `read-hot`, `write` or `write-hot`.
    fn parse(name: &str) -> Result<Self, BoxError> {
        let (route, hot) = match name.strip_suffix("-hot") {
            Some(route) => (route, true),
            None => (name, false),
        };
        let write = match route {
            "read" => false,
            "write" => true,
            _ => {
                return Err(format!("scenario {name:?}: read, read-hot, write or write-hot").into())
            }
        };
        Ok(Scenario { write, hot })
    }
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
    fn start(lib: Lib, port: u16, dir: &Path, store_url: Option<&str>) -> Result<Self, BoxError> {
        let cookies = dir.join(format!("{lib}.cookies"));
        let _ = std::fs::remove_file(&cookies);
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args([
                "serve",
                "--lib",
                lib.name(),
                "--port",
                &port.to_string(),
                "--cookies",
            ])
            .arg(&cookies)
            .stdout(Stdio::null());
        if let (Some(url), false) = (store_url, lib.backend() == Backend::Memory) {
            command.args(["--url", url]);
        }
        let child = command.spawn()?;
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
    /// Per session-kit library and peer.
    ratio_to_peer: BTreeMap<(Lib, Lib), Vec<f64>>,
}

/// The load run: `libs[0]` is the bare router, then session-kit's (and the bounds:
/// `extension-only`, what a layer costs before any session work, `id-lookup`, the
/// least a read of a session held in process costs, and the Redis round trips) and
/// the peers (tower-sessions, in one configuration or more); with a Redis server of
/// the run's own when the store is Redis.
fn run(
    store: &str,
    seconds: u64,
    cycles: usize,
    only: Option<&str>,
    scenarios: &[Scenario],
) -> Result<(), BoxError> {
    let mut libs = match store {
        "memory" => vec![Lib::Bare, Lib::SessionKit, Lib::TowerSessions],
        "redis" => vec![
            Lib::Bare,
            Lib::RedisRoundTrip,
            Lib::RedisConditionalWrite,
            Lib::SessionKitRedis,
            Lib::TowerSessionsRedis,
            Lib::TowerSessionsRedisSliding,
        ],
        "postgres" => vec![
            Lib::Bare,
            Lib::SessionKitPostgres,
            Lib::TowerSessionsPostgres,
        ],
        "sqlite" => vec![Lib::Bare, Lib::SessionKitSqlite, Lib::TowerSessionsSqlite],
        "tiered" => vec![
            Lib::Bare,
            Lib::ExtensionOnly,
            Lib::IdLookup,
            Lib::SessionKitTiered,
            Lib::SessionKitTieredStrict,
            Lib::SessionKitRedis,
            Lib::TowerSessionsRedisMoka,
        ],
        "cookie" => vec![Lib::Bare, Lib::SessionKitCookie, Lib::TowerSessionsCookie],
        other => {
            return Err(format!(
                "--store {other:?}: memory, redis, postgres, sqlite, tiered or cookie"
            )
            .into())
        }
    };
    if let Some(names) = only {
        // Libraries of the store's set, or the in-memory ones beside them.
        libs = names.split(',').map(Lib::parse).collect::<Result<_, _>>()?;
        if libs.len() < 2 || libs[0] != Lib::Bare {
            return Err("--libs: bare, then the libraries to load beside it".into());
        }
    }
    let dir = std::env::temp_dir().join(format!("session-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("cookies.lua");
    std::fs::write(&script, include_str!("../lua/cookies.lua"))?;
    let redis = matches!(store, "redis" | "tiered")
        .then(|| OwnRedis::start(&dir))
        .transpose()?;
    let database = (store == "postgres")
        .then(BenchDatabase::create)
        .transpose()?;
    let store_url = match (&redis, &database) {
        (Some(redis), _) => Some(redis.url()),
        (_, Some(database)) => Some(database.url.clone()),
        // Each library its own file in the run's directory.
        _ if store == "sqlite" => Some(format!("sqlite://{}", dir.join("LIB.db").display())),
        _ => None,
    };
    let lib_url = |lib: Lib| store_url.as_ref().map(|url| url.replace("LIB", lib.name()));

    // All three servers run at once; only the one under load uses the CPU.
    let speed = SpeedWatch::start();
    let servers = libs
        .iter()
        .copied()
        .enumerate()
        .map(|(i, lib)| Server::start(lib, 39_100 + i as u16, &dir, lib_url(lib).as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    for server in &servers {
        server.wait_ready()?;
    }

    let bare_lib = libs[0];
    let (peers, kits): (Vec<Lib>, Vec<Lib>) = libs[1..].iter().partition(|lib| lib.is_peer());
    let mut results: BTreeMap<Scenario, Measured> = BTreeMap::new();
    // Cycles the machine slowed in: retaken, up to as many as the run asked for per
    // scenario, and after that kept.
    let (mut retaken, mut kept_slow) = (0, 0);
    for &scenario in scenarios {
        let measured = results.entry(scenario).or_default();
        let mut retakes_left = cycles;
        let mut cycle = 0;
        while cycle < cycles {
            // Short slices, alternating, in a rotating order: drift over the run
            // touches the libraries of one cycle alike, and their ratio cancels it.
            let mut slices = BTreeMap::new();
            let mut slow = false;
            for i in 0..servers.len() {
                let server = &servers[(cycle + i) % servers.len()];
                let began = Instant::now();
                let slice = server.load(scenario, seconds, &script)?;
                let (slow_probes, probes) = speed.slow_since(began);
                let slice_slow = slow_probes > 0;
                eprintln!(
                    "{scenario:<28} cycle {cycle:>2} {:>14} {:>9.0} req/s {:>6.1} µs CPU/req{}",
                    server.lib,
                    slice.requests_per_second,
                    slice.cpu_us_per_request,
                    if slice_slow {
                        format!("  (machine slow: {slow_probes} of {probes} probes)")
                    } else {
                        String::new()
                    }
                );
                slices.insert(server.lib, slice);
                slow |= slice_slow;
                if slow && retakes_left > 0 {
                    break;
                }
            }
            if slow {
                if retakes_left > 0 {
                    retakes_left -= 1;
                    retaken += 1;
                    eprintln!("cycle {cycle} retaken: the machine ran slow during it");
                    speed.wait_for_full_speed(Duration::from_secs(600));
                    continue;
                }
                kept_slow += 1;
            }
            let bare = slices[&bare_lib].requests_per_second;
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
                if kits.contains(lib) {
                    for peer in &peers {
                        measured
                            .ratio_to_peer
                            .entry((*lib, *peer))
                            .or_default()
                            .push(slice.requests_per_second / slices[peer].requests_per_second);
                    }
                }
            }
            cycle += 1;
        }
    }
    drop(servers);

    println!(
        "{store} store: {cycles} cycles of {seconds} s slices per scenario, alternating; \
         wrk -t1 -c32; each server on one thread. Medians."
    );
    println!(
        "Cycles in which the machine ran slow: {retaken} retaken, {kept_slow} kept \
         (after as many retakes as cycles).\n"
    );
    let served = &libs[1..];
    let mut header = String::from("| scenario |");
    for lib in &libs {
        header += &format!(" {lib} req/s |");
    }
    for lib in served {
        header += &format!(" {lib} / bare |");
    }
    let kit_peer_pairs: Vec<(Lib, Lib)> = kits
        .iter()
        .flat_map(|&kit| peers.iter().map(move |&peer| (kit, peer)))
        .collect();
    for (kit, peer) in &kit_peer_pairs {
        header += &format!(" {kit} / {peer} |");
    }
    println!("{header}");
    println!(
        "| --- |{}",
        " ---: |".repeat(libs.len() + served.len() + kit_peer_pairs.len())
    );
    for (scenario, m) in &mut results {
        let mut row = format!("| {scenario} |");
        for lib in &libs {
            row += &format!(" {:.0} |", median(m.rps.get_mut(lib).expect("measured")));
        }
        for lib in served {
            row += &format!(
                " {:.2} |",
                median(m.ratio_to_bare.get_mut(lib).expect("measured"))
            );
        }
        for pair in &kit_peer_pairs {
            row += &format!(
                " {:.2} |",
                median(m.ratio_to_peer.get_mut(pair).expect("measured"))
            );
        }
        println!("{row}");
    }
    println!("\nServer CPU time per request (µs, median):\n");
    println!(
        "| scenario |{}",
        libs.iter()
            .map(|lib| format!(" {lib} |"))
            .collect::<String>()
    );
    println!("| --- |{}", " ---: |".repeat(libs.len()));
    for (scenario, m) in &mut results {
        let cpu: String = libs
            .iter()
            .map(|lib| format!(" {:.1} |", median(m.cpu.get_mut(lib).expect("measured"))))
            .collect();
        println!("| {scenario} |{cpu}");
    }
    println!();
    if store == "cookie" {
        print!("{}", seal_and_open()?);
    }
    // The rest asks each library about its sessions, which the bounds have none of.
    let served: Vec<Lib> = served
        .iter()
        .copied()
        .filter(|&lib| lib.has_sessions())
        .collect();
    if store == "memory" {
        for &lib in &served {
            let output = Command::new(std::env::current_exe()?)
                .args(["memory", "--lib", lib.name(), "--sessions", "100000"])
                .output()?;
            print!("{}", String::from_utf8_lossy(&output.stdout));
        }
    }
    for &lib in &served {
        match (&redis, &store_url) {
            (Some(redis), Some(url)) => println!("{}", commands_per_request(lib, url, redis.port)?),
            (None, Some(url)) if database.is_some() => {
                println!("{}", queries_per_request(lib, url)?)
            }
            _ => {}
        }
    }
    for &lib in &served {
        println!("{}", concurrency(lib, lib_url(lib).as_deref())?);
    }
    if store == "tiered" {
        println!("\nCoherence: after a logout on server A, how long until server B refuses\n");
        println!("| | channel | p50 | p99 | max | refused at once | still served after 1 s |");
        println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        let redis_url = store_url.as_deref().ok_or("no Redis")?;
        // The peer only when it is the caching store (`--libs` may name another,
        // whose sessions two servers do not share).
        let peer = peers
            .contains(&Lib::TowerSessionsRedisMoka)
            .then_some(Lib::TowerSessionsRedisMoka);
        for lib in [Lib::SessionKitTiered, Lib::SessionKitTieredStrict]
            .into_iter()
            .chain(peer)
        {
            println!("{}", coherence(lib, redis_url)?);
        }
        let database = BenchDatabase::create()?;
        for lib in [Lib::SessionKitTiered, Lib::SessionKitTieredStrict] {
            println!("{}", coherence(lib, &database.url)?);
        }
    }
    drop((redis, database));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Nanoseconds to seal and to open one session of 100 B, 1 KB and 3 KB of plaintext:
/// `CookieStore`, and beside it the `cookie` crate's private jar (AES-256-GCM), which
/// tower-sessions-cookie-store seals with, on the same bytes. A markdown table.
fn seal_and_open() -> Result<String, BoxError> {
    use session_kit::{ClientStore, CookieKey, CookieStore};

    const ROUNDS: u32 = 20_000;
    let store = CookieStore::new(CookieKey::generate());
    let jar_key = cookie::Key::generate();
    let time = |mut f: Box<dyn FnMut() + '_>| {
        for _ in 0..ROUNDS / 10 {
            f();
        }
        let started = Instant::now();
        for _ in 0..ROUNDS {
            f();
        }
        started.elapsed().as_nanos() as f64 / f64::from(ROUNDS)
    };
    let mut table = String::from(
        "\n| plaintext | session-kit seal | session-kit open | private jar seal | private jar open |\n\
         | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for size in [100, 1000, 3000] {
        // A session's JSON, padded to `size` bytes.
        let json = format!("{{\"v\":\"{}\"}}", "x".repeat(size - 8));
        let sealed = store.seal("id", json.as_bytes());
        assert!(store.open("id", &sealed).is_some());
        let kit_seal = time(Box::new(|| {
            std::hint::black_box(store.seal("id", std::hint::black_box(json.as_bytes())));
        }));
        let kit_open = time(Box::new(|| {
            std::hint::black_box(store.open("id", std::hint::black_box(&sealed)));
        }));
        let seal_jar = || {
            let mut jar = cookie::CookieJar::new();
            jar.private_mut(&jar_key)
                .add(cookie::Cookie::new("id", json.clone()));
            jar.get("id")
                .map(|c| c.value().to_owned())
                .unwrap_or_default()
        };
        let jar_sealed = seal_jar();
        let jar_seal = time(Box::new(|| {
            std::hint::black_box(seal_jar());
        }));
        let jar_open = time(Box::new(|| {
            let jar = cookie::CookieJar::new();
            let opened = jar
                .private(&jar_key)
                .decrypt(cookie::Cookie::new("id", jar_sealed.clone()));
            assert!(opened.is_some());
            std::hint::black_box(opened);
        }));
        table += &format!(
            "| {size} B | {kit_seal:.0} ns | {kit_open:.0} ns | {jar_seal:.0} ns | {jar_open:.0} ns |\n"
        );
    }
    Ok(table)
}

/// A redis-server of the run's own, on a free loopback port, keeping nothing on disk.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start(dir: &Path) -> Result<Self, BoxError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "starting redis-server ({e}); install it with `apt-get install redis-server`"
                )
            })?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL database of the run's own on the machine's server (`POSTGRES_URL`,
/// default `postgres://postgres@127.0.0.1:5432/test`), dropped at the end.
struct BenchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl BenchDatabase {
    fn create() -> Result<Self, BoxError> {
        let admin_url = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!("session_kit_bench_{}", std::process::id());
        psql(&admin_url, &format!("CREATE DATABASE {name}"))?;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Ok(Self {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(url: &str, sql: &str) -> Result<String, BoxError> {
    let output = Command::new("psql").args([url, "-Atqc", sql]).output()?;
    if !output.status.success() {
        return Err(format!("psql: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Queries per request, as PostgreSQL counted them: the bench database's committed
/// transactions (each statement outside a transaction commits once), read after the
/// app's pool has closed, which is when a backend's counts are sure to be reported.
fn queries_per_request(lib: Lib, url: &str) -> Result<String, BoxError> {
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
fn commands_per_request(lib: Lib, redis_url: &str, port: u16) -> Result<String, BoxError> {
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

async fn send(app: &Router, method: &str, path: &str, cookie: &str) -> Result<String, BoxError> {
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

/// The coherence window, in process: two servers of `lib` (each its own layer and
/// cache) on one Redis. For each of `TRIALS` sessions, made on server A and read on
/// server B (so that B has it cached), a logout on A; from the moment A's response
/// is back, B is asked for the session until it refuses it. Percentiles of that
/// wait, and how many sessions B still served after a second.
fn coherence(lib: Lib, url: &str) -> Result<String, BoxError> {
    const TRIALS: usize = 500;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (a, b) = (router(lib, Some(url)).await?, router(lib, Some(url)).await?);
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
        let channel = if url.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "Redis"
        };
        Ok(format!(
            "| {lib} | {channel} | {} | {} | {} | {at_once} of {tried} | {still_served} of {tried} |",
            percentile(&mut waits, 0.5),
            percentile(&mut waits, 0.99),
            percentile(&mut waits, 1.0),
        ))
    })
}

/// Lost updates under concurrency, in process: 100 concurrent increments of one
/// session, and 20 trials of two overlapping requests that set different keys.
fn concurrency(lib: Lib, redis_url: Option<&str>) -> Result<String, BoxError> {
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

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The scenarios a comma-separated list of short names names, or all of them.
fn scenarios(names: Option<&str>) -> Result<Vec<Scenario>, BoxError> {
    match names {
        Some(names) => names.split(',').map(Scenario::parse).collect(),
        None => Ok(Scenario::ALL.to_vec()),
    }
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lib = || Lib::parse(flag(&args, "--lib").ok_or("--lib is required")?);
    match args.first().map(String::as_str) {
        Some("run") => run(
            flag(&args, "--store").unwrap_or("memory"),
            flag(&args, "--seconds").unwrap_or("2").parse()?,
            flag(&args, "--cycles").unwrap_or("9").parse()?,
            flag(&args, "--libs"),
            &scenarios(flag(&args, "--scenarios"))?,
        ),
        Some("serve") => serve(
            lib()?,
            flag(&args, "--port").ok_or("--port is required")?.parse()?,
            Path::new(flag(&args, "--cookies").ok_or("--cookies is required")?),
            flag(&args, "--url"),
        ),
        Some("in-process") => {
            let count = flag(&args, "--requests").unwrap_or("1000000").parse()?;
            for scenario in scenarios(flag(&args, "--scenarios"))? {
                let (ns, allocations) = in_process(lib()?, scenario, count, flag(&args, "--url"))?;
                println!(
                    "{} {scenario}: {ns:.0} ns/request, {allocations:.1} allocations/request",
                    lib()?
                );
            }
            Ok(())
        }
        Some("commands") => {
            let url = flag(&args, "--url").ok_or("--url URL is required")?;
            let port = url.rsplit(':').next().unwrap_or_default().parse()?;
            println!("{}", commands_per_request(lib()?, url, port)?);
            Ok(())
        }
        Some("coherence") => {
            let url = flag(&args, "--url").ok_or("--url URL is required")?;
            println!("{}", coherence(lib()?, url)?);
            Ok(())
        }
        Some("concurrency") => {
            println!("{}", concurrency(lib()?, flag(&args, "--url"))?);
            Ok(())
        }
        Some("seal") => {
            print!("{}", seal_and_open()?);
            Ok(())
        }
        Some("memory") => memory(
            lib()?,
            flag(&args, "--sessions").unwrap_or("100000").parse()?,
        ),
        _ => Err(
            "usage: session-bench run [--store memory|redis|postgres|sqlite|tiered|cookie] [--seconds N] [--cycles N] [--libs bare,L,…] [--scenarios S,…] \
             | serve --lib L --port P --cookies FILE [--url URL] \
             | memory --lib L [--sessions N] | in-process --lib L [--requests N] [--scenarios S,…] [--url URL] \
             | concurrency --lib L [--url URL] | commands --lib L --url URL \
             | coherence --lib L --url URL | seal"
                .into(),
        ),
    }
}
