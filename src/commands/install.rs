//! `lablink install serve|agent`: puts this executable, its systemd unit and its settings
//! in place, creates the service account, and starts the service. Running it again
//! upgrades the binary and unit and keeps the settings it is not given.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, Subcommand};

use crate::commands::serve::ServeArgs;
use crate::exit::CliError;

const SERVE_UNIT: &str = include_str!("../../packaging/systemd/lablink.service");
const AGENT_UNIT: &str = include_str!("../../packaging/systemd/lablink-agent.service");
const AGENT_CRD_DROP_IN: &str = include_str!("../../packaging/systemd/lablink-agent-crd.conf");
const SYSUSERS: &str = include_str!("../../packaging/systemd/lablink.sysusers");

/// The units name the Debian package's path; this command installs beside it.
const PACKAGED_BINARY: &str = "/usr/bin/lablink";
const BINARY: &str = "/usr/local/bin/lablink";
const AGENT_BUILD: &str = "/usr/local/bin/lablink-agent";
const CRD_SESSION_HELPER: &str = "/opt/google/chrome-remote-desktop/user-session";
const ACCOUNT: &str = "lablink";

#[derive(Subcommand, Debug)]
pub enum InstallCommand {
    /// Install the allocator as `lablink.service`.
    Serve(ServeInstall),
    /// Install the agent of a machine the lab owns as `lablink-agent.service`.
    Agent(AgentInstall),
}

#[derive(Args, Debug)]
pub struct Common {
    /// Install under this directory instead of `/` (packaging, tests); nothing is started
    /// and no account is created.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Put everything in place but do not enable or (re)start the service.
    #[arg(long)]
    pub no_start: bool,
}

