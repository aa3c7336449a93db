//! `lablink launch N` and `lablink destroy (HOST… | --all)`: start provisioning runs on a
//! running allocator and follow them to their end (or `--detach`).

use clap::Args;
use serde_json::json;

use super::output;
use super::remote::{Admin, Target};
use crate::exit::CliError;
use crate::views::admin::teardown::DESTROY_CONFIRMATION;

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// How many VMs to launch.
    pub count: u32,
    #[command(flatten)]
    pub run: RunOptions,
}

/// What launch and destroy share: where, and whether to follow the run.
#[derive(Args, Debug)]
pub struct RunOptions {
    /// Start the run and return at once (follow it with `lablink runs ID --follow`).
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub target: Target,
    /// Print JSON for scripts (the run's record once it ends).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DestroyArgs {
    /// The VMs to destroy (hostnames), one run each.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub hosts: Vec<String>,
    /// Destroy every VM of the pool.
    #[arg(long)]
    pub all: bool,
    /// With --all: do not ask (needed when not in a terminal).
    #[arg(long, requires = "all")]
    pub yes: bool,
    #[command(flatten)]
    pub run: RunOptions,
}

pub fn launch(args: LaunchArgs) -> Result<(), CliError> {
    if args.count == 0 {
        return Err(CliError::Usage("COUNT must be at least 1".into()).of("launch"));
    }
    let admin = args.run.target.admin().map_err(|e| e.of("launch"))?;
    let count = args.count.to_string();
    output::runtime()?
        .block_on(async {
            let answer = admin
                .post_form("/api/launch", &[("num_vms", &count)])
                .await?;
            started(&admin, &answer, &args.run).await
        })
        .map_err(|e| e.of("launch"))
}

/// Reports the run an action started, and follows it unless detached.
async fn started(
    admin: &Admin,
    answer: &serde_json::Value,
    options: &RunOptions,
) -> Result<(), CliError> {
    let (detach, as_json) = (options.detach, options.json);
    let id = answer["run_id"].as_u64().ok_or_else(|| {
        CliError::Failed(format!("the allocator answered without a run: {answer}"))
    })?;
    if detach {
        if as_json {
            output::json(answer);
        } else {
            println!("run #{id} started: follow it with `lablink runs {id} --follow`");
        }
        return Ok(());
    }
    if !as_json {
        eprintln!("run #{id} started");
    }
    super::runs::follow(admin, id, as_json).await
}

fn confirm_all(yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(CliError::Usage(
            "--all destroys every VM: add --yes to confirm (no terminal to ask in)".into(),
        ));
    }
    eprint!(
        "Every VM will be destroyed, with its participant's desktop. Type '{DESTROY_CONFIRMATION}' to go on: "
    );
    let mut typed = String::new();
    std::io::stdin().read_line(&mut typed)?;
    if typed.trim() == DESTROY_CONFIRMATION {
        Ok(())
    } else {
        Err(CliError::Failed("not confirmed; nothing destroyed".into()))
    }
}

pub fn destroy(args: DestroyArgs) -> Result<(), CliError> {
    for host in &args.hosts {
        crate::model::validate_hostname(host)
            .map_err(|e| CliError::Usage(format!("HOST {host}: {e}")).of("destroy"))?;
    }
    if args.run.detach && args.hosts.len() > 1 {
        return Err(CliError::Usage(
            "--detach goes with one HOST: the allocator runs one destroy at a time".into(),
        )
        .of("destroy"));
    }
    if args.all {
        confirm_all(args.yes).map_err(|e| e.of("destroy"))?;
    }
    let admin = args.run.target.admin().map_err(|e| e.of("destroy"))?;
    output::runtime()?
        .block_on(async {
            if args.all {
                let answer = admin.post("/destroy", &json!({})).await?;
                return started(&admin, &answer, &args.run).await;
            }
            for host in &args.hosts {
                let answer = admin
                    .post(&format!("/api/vms/{host}/destroy"), &json!({}))
                    .await?;
                started(&admin, &answer, &args.run).await?;
            }
            Ok(())
        })
        .map_err(|e| e.of("destroy"))
}
