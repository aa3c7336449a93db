//! A participant claims a seat, or comes back to theirs. The checks (join code, who may
//! claim, rate limits, the CRD code), the claim transaction, and the wake-up of the VM's
//! parked agent; then, for the seat page, finding the seat again from the browser's proof.

use std::net::IpAddr;
use std::sync::Arc;

use super::Pool;
use super::error::PoolError;
use super::waiters::Wake;
use crate::crd;
use crate::metrics::ClaimOutcome as Counted;
use crate::model::{DesktopKind, JournalKind, Vm};
use crate::store::vms::{self, ClaimOutcome};
use crate::store::waitlist::{self, Place};

pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_COMMAND_LEN: usize = 4096;

/// What a participant sent, as read from the form.
pub struct ClaimRequest {
    pub email: String,
    pub crd_command: String,
    /// The desktop the participant picked, where `desktop.mode` lets them (`both`).
    pub desktop: Option<DesktopKind>,
    pub join_code: Option<String>,
    /// Sent by the seat page's "another VM" form: move off a VM that stopped responding.
    pub reseat: bool,
    /// The claim token the browser presented (its cookie), if any.
    pub presented_token: Option<String>,
    /// Where the request came from, for the per-network limit.
    pub client: Option<IpAddr>,
}

/// A claim that went ahead, with the participant's e-mail as normalised.
pub struct Claim {
    pub email: String,
    pub seat: Seated,
}

pub enum Seated {
    /// A free VM is theirs; `token` is the proof their browser keeps.
    Assigned { vm: Vm, token: String },
    /// Their VM had stopped responding: they were given this one.
    Reseated { from: String, vm: Vm },
    /// They already hold `vm`. `proven`: the browser presented the claim's token (the PIN
    /// may be shown, and a new CRD code was taken when `rotated`).
    Rejoined { vm: Vm, rotated: bool, proven: bool },
}

/// Checks the request, commits the claim and wakes the VM's agent. The commit and the
/// wake-up run in a task of their own: a participant whose connection drops after the
/// commit still gets a woken VM.
pub async fn claim(pool: &Arc<Pool>, request: ClaimRequest) -> Result<Claim, PoolError> {
    let result = checked_claim(pool, request).await;
    pool.metrics.claim(match &result {
        Ok(Claim {
            seat: Seated::Assigned { .. } | Seated::Reseated { .. },
            ..
        }) => Counted::Assigned,
        Ok(Claim {
            seat: Seated::Rejoined { .. },
            ..
        }) => Counted::Rejoined,
        Err(PoolError::NoneFree) => Counted::NoVm,
        Err(PoolError::Limited(_)) => Counted::Limited,
        Err(PoolError::Store { .. } | PoolError::Failed(_)) => Counted::Error,
        Err(_) => Counted::Invalid,
    });
    if let Ok(claimed) = &result {
        let (kind, vm, detail) = match &claimed.seat {
            Seated::Assigned { vm, .. } => (JournalKind::Claimed, vm, String::new()),
            Seated::Reseated { from, vm } => (JournalKind::Reseated, vm, format!("from {from}")),
            Seated::Rejoined { .. } => return result,
        };
        let (pool, host, email) = (pool.clone(), vm.hostname.clone(), claimed.email.clone());
        // Off the participant's answer: the journal is for the report, not the claim.
        tokio::spawn(async move {
            super::event::journal(&pool, kind, Some(&host), Some(&email), None, detail).await;
        });
    }
    result
}

/// A request that passed every check of a claim: the e-mail as normalised, the desktop,
/// and the validated Chrome Remote Desktop code (empty for a browser desktop).
pub(super) struct Checked {
    pub email: String,
    pub desktop: DesktopKind,
    pub code: String,
}

