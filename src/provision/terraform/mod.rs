//! AWS EC2 VMs through Terraform: the production path.
//!
//! The templates in `terraform/client-vm/` are embedded in the binary and written to a
//! folder named after their version before each run; the variables go in as a generated
//! `lablink.tfvars.json` (never spliced into HCL). Which VMs exist is read back from the
//! Terraform state, not from the allocator's rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rust_embed::RustEmbed;

use crate::download::AgentBuild;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::{LaunchContext, Launched, Provider, RunFailure, RunLog};
use crate::config::Config;
use crate::model::{Phase, RunState, Vm};
use crate::process::{self, Limits, Outcome, Stream};
use crate::vm_identity::Identities;

#[derive(RustEmbed)]
#[folder = "terraform/client-vm/"]
struct ClientVmTemplates;

const VARS_FILE: &str = "lablink.tfvars.json";

/// Between SIGINT and SIGKILL: Terraform uses it to finish the API calls in flight and
/// save the state, so nothing is created without being recorded.
const TERRAFORM_GRACE: Duration = Duration::from_secs(60);

/// Where the state lives.
#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    /// A file in the data directory.
    Local { path: PathBuf },
    /// An S3 bucket (with DynamoDB locking as upstream: table `lock-table`).
    S3 {
        bucket: String,
        key: String,
        region: String,
    },
}

/// Everything a run needs that comes from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub bin: PathBuf,
    pub ssh_bin: PathBuf,
    /// `<data dir>/terraform`: versioned template folders, plugin cache, local state.
    pub root: PathBuf,
    pub backend: Backend,
    pub resource_prefix: String,
    /// Fixed variables (machine type, image, AMI…), as written to the tfvars file.
    pub vars: serde_json::Map<String, Value>,
    /// Where VMs reach the allocator (None: launch is refused with the reason).
    pub allocator_url: Result<String, String>,
    pub command_timeout: Duration,
    /// The VMs' identities: every run writes the credentials of the VMs it keeps, so a
    /// destroy never changes what the remaining VMs were given.
    pub identities: Arc<Identities>,
    /// What VMs download as their agent; its checksum goes into their boot script.
    pub agent_build: AgentBuild,
    /// The lab's custom startup script (`startup_script.enabled` and `.path`), read at
    /// every launch so an edited script reaches new VMs.
    pub startup_script: Option<PathBuf>,
}

/// EC2 refuses user data over 16 KiB; the boot script around it needs the rest.
const MAX_STARTUP_SCRIPT_BYTES: usize = 8 * 1024;

/// GPU instance families (g4dn, g5, g6e, p3, p4d, p5…): a letter g or p, then a digit.
pub fn is_gpu_type(machine_type: &str) -> bool {
    let mut chars = machine_type.chars();
    matches!(chars.next(), Some('g' | 'p')) && chars.next().is_some_and(|c| c.is_ascii_digit())
}

/// Who may SSH into the VMs: only the allocator when its public address is known
/// (`ALLOCATOR_PUBLIC_IP`, as the deployment module sets it), else anyone holding the key.
fn ssh_sources(env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let known =
        env("ALLOCATOR_PUBLIC_IP").and_then(|ip| ip.trim().parse::<std::net::Ipv4Addr>().ok());
    match known {
        Some(ip) => vec![format!("{ip}/32")],
        None => vec!["0.0.0.0/0".to_owned()],
    }
}

/// The URL VMs are given (upstream's rule): `ALLOCATOR_FQDN`, else the DNS name (https
/// unless TLS is off), else `ALLOCATOR_PUBLIC_IP`; `provision.allocator_url` wins over all.
pub fn allocator_url(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if !config.provision.allocator_url.is_empty() {
        return Ok(config
            .provision
            .allocator_url
            .trim_end_matches('/')
            .to_owned());
    }
    if let Some(fqdn) = env("ALLOCATOR_FQDN").filter(|v| !v.is_empty()) {
        let fqdn = fqdn.trim_end_matches('/');
        return Ok(if fqdn.contains("://") {
            fqdn.to_owned()
        } else {
            format!("http://{fqdn}")
        });
    }
    let scheme = if config.ssl.provider == "none" {
        "http"
    } else {
        "https"
    };
    if config.dns.enabled && !config.dns.domain.is_empty() {
        return Ok(format!(
            "{scheme}://{}",
            config.dns.domain.trim_start_matches('.')
        ));
    }
    match env("ALLOCATOR_PUBLIC_IP").filter(|v| !v.is_empty()) {
        Some(ip) => Ok(format!("{scheme}://{ip}")),
        None => Err(
            "VMs would not know where the allocator is: set provision.allocator_url \
                     (or ALLOCATOR_FQDN / ALLOCATOR_PUBLIC_IP, as the lablink-template does)"
                .into(),
        ),
    }
}

