//! Redis servers the tests own: started on free loopback ports in temporary
//! directories, stopped when the test (or, for the shared cluster, the test binary)
//! ends. The shared server on 6379 is never touched beyond each test's own prefix.

#![allow(dead_code, unreachable_pub)] // Each test binary uses its own part of this.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use session_redis::RedisStore;

/// The shared server, `REDIS_URL` or the machine's Redis on 6379.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A store on the shared server under a prefix no other test uses.
pub async fn shared_store() -> RedisStore {
    shared_store_with_prefix().await.0
}

/// The same, with the prefix, for tests that look at the raw keys.
pub async fn shared_store_with_prefix() -> (RedisStore, String) {
    let url = redis_url();
    let store = RedisStore::connect(&url).await.unwrap_or_else(|error| {
        panic!(
            "Redis at {url} is not reachable ({error}). Start it with `redis-server \
             --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no`, \
             set REDIS_URL, or run scripts/test, which starts it"
        )
    });
    let prefix = format!("test:{}:", &session_testkit::random_token()[..16]);
    (store.with_prefix(prefix.clone()), prefix)
}

/// A loopback port that nothing listens on, nor on the port 10,000 above it (the
/// cluster bus). Both lie below the kernel's ephemeral range (32768 and up), so no
/// outgoing connection of a test running beside this one can take the port between
/// now and the server's bind, as one did when ports came from binding port 0; and a
/// process never hands out the same port twice.
pub fn free_port() -> u16 {
    const FIRST: u16 = 12_000;
    const COUNT: u16 = 10_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Test binaries run one after another: a start that differs per process keeps
    // one from reusing ports a previous one may not have released yet.
    let start = (std::process::id() % u32::from(COUNT)) as u16;
    let _ = NEXT.compare_exchange(0, start + 1, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT;
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "session-redis-{label}-{}-{}",
        std::process::id(),
        &session_testkit::random_token()[..8]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_redis(port: u16, dir: &PathBuf, extra: &[&str]) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is not installed: apt-get install redis-server, or run scripts/test");
    wait_listening(port);
    child
}

/// A standalone redis-server of the test's own, persisting every write (append-only
/// file, fsync always) so that a restart loses nothing.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> Self {
        let port = free_port();
        let dir = temp_dir("own");
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        let child = spawn_redis(
            self.port,
            &self.dir,
            &["--appendonly", "yes", "--appendfsync", "always"],
        );
        self.child = Some(child);
    }

    /// Freezes (`true`) or thaws the process: connections stay open and go unanswered.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }

    /// Runs `redis-cli` against it.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is not installed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Calls of `command` the server has run, from `INFO commandstats` (which also
    /// counts the commands scripts run inside themselves).
    pub fn command_calls(&self, command: &str) -> u64 {
        let info = self.cli(&["info", "commandstats"]);
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().unwrap())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen server would not die on SIGTERM; SIGKILL works either way.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-master Redis Cluster on loopback, started once per test binary and stopped
/// by a watchdog process when the test binary exits (a static is never dropped).
pub struct Cluster {
    pub ports: Vec<u16>,
    /// The masters and the watchdog; they outlive every test, and the watchdog ends
    /// the masters once this process is gone.
    _processes: Vec<Child>,
}

impl Cluster {
    pub fn start() -> Self {
        let dir = temp_dir("cluster");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut processes = Vec::new();
        for port in &ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = spawn_redis(
                *port,
                &node_dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--appendonly",
                    "no",
                ],
            );
            processes.push(child);
        }
        let pids: Vec<String> = processes.iter().map(|c| c.id().to_string()).collect();
        // Whatever way the test binary ends, the cluster goes with it.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -9 {pids}; rm -rf '{dir}'",
                parent = std::process::id(),
                pids = pids.join(" "),
                dir = dir.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        processes.push(watchdog);
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is not installed");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let started = Instant::now();
        for port in &ports {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "the cluster did not form"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Self {
            ports,
            _processes: processes,
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}
