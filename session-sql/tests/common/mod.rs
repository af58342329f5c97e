//! What the tests of every SQL store share: the tests themselves (`sql`), and for the
//! outage tests a TCP proxy the test owns and cuts (the scenario itself is
//! `session_testkit::outage`) and a table dropped however the test ends.

#![allow(dead_code, unreachable_pub)] // Each test binary uses its own part of this.

#[macro_use]
pub mod sql;

use std::net::SocketAddr;

use session_testkit::outage::Outage;
use session_testkit::proxy::{server_address, url_via};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Forwards a loopback port to the server, until cut: then it stops listening and
/// drops every connection, as a dead network would.
pub struct Proxy {
    pub port: u16,
    target: SocketAddr,
    tasks: JoinSet<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Self {
            port,
            target,
            tasks: JoinSet::new(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target;
        self.tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
    }

    /// Stops listening and drops every connection (the listener task owns them).
    pub fn cut(&mut self) {
        self.tasks.abort_all();
    }

    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

/// `url` with its server replaced by the proxy's port.
pub fn through(url: &str, proxy: &Proxy) -> String {
    url_via(url, SocketAddr::from(([127, 0, 0, 1], proxy.port)))
}

/// A table of the test's own, dropped by `command` (a database client) when the test
/// ends, however it ends.
pub struct Table {
    pub name: String,
    pub drop_with: Vec<String>,
}

impl Table {
    /// A PostgreSQL table, dropped with `psql`.
    pub fn postgres(name: String, url: &str) -> Self {
        Self {
            name,
            drop_with: vec!["psql".into(), url.to_owned(), "-qc".into()],
        }
    }

    /// A MySQL/MariaDB table, dropped with the `mysql` client (user, host and port
    /// from `url`, database `test`).
    pub async fn mysql(name: String, url: &str) -> Self {
        let address = server_address(url);
        let user = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('@').next())
            .unwrap();
        Self {
            name,
            drop_with: vec![
                "mysql".into(),
                format!("-u{user}"),
                format!("-h{}", address.ip()),
                format!("-P{}", address.port()),
                "test".into(),
                "-e".into(),
            ],
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let (program, args) = self.drop_with.split_first().unwrap();
        let sql = format!("DROP TABLE IF EXISTS {}", self.name);
        let _ = std::process::Command::new(program)
            .args(args)
            .arg(sql)
            .status();
    }
}

impl Outage for Proxy {
    fn cut(&mut self) {
        Proxy::cut(self);
    }

    async fn restore(&mut self) {
        Proxy::restore(self).await;
    }
}

/// docs/security.md 36: `stores` (one per server, each with its own pool) migrate a
/// table none of them has yet, released together; every one must succeed.
pub async fn migrate_together<DB: session_sql::Dialect>(stores: Vec<session_sql::SqlStore<DB>>) {
    let results = session_testkit::released_together(stores.len(), |i| {
        let store = stores[i].clone();
        async move { store.migrate().await }
    })
    .await;
    for result in results {
        result.expect("a migrate beside others");
    }
}

/// How many sessions of one user the "log out everywhere" tests end.
pub const MANY: i64 = 100_000;

/// docs/security.md 34: a user with [`MANY`] sessions (the test put them in `store`'s
/// table at once), and "log out everywhere" against a login storm.
pub async fn log_out_everywhere_of_many<S: session_core::SessionStore>(store: S, user: &str) {
    let store = std::sync::Arc::new(store);
    session_testkit::storm::log_out_everywhere_against_a_login_storm(store, user, MANY as usize)
        .await;
}

/// A user's sessions as rows (`meta`, `user`, `expires_at`) for a bulk insert.
pub fn many_sessions_of(user: &str) -> (String, i64) {
    let record = session_testkit::storm::login_record(user);
    let meta = serde_json::to_string(&record.meta).unwrap();
    (meta, record.meta.expires_at.unix_millis())
}

/// A table name no other test uses.
pub fn own_table_name() -> String {
    format!(
        "sessions_{}",
        session_testkit::random_user().replace('-', "_")
    )
}

/// A store of its own pool on `url`, in `table` (not created).
pub async fn store_in<DB: session_sql::Dialect>(
    url: &str,
    table: &str,
) -> session_sql::SqlStore<DB> {
    session_sql::SqlStore::<DB>::connect(url)
        .await
        .unwrap()
        .with_table(table)
        .unwrap()
}
