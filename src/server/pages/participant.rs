//! `GET /` and `POST /api/request_vm`: a participant asks for a VM.

use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;

use crate::crd;
use crate::metrics::ClaimOutcome as Claimed;
use crate::server::client_ip::ClientIp;
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
    let form = &FormState {
        ask_join_code: !app.config.access.join_code.is_empty(),
        ..*form
    };
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
    join_code: Option<String>,
    email: Option<String>,
    crd_command: Option<String>,
    /// Sent by the seat page's "another VM" form: move off a VM that stopped responding.
    reseat: Option<String>,
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

pub fn random_pin() -> String {
    format!("{:06}", rand::random_range(0..1_000_000u32))
}

/// The browser's proof of a claim: set with a new assignment, presented when coming back.
const CLAIM_COOKIE: &str = "lablink_claim";

pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What the browser's claim cookie holds: the claim's token and the e-mail it was for
/// (so the seat page can find the seat again; the token proves it).
pub struct ClaimCookie {
    pub token: String,
    pub email: Option<String>,
}

impl ClaimCookie {
    pub fn from_headers(headers: &HeaderMap) -> Option<ClaimCookie> {
        use base64::Engine;
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == CLAIM_COOKIE)
            .map(|(_, value)| value.to_owned())?;
        let (token, email) = match value.split_once('.') {
            Some((token, email)) => (
                token.to_owned(),
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(email)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok()),
            ),
            None => (value, None),
        };
        Some(ClaimCookie { token, email })
    }

    pub fn token_sha256(&self) -> String {
        sha256_hex(&self.token)
    }
}

fn presented_token(headers: &HeaderMap) -> Option<String> {
    ClaimCookie::from_headers(headers).map(|c| c.token)
}

fn claim_cookie(token: &str, email: &str, headers: &HeaderMap) -> String {
    use base64::Engine;
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let email = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(email);
    format!(
        "{CLAIM_COOKIE}={token}.{email}; Path=/; Max-Age=604800; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

pub async fn request_vm(
    State(app): State<App>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    form: Result<Form<ClaimForm>, FormRejection>,
) -> Response {
    // The machine itself (a local tool; a proxy on loopback forwards the real address).
    if let Some(Extension(ClientIp(ip))) = client
        && !ip.is_loopback()
        && let Err(wait) = app.claim_limits.check_network(ip)
    {
        return too_many(&app, "", wait).await;
    }
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            app.metrics.claim(Claimed::Invalid);
            let message =
                format!("The form could not be read ({rejection}); please submit it again.");
            return render_form(
                &app,
                rejection.status(),
                &FormState {
                    email: "",
                    error: Some(&message),
                    ..FormState::default()
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
        check_join_code(&app, form.join_code.as_deref())?;
        let email = normalize_email(&raw_email).map_err(problem)?;
        if !email_allowed(&app, &email) {
            return Err((
                StatusCode::FORBIDDEN,
                "This e-mail address is not registered for this workshop. Use the address you signed up with, or ask your instructor.".to_owned(),
            ));
        }
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
            app.metrics.claim(Claimed::Invalid);
            let shown = raw_email.chars().take(MAX_EMAIL_LEN).collect::<String>();
            return render_form(
                &app,
                status,
                &FormState {
                    email: &shown,
                    error: Some(&message),
                    ..FormState::default()
                },
            )
            .await;
        }
    };
    if let Err(wait) = app.claim_limits.check_email(&email) {
        return too_many(&app, &email, wait).await;
    }

    let pin = random_pin();
    let now = Utc::now();
    let claim_email = email.clone();
    let token = crate::store::meta::random_secret();
    let new_token_sha256 = sha256_hex(&token);
    let presented = presented_token(&headers).map(|t| sha256_hex(&t));
    // Commit and wake in a task of their own: if the participant's connection drops
    // after the commit, the VM is still woken.
    let waker = app.clone();
    let liveness = app.liveness.clone();
    let reseat = form.reseat.as_deref() == Some("1");
    let outcome = tokio::spawn(async move {
        let outcome = waker
            .store
            .write(move |tx| {
                let request = vms::ClaimRequest {
                    email: &claim_email,
                    crd_code: &code,
                    pin: &pin,
                    new_token_sha256: &new_token_sha256,
                    presented_sha256: presented.as_deref(),
                    reseat,
                };
                vms::claim(tx, &request, now, &|host| liveness.is_alive(host))
            })
            .await;
        if let Ok(
            ClaimOutcome::Assigned(vm)
            | ClaimOutcome::Reseated { vm, .. }
            | ClaimOutcome::Rejoined {
                vm, rotated: true, ..
            },
        ) = &outcome
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
    app.metrics.claim(match &outcome {
        Ok(ClaimOutcome::Assigned(_) | ClaimOutcome::Reseated { .. }) => Claimed::Assigned,
        Ok(ClaimOutcome::Rejoined { .. }) => Claimed::Rejoined,
        Ok(ClaimOutcome::NoneFree) => Claimed::NoVm,
        Err(_) => Claimed::Error,
    });
    match outcome {
        Ok(ClaimOutcome::Assigned(vm)) => {
            let mut page = answer(&vm, Rejoin::No);
            if let Ok(v) = HeaderValue::from_str(&claim_cookie(&token, &email, &headers)) {
                page.headers_mut().insert(header::SET_COOKIE, v);
            }
            page
        }
        Ok(ClaimOutcome::Reseated { from, vm }) => {
            tracing::info!(from = %from, to = %vm.hostname, "participant re-seated: their VM stopped responding");
            answer(&vm, Rejoin::Reseated)
        }
        Ok(ClaimOutcome::Rejoined {
            vm,
            rotated,
            proven: true,
        }) => {
            let mut page = answer(&vm, Rejoin::Proven { rotated });
            // A cookie from before the seat page named no e-mail: this one does.
            if let Some(token) = presented_token(&headers)
                && let Ok(v) = HeaderValue::from_str(&claim_cookie(&token, &email, &headers))
            {
                page.headers_mut().insert(header::SET_COOKIE, v);
            }
            page
        }
        Ok(ClaimOutcome::Rejoined { vm, .. }) => answer(&vm, Rejoin::Unproven),
        Ok(ClaimOutcome::NoneFree) => render_form(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            &FormState {
                email: &email,
                error: Some(
                    "No available VMs. Please try again later. Please ask your instructor for help",
                ),
                ..FormState::default()
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
                    ..FormState::default()
                },
            )
            .await
        }
    }
}

/// The workshop's join code, when it has one (compared in constant time).
fn check_join_code(app: &App, given: Option<&str>) -> Result<(), (StatusCode, String)> {
    let expected = app.config.access.join_code.trim();
    if expected.is_empty() {
        return Ok(());
    }
    let given = given.unwrap_or_default().trim();
    if given.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "Enter the workshop's join code; your instructor has it.".to_owned(),
        ));
    }
    use subtle::ConstantTimeEq;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err((
            StatusCode::FORBIDDEN,
            "That join code is not this workshop's; check it with your instructor.".to_owned(),
        ))
    }
}

