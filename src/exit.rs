//! How a command ends: its exit status, and a failure reported on stderr. The agent's own
//! statuses are in `agent`; README lists them all.

use std::process::ExitCode;

/// Exit status for bad configuration or arguments (as clap uses for usage errors).
pub const EXIT_CONFIG: u8 = 2;

pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("lablink: {message}");
    ExitCode::FAILURE
}
