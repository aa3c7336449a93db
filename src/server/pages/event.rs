//! `/admin/event`: the console's event page and its forms.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::PageError;
use crate::model::EventPhase;
use crate::pool::PoolError;
use crate::pool::budget;
use crate::pool::event::{self, EventForm};
use crate::server::auth::{Admin, Staff};
use crate::server::state::App;
use crate::views::admin::event::{self as view, Draft};
use crate::views::admin::{Flash, Viewer};

fn viewer(staff: &Staff) -> Viewer<'_> {
    staff.viewer(chrono::Utc::now())
}

/// The page, with `draft` in the form (`None`: the stored plan, or a fresh form).
async fn show(
    app: &App,
    admin: &Staff,
    draft: Option<Draft>,
    message: Option<Flash>,
    code: StatusCode,
) -> Response {
    let status = match event::status(&app.pool).await {
        Ok(status) => status,
        Err(e) => return PageError::from(e).into_response(),
    };
    let draft = draft.unwrap_or_else(|| match &status {
        Some(s) if !matches!(s.phase, EventPhase::Ended | EventPhase::Cancelled) => {
            Draft::of(&s.event.plan)
        }
        _ => {
            let d = &app.config.event;
            Draft::new(d.spare_percent, d.prewarm_minutes, &d.warn_minutes)
        }
    });
    let cost = match &status {
        Some(s) => match budget::figures_of_event(&app.pool, &s.event).await {
            Ok(figures) => Some(figures),
            Err(e) => return PageError::from(e).into_response(),
        },
        None => None,
    };
    let provider = app.provisioner.provider_name();
    (
        code,
        view::page(
            &viewer(admin),
            status.as_ref(),
            &draft,
            message.as_ref(),
            cost.as_ref().map(|c| (c, provider)),
        ),
    )
        .into_response()
}

pub async fn page(State(app): State<App>, admin: Staff) -> Response {
    show(&app, &admin, None, None, StatusCode::OK).await
}

/// The form as sent: every field text, so a bad number is named rather than rejected whole.
#[derive(Deserialize)]
pub struct PlanForm {
    name: Option<String>,
    start: Option<String>,
    end: Option<String>,
    seats: Option<String>,
    spare_percent: Option<String>,
    prewarm_minutes: Option<String>,
    join_code: Option<String>,
    warn_minutes: Option<String>,
}

impl PlanForm {
    fn draft(&self) -> Draft {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        Draft {
            name: text(&self.name),
            start: text(&self.start),
            end: text(&self.end),
            seats: text(&self.seats),
            spare_percent: text(&self.spare_percent),
            prewarm_minutes: text(&self.prewarm_minutes),
            warn_minutes: text(&self.warn_minutes),
        }
    }

    fn request(self) -> Result<EventForm, PoolError> {
        let number = |field: &str, v: Option<String>| -> Result<Option<u32>, PoolError> {
            match v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| {
                    PoolError::Invalid(format!("{field}: `{v}` is not a whole number"))
                }),
            }
        };
        let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        Ok(EventForm {
            seats: number("seats", self.seats)?,
            spare_percent: number("spare_percent", self.spare_percent)?,
            prewarm_minutes: number("prewarm_minutes", self.prewarm_minutes)?,
            name: given(self.name),
            start: given(self.start),
            end: given(self.end),
            join_code: given(self.join_code),
            warn_minutes: self.warn_minutes,
        })
    }
}

/// `POST /admin/event`: plans a new event, or changes the one in progress.
pub async fn save(
    State(app): State<App>,
    admin: Admin,
    form: Result<Form<PlanForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        let problem = Flash::Problem("The form could not be read; submit it again.".into());
        return show(&app, &admin, None, Some(problem), StatusCode::BAD_REQUEST).await;
    };
    let draft = form.draft();
    let now = app.clock.now();
    let in_progress = app
        .pool
        .event
        .get()
        .is_some_and(|e| !matches!(e.phase(now), EventPhase::Ended | EventPhase::Cancelled));
    let saved = match form.request() {
        Ok(request) if in_progress => event::update(&app.pool, &admin.actor(), request).await,
        Ok(request) => event::create(&app.pool, &admin.actor(), request).await,
        Err(e) => Err(e),
    };
    match saved {
        Ok(e) => {
            let done = Flash::Done(format!("Saved the event '{}'.", e.plan.name));
            show(&app, &admin, None, Some(done), StatusCode::OK).await
        }
        Err(refused) => {
            let refused = PageError::from(refused);
            let problem = Flash::Problem(refused.message().to_owned());
            show(&app, &admin, Some(draft), Some(problem), refused.status()).await
        }
    }
}

#[derive(Deserialize)]
pub struct Confirmation {
    confirm: Option<String>,
}

/// `POST /admin/event/end` (with `confirm=yes`).
pub async fn end_now(
    State(app): State<App>,
    admin: Admin,
    form: Result<Form<Confirmation>, FormRejection>,
) -> Response {
    let confirmed = form.is_ok_and(|Form(f)| f.confirm.as_deref() == Some("yes"));
    let outcome = if confirmed {
        event::end_now(&app.pool, &admin.actor()).await.map(|e| {
            format!(
                "'{}' is ending: the participants' files are rescued, then every VM is destroyed.",
                e.plan.name
            )
        })
    } else {
        Err(PoolError::Invalid(
            "Tick the box to confirm that the event stops now.".into(),
        ))
    };
    answer(&app, &admin, outcome).await
}

/// `POST /admin/event/cancel`.
pub async fn cancel(State(app): State<App>, admin: Admin) -> Response {
    let outcome = event::cancel(&app.pool, &admin.actor())
        .await
        .map(|e| format!("'{}' is called off; the VMs stay.", e.plan.name));
    answer(&app, &admin, outcome).await
}

async fn answer(app: &App, admin: &Admin, outcome: Result<String, PoolError>) -> Response {
    match outcome {
        Ok(done) => show(app, admin, None, Some(Flash::Done(done)), StatusCode::OK).await,
        Err(refused) => {
            let refused = PageError::from(refused);
            let problem = Flash::Problem(refused.message().to_owned());
            show(app, admin, None, Some(problem), refused.status()).await
        }
    }
}
