//! `GET /` and `POST /api/request_vm`: a participant asks for a VM. The claim itself is
//! `pool::claim`; this page reads the form, keeps the browser's proof in a cookie and
//! shows the answer.

use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::Markup;
use serde::Deserialize;

use crate::error::PageError;
use crate::metrics::ClaimOutcome as Counted;
use crate::model::DesktopKind;
use crate::pool::PoolError;
use crate::pool::claim::{self, ClaimRequest, MAX_EMAIL_LEN, Seated};
use crate::pool::waitlist::{self, Joined};
use crate::server::client_ip::ClientIp;
use crate::server::state::App;
use crate::store::vms;
use crate::views::participant::{self as view, Assigned, FormState, JoinOffer};

const UNEXPECTED: &str = "An unexpected error occurred while processing your request. Please ask your instructor for help.";

pub async fn landing(State(app): State<App>) -> Response {
    render_form(&app, StatusCode::OK, &FormState::default()).await
}

async fn render_form(app: &App, status: StatusCode, form: &FormState<'_>) -> Response {
    let form = &FormState {
        ask_join_code: !crate::pool::event::join_code(&app.pool).is_empty(),
        desktops: app.config.desktop_kinds(),
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
    /// `browser` or `crd`, where `desktop.mode` lets the participant pick.
    desktop: Option<String>,
    /// `1` from the seat page's "another VM" form.
    reseat: Option<String>,
}

/// The browser's proof of a claim: set with a new assignment, presented when coming back.
const CLAIM_COOKIE: &str = "lablink_claim";

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

/// A participant form posted from another site's page: refused (403, `say`, a link back to
/// `back`). `None` when it came from the workshop's own pages or a script.
pub(super) fn from_elsewhere(headers: &HeaderMap, say: &str, back: &str) -> Option<Response> {
    crate::server::auth::cross_site(headers).then(|| {
        PageError::new(StatusCode::FORBIDDEN, say)
            .back(back)
            .into_response()
    })
}

/// The claim form again, saying the request could not be read.
async fn unreadable(app: &App, rejection: &FormRejection) -> Response {
    let message = format!("The form could not be read ({rejection}); please submit it again.");
    render_form(
        app,
        rejection.status(),
        &FormState {
            error: Some(&message),
            ..FormState::default()
        },
    )
    .await
}

pub async fn request_vm(
    State(app): State<App>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    form: Result<Form<ClaimForm>, FormRejection>,
) -> Response {
    // Another site's page must not claim a seat for this browser (and set its cookie).
    if let Some(refused) = from_elsewhere(
        &headers,
        "Ask for a desktop from the workshop's own page.",
        "/",
    ) {
        app.metrics.claim(Counted::Invalid);
        return refused;
    }
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            app.metrics.claim(Counted::Invalid);
            return unreadable(&app, &rejection).await;
        }
    };
    let typed_email = form.email.clone().unwrap_or_default();
    let request = match claim_request(&form, &headers, client) {
        Ok(request) => request,
        Err(refused) => return refusal(&app, &typed_email, refused, None).await,
    };
    match claim::claim(&app.pool, request).await {
        Ok(claimed) => seated_page(claimed, &headers),
        Err(refused) => {
            let offer = (matches!(refused, PoolError::NoneFree)
                && app.config.waitlist.enabled
                && form.reseat.as_deref() != Some("1"))
            .then(|| JoinOffer {
                crd_command: form.crd_command.as_deref().unwrap_or_default(),
                desktop: form.desktop.as_deref().filter(|d| !d.is_empty()),
                join_code: form.join_code.as_deref().filter(|c| !c.is_empty()),
            });
            refusal(&app, &typed_email, refused, offer).await
        }
    }
}

/// The claim a form asks for, as `pool::claim` takes it.
fn claim_request(
    form: &ClaimForm,
    headers: &HeaderMap,
    client: Option<Extension<ClientIp>>,
) -> Result<ClaimRequest, PoolError> {
    let desktop = match form.desktop.as_deref() {
        None | Some("") => None,
        Some("browser") => Some(DesktopKind::Browser),
        Some("crd") => Some(DesktopKind::Crd),
        Some(_) => {
            return Err(PoolError::Invalid(
                "`desktop` must be `browser` or `crd`; reload the page and submit it again.".into(),
            ));
        }
    };
    Ok(ClaimRequest {
        email: form.email.clone().unwrap_or_default(),
        crd_command: form.crd_command.clone().unwrap_or_default(),
        desktop,
        join_code: form.join_code.clone(),
        reseat: form.reseat.as_deref() == Some("1"),
        presented_token: presented_token(headers),
        client: client.map(|Extension(ClientIp(ip))| ip),
    })
}

