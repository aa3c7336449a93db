//! `/admin/accounts`: the console's page of accounts (see `views::admin::accounts`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::Markup;
use serde::Deserialize;

use super::admin::action_result;
use super::{PageForm, PagePath};
use crate::error::{ApiError, PageError};
use crate::pool::accounts;
use crate::server::api::accounts::{BY_TOKEN, NewAccount};
use crate::server::auth::Admin;
use crate::server::state::App;
use crate::views::admin::{Flash, accounts as view};

const PAGE: &str = "/admin/accounts";

pub async fn page(State(app): State<App>, admin: Admin) -> Result<Markup, PageError> {
    let all = accounts::list(&app.pool).await?;
    Ok(view::page(&admin.viewer(app.clock.now()), &all, None))
}

/// `POST /admin/accounts`: the page again, saying the account was made.
pub async fn create(
    State(app): State<App>,
    admin: Admin,
    PageForm(form): PageForm<NewAccount>,
) -> Result<Markup, PageError> {
    let back = |e: ApiError| PageError::from(e).back(PAGE);
    let made = form.create(&app, &admin).await.map_err(back)?;
    let all = accounts::list(&app.pool).await?;
    let done = Flash::Done(format!(
        "Account \"{}\" ({}) created: they sign in at /admin/login.",
        made.name,
        made.role.as_str()
    ));
    Ok(view::page(
        &admin.viewer(app.clock.now()),
        &all,
        Some(&done),
    ))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    password: Option<String>,
}

/// `POST /admin/accounts/{name}/password`.
pub async fn set_password(
    State(app): State<App>,
    admin: Admin,
    headers: HeaderMap,
    PagePath(name): PagePath<String>,
    PageForm(form): PageForm<PasswordForm>,
) -> Response {
    let password = form.password.unwrap_or_default();
    let result = match admin.not_by_token(BY_TOKEN) {
        Ok(()) => accounts::reset_password(&app.pool, &admin.actor(), &name, &password)
            .await
            .map(|a| format!("Account \"{}\" has a new password.", a.name))
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    action_result(&headers, result, PAGE)
}

/// `POST /admin/accounts/{name}/remove`.
pub async fn remove(
    State(app): State<App>,
    admin: Admin,
    headers: HeaderMap,
    PagePath(name): PagePath<String>,
) -> Response {
    let result = match admin.not_by_token(BY_TOKEN) {
        Ok(()) => accounts::remove(&app.pool, &admin.actor(), &name)
            .await
            .map(|a| format!("Account \"{}\" removed.", a.name))
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    action_result(&headers, result, PAGE)
}
