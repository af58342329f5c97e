//! The app under test, served by each library with each store.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use dashmap::DashMap;

use crate::BoxError;

/// What serves the benchmark routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Lib {
    /// The same routes with no session layer: the ceiling.
    Bare,
    /// The same routes behind axum's `Extension` layer, whose handlers extract a shared
    /// value and answer with a `String`: what any session layer costs before it does
    /// any session work.
    ExtensionOnly,
    /// The same routes with no session layer, whose handlers each make one Redis
    /// round trip through the `redis` crate (a `GET` on reads, a `SET` on writes): the
    /// least any library that keeps sessions in Redis and reaches it once per request
    /// can cost.
    RedisRoundTrip,
    /// As `RedisRoundTrip`, but a write is the least conditional script: one field of
    /// a hash changed only while the hash exists, its expiry pushed back.
    RedisConditionalWrite,
    /// The same routes behind a layer that does only what every server-side session
    /// read must: find the id in the `Cookie` header, decode it, hash it into its
    /// store key, look the key up among the sessions held in a sharded map (a `DashMap`,
    /// as `MemoryStore` keeps them), and hand the value to the handler in the request's
    /// extensions; a write replaces the value in the map. No session object, no expiry,
    /// no eviction: the least a session kept in process can cost.
    IdLookup,
    SessionKit,
    TowerSessions,
    SessionKitRedis,
    TowerSessionsRedis,
    /// tower-sessions' Redis store with the expiry session-kit has by default: a
    /// 30-minute idle timeout that activity pushes back. tower-sessions pushes it back
    /// by saving the session on every request (`Expiry::OnInactivity` with
    /// `with_always_save(true)`, as its documentation advises), where session-kit
    /// pushes it at most once per quarter of the timeout.
    TowerSessionsRedisSliding,
    SessionKitPostgres,
    TowerSessionsPostgres,
    SessionKitSqlite,
    TowerSessionsSqlite,
    SessionKitTiered,
    /// The tiered store in strict mode.
    SessionKitTieredStrict,
    TowerSessionsRedisMoka,
    SessionKitCookie,
    TowerSessionsCookie,
}

/// Where a library keeps sessions in the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Memory,
    Redis,
    Postgres,
    /// A SQLite file per library.
    Sqlite,
    /// In the cookie: no server-side store.
    Cookie,
}

impl Lib {
    pub(crate) const ALL: [Lib; 19] = [
        Lib::Bare,
        Lib::ExtensionOnly,
        Lib::RedisRoundTrip,
        Lib::RedisConditionalWrite,
        Lib::IdLookup,
        Lib::SessionKit,
        Lib::TowerSessions,
        Lib::SessionKitRedis,
        Lib::TowerSessionsRedis,
        Lib::TowerSessionsRedisSliding,
        Lib::SessionKitPostgres,
        Lib::TowerSessionsPostgres,
        Lib::SessionKitSqlite,
        Lib::TowerSessionsSqlite,
        Lib::SessionKitTiered,
        Lib::SessionKitTieredStrict,
        Lib::TowerSessionsRedisMoka,
        Lib::SessionKitCookie,
        Lib::TowerSessionsCookie,
    ];

