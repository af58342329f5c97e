//! Real processes for the multi-server suite: admin servers, nginx in front of them,
//! and HTTP users that keep their cookie and may come from their own loopback address.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::StatusCode;

use super::common::free_port;

/// How many of an admin server's last log lines a failed test shows.
const LOG_LINES_SHOWN: usize = 30;

/// The admin example, built once per test run with every shared store.
fn admin_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--example",
                "admin",
                "--features",
                "redis,postgres,mysql,sqlite,cookie,tiered",
            ])
            .current_dir(&manifest)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the admin example failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| manifest.join("target"));
        target.join("debug/examples/admin")
    })
}

/// How the admin servers keep sessions.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    /// Each server its own memory: the seed's setup.
    Memory,
    /// One shared store, by its `SESSION_STORE` value.
    Shared(String),
}

impl Store {
    fn spec(&self) -> &str {
        match self {
            Store::Memory => "memory",
            Store::Shared(spec) => spec,
        }
    }
}

/// One admin example process.
pub(crate) struct AdminServer {
    pub(crate) id: String,
    pub(crate) port: u16,
    store: Store,
    extra_env: Vec<(String, String)>,
    child: Option<Child>,
    /// Its warnings (a failed store call says which and why), kept across restarts
    /// and shown if the test fails.
    log: PathBuf,
}

impl AdminServer {
    pub(crate) fn start(id: &str, store: &Store, extra_env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut server = Self {
            id: id.to_owned(),
            port,
            store: store.clone(),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            log: std::env::temp_dir().join(format!(
                "session-kit-admin-{}-{id}-{port}.log",
                std::process::id()
            )),
        };
        server.restart();
        server
    }

    /// Kills the process at once, as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, same port, same store: memory sessions are gone.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the admin example's log file opens");
        let child = Command::new(admin_binary())
            .env("PORT", self.port.to_string())
            .env("SERVER_ID", &self.id)
            .env("SESSION_STORE", self.store.spec())
            .env("PLAIN_HTTP", "1")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdout(log)
            .spawn()
            .expect("the admin example starts");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} did not start",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let last = &lines[lines.len().saturating_sub(LOG_LINES_SHOWN)..];
            match last {
                [] => eprintln!("--- {}: no warnings ---", self.id),
                _ => eprintln!(
                    "--- {}: the last {} of its {} warnings ---\n{}",
                    self.id,
                    last.len(),
                    lines.len(),
                    last.join("\n")
                ),
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// How nginx spreads requests over the servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Balance {
    RoundRobin,
    /// `ip_hash`: by the first three octets of the client's IPv4 address.
    IpHash,
    /// `hash $cookie_admin_session consistent`: by the session cookie, on a ring.
    CookieHash,
}

impl Balance {
    fn directive(self) -> &'static str {
        match self {
            Balance::RoundRobin => "",
            Balance::IpHash => "ip_hash;",
            Balance::CookieHash => "hash $cookie_admin_session consistent;",
        }
    }
}

/// nginx on a free loopback port, in a directory of its own.
pub(crate) struct Nginx {
    pub(crate) port: u16,
    dir: PathBuf,
    balance: Balance,
    child: Child,
}