impl Settings {
    pub fn from_config(
        config: &Config,
        identities: Arc<Identities>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Settings {
        let root = config.data_dir().join("terraform");
        let environment = env("ENVIRONMENT")
            .map(|e| e.trim().to_lowercase().replace(' ', "-"))
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| config.environment.clone());
        let deployment = if config.deployment_name.is_empty() {
            "lablink"
        } else {
            &config.deployment_name
        };
        let backend = if config.provision.terraform_backend == "s3" {
            Backend::S3 {
                bucket: config.bucket_name.clone(),
                key: format!("{deployment}/{environment}/client/terraform.tfstate"),
                region: config.app.region.clone(),
            }
        } else {
            Backend::Local {
                path: root.join("state").join("client-vm.tfstate"),
            }
        };
        let m = &config.machine;
        let resource_prefix = format!("{}-lablink-client-{environment}", m.software);
        let mut vars = serde_json::Map::new();
        vars.insert("machine_type".into(), json!(m.machine_type));
        vars.insert("image_name".into(), json!(m.image));
        vars.insert(
            "credential_in_environment".into(),
            json!(config.credential_in_environment()),
        );
        vars.insert("repository".into(), json!(m.repository));
        vars.insert("client_ami_id".into(), json!(m.ami_id));
        vars.insert("resource_prefix".into(), json!(resource_prefix));
        vars.insert("subject_software".into(), json!(m.software));
        vars.insert("gpu_support".into(), json!(is_gpu_type(&m.machine_type)));
        vars.insert(
            "cloud_init_output_log_group".into(),
            json!(
                env("CLOUD_INIT_LOG_GROUP")
                    .unwrap_or_else(|| format!("{deployment}-client-logs-{environment}"))
            ),
        );
        vars.insert("region".into(), json!(config.app.region));
        vars.insert("ssh_cidr_blocks".into(), json!(ssh_sources(env)));
        vars.insert(
            "startup_on_error".into(),
            json!(config.startup_script.on_error),
        );
        Settings {
            bin: PathBuf::from(&config.provision.terraform_bin),
            ssh_bin: PathBuf::from(&config.provision.ssh_bin),
            root,
            backend,
            resource_prefix,
            vars,
            allocator_url: allocator_url(config, env),
            command_timeout: Duration::from_secs(config.provision.run_timeout_seconds),
            identities,
            agent_build: AgentBuild::from_config(config),
            startup_script: (config.startup_script.enabled
                && !config.startup_script.path.trim().is_empty())
            .then(|| PathBuf::from(config.startup_script.path.trim())),
        }
    }
}

/// Template folder name: crate version and a hash of the embedded files.
pub fn template_version() -> String {
    let mut names: Vec<_> = ClientVmTemplates::iter().collect();
    names.sort();
    let mut hasher = Sha256::new();
    for name in names {
        if let Some(file) = ClientVmTemplates::get(&name) {
            hasher.update(name.as_bytes());
            hasher.update(file.data.as_ref());
        }
    }
    format!(
        "{}-{}",
        env!("CARGO_PKG_VERSION"),
        &hex::encode(hasher.finalize())[..12]
    )
}

/// Every embedded template file: (name, contents).
pub fn templates() -> Vec<(String, Vec<u8>)> {
    ClientVmTemplates::iter()
        .filter_map(|name| {
            ClientVmTemplates::get(&name).map(|f| (name.to_string(), f.data.into_owned()))
        })
        .collect()
}

/// Values land in single-quoted shell words in the boot script and in HCL strings: refuse
/// anything that could end either.
fn check_value(key: &str, value: &str) -> Result<(), RunFailure> {
    if value
        .chars()
        .any(|c| c == '\'' || c == '\\' || c.is_control())
    {
        return Err(RunFailure::failed(format!(
            "{key}: quotes, backslashes and control characters are not allowed in `{value}`"
        )));
    }
    Ok(())
}