    pub(crate) fn parse(name: &str) -> Result<Self, BoxError> {
        Self::ALL
            .into_iter()
            .find(|lib| lib.name() == name)
            .ok_or_else(|| format!("unknown lib {name:?}").into())
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Lib::Bare => "bare",
            Lib::ExtensionOnly => "extension-only",
            Lib::RedisRoundTrip => "redis-round-trip",
            Lib::RedisConditionalWrite => "redis-conditional-write",
            Lib::IdLookup => "id-lookup",
            Lib::SessionKit => "session-kit",
            Lib::TowerSessions => "tower-sessions",
            Lib::SessionKitRedis => "session-kit-redis",
            Lib::TowerSessionsRedis => "tower-sessions-redis",
            Lib::TowerSessionsRedisSliding => "tower-sessions-redis-sliding",
            Lib::SessionKitPostgres => "session-kit-postgres",
            Lib::TowerSessionsPostgres => "tower-sessions-postgres",
            Lib::SessionKitSqlite => "session-kit-sqlite",
            Lib::TowerSessionsSqlite => "tower-sessions-sqlite",
            Lib::SessionKitTiered => "session-kit-tiered",
            Lib::SessionKitTieredStrict => "session-kit-tiered-strict",
            Lib::TowerSessionsRedisMoka => "tower-sessions-redis-moka",
            Lib::SessionKitCookie => "session-kit-cookie",
            Lib::TowerSessionsCookie => "tower-sessions-cookie",
        }
    }

    /// Whether this is a peer library (tower-sessions), against which session-kit's
    /// are compared.
    pub(crate) fn is_peer(self) -> bool {
        self.name().starts_with("tower-sessions")
    }

    /// Whether the library keeps sessions: the bounds beside the libraries
    /// (`extension-only`, `id-lookup`, `redis-round-trip`, `redis-conditional-write`)
    /// serve the load's routes and no others.
    pub(crate) fn has_sessions(self) -> bool {
        !matches!(
            self,
            Lib::ExtensionOnly | Lib::IdLookup | Lib::RedisRoundTrip | Lib::RedisConditionalWrite
        )
    }

    pub(crate) fn backend(self) -> Backend {
        match self {
            Lib::Bare
            | Lib::ExtensionOnly
            | Lib::IdLookup
            | Lib::SessionKit
            | Lib::TowerSessions => Backend::Memory,
            Lib::RedisRoundTrip
            | Lib::RedisConditionalWrite
            | Lib::SessionKitRedis
            | Lib::TowerSessionsRedis
            | Lib::TowerSessionsRedisSliding
            | Lib::SessionKitTiered
            | Lib::SessionKitTieredStrict
            | Lib::TowerSessionsRedisMoka => Backend::Redis,
            Lib::SessionKitPostgres | Lib::TowerSessionsPostgres => Backend::Postgres,
            Lib::SessionKitSqlite | Lib::TowerSessionsSqlite => Backend::Sqlite,
            Lib::SessionKitCookie | Lib::TowerSessionsCookie => Backend::Cookie,
        }
    }
}

impl fmt::Display for Lib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Distinct values for writes, so that every write really changes the session.
type Counter = Arc<AtomicU64>;

fn next(counter: &Counter) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed)
}

