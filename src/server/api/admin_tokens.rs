//! `/api/admin-tokens`: the admin API tokens. Made and revoked with the password or a
//! console session; a token may only list them, or revoke itself (`lablink logout`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiPath;
use crate::error::ApiError;
use crate::model::{AdminToken, TokenScope};
use crate::pool::admin_tokens;
use crate::server::auth::Admin;
use crate::server::body::JsonBody;
use crate::server::state::App;

pub fn to_json(token: &AdminToken) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "scope": token.scope.as_str(),
        "created_at": token.created_at,
        "created_by": token.created_by,
        "last_used_at": token.last_used_at,
        "last_used_from": token.last_used_from,
    })
}

/// `GET /api/admin-tokens`.
pub async fn list(State(app): State<App>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let tokens = admin_tokens::list(&app.pool).await?;
    Ok(Json(
        json!({ "tokens": tokens.iter().map(to_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
pub struct NewToken {
    name: Option<String>,
    scope: Option<String>,
}

/// The scope a form or body names, or what to fix.
pub fn parse_scope(value: Option<&str>) -> Result<TokenScope, ApiError> {
    let value = value.unwrap_or_default();
    TokenScope::parse(value).ok_or_else(|| {
        ApiError::bad_request(format!(
            "scope: give \"read_only\" or \"admin\" (not \"{}\").",
            value.chars().take(40).collect::<String>()
        ))
    })
}

/// `POST /api/admin-tokens` `{name, scope}` → 201 `{id, name, scope, token}`; the token's
/// text is in this answer only.
pub async fn create(
    State(app): State<App>,
    admin: Admin,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admin.not_by_token("create API tokens")?;
    let scope = parse_scope(body.scope.as_deref())?;
    let name = body.name.unwrap_or_default();
    let created = admin_tokens::create(&app.pool, &admin.actor(), &name, scope).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": created.token.id,
            "name": created.token.name,
            "scope": created.token.scope.as_str(),
            "token": created.text,
        })),
    ))
}

/// `DELETE /api/admin-tokens/{id}`: the token stops working at once.
pub async fn revoke(
    State(app): State<App>,
    admin: Admin,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Value>, ApiError> {
    if admin.api_token.as_ref().is_none_or(|t| t.id != id) {
        admin.not_by_token("revoke other API tokens")?;
    }
    let revoked = admin_tokens::revoke(&app.pool, &admin.actor(), id).await?;
    Ok(Json(json!({
        "message": format!("API token \"{}\" revoked.", revoked.name),
    })))
}