impl Nginx {
    pub(crate) fn start(balance: Balance, servers: &[&AdminServer]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("session-kit-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_config(&dir, port, balance, servers);
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(&dir)
            .args(["-c", "nginx.conf", "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            dir,
            balance,
            child,
        }
    }

    /// Rewrites the upstream list and reloads nginx without dropping connections.
    pub(crate) fn reload(&self, servers: &[&AdminServer]) {
        write_config(&self.dir, self.port, self.balance, servers);
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // The master starts new workers and retires the old ones; give it a moment.
        std::thread::sleep(Duration::from_millis(500));
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then itself. A SIGKILL to the master
        // alone would leave its workers running, orphaned, on the machine.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_binary() -> &'static str {
    for path in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(path).exists() {
            return path;
        }
    }
    panic!("nginx is not installed: apt-get install nginx, or run scripts/test, which does")
}

fn write_config(dir: &std::path::Path, port: u16, balance: Balance, servers: &[&AdminServer]) {
    let upstreams: String = servers
        .iter()
        .map(|s| {
            format!(
                "    server 127.0.0.1:{} max_fails=1 fail_timeout=2s;\n",
                s.port
            )
        })
        .collect();
    // As root, workers would otherwise run as `nobody` and could not write the
    // temporary directories.
    let user = if running_as_root() { "user root;" } else { "" };
    let d = dir.display();
    let config = format!(
        "{user}
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream admin {{
    {balance}
{upstreams}    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://admin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_next_upstream error timeout;
    }}
  }}
}}
",
        balance = balance.directive()
    );
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// What `/api/me` said.
#[derive(Debug)]
pub(crate) struct Me {
    pub(crate) status: StatusCode,
    pub(crate) user: Option<String>,
    pub(crate) server: String,
}

/// A browser-like user: one cookie, and optionally its own source address.
#[derive(Clone)]
pub(crate) struct User {
    client: reqwest::Client,
    pub(crate) cookie: Option<String>,
    address: IpAddr,
}

fn client_from(address: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(4)
        .build()
        .unwrap()
}

impl User {
    pub(crate) fn new() -> Self {
        Self::from_address("127.0.0.1".parse().unwrap())
    }

    /// A user whose requests come from `address` (any 127.x.y.z works on Linux).
    pub(crate) fn from_address(address: IpAddr) -> Self {
        Self {
            client: client_from(address),
            cookie: None,
            address,
        }
    }

    /// Drops the user's open connections, as a browser eventually does: after an
    /// nginx reload, kept-alive connections stay with the old workers and their old
    /// upstream list until they close.
    pub(crate) fn reconnect(&mut self) {
        self.client = client_from(self.address);
    }

    fn keep_cookie(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            if let Some(value) = pair.strip_prefix("admin_session=") {
                let removal = text.contains("Max-Age=0");
                self.cookie = (!removal && !value.is_empty()).then(|| value.to_owned());
            }
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let request = match &self.cookie {
            Some(cookie) => request.header(COOKIE, format!("admin_session={cookie}")),
            None => request,
        };
        let is_get = request
            .try_clone()
            .and_then(|r| r.build().ok())
            .is_some_and(|r| r.method() == reqwest::Method::GET);
        let again = if is_get { request.try_clone() } else { None };
        let response = match request.send().await {
            Ok(response) => response,
            // nginx closes idle keep-alive connections when it reloads; a GET sent on
            // one just then fails before any answer, and browsers send it again.
            Err(error) => match again {
                Some(again) if error.is_request() => {
                    again.send().await.expect("the request reaches nginx")
                }
                _ => panic!("the request did not reach nginx: {error}"),
            },
        };
        self.keep_cookie(&response);
        response
    }

    /// Logs in as `user` through `base` (nginx or one server).
    pub(crate) async fn login(&mut self, base: &str, user: &str, password: &str) -> StatusCode {
        let form = [("username", user), ("password", password)];
        let response = self
            .send(self.client.post(format!("{base}/login")).form(&form))
            .await;
        response.status()
    }

    pub(crate) async fn me(&mut self, base: &str) -> Me {
        let response = self.send(self.client.get(format!("{base}/api/me"))).await;
        let status = response.status();
        let body = response.bytes().await.expect("the body of /api/me");
        // An error response (a 503 while the store is out) has no JSON body: its
        // status is what the caller checks.
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Me {
            status,
            user: body["user"].as_str().map(str::to_owned),
            server: body["server"].as_str().unwrap_or_default().to_owned(),
        }
    }

    pub(crate) async fn post(&mut self, base: &str, path: &str, body: &str) -> reqwest::Response {
        let request = self
            .client
            .post(format!("{base}{path}"))
            .body(body.to_owned());
        self.send(request).await
    }

    pub(crate) async fn get(&mut self, base: &str, path: &str) -> reqwest::Response {
        self.send(self.client.get(format!("{base}{path}"))).await
    }
}
