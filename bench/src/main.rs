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
//! - `scale [--sessions N] [--of-one-user M]`: a user with many sessions on a
//!   redis-server of its own: memory per session, the list and "log out everywhere"
//!   timed, the latter's round trips.
//! - `commands --lib L --url URL`: Redis round trips and commands per request alone.
//! - `coherence --lib L --url URL [--busy]`: after a logout on one server, how long another
//!   still serves the session (two servers in process on one Redis).

mod apps;
mod counts;
mod in_process;
mod load;
mod scale;
mod scenario;
mod servers;
mod speed;

use std::path::Path;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

use crate::apps::Lib;
use crate::counts::{coherence, commands_per_request, concurrency};
use crate::in_process::{in_process, memory, seal_and_open};
use crate::load::{run, serve};
use crate::scenario::Scenario;

#[global_allocator]
pub(crate) static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sessions made before the load, spread over by the "many sessions" scenarios.
pub(crate) const SESSIONS: usize = 10_000;

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
            println!("{}", coherence(lib()?, url, args.iter().any(|a| a == "--busy"))?);
            Ok(())
        }
        Some("scale") => {
            let total = flag(&args, "--sessions").unwrap_or("1000000").parse()?;
            let one_user = flag(&args, "--of-one-user").unwrap_or("100000").parse()?;
            println!("{}", scale::scale(total, one_user)?);
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