/// The app over tower-sessions (`$crate_name` is the version in use) and `$store`,
/// or behind `layer = $layer`, a layer of that version's sessions.
macro_rules! tower_sessions_app {
    ($crate_name:ident, layer = $layer:expr) => {{
        use $crate_name::Session;

        fn failed(_: $crate_name::session::Error) -> StatusCode {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        async fn read(session: Session) -> Result<String, StatusCode> {
            let user = session.get::<String>("user").await.map_err(failed)?;
            Ok(user.unwrap_or_default())
        }
        async fn write(session: Session, State(c): State<Counter>) -> Result<(), StatusCode> {
            session.insert("last", next(&c)).await.map_err(failed)
        }
        async fn login(session: Session, State(c): State<Counter>) -> Result<(), StatusCode> {
            let user = format!("user-{}", next(&c));
            session.insert("user", user).await.map_err(failed)
        }
        // tower-sessions has no atomic update: a read, then a write.
        async fn incr(session: Session) -> Result<String, StatusCode> {
            let n = session.get::<u64>("n").await.map_err(failed)?.unwrap_or(0) + 1;
            session.insert("n", n).await.map_err(failed)?;
            Ok(n.to_string())
        }
        async fn slow_set(session: Session, Path(key): Path<String>) -> Result<(), StatusCode> {
            session.get::<String>(&key).await.map_err(failed)?;
            tokio::time::sleep(SLOW).await;
            session.insert(&key, "1").await.map_err(failed)
        }
        async fn get_key(session: Session, Path(key): Path<String>) -> Result<String, StatusCode> {
            let value: Option<serde_json::Value> = session.get(&key).await.map_err(failed)?;
            Ok(value.map(|v| v.to_string()).unwrap_or_default())
        }
        async fn logout(session: Session) -> Result<(), StatusCode> {
            session.flush().await.map_err(failed)
        }

        Router::new()
            .route("/read", get(read))
            .route("/write", post(write))
            .route("/login", post(login))
            .route("/incr", post(incr))
            .route("/slow-set/{key}", post(slow_set))
            .route("/get/{key}", get(get_key))
            .route("/logout", post(logout))
            .layer($layer)
            .with_state(Counter::default())
    }};
    // After the `layer =` arm, which an assignment expression would also match.
    ($crate_name:ident, $store:expr) => {
        tower_sessions_app!(
            $crate_name,
            layer = $crate_name::SessionManagerLayer::new($store).with_secure(false)
        )
    };
}

/// session-kit's `TieredStore` in front of its `RedisStore`, or of its `PostgresStore`
/// for a `postgres://` URL, invalidated over the same server, by the central store
/// inside its writes.
async fn tiered(url: &str, strict: bool) -> Result<Router, BoxError> {
    if url.starts_with("postgres") {
        let central = session_kit::PostgresStore::connect(url)
            .await?
            .with_invalidation_channel("bench_invalidate")?;
        central.migrate().await?;
        let builder = session_kit::TieredStore::builder(central).published_by_central();
        let builder = if strict { builder.strict() } else { builder };
        let channel = session_kit::PostgresChannel::connect(url, "bench_invalidate").await?;
        return Ok(session_kit(builder.connect(channel).await?));
    }
    // The central store publishes each write's invalidation inside the write.
    let central = session_kit::RedisStore::connect(url)
        .await?
        .with_prefix("bench:tiered:")
        .with_invalidation_channel("bench:invalidate");
    let builder = session_kit::TieredStore::builder(central).published_by_central();
    let builder = if strict { builder.strict() } else { builder };
    let channel = session_kit::RedisChannel::connect(url, "bench:invalidate").await?;
    Ok(session_kit(builder.connect(channel).await?))
}

/// How long `/slow-set` holds its request between reading and writing the session, so
/// that two such requests overlap.
const SLOW: Duration = Duration::from_millis(20);

/// The app. Routes:
///
/// - `GET /read`: reads the user from the session and returns it;
/// - `POST /write`: sets a key to a new value;
/// - `POST /login`: makes a session with a user;
/// - `POST /incr`: adds one to a counter, each library in its own idiom;
/// - `POST /slow-set/{key}`: reads the session, waits, sets `key`;
/// - `GET /get/{key}`: the value of `key`, empty if absent;
/// - `POST /logout`: ends the session.
pub(crate) async fn router(lib: Lib, url: Option<&str>) -> Result<Router, BoxError> {
    let url = || url.ok_or("this library needs --url for its store");
    Ok(match lib {
        Lib::Bare => bare(),
        Lib::ExtensionOnly => extension_only(),
        Lib::IdLookup => id_lookup(),
        Lib::RedisRoundTrip => redis_round_trip(url()?, false).await?,
        Lib::RedisConditionalWrite => redis_round_trip(url()?, true).await?,
        Lib::SessionKit => session_kit(session_kit::MemoryStore::new()),
        Lib::SessionKitRedis => {
            let store = session_kit::RedisStore::connect(url()?).await?;
            session_kit(store.with_prefix("bench:session-kit:"))
        }
        Lib::SessionKitTiered => tiered(url()?, false).await?,
        Lib::SessionKitTieredStrict => tiered(url()?, true).await?,
        Lib::TowerSessionsRedisMoka => {
            let store = tower_sessions_014::CachingSessionStore::new(
                tower_sessions_moka_store::MokaStore::new(Some(100_000)),
                tower_sessions_redis(url()?).await?,
            );
            tower_sessions_app!(tower_sessions_014, store)
        }
        Lib::TowerSessions => {
            tower_sessions_app!(tower_sessions, tower_sessions::MemoryStore::default())
        }
        Lib::TowerSessionsRedis => {
            tower_sessions_app!(tower_sessions_014, tower_sessions_redis(url()?).await?)
        }
        Lib::TowerSessionsRedisSliding => {
            use tower_sessions_014::{cookie::time, Expiry, SessionManagerLayer};
            let layer = SessionManagerLayer::new(tower_sessions_redis(url()?).await?)
                .with_secure(false)
                .with_expiry(Expiry::OnInactivity(time::Duration::minutes(30)))
                .with_always_save(true);
            tower_sessions_app!(tower_sessions_014, layer = layer)
        }
        Lib::SessionKitPostgres => {
            let store = session_kit::PostgresStore::connect(url()?).await?;
            store.migrate().await?;
            session_kit(store)
        }
        Lib::TowerSessionsPostgres => {
            use tower_sessions_sqlx_store::sqlx::PgPool;
            let store =
                tower_sessions_sqlx_store::PostgresStore::new(PgPool::connect(url()?).await?);
            store.migrate().await?;
            tower_sessions_app!(tower_sessions_014, store)
        }
        Lib::SessionKitSqlite => {
            let store = session_kit::SqliteStore::connect(url()?).await?;
            store.migrate().await?;
            session_kit(store)
        }
        Lib::TowerSessionsSqlite => {
            use std::str::FromStr;
            use tower_sessions_sqlx_store::sqlx::sqlite::{
                SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous,
            };
            // The settings SqliteStore::connect uses, so that the stores are compared.
            let options = SqliteConnectOptions::from_str(url()?)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePool::connect_with(options).await?;
            let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
            store.migrate().await?;
            tower_sessions_app!(tower_sessions_014, store)
        }
        // Both encrypted: XChaCha20-Poly1305 here, AES-256-GCM (the cookie crate's
        // private jar) there.
        Lib::SessionKitCookie => session_kit(session_kit::CookieStore::new(
            session_kit::CookieKey::generate(),
        )),
        Lib::TowerSessionsCookie => {
            use tower_sessions_cookie_store::{CookieSessionConfig, CookieSessionManagerLayer};
            let layer =
                CookieSessionManagerLayer::private(tower_sessions_cookie_store::Key::generate())
                    .with_config(CookieSessionConfig::default().with_secure(false));
            tower_sessions_app!(tower_sessions_014, layer = layer)
        }
    })
}

/// tower-sessions-redis-store's store, on a fred client connected to `url`.
async fn tower_sessions_redis(
    url: &str,
) -> Result<
    tower_sessions_redis_store::RedisStore<tower_sessions_redis_store::fred::prelude::Client>,
    BoxError,
> {
    use tower_sessions_redis_store::fred::prelude::{Client, ClientLike, Config};
    let client = Client::new(Config::from_url(url)?, None, None, None);
    client.init().await?;
    Ok(tower_sessions_redis_store::RedisStore::new(client))
}

fn bare() -> Router {
    Router::new()
        .route("/read", get(|| async { "user-0" }))
        .route(
            "/write",
            post(|State(c): State<Counter>| async move { next(&c).to_string() }),
        )
        .route("/login", post(|| async { "ok" }))
        .with_state(Counter::default())
}

fn extension_only() -> Router {
    use axum::Extension;

    async fn read(Extension(user): Extension<Arc<str>>) -> String {
        user.to_string()
    }
    async fn write(Extension(_): Extension<Arc<str>>, State(c): State<Counter>) -> String {
        next(&c).to_string()
    }
    Router::new()
        .route("/read", get(read))
        .route("/write", post(write))
        .route("/login", post(|| async { "ok" }))
        .layer(Extension(Arc::<str>::from("user-0")))
        .with_state(Counter::default())
}

/// The sessions `id-lookup` holds: each session's store key and its user, hashed as
/// the tiered store's cache hashes them.
type Users = Arc<DashMap<session_kit::SessionKey, Arc<str>, session_kit::store::KeyHasher>>;

/// The layer of `id-lookup`: finds the request's session, if it names one, and puts
/// it in the request's extensions.
#[derive(Clone)]
struct IdLookupService<S> {
    inner: S,
    users: Users,
}

/// A session as `id-lookup` hands it to the handler: its key and its user.
#[derive(Clone)]
struct LookedUp(Option<(session_kit::SessionKey, Arc<str>)>);

impl<S, B> tower::Service<axum::http::Request<B>> for IdLookupService<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> S::Future {
        let session = request
            .headers()
            .get_all(axum::http::header::COOKIE)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&byte| byte == b';'))
            .find_map(|cookie| cookie.trim_ascii().strip_prefix(b"id="))
            .and_then(|token| std::str::from_utf8(token).ok())
            .and_then(session_kit::store::SessionId::parse)
            .and_then(|id| {
                let key = id.key();
                let user = self.users.get(&key)?.clone();
                Some((key, user))
            });
        request.extensions_mut().insert(LookedUp(session));
        self.inner.call(request)
    }
}

