//! `GET /my-vm` and `GET /api/my-vm`: a participant's seat as their browser's claim cookie
//! finds it. The page follows the seat by itself: a move shows the new VM, a dead VM or a
//! released seat offers a new one.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::participant::ClaimCookie;
use crate::error::PageError;
use crate::model::{Vm, VmStatus};
use crate::server::state::App;
use crate::store::vms;
use crate::views::participant::{self as view, Seat};

/// What the cookie leads to.
enum Found {
    Mine(Box<Vm>),
    OtherBrowser,
    Released(String),
    Nothing,
}

async fn find(app: &App, headers: &HeaderMap) -> Result<Found, crate::store::StoreError> {
    let Some(cookie) = ClaimCookie::from_headers(headers) else {
        return Ok(Found::Nothing);
    };
    let Some(email) = cookie.email.clone() else {
        return Ok(Found::Nothing);
    };
    let lookup = email.clone();
    let held = app.store.read(move |tx| vms::held_by(tx, &lookup)).await?;
    let presented = cookie.token_sha256();
    Ok(match held {
        None => Found::Released(email),
        Some(vm) => {
            let proven = vm
                .assignment
                .as_ref()
                .and_then(|a| a.claim_token_sha256.as_deref())
                .is_some_and(|kept| {
                    bool::from(subtle::ConstantTimeEq::ct_eq(
                        kept.as_bytes(),
                        presented.as_bytes(),
                    ))
                });
            if proven {
                Found::Mine(Box::new(vm))
            } else {
                Found::OtherBrowser
            }
        }
    })
}

fn view_of<'a>(app: &App, found: &'a Found) -> (Seat<'a>, Option<u64>) {
    match found {
        Found::Mine(vm) if vm.unresponsive_since.is_some() => {
            let seen = app.last_seen_secs(vm);
            (
                Seat::Unresponsive {
                    hostname: &vm.hostname,
                    email: vm.assignment.as_ref().map_or("", |a| a.email.as_str()),
                    last_seen_seconds: seen,
                },
                seen,
            )
        }
        Found::Mine(vm) => (
            Seat::Ready {
                hostname: &vm.hostname,
                pin: vm.assignment.as_ref().map_or("", |a| a.pin.as_str()),
                coming_back: vm.status == Some(VmStatus::Rebooting),
            },
            None,
        ),
        Found::OtherBrowser => (Seat::OtherBrowser, None),
        Found::Released(email) => (Seat::Released { email }, None),
        Found::Nothing => (Seat::Unknown, None),
    }
}

pub async fn page(State(app): State<App>, headers: HeaderMap) -> Response {
    match find(&app, &headers).await {
        Ok(found) => {
            let (seat, _) = view_of(&app, &found);
            let ask = !app.config.access.join_code.is_empty();
            (StatusCode::OK, view::seat(&seat, ask)).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a participant's seat");
            PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Your seat cannot be read right now; reload the page in a moment.",
            )
            .back("/my-vm")
            .into_response()
        }
    }
}

/// For the page's script: the seat's state and VM (never the PIN).
pub async fn state(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Value>, crate::error::ApiError> {
    let found = find(&app, &headers)
        .await
        .map_err(crate::error::ApiError::store("Failed to read the seat."))?;
    let (seat, seen) = view_of(&app, &found);
    Ok(Json(json!({
        "state": seat.state(),
        "hostname": seat.hostname(),
        "last_seen_seconds_ago": seen,
    })))
}
