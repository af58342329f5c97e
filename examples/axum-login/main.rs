//! An axum-login application on session-kit: users, groups and permissions in SQLite,
//! password login, a protected page (any user), a restricted page (permission
//! `restricted.read`, through the group `superusers`), and logout.
//!
//! ```text
//! cargo run --example axum-login --features axum-login,sqlite
//! ```
//!
//! Then open <http://127.0.0.1:3000/> and log in as `ferris` (password `hunter42`),
//! who may see the protected page, or as `admin` (password `admin-password`), who may
//! also see the restricted one.
//!
//! `users.rs` is the backend as an axum-login application writes it, naming only
//! axum-login; `web.rs` takes `AuthSession` and the guards from
//! `session_kit::axum_login`; here the session layer is session-kit's, with the
//! sessions in the same SQLite database (`DATABASE_URL`, by default in memory). For
//! several servers, the same code runs over `RedisStore` or `PostgresStore`.

mod users;
mod web;

use std::time::Duration;

use session_kit::axum_login::AuthManagerLayerBuilder;
use session_kit::{ConfigError, Expiry, SessionLayer, SqliteStore};

use crate::users::Backend;

/// The session store and the users' backend, in the database at `database_url`,
/// their tables created.
async fn databases(
    database_url: &str,
) -> Result<(SqliteStore, Backend), Box<dyn std::error::Error>> {
    let store = SqliteStore::connect(database_url).await?;
    store.migrate().await?;
    let backend = Backend::new(store.pool().clone());
    backend.migrate().await?;
    Ok((store, backend))
}

/// The application: the pages behind the auth layer.
fn app(store: SqliteStore, backend: Backend, secure: bool) -> Result<axum::Router, ConfigError> {
    let session_layer = SessionLayer::builder(store)
        .with_secure(secure)
        .with_expiry(Expiry::on_inactivity(Duration::from_secs(24 * 3600)))
        .build()?;
    let auth_layer = AuthManagerLayerBuilder::new(backend, session_layer).build();
    Ok(web::router().layer(auth_layer))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let database_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite::memory:".into());
    // Served on plain HTTP locally: the cookie cannot be `Secure` here.
    let (store, backend) = databases(&database_url).await?;
    let app = app(store, backend, false)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::{redirect, Client, StatusCode};
    use session_kit::sqlx::{self, SqlitePool};

    /// The application on a loopback port, and a browser-like client of it that
    /// keeps cookies and shows redirects instead of following them.
    async fn served() -> (String, Client, SqlitePool) {
        let (store, backend) = databases("sqlite::memory:")
            .await
            .expect("the databases open");
        let pool = store.pool().clone();
        let app = app(store, backend, false).expect("a valid layer");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::builder()
            .cookie_store(true)
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        (base, client, pool)
    }

    /// Gives `username` a new password, as an admin tool would.
    async fn set_password(pool: &SqlitePool, username: &str, password: &str) {
        sqlx::query("UPDATE users SET password = ? WHERE username = ?")
            .bind(password_auth::generate_hash(password))
            .bind(username)
            .execute(pool)
            .await
            .unwrap();
    }

    async fn log_in(
        base: &str,
        client: &Client,
        user: &str,
        password: &str,
        next: &str,
    ) -> reqwest::Response {
        client
            .post(format!("{base}/login"))
            .form(&[("username", user), ("password", password), ("next", next)])
            .send()
            .await
            .unwrap()
    }

    fn location(response: &reqwest::Response) -> &str {
        response.headers()["location"].to_str().unwrap()
    }

    #[tokio::test]
    async fn a_user_logs_in_sees_the_protected_page_and_logs_out() {
        let (base, client, _) = served().await;

        // The protected page leads to the login page, which brings the user back.
        let response = client.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(location(&response), "/login?next=/");
        let form = client
            .get(format!("{base}/login?next=/"))
            .send()
            .await
            .unwrap();
        assert!(form
            .text()
            .await
            .unwrap()
            .contains("name=\"next\" value=\"/\""));

        let response = log_in(&base, &client, "ferris", "wrong", "/").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("Invalid credentials."));

        let response = log_in(&base, &client, "ferris", "hunter42", "/").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/");
        let page = client.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.text().await.unwrap().contains("Logged in as ferris"));

        // ferris is no superuser.
        let response = client
            .get(format!("{base}/restricted"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);

        let response = client.post(format!("{base}/logout")).send().await.unwrap();
        assert_eq!(location(&response), "/login");
        let response = client.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    }

    #[tokio::test]
    async fn a_superuser_sees_the_restricted_page() {
        let (base, client, _) = served().await;
        let response = client
            .get(format!("{base}/restricted"))
            .send()
            .await
            .unwrap();
        assert_eq!(location(&response), "/login?next=/restricted");
        let response = log_in(&base, &client, "admin", "admin-password", "/restricted").await;
        assert_eq!(location(&response), "/restricted");
        let page = client
            .get(format!("{base}/restricted"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page
            .text()
            .await
            .unwrap()
            .contains("Restricted page of admin"));
    }

    /// A `next` that would leave the site leads home instead.
    #[tokio::test]
    async fn the_login_page_is_no_open_redirect() {
        let (base, client, _) = served().await;
        for next in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
        ] {
            let response = log_in(&base, &client, "ferris", "hunter42", next).await;
            assert_eq!(location(&response), "/", "{next}");
        }
    }

    /// A new password ends the sessions made with the old one, on their next request.
    #[tokio::test]
    async fn a_new_password_ends_the_sessions_made_with_the_old_one() {
        let (base, laptop, pool) = served().await;
        let phone = Client::builder()
            .cookie_store(true)
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        for client in [&laptop, &phone] {
            log_in(&base, client, "ferris", "hunter42", "/").await;
            let page = client.get(format!("{base}/")).send().await.unwrap();
            assert_eq!(page.status(), StatusCode::OK);
        }

        set_password(&pool, "ferris", "correct horse").await;
        for client in [&laptop, &phone] {
            let page = client.get(format!("{base}/")).send().await.unwrap();
            assert_eq!(page.status(), StatusCode::TEMPORARY_REDIRECT);
        }
        let response = log_in(&base, &laptop, "ferris", "correct horse", "/").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let page = laptop.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
    }
}