#[derive(Args, Debug)]
pub struct ServeInstall {
    /// The config.yaml to install as /etc/lablink/config.yaml (checked first); needed the
    /// first time, later the installed one is kept.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The glibc build handed to GPU VMs (NVML needs glibc); installed as
    /// /usr/local/bin/lablink-agent.
    #[arg(long)]
    pub agent_binary: Option<PathBuf>,
    /// Address to serve on (server.listen), e.g. 127.0.0.1:5000 behind a proxy.
    #[arg(long)]
    pub listen: Option<String>,
    /// The URL VMs call back (provision.allocator_url), e.g. https://lablink.example.org.
    #[arg(long)]
    pub allocator_url: Option<String>,
    /// The allocator's public IPv4 address (`ALLOCATOR_PUBLIC_IP`): VMs then accept SSH
    /// from it alone, and it is their fallback URL.
    #[arg(long)]
    pub public_ip: Option<std::net::Ipv4Addr>,
    /// File holding the admin password; kept root-only and handed to the service as a
    /// systemd credential.
    #[arg(long)]
    pub admin_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct AgentInstall {
    /// Base URL of the allocator, e.g. https://lablink.example.org.
    #[arg(long)]
    pub allocator_url: String,
    /// File holding the agents' token (`lablink token` on the allocator).
    #[arg(long)]
    pub token_file: PathBuf,
    /// This machine's name at the allocator (default: its hostname).
    #[arg(long)]
    pub vm_name: Option<String>,
    /// Process name that means the workshop software is in use.
    #[arg(long, default_value = "sleap")]
    pub software: String,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(command: InstallCommand) -> Result<(), CliError> {
    let plan = match &command {
        InstallCommand::Serve(args) => plan_serve(args),
        InstallCommand::Agent(args) => plan_agent(args),
    }
    .map_err(|message| CliError::Usage(message).of("install"))?;
    plan.apply()
        .map_err(|e| CliError::Failed(format!("install: {e}")))
}

/// What one installation writes and starts, worked out (and checked) before anything is
/// touched.
#[derive(Debug)]
struct Plan {
    root: PathBuf,
    on_this_system: bool,
    start: bool,
    unit_name: &'static str,
    desktop_account: bool,
    files: Vec<Install>,
}

#[derive(Debug)]
struct Install {
    path: &'static str,
    contents: Vec<u8>,
    mode: u32,
    /// Readable by the service account's group (config), not just root.
    group_readable: bool,
}

impl Install {
    fn new(path: &'static str, contents: impl Into<Vec<u8>>, mode: u32) -> Install {
        Install {
            path,
            contents: contents.into(),
            mode,
            group_readable: false,
        }
    }
}

fn plan_serve(args: &ServeInstall) -> Result<Plan, String> {
    let mut files = common_files(&args.common)?;
    files.push(Install::new(
        "/etc/sysusers.d/lablink.conf",
        SYSUSERS,
        0o644,
    ));
    if let Some(path) = &args.agent_binary {
        files.push(Install::new(
            AGENT_BUILD,
            read(path, "--agent-binary")?,
            0o755,
        ));
    }
    let mut environment = Vec::new();
    if let Some(listen) = &args.listen {
        listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| format!("--listen: `{listen}` is not an address like 0.0.0.0:5000"))?;
        environment.push(("LABLINK_SERVER_LISTEN", listen.clone()));
    }
    if let Some(url) = &args.allocator_url {
        environment.push(("LABLINK_PROVISION_ALLOCATOR_URL", http_url(url)?));
    }
    if let Some(ip) = args.public_ip {
        environment.push(("ALLOCATOR_PUBLIC_IP", ip.to_string()));
    }
    let mut credentials = Vec::new();
    if let Some(path) = &args.admin_password_file {
        files.push(Install::new(
            "/etc/lablink/admin-password",
            read(path, "--admin-password-file")?,
            0o600,
        ));
        credentials.push(("admin-password", "/etc/lablink/admin-password"));
        environment.push((
            "LABLINK_APP_ADMIN_PASSWORD_FILE",
            "%d/admin-password".to_owned(),
        ));
    }

    let installed_config = args.common.root.join("etc/lablink/config.yaml");
    let config = match &args.config {
        Some(path) => path.clone(),
        None if installed_config.exists() => installed_config,
        None => {
            return Err(
                "no /etc/lablink/config.yaml yet: give --config FILE (`lablink config keys` lists every setting)"
                    .into(),
            );
        }
    };
    check_config(&config, &environment, args.admin_password_file.as_deref())?;
    if args.config.is_some() {
        files.push(Install {
            group_readable: true,
            ..Install::new(
                "/etc/lablink/config.yaml",
                read(&config, "--config")?,
                0o640,
            )
        });
    }
    files.push(Install::new(
        "/etc/systemd/system/lablink.service",
        SERVE_UNIT.replace(PACKAGED_BINARY, BINARY),
        0o644,
    ));
    files.push(Install::new(
        "/etc/systemd/system/lablink.service.d/10-install.conf",
        drop_in(&environment, &credentials)?,
        0o644,
    ));
    Ok(plan(&args.common, "lablink.service", false, files))
}

fn plan_agent(args: &AgentInstall) -> Result<Plan, String> {
    let mut files = common_files(&args.common)?;
    let url = http_url(&args.allocator_url)?;
    let token = String::from_utf8(read(&args.token_file, "--token-file")?)
        .map_err(|_| "--token-file: the token is not text".to_owned())?;
    let token = token.lines().next().unwrap_or_default().trim().to_owned();
    if token.is_empty() {
        return Err(format!(
            "--token-file: {} is empty",
            args.token_file.display()
        ));
    }
    single_line("--token-file", &token)?;
    let mut env = vec![("ALLOCATOR_URL", url)];
    if let Some(name) = &args.vm_name {
        crate::model::validate_hostname(name).map_err(|e| format!("--vm-name: {e}"))?;
        env.push(("VM_NAME", name.clone()));
    }
    if args.software.is_empty() || !args.software.chars().all(|c| c.is_ascii_graphic()) {
        return Err("--software: give a process name without spaces".into());
    }
    env.push(("SUBJECT_SOFTWARE", args.software.clone()));
    files.push(Install::new(
        "/etc/lablink/agent.env",
        env_file(&env)?,
        0o644,
    ));
    files.push(Install::new(
        "/etc/lablink/agent-token",
        format!("{token}\n"),
        0o600,
    ));
    files.push(Install::new(
        "/etc/systemd/system/lablink-agent.service",
        AGENT_UNIT.replace(PACKAGED_BINARY, BINARY),
        0o644,
    ));
    if args
        .common
        .root
        .join(CRD_SESSION_HELPER.trim_start_matches('/'))
        .exists()
    {
        files.push(Install::new(
            "/etc/systemd/system/lablink-agent.service.d/10-chrome-remote-desktop.conf",
            AGENT_CRD_DROP_IN,
            0o644,
        ));
    }
    Ok(plan(&args.common, "lablink-agent.service", true, files))
}

fn plan(
    common: &Common,
    unit_name: &'static str,
    desktop_account: bool,
    files: Vec<Install>,
) -> Plan {
    let on_this_system = common.root == Path::new("/");
    Plan {
        root: common.root.clone(),
        on_this_system,
        start: on_this_system && !common.no_start,
        unit_name,
        desktop_account,
        files,
    }
}

/// The executable itself.
fn common_files(common: &Common) -> Result<Vec<Install>, String> {
    if common.root == Path::new("/") && !nix::unistd::geteuid().is_root() {
        return Err("run as root (sudo), or give --root DIR to install under a directory".into());
    }
    let exe =
        crate::download::executable().map_err(|e| format!("cannot find this executable: {e}"))?;
    Ok(vec![Install::new(
        BINARY,
        read(&exe, "this executable")?,
        0o755,
    )])
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))
}

