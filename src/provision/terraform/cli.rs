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

    /// Runs one terraform command in `dir`, its output going to the run log.
    async fn terraform(
        &self,
        dir: &Path,
        args: &[String],
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<(), ProviderError> {
        let cmd = self.command(dir, args);
        log.line(format!("$ terraform {}", args.join(" ")));
        let outcome = process::run(cmd, None, self.limits(), cancel, |_, line| log.line(line))
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

    /// `terraform apply` or `destroy` with the generated variables, unattended.
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
