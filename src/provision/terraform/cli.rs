//! Running Terraform: init, apply, destroy and output, each in its own process group,
//! bounded by the run timeout and stopped (SIGINT, then SIGKILL) on timeout or shutdown.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::settings::Backend;
use super::workdir::VARS_FILE;
use super::{ProviderError, RunLog, Terraform};
use crate::process::{self, Limits, Outcome, Stream};

/// Between SIGINT and SIGKILL: Terraform uses it to finish the API calls in flight and
/// save the state, so nothing is created without being recorded.
const TERRAFORM_GRACE: Duration = Duration::from_secs(60);

pub(super) const TERRAFORM_HINT: &str = " (install Terraform ≥ 1.6 or set provision.terraform_bin)";

impl Terraform {
    fn backend_flags(&self) -> Vec<String> {
        match &self.settings.backend {
            Backend::Local { path } => vec![format!("-backend-config=path={}", path.display())],
            Backend::S3 {
                bucket,
                key,
                region,
            } => vec![
                format!("-backend-config=bucket={bucket}"),
                format!("-backend-config=key={key}"),
                format!("-backend-config=region={region}"),
                "-backend-config=dynamodb_table=lock-table".into(),
                "-backend-config=encrypt=true".into(),
            ],
        }
    }

    /// A terraform command in `dir` with the automation environment.
    fn command(&self, dir: &Path, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.settings.bin);
        cmd.args(args)
            .current_dir(dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env(
                "TF_PLUGIN_CACHE_DIR",
                self.settings.root.join("plugin-cache"),
            );
        cmd
    }

    fn limits(&self) -> Limits {
        Limits {
            timeout: self.settings.command_timeout,
            grace: TERRAFORM_GRACE,
        }
    }

    fn cannot_run(&self) -> impl FnOnce(std::io::Error) -> ProviderError {
        let program = self.settings.bin.clone();
        move |source| ProviderError::Spawn {
            program,
            hint: TERRAFORM_HINT,
            source,
        }
    }

    /// The exit status of a command, or how it was stopped before it exited.
    fn exited(&self, args: &[String], outcome: Outcome) -> Result<ExitStatus, ProviderError> {
        let what = || format!("terraform {}", args[0]);
        match outcome {
            Outcome::Exited(status) => Ok(status),
            Outcome::TimedOut => Err(ProviderError::Timeout {
                what: what(),
                after: self.settings.command_timeout,
            }),
            Outcome::Cancelled => Err(ProviderError::Cancelled { what: what() }),
        }
    }

