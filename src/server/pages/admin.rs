//! The admin console's pages and form actions (upstream URLs where upstream had them).

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::Markup;
use serde::Deserialize;

use super::{PageForm, PagePath};
use crate::error::{ApiError, PageError};
use crate::model::validate_hostname;
use crate::pool::agent_token::{self, Rotated, fingerprint};
use crate::pool::reboot::reboot_now;
use crate::pool::schedules::{self as schedule, NewSchedule};
use crate::server::api::ApiQuery;
use crate::server::api::logs::LogFilter;
use crate::server::auth::{Admin, Staff};
use crate::server::state::App;
use crate::store::logs::{self, Keep, LogKind};
use crate::store::{audit, runs, schedules, vms};
use crate::views::admin::schedules::Draft;
use crate::views::admin::{self as view, Flash, Viewer};

/// Log text a page shows at first (the newest part); the rest streams in.
const LOG_PAGE_BYTES: usize = 512 * 1024;
const AUDIT_SHOWN: usize = 500;

fn viewer(staff: &Staff) -> Viewer<'_> {
    staff.viewer(chrono::Utc::now())
}

pub fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// The answer to a console action: a message fragment for htmx, otherwise back to `back`
/// (or, on a problem, an error page; htmx gets its message, see
/// [`crate::error::page_errors`]).
pub fn action_result(
    headers: &HeaderMap,
    result: Result<String, ApiError>,
    back: &str,
) -> Response {
    match result {
        Ok(done) if is_htmx(headers) => view::flash(Some(&Flash::Done(done))).into_response(),
        Ok(_) => Redirect::to(back).into_response(),
        Err(e) => PageError::from(e).back(back).into_response(),
    }
}

pub async fn dashboard(State(app): State<App>, admin: Staff) -> Result<Markup, PageError> {
    let (pool, recent) = app
        .store
        .read(|tx| Ok((vms::list(tx)?, runs::recent(tx, 10)?)))
        .await
        .map_err(ApiError::store("Failed to read the pool."))?;
    let open_claims = app
        .listening
        .get()
        .is_some_and(|addr| app.config.anyone_can_claim(*addr));
    let cost = crate::pool::budget::figures(&app.pool).await?;
    Ok(view::dashboard::page(
        &viewer(&admin),
        app.provisioner.provider_name(),
        open_claims,
        &pool,
        &recent,
        &cost,
    ))
}

pub async fn instances(State(app): State<App>, admin: Staff) -> Result<Markup, PageError> {
    let pool = app
        .store
        .read(vms::list)
        .await
        .map_err(ApiError::store("Failed to read the pool."))?;
    let current = app.provisioner.current().await;
    let sessions = crate::pool::usage::of_current_seats(&app.pool, &pool).await?;
    Ok(view::instances::page(
        &viewer(&admin),
        &pool,
        &sessions,
        current.as_ref(),
    ))
}

pub async fn create(State(app): State<App>, admin: Admin) -> Result<Markup, PageError> {
    let current = match app.provisioner.current().await {
        Some(run) => {
            let id = run.id;
            let lines = app
                .store
                .read(move |tx| runs::lines(tx, id, 0, 100_000))
                .await
                .map_err(ApiError::store("Failed to read the run."))?;
            Some((run, lines))
        }
        None => None,
    };
    Ok(view::teardown::launch_page(
        &viewer(&admin),
        app.provisioner.provider_name(),
        current.as_ref().map(|(r, l)| (r, l.as_slice())),
    ))
}

pub async fn teardown(State(app): State<App>, admin: Admin) -> Result<Markup, PageError> {
    let count = app
        .store
        .read(|tx| Ok(vms::list(tx)?.len()))
        .await
        .map_err(ApiError::store("Failed to read the pool."))?;
    Ok(view::teardown::delete_page(
        &viewer(&admin),
        count,
        &app.config.machine.extension,
    ))
}

pub async fn run(
    State(app): State<App>,
    admin: Staff,
    PagePath(id): PagePath<u64>,
) -> Result<Markup, PageError> {
    let found = app
        .store
        .read(move |tx| {
            let Some(run) = runs::get(tx, id)? else {
                return Ok(None);
            };
            Ok(Some((run, runs::lines(tx, id, 0, 100_000)?)))
        })
        .await
        .map_err(ApiError::store("Failed to read the run."))?;
    let (run, lines) = found.ok_or_else(|| ApiError::NotFound(format!("No run #{id}.")))?;
    Ok(view::runs::page(&viewer(&admin), &run, &lines))
}

