//! Watches the machine's own speed while a run loads its servers.
//!
//! The virtual CPUs of the machines this benchmark runs on sometimes run at about a
//! tenth of their speed, for seconds or minutes, loaded or idle: a fixed loop that
//! takes 1.1 ms takes 10–12 ms, every process slows alike, and the guest's steal time
//! shows none of it. A slice measured in such a spell measures the host, and a cycle
//! that a spell begins or ends in compares a fast slice with a slow one. So a thread
//! times a small fixed computation every few milliseconds, and the run retakes a cycle
//! in which it ran slow.
//!
//! The probe reads its own thread's CPU clock, not the wall clock: under load it
//! shares two cores with `wrk` and the server and is sometimes preempted halfway,
//! which stretches its wall time but not its CPU time; the host's slowdown stretches
//! both, since the guest counts the time its CPU was held back as time run.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Steps of the timed computation: about 0.2 ms at full speed.
const WORK: u64 = 200_000;
/// Time between probes. With `WORK`, the probe takes under 1% of one core.
const INTERVAL: Duration = Duration::from_millis(40);
/// A probe that took this many times the CPU time of the fastest one ran slow: far
/// beyond what sharing the cores' caches with the load does to it, far below a tenth
/// of the speed.
const SLOW: f64 = 3.0;

pub(crate) struct SpeedWatch {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    probes: Mutex<Vec<Probe>>,
    stop: AtomicBool,
}

#[derive(Clone, Copy)]
struct Probe {
    at: Instant,
    /// CPU time the computation took.
    took: Duration,
}

fn thread_cpu_time() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

impl SpeedWatch {
    pub(crate) fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                while !shared.stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let cpu_before = thread_cpu_time();
                    let mut x = 1u64;
                    for _ in 0..WORK {
                        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
                    }
                    let took = thread_cpu_time().saturating_sub(cpu_before);
                    shared
                        .probes
                        .lock()
                        .expect("probe lock")
                        .push(Probe { at, took });
                    std::thread::sleep(INTERVAL);
                }
            })
        };
        Self {
            shared,
            thread: Some(thread),
        }
    }

    /// How many of the probes since `since` ran slow, and how many there were. Each
    /// probe stands for 2% of a 2-second slice, so one at a tenth of the speed already
    /// costs the slice about 2% of its requests: a slice is steady with none.
    pub(crate) fn slow_since(&self, since: Instant) -> (usize, usize) {
        let probes = self.shared.probes.lock().expect("probe lock");
        // The fastest probe of the run is the machine at full speed: a spell only ever
        // slows it.
        let fastest = probes.iter().map(|p| p.took).min().unwrap_or_default();
        let recent = probes.iter().filter(|p| p.at >= since);
        let (mut slow, mut all) = (0, 0);
        for probe in recent {
            all += 1;
            if probe.took.as_secs_f64() > fastest.as_secs_f64() * SLOW {
                slow += 1;
            }
        }
        (slow, all)
    }

    /// Waits until the machine has run at full speed for a second, or `limit` has
    /// passed.
    pub(crate) fn wait_for_full_speed(&self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            std::thread::sleep(Duration::from_secs(1));
            let (slow, all) = self.slow_since(Instant::now() - Duration::from_secs(1));
            if slow == 0 && all > 0 {
                return;
            }
        }
    }
}

impl Drop for SpeedWatch {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
