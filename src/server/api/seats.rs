//! Seat control: the instructor fixes a seat in one action. Release a seat, move a
//! participant to another VM, clear a false alarm, revoke a VM; and mint the credentials
//! of the manual provider's machines. Shared by the JSON API and the console; every
//! action is audited.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiPath, required_hostname, stored_vm};
use crate::error::ApiError;
use crate::model::{Vm, validate_hostname};
use crate::server::auth::Admin;
use crate::server::body::JsonBody;
use crate::server::state::App;
use crate::server::waiters::Wake;
use crate::store::vms::{self, MoveOutcome};
use crate::store::{StoreError, identities};

/// Most names minted in one request.
pub const MAX_MINT: usize = 10_000;

/// The participant of `host` loses the seat; the VM is handed out again once its agent
/// has reset the desktop.
pub async fn release(app: &App, admin: &Admin, host: &str) -> Result<Vm, ApiError> {
    let before = stored_vm(app, host, "Failed to release the seat.").await?;
    let Some(held) = before.assignment else {
        return Err(ApiError::Conflict(format!(
            "{host} has no participant; nothing to release."
        )));
    };
    let (h, at) = (host.to_owned(), app.clock.now());
    let vm = app
        .store
        .write(move |tx| vms::release(tx, &h, at))
        .await
        .map_err(ApiError::store("Failed to release the seat."))?
        .ok_or(ApiError::VmNotFound)?;
    app.audit(
        &admin.user,
        admin.from_ip(),
        "release",
        format!("{host} (participant {})", held.email),
    )
    .await;
    Ok(vm)
}

/// Moves the participant of `from` to `to` (or the first free VM whose agent is alive)
/// with a new PIN; their page follows. `from` waits for its reset.
pub async fn move_participant(
    app: &App,
    admin: &Admin,
    from: &str,
    to: Option<&str>,
) -> Result<(Vm, Vm), ApiError> {
    let pin = crate::server::pages::participant::random_pin();
    let (f, t, at, liveness) = (
        from.to_owned(),
        to.map(str::to_owned),
        app.clock.now(),
        app.liveness.clone(),
    );
    let outcome = app
        .store
        .write(move |tx| {
            vms::move_participant(tx, &f, t.as_deref(), &pin, at, &|h| liveness.is_alive(h))
        })
        .await
        .map_err(ApiError::store("Failed to move the participant."))?
        .ok_or(ApiError::VmNotFound)?;
    let (old, new) = match outcome {
        MoveOutcome::Moved { from, to } => (*from, *to),
        MoveOutcome::NotAssigned => {
            return Err(ApiError::Conflict(format!(
                "{from} has no participant; nothing to move."
            )));
        }
        MoveOutcome::NoTarget => {
            return Err(ApiError::Conflict(match to {
                Some(to) => format!(
                    "{to} cannot take the participant: it must be running, free, healthy and its agent alive."
                ),
                None => "No other VM is free (running, unassigned, healthy, agent alive); launch more or release one.".into(),
            }));
        }
    };
    if let Some(a) = &new.assignment {
        app.waiters.notify(
            &new.hostname,
            Wake::Assigned {
                pin: a.pin.clone(),
                command: a.crd_command(),
            },
        );
        app.audit(
            &admin.user,
            admin.from_ip(),
            "move",
            format!("{} from {from} to {}", a.email, new.hostname),
        )
        .await;
    }
    Ok((old, new))
}

/// Takes back an unhealthy GPU report (the next report decides again) and waives a reset
/// the VM's agent cannot do.
pub async fn clear(app: &App, admin: &Admin, host: &str) -> Result<Vm, ApiError> {
    let (h, at) = (host.to_owned(), app.clock.now());
    let beating = app.liveness.report(host).is_some_and(|r| r.heartbeats);
    let vm = app
        .store
        .write(move |tx| {
            vms::update(tx, &h, |vm| {
                let can_reset = beating || vm.boot_id.is_some();
                vm.cleared(can_reset, at)
            })
        })
        .await
        .map_err(ApiError::store("Failed to clear the VM."))?
        .ok_or(ApiError::VmNotFound)?;
    app.audit(&admin.user, admin.from_ip(), "clear", host.to_owned())
        .await;
    Ok(vm)
}

