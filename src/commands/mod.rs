//! What each subcommand does.

pub mod accounts;
pub mod admin;
pub mod backup;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod export;
pub mod hand;
pub mod install;
pub mod launch;
pub mod login;
pub mod logs;
pub mod openapi;
pub mod output;
pub mod remote;
pub mod runs;
pub mod seats;
pub mod serve;
pub mod status;
pub mod token;
pub mod verify_deploy;

/// `--version` with the commit and target it was built from.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit ",
    env!("LABLINK_GIT_COMMIT"),
    "\ntarget ",
    env!("LABLINK_TARGET")
);

/// What `lablink version` prints.
pub fn version() -> String {
    format!("lablink {LONG_VERSION}")
}
