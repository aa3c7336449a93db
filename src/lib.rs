//! LabLink: a GPU workshop VM allocator (`lablink serve`) and the agent on each VM, in one
//! executable.

pub mod agent;
pub mod allocator;
pub mod assets;
pub mod bench;

pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crd;
pub mod doctor;
pub mod download;
pub mod error;
pub mod exit;
pub mod export;
pub mod fetch_budget;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod process;
pub mod provision;
pub mod recurrence;
pub mod rehearse;
pub mod rfb;
pub mod secret_file;
pub mod server;
pub mod shared_token;
pub mod shutdown;
pub mod store;
pub mod systemd;
pub mod views;
pub mod vm_identity;