/// `GET /admin/logs/<hostname>`: an error page `VM not found.` (404) for an unknown VM
/// (upstream answered JSON; no client reads this page but a browser).
pub async fn logs_page(
    State(app): State<App>,
    admin: Staff,
    PagePath(host): PagePath<String>,
    filter: Result<ApiQuery<LogFilter>, ApiError>,
) -> Result<Markup, PageError> {
    validate_hostname(&host).map_err(ApiError::BadRequest)?;
    let ApiQuery(filter) = filter?;
    let errors_only = filter.errors_only()?;
    let lookup = host.clone();
    let tails = app
        .store
        .read(move |tx| {
            if vms::get(tx, &lookup)?.is_none() {
                return Ok(None);
            }
            let mut tails = Vec::new();
            for kind in LogKind::ALL {
                tails.push((
                    kind,
                    logs::chunks(tx, &lookup, kind, 0, LOG_PAGE_BYTES, Keep::Newest)?,
                ));
            }
            Ok(Some(tails))
        })
        .await
        .map_err(ApiError::store("Failed to get VM logs."))?
        .ok_or(ApiError::VmNotFound)?;
    let tails: Vec<view::logs::Tail> = tails
        .iter()
        .map(|(kind, chunks)| view::logs::Tail {
            kind: *kind,
            chunks,
        })
        .collect();
    Ok(view::logs::page(
        &viewer(&admin),
        &host,
        &tails,
        errors_only,
    ))
}

/// `POST /admin/instances/<hostname>/reboot` (form).
pub async fn reboot(
    State(app): State<App>,
    admin: Admin,
    PagePath(host): PagePath<String>,
    headers: HeaderMap,
) -> Response {
    let result = match validate_hostname(&host) {
        Ok(()) => reboot_now(&app.pool, &admin.actor(), &host)
            .await
            .map(|_| format!("Reboot of {host} started."))
            .map_err(ApiError::from),
        Err(e) => Err(ApiError::BadRequest(e)),
    };
    action_result(&headers, result, "/admin/instances")
}

#[derive(serde::Deserialize)]
pub struct SeatForm {
    confirm: Option<String>,
    to: Option<String>,
}

/// Release and revoke cannot be undone: the admin types the VM's name.
fn name_typed(host: &str, form: &SeatForm, what: &str) -> Result<(), ApiError> {
    match form.confirm.as_deref().map(str::trim) {
        Some(typed) if typed == host => Ok(()),
        _ => Err(ApiError::BadRequest(format!(
            "To {what}, type the VM's name ({host}) in the box next to the button."
        ))),
    }
}

/// `POST /admin/instances/<hostname>/<release|move|clear|revoke>` from the console.
pub async fn seat_action(
    State(app): State<App>,
    admin: Admin,
    PagePath((host, verb)): PagePath<(String, String)>,
    headers: HeaderMap,
    PageForm(form): PageForm<SeatForm>,
) -> Response {
    use crate::pool::seats;
    let result = async {
        validate_hostname(&host).map_err(ApiError::BadRequest)?;
        match verb.as_str() {
            "release" => {
                name_typed(&host, &form, "release the seat")?;
                seats::release(&app.pool, &admin.actor(), &host).await?;
                Ok(format!(
                    "Seat on {host} released; the VM returns to the pool once its desktop is reset."
                ))
            }
            "move" => {
                let to = form.to.as_deref().map(str::trim).filter(|t| !t.is_empty());
                if let Some(to) = to {
                    validate_hostname(to)
                        .map_err(|e| ApiError::BadRequest(format!("Move to: {e}")))?;
                }
                let (_, new) =
                    seats::move_participant(&app.pool, &admin.actor(), &host, to).await?;
                Ok(format!(
                    "Participant moved from {host} to {}; their page shows the new VM.",
                    new.hostname
                ))
            }
            "clear" => {
                seats::clear(&app.pool, &admin.actor(), &host).await?;
                Ok(format!("{host} cleared."))
            }
            "revoke" => {
                name_typed(&host, &form, "revoke this VM")?;
                seats::revoke(&app.pool, &admin.actor(), &host).await?;
                Ok(format!("{host} revoked: its credential no longer works."))
            }
            _ => Err(ApiError::NotFound("Not found.".into())),
        }
    }
    .await;
    action_result(&headers, result, "/admin/instances")
}

