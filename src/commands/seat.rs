//! `lablink seat ACTION HOST`: fix a seat of a running allocator, as the admin through its
//! API: release it, move its participant, clear a false alarm, or revoke the VM.

use clap::{Args, ValueEnum};
use serde_json::json;

use crate::exit::CliError;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Action {
    /// The participant loses the seat; the VM is reset before it is handed out again.
    Release,
    /// The participant moves to another free VM (--to, or the first free one), new PIN.
    Move,
    /// Take back an unhealthy GPU report; waive a reset the agent cannot do.
    Clear,
    /// The VM's credential stops working and its record goes.
    Revoke,
}

#[derive(Args, Debug)]
pub struct SeatArgs {
    pub action: Action,
    /// The VM (hostname).
    pub host: String,
    /// With `move`: the VM to move the participant to.
    #[arg(long, value_name = "HOST")]
    pub to: Option<String>,
    #[command(flatten)]
    pub target: super::remote::Target,
}

pub fn run(args: SeatArgs) -> Result<(), CliError> {
    let checks = [("HOST", Some(&args.host)), ("--to", args.to.as_ref())];
    for (what, value) in checks {
        if let Some(name) = value
            && let Err(e) = crate::model::validate_hostname(name)
        {
            return Err(CliError::Usage(format!("{what}: {e}")).of("seat"));
        }
    }
    if args.to.is_some() && !matches!(args.action, Action::Move) {
        return Err(CliError::Usage("--to goes only with `move`".into()).of("seat"));
    }
    let admin =
        super::remote::Admin::new(&args.target).map_err(|e| CliError::Usage(e).of("seat"))?;
    let (verb, body) = match args.action {
        Action::Release => ("release", json!({})),
        Action::Move => ("move", json!({ "to": args.to })),
        Action::Clear => ("clear", json!({})),
        Action::Revoke => ("revoke", json!({})),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime
        .block_on(admin.post(&format!("/api/vms/{}/{verb}", args.host), &body))
        .map_err(CliError::Failed)?;
    println!("{}", answer["message"].as_str().unwrap_or("done"));
    Ok(())
}
