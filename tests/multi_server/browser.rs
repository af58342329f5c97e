//! A real browser through nginx: headless Chromium, driven by chromedriver over the
//! WebDriver protocol, logs into the admin example, reloads the dashboard until every
//! server has answered while it stays logged in, opens the sessions page and logs out.
//! Screenshots go to `target/multi-server-screenshots/`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::common::{free_port, OwnRedis};
use super::harness::{AdminServer, Balance, Nginx, Store};

/// The W3C name of an element reference in WebDriver replies.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn installed(candidates: &[&str], package: &str) -> String {
    candidates
        .iter()
        .find(|path| std::path::Path::new(path).exists())
        .map(|path| (*path).to_owned())
        .unwrap_or_else(|| {
            panic!("{package} is not installed: apt-get install chromium chromium-driver, or run scripts/test")
        })
}

/// chromedriver on a free loopback port, and one browser session in it.
struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    base: String,
    profile: PathBuf,
}

impl Browser {
    async fn start() -> Self {
        let chromedriver = installed(&["/usr/bin/chromedriver"], "chromedriver");
        let chromium = installed(
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
            "chromium",
        );
        let port = free_port();
        // A process group of its own: Chromium's processes join it, and ending the
        // group ends them all, however the test ends.
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("session-kit-chromium-{port}"));
        // The flags keep a sandboxed, offline Chromium from reaching for the network.
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    // Its crash handler would start in a session of its own, outside
                    // the group.
                    "--disable-breakpad",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1000,700",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let reply: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let session = reply["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {reply}"))
            .to_owned();
        Self {
            driver,
            http,
            session,
            base,
            profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let reply: Value = self
            .http
            .request(method, url)
            .json(&body)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        if reply["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", reply["value"]);
        }
        reply["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn reload(&self) {
        self.command(reqwest::Method::POST, "/refresh", json!({}))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT].as_str().expect("an element").to_owned()
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let text = self
            .command(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                json!({}),
            )
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        let path = format!("/element/{element}/value");
        self.command(reqwest::Method::POST, &path, json!({ "text": text }))
            .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await;
    }

    async fn title(&self) -> String {
        let title = self
            .command(reqwest::Method::GET, "/title", json!({}))
            .await;
        title.as_str().unwrap_or_default().to_owned()
    }

    /// The title once a click's navigation has landed on `expected`, or the last one
    /// seen after 5 s: a click returns when the event is dispatched, and a form's
    /// POST and redirect may still be under way.
    async fn title_after_click(&self, expected: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let title = self.title().await;
            if title == expected || std::time::Instant::now() > deadline {
                return title;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .command(reqwest::Method::GET, "/screenshot", json!({}))
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a PNG");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/multi-server-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: killing chromedriver alone left Chromium running, orphaned,
        // after every run.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_stays_logged_in_across_every_server() {
    let redis = OwnRedis::start();
    let store = Store::Shared(redis.url());
    let servers: Vec<AdminServer> = (1..=3)
        .map(|i| AdminServer::start(&format!("server-{i}"), &store, &[]))
        .collect();
    let nginx = Nginx::start(Balance::RoundRobin, &servers.iter().collect::<Vec<_>>());
    let site = nginx.url();
    let browser = Browser::start().await;

    // A page that needs a login sends the browser to the login page, and the login
    // back to that page.
    browser.open(&format!("{site}/sessions")).await;
    assert_eq!(browser.title().await, "Log in · admin");
    browser.screenshot("0-login-for-sessions").await;
    browser.type_into("input[name=username]", "alice").await;
    browser
        .type_into("input[name=password]", "wonderland")
        .await;
    browser.click("button[type=submit]").await;
    assert_eq!(
        browser.title_after_click("Your sessions · admin").await,
        "Your sessions · admin",
        "the login did not lead back to the page asked for"
    );
    browser.open(&format!("{site}/")).await;
    assert_eq!(browser.title().await, "Dashboard · admin");
    browser.screenshot("1-dashboard").await;

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        assert_eq!(
            browser.text("#user").await,
            "alice",
            "logged out on a reload"
        );
        seen.insert(browser.text("#server").await);
        if seen.len() == servers.len() {
            break;
        }
        browser.reload().await;
    }
    assert_eq!(seen.len(), 3, "the dashboard came from {seen:?} only");
    browser.screenshot("2-dashboard-after-every-server").await;

    browser.click("a[href='/sessions']").await;
    assert_eq!(
        browser.title_after_click("Your sessions · admin").await,
        "Your sessions · admin"
    );
    assert!(browser.text("#sessions").await.contains("(this one)"));
    browser.screenshot("3-sessions").await;

    browser.open(&format!("{site}/")).await;
    browser.click("form[action='/logout'] button").await;
    assert_eq!(
        browser.title_after_click("Log in · admin").await,
        "Log in · admin"
    );
    browser.open(&format!("{site}/")).await;
    assert_eq!(
        browser.title().await,
        "Log in · admin",
        "the dashboard served after logout"
    );
    let path = browser.screenshot("4-logged-out").await;
    println!(
        "METRIC browser=chromium servers_seen={} screenshots={}",
        seen.len(),
        path.parent().unwrap().display()
    );
}