/// The checks of a claim, in order: per-network limit, the form, the join code, the
/// e-mail and the allow-list, the CRD command, then the per-e-mail limit.
pub(super) fn check(pool: &Pool, request: &ClaimRequest) -> Result<Checked, PoolError> {
    // The machine itself is a local tool (a proxy on loopback forwards the real address).
    if let Some(ip) = request.client.filter(|ip| !ip.is_loopback()) {
        pool.claim_limits
            .check_network(ip)
            .map_err(PoolError::Limited)?;
    }
    if let Some(why) = super::event::closed(pool) {
        return Err(PoolError::Conflict(why));
    }
    let invalid = |message: &str| PoolError::Invalid(message.to_owned());
    let desktop = chosen_desktop(pool, request.desktop)?;
    if request.email.trim().is_empty()
        || (desktop == DesktopKind::Crd && request.crd_command.trim().is_empty())
    {
        return Err(invalid(match desktop {
            DesktopKind::Crd => "Email and CRD command are required.",
            DesktopKind::Browser => "Email is required.",
        }));
    }
    check_join_code(pool, request.join_code.as_deref())?;
    let email = normalize_email(&request.email).map_err(invalid)?;
    if !email_allowed(pool, &email) {
        return Err(PoolError::Forbidden(
            "This e-mail address is not registered for this workshop. Use the address you signed up with, or ask your instructor.".to_owned(),
        ));
    }
    let code = match desktop {
        DesktopKind::Crd => crd_code(&request.crd_command)?,
        DesktopKind::Browser => String::new(),
    };
    pool.claim_limits
        .check_email(&email)
        .map_err(PoolError::Limited)?;
    Ok(Checked {
        email,
        desktop,
        code,
    })
}

async fn checked_claim(pool: &Arc<Pool>, request: ClaimRequest) -> Result<Claim, PoolError> {
    let Checked {
        email,
        desktop,
        code,
    } = check(pool, &request)?;
    let Proofs {
        pin,
        token,
        new_token_sha256,
        presented,
    } = Proofs::new(request.presented_token.as_deref());
    let now = pool.clock.now();
    let reseat = request.reseat;
    let claim_email = email.clone();
    let committer = pool.clone();
    let outcome = tokio::spawn(async move {
        let (liveness, rescues) = (committer.liveness.clone(), committer.rescues.clone());
        let outcome = committer
            .store
            .write(move |tx| {
                let request = vms::ClaimRequest {
                    email: &claim_email,
                    crd_code: &code,
                    desktop,
                    pin: &pin,
                    new_token_sha256: &new_token_sha256,
                    presented_sha256: presented.as_deref(),
                    reseat,
                };
                let outcome = vms::claim(tx, &request, now, &|host| liveness.is_alive(host))?;
                // Off a VM that stopped responding: its files are rescued before its reset,
                // whenever its agent is back.
                if let ClaimOutcome::Reseated { from, vm } = &outcome
                    && let Some(held) = &vm.assignment
                {
                    rescues.on_vacate(tx, from, held)?;
                }
                Ok(outcome)
            })
            .await;
        if let Ok(outcome) = &outcome {
            if matches!(outcome, ClaimOutcome::Reseated { .. }) {
                committer.rescues.requested();
            }
            wake_claimed(&committer, outcome);
        }
        outcome
    })
    .await
    .map_err(|e| PoolError::Failed(format!("claim task failed: {e}")))?
    .map_err(PoolError::store(
        "An unexpected error occurred while processing your request. Please ask your instructor for help.",
    ))?;
    Ok(Claim {
        email,
        seat: seated(pool, outcome, token)?,
    })
}

/// Wakes the VM a committed claim gave out (or passed a new code to).
pub(super) fn wake_claimed(pool: &Pool, outcome: &ClaimOutcome) {
    if let ClaimOutcome::Assigned(vm)
    | ClaimOutcome::Reseated { vm, .. }
    | ClaimOutcome::Rejoined {
        vm, rotated: true, ..
    } = outcome
    {
        wake_assigned(pool, vm);
    }
}

/// What a committed claim gives the participant; `token` is the new claim's proof.
pub(super) fn seated(
    pool: &Pool,
    outcome: ClaimOutcome,
    token: String,
) -> Result<Seated, PoolError> {
    Ok(match outcome {
        ClaimOutcome::Assigned(vm) => Seated::Assigned { vm, token },
        ClaimOutcome::Reseated { from, vm } => {
            tracing::info!(from = %from, to = %vm.hostname, "participant re-seated: their VM stopped responding");
            pool.seat_ended(&from);
            Seated::Reseated { from, vm }
        }
        ClaimOutcome::Rejoined {
            vm,
            rotated,
            proven,
        } => Seated::Rejoined {
            vm,
            rotated,
            proven,
        },
        ClaimOutcome::NoneFree => return Err(PoolError::NoneFree),
    })
}

/// What a claim hands out: the seat's PIN and the token the browser keeps (and its
/// SHA-256, which is all the store keeps), with the SHA-256 of the token the browser
/// presented, if any.
pub(super) struct Proofs {
    pub pin: String,
    pub token: String,
    pub new_token_sha256: String,
    pub presented: Option<String>,
}

impl Proofs {
    pub(super) fn new(presented_token: Option<&str>) -> Proofs {
        let token = crate::store::meta::random_secret();
        Proofs {
            pin: random_pin(),
            new_token_sha256: sha256_hex(&token),
            token,
            presented: presented_token.map(sha256_hex),
        }
    }
}

