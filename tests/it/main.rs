//! Integration tests: a real server on a loopback port, a real store in a temporary
//! directory, and (for the command line) the real binary.

mod access;
mod agent;
mod agent_api;
mod architecture;
mod assets;
mod backup;
mod bad_input;
mod bench;
mod browser;
mod claim;
mod cli;
mod concurrency;
mod crash;
mod errors;
mod health_shutdown;
mod helpers;
mod limits;
mod liveness;
mod long_poll;
mod observability;
mod openapi;
mod packaging;
mod participant_data;
mod provision;
mod rehearse;
mod rfb;
mod schedule;
mod seats;
mod secrets;
mod store;
mod terraform;
mod terraform_modules;
mod ui;
mod upstream_allocator;
mod upstream_client;
