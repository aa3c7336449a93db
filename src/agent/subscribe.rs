//! Waiting for a participant: long-poll `/vm_startup`, then hand over the desktop.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::api::{Allocator, CallError, Startup};
use super::desktop::Desktop;
use super::retry::{Gave, backoff, until_acknowledged};
use crate::crd;

/// After a failed hand-over, how often to look for a fresh code from the participant
/// (codes are single-use; the same code will fail again), or to try a browser desktop
/// again.
const FRESH_CODE_POLL: Duration = Duration::from_secs(15);

/// Longest wait for the first GPU health report before announcing the VM.
const GPU_CHECK_WAIT: Duration = Duration::from_secs(60);

pub enum Ended {
    /// The desktop is started; nothing more to wait for.
    DesktopStarted,
    Stopped,
}

/// Reports "running" (the agent is now waiting, so the VM is really ready for a
/// participant), then polls until an assignment arrives and its desktop starts.
pub async fn run(
    alloc: Arc<Allocator>,
    desktop: &Desktop,
    mut gpu_checked: tokio::sync::watch::Receiver<bool>,
    cancel: CancellationToken,
) -> Result<Ended, CallError> {
    // A VM with a broken GPU must not be announced free before it says so.
    let checked = tokio::time::timeout(GPU_CHECK_WAIT, gpu_checked.wait_for(|done| *done));
    tokio::select! {
        r = checked => if r.is_err() {
            tracing::warn!("no GPU health reported within {GPU_CHECK_WAIT:?}; reporting running anyway");
        },
        () = cancel.cancelled() => return Ok(Ended::Stopped),
    }
    match until_acknowledged("status running", &cancel, || alloc.report_status("running")).await {
        Gave::Acknowledged => tracing::info!("reported running; waiting for a participant"),
        Gave::Fatal(e) => return Err(e),
        Gave::Cancelled => return Ok(Ended::Stopped),
    }
    let mut delays = backoff(Duration::from_secs(30));
    // A CRD code that failed (codes are single-use: it will fail again); any failure.
    let mut failed_code: Option<String> = None;
    let mut failed = false;
    loop {
        let answer = tokio::select! {
            a = alloc.wait_for_assignment() => a,
            () = cancel.cancelled() => return Ok(Ended::Stopped),
        };
        let pause = match answer {
            Ok(Startup::NotYet) => {
                delays = backoff(Duration::from_secs(30));
                continue;
            }
            Ok(Startup::Assigned {
                pin,
                command,
                browser,
            }) => {
                delays = backoff(Duration::from_secs(30));
                let code = if browser {
                    None
                } else {
                    match crd::extract_code(&command) {
                        Err(e) => {
                            tracing::error!(error = %e, "the assignment's command has no usable code");
                            tokio::select! {
                                () = tokio::time::sleep(FRESH_CODE_POLL) => {}
                                () = cancel.cancelled() => return Ok(Ended::Stopped),
                            }
                            continue;
                        }
                        Ok(code) => Some(code),
                    }
                };
                if code.is_some() && code == failed_code {
                    FRESH_CODE_POLL
                } else {
                    tracing::info!(browser, "assigned to a participant; starting the desktop");
                    let started = match &code {
                        Some(code) => desktop.start(code, &pin, &cancel).await,
                        None => desktop.start_browser().await,
                    };
                    match started {
                        Ok(()) => {
                            tracing::info!("desktop started; the participant can connect");
                            // An earlier attempt left the VM in `error`: it is fine now.
                            if failed {
                                match until_acknowledged("status running", &cancel, || {
                                    alloc.report_status("running")
                                })
                                .await
                                {
                                    Gave::Fatal(e) => return Err(e),
                                    Gave::Cancelled => return Ok(Ended::Stopped),
                                    Gave::Acknowledged => {}
                                }
                            }
                            return Ok(Ended::DesktopStarted);
                        }
                        Err(reason) => {
                            tracing::error!(%reason, "desktop did not start; reporting error and trying again");
                            failed = true;
                            failed_code = code;
                            match until_acknowledged("status error", &cancel, || {
                                alloc.report_status("error")
                            })
                            .await
                            {
                                Gave::Fatal(e) => return Err(e),
                                Gave::Cancelled => return Ok(Ended::Stopped),
                                Gave::Acknowledged => {}
                            }
                            FRESH_CODE_POLL
                        }
                    }
                }
            }
            Ok(Startup::Rejected(message)) => {
                tracing::warn!(%message, "the allocator rejected this VM's startup request");
                delays.next().unwrap_or(Duration::from_secs(30))
            }
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in = ?delay, "waiting for an assignment failed");
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return Ok(Ended::Stopped),
        }
    }
}