fn id_lookup() -> Router {
    use axum::http::header::SET_COOKIE;
    use axum::Extension;

    type AppState = State<(Users, Counter)>;

    async fn read(Extension(LookedUp(session)): Extension<LookedUp>) -> Result<String, StatusCode> {
        let (_, user) = session.ok_or(StatusCode::UNAUTHORIZED)?;
        Ok(user.to_string())
    }
    // The least an in-process write does: the session's value replaced in the map.
    async fn write(
        Extension(LookedUp(session)): Extension<LookedUp>,
        State((users, c)): AppState,
    ) -> Result<(), StatusCode> {
        let (key, _) = session.ok_or(StatusCode::UNAUTHORIZED)?;
        let user = Arc::<str>::from(next(&c).to_string());
        users.insert(key, user);
        Ok(())
    }
    // Ids of 32 decimal digits: base64url characters, unique, and, for a bound,
    // no need to be secret.
    async fn login(State((users, c)): AppState) -> impl IntoResponse {
        let n = next(&c);
        let token = format!("{n:032}");
        let id = session_kit::store::SessionId::parse(&token).expect("32 base64url characters");
        let user = Arc::<str>::from(format!("user-{n}"));
        users.insert(id.key(), user);
        [(SET_COOKIE, format!("id={token}; Path=/"))]
    }
    let users = Users::new(DashMap::with_hasher(session_kit::store::KeyHasher));
    let layer_users = users.clone();
    Router::new()
        .route("/read", get(read))
        .route("/write", post(write))
        .route("/login", post(login))
        .layer(tower::layer::layer_fn(move |inner| IdLookupService {
            inner,
            users: layer_users.clone(),
        }))
        .with_state((users, Counter::default()))
}