/// The answer to a claim that went ahead: the VM (and PIN), with the claim cookie.
fn seated_page(claimed: claim::Claim, headers: &HeaderMap) -> Response {
    match claimed.seat {
        Seated::Assigned { vm, token } => {
            let mut page = answer(&vm, Rejoin::No);
            set_claim_cookie(&mut page, &token, &claimed.email, headers);
            page
        }
        Seated::Reseated { vm, .. } => answer(&vm, Rejoin::Reseated),
        Seated::Rejoined {
            vm,
            rotated,
            proven: true,
        } => {
            let mut page = answer(&vm, Rejoin::Proven { rotated });
            // A cookie from before the seat page named no e-mail: this one does.
            if let Some(token) = presented_token(headers) {
                set_claim_cookie(&mut page, &token, &claimed.email, headers);
            }
            page
        }
        Seated::Rejoined { vm, .. } => answer(&vm, Rejoin::Unproven),
    }
}

fn set_claim_cookie(page: &mut Response, token: &str, email: &str, headers: &HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(&claim_cookie(token, email, headers)) {
        page.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// The form again, with why the claim did not go ahead (and the queue, when `offer`).
async fn refusal(
    app: &App,
    typed_email: &str,
    refused: PoolError,
    offer: Option<JoinOffer<'_>>,
) -> Response {
    let shown = typed_email.chars().take(MAX_EMAIL_LEN).collect::<String>();
    let (status, message) = match &refused {
        PoolError::Limited(wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many requests for a VM from here; wait {} s and try again.",
                wait.as_secs().max(1)
            ),
        ),
        PoolError::NoneFree => (StatusCode::SERVICE_UNAVAILABLE, refused.to_string()),
        PoolError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
        PoolError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
        PoolError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
        PoolError::Store { .. } | PoolError::Failed(_) => {
            tracing::error!(error = ?refused, "claim failed");
            (StatusCode::INTERNAL_SERVER_ERROR, UNEXPECTED.to_owned())
        }
        other => (StatusCode::BAD_REQUEST, other.to_string()),
    };
    let mut page = render_form(
        app,
        status,
        &FormState {
            email: &shown,
            error: Some(&message),
            waitlist: offer,
            ..FormState::default()
        },
    )
    .await;
    if let PoolError::Limited(wait) = refused
        && let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
    {
        page.headers_mut().insert(header::RETRY_AFTER, v);
    }
    page
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
        desktop: a.desktop,
    });
    (StatusCode::OK, page).into_response()
}

/// `POST /api/waitlist/join`: the claim form's fields again, from the "Join the waitlist"
/// button. Queued: the claim cookie (the seat given later carries its token) and on to
/// `/my-vm`, which shows the place. A VM that was free after all is answered as a claim.
pub async fn join_waitlist(
    State(app): State<App>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    form: Result<Form<ClaimForm>, FormRejection>,
) -> Response {
    // Another site's page must not queue this browser (and set its claim cookie).
    if let Some(refused) = from_elsewhere(
        &headers,
        "Join the queue from the workshop's own page.",
        "/",
    ) {
        return refused;
    }
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => return unreadable(&app, &rejection).await,
    };
    let typed_email = form.email.clone().unwrap_or_default();
    let joined = match claim_request(&form, &headers, client) {
        Ok(request) => waitlist::join(&app.pool, request).await,
        Err(refused) => Err(refused),
    };
    match joined {
        Ok(Joined::Claimed(claimed)) => seated_page(*claimed, &headers),
        Ok(Joined::Queued { email, token, .. }) => {
            let mut page = Redirect::to("/my-vm").into_response();
            if let Some(token) = token {
                set_claim_cookie(&mut page, &token, &email, &headers);
            }
            page
        }
        Err(refused) => refusal(&app, &typed_email, refused, None).await,
    }
}

/// `POST /api/waitlist/leave` (the queue page's button): out of the queue, the claim
/// cookie dropped, back to the start page.
pub async fn leave_waitlist(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(refused) = from_elsewhere(&headers, "Leave the queue from its own page.", "/my-vm")
    {
        return refused;
    }
    let Some(ClaimCookie {
        token,
        email: Some(email),
    }) = ClaimCookie::from_headers(&headers)
    else {
        return Redirect::to("/").into_response();
    };
    match waitlist::leave(&app.pool, &email, &token).await {
        // Not in the queue (any more): seated a moment ago, perhaps; the cookie is theirs.
        Ok(false) => Redirect::to("/my-vm").into_response(),
        Ok(true) => {
            let mut page = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{CLAIM_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
            )) {
                page.headers_mut().insert(header::SET_COOKIE, v);
            }
            page
        }
        Err(e) => PageError::from(e).back("/my-vm").into_response(),
    }
}
