//! `lablink status`: the pool of a running allocator at a glance — its health, the event,
//! runs in progress, and one line per VM.

use chrono::Utc;
use clap::Args;
use serde_json::{Value, json};

use super::output::{self, ago, cell, span};
use super::remote::{Admin, RemoteError, Target};
use crate::exit::CliError;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON for scripts instead of the summary and table.
    #[arg(long)]
    pub json: bool,
}

/// Counts of the pool by what an instructor asks first.
fn counts(vms: &[Value]) -> Value {
    let count = |f: &dyn Fn(&Value) -> bool| vms.iter().filter(|vm| f(vm)).count();
    json!({
        "total": vms.len(),
        "free": count(&|vm| vm["available"] == true),
        "assigned": count(&|vm| !vm["participant"].is_null()),
        "starting": count(&|vm| vm["status"] == "initializing" || vm["status"].is_null()),
        "unresponsive": count(&|vm| vm["unresponsive"] == true),
        "error": count(&|vm| vm["status"] == "error"),
        "unhealthy": count(&|vm| vm["health"] == "Unhealthy"),
    })
}

async fn gather(admin: &Admin) -> Result<Value, RemoteError> {
    let health = admin.get("/api/health").await?;
    let pool = admin.get("/api/vms").await?;
    let event = match admin.get("/api/event").await {
        Ok(event) => event,
        Err(RemoteError::Refused { status: 404, .. }) => Value::Null,
        Err(e) => return Err(e),
    };
    let runs = admin.get("/api/runs").await?;
    let vms = pool["vms"].as_array().cloned().unwrap_or_default();
    let running: Vec<Value> = runs["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|run| run["state"] == "running")
        .cloned()
        .collect();
    Ok(json!({
        "health": health,
        "counts": counts(&vms),
        "event": event,
        "runs_in_progress": running,
        "vms": vms,
    }))
}

/// "launch 3 VM(s)" and its progress, as a run is shown in one line.
pub fn describe_run(run: &Value) -> String {
    let action = match run["action"].as_str() {
        Some("launch") => format!("launch {} VM(s)", cell(&run["count"])),
        Some("destroy_all") => "destroy all VMs".into(),
        Some("destroy_vm") => format!("destroy {}", cell(&run["hostname"])),
        other => other.unwrap_or("?").to_owned(),
    };
    format!("#{} {action}", cell(&run["id"]))
}

/// `done/total` of a run that reports its progress, else "-".
pub fn progress(run: &Value) -> String {
    let p = &run["progress"];
    match (p["done"].as_u64(), p["total"].as_u64()) {
        (Some(done), Some(total)) => match p["failed"].as_u64() {
            Some(failed) if failed > 0 => format!("{done}/{total} ({failed} failed)"),
            _ => format!("{done}/{total}"),
        },
        _ => "-".into(),
    }
}

fn print(url: &str, status: &Value) {
    let now = Utc::now();
    let health = &status["health"];
    println!(
        "Allocator {url}: {}, up {}",
        cell(&health["status"]),
        span(health["uptime_seconds"].as_i64().unwrap_or(0))
    );
    let event = &status["event"];
    if !event.is_null() {
        let left = event["seconds_left"]
            .as_i64()
            .map_or_else(String::new, |s| format!(", {} left", span(s)));
        println!(
            "Event \"{}\": {}{left}; {} of {} seats taken, {} free",
            cell(&event["name"]),
            cell(&event["phase"]),
            cell(&event["vms"]["taken"]),
            cell(&event["seats"]),
            cell(&event["vms"]["free"]),
        );
    }
    let c = &status["counts"];
    println!(
        "VMs: {} — {} assigned, {} free, {} starting, {} unresponsive, {} error, {} unhealthy GPU",
        c["total"],
        c["assigned"],
        c["free"],
        c["starting"],
        c["unresponsive"],
        c["error"],
        c["unhealthy"]
    );
    for run in status["runs_in_progress"].as_array().into_iter().flatten() {
        println!(
            "Run in progress: {} {} (by {}, {})",
            describe_run(run),
            progress(run),
            cell(&run["requested_by"]),
            ago(&run["started_at"], now)
        );
    }
    let vms = status["vms"].as_array().cloned().unwrap_or_default();
    if vms.is_empty() {
        println!("No VMs.");
        return;
    }
    println!();
    let rows = vms.iter().map(|vm| {
        let seen = match vm["last_seen_seconds_ago"].as_i64() {
            Some(s) => format!("{} ago", span(s)),
            None => "-".into(),
        };
        let state = if vm["unresponsive"] == true {
            "unresponsive".into()
        } else if vm["destroying"] == true {
            "destroying".into()
        } else {
            cell(&vm["status"])
        };
        [
            cell(&vm["hostname"]),
            state,
            cell(&vm["health"]),
            cell(&vm["participant"]),
            cell(&vm["in_use"]),
            seen,
        ]
    });
    println!(
        "{}",
        output::table(
            [
                "HOST",
                "STATUS",
                "GPU",
                "PARTICIPANT",
                "IN USE",
                "LAST SEEN"
            ],
            rows
        )
    );
}

pub fn run(args: StatusArgs) -> Result<(), CliError> {
    let admin = args.target.admin().map_err(|e| e.of("status"))?;
    let status = output::runtime()?
        .block_on(gather(&admin))
        .map_err(|e| CliError::from(e).of("status"))?;
    if args.json {
        output::json(&status);
    } else {
        print(admin.base(), &status);
    }
    Ok(())
}
