//! Capped exponential backoff with jitter, and "report until acknowledged".

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use super::api::CallError;

/// Delays of 1 s doubling to `cap`, each with random jitter, forever.
pub fn backoff(cap: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(cap)
        .with_jitter()
        .without_max_times()
        .build()
}

pub enum Gave {
    Acknowledged,
    Fatal(CallError),
    Cancelled,
}

/// Calls `attempt` until the allocator acknowledges it, backing off between failures.
/// A 401 ends it at once (retrying cannot help); so does `cancel`.
pub async fn until_acknowledged<F, Fut>(
    what: &str,
    cancel: &CancellationToken,
    mut attempt: F,
) -> Gave
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), CallError>>,
{
    let mut delays = backoff(Duration::from_secs(60));
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            r = attempt() => r,
            () = cancel.cancelled() => return Gave::Cancelled,
        };
        match result {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "{what}: delivered after retrying");
                }
                return Gave::Acknowledged;
            }
            Err(e) if e.is_fatal() => return Gave::Fatal(e),
            Err(e) => {
                failures += 1;
                let delay = delays.next().unwrap_or(Duration::from_secs(60));
                tracing::warn!(error = %e, retry_in = ?delay, "{what}: not delivered");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return Gave::Cancelled,
                }
            }
        }
    }
}
