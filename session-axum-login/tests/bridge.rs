//! axum-login's backends on session-kit, through a real router: the guards, login,
//! logout, credentials that change, permissions through groups, and what session-kit
//! adds (rotation, the cap, one session across servers on Redis).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use axum_login::{AuthUser, AuthnBackend, AuthzBackend, UserId};
use session_axum_login::{
    login_required, permission_required, AuthManagerLayerBuilder, AuthSession,
};
use session_core::{Expiry, Session, SessionLayer};
use session_memory::MemoryStore;
use session_redis::RedisStore;
use session_testkit::{redis_servers, released_together, send, Reply};

#[derive(Clone, Debug)]
struct User {
    id: i64,
    name: String,
    password_hash: Vec<u8>,
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn session_auth_hash(&self) -> &[u8] {
        &self.password_hash
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the user database is down")]
struct DatabaseDown;

/// Users by id, the groups they are in and the permissions of users and groups; a
/// switch that makes every call fail.
#[derive(Clone, Default)]
struct Backend {
    users: Arc<Mutex<HashMap<i64, User>>>,
    user_permissions: HashMap<i64, HashSet<String>>,
    group_members: HashMap<String, HashSet<i64>>,
    group_permissions: HashMap<String, HashSet<String>>,
    down: Arc<Mutex<bool>>,
}

impl Backend {
    /// alice (1) may read the protected page herself and the restricted one as an
    /// admin; bob (2) may read the protected page only.
    fn new() -> Self {
        let mut backend = Self::default();
        for (id, name) in [(1, "alice"), (2, "bob")] {
            backend.set_password(&User {
                id,
                name: name.into(),
                password_hash: format!("hash of {name}'s password").into_bytes(),
            });
            backend
                .user_permissions
                .insert(id, HashSet::from(["protected.read".to_owned()]));
        }
        backend
            .group_members
            .insert("admins".into(), HashSet::from([1]));
        backend.group_permissions.insert(
            "admins".into(),
            HashSet::from(["restricted.read".to_owned()]),
        );
        backend
    }

    fn set_password(&self, user: &User) {
        self.users.lock().unwrap().insert(user.id, user.clone());
    }

    fn check(&self) -> Result<(), DatabaseDown> {
        if *self.down.lock().unwrap() {
            return Err(DatabaseDown);
        }
        Ok(())
    }
}

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = String;
    type Error = DatabaseDown;

    async fn authenticate(&self, name: String) -> Result<Option<User>, DatabaseDown> {
        self.check()?;
        let users = self.users.lock().unwrap();
        Ok(users.values().find(|user| user.name == name).cloned())
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, DatabaseDown> {
        self.check()?;
        Ok(self.users.lock().unwrap().get(id).cloned())
    }
}

impl AuthzBackend for Backend {
    type Permission = String;

    async fn get_user_permissions(&self, user: &User) -> Result<HashSet<String>, DatabaseDown> {
        self.check()?;
        Ok(self
            .user_permissions
            .get(&user.id)
            .cloned()
            .unwrap_or_default())
    }

    async fn get_group_permissions(&self, user: &User) -> Result<HashSet<String>, DatabaseDown> {
        self.check()?;
        Ok(self
            .group_members
            .iter()
            .filter(|(_, members)| members.contains(&user.id))
            .flat_map(|(group, _)| self.group_permissions[group].iter().cloned())
            .collect())
    }
}

async fn login(
    mut auth_session: AuthSession<Backend>,
    Path(name): Path<String>,
) -> impl IntoResponse {
    match auth_session.authenticate(name).await {
        Ok(Some(user)) => match auth_session.login(&user).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn logout(mut auth_session: AuthSession<Backend>) -> impl IntoResponse {
    match auth_session.logout().await {
        Ok(Some(user)) => user.name.into_response(),
        Ok(None) => "nobody".into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn whoami(auth_session: AuthSession<Backend>) -> String {
    auth_session
        .user
        .map_or_else(|| "nobody".to_owned(), |user| user.name)
}

/// The shape of axum-login's examples: restricted, protected and public routes.
fn app(backend: Backend, session_layer: SessionLayer) -> Router {
    let restricted =
        Router::new()
            .route("/restricted", get(whoami))
            .route_layer(permission_required!(
                Backend,
                login_url = "/login",
                "restricted.read"
            ));
    let restricted_api = Router::new()
        .route("/api/restricted", get(whoami))
        .route_layer(permission_required!(Backend, "restricted.read"));
    let protected = Router::new()
        .route("/protected", get(whoami))
        .route_layer(login_required!(Backend, login_url = "/login"));
    let elsewhere = Router::new()
        .route("/elsewhere", get(whoami))
        .route_layer(login_required!(
            Backend,
            login_url = "/sign-in",
            redirect_field = "then"
        ));
    let protected_api = Router::new()
        .route("/api/me", get(whoami))
        .route_layer(login_required!(Backend));
    Router::new()
        .merge(restricted)
        .merge(restricted_api)
        .merge(protected)
        .merge(elsewhere)
        .merge(protected_api)
        .route("/login/{name}", post(login))
        .route("/logout", post(logout))
        .route("/whoami", get(whoami))
        .route(
            "/note/{text}",
            post(|session: Session, Path(text): Path<String>| async move {
                session.insert("note", text).await.map(|()| "kept")
            }),
        )
        .route(
            "/note",
            get(|session: Session| async move {
                let note = session.get::<String>("note").await?;
                Ok::<_, session_core::SessionError>(note.unwrap_or_default())
            }),
        )
        .layer(AuthManagerLayerBuilder::new(backend, session_layer).build())
}

fn memory_app(backend: Backend) -> Router {
    app(backend, SessionLayer::new(MemoryStore::new()))
}

async fn logged_in(app: &Router, name: &str) -> String {
    let reply = send(app, "POST", &format!("/login/{name}"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.cookie_pair()
}

fn location(reply: &Reply) -> &str {
    reply.headers["location"].to_str().unwrap()
}

#[tokio::test]
async fn the_guards_answer_as_axum_logins_do() {
    let app = memory_app(Backend::new());

    let reply = send(&app, "GET", "/api/me", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = send(&app, "GET", "/protected?tab=2", None).await;
    assert_eq!(reply.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(location(&reply), "/login?next=/protected%3Ftab%3D2");
    let reply = send(&app, "GET", "/elsewhere", None).await;
    assert_eq!(location(&reply), "/sign-in?then=/elsewhere");
    let reply = send(&app, "GET", "/restricted", None).await;
    assert_eq!(location(&reply), "/login?next=/restricted");
    let reply = send(&app, "GET", "/api/restricted", None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    let bob = logged_in(&app, "bob").await;
    for path in ["/api/me", "/protected", "/elsewhere"] {
        let reply = send(&app, "GET", path, Some(&bob)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "bob"),
            "{path}"
        );
    }
    // bob is no admin: the restricted pages are not his.
    let reply = send(&app, "GET", "/api/restricted", Some(&bob)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = send(&app, "GET", "/restricted", Some(&bob)).await;
    assert_eq!(reply.status, StatusCode::TEMPORARY_REDIRECT);

    // alice is, through her group.
    let alice = logged_in(&app, "alice").await;
    for path in ["/api/restricted", "/restricted"] {
        let reply = send(&app, "GET", path, Some(&alice)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "alice"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_auth_session_answers_permission_questions() {
    let backend = Backend::new();
    let session = Session::detached(MemoryStore::new());
    let mut auth_session = AuthSession {
        user: None,
        backend: backend.clone(),
        session,
    };
    assert!(!auth_session
        .has_perm("protected.read".into())
        .await
        .unwrap());
    assert!(auth_session.permissions().await.unwrap().is_empty());
    let alice = backend.authenticate("alice".into()).await.unwrap().unwrap();
    auth_session.login(&alice).await.unwrap();
    assert!(auth_session
        .has_perm("restricted.read".into())
        .await
        .unwrap());
    assert_eq!(
        auth_session.permissions().await.unwrap(),
        HashSet::from(["protected.read".to_owned(), "restricted.read".to_owned()])
    );
    assert_eq!(
        auth_session.session.user_id().await.unwrap().as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn login_gives_a_new_id_and_logout_ends_the_session() {
    let app = memory_app(Backend::new());
    let anonymous = send(&app, "POST", "/note/cart", None).await.cookie_pair();
    let reply = send(&app, "POST", "/login/bob", Some(&anonymous)).await;
    let bob = reply.cookie_pair();
    assert_ne!(bob, anonymous, "login keeps the id it was given");
    // The anonymous data came along; the old id is no one's.
    assert_eq!(send(&app, "GET", "/note", Some(&bob)).await.body, "cart");
    assert_eq!(
        send(&app, "GET", "/whoami", Some(&anonymous)).await.body,
        "nobody"
    );

    let reply = send(&app, "POST", "/logout", Some(&bob)).await;
    assert_eq!(reply.body, "bob");
    assert!(reply.set_cookies()[0].contains("Max-Age=0"), "{reply:?}");
    assert_eq!(
        send(&app, "GET", "/whoami", Some(&bob)).await.body,
        "nobody"
    );
    assert_eq!(send(&app, "GET", "/note", Some(&bob)).await.body, "");
}

#[tokio::test]
async fn a_login_of_another_user_starts_empty() {
    let app = memory_app(Backend::new());
    let bob = logged_in(&app, "bob").await;
    send(&app, "POST", "/note/planted-by-bob", Some(&bob)).await;
    let reply = send(&app, "POST", "/login/alice", Some(&bob)).await;
    let alice = reply.cookie_pair();
    assert_eq!(
        send(&app, "GET", "/whoami", Some(&alice)).await.body,
        "alice"
    );
    assert_eq!(send(&app, "GET", "/note", Some(&alice)).await.body, "");
}

#[tokio::test]
async fn a_new_password_ends_the_sessions_made_with_the_old_one() {
    let backend = Backend::new();
    let app = memory_app(backend.clone());
    let before = logged_in(&app, "alice").await;
    backend.set_password(&User {
        id: 1,
        name: "alice".into(),
        password_hash: b"hash of alice's new password".to_vec(),
    });
    let after = logged_in(&app, "alice").await;

    let reply = send(&app, "GET", "/protected", Some(&before)).await;
    assert_eq!(reply.status, StatusCode::TEMPORARY_REDIRECT);
    assert!(
        reply.set_cookies()[0].contains("Max-Age=0"),
        "the session ends"
    );
    // Ended in the store, not only refused: the id is no session at all.
    assert_eq!(
        send(&app, "GET", "/note", Some(&before))
            .await
            .set_cookies()
            .len(),
        0
    );
    assert_eq!(
        send(&app, "GET", "/protected", Some(&after)).await.body,
        "alice"
    );
}

#[tokio::test]
async fn a_user_who_is_gone_is_logged_out() {
    let backend = Backend::new();
    let app = memory_app(backend.clone());
    let bob = logged_in(&app, "bob").await;
    backend.users.lock().unwrap().remove(&2);
    let reply = send(&app, "GET", "/api/me", Some(&bob)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.set_cookies()[0].contains("Max-Age=0"), "{reply:?}");
}

#[tokio::test]
async fn a_backend_failure_is_a_500_and_keeps_the_session() {
    let backend = Backend::new();
    let app = memory_app(backend.clone());
    let bob = logged_in(&app, "bob").await;
    *backend.down.lock().unwrap() = true;
    let reply = send(&app, "GET", "/protected", Some(&bob)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies().is_empty(), "{reply:?}");
    *backend.down.lock().unwrap() = false;
    assert_eq!(
        send(&app, "GET", "/protected", Some(&bob)).await.body,
        "bob"
    );
}

#[tokio::test]
async fn the_extractor_without_the_layer_says_what_is_missing() {
    let app: Router = Router::new()
        .route("/", get(whoami))
        .layer(SessionLayer::new(MemoryStore::new()));
    let reply = send(&app, "GET", "/", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.body.contains("AuthManagerLayer"), "{}", reply.body);
}

/// With a cap of one session per user, logins released together leave exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_under_a_cap_of_one_leave_one_session() {
    for _ in 0..10 {
        let layer = SessionLayer::builder(MemoryStore::new())
            .with_max_sessions_per_user(1)
            .build()
            .unwrap();
        let app = app(Backend::new(), layer);
        let replies = released_together(12, |_| {
            let app = app.clone();
            async move { send(&app, "POST", "/login/alice", None).await }
        })
        .await;
        let mut live = 0;
        // A login that lost to a newer one sends no cookie: its session is gone.
        for reply in replies
            .iter()
            .filter(|reply| !reply.set_cookies().is_empty())
        {
            let cookie = reply.cookie_pair();
            if send(&app, "GET", "/whoami", Some(&cookie)).await.body == "alice" {
                live += 1;
            }
        }
        assert_eq!(live, 1);
    }
}

/// Two servers over one Redis: a login on one is the user on the other, and a logout
/// on the other ends it on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_across_servers_on_redis() {
    let prefix = redis_servers::unique_prefix();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let store =
            redis_servers::on_shared_server(|url| async move { RedisStore::connect(&url).await })
                .await
                .with_prefix(prefix.clone());
        let layer = SessionLayer::builder(store)
            .with_expiry(Expiry::on_inactivity(Duration::from_secs(60)))
            .build()
            .unwrap();
        servers.push(app(Backend::new(), layer));
    }
    let alice = logged_in(&servers[0], "alice").await;
    assert_eq!(
        send(&servers[1], "GET", "/restricted", Some(&alice))
            .await
            .body,
        "alice"
    );
    assert_eq!(
        send(&servers[1], "POST", "/logout", Some(&alice))
            .await
            .body,
        "alice"
    );
    let reply = send(&servers[0], "GET", "/api/me", Some(&alice)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}
