//! The pages: the login form and logout (public), the protected page (any user) and
//! the restricted page (`restricted.read`), as an axum-login application has them.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use session_kit::axum_login::{login_required, permission_required};
use session_kit::safe_next;

use crate::users::{Backend, Credentials};

pub(crate) type AuthSession = session_kit::axum_login::AuthSession<Backend>;

/// Every page, behind its guard; the caller adds the auth layer.
pub(crate) fn router() -> Router {
    let restricted = Router::new()
        .route("/restricted", get(restricted))
        .route_layer(permission_required!(
            Backend,
            login_url = "/login",
            "restricted.read"
        ));
    let protected = Router::new()
        .route("/", get(protected))
        .route_layer(login_required!(Backend, login_url = "/login"));
    Router::new()
        .merge(restricted)
        .merge(protected)
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

#[derive(Deserialize)]
struct NextUrl {
    next: Option<String>,
}

async fn protected(auth_session: AuthSession) -> impl IntoResponse {
    match auth_session.user {
        Some(user) => Html(format!(
            "<h1 id=\"protected\">Logged in as {}</h1>\
             <p><a href=\"/restricted\">Restricted page</a></p>\
             <form method=\"post\" action=\"/logout\"><button>Log out</button></form>",
            escape(&user.username)
        ))
        .into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn restricted(auth_session: AuthSession) -> impl IntoResponse {
    match auth_session.user {
        Some(user) => Html(format!(
            "<h1 id=\"restricted\">Restricted page of {}</h1>",
            escape(&user.username)
        ))
        .into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn login_form(Query(NextUrl { next }): Query<NextUrl>) -> Html<String> {
    login_page(None, next.as_deref())
}

async fn login(mut auth_session: AuthSession, Form(creds): Form<Credentials>) -> impl IntoResponse {
    let next = creds.next.clone();
    let user = match auth_session.authenticate(creds).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return (
                StatusCode::UNAUTHORIZED,
                login_page(Some("Invalid credentials."), next.as_deref()),
            )
                .into_response()
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if auth_session.login(&user).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    // `next` comes from the client: only a path on this site.
    let next = next.as_deref().and_then(safe_next).unwrap_or("/");
    Redirect::to(next).into_response()
}

async fn logout(mut auth_session: AuthSession) -> impl IntoResponse {
    match auth_session.logout().await {
        Ok(_) => Redirect::to("/login").into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn login_page(message: Option<&str>, next: Option<&str>) -> Html<String> {
    let message = message.map_or_else(String::new, |m| format!("<p id=\"message\">{m}</p>"));
    let next = next.map_or_else(String::new, |next| {
        format!(
            "<input type=\"hidden\" name=\"next\" value=\"{}\">",
            escape(next)
        )
    });
    Html(format!(
        "<h1>Log in</h1>{message}\
         <form method=\"post\" action=\"/login\">\
         <label>Username <input name=\"username\" autocomplete=\"username\"></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label>\
         {next}<button>Log in</button></form>"
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
