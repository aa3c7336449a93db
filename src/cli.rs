//! The command line: one enum of subcommands, dispatched to `commands`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

#[derive(Parser, Debug)]
#[command(
    name = "lablink",
    version,
    long_version = crate::commands::LONG_VERSION,
    about = "GPU workshop VMs: allocator and agent in one executable"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole system on this machine, offline, with simulated VMs.
    Demo(crate::commands::demo::DemoArgs),
    /// Run the allocator: participant page, agent API and the store.
    Serve(crate::commands::serve::ServeArgs),
    /// Run on a VM: register with the allocator, report health, start the desktop.
    Agent(Box<crate::agent::AgentArgs>),
    /// On a VM's desktop: ask the workshop's helpers to come (the "I need help" button),
    /// or with --lower say you no longer need help; through the VM's agent.
    Hand(crate::commands::hand::HandArgs),
    /// Print the agents' API token of a data directory; or mint (--vm) or revoke
    /// (--revoke) one VM's own credential.
    Token(crate::commands::token::TokenArgs),
    /// A running allocator at a glance: health, event, runs in progress, every VM.
    Status(crate::commands::status::StatusArgs),
    /// Who sits where on a running allocator; release, move, clear or revoke a seat.
    #[command(alias = "seat")]
    Seats(crate::commands::seats::SeatsArgs),
    /// The console's accounts on a running allocator (helpers): list, add, remove, or
    /// give a new password (read from LABLINK_ACCOUNT_PASSWORD or stdin).
    #[command(alias = "account")]
    Accounts(crate::commands::accounts::AccountsArgs),
    /// A VM's logs from a running allocator (--follow, --errors).
    Logs(crate::commands::logs::LogsArgs),
    /// Launch VMs on a running allocator and follow the run.
    Launch(crate::commands::launch::LaunchArgs),
    /// Destroy VMs (HOST…, or --all) on a running allocator and follow the run.
    Destroy(crate::commands::launch::DestroyArgs),
    /// The provisioning runs of a running allocator: list, show, --follow, --cancel.
    Runs(crate::commands::runs::RunsArgs),
    /// Download the pool's records, the event report or the rescued files.
    Export(crate::commands::export::ExportArgs),
    /// Check this allocator box before a workshop: configuration, data directory,
    /// Terraform, cloud credentials, DNS and TLS, the allocator URL, clock, exposure.
    Doctor(crate::commands::doctor::DoctorArgs),
    /// After a deployment: wait (bounded) for its name, certificate and health check, then
    /// read the allocator's own checks (GET /api/doctor); exit 1 naming what failed.
    VerifyDeploy(crate::commands::verify_deploy::VerifyDeployArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Admin account tasks.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Install this executable as a systemd service (as root).
    #[command(subcommand)]
    Install(crate::commands::install::InstallCommand),
    /// Sign in to a running allocator once: an API token is made with the password and
    /// kept (mode 0600) for the commands that talk to it.
    Login(crate::commands::login::LoginArgs),
    /// Revoke the stored API token of an allocator and forget it.
    Logout(crate::commands::login::LogoutArgs),
    /// Print the OpenAPI document of the JSON API (as `GET /api/openapi.json` serves it),
    /// or with --markdown the API reference rendered from it.
    Openapi(crate::commands::openapi::OpenapiArgs),
    /// Download a consistent snapshot of the store from a running allocator.
    Backup(crate::commands::backup::BackupArgs),
    /// Put a backup in place as the store of a stopped allocator.
    Restore(crate::commands::backup::RestoreArgs),
    /// Print the version, the git commit and the build target.
    Version,
    /// Rehearse a workshop against a running allocator: simulated VMs and participants,
    /// then a report with a pass/fail verdict.
    Rehearse(crate::rehearse::RehearseArgs),
    /// Measure a release build: claims/s, long-polls, wake latency, memory, start time.
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Set the admin password of a stopped allocator (prompted, or read from stdin or a
    /// file) and sign out every admin session.
    SetPassword {
        /// Data directory of the allocator.
        #[arg(long, default_value = "./lablink-data")]
        data_dir: PathBuf,
        /// Read the password from this file instead.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Report every problem in a config.yaml (exit 2 if there is any).
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// List every configuration key with its environment variable.
    Keys,
    /// Print the configuration reference (Markdown: key, variable, type, default, allowed
    /// values, meaning), as in README.md.
    Reference,
}

pub fn run(cli: Cli) -> ExitCode {
    crate::exit::finish(match cli.command {
        Command::Demo(args) => commands::demo::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Agent(args) => crate::agent::run(*args),
        Command::Hand(args) => commands::hand::run(args),
        Command::Token(args) => commands::token::run(args),
        Command::Status(args) => commands::status::run(args),
        Command::Seats(args) => commands::seats::run(args),
        Command::Accounts(args) => commands::accounts::run(args),
        Command::Logs(args) => commands::logs::run(args),
        Command::Launch(args) => commands::launch::launch(args),
        Command::Destroy(args) => commands::launch::destroy(args),
        Command::Runs(args) => commands::runs::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Doctor(args) => commands::doctor::run(args),
        Command::VerifyDeploy(args) => commands::verify_deploy::run(args),
        Command::Config(ConfigCommand::Check { file }) => commands::config::check(&file),
        Command::Config(ConfigCommand::Keys) => commands::config::keys(),
        Command::Config(ConfigCommand::Reference) => commands::config::reference(),
        Command::Admin(AdminCommand::SetPassword {
            data_dir,
            password_file,
        }) => commands::admin::set_password(&data_dir, password_file.as_deref()),
        Command::Install(command) => commands::install::run(command),
        Command::Login(args) => commands::login::login(args),
        Command::Logout(args) => commands::login::logout(args),
        Command::Openapi(args) => commands::openapi::run(args),
        Command::Backup(args) => commands::backup::backup(args),
        Command::Restore(args) => commands::backup::restore(args),
        Command::Version => {
            // A reader that stops early (`lablink version | head -1`) is not an error.
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{}", commands::version());
            Ok(())
        }
        Command::Rehearse(args) => crate::rehearse::run(args),
        Command::Bench(args) => crate::bench::run(args),
    })
}
