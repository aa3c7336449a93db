//! `lablink logs HOST [--follow] [--errors]`: a VM's shipped logs (boot and container)
//! from a running allocator, whole or followed as they arrive.

use std::io::Write;

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::output;
use super::remote::{Admin, Target};
use crate::exit::CliError;
use crate::model::log_errors::ErrorFilter;

/// Seconds one follow request waits for new lines (the API allows up to 30).
const FOLLOW_WAIT: u64 = 25;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Both logs.
    All,
    /// The boot log (cloud-init).
    Boot,
    /// The container's log.
    Container,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The VM (hostname).
    pub host: String,
    /// Keep printing new lines as they arrive (Ctrl-C to stop).
    #[arg(long, short)]
    pub follow: bool,
    /// Only error lines (and a traceback's lines with them).
    #[arg(long)]
    pub errors: bool,
    /// Which log.
    #[arg(long, value_enum, default_value_t = Kind::All)]
    pub kind: Kind,
    #[command(flatten)]
    pub target: Target,
    /// Print the allocator's JSON answer (with --follow: one JSON object per answer).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: LogsArgs) -> Result<(), CliError> {
    crate::model::validate_hostname(&args.host)
        .map_err(|e| CliError::Usage(format!("HOST: {e}")).of("logs"))?;
    let admin = args.target.admin().map_err(|e| e.of("logs"))?;
    let runtime = output::runtime()?;
    let done = if args.follow {
        runtime.block_on(follow(&admin, &args))
    } else {
        runtime.block_on(once(&admin, &args))
    };
    done.map_err(|e| e.of("logs"))
}

fn errors_param(args: &LogsArgs) -> &'static str {
    if args.errors { "errors_only=true" } else { "" }
}

/// The answers' keys of the boot and the container log.
const KEYS: [&str; 2] = ["cloud_init_logs", "docker_logs"];

/// The text of the kinds asked for, from an answer of either logs endpoint.
fn texts(answer: &Value, kind: Kind) -> Vec<&str> {
    let keys: &[&str] = match kind {
        Kind::All => &KEYS,
        Kind::Boot => &KEYS[..1],
        Kind::Container => &KEYS[1..],
    };
    keys.iter().filter_map(|k| answer[*k].as_str()).collect()
}

async fn once(admin: &Admin, args: &LogsArgs) -> Result<(), CliError> {
    let answer = admin
        .get(&format!(
            "/api/vm-logs/{}?{}",
            args.host,
            errors_param(args)
        ))
        .await?;
    if args.json {
        output::json(&answer);
        return Ok(());
    }
    let texts = texts(&answer, args.kind);
    if texts.is_empty() {
        eprintln!("{}: no logs shipped yet", args.host);
    }
    let mut out = std::io::stdout().lock();
    for text in texts {
        // A reader that stops early (`| head`) is not an error.
        if writeln!(out, "{}", text.trim_end_matches('\n')).is_err() {
            break;
        }
    }
    Ok(())
}

/// Follows both logs from the start. With `--errors` the lines are filtered here, one
/// filter per log, so a traceback split between two answers stays whole.
async fn follow(admin: &Admin, args: &LogsArgs) -> Result<(), CliError> {
    let mut cursor = String::from("0:0");
    let mut filters: [ErrorFilter; 2] = Default::default();
    loop {
        let path = format!(
            "/api/vm-logs/{}/follow?cursor={cursor}&wait={FOLLOW_WAIT}",
            args.host
        );
        let answer = tokio::select! {
            answer = admin.get(&path) => answer?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let mut out = std::io::stdout().lock();
        let mut answer = answer;
        if args.errors {
            for (filter, key) in filters.iter_mut().zip(KEYS) {
                if let Some(text) = answer[key].as_str().map(|t| filter.feed(t)) {
                    answer[key] = Value::String(text);
                }
            }
        }
        let written = if args.json {
            writeln!(out, "{answer}")
        } else {
            texts(&answer, args.kind)
                .into_iter()
                .try_for_each(|text| write!(out, "{text}"))
        };
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        if let Some(next) = answer["cursor"].as_str() {
            cursor = next.to_owned();
        }
    }
}