/// `access.allowed_emails`: empty lets anyone in; else the address or its `@domain`.
fn email_allowed(app: &App, email: &str) -> bool {
    app.allowed_emails.is_empty()
        || app.allowed_emails.iter().any(|entry| {
            if entry.starts_with('@') {
                email.ends_with(entry.as_str())
            } else {
                email == entry
            }
        })
}

async fn too_many(app: &App, email: &str, wait: std::time::Duration) -> Response {
    app.metrics.claim(Claimed::Limited);
    let seconds = wait.as_secs().max(1);
    let message = format!("Too many requests for a VM from here; wait {seconds} s and try again.");
    let mut page = render_form(
        app,
        StatusCode::TOO_MANY_REQUESTS,
        &FormState {
            email,
            error: Some(&message),
            ..FormState::default()
        },
    )
    .await;
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        page.headers_mut().insert(header::RETRY_AFTER, v);
    }
    page
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

enum Rejoin {
    No,
    /// Their VM had stopped responding: they were given this one.
    Reseated,
    /// Same browser (it presented the claim's token): the PIN is shown, a new code taken.
    Proven {
        rotated: bool,
    },
    /// Only the e-mail matched: the VM is named, the PIN is not shown, nothing changes.
    Unproven,
}

/// The claim is committed and the VM woken: show the participant their VM.
fn answer(vm: &crate::model::Vm, rejoin: Rejoin) -> Response {
    let Some(a) = &vm.assignment else {
        return (StatusCode::INTERNAL_SERVER_ERROR, UNEXPECTED).into_response();
    };
    let (rejoined, rotated, pin) = match rejoin {
        Rejoin::No | Rejoin::Reseated => (false, false, Some(a.pin.as_str())),
        Rejoin::Proven { rotated } => (true, rotated, Some(a.pin.as_str())),
        Rejoin::Unproven => (true, false, None),
    };
    let page: Markup = view::assigned(&Assigned {
        hostname: &vm.hostname,
        pin,
        rejoined,
        rotated,
        reseated: matches!(rejoin, Rejoin::Reseated),
        follow: pin.is_some(),
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
