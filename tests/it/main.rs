//! Integration tests: a real server on a loopback port, a real store in a temporary
//! directory, and (for the command line) the real binary.

mod agent;
mod agent_api;
mod browser;
mod claim;
mod cli;
mod health_shutdown;
mod helpers;
mod long_poll;
mod packaging;
mod participant_data;
mod provision;
mod schedule;
mod store;
mod terraform;
mod terraform_modules;
mod ui;
