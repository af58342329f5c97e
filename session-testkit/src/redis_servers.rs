//! Redis servers for tests (feature `redis-servers`): the shared one (`REDIS_URL`,
//! by default the machine's on 6379), touched only under each test's own prefix, and
//! servers a test owns (a standalone one to kill or freeze, a three-master cluster, a
//! Sentinel group), started with `redis-server` on free loopback ports in temporary
//! directories and stopped when the test (or, for shared ones, the test binary) ends.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The shared server, `REDIS_URL` or the machine's Redis on 6379.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The shared server's address, for a proxy in front of it.
pub fn redis_address() -> std::net::SocketAddr {
    crate::proxy::server_address(&redis_url())
}

/// A key prefix no other test uses: `test:` and 16 random characters.
pub fn unique_prefix() -> String {
    format!("test:{}:", &crate::random_token()[..16])
}

/// What `connect` makes of the shared server's URL; a server that is not there is a
/// failure that says how to start it.
pub async fn on_shared_server<T, E, F>(connect: impl FnOnce(String) -> F) -> T
where
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
{
    let url = redis_url();
    connect(url.clone()).await.unwrap_or_else(|error| {
        panic!(
            "Redis at {url} is not reachable ({error}). Start it with `redis-server \
             --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no`, \
             set REDIS_URL, or run scripts/test, which starts it"
        )
    })
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
        &crate::random_token()[..8]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A process that, once this test binary has exited, kills `children` and removes
/// `dir`: statics are never dropped.
fn watchdog<'a>(children: impl Iterator<Item = &'a Child>, dir: &std::path::Path) -> Child {
    let pids: Vec<String> = children.map(|child| child.id().to_string()).collect();
    Command::new("sh")
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
        .expect("sh")
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
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one on a free port.
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

    /// Its `redis://` URL.
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
        cli(self.port, args)
    }

    /// Calls of `command` the server has run (see [`command_calls`]).
    pub fn command_calls(&self, command: &str) -> u64 {
        command_calls(self.port, command)
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
    /// The masters' ports on 127.0.0.1.
    pub ports: Vec<u16>,
    /// The masters and the watchdog; they outlive every test, and the watchdog ends
    /// the masters once this process is gone.
    _processes: Vec<Child>,
}

impl Cluster {
    /// Starts three masters on free ports and joins them into a cluster.
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
        // Whatever way the test binary ends, the cluster goes with it.
        let watchdog = watchdog(processes.iter(), &dir);
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

    /// The masters' `redis://` URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

/// Runs `redis-cli -p port args…` and returns what it printed.
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is not installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Calls of `command` the server on `port` has run, from `INFO commandstats` (which
/// also counts the commands scripts run inside themselves).
pub fn command_calls(port: u16, command: &str) -> u64 {
    cli(port, &["info", "commandstats"])
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

/// Waits, for at most `limit`, until `ready` holds.
fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the replica of the master on `port` has every write the master has
/// made so far. (`WAIT` would not do from `redis-cli`: it waits for the writes of its
/// own connection, which has made none.)
pub fn wait_replicated(port: u16) {
    let info = cli(port, &["info", "replication"]);
    let written: u64 = info
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("master_repl_offset:")?
                .parse()
                .ok()
        })
        .expect("a master's replication offset");
    // Each replica is a line `slave0:ip=…,port=…,state=online,offset=N,lag=0`.
    let replicated = |line: &str| {
        line.starts_with("slave")
            && line
                .split(',')
                .find_map(|part| part.strip_prefix("offset=")?.trim().parse::<u64>().ok())
                .is_some_and(|offset| offset >= written)
    };
    wait_until("the replica to catch up", Duration::from_secs(10), || {
        cli(port, &["info", "replication"]).lines().any(replicated)
    });
}

/// The test binary's shared group, started on first use: its master is never
/// stopped, and a long down-after keeps a machine busy with other tests from
/// provoking a failover in the middle of them. Call from a multi-threaded runtime.
pub fn shared_sentinel_group() -> &'static SentinelGroup {
    static GROUP: std::sync::OnceLock<SentinelGroup> = std::sync::OnceLock::new();
    tokio::task::block_in_place(|| {
        GROUP.get_or_init(|| SentinelGroup::start(Duration::from_secs(10)))
    })
}

/// A group of a test's own, whose master is deemed down after 500 ms unanswered.
pub fn own_sentinel_group() -> SentinelGroup {
    tokio::task::block_in_place(|| SentinelGroup::start(Duration::from_millis(500)))
}

/// The name the Sentinel of a [`SentinelGroup`] knows its master by.
pub const SENTINEL_MASTER: &str = "sessions";