/// The routes over one Redis round trip each and no session work: a read `GET`s a
/// value; a write `SET`s one, or, `conditional`, runs the least script that changes
/// one field of a hash only while the hash exists and pushes its expiry back, which
/// is what a write must do at the least that never re-creates a session a logout
/// ended and changes only what it set.
async fn redis_round_trip(url: &str, conditional: bool) -> Result<Router, BoxError> {
    use redis::aio::MultiplexedConnection;
    use redis::AsyncCommands;

    const KEY: &str = "bench:redis-round-trip";
    const HASH: &str = "bench:redis-round-trip:hash";
    const CONDITIONAL_WRITE: &str = "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
         redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
         redis.call('PEXPIRE', KEYS[1], ARGV[3]) return 1";

    #[derive(Clone)]
    struct Redis {
        connection: MultiplexedConnection,
        conditional_write: Option<Arc<redis::Script>>,
        counter: Counter,
    }
    fn failed(_: redis::RedisError) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }
    async fn read(State(mut redis): State<Redis>) -> Result<String, StatusCode> {
        let user: Option<String> = redis.connection.get(KEY).await.map_err(failed)?;
        Ok(user.unwrap_or_default())
    }
    async fn write(State(mut redis): State<Redis>) -> Result<(), StatusCode> {
        let value = next(&redis.counter);
        match &redis.conditional_write {
            None => redis.connection.set(KEY, value).await.map_err(failed),
            Some(script) => {
                let written: i64 = script
                    .key(HASH)
                    .arg("d:last")
                    .arg(value)
                    .arg(1_800_000)
                    .invoke_async(&mut redis.connection)
                    .await
                    .map_err(failed)?;
                if written == 1 {
                    Ok(())
                } else {
                    Err(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }
        }
    }
    let mut connection = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let () = connection.set(KEY, "user-0").await?;
    let () = connection.hset(HASH, "d:user", "user-0").await?;
    let state = Redis {
        connection,
        conditional_write: conditional.then(|| Arc::new(redis::Script::new(CONDITIONAL_WRITE))),
        counter: Counter::default(),
    };
    Ok(Router::new()
        .route("/read", get(read))
        .route("/write", post(write))
        .route("/login", post(|| async { "ok" }))
        .with_state(state))
}

fn session_kit(store: impl Into<session_kit::store::Backend>) -> Router {
    use session_kit::{Session, SessionError, SessionLayer};

    async fn read(session: Session) -> Result<String, SessionError> {
        Ok(session.get::<String>("user").await?.unwrap_or_default())
    }
    async fn write(session: Session, State(c): State<Counter>) -> Result<(), SessionError> {
        session.insert("last", next(&c)).await
    }
    async fn login(session: Session, State(c): State<Counter>) -> Result<(), SessionError> {
        session.insert("user", format!("user-{}", next(&c))).await
    }
    async fn incr(session: Session) -> Result<String, SessionError> {
        let n = session
            .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await?;
        Ok(n.to_string())
    }
    async fn slow_set(session: Session, Path(key): Path<String>) -> Result<(), SessionError> {
        session.get::<String>(&key).await?;
        tokio::time::sleep(SLOW).await;
        session.insert(&key, "1").await
    }
    async fn get_key(session: Session, Path(key): Path<String>) -> Result<String, SessionError> {
        let value: Option<serde_json::Value> = session.get(&key).await?;
        Ok(value.map(|v| v.to_string()).unwrap_or_default())
    }
    async fn logout(session: Session) {
        session.destroy().await;
    }

    let layer = SessionLayer::builder(store)
        .with_secure(false)
        .build()
        .expect("a valid layer");
    Router::new()
        .route("/read", get(read))
        .route("/write", post(write))
        .route("/login", post(login))
        .route("/incr", post(incr))
        .route("/slow-set/{key}", post(slow_set))
        .route("/get/{key}", get(get_key))
        .route("/logout", post(logout))
        .layer(layer)
        .with_state(Counter::default())
}
