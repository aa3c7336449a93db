//! The service manager protocol of `Type=notify` units: readiness, status, stopping and
//! the watchdog. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// The variable naming systemd's socket; children must not inherit it, or a child that
/// speaks the protocol (an agent of the local provider) would speak for this service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The service has finished starting; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A change worth showing in `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Shutdown has begun (the graceful drain may take a while).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// With `WatchdogSec=` set, pings systemd at half the interval for as long as the runtime
/// keeps scheduling tasks; a wedged runtime stops the pings and systemd restarts us.
pub fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