/// A Redis master, one replica of it, and one Sentinel watching them (quorum 1), on
/// loopback ports in a temporary directory. A watchdog stops them when the test binary
/// exits, if no drop did.
pub struct SentinelGroup {
    /// The Sentinel's port on 127.0.0.1.
    pub sentinel_port: u16,
    dir: PathBuf,
    /// The data servers (the first master, then its replica), by port.
    servers: Vec<(u16, Option<Child>)>,
    sentinel: Child,
    watchdog: Child,
}

impl SentinelGroup {
    /// Starts the group; the Sentinel deems the master down after `down_after`
    /// unanswered.
    pub fn start(down_after: Duration) -> Self {
        let dir = temp_dir("sentinel");
        let master = free_port();
        let replica = free_port();
        let sentinel_port = free_port();
        let servers = vec![
            (master, Some(Self::spawn_server(&dir, master, &[]))),
            (
                replica,
                Some(Self::spawn_server(
                    &dir,
                    replica,
                    &["--replicaof", "127.0.0.1", &master.to_string()],
                )),
            ),
        ];
        wait_until("the replica in sync", Duration::from_secs(20), || {
            cli(replica, &["info", "replication"]).contains("master_link_status:up")
        });
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} {down_after}\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 5000\n",
                dir = dir.display(),
                down_after = down_after.as_millis(),
            ),
        )
        .unwrap();
        let sentinel = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed");
        wait_listening(sentinel_port);
        wait_until(
            "the Sentinel to find the replica",
            Duration::from_secs(20),
            || {
                cli(sentinel_port, &["sentinel", "replicas", SENTINEL_MASTER])
                    .contains(&replica.to_string())
            },
        );
        let children = servers.iter().filter_map(|(_, child)| child.as_ref());
        let watchdog = watchdog(children.chain([&sentinel]), &dir);
        Self {
            sentinel_port,
            dir,
            servers,
            sentinel,
            watchdog,
        }
    }

    fn spawn_server(dir: &std::path::Path, port: u16, extra: &[&str]) -> Child {
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        // A replica syncs at once, not after the default five seconds' wait for more.
        let config = ["--appendonly", "no", "--repl-diskless-sync-delay", "0"];
        spawn_redis(port, &node_dir, &[&config[..], extra].concat())
    }

    /// The Sentinels' `redis://` URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        vec![format!("redis://127.0.0.1:{}", self.sentinel_port)]
    }

    /// The port of the master the Sentinel names.
    pub fn master_port(&self) -> u16 {
        let reply = cli(
            self.sentinel_port,
            &["sentinel", "get-master-addr-by-name", SENTINEL_MASTER],
        );
        reply
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("the Sentinel names no master: {reply:?}"))
    }

    /// The other data server's port.
    pub fn replica_port(&self) -> u16 {
        let master = self.master_port();
        self.servers
            .iter()
            .map(|(port, _)| *port)
            .find(|port| *port != master)
            .unwrap()
    }

    /// Waits until the replica has every write the master acknowledged, then kills
    /// the master at once, as a crash would. Returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let master = self.master_port();
        wait_replicated(master);
        let (_, child) = self
            .servers
            .iter_mut()
            .find(|(port, _)| *port == master)
            .unwrap();
        let mut child = child.take().expect("the master runs");
        let _ = child.kill();
        let _ = child.wait();
        master
    }

    /// Waits until the replica has every write the master acknowledged, then freezes
    /// the master (`SIGSTOP`): its connections stay open and go unanswered, as behind
    /// a network partition. Returns its port; [`thaw`](Self::thaw) ends it.
    pub fn freeze_master(&mut self) -> u16 {
        let master = self.master_port();
        wait_replicated(master);
        self.signal(master, "-STOP");
        master
    }

    /// Lets a frozen server run again.
    pub fn thaw(&mut self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        let (_, child) = self.servers.iter().find(|(p, _)| *p == port).unwrap();
        let pid = child.as_ref().expect("the server runs").id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits until the Sentinel has promoted another server than `old` and that server
    /// takes writes.
    pub fn wait_for_failover(&self, old: u16) -> u16 {
        wait_until("a failover", Duration::from_secs(30), || {
            let reply = cli(
                self.sentinel_port,
                &["sentinel", "get-master-addr-by-name", SENTINEL_MASTER],
            );
            let named = reply
                .lines()
                .nth(1)
                .and_then(|p| p.trim().parse::<u16>().ok());
            named.is_some_and(|port| {
                port != old && cli(port, &["role"]).lines().next() == Some("master")
            })
        });
        self.master_port()
    }

    /// Runs `redis-cli` against the Sentinel.
    pub fn sentinel_cli(&self, args: &[&str]) -> String {
        cli(self.sentinel_port, args)
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for (_, child) in &mut self.servers {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