/// A value that goes into an env file, a drop-in or a unit stays on its line: no
/// control characters (below U+0020, and U+007F), newlines included.
fn single_line(what: &str, value: &str) -> Result<(), String> {
    match value.chars().find(|&c| c < ' ' || c == '\x7f') {
        Some(c) => Err(format!(
            "{what}: the value contains the control character U+{:04X}; give it without \
             newlines or other control characters (nothing was installed)",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// `KEY=value` lines of an env file.
fn env_file(entries: &[(&str, String)]) -> Result<String, String> {
    let mut text = String::new();
    for (key, value) in entries {
        single_line(key, value)?;
        text.push_str(&format!("{key}={value}\n"));
    }
    Ok(text)
}

fn http_url(url: &str) -> Result<String, String> {
    // The URL parser drops tabs and newlines: check before it sees them.
    single_line("--allocator-url", url.trim())?;
    let trimmed = url.trim().trim_end_matches('/');
    match reqwest::Url::parse(trimmed) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(trimmed.to_owned())
        }
        _ => Err(format!(
            "--allocator-url: `{url}` is not an http:// or https:// URL"
        )),
    }
}

/// The configuration the service will see: the file plus what the drop-in sets.
fn check_config(
    file: &Path,
    environment: &[(&str, String)],
    admin_password_file: Option<&Path>,
) -> Result<(), String> {
    let mut env: Vec<(String, String)> = environment
        .iter()
        .filter(|(name, _)| *name != "LABLINK_APP_ADMIN_PASSWORD_FILE")
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    if let Some(path) = admin_password_file {
        env.push((
            "LABLINK_APP_ADMIN_PASSWORD_FILE".into(),
            path.display().to_string(),
        ));
    }
    let args = ServeArgs {
        config: Some(file.to_path_buf()),
        ..ServeArgs::default()
    };
    super::serve::resolve(&args, &env)
        .map(|_| ())
        .map_err(|problems| {
            format!(
                "{} has {} problem(s); nothing was installed:\n  {}",
                file.display(),
                problems.len(),
                problems.join("\n  ")
            )
        })
}

fn drop_in(environment: &[(&str, String)], credentials: &[(&str, &str)]) -> Result<String, String> {
    let mut text = String::from(
        "# Written by `lablink install serve`; it is rewritten on every install.\n[Service]\n",
    );
    for (name, value) in environment {
        single_line(name, value)?;
        if value
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            return Err(format!(
                "{name}: the value has quotes, backslashes or control characters"
            ));
        }
        text.push_str(&format!("Environment=\"{name}={value}\"\n"));
    }
    for (id, path) in credentials {
        text.push_str(&format!("LoadCredential={id}:{path}\n"));
    }
    Ok(text)
}

impl Plan {
    fn apply(&self) -> std::io::Result<()> {
        if self.on_this_system {
            self.create_account()?;
        }
        for file in &self.files {
            let target = self.root.join(file.path.trim_start_matches('/'));
            write_atomically(&target, &file.contents, file.mode)?;
            if file.group_readable && self.on_this_system {
                give_group(&target)?;
            }
            println!("installed {}", file.path);
        }
        if self.on_this_system {
            systemctl(&["daemon-reload"])?;
        }
        if self.start {
            systemctl(&["enable", self.unit_name])?;
            systemctl(&["restart", self.unit_name])?;
            println!(
                "started {}; `systemctl status {}` shows its state",
                self.unit_name, self.unit_name
            );
        } else {
            println!(
                "not started: `systemctl enable --now {}` starts it",
                self.unit_name
            );
        }
        Ok(())
    }

    fn create_account(&self) -> std::io::Result<()> {
        if nix::unistd::User::from_name(ACCOUNT)
            .ok()
            .flatten()
            .is_some()
        {
            return Ok(());
        }
        let mut cmd = Command::new("useradd");
        if self.desktop_account {
            // The participant's desktop session runs as this account: it needs a home and a
            // login shell.
            cmd.args([
                "--create-home",
                "--home-dir",
                "/home/lablink",
                "--shell",
                "/bin/bash",
            ]);
        } else {
            cmd.args([
                "--system",
                "--home-dir",
                "/var/lib/lablink",
                "--no-create-home",
            ])
            .args(["--shell", "/usr/sbin/nologin"]);
        }
        cmd.args(["--user-group", "--comment", "LabLink", ACCOUNT]);
        run_checked(cmd, "useradd")
    }
}

fn give_group(path: &Path) -> std::io::Result<()> {
    let group = nix::unistd::Group::from_name(ACCOUNT)
        .map_err(std::io::Error::other)?
        .ok_or_else(|| std::io::Error::other(format!("no group `{ACCOUNT}`")))?;
    std::os::unix::fs::chown(path, Some(0), Some(group.gid.as_raw()))
}

fn systemctl(args: &[&str]) -> std::io::Result<()> {
    let mut cmd = Command::new("systemctl");
    cmd.args(args);
    run_checked(cmd, &format!("systemctl {}", args.join(" ")))
}

fn run_checked(mut cmd: Command, what: &str) -> std::io::Result<()> {
    crate::process::clean_signals(&mut cmd);
    let status = cmd
        .status()
        .map_err(|e| std::io::Error::new(e.kind(), format!("{what}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("{what} failed ({status})")))
    }
}

/// Writes next to the target and renames over it, so a running binary or a unit being
/// read is never seen half-written.
fn write_atomically(target: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other(format!("{} has no folder", target.display())))?;
    std::fs::create_dir_all(dir)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.lablink-install"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)?;
    file.write_all(contents)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, target).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        std::io::Error::new(e.kind(), format!("{}: {e}", target.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_name_the_installed_binary() {
        assert!(SERVE_UNIT.contains(&format!("ExecStart={PACKAGED_BINARY} serve")));
        assert!(AGENT_UNIT.contains(&format!("ExecStart={PACKAGED_BINARY} agent")));
        let installed = SERVE_UNIT.replace(PACKAGED_BINARY, BINARY);
        assert!(installed.contains("ExecStart=/usr/local/bin/lablink serve"));
        assert!(!installed.contains(PACKAGED_BINARY));
    }

    #[test]
    fn drop_in_values_cannot_break_out_of_their_line() {
        let ok = drop_in(
            &[("LABLINK_SERVER_LISTEN", "0.0.0.0:5000".into())],
            &[("admin-password", "/etc/lablink/admin-password")],
        )
        .expect("plain values");
        assert!(ok.contains("Environment=\"LABLINK_SERVER_LISTEN=0.0.0.0:5000\"\n"));
        assert!(ok.contains("LoadCredential=admin-password:/etc/lablink/admin-password\n"));
        for bad in ["a\nExecStart=/bin/sh", "a\"b", "a\\b"] {
            assert!(drop_in(&[("X", bad.into())], &[]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_with_control_characters_are_refused_naming_their_flag() {
        for bad in ["a\nb", "a\rb", "a\tb", "a\u{1b}b", "a\u{7f}b", "a\0b"] {
            let err = single_line("--flag", bad).expect_err(bad);
            assert!(err.starts_with("--flag: "), "{err}");
            let err = env_file(&[("VM_NAME", bad.into())]).expect_err(bad);
            assert!(err.starts_with("VM_NAME: "), "{err}");
        }
        assert_eq!(single_line("--flag", "plain value: é"), Ok(()));
        let err = http_url("https://lab.example.org/\nLD_PRELOAD=/tmp/x.so").expect_err("newline");
        assert!(
            err.contains("--allocator-url") && err.contains("U+000A"),
            "{err}"
        );
    }

    #[test]
    fn urls_must_be_http() {
        assert_eq!(
            http_url("https://lab.example.org/").as_deref(),
            Ok("https://lab.example.org")
        );
        assert!(http_url("ftp://lab.example.org").is_err());
        assert!(http_url("lab.example.org").is_err());
    }
}