pub struct Terraform {
    settings: Settings,
}

impl Terraform {
    pub fn new(settings: Settings) -> Terraform {
        Terraform { settings }
    }

    fn workdir(&self) -> PathBuf {
        self.settings
            .root
            .join(format!("client-vm-{}", template_version()))
    }

    /// Writes the templates (and the backend choice) into the versioned folder.
    fn prepare(&self) -> std::io::Result<PathBuf> {
        let dir = self.workdir();
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(self.settings.root.join("plugin-cache"))?;
        for (name, data) in templates() {
            std::fs::write(dir.join(&name), data)?;
        }
        let backend = match &self.settings.backend {
            Backend::Local { path } => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                "local"
            }
            Backend::S3 { .. } => "s3",
        };
        std::fs::write(
            dir.join("backend.tf"),
            format!("terraform {{\n  backend \"{backend}\" {{}}\n}}\n"),
        )?;
        Ok(dir)
    }

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

    /// Runs one terraform command in `dir`, its output going to the run log; a failure
    /// carries the exit code.
    async fn terraform(
        &self,
        dir: &Path,
        args: &[String],
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<(), RunFailure> {
        let cmd = self.command(dir, args);
        log.line(format!("$ terraform {}", args.join(" ")));
        let limits = Limits {
            timeout: self.settings.command_timeout,
            grace: TERRAFORM_GRACE,
        };
        let outcome = process::run(cmd, None, limits, cancel, |_, line| log.line(line))
            .await
            .map_err(|e| {
                RunFailure::failed(format!(
                    "cannot run {}: {e} (install Terraform ≥ 1.6 or set provision.terraform_bin)",
                    self.settings.bin.display()
                ))
            })?;
        match outcome {
            Outcome::Exited(status) if status.success() => Ok(()),
            Outcome::Exited(status) => Err(RunFailure {
                state: RunState::Failed,
                exit_code: status.code(),
                message: format!("terraform {} exited with {status}", args[0]),
                rows_to_remove: Vec::new(),
            }),
            Outcome::TimedOut => Err(RunFailure {
                state: RunState::TimedOut,
                exit_code: None,
                message: format!(
                    "terraform {} did not finish within {:?}; its process group was stopped",
                    args[0], self.settings.command_timeout
                ),
                rows_to_remove: Vec::new(),
            }),
            Outcome::Cancelled => Err(RunFailure {
                state: RunState::Cancelled,
                exit_code: None,
                message: format!(
                    "terraform {} was stopped: the allocator is shutting down",
                    args[0]
                ),
                rows_to_remove: Vec::new(),
            }),
        }
    }

    async fn init(
        &self,
        dir: &Path,
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<(), RunFailure> {
        let mut args: Vec<String> = ["init", "-input=false", "-no-color", "-reconfigure"]
            .map(String::from)
            .to_vec();
        args.extend(self.backend_flags());
        self.terraform(dir, &args, log, cancel).await.map(|_| ())
    }

    /// One output as JSON; `null` when there is no state or no such output yet. Any other
    /// failure (backend unreachable, credentials) fails the run: guessing "nothing exists"
    /// would make the next apply destroy the pool.
    async fn output(
        &self,
        dir: &Path,
        name: &str,
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<Value, RunFailure> {
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
        Err(RunFailure {
            state: RunState::Failed,
            exit_code: Some(code),
            message: format!("terraform output {name} failed; the state could not be read"),
            rows_to_remove: Vec::new(),
        })
    }

    /// Runs a terraform command, keeping stdout and stderr apart (neither is logged).
    async fn run_captured(
        &self,
        dir: &Path,
        args: &[String],
        cancel: &CancellationToken,
    ) -> Result<(i32, Vec<String>, Vec<String>), RunFailure> {
        let cmd = self.command(dir, args);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let limits = Limits {
            timeout: self.settings.command_timeout,
            grace: TERRAFORM_GRACE,
        };
        let outcome = process::run(cmd, None, limits, cancel, |stream, line| match stream {
            Stream::Stdout => out.push(line),
            Stream::Stderr => err.push(line),
        })
        .await
        .map_err(|e| {
            RunFailure::failed(format!("cannot run {}: {e}", self.settings.bin.display()))
        })?;
        match outcome {
            Outcome::Exited(status) => Ok((status.code().unwrap_or(-1), out, err)),
            Outcome::TimedOut => Err(RunFailure {
                state: RunState::TimedOut,
                exit_code: None,
                message: format!("terraform {} timed out", args[0]),
                rows_to_remove: Vec::new(),
            }),
            Outcome::Cancelled => Err(RunFailure {
                state: RunState::Cancelled,
                exit_code: None,
                message: format!("terraform {} was stopped", args[0]),
                rows_to_remove: Vec::new(),
            }),
        }
    }

    /// VM names in the state.
    async fn existing(
        &self,
        dir: &Path,
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, RunFailure> {
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

    fn index_of(&self, host: &str) -> Option<u64> {
        host.strip_prefix(&self.settings.resource_prefix)?
            .strip_prefix("-vm-")?
            .parse()
            .ok()
    }

    fn name(&self, index: u64) -> String {
        format!("{}-vm-{index}", self.settings.resource_prefix)
    }

    /// Writes the variables for exactly these VM numbers (mode 0600: it holds the token).
    /// The custom startup script, base64, or "" when there is none.
    async fn startup_script_b64(&self) -> Result<String, RunFailure> {
        let Some(path) = &self.settings.startup_script else {
            return Ok(String::new());
        };
        let script = tokio::fs::read(path).await.map_err(|e| {
            RunFailure::failed(format!(
                "startup_script.path: cannot read {}: {e}",
                path.display()
            ))
        })?;
        if script.len() > MAX_STARTUP_SCRIPT_BYTES {
            return Err(RunFailure::failed(format!(
                "startup_script.path: {} has {} bytes; at most {MAX_STARTUP_SCRIPT_BYTES} fit in a VM's boot data \
                 (let the script download anything larger)",
                path.display(),
                script.len()
            )));
        }
        use base64::Engine;
        Ok(base64::engine::general_purpose::STANDARD.encode(script))
    }

    /// The variables of a run over the VMs `indices`, of which `fresh` are made by it.
    async fn write_vars(
        &self,
        dir: &Path,
        indices: &[u64],
        fresh: &[u64],
    ) -> Result<(), RunFailure> {
        let url = self
            .settings
            .allocator_url
            .clone()
            .map_err(RunFailure::failed)?;
        let checksum = self.settings.agent_build.sha256().await.map_err(|e| {
            RunFailure::failed(format!("cannot checksum the agent executable: {e}"))
        })?;
        let mut vars = self.settings.vars.clone();
        for (key, value) in &vars {
            if let Some(text) = value.as_str() {
                check_value(key, text)?;
            }
        }
        check_value("allocator_url", &url)?;
        vars.insert("vm_indices".into(), json!(indices));
        vars.insert("allocator_url".into(), json!(url));
        // Each VM its own credential, bound to this launch of it: a VM can act only as
        // itself, and only until it is destroyed. Only the VMs this run makes get a new
        // identity; the others keep theirs (their boot data is not changed anyway), and a
        // revoked one stays revoked.
        let identities = &self.settings.identities;
        let made: Vec<String> = fresh.iter().map(|i| self.name(*i)).collect();
        let minted = identities
            .ensure(&made, "launched by Terraform")
            .await
            .map_err(|e| RunFailure::failed(format!("cannot record the VMs' identities: {e}")))?;
        let mut tokens: serde_json::Map<String, Value> = made
            .into_iter()
            .zip(minted)
            .map(|(name, token)| (name, json!(token)))
            .collect();
        for i in indices.iter().filter(|i| !fresh.contains(i)) {
            let name = self.name(*i);
            let token = identities
                .credential(&name)
                .unwrap_or_else(|| "revoked".into());
            tokens.insert(name, json!(token));
        }
        vars.insert("api_tokens".into(), Value::Object(tokens));
        vars.insert("agent_sha256".into(), json!(checksum));
        vars.insert(
            "startup_script_b64".into(),
            json!(self.startup_script_b64().await?),
        );
        let text = serde_json::to_string_pretty(&Value::Object(vars)).unwrap_or_default();
        crate::server::state::write_private_file(&dir.join(VARS_FILE), &text)
            .map_err(|e| RunFailure::failed(format!("cannot write {VARS_FILE}: {e}")))
    }

    async fn apply(
        &self,
        dir: &Path,
        log: &RunLog,
        cancel: &CancellationToken,
    ) -> Result<(), RunFailure> {
        let args = [
            "apply",
            "-input=false",
            "-no-color",
            "-auto-approve",
            &format!("-var-file={VARS_FILE}"),
        ]
        .map(String::from);
        self.terraform(dir, &args, log, cancel).await.map(|_| ())
    }

    /// Stdout of a command that is not part of a run (auto-reboot); stderr goes to the log.
    /// The ssh arguments up to `ubuntu@<ip>` for one VM (its address and the pool's key
    /// from the Terraform state), the folder ssh runs in, and the address.
    async fn ssh_to(
        &self,
        host: &str,
        cancel: &CancellationToken,
    ) -> Result<(Vec<String>, PathBuf, String), String> {
        let dir = self.workdir();
        if !dir.join(".terraform").is_dir() {
            return Err("no initialised Terraform folder yet (launch VMs first)".into());
        }
        let bin = self.settings.bin.clone();
        let quick = Duration::from_secs(60);
        let args = ["output", "-json", "vm_public_ips"].map(String::from);
        let (code, lines) = self.capture(&bin, &dir, &args, quick, cancel).await?;
        let ips: Value = serde_json::from_str(&lines.join("\n")).unwrap_or(Value::Null);
        let ip = match (code, ips.get(host).and_then(Value::as_str)) {
            (0, Some(ip)) if !ip.is_empty() => ip.to_owned(),
            _ => return Err(format!("Terraform knows no public address for {host}")),
        };
        let args = ["output", "-raw", "lablink_private_key_pem"].map(String::from);
        let (code, key) = self.capture(&bin, &dir, &args, quick, cancel).await?;
        if code != 0 || key.is_empty() {
            return Err("cannot read the VMs' SSH key from the Terraform state".into());
        }
        let ssh_dir = self.settings.root.join("ssh");
        std::fs::create_dir_all(&ssh_dir).map_err(|e| e.to_string())?;
        let key_file = ssh_dir.join("client-vm.pem");
        crate::server::state::write_private_file(&key_file, &key.join("\n"))
            .map_err(|e| e.to_string())?;
        let args = vec![
            "-i".into(),
            key_file.display().to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!(
                "UserKnownHostsFile={}",
                ssh_dir.join("known_hosts").display()
            ),
            "-o".into(),
            "ConnectTimeout=10".into(),
            format!("ubuntu@{ip}"),
        ];
        Ok((args, ssh_dir, ip))
    }

    async fn capture(
        &self,
        program: &Path,
        dir: &Path,
        args: &[String],
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(i32, Vec<String>), String> {
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
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        match outcome {
            Outcome::Exited(status) => Ok((status.code().unwrap_or(-1), out)),
            Outcome::TimedOut => Err(format!("{} timed out", program.display())),
            Outcome::Cancelled => Err("stopped by shutdown".into()),
        }
    }

    fn prepared(&self) -> Result<PathBuf, RunFailure> {
        self.prepare()
            .map_err(|e| RunFailure::failed(format!("cannot write the Terraform templates: {e}")))
    }
}

fn phase(entry: &Value) -> Phase {
    let time = |k: &str| {
        entry[k]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    Phase {
        start: time("start_time"),
        end: time("end_time"),
        duration_seconds: entry["seconds"].as_f64(),
    }
}

#[async_trait]
impl Provider for Terraform {
    fn name(&self) -> &'static str {
        "terraform"
    }

    fn destroys_without_rows(&self) -> bool {
        true
    }

    async fn launch(
        &self,
        log: &RunLog,
        ctx: LaunchContext,
        count: u32,
        cancel: &CancellationToken,
    ) -> Result<Launched, RunFailure> {
        let dir = self.prepared()?;
        self.init(&dir, log, cancel).await?;
        let before = self.existing(&dir, log, cancel).await?;
        let mut indices: Vec<u64> = before.iter().filter_map(|h| self.index_of(h)).collect();
        let highest = indices
            .iter()
            .copied()
            .chain(
                ctx.existing
                    .iter()
                    .filter_map(|v: &Vm| self.index_of(&v.hostname)),
            )
            .max()
            .unwrap_or(0);
        let new: Vec<u64> = (highest + 1..=highest + u64::from(count)).collect();
        indices.extend(&new);
        log.line(format!(
            "{} VM(s) exist; creating {}",
            before.len(),
            new.iter()
                .map(|i| self.name(*i))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.write_vars(&dir, &indices, &new).await?;
        if let Err(mut failure) = self.apply(&dir, log, cancel).await {
            // Keep the rows only of VMs the state says exist.
            let after = self
                .existing(&dir, log, &CancellationToken::new())
                .await
                .unwrap_or_default();
            failure.rows_to_remove = new
                .iter()
                .map(|i| self.name(*i))
                .filter(|n| !after.contains(n))
                .collect();
            return Err(failure);
        }
        let times = self
            .output(&dir, "instance_terraform_apply_times", log, cancel)
            .await?;
        let hosts: Vec<String> = new.iter().map(|i| self.name(*i)).collect();
        let creation_timings = hosts
            .iter()
            .filter_map(|h| times.get(h).map(|entry| (h.clone(), phase(entry))))
            .collect();
        Ok(Launched {
            hosts,
            creation_timings,
        })
    }

    fn can_reboot(&self) -> bool {
        true
    }

    /// As upstream: over SSH with the pool's key, `cloud-init clean` and reboot, so the boot
    /// script runs again (and the VM re-registers). Needs `ssh` on the allocator.
    async fn reboot(&self, host: &str, cancel: &CancellationToken) -> Result<(), String> {
        let (mut args, ssh_dir, ip) = self.ssh_to(host, cancel).await?;
        args.push(
            // Reboot a moment later, so the command itself ends cleanly (exit 0).
            "sudo cloud-init clean --logs && sudo systemd-run --on-active=3 systemctl reboot"
                .into(),
        );
        let (code, _) = self
            .capture(
                &self.settings.ssh_bin,
                &ssh_dir,
                &args,
                Duration::from_secs(30),
                cancel,
            )
            .await?;
        if code == 0 {
            Ok(())
        } else {
            Err(format!("ssh to {host} ({ip}) exited with {code}"))
        }
    }

    /// Over SSH, the desktop files of the VM's first running container as a tar stream
    /// (as upstream: `/home/client/Desktop`, without `models/` and `predictions/`),
    /// unpacked below `into`.
    async fn collect_files(
        &self,
        host: &str,
        extension: &str,
        into: &Path,
        max_bytes: u64,
        cancel: &CancellationToken,
    ) -> Result<u64, String> {
        let (mut args, ssh_dir, ip) = self.ssh_to(host, cancel).await?;
        // `extension` is checked by the config validator: letters and digits only.
        args.push(format!(
            "sudo docker exec \"$(sudo docker ps -q | head -n1)\" sh -c 'cd /home/client/Desktop \
             && find . -type f -name \"*.{extension}\" ! -path \"*/models/*\" ! -path \"*/predictions/*\" -print0 \
             | tar --null -T - -cf -'"
        ));
        let archive = into.with_extension("tar");
        let file = std::fs::File::create(&archive).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.settings.ssh_bin);
        cmd.args(&args).current_dir(&ssh_dir);
        let limits = Limits {
            timeout: Duration::from_secs(600),
            grace: Duration::from_secs(5),
        };
        let mut errors = Vec::new();
        let outcome = process::run_to_file(cmd, file, max_bytes, limits, cancel, |_, line| {
            if errors.len() < 5 {
                errors.push(line);
            }
        })
        .await
        .map_err(|e| format!("cannot run ssh: {e}"))?;
        let size = std::fs::metadata(&archive).map_or(0, |m| m.len());
        if size > max_bytes {
            let _ = std::fs::remove_file(&archive);
            return Ok(size);
        }
        match outcome {
            Outcome::Exited(status) if status.success() => {}
            Outcome::Exited(status) => {
                return Err(format!(
                    "ssh to {host} ({ip}) exited with {}: {}",
                    status.code().unwrap_or(-1),
                    errors.join(" / ")
                ));
            }
            Outcome::TimedOut => return Err(format!("fetching files from {host} timed out")),
            Outcome::Cancelled => return Err("stopped by shutdown".into()),
        }
        let into = into.to_path_buf();
        tokio::task::spawn_blocking(move || crate::export::unpack_tar(&archive, &into))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the archive from {host} cannot be read: {e}"))?;
        Ok(size)
    }

    async fn destroy(
        &self,
        log: &RunLog,
        hosts: &[String],
        all: bool,
        cancel: &CancellationToken,
    ) -> Result<(), RunFailure> {
        let dir = self.prepared()?;
        self.init(&dir, log, cancel).await?;
        let before = self.existing(&dir, log, cancel).await?;
        let keep: Vec<u64> = if all {
            Vec::new()
        } else {
            before
                .iter()
                .filter(|h| !hosts.contains(h))
                .filter_map(|h| self.index_of(h))
                .collect()
        };
        self.write_vars(&dir, &keep, &[]).await?;
        let done = if all {
            let args = [
                "destroy",
                "-input=false",
                "-no-color",
                "-auto-approve",
                &format!("-var-file={VARS_FILE}"),
            ]
            .map(String::from);
            self.terraform(&dir, &args, log, cancel).await
        } else {
            self.apply(&dir, log, cancel).await
        };
        if let Err(mut failure) = done {
            // Some may be gone already: their rows go, the rest return to the pool.
            if let Ok(after) = self.existing(&dir, log, cancel).await {
                failure.rows_to_remove = hosts
                    .iter()
                    .filter(|h| !after.contains(h))
                    .cloned()
                    .collect();
            }
            return Err(failure);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_families_are_recognised() {
        for t in ["g4dn.xlarge", "g5.2xlarge", "p3.2xlarge", "g6e.xlarge"] {
            assert!(is_gpu_type(t), "{t}");
        }
        for t in ["t3.large", "m5.xlarge", "c7g.large", "gp"] {
            assert!(!is_gpu_type(t), "{t}");
        }
    }

    #[test]
    fn allocator_url_follows_upstream_rules() {
        let none = |_: &str| None;
        let mut c = Config::default();
        assert!(allocator_url(&c, &none).is_err());
        let ip = |k: &str| (k == "ALLOCATOR_PUBLIC_IP").then(|| "203.0.113.7".to_owned());
        assert_eq!(allocator_url(&c, &ip).as_deref(), Ok("http://203.0.113.7"));
        c.dns.enabled = true;
        c.dns.domain = ".lab.example.org".into();
        c.ssl.provider = "letsencrypt".into();
        assert_eq!(
            allocator_url(&c, &ip).as_deref(),
            Ok("https://lab.example.org")
        );
        let fqdn = |k: &str| (k == "ALLOCATOR_FQDN").then(|| "lablink.example.org".to_owned());
        assert_eq!(
            allocator_url(&c, &fqdn).as_deref(),
            Ok("http://lablink.example.org")
        );
        c.provision.allocator_url = "https://x.example/".into();
        assert_eq!(allocator_url(&c, &fqdn).as_deref(), Ok("https://x.example"));
    }

    #[test]
    fn ssh_is_limited_to_the_allocator_when_its_address_is_known() {
        let ip = |k: &str| (k == "ALLOCATOR_PUBLIC_IP").then(|| " 203.0.113.7 ".to_owned());
        assert_eq!(ssh_sources(&ip), ["203.0.113.7/32"]);
        let garbage = |k: &str| (k == "ALLOCATOR_PUBLIC_IP").then(|| "lab.example.org".to_owned());
        assert_eq!(ssh_sources(&garbage), ["0.0.0.0/0"]);
        assert_eq!(ssh_sources(&|_| None), ["0.0.0.0/0"]);
    }

    #[test]
    fn every_template_is_valid_hcl() {
        let all = templates();
        assert!(all.iter().any(|(n, _)| n == "main.tf"));
        for (name, data) in all.iter().filter(|(n, _)| n.ends_with(".tf")) {
            let text = std::str::from_utf8(data).expect("utf-8");
            if let Err(e) = hcl::parse(text) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn values_that_could_break_quoting_are_refused() {
        assert!(check_value("image_name", "ghcr.io/x/y:latest").is_ok());
        for bad in ["a'b", "a\nb", "a\\b"] {
            assert!(check_value("image_name", bad).is_err(), "{bad}");
        }
    }
}
