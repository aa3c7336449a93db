//! `/api/accounts`: the console's accounts besides the admin (helpers). Listed with any
//! admin credential; made, given a new password and removed only with the admin password
//! or a console session, never with an API token: an account is a way to sign in, and a
//! token (meant for scripts, revocable on its own) must not mint ways in that outlive it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiPath;
use crate::error::ApiError;
use crate::model::{Account, Role, check_account_name};
use crate::pool::accounts;
use crate::server::auth::Admin;
use crate::server::body::JsonBody;
use crate::server::state::App;

/// What `--json` and the API show of an account: never its hash.
pub fn to_json(account: &Account) -> Value {
    json!({
        "name": account.name,
        "role": account.role.as_str(),
        "created_at": account.created_at,
        "created_by": account.created_by,
        "last_sign_in_at": account.last_sign_in_at,
        "last_sign_in_from": account.last_sign_in_from,
    })
}

/// The role a form or body names (absent: helper), or what to fix.
pub fn parse_role(value: Option<&str>) -> Result<Role, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(Role::Helper),
        Some(value) => Role::parse_grantable(value).ok_or_else(|| {
            let roles: Vec<_> = Role::GRANTABLE.iter().map(|r| r.as_str()).collect();
            ApiError::bad_request(format!(
                "role: give one of {} (not \"{}\"); the admin is the one from the configuration.",
                roles.join(", "),
                value.chars().take(40).collect::<String>()
            ))
        }),
    }
}

/// An account name from a path, or what to fix.
fn path_name(name: &str) -> Result<(), ApiError> {
    check_account_name(name).map_err(|e| ApiError::bad_request(format!("name: {e}")))
}

/// What account changes are refused with.
pub const BY_TOKEN: &str = "create, change or remove accounts";

/// `GET /api/accounts`.
pub async fn list(State(app): State<App>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let all = accounts::list(&app.pool).await?;
    Ok(Json(
        json!({ "accounts": all.iter().map(to_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
pub struct NewAccount {
    name: Option<String>,
    role: Option<String>,
    password: Option<String>,
}

impl NewAccount {
    /// Makes the account, if `admin` signed in rather than sent an API token.
    pub async fn create(self, app: &App, admin: &Admin) -> Result<Account, ApiError> {
        admin.not_by_token(BY_TOKEN)?;
        let role = parse_role(self.role.as_deref())?;
        let name = self.name.unwrap_or_default();
        let password = self.password.unwrap_or_default();
        Ok(accounts::create(&app.pool, &admin.actor(), &name, role, &password).await?)
    }
}

/// `POST /api/accounts` `{name, role, password}` → 201 with the account.
pub async fn create(
    State(app): State<App>,
    admin: Admin,
    JsonBody(body): JsonBody<NewAccount>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let made = body.create(&app, &admin).await?;
    let mut answer = to_json(&made);
    answer["message"] = json!(format!(
        "Account \"{}\" ({}) created.",
        made.name,
        made.role.as_str()
    ));
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Deserialize)]
pub struct NewPassword {
    password: Option<String>,
}

/// `POST /api/accounts/{name}/password` `{password}`: the account's sessions end.
pub async fn set_password(
    State(app): State<App>,
    admin: Admin,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<NewPassword>,
) -> Result<Json<Value>, ApiError> {
    admin.not_by_token(BY_TOKEN)?;
    path_name(&name)?;
    let password = body.password.unwrap_or_default();
    let changed = accounts::reset_password(&app.pool, &admin.actor(), &name, &password).await?;
    Ok(Json(json!({
        "message": format!("Account \"{}\" has a new password; its console sessions ended.", changed.name),
    })))
}

/// `DELETE /api/accounts/{name}`: the account's sessions end at once.
pub async fn remove(
    State(app): State<App>,
    admin: Admin,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    admin.not_by_token(BY_TOKEN)?;
    path_name(&name)?;
    let removed = accounts::remove(&app.pool, &admin.actor(), &name).await?;
    Ok(Json(json!({
        "message": format!("Account \"{}\" removed; its console sessions ended.", removed.name),
    })))
}
