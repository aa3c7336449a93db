//! `GET /api/waitlist`: the waiting list, for the admin.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::pool::waitlist;
use crate::server::auth::Admin;
use crate::server::state::App;

pub async fn list(State(app): State<App>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let entries = waitlist::list(&app.pool).await?;
    let now = app.clock.now();
    let entries: Vec<Value> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "position": i + 1,
                "email": e.email,
                "desktop": e.desktop.as_str(),
                "joined_at": e.joined_at.to_rfc3339(),
                "waiting_seconds": (now - e.joined_at).num_seconds().max(0),
            })
        })
        .collect();
    Ok(Json(json!({
        "enabled": app.config.waitlist.enabled,
        "max_entries": app.config.waitlist.max_entries,
        "waiting": entries.len(),
        "entries": entries,
    })))
}