/// The VM's credential stops working at once and its record goes; its participant may
/// claim another VM. (The machine itself is not stopped: destroy it, or with the manual
/// provider switch it off.) `false` if there was neither a record nor an identity.
pub async fn revoke(app: &App, admin: &Admin, host: &str) -> Result<(), ApiError> {
    let h = host.to_owned();
    let found = app
        .store
        .write(move |tx| {
            let had_row = vms::delete(tx, &h)?;
            let had_identity = identities::remove(tx, &h)?;
            Ok::<_, StoreError>(had_row || had_identity)
        })
        .await
        .map_err(ApiError::store("Failed to revoke the VM."))?;
    app.identities
        .reload()
        .await
        .map_err(ApiError::store("Failed to revoke the VM."))?;
    if !found {
        return Err(ApiError::VmNotFound);
    }
    app.liveness.forget(host);
    app.waiters.notify(host, Wake::Deleted);
    app.audit(&admin.user, admin.from_ip(), "revoke", host.to_owned())
        .await;
    Ok(())
}

/// New credentials for `hosts` (any earlier credential of these names stops working).
pub async fn mint(
    app: &App,
    admin: &Admin,
    hosts: &[String],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut minted = Vec::with_capacity(hosts.len());
    for host in hosts {
        let credential = app
            .identities
            .reissue(host, &format!("minted by {}", admin.user))
            .await
            .map_err(ApiError::store("Failed to mint the credential."))?;
        minted.push((host.clone(), credential));
    }
    let names = if hosts.len() > 5 {
        format!("{} … ({} names)", hosts[..5].join(", "), hosts.len())
    } else {
        hosts.join(", ")
    };
    app.audit(&admin.user, admin.from_ip(), "mint", names).await;
    Ok(minted)
}

fn seat(vm: &Vm) -> Value {
    json!({
        "hostname": vm.hostname,
        "participant": vm.assignment.as_ref().map(|a| a.email.as_str()),
        "reset_pending": vm.reset_pending,
    })
}

/// `POST /api/vms/<hostname>/release`.
pub async fn post_release(
    State(app): State<App>,
    admin: Admin,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let vm = release(&app, &admin, &host).await?;
    Ok(Json(json!({
        "message": format!("Seat on {host} released; the VM is handed out again once its desktop is reset."),
        "vm": seat(&vm),
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    to: Option<String>,
}

/// `POST /api/vms/<hostname>/move` `{"to": "<hostname>"}` (optional).
pub async fn post_move(
    State(app): State<App>,
    admin: Admin,
    ApiPath(host): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let request: MoveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MoveRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?
    };
    let to = request.to.filter(|t| !t.is_empty());
    if let Some(to) = &to {
        validate_hostname(to).map_err(|e| ApiError::bad_request(format!("to: {e}")))?;
    }
    let (old, new) = move_participant(&app, &admin, &host, to.as_deref()).await?;
    Ok(Json(json!({
        "message": format!("Participant moved from {host} to {}.", new.hostname),
        "from": seat(&old),
        "to": seat(&new),
    })))
}

/// `POST /api/vms/<hostname>/clear`.
pub async fn post_clear(
    State(app): State<App>,
    admin: Admin,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let vm = clear(&app, &admin, &host).await?;
    Ok(Json(json!({
        "message": format!("{host} cleared."),
        "vm": seat(&vm),
        "available": vm.is_available(),
    })))
}

/// `POST /api/vms/<hostname>/revoke`.
pub async fn post_revoke(
    State(app): State<App>,
    admin: Admin,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    revoke(&app, &admin, &host).await?;
    Ok(Json(json!({
        "message": format!("{host} revoked: its credential no longer works and its record is gone."),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    hostname: Option<String>,
    hostnames: Option<Vec<String>>,
}

/// `POST /api/vm-credentials` `{"hostname"}` or `{"hostnames": […]}`: credentials for
/// machines that join by themselves (the manual provider), or for a rehearsal.
pub async fn post_mint(
    State(app): State<App>,
    admin: Admin,
    body: Result<JsonBody<MintRequest>, ApiError>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let JsonBody(req) = body?;
    let hosts = match (req.hostname, req.hostnames) {
        (Some(one), None) => vec![required_hostname(Some(one), "hostname is required.")?],
        (None, Some(many)) if !many.is_empty() && many.len() <= MAX_MINT => {
            for h in &many {
                validate_hostname(h)
                    .map_err(|e| ApiError::bad_request(format!("hostnames: {h:?}: {e}")))?;
            }
            many
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "hostnames: give 1 to {MAX_MINT} names."
            )));
        }
        _ => {
            return Err(ApiError::bad_request(
                "Give either hostname or hostnames (a list).",
            ));
        }
    };
    let minted = mint(&app, &admin, &hosts).await?;
    let credentials: serde_json::Map<String, Value> = minted
        .into_iter()
        .map(|(h, c)| (h, Value::String(c)))
        .collect();
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({ "credentials": credentials })),
    ))
}

/// `GET /api/vm-credentials`: the names that hold a credential now (never the secrets).
pub async fn list_identities(State(app): State<App>, _: Admin) -> Json<Value> {
    Json(json!({ "hostnames": app.identities.names() }))
}
