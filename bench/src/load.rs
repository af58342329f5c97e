//! The load run: the servers, each in a process of its own, and `wrk` against them
//! slice by slice, in alternation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use tower::ServiceExt;

use crate::apps::{router, Backend, Lib};
use crate::counts::{coherence, commands_per_request, concurrency, queries_per_request};
use crate::in_process::seal_and_open;
use crate::scenario::{median, Scenario};
use crate::servers::{BenchDatabase, OwnRedis};
use crate::speed::SpeedWatch;
use crate::{BoxError, SESSIONS};

/// Makes `count` sessions through the app's own layer and returns their cookies
/// (`name=value`). The bare router sets no cookie; it gets cookies of the same size.
pub(crate) async fn make_sessions(app: &Router, count: usize) -> Result<Vec<String>, BoxError> {
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

pub(crate) fn serve(
    lib: Lib,
    port: u16,
    cookie_file: &Path,
    redis: Option<&str>,
) -> Result<(), BoxError> {
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

/// A server of one library, in a process of its own, and the cookies of its sessions.
pub(crate) struct Server {
    lib: Lib,
    child: Child,
    cookies: PathBuf,
    hot_cookie: PathBuf,
    port: u16,
}

/// What one load slice measured.
pub(crate) struct Slice {
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

/// Per scenario: each library's slices, and the ratios to the bare router taken slice
/// by slice (each against the bare slice of the same cycle).
#[derive(Default)]
pub(crate) struct Measured {
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
pub(crate) fn run(
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
        println!(
            "| | channel | servers | p50 | p99 | max | refused at once | still served after 1 s |"
        );
        println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |");
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
            println!("{}", coherence(lib, redis_url, false)?);
        }
        let database = BenchDatabase::create()?;
        for lib in [Lib::SessionKitTiered, Lib::SessionKitTieredStrict] {
            println!("{}", coherence(lib, &database.url, false)?);
        }
        for url in [redis_url, database.url.as_str()] {
            println!("{}", coherence(Lib::SessionKitTiered, url, true)?);
        }
    }
    drop((redis, database));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
