//! What each subcommand does.

pub mod admin;
pub mod config;
pub mod demo;
pub mod serve;
pub mod token;

use std::process::ExitCode;

/// Exit status for bad configuration or arguments (as clap uses for usage errors).
pub const EXIT_CONFIG: u8 = 2;

pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("lablink: {message}");
    ExitCode::FAILURE
}
