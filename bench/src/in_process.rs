//! Measures taken in process, without the network: time and allocations per
//! request, memory per session, and the cookie store's seal and open.

use std::time::Instant;

use axum::body::Body;
use axum::http::{header, Request};
use stats_alloc::Region;
use tower::ServiceExt;

use crate::apps::{router, Lib};
use crate::load::make_sessions;
use crate::scenario::Scenario;
use crate::{BoxError, ALLOCATOR, SESSIONS};

/// Heap bytes per live session, and the resident memory they added, for `count`
/// sessions made through the app's layer.
pub(crate) fn memory(lib: Lib, count: usize) -> Result<(), BoxError> {
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
pub(crate) fn in_process(
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

pub(crate) fn resident_bytes() -> Result<u64, BoxError> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("unexpected /proc/self/statm")?
        .parse()?;
    Ok(pages * 4096)
}

/// Nanoseconds to seal and to open one session of 100 B, 1 KB and 3 KB of plaintext:
/// `CookieStore`, and beside it the `cookie` crate's private jar (AES-256-GCM), which
/// tower-sessions-cookie-store seals with, on the same bytes. A markdown table.
pub(crate) fn seal_and_open() -> Result<String, BoxError> {
    use session_kit::store::ClientStore;
    use session_kit::{CookieKey, CookieStore};

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