/// Wakes `vm`'s parked agent with its (new) assignment; call after the commit.
pub fn wake_assigned(pool: &Pool, vm: &Vm) {
    if let Some(a) = &vm.assignment {
        pool.waiters.notify(
            &vm.hostname,
            Wake::Assigned {
                pin: a.pin.clone(),
                command: a.startup_command(),
                desktop: a.desktop,
            },
        );
    }
}

/// The participant's pick when `desktop.mode` offers one, else the mode's only desktop.
fn chosen_desktop(pool: &Pool, picked: Option<DesktopKind>) -> Result<DesktopKind, PoolError> {
    let offered = pool.config.desktop_kinds();
    match picked {
        None => Ok(offered[0]),
        Some(kind) if offered.contains(&kind) => Ok(kind),
        Some(kind) => Err(PoolError::Invalid(format!(
            "This workshop does not offer the {} desktop; reload the page.",
            match kind {
                DesktopKind::Crd => "Chrome Remote Desktop",
                DesktopKind::Browser => "browser",
            }
        ))),
    }
}

/// The validated code of a pasted Chrome Remote Desktop command.
fn crd_code(command: &str) -> Result<String, PoolError> {
    if command.len() > MAX_COMMAND_LEN {
        return Err(PoolError::Invalid(
            "That command is far longer than a Chrome Remote Desktop command; copy it again."
                .into(),
        ));
    }
    crd::extract_code(command).map_err(|e| {
        PoolError::Invalid(format!(
            "Invalid CRD command: {e}. Please ask your instructor for help if this keeps happening."
        ))
    })
}

/// The workshop's join code, when it has one (compared in constant time).
fn check_join_code(pool: &Pool, given: Option<&str>) -> Result<(), PoolError> {
    let expected = super::event::join_code(pool);
    let expected = expected.as_str();
    if expected.is_empty() {
        return Ok(());
    }
    let given = given.unwrap_or_default().trim();
    if given.is_empty() {
        return Err(PoolError::Invalid(
            "Enter the workshop's join code; your instructor has it.".to_owned(),
        ));
    }
    use subtle::ConstantTimeEq;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(PoolError::Forbidden(
            "That join code is not this workshop's; check it with your instructor.".to_owned(),
        ))
    }
}

/// `access.allowed_emails`: empty lets anyone in; else the address or its `@domain`.
fn email_allowed(pool: &Pool, email: &str) -> bool {
    pool.allowed_emails.is_empty()
        || pool.allowed_emails.iter().any(|entry| {
            if entry.starts_with('@') {
                email.ends_with(entry.as_str())
            } else {
                email == entry
            }
        })
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

pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Where a participant's seat is, as their browser's proof (the claim token and the
/// e-mail it was for) finds it.
pub enum SeatFound {
    Mine(Box<Vm>),
    /// The e-mail holds a VM, but this browser did not make the claim.
    OtherBrowser,
    /// The e-mail holds no VM any more.
    Released(String),
    /// This browser joined the waiting list and waits at `place`.
    Waiting(Place),
    /// The e-mail waits, but this browser did not join the queue.
    WaitingElsewhere,
    Nothing,
}

pub async fn find_seat(
    pool: &Pool,
    email: Option<String>,
    token: &str,
) -> Result<SeatFound, PoolError> {
    let Some(email) = email else {
        return Ok(SeatFound::Nothing);
    };
    let lookup = email.clone();
    let (held, waiting) = pool
        .store
        .read(move |tx| {
            let held = vms::held_by(tx, &lookup)?;
            let waiting = match held {
                Some(_) => None,
                None => waitlist::find(tx, &lookup)?,
            };
            Ok((held, waiting))
        })
        .await
        .map_err(PoolError::store("Failed to read the seat."))?;
    let presented = sha256_hex(token);
    let same = |kept: &str| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            kept.as_bytes(),
            presented.as_bytes(),
        ))
    };
    Ok(match held {
        None => match waiting {
            Some((entry, place)) if same(&entry.token_sha256) => SeatFound::Waiting(place),
            Some(_) => SeatFound::WaitingElsewhere,
            None => SeatFound::Released(email),
        },
        Some(vm) => {
            let proven = vm
                .assignment
                .as_ref()
                .and_then(|a| a.claim_token_sha256.as_deref())
                .is_some_and(same);
            if proven {
                SeatFound::Mine(Box::new(vm))
            } else {
                SeatFound::OtherBrowser
            }
        }
    })
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
