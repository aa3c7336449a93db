//! `lablink runs [ID] [--follow | --cancel]`: the provisioning runs of a running allocator
//! (launch, destroy): the list, one run's output, following one to its end, cancelling one.

use std::io::Write;
use std::time::Duration;

use chrono::Utc;
use clap::Args;
use serde_json::{Value, json};

use super::output::{self, ago, cell, span};
use super::remote::{Admin, Target};
use super::status::{describe_run, progress};
use crate::exit::CliError;

/// How often a followed run is asked for new output.
const POLL: Duration = Duration::from_secs(1);
/// Output lines per request (the API's page size).
const PAGE: u64 = 1000;

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// A run's number: print its output (else: list the recent runs).
    pub id: Option<u64>,
    /// Print the run's output as it comes, until it ends; the exit status is the run's.
    #[arg(long, requires = "id", conflicts_with = "cancel")]
    pub follow: bool,
    /// Cancel the run (Terraform is interrupted and saves its state).
    #[arg(long, requires = "id")]
    pub cancel: bool,
    #[command(flatten)]
    pub target: Target,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RunsArgs) -> Result<(), CliError> {
    let admin = args.target.admin().map_err(|e| e.of("runs"))?;
    let runtime = output::runtime()?;
    let done = runtime.block_on(async {
        match args.id {
            None => list(&admin, args.json).await,
            Some(id) if args.cancel => cancel(&admin, id, args.json).await,
            Some(id) if args.follow => follow(&admin, id, args.json).await,
            Some(id) => show(&admin, id, args.json).await,
        }
    });
    done.map_err(|e| e.of("runs"))
}

async fn list(admin: &Admin, as_json: bool) -> Result<(), CliError> {
    let answer = admin.get("/api/runs").await?;
    if as_json {
        output::json(&answer);
        return Ok(());
    }
    let runs = answer["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        println!("No runs yet.");
        return Ok(());
    }
    let now = Utc::now();
    let rows = runs.iter().map(|run| {
        [
            describe_run(run),
            cell(&run["state"]),
            progress(run),
            cell(&run["requested_by"]),
            ago(&run["started_at"], now),
            took(run).unwrap_or_else(|| "-".into()),
        ]
    });
    println!(
        "{}",
        output::table(["RUN", "STATE", "PROGRESS", "BY", "STARTED", "TOOK"], rows)
    );
    Ok(())
}

fn took(run: &Value) -> Option<String> {
    let time = |key: &str| {
        run[key]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let (start, end) = (time("started_at")?, time("ended_at")?);
    Some(span((end - start).num_seconds()))
}

/// The run and its output lines from `from`, all of them (page by page).
async fn lines_from(
    admin: &Admin,
    id: u64,
    mut from: u64,
) -> Result<(Value, Vec<String>, u64), CliError> {
    let mut lines = Vec::new();
    loop {
        let page = admin
            .get(&format!("/api/runs/{id}?from={from}&limit={PAGE}"))
            .await?;
        let got: Vec<String> = page["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(str::to_owned))
            .collect();
        let next = page["next"].as_u64().unwrap_or(from);
        let more = got.len() as u64 == PAGE;
        lines.extend(got);
        from = next;
        if !more {
            return Ok((page["run"].clone(), lines, from));
        }
    }
}

async fn show(admin: &Admin, id: u64, as_json: bool) -> Result<(), CliError> {
    let (run, lines, _) = lines_from(admin, id, 0).await?;
    if as_json {
        output::json(&json!({ "run": run, "lines": lines }));
        return Ok(());
    }
    println!("{}", heading(&run));
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

fn heading(run: &Value) -> String {
    let code = run["exit_code"]
        .as_i64()
        .map_or_else(String::new, |c| format!(", exit code {c}"));
    format!(
        "Run {}: {}{code}, progress {}, requested by {}",
        describe_run(run),
        cell(&run["state"]),
        progress(run),
        cell(&run["requested_by"])
    )
}

/// Prints the run's output until it ends (or only its final record, for `--json`); a run
/// that does not succeed is an error.
pub async fn follow(admin: &Admin, id: u64, as_json: bool) -> Result<(), CliError> {
    let mut from = 0;
    let mut shown_progress = String::new();
    let run = loop {
        let (run, lines, next) = lines_from(admin, id, from).await?;
        from = next;
        if !as_json {
            let mut out = std::io::stdout().lock();
            for line in lines {
                // A reader that stops early (`| head`) ends the following, not an error.
                if writeln!(out, "{line}").is_err() {
                    return Ok(());
                }
            }
            let now = progress(&run);
            if now != "-" && now != shown_progress {
                eprintln!("run #{id}: {now}");
                shown_progress = now;
            }
        }
        if run["state"] != "running" {
            break run;
        }
        tokio::time::sleep(POLL).await;
    };
    if as_json {
        output::json(&run);
    }
    match run["state"].as_str() {
        Some("succeeded") => Ok(()),
        _ => Err(CliError::Failed(format!(
            "run #{id} ended {}{}",
            cell(&run["state"]),
            run["exit_code"]
                .as_i64()
                .map_or_else(String::new, |c| format!(" (exit code {c})"))
        ))),
    }
}

async fn cancel(admin: &Admin, id: u64, as_json: bool) -> Result<(), CliError> {
    let answer = admin
        .post(&format!("/api/runs/{id}/cancel"), &json!({}))
        .await?;
    if as_json {
        output::json(&answer);
    } else {
        println!(
            "{}",
            answer["message"]
                .as_str()
                .map_or_else(|| format!("run #{id}: cancel requested"), str::to_owned)
        );
    }
    Ok(())
}