async fn schedules_page(
    app: &App,
    admin: &Staff,
    draft: &Draft<'_>,
    message: Option<Flash>,
    status: StatusCode,
) -> Response {
    match app.store.read(|tx| schedules::list(tx, None)).await {
        Ok(all) => (
            status,
            view::schedules::page(&viewer(admin), &all, draft, message.as_ref()),
        )
            .into_response(),
        Err(e) => PageError::from(ApiError::store("Failed to read schedules.")(e)).into_response(),
    }
}

const NO_DRAFT: Draft = Draft {
    name: "",
    time: "",
    rule: "",
};

pub async fn scheduled_destruction(State(app): State<App>, admin: Staff) -> Response {
    schedules_page(&app, &admin, &NO_DRAFT, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct ScheduleForm {
    schedule_name: Option<String>,
    destruction_time: Option<String>,
    recurrence_rule: Option<String>,
}

/// `POST /admin/scheduled-destruction` (form; the time is UTC).
pub async fn schedule(
    State(app): State<App>,
    admin: Admin,
    form: Result<Form<ScheduleForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        let problem = Flash::Problem("The form could not be read; submit it again.".into());
        return schedules_page(
            &app,
            &admin,
            &NO_DRAFT,
            Some(problem),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let request = NewSchedule {
        schedule_name: form.schedule_name.clone(),
        destruction_time: form.destruction_time.clone(),
        recurrence_rule: form.recurrence_rule.clone(),
        notification_enabled: None,
        notification_hours_before: None,
    };
    match schedule::create(&app.pool, &admin.actor(), request).await {
        Ok(created) => {
            let done = Flash::Done(format!("Scheduled '{}'.", created.schedule_name));
            schedules_page(&app, &admin, &NO_DRAFT, Some(done), StatusCode::OK).await
        }
        Err(refused) => {
            let refused = PageError::from(refused);
            let draft = Draft {
                name: form.schedule_name.as_deref().unwrap_or(""),
                time: form.destruction_time.as_deref().unwrap_or(""),
                rule: form.recurrence_rule.as_deref().unwrap_or(""),
            };
            schedules_page(
                &app,
                &admin,
                &draft,
                Some(Flash::Problem(refused.message().to_owned())),
                refused.status(),
            )
            .await
        }
    }
}

/// `POST /admin/scheduled-destruction/<id>/cancel` (form).
pub async fn cancel(State(app): State<App>, admin: Admin, PagePath(id): PagePath<u64>) -> Response {
    let (message, status) = match schedule::cancel(&app.pool, &admin.actor(), id).await {
        Ok(s) => (
            Flash::Done(format!("Cancelled '{}'.", s.schedule_name)),
            StatusCode::OK,
        ),
        Err(refused) => {
            let refused = PageError::from(refused);
            (
                Flash::Problem(refused.message().to_owned()),
                refused.status(),
            )
        }
    };
    schedules_page(&app, &admin, &NO_DRAFT, Some(message), status).await
}

pub async fn token(State(app): State<App>, admin: Admin) -> Markup {
    view::token::page(
        &viewer(&admin),
        &fingerprint(&app.api_token.get()),
        &app.identities.names(),
        &view::token::Shown::default(),
    )
}

#[derive(Deserialize)]
pub struct MintForm {
    hostname: Option<String>,
}

/// `POST /admin/token/mint`: a credential for a machine of the manual provider, shown once.
pub async fn mint_credential(
    State(app): State<App>,
    admin: Admin,
    PageForm(form): PageForm<MintForm>,
) -> Result<Markup, PageError> {
    let host = form.hostname.unwrap_or_default().trim().to_owned();
    validate_hostname(&host).map_err(|e| ApiError::BadRequest(format!("Machine name: {e}")))?;
    let minted =
        crate::pool::seats::mint(&app.pool, &admin.actor(), std::slice::from_ref(&host)).await?;
    let credential = minted
        .into_iter()
        .next()
        .map(|(_, c)| c)
        .unwrap_or_default();
    Ok(view::token::page(
        &viewer(&admin),
        &fingerprint(&app.api_token.get()),
        &app.identities.names(),
        &view::token::Shown {
            minted: Some((&host, &credential)),
            ..Default::default()
        },
    ))
}

/// A typed confirmation (`confirm` field) of a destructive action.
#[derive(Deserialize)]
pub struct Confirm {
    confirm: Option<String>,
}

pub fn confirmed(form: Option<Confirm>, word: &str) -> bool {
    form.and_then(|f| f.confirm)
        .is_some_and(|c| c.trim().eq_ignore_ascii_case(word))
}

/// `POST /admin/token/rotate` (form, typed confirmation): the new token is shown once.
pub async fn rotate_token(
    State(app): State<App>,
    admin: Admin,
    form: Result<Form<Confirm>, FormRejection>,
) -> Result<Response, PageError> {
    if !confirmed(form.ok().map(|Form(f)| f), view::token::ROTATE_CONFIRMATION) {
        return Err(PageError::bad_request(format!(
            "Type '{}' to confirm the rotation.",
            view::token::ROTATE_CONFIRMATION
        )));
    }
    let Rotated {
        token,
        file_problem,
    } = agent_token::rotate(&app.pool, &admin.actor()).await?;
    let problem = file_problem.map(Flash::Problem);
    Ok(view::token::page(
        &viewer(&admin),
        &fingerprint(&token),
        &app.identities.names(),
        &view::token::Shown {
            new_token: Some(&token),
            problem: problem.as_ref(),
            ..Default::default()
        },
    )
    .into_response())
}

pub async fn audit_page(State(app): State<App>, admin: Admin) -> Result<Markup, PageError> {
    let entries = app
        .store
        .read(|tx| audit::recent(tx, AUDIT_SHOWN))
        .await
        .map_err(ApiError::store("Failed to read the audit log."))?;
    Ok(view::audit::page(&viewer(&admin), &entries))
}

/// `GET /admin/export.csv` and `/admin/export.json`: every VM with its assignment and
/// timings, for the workshop's records.
pub async fn export(
    State(app): State<App>,
    admin: Admin,
    Path(format): Path<String>,
) -> Result<Response, ApiError> {
    let pool = app
        .store
        .read(vms::list)
        .await
        .map_err(ApiError::store("Failed to read the pool."))?;
    let stamp = app.clock.now().format("%Y%m%d_%H%M%S");
    let (body, mime, ext) = match format.as_str() {
        "export.csv" => (crate::export::csv(&pool), "text/csv; charset=utf-8", "csv"),
        "export.json" => (crate::export::json(&pool), "application/json", "json"),
        _ => return Err(ApiError::NotFound("Not found.".into())),
    };
    app.audit(
        &admin.user,
        admin.from_ip(),
        "export",
        format!("{} VM(s) as {ext}", pool.len()),
    )
    .await;
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"lablink_pool_{stamp}.{ext}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// `GET /admin/waitlist`: who waits, in order.
pub async fn waitlist_page(State(app): State<App>, admin: Staff) -> Result<Markup, PageError> {
    let entries = crate::pool::waitlist::list(&app.pool).await?;
    let settings = &app.config.waitlist;
    Ok(view::waitlist::page(
        &viewer(&admin),
        &entries,
        settings.enabled,
        settings.max_entries,
    ))
}

#[derive(Deserialize)]
pub struct WaitlistForm {
    email: String,
}

/// `POST /admin/waitlist/remove` (form: `email`). Audited.
pub async fn waitlist_remove(
    State(app): State<App>,
    admin: Admin,
    headers: HeaderMap,
    PageForm(form): PageForm<WaitlistForm>,
) -> Response {
    let result = crate::pool::waitlist::remove(&app.pool, &admin.actor(), &form.email)
        .await
        .map(|entry| format!("{} is out of the queue.", entry.email))
        .map_err(ApiError::from);
    action_result(&headers, result, "/admin/waitlist")
}