    /// Runs one terraform command in `dir`, its output going to the run log; with
    /// `-json` among `args`, each message as the line Terraform would have printed, and
    /// the resources it changes counted as the run's progress.
    async fn terraform(
        &self,
        dir: &Path,
        args: &[String],
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<(), ProviderError> {
        let cmd = self.command(dir, args);
        log.line(format!("$ terraform {}", args.join(" ")));
        let json = args.iter().any(|a| a == "-json");
        let mut planned = 0;
        let on_line = |_, line: String| {
            if !json {
                return log.line(line);
            }
            let (lines, counted) = read_message(&line);
            for line in lines {
                log.line(line);
            }
            match counted {
                None => {}
                Some(Counted::Planned) => {
                    planned += 1;
                    log.progress(|p| p.total = planned);
                }
                Some(Counted::Total(total)) => log.progress(|p| p.total = total),
                Some(Counted::Done) => log.progress(|p| p.done += 1),
                Some(Counted::Failed) => log.progress(|p| p.failed += 1),
            }
        };
        let outcome = process::run(cmd, None, self.limits(), cancel, on_line)
            .await
            .map_err(self.cannot_run())?;
        let status = self.exited(args, outcome)?;
        if status.success() {
            Ok(())
        } else {
            Err(ProviderError::Exited {
                command: format!("terraform {}", args[0]),
                status,
            })
        }
    }

    /// Runs a terraform command, keeping stdout and stderr apart (neither is logged).
    async fn run_captured(
        &self,
        dir: &Path,
        args: &[String],
        cancel: &CancellationToken,
    ) -> Result<(i32, Vec<String>, Vec<String>), ProviderError> {
        let cmd = self.command(dir, args);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = process::run(
            cmd,
            None,
            self.limits(),
            cancel,
            |stream, line| match stream {
                Stream::Stdout => out.push(line),
                Stream::Stderr => err.push(line),
            },
        )
        .await
        .map_err(self.cannot_run())?;
        let status = self.exited(args, outcome)?;
        Ok((status.code().unwrap_or(-1), out, err))
    }

    pub(super) async fn init(
        &self,
        dir: &Path,
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<(), ProviderError> {
        let mut args: Vec<String> = ["init", "-input=false", "-no-color", "-reconfigure"]
            .map(String::from)
            .to_vec();
        args.extend(self.backend_flags());
        self.terraform(dir, &args, log, cancel).await
    }

    pub(super) async fn apply(
        &self,
        dir: &Path,
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<(), ProviderError> {
        self.change("apply", dir, log, cancel).await
    }

    /// Destroys everything in the state.
    pub(super) async fn destroy_all(
        &self,
        dir: &Path,
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<(), ProviderError> {
        self.change("destroy", dir, log, cancel).await
    }

    /// `terraform apply` or `destroy` with the generated variables, unattended, its
    /// output as JSON messages (for the progress count).
    async fn change(
        &self,
        command: &str,
        dir: &Path,
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<(), ProviderError> {
        let args = [
            command,
            "-input=false",
            "-no-color",
            "-auto-approve",
            "-json",
            &format!("-var-file={VARS_FILE}"),
        ]
        .map(String::from);
        self.terraform(dir, &args, log, cancel).await
    }

    /// One output as JSON; `null` when there is no state or no such output yet. Any other
    /// failure (backend unreachable, credentials) fails the run: guessing "nothing exists"
    /// would make the next apply destroy the pool.
    pub(super) async fn output(
        &self,
        dir: &Path,
        name: &str,
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<Value, ProviderError> {
        let args = ["output", "-json", "-no-color", name].map(String::from);
        let (code, stdout, stderr) = self.run_captured(dir, &args, cancel).await?;
        if code == 0 {
            return Ok(serde_json::from_str(&stdout.join("\n")).unwrap_or(Value::Null));
        }
        let said = stderr.join(" ");
        if said.contains("not found") || said.contains("No outputs found") {
            return Ok(Value::Null);
        }
        for line in &stderr {
            log.line(line.clone());
        }
        Err(ProviderError::StateUnreadable {
            name: name.to_owned(),
            code,
        })
    }

    /// VM names in the state.
    pub(super) async fn existing(
        &self,
        dir: &Path,
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, ProviderError> {
        let names = self.output(dir, "vm_instance_names", log, cancel).await?;
        Ok(names
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// What a message of Terraform's `-json` output counts for the run's progress.
#[derive(Debug, PartialEq)]
enum Counted {
    /// One more resource to change (before the plan's summary says how many in all).
    Planned,
    /// The plan's summary: resources to add, change and remove, together.
    Total(u32),
    Done,
    Failed,
}

/// The human lines of one line of `-json` output (its `@message`, and a diagnostic's
/// detail), and what it counts. A line that is not such a message (standard error, an
/// old Terraform) is kept as it is.
fn read_message(line: &str) -> (Vec<String>, Option<Counted>) {
    let Ok(message) = serde_json::from_str::<Value>(line) else {
        return (vec![line.to_owned()], None);
    };
    let Some(text) = message["@message"].as_str() else {
        return (vec![line.to_owned()], None);
    };
    let mut lines = vec![text.to_owned()];
    if message["type"] == "diagnostic"
        && let Some(detail) = message["diagnostic"]["detail"].as_str()
    {
        lines.extend(
            detail
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    // Data sources read during the apply are no change: the plan's summary leaves them out.
    let changes = |action: &Value| !matches!(action.as_str(), Some("noop" | "read"));
    let count = |key: &str| message["changes"][key].as_u64().unwrap_or(0);
    let counted = match message["type"].as_str() {
        Some("planned_change") if changes(&message["change"]["action"]) => Some(Counted::Planned),
        Some("change_summary") if message["changes"]["operation"] == "plan" => {
            Some(Counted::Total(
                u32::try_from(count("add") + count("change") + count("remove")).unwrap_or(u32::MAX),
            ))
        }
        Some("apply_complete") if changes(&message["hook"]["action"]) => Some(Counted::Done),
        Some("apply_errored") if changes(&message["hook"]["action"]) => Some(Counted::Failed),
        _ => None,
    };
    (lines, counted)
}

/// Runs `program` outside a run (auto-reboot, fetching files): its exit code and stdout;
/// stderr goes to the debug log.
pub(super) async fn capture(
    program: &Path,
    hint: &'static str,
    dir: &Path,
    args: &[String],
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(i32, Vec<String>), ProviderError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_INPUT", "0");
    let mut out = Vec::new();
    let limits = Limits {
        timeout,
        grace: Duration::from_secs(5),
    };
    let outcome = process::run(cmd, None, limits, cancel, |stream, line| match stream {
        Stream::Stdout => out.push(line),
        Stream::Stderr => tracing::debug!(program = %program.display(), "{line}"),
    })
    .await
    .map_err(|source| ProviderError::Spawn {
        program: program.to_owned(),
        hint,
        source,
    })?;
    let what = program.display().to_string();
    match outcome {
        Outcome::Exited(status) => Ok((status.code().unwrap_or(-1), out)),
        Outcome::TimedOut => Err(ProviderError::Timeout {
            what,
            after: timeout,
        }),
        Outcome::Cancelled => Err(ProviderError::Cancelled { what }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_messages_become_terraforms_lines_and_count_progress() {
        let read = |line: &str| read_message(line);
        assert_eq!(
            read(r#"{"@level":"info","@message":"Terraform 1.9.0","type":"version"}"#),
            (vec!["Terraform 1.9.0".to_owned()], None)
        );
        assert_eq!(
            read(r#"{"@message":"aws_instance.vm[0]: Plan to create","type":"planned_change","change":{"action":"create"}}"#).1,
            Some(Counted::Planned)
        );
        assert_eq!(
            read(r#"{"@message":"data.x: Plan to read","type":"planned_change","change":{"action":"read"}}"#).1,
            None
        );
        assert_eq!(
            read(r#"{"@message":"Plan: 3 to add, 1 to change, 2 to destroy.","type":"change_summary","changes":{"add":3,"change":1,"remove":2,"operation":"plan"}}"#).1,
            Some(Counted::Total(6))
        );
        assert_eq!(
            read(r#"{"@message":"Apply complete! Resources: 3 added, 1 changed, 2 destroyed.","type":"change_summary","changes":{"add":3,"change":1,"remove":2,"operation":"apply"}}"#).1,
            None
        );
        assert_eq!(
            read(r#"{"@message":"aws_instance.vm[0]: Creation complete after 42s [id=i-1]","type":"apply_complete","hook":{"action":"create"}}"#).1,
            Some(Counted::Done)
        );
        assert_eq!(
            read(r#"{"@message":"aws_instance.vm[1]: Creation errored after 3s","type":"apply_errored","hook":{"action":"create"}}"#).1,
            Some(Counted::Failed)
        );
        assert_eq!(
            read(r#"{"@level":"error","@message":"Error: creating EC2 Instance","type":"diagnostic","diagnostic":{"severity":"error","summary":"creating EC2 Instance","detail":"UnauthorizedOperation: no\n\nrequest id 7"}}"#).0,
            ["Error: creating EC2 Instance", "UnauthorizedOperation: no", "request id 7"]
        );
        assert_eq!(
            read("plain stderr text"),
            (vec!["plain stderr text".to_owned()], None)
        );
        assert_eq!(read("[1,2]"), (vec!["[1,2]".to_owned()], None));
    }
}
