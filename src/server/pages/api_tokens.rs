//! `/admin/api-tokens`: the console's page of admin API tokens (see `views::admin::api_tokens`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::Markup;
use serde::Deserialize;

use super::admin::action_result;
use super::{PageForm, PagePath};
use crate::error::{ApiError, PageError};
use crate::pool::admin_tokens;
use crate::server::api::admin_tokens::parse_scope;
use crate::server::auth::{Admin, Staff};
use crate::server::state::App;
use crate::views::admin::{Viewer, api_tokens as view};

const PAGE: &str = "/admin/api-tokens";

fn viewer(staff: &Staff) -> Viewer<'_> {
    staff.viewer(chrono::Utc::now())
}

pub async fn page(State(app): State<App>, admin: Admin) -> Result<Markup, PageError> {
    let tokens = admin_tokens::list(&app.pool).await?;
    Ok(view::page(&viewer(&admin), &tokens, None, None))
}

#[derive(Deserialize)]
pub struct CreateForm {
    name: Option<String>,
    scope: Option<String>,
}

/// `POST /admin/api-tokens`: the page again, with the new token shown this once.
pub async fn create(
    State(app): State<App>,
    admin: Admin,
    PageForm(form): PageForm<CreateForm>,
) -> Result<Markup, PageError> {
    let back = |e: ApiError| PageError::from(e).back(PAGE);
    admin.not_by_token("create API tokens").map_err(back)?;
    let scope = parse_scope(form.scope.as_deref()).map_err(back)?;
    let name = form.name.unwrap_or_default();
    let created = admin_tokens::create(&app.pool, &admin.actor(), name.trim(), scope)
        .await
        .map_err(|e| back(e.into()))?;
    let tokens = admin_tokens::list(&app.pool).await?;
    Ok(view::page(
        &viewer(&admin),
        &tokens,
        Some((&created.token.name, &created.text)),
        None,
    ))
}

/// `POST /admin/api-tokens/{id}/revoke`.
pub async fn revoke(
    State(app): State<App>,
    admin: Admin,
    headers: HeaderMap,
    PagePath(id): PagePath<u64>,
) -> Response {
    let result = match admin.not_by_token("revoke API tokens") {
        Ok(()) => admin_tokens::revoke(&app.pool, &admin.actor(), id)
            .await
            .map(|token| format!("API token \"{}\" revoked.", token.name))
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    action_result(&headers, result, PAGE)
}
