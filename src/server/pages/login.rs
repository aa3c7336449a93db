//! `/admin/login` and `/admin/logout`: the console's session (the admin's or a helper
//! account's, with its role), with a new session id at sign-in, a CSRF token per session
//! and a per-address limit on failed attempts.

use axum::Extension;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use crate::model::Role;
use crate::server::auth::{
    SESSION_ACCOUNT, SESSION_CSRF, SESSION_ROLE, SESSION_USER, Staff, authenticate, cross_site,
};
use crate::server::client_ip::ClientIp;
use crate::server::state::App;
use crate::store::meta::random_secret;
use crate::views::admin::login::page_for;

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Only pages of this console: never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/admin") && !n.starts_with("/admin/login") => n,
        _ => "/admin",
    }
}

pub async fn form(session: Session, Query(q): Query<Next>) -> Response {
    let next = safe_next(q.next.as_deref());
    if let Ok(Some(_)) = session.get::<String>(SESSION_USER).await {
        return Redirect::to(next).into_response();
    }
    page_for(next, "", None).into_response()
}

#[derive(Deserialize)]
pub struct Credentials {
    username: Option<String>,
    password: Option<String>,
    next: Option<String>,
}

pub async fn sign_in(
    State(app): State<App>,
    session: Session,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    form: Result<Form<Credentials>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return (
            StatusCode::BAD_REQUEST,
            page_for("/admin", "", Some("The form could not be read; try again.")),
        )
            .into_response();
    };
    let next = safe_next(form.next.as_deref()).to_owned();
    let user = form.username.unwrap_or_default();
    let refuse = |status: StatusCode, message: &str| {
        (status, page_for(&next, &user, Some(message))).into_response()
    };
    // No session yet, so no CSRF token: a cross-site submission is refused by what the
    // browser says about its origin.
    if cross_site(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "Sign in from the allocator's own page.",
        );
    }
    let attempt = match app.login_limiter.begin(ip) {
        Ok(attempt) => attempt,
        Err(wait) => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed sign-ins from your address; try again in {} s.",
                    wait.as_secs()
                ),
            );
        }
    };
    let password = form.password.unwrap_or_default();
    let role = match authenticate(&app, &user, &password).await {
        Ok(Some(role)) => {
            attempt.finish(true);
            role
        }
        Ok(None) => {
            attempt.finish(false);
            // The name is whatever was typed: kept short in the log.
            let tried: String = user.chars().take(64).collect();
            app.audit(&tried, Some(ip.to_string()), "login-failed", String::new())
                .await;
            return refuse(StatusCode::UNAUTHORIZED, "Wrong user name or password.");
        }
        Err(_) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sign-ins at once; try again in a moment.",
            );
        }
    };
    // An account's session remembers which password it began with (see `Staff`).
    let account_key = match role {
        Role::Admin => None,
        _ => match crate::pool::accounts::find(&app.pool, &user).await {
            Ok(found) => found.as_ref().map(crate::pool::accounts::session_key),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the account that signed in");
                None
            }
        },
    };
    let started = async {
        session.cycle_id().await?;
        session.insert(SESSION_USER, &user).await?;
        session.insert(SESSION_ROLE, role.as_str()).await?;
        if let Some(key) = &account_key {
            session.insert(SESSION_ACCOUNT, key).await?;
        }
        session.insert(SESSION_CSRF, random_secret()).await
    };
    if let Err(e) = started.await {
        tracing::error!(error = %e, "cannot start an admin session");
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not start a session; try again.",
        );
    }
    if role != Role::Admin {
        crate::pool::accounts::record_sign_in(&app.pool, &user, Some(ip.to_string())).await;
    }
    app.audit(
        &user,
        Some(ip.to_string()),
        "login",
        role.as_str().to_owned(),
    )
    .await;
    Redirect::to(&next).into_response()
}

pub async fn sign_out(State(app): State<App>, admin: Staff, session: Session) -> Response {
    if let Err(e) = session.flush().await {
        tracing::error!(error = %e, "cannot end an admin session");
    }
    app.audit(&admin.user, admin.from_ip(), "logout", String::new())
        .await;
    Redirect::to("/admin/login").into_response()
}
