//! `lablink agent` settings: flags, each also read from the variable upstream's client uses.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::desktop_user::DesktopUser;
use super::vnc::VncKind;
use crate::logging::LogFormat;

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Base URL of the allocator, e.g. https://lablink.example.org.
    #[arg(long, env = "ALLOCATOR_URL")]
    pub allocator_url: Option<String>,
    /// Allocator host, used as http://HOST:80 when no URL is given (upstream fallback).
    #[arg(long, env = "ALLOCATOR_HOST")]
    pub allocator_host: Option<String>,
    /// Bearer token of the allocator (`lablink token`); empty sends no Authorization header.
    #[arg(
        long,
        env = "API_TOKEN",
        hide_env_values = true,
        default_value = "",
        allow_hyphen_values = true
    )]
    pub token: String,
    /// Read the bearer token from this file instead (a systemd credential, a secret mount).
    #[arg(long, env = "API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// This VM's name as the allocator knows it (default: the OS hostname).
    #[arg(long, env = "VM_NAME")]
    pub vm_name: Option<String>,
    /// Process name that means the workshop software is in use.
    #[arg(long, env = "SUBJECT_SOFTWARE", default_value = "sleap")]
    pub software: String,
    /// Chrome Remote Desktop's start-host program.
    #[arg(
        long,
        env = "LABLINK_START_HOST",
        default_value = "/opt/google/chrome-remote-desktop/start-host"
    )]
    pub start_host: PathBuf,
    /// Chrome Remote Desktop daemon, started directly when the host is already registered
    /// (no systemd inside containers).
    #[arg(
        long,
        env = "LABLINK_CRD_DAEMON",
        default_value = "/opt/google/chrome-remote-desktop/chrome-remote-desktop"
    )]
    pub crd_daemon: PathBuf,
    /// Where start-host writes the host registration (default: ~/.config/chrome-remote-desktop).
    #[arg(long, env = "LABLINK_CRD_CONFIG_DIR")]
    pub crd_config_dir: Option<PathBuf>,
    /// `simulated` starts no desktop and reports success (for `lablink demo`).
    #[arg(long, value_enum, default_value_t = DesktopKind::ChromeRemoteDesktop)]
    pub desktop: DesktopKind,
    /// The VNC server of browser seats (`desktop.mode: browser` on the allocator):
    /// `xvnc` (TigerVNC) is a display of its own with the `--vnc-session` desktop on it,
    /// `x11vnc` attaches to a display a desktop already runs on, `off` serves no browser
    /// desktop. Started only for a browser seat, bound to loopback, with a fresh password
    /// per participant.
    #[arg(long, value_enum, env = "LABLINK_VNC", default_value_t = VncKind::Xvnc)]
    pub vnc: VncKind,
    /// The VNC server program (default: `x11vnc` or `Xvnc` on PATH).
    #[arg(long, env = "LABLINK_VNC_PROGRAM")]
    pub vnc_program: Option<PathBuf>,
    /// The X display: the one Xvnc creates, or the one x11vnc attaches to.
    #[arg(long, env = "LABLINK_VNC_DISPLAY", default_value = ":1")]
    pub vnc_display: String,
    /// Loopback port of the VNC server.
    #[arg(long, env = "LABLINK_VNC_PORT", default_value_t = 5900, value_parser = clap::value_parser!(u16).range(1..))]
    pub vnc_port: u16,
    /// With `--vnc xvnc`: the desktop session started on the new display (e.g.
    /// `/usr/bin/xfce4-session`).
    #[arg(long, env = "LABLINK_VNC_SESSION")]
    pub vnc_session: Option<PathBuf>,
    /// Shows the workshop's countdown on the participant's desktop (`notify-send` from
    /// libnotify, or a program taking its arguments).
    #[arg(long, env = "LABLINK_NOTIFY_PROGRAM", default_value = "notify-send")]
    pub notify_program: PathBuf,
    /// The socket of the desktop's "I need help" launcher (`lablink hand`). Default:
    /// /run/lablink/hand.sock when the agent runs as root, else
    /// $XDG_RUNTIME_DIR/lablink-hand.sock, else hand.sock in the state directory.
    #[arg(long, env = "LABLINK_HAND_SOCKET")]
    pub hand_socket: Option<PathBuf>,
    /// Seconds start-host may run before it is stopped.
    #[arg(long, default_value_t = 120)]
    pub desktop_timeout: u64,
    /// GPU probe: `auto` tries NVML, then nvidia-smi; `none` reports N/A; `simulated`
    /// always reports Healthy (for `lablink demo`).
    #[arg(long, value_enum, default_value_t = GpuProbeKind::Auto)]
    pub gpu_probe: GpuProbeKind,
    /// Seconds between GPU checks (upstream: 20).
    #[arg(long, default_value_t = 20.0)]
    pub gpu_interval: f64,
    /// Seconds between in-use checks (upstream: 20).
    #[arg(long, default_value_t = 20.0)]
    pub inuse_interval: f64,
    /// Seconds between heartbeats until the allocator says otherwise (its
    /// `server.heartbeat_seconds`).
    #[arg(long, default_value_t = 15.0)]
    pub heartbeat_interval: f64,
    /// Seconds nvidia-smi may take before the GPU counts as unhealthy.
    #[arg(long, default_value_t = 10)]
    pub gpu_timeout: u64,
    /// A cloud-init style log file to ship (repeatable), e.g. /var/log/cloud-init-output.log.
    #[arg(long = "log-file")]
    pub log_files: Vec<PathBuf>,
    /// A container log file to ship (repeatable); shipped with the `-docker` group suffix.
    #[arg(long = "container-log-file")]
    pub container_log_files: Vec<PathBuf>,
    /// Log group sent with shipped logs (upstream: CLOUD_INIT_LOG_GROUP).
    #[arg(
        long,
        env = "CLOUD_INIT_LOG_GROUP",
        default_value = "lablink-cloud-init"
    )]
    pub log_group: String,
    /// Milliseconds between log flushes when fewer than a batch of lines arrived.
    #[arg(long, default_value_t = 15_000)]
    pub log_flush_ms: u64,
    /// Directory for the agent's own state (how far each log was shipped).
    #[arg(long, env = "LABLINK_AGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Unix time the VM started booting, to report the cloud-init phase duration.
    #[arg(long, env = "LABLINK_BOOT_STARTED_AT")]
    pub boot_started_at: Option<f64>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LABLINK_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Git repository cloned onto the desktop before the VM is offered (`None`: none).
    #[arg(long, env = "TUTORIAL_REPO_TO_CLONE")]
    pub tutorial_repo: Option<String>,
    /// Run the participant's desktop (start-host, the Chrome Remote Desktop daemon, the
    /// tutorial clone, the startup script) as this account, with its uid, groups and an
    /// environment without the agent's token. Switching accounts needs the agent to run as
    /// root. Default: the agent's own account, with its environment.
    #[arg(long, env = "LABLINK_DESKTOP_USER")]
    pub desktop_user: Option<String>,
    /// The participant's desktop folder (default: ~/Desktop of the desktop user).
    #[arg(long, env = "LABLINK_DESKTOP_DIR")]
    pub desktop_dir: Option<PathBuf>,
    /// The lab's custom startup script, run with bash before the VM is offered (if present).
    #[arg(
        long,
        env = "LABLINK_STARTUP_SCRIPT",
        default_value = "/docker_scripts/custom-startup.sh"
    )]
    pub startup_script: PathBuf,
    /// A bash script that must also pass for the startup script to count as done.
    #[arg(long, env = "LABLINK_STARTUP_CHECK")]
    pub startup_check: Option<PathBuf>,
    /// Attempts of the startup script (and the tutorial clone) before giving up.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub startup_attempts: u32,
    /// Seconds one attempt of the startup script may take.
    #[arg(long, default_value_t = 1800)]
    pub startup_timeout: u64,
    /// Longest pause between attempts, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub startup_max_delay: f64,
    /// What a startup script that never succeeds does: `continue`, or `fail` (report
    /// `error` and exit).
    #[arg(long, value_enum, env = "STARTUP_ON_ERROR", default_value_t = OnError::Continue, ignore_case = true)]
    pub startup_on_error: OnError,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Continue,
    Fail,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuProbeKind {
    Auto,
    Nvml,
    NvidiaSmi,
    None,
    Simulated,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DesktopKind {
    ChromeRemoteDesktop,
    Simulated,
}

/// Upstream's sanitising of `ALLOCATOR_URL`: no trailing `/`, `://.` → `://`, no leading `.`.
pub fn sanitize_url(raw: &str) -> String {
    let mut url = raw.trim().trim_end_matches('/').replace("://.", "://");
    while let Some(rest) = url.strip_prefix('.') {
        url = rest.to_owned();
    }
    url
}

impl AgentArgs {
    /// The base URL to call, or a message naming the flag to set.
    pub fn base_url(&self) -> Result<String, String> {
        let url = match (&self.allocator_url, &self.allocator_host) {
            (Some(url), _) if !url.trim().is_empty() => sanitize_url(url),
            (_, Some(host)) if !host.trim().is_empty() => format!("http://{}:80", host.trim()),
            _ => {
                return Err(
                    "set --allocator-url (ALLOCATOR_URL) or --allocator-host (ALLOCATOR_HOST)"
                        .into(),
                );
            }
        };
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(url),
            _ => Err(format!(
                "--allocator-url: `{url}` is not an http:// or https:// URL"
            )),
        }
    }

    /// The bearer token: `--token`, or the first line of `--token-file`.
    pub fn bearer_token(&self) -> Result<String, String> {
        let Some(path) = &self.token_file else {
            return Ok(self.token.clone());
        };
        if !self.token.is_empty() {
            return Err(
                "give either --token (API_TOKEN) or --token-file (API_TOKEN_FILE), not both".into(),
            );
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file: cannot read {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or_default().trim().to_owned();
        if token.is_empty() {
            return Err(format!("--token-file: {} is empty", path.display()));
        }
        Ok(token)
    }

    /// The `--desktop-user` account, looked up and checked; `None` when not given.
    pub fn desktop_user(&self) -> Result<Option<DesktopUser>, String> {
        self.desktop_user
            .as_deref()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(DesktopUser::lookup)
            .transpose()
    }

    pub fn vm_name(&self) -> Result<String, String> {
        let name = match &self.vm_name {
            Some(n) if !n.trim().is_empty() => n.trim().to_owned(),
            _ => nix::unistd::gethostname()
                .map_err(|e| format!("--vm-name not set and the OS hostname is unreadable: {e}"))?
                .to_string_lossy()
                .into_owned(),
        };
        crate::model::validate_hostname(&name).map_err(|e| format!("--vm-name: {e}"))?;
        Ok(name)
    }

    pub fn interval(secs: f64, flag: &str) -> Result<Duration, String> {
        if secs.is_finite() && (0.05..=86_400.0).contains(&secs) {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(format!("--{flag}: {secs} is outside 0.05..=86400 seconds"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_sanitised_like_upstream() {
        assert_eq!(
            sanitize_url("https://lab.example.org/"),
            "https://lab.example.org"
        );
        assert_eq!(
            sanitize_url("http://.lab.example.org"),
            "http://lab.example.org"
        );
        assert_eq!(sanitize_url(".http://x//"), "http://x");
    }
}
