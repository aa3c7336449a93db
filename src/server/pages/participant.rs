//! `GET /` and `POST /api/request_vm`: a participant asks for a VM.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;

use crate::crd;
use crate::server::state::App;
use crate::server::waiters::Wake;
use crate::store::vms::{self, ClaimOutcome};
use crate::views::participant::{self as view, Assigned, FormState};

pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_COMMAND_LEN: usize = 4096;

const UNEXPECTED: &str = "An unexpected error occurred while processing your request. Please ask your instructor for help.";

pub async fn landing(State(app): State<App>) -> Response {
    render_form(&app, StatusCode::OK, &FormState::default()).await
}

async fn render_form(app: &App, status: StatusCode, form: &FormState<'_>) -> Response {
    let free = match app.store.read(vms::count_free).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "cannot count free VMs");
            0
        }
    };
    (status, view::landing(free, form)).into_response()
}

#[derive(Deserialize)]
pub struct ClaimForm {
    email: Option<String>,
    crd_command: Option<String>,
}

/// Lower-cased and trimmed, so one person is one key whatever they type.
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.len() > MAX_EMAIL_LEN {
        return Err("That e-mail address is too long.");
    }
    if !email_address::EmailAddress::is_valid(&email) || !email.contains('@') {
        return Err("That does not look like an e-mail address; check it and try again.");
    }
    Ok(email)
}

fn random_pin() -> String {
    format!("{:06}", rand::random_range(0..1_000_000u32))
}

pub async fn request_vm(
    State(app): State<App>,
    form: Result<Form<ClaimForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let message =
                format!("The form could not be read ({rejection}); please submit it again.");
            return render_form(
                &app,
                rejection.status(),
                &FormState {
                    email: "",
                    error: Some(&message),
                },
            )
            .await;
        }
    };
    let raw_email = form.email.unwrap_or_default();
    let command = form.crd_command.unwrap_or_default();
    let problem = |error: &'static str| (StatusCode::BAD_REQUEST, error.to_owned());

    let checked = (|| {
        if raw_email.trim().is_empty() || command.trim().is_empty() {
            return Err(problem("Email and CRD command are required."));
        }
        let email = normalize_email(&raw_email).map_err(problem)?;
        if command.len() > MAX_COMMAND_LEN {
            return Err(problem(
                "That command is far longer than a Chrome Remote Desktop command; copy it again.",
            ));
        }
        let code = crd::extract_code(&command).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("Invalid CRD command: {e}. Please ask your instructor for help if this keeps happening."),
            )
        })?;
        Ok((email, code))
    })();
    let (email, code) = match checked {
        Ok(v) => v,
        Err((status, message)) => {
            let shown = raw_email.chars().take(MAX_EMAIL_LEN).collect::<String>();
            return render_form(
                &app,
                status,
                &FormState {
                    email: &shown,
                    error: Some(&message),
                },
            )
            .await;
        }
    };

    let pin = random_pin();
    let now = Utc::now();
    let claim_email = email.clone();
    // Commit and wake in a task of their own: if the participant's connection drops
    // after the commit, the VM is still woken.
    let waker = app.clone();
    let outcome = tokio::spawn(async move {
        let outcome = waker
            .store
            .write(move |tx| vms::claim(tx, &claim_email, &code, &pin, now))
            .await;
        if let Ok(ClaimOutcome::Assigned(vm) | ClaimOutcome::Rejoined { vm, rotated: true }) =
            &outcome
        {
            wake(&waker, vm);
        }
        outcome
    })
    .await
    .unwrap_or_else(|e| {
        Err(crate::store::StoreError::Unavailable(format!(
            "claim task failed: {e}"
        )))
    });
    match outcome {
        Ok(ClaimOutcome::Assigned(vm)) => answer(&vm, false, false),
        Ok(ClaimOutcome::Rejoined { vm, rotated }) => answer(&vm, true, rotated),
        Ok(ClaimOutcome::NoneFree) => render_form(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            &FormState {
                email: &email,
                error: Some(
                    "No available VMs. Please try again later. Please ask your instructor for help",
                ),
            },
        )
        .await,
        Err(e) => {
            tracing::error!(error = %e, "claim failed");
            render_form(
                &app,
                StatusCode::INTERNAL_SERVER_ERROR,
                &FormState {
                    email: &email,
                    error: Some(UNEXPECTED),
                },
            )
            .await
        }
    }
}

/// Wakes the VM's long-poll with its (new) assignment; call after the commit.
fn wake(app: &App, vm: &crate::model::Vm) {
    if let Some(a) = &vm.assignment {
        app.waiters.notify(
            &vm.hostname,
            Wake::Assigned {
                pin: a.pin.clone(),
                command: a.crd_command(),
            },
        );
    }
}

/// The claim is committed and the VM woken: show the participant their VM.
fn answer(vm: &crate::model::Vm, rejoined: bool, rotated: bool) -> Response {
    let Some(a) = &vm.assignment else {
        return (StatusCode::INTERNAL_SERVER_ERROR, UNEXPECTED).into_response();
    };
    let page: Markup = view::assigned(&Assigned {
        hostname: &vm.hostname,
        pin: &a.pin,
        rejoined,
        rotated,
    });
    (StatusCode::OK, page).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.ORG "),
            Ok("ada@example.org".into())
        );
        for bad in [
            "ada",
            "ada@",
            "@example.org",
            "a b@example.org",
            "ada@@example.org",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn pins_are_six_digits() {
        for _ in 0..100 {
            let pin = random_pin();
            assert_eq!(pin.len(), 6);
            assert!(pin.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
