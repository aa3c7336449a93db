//! `lablink seats`: who sits where on a running allocator, and the console's seat actions:
//! release a seat, move its participant, clear a false alarm, revoke a VM.

use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::{self, ago, cell};
use super::remote::{ListArgs, Target};
use crate::exit::CliError;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SeatsArgs {
    #[command(subcommand)]
    pub action: Option<SeatAction>,
    /// With no action: the list.
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Subcommand, Debug)]
pub enum SeatAction {
    /// Every seat: VM, participant, since when, in use (the default).
    List(ListArgs),
    /// The participant loses the seat; the VM is reset before it is handed out again.
    Release(OneSeat),
    /// The participant moves to another free VM (--to, or the first free one), new PIN.
    Move {
        #[command(flatten)]
        seat: OneSeat,
        /// The VM to move the participant to.
        #[arg(long, value_name = "HOST")]
        to: Option<String>,
    },
    /// Take back an unhealthy GPU report; waive a reset the agent cannot do.
    Clear(OneSeat),
    /// The VM's credential stops working and its record goes.
    Revoke(OneSeat),
}

#[derive(Args, Debug)]
pub struct OneSeat {
    /// The VM (hostname).
    pub host: String,
    #[command(flatten)]
    pub target: Target,
    /// Print the allocator's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SeatsArgs) -> Result<(), CliError> {
    let (verb, seat, to) = match args.action {
        None => return list(&args.list).map_err(|e| e.of("seats")),
        Some(SeatAction::List(list_args)) => return list(&list_args).map_err(|e| e.of("seats")),
        Some(SeatAction::Release(seat)) => ("release", seat, None),
        Some(SeatAction::Move { seat, to }) => ("move", seat, to),
        Some(SeatAction::Clear(seat)) => ("clear", seat, None),
        Some(SeatAction::Revoke(seat)) => ("revoke", seat, None),
    };
    for (what, name) in [("HOST", Some(&seat.host)), ("--to", to.as_ref())] {
        if let Some(name) = name
            && let Err(e) = crate::model::validate_hostname(name)
        {
            return Err(CliError::Usage(format!("{what}: {e}")).of("seats"));
        }
    }
    let body = match verb {
        "move" => json!({ "to": to }),
        _ => json!({}),
    };
    let admin = seat.target.admin().map_err(|e| e.of("seats"))?;
    let answer = output::runtime()?
        .block_on(admin.post(&format!("/api/vms/{}/{verb}", seat.host), &body))
        .map_err(|e| CliError::from(e).of("seats"))?;
    if seat.json {
        output::json(&answer);
    } else {
        println!("{}", answer["message"].as_str().unwrap_or("done"));
    }
    Ok(())
}

fn list(args: &ListArgs) -> Result<(), CliError> {
    let admin = args.target.admin()?;
    let pool = output::runtime()?.block_on(admin.get("/api/vms"))?;
    let vms: Vec<&Value> = pool["vms"].as_array().into_iter().flatten().collect();
    let seated: Vec<Value> = vms
        .iter()
        .filter(|vm| !vm["participant"].is_null())
        .map(|vm| {
            json!({
                "hostname": vm["hostname"],
                "participant": vm["participant"],
                "assigned_at": vm["assigned_at"],
                "in_use": vm["in_use"],
                "alive": vm["alive"],
                "unresponsive": vm["unresponsive"],
            })
        })
        .collect();
    let free = vms.iter().filter(|vm| vm["available"] == true).count();
    if args.json {
        output::json(&json!({ "seats": seated, "free": free }));
        return Ok(());
    }
    let now = Utc::now();
    if !seated.is_empty() {
        let rows = seated.iter().map(|seat| {
            let state = if seat["unresponsive"] == true {
                "unresponsive"
            } else if seat["alive"] == true {
                "alive"
            } else {
                "silent"
            };
            [
                cell(&seat["hostname"]),
                cell(&seat["participant"]),
                ago(&seat["assigned_at"], now),
                cell(&seat["in_use"]),
                state.to_owned(),
            ]
        });
        println!(
            "{}",
            output::table(["HOST", "PARTICIPANT", "SINCE", "IN USE", "AGENT"], rows)
        );
    }
    println!("{} seated, {free} free", seated.len());
    Ok(())
}
