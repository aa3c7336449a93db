//! One typed configuration: upstream-style `config.yaml` < `LABLINK_*` environment < flags.
//!
//! Every key is declared once, in the `visit` methods below; the YAML reader, the
//! environment reader and `config check` all walk that one declaration, so a key can't be
//! known to one of them and unknown to another.

mod sources;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use sources::{Problem, env_name};

/// Anything visiting the configuration tree: the readers that fill it, and the key lister.
pub trait Visitor {
    fn string(&mut self, key: &str, slot: &mut String);
    fn opt_string(&mut self, key: &str, slot: &mut Option<String>);
    fn boolean(&mut self, key: &str, slot: &mut bool);
    fn integer(&mut self, key: &str, slot: &mut u64);
    fn section(&mut self, key: &str, visit: &mut dyn FnMut(&mut dyn Visitor));
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub deployment_name: String,
    pub environment: String,
    pub bucket_name: String,
    pub db: DbConfig,
    pub machine: MachineConfig,
    pub app: AppConfig,
    pub dns: DnsConfig,
    pub eip: EipConfig,
    pub ssl: SslConfig,
    pub allocator: AllocatorImageConfig,
    pub startup_script: StartupScriptConfig,
    pub monitoring: MonitoringConfig,
    pub server: ServerConfig,
    pub provision: ProvisionConfig,
    pub access: AccessConfig,
}

/// Who may claim VMs, how often, and which credentials agents may use (LabLink's own).
#[derive(Clone, Debug, PartialEq)]
pub struct AccessConfig {
    /// Accept the shared agents' token for every VM (upstream 0.1.2 style). Off: each VM
    /// must use its own credential (`lablink token --vm NAME`), and can act only as itself.
    pub shared_agent_token: bool,
    /// Claims per client network per minute (a classroom shares one NAT address); 0: off.
    pub claims_per_network_per_minute: u64,
    /// Claims per e-mail address per minute; 0: off.
    pub claims_per_email_per_minute: u64,
    /// A code participants must enter with their e-mail; empty: none.
    pub join_code: String,
    /// Comma-separated addresses (`ada@example.org`) or domains (`@example.org`) that may
    /// claim; empty: anyone.
    pub allowed_emails: String,
}

/// How VMs are created (LabLink's own section).
#[derive(Clone, Debug, PartialEq)]
pub struct ProvisionConfig {
    /// `manual` (machines join by themselves), `local` (agent processes on this machine).
    pub provider: String,
    /// A launch or destroy still running after this long is stopped.
    pub run_timeout_seconds: u64,
    /// Most agent processes the local provider runs at once.
    pub local_max_vms: u64,
    /// The `lablink` executable local agents run; empty means this one.
    pub local_executable: String,
    /// The executable VMs download as their agent; empty means `lablink-agent` beside this
    /// executable when there is one (the glibc build, which can load NVML), else this one.
    pub agent_binary: String,
    /// Terraform (or OpenTofu) executable.
    pub terraform_bin: String,
    /// The ssh client used to reach Terraform VMs (reboot, participants' files).
    pub ssh_bin: String,
    /// Where Terraform keeps its state: `local` (the data directory) or `s3` (bucket_name).
    pub terraform_backend: String,
    /// URL VMs reach the allocator at; empty: from ALLOCATOR_FQDN, dns.domain or
    /// ALLOCATOR_PUBLIC_IP as upstream does.
    pub allocator_url: String,
    /// Reboot failed VMs automatically (status error, unhealthy GPU, stuck booting).
    pub auto_reboot: bool,
    pub reboot_max_attempts: u64,
    pub reboot_cooldown_seconds: u64,
    pub reboot_check_seconds: u64,
    /// A VM still initializing this long after its status changed counts as failed.
    pub initializing_stale_seconds: u64,
    /// A VM still rebooting this long after the reboot counts as failed.
    pub rebooting_stale_seconds: u64,
}

/// PostgreSQL settings of the system we replace: accepted so old files load, then ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct DbConfig {
    pub dbname: String,
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u64,
    pub table_name: String,
    pub message_channel: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MachineConfig {
    pub machine_type: String,
    pub repository: Option<String>,
    pub image: String,
    pub ami_id: String,
    pub software: String,
    pub extension: String,
    /// How the client container gets its VM's credential: `file` (a root-only file only
    /// the agent reads; LabLink's client image), `environment` (`API_TOKEN`, which the
    /// desktop user can read too; upstream's client images read only that), or `auto`
    /// (`environment` for upstream's `lablink-client-base-image`, else `file`).
    pub agent_credential: String,
    /// Most MiB of participants' files one download takes from one VM; a VM with more is
    /// skipped.
    pub export_max_mb_per_vm: u64,
    /// Most MiB of participants' files one download takes in all; later VMs are skipped.
    pub export_max_total_mb: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AppConfig {
    pub admin_user: String,
    /// `None` when no file, variable or flag set it: a password is then generated on first
    /// start (see `server::admin_password`).
    pub admin_password: Option<String>,
    pub region: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DnsConfig {
    pub enabled: bool,
    pub terraform_managed: bool,
    pub domain: String,
    pub zone_id: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EipConfig {
    pub strategy: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SslConfig {
    pub provider: String,
    pub email: String,
    pub certificate_arn: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AllocatorImageConfig {
    pub image_tag: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StartupScriptConfig {
    pub enabled: bool,
    pub path: String,
    pub on_error: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MonitoringConfig {
    pub enabled: bool,
    pub email: String,
    pub max_instances_per_5min: u64,
    pub max_terminations_per_5min: u64,
    pub max_unauthorized_calls_per_15min: u64,
    pub budget_enabled: bool,
    pub monthly_budget_usd: u64,
    pub cloudtrail_retention_days: u64,
}

/// LabLink's own settings (not in upstream files).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: String,
    /// How long `/vm_startup` holds a request before answering 408 so the agent asks again.
    /// Keep it below the idle timeout of any proxy in front (AWS ALB: 60 s).
    pub long_poll_seconds: u64,
    /// How often agents send a heartbeat (`POST /api/heartbeat`); they are told in its
    /// answer.
    pub heartbeat_seconds: u64,
    /// Heartbeats an agent may miss before its VM counts as unresponsive: out of the free
    /// pool, shown as such, handed to auto-reboot.
    pub stale_after_heartbeats: u64,
    /// Per VM and log type (cloud-init, container), oldest lines dropped first.
    pub log_cap_bytes: u64,
    /// Comma-separated addresses of reverse proxies whose `X-Forwarded-For` is believed
    /// (for the sign-in limit and the audit log).
    pub trusted_proxies: String,
    /// Bearer token for `GET /metrics` from other machines; empty: only loopback may
    /// scrape. A secret: never logged.
    pub metrics_token: String,
    /// A client must send a complete request head within this time (also the idle limit
    /// of a kept-alive connection).
    pub header_timeout_seconds: u64,
    /// A request body must have arrived completely this long after its head (408 if not).
    pub body_timeout_seconds: u64,
    /// Most connections served at once (parked long-polls count); more wait briefly, then
    /// are closed.
    pub max_connections: u64,
    /// Largest request head (request line and headers); larger ones get 431.
    pub max_header_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            deployment_name: String::new(),
            environment: "prod".into(),
            bucket_name: "tf-state-lablink-allocator-bucket".into(),
            db: DbConfig {
                dbname: "lablink_db".into(),
                user: "lablink".into(),
                password: "lablink".into(),
                host: "localhost".into(),
                port: 5432,
                table_name: "vm_table".into(),
                message_channel: "vm_updates".into(),
            },
            machine: MachineConfig {
                machine_type: "g4dn.xlarge".into(),
                repository: None,
                image: "ghcr.io/talmolab/lablink-client-base-image:latest".into(),
                ami_id: "ami-00c257e12d6828491".into(),
                software: "sleap".into(),
                extension: "slp".into(),
                agent_credential: "auto".into(),
                export_max_mb_per_vm: 2048,
                export_max_total_mb: 20480,
            },
            app: AppConfig {
                admin_user: "admin".into(),
                admin_password: None,
                region: "us-west-2".into(),
            },
            dns: DnsConfig {
                enabled: false,
                terraform_managed: true,
                domain: String::new(),
                zone_id: String::new(),
            },
            eip: EipConfig {
                strategy: "dynamic".into(),
            },
            // Upstream defaults to letsencrypt, which its own validator rejects without DNS;
            // plain HTTP is the only default that is valid on its own.
            ssl: SslConfig {
                provider: "none".into(),
                email: String::new(),
                certificate_arn: String::new(),
            },
            allocator: AllocatorImageConfig {
                image_tag: "linux-amd64-latest".into(),
            },
            startup_script: StartupScriptConfig {
                enabled: false,
                path: String::new(),
                on_error: "continue".into(),
            },
            monitoring: MonitoringConfig {
                enabled: false,
                email: String::new(),
                max_instances_per_5min: 10,
                max_terminations_per_5min: 20,
                max_unauthorized_calls_per_15min: 5,
                budget_enabled: false,
                monthly_budget_usd: 500,
                cloudtrail_retention_days: 90,
            },
            server: ServerConfig {
                listen: "127.0.0.1:5000".into(),
                data_dir: "./lablink-data".into(),
                long_poll_seconds: 50,
                heartbeat_seconds: 15,
                stale_after_heartbeats: 3,
                log_cap_bytes: 1024 * 1024,
                trusted_proxies: "127.0.0.1,::1".into(),
                metrics_token: String::new(),
                header_timeout_seconds: 30,
                body_timeout_seconds: 60,
                max_connections: 20_000,
                max_header_bytes: 64 * 1024,
            },
            provision: ProvisionConfig {
                provider: "manual".into(),
                run_timeout_seconds: 3600,
                local_max_vms: 50,
                local_executable: String::new(),
                agent_binary: String::new(),
                terraform_bin: "terraform".into(),
                ssh_bin: "ssh".into(),
                terraform_backend: "local".into(),
                allocator_url: String::new(),
                auto_reboot: true,
                reboot_max_attempts: 3,
                reboot_cooldown_seconds: 300,
                reboot_check_seconds: 60,
                initializing_stale_seconds: 900,
                rebooting_stale_seconds: 600,
            },
            access: AccessConfig {
                shared_agent_token: false,
                claims_per_network_per_minute: 120,
                claims_per_email_per_minute: 10,
                join_code: String::new(),
                allowed_emails: String::new(),
            },
        }
    }
}

impl Config {
    /// Walks every key, in file order of the upstream schema.
    pub fn visit(&mut self, v: &mut dyn Visitor) {
        v.string("deployment_name", &mut self.deployment_name);
        v.string("environment", &mut self.environment);
        v.string("bucket_name", &mut self.bucket_name);
        v.section("db", &mut |v| {
            let db = &mut self.db;
            v.string("dbname", &mut db.dbname);
            v.string("user", &mut db.user);
            v.string("password", &mut db.password);
            v.string("host", &mut db.host);
            v.integer("port", &mut db.port);
            v.string("table_name", &mut db.table_name);
            v.string("message_channel", &mut db.message_channel);
        });
        v.section("machine", &mut |v| {
            let m = &mut self.machine;
            v.string("machine_type", &mut m.machine_type);
            v.opt_string("repository", &mut m.repository);
            v.string("image", &mut m.image);
            v.string("ami_id", &mut m.ami_id);
            v.string("software", &mut m.software);
            v.string("extension", &mut m.extension);
            v.string("agent_credential", &mut m.agent_credential);
            v.integer("export_max_mb_per_vm", &mut m.export_max_mb_per_vm);
            v.integer("export_max_total_mb", &mut m.export_max_total_mb);
        });
        v.section("app", &mut |v| {
            let a = &mut self.app;
            v.string("admin_user", &mut a.admin_user);
            v.opt_string("admin_password", &mut a.admin_password);
            v.string("region", &mut a.region);
        });
        v.section("dns", &mut |v| {
            let d = &mut self.dns;
            v.boolean("enabled", &mut d.enabled);
            v.boolean("terraform_managed", &mut d.terraform_managed);
            v.string("domain", &mut d.domain);
            v.string("zone_id", &mut d.zone_id);
        });
        v.section("eip", &mut |v| v.string("strategy", &mut self.eip.strategy));
        v.section("ssl", &mut |v| {
            let s = &mut self.ssl;
            v.string("provider", &mut s.provider);
            v.string("email", &mut s.email);
            v.string("certificate_arn", &mut s.certificate_arn);
        });
        v.section("allocator", &mut |v| {
            v.string("image_tag", &mut self.allocator.image_tag)
        });
        v.section("startup_script", &mut |v| {
            let s = &mut self.startup_script;
            v.boolean("enabled", &mut s.enabled);
            v.string("path", &mut s.path);
            v.string("on_error", &mut s.on_error);
        });
        v.section("monitoring", &mut |v| {
            let m = &mut self.monitoring;
            v.boolean("enabled", &mut m.enabled);
            v.string("email", &mut m.email);
            v.section("thresholds", &mut |v| {
                v.integer("max_instances_per_5min", &mut m.max_instances_per_5min);
                v.integer(
                    "max_terminations_per_5min",
                    &mut m.max_terminations_per_5min,
                );
                v.integer(
                    "max_unauthorized_calls_per_15min",
                    &mut m.max_unauthorized_calls_per_15min,
                );
            });
            v.section("budget", &mut |v| {
                v.boolean("enabled", &mut m.budget_enabled);
                v.integer("monthly_budget_usd", &mut m.monthly_budget_usd);
            });
            v.section("cloudtrail", &mut |v| {
                v.integer("retention_days", &mut m.cloudtrail_retention_days)
            });
        });
        v.section("server", &mut |v| {
            let s = &mut self.server;
            v.string("listen", &mut s.listen);
            v.string("data_dir", &mut s.data_dir);
            v.integer("long_poll_seconds", &mut s.long_poll_seconds);
            v.integer("heartbeat_seconds", &mut s.heartbeat_seconds);
            v.integer("stale_after_heartbeats", &mut s.stale_after_heartbeats);
            v.integer("log_cap_bytes", &mut s.log_cap_bytes);
            v.string("trusted_proxies", &mut s.trusted_proxies);
            v.string("metrics_token", &mut s.metrics_token);
            v.integer("header_timeout_seconds", &mut s.header_timeout_seconds);
            v.integer("body_timeout_seconds", &mut s.body_timeout_seconds);
            v.integer("max_connections", &mut s.max_connections);
            v.integer("max_header_bytes", &mut s.max_header_bytes);
        });
        v.section("provision", &mut |v| {
            let p = &mut self.provision;
            v.string("provider", &mut p.provider);
            v.integer("run_timeout_seconds", &mut p.run_timeout_seconds);
            v.integer("local_max_vms", &mut p.local_max_vms);
            v.string("local_executable", &mut p.local_executable);
            v.string("agent_binary", &mut p.agent_binary);
            v.string("terraform_bin", &mut p.terraform_bin);
            v.string("ssh_bin", &mut p.ssh_bin);
            v.string("terraform_backend", &mut p.terraform_backend);
            v.string("allocator_url", &mut p.allocator_url);
            v.boolean("auto_reboot", &mut p.auto_reboot);
            v.integer("reboot_max_attempts", &mut p.reboot_max_attempts);
            v.integer("reboot_cooldown_seconds", &mut p.reboot_cooldown_seconds);
            v.integer("reboot_check_seconds", &mut p.reboot_check_seconds);
            v.integer(
                "initializing_stale_seconds",
                &mut p.initializing_stale_seconds,
            );
            v.integer("rebooting_stale_seconds", &mut p.rebooting_stale_seconds);
        });
        v.section("access", &mut |v| {
            let a = &mut self.access;
            v.boolean("shared_agent_token", &mut a.shared_agent_token);
            v.integer(
                "claims_per_network_per_minute",
                &mut a.claims_per_network_per_minute,
            );
            v.integer(
                "claims_per_email_per_minute",
                &mut a.claims_per_email_per_minute,
            );
            v.string("join_code", &mut a.join_code);
            v.string("allowed_emails", &mut a.allowed_emails);
        });
    }

    /// Reads a YAML file over the defaults. Problems (unknown keys, wrong types) are all
    /// collected; the config is only usable when the list is empty.
    pub fn from_file(path: &Path) -> Result<(Config, Vec<Problem>), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mut config = Config::default();
        let problems = sources::apply_yaml(&mut config, &text)
            .map_err(|e| format!("{}: not valid YAML: {e}", path.display()))?;
        Ok((config, problems))
    }

    /// Applies `LABLINK_<SECTION>_<KEY>` (and `…_FILE`) variables from `vars`.
    pub fn apply_env(&mut self, vars: &[(String, String)]) -> Vec<Problem> {
        sources::apply_env(self, vars)
    }

    /// Every dotted key path this config knows, for documentation and checks.
    pub fn keys() -> Vec<String> {
        sources::list_keys(&mut Config::default())
    }

    /// Checks values that parse but make no sense together. Every problem is returned.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(Problem {
                key: key.to_owned(),
                message,
            })
        };

        if is_placeholder(&self.app.admin_user) {
            bad(
                "app.admin_user",
                "empty or still a placeholder; set the admin user name in config.yaml or LABLINK_APP_ADMIN_USER".into(),
            );
        }
        if let Some(password) = &self.app.admin_password
            && is_placeholder(password)
        {
            bad(
                "app.admin_password",
                "empty or still a placeholder; set a real password in config.yaml, \
                 LABLINK_APP_ADMIN_PASSWORD or LABLINK_APP_ADMIN_PASSWORD_FILE, \
                 or remove the key to have one generated on first start"
                    .into(),
            );
        }
        if self.dns.enabled && self.dns.domain.is_empty() {
            bad(
                "dns.domain",
                "dns.enabled is true but no domain is set".into(),
            );
        }
        if self.dns.domain.starts_with('.') || self.dns.domain.ends_with('.') {
            bad(
                "dns.domain",
                format!("`{}` must not start or end with a dot", self.dns.domain),
            );
        }
        match self.ssl.provider.as_str() {
            "none" => {}
            "letsencrypt" | "cloudflare" | "acm" if !self.dns.enabled => bad(
                "ssl.provider",
                format!(
                    "`{}` needs dns.enabled: true and a dns.domain (or use `none`)",
                    self.ssl.provider
                ),
            ),
            "letsencrypt" if self.ssl.email.is_empty() => bad(
                "ssl.email",
                "letsencrypt needs an e-mail address for the ACME account".into(),
            ),
            "acm" if self.ssl.certificate_arn.is_empty() => bad(
                "ssl.certificate_arn",
                "acm needs the ARN of the certificate".into(),
            ),
            "cloudflare" if self.dns.terraform_managed => bad(
                "dns.terraform_managed",
                "must be false with ssl.provider cloudflare (Cloudflare manages the record)".into(),
            ),
            "letsencrypt" | "cloudflare" | "acm" => {}
            other => bad(
                "ssl.provider",
                format!("`{other}` is not one of none, letsencrypt, cloudflare, acm"),
            ),
        }
        if !matches!(self.eip.strategy.as_str(), "persistent" | "dynamic") {
            bad(
                "eip.strategy",
                format!("`{}` is not one of persistent, dynamic", self.eip.strategy),
            );
        }
        if !matches!(
            self.machine.agent_credential.as_str(),
            "auto" | "file" | "environment"
        ) {
            bad(
                "machine.agent_credential",
                format!(
                    "`{}` is not auto, file or environment",
                    self.machine.agent_credential
                ),
            );
        }
        if !matches!(self.startup_script.on_error.as_str(), "continue" | "fail") {
            bad(
                "startup_script.on_error",
                format!(
                    "`{}` is not one of continue, fail",
                    self.startup_script.on_error
                ),
            );
        }
        if let Err(e) = self.allowed_emails() {
            bad("access.allowed_emails", e);
        }
        if !self.access.join_code.is_empty() && self.access.join_code.trim().chars().count() < 4 {
            bad(
                "access.join_code",
                "use at least 4 characters, or leave it empty for no code".into(),
            );
        }
        if self.startup_script.enabled && self.startup_script.path.trim().is_empty() {
            bad(
                "startup_script.path",
                "startup_script.enabled is true: name the script to run on every new VM".into(),
            );
        }
        if self.machine.software.trim().is_empty() {
            bad("machine.software", "must not be empty".into());
        } else {
            // It begins the names of the VMs this allocator launches.
            let sample = format!(
                "{}-lablink-client-{}-vm-1",
                self.machine.software, self.environment
            );
            if let Err(e) = crate::model::validate_hostname(&sample) {
                bad(
                    "machine.software",
                    format!(
                        "with environment `{}`, VMs would be named like `{sample}`: {e}",
                        self.environment
                    ),
                );
            }
        }
        if let Err(e) = self.listen_addr() {
            bad("server.listen", e);
        }
        if self.server.data_dir.trim().is_empty() {
            bad("server.data_dir", "must not be empty".into());
        }
        if !(1..=3600).contains(&self.server.long_poll_seconds) {
            bad(
                "server.long_poll_seconds",
                format!("{} is outside 1..=3600", self.server.long_poll_seconds),
            );
        }
        if !(1..=300).contains(&self.server.heartbeat_seconds) {
            bad(
                "server.heartbeat_seconds",
                format!("{} is outside 1..=300", self.server.heartbeat_seconds),
            );
        }
        if !(2..=20).contains(&self.server.stale_after_heartbeats) {
            bad(
                "server.stale_after_heartbeats",
                format!("{} is outside 2..=20", self.server.stale_after_heartbeats),
            );
        }
        let ext = &self.machine.extension;
        if ext.is_empty() || ext.len() > 16 || !ext.chars().all(|c| c.is_ascii_alphanumeric()) {
            bad(
                "machine.extension",
                format!(
                    "`{ext}` must be a file extension of letters and digits, without the dot (e.g. slp)"
                ),
            );
        }
        for (key, value) in [
            (
                "machine.export_max_mb_per_vm",
                self.machine.export_max_mb_per_vm,
            ),
            (
                "machine.export_max_total_mb",
                self.machine.export_max_total_mb,
            ),
        ] {
            if !(1..=16 * 1024 * 1024).contains(&value) {
                bad(key, format!("{value} MiB is outside 1..=16777216"));
            }
        }
        if let Err(e) = self.trusted_proxies() {
            bad("server.trusted_proxies", e);
        }
        for (key, value) in [
            (
                "server.header_timeout_seconds",
                self.server.header_timeout_seconds,
            ),
            (
                "server.body_timeout_seconds",
                self.server.body_timeout_seconds,
            ),
        ] {
            if !(1..=3600).contains(&value) {
                bad(key, format!("{value} is outside 1..=3600"));
            }
        }
        if !(1..=1_000_000).contains(&self.server.max_connections) {
            bad(
                "server.max_connections",
                format!("{} is outside 1..=1000000", self.server.max_connections),
            );
        }
        // Above 256 KiB hyper's own read buffer limit (≈400 KB) would stop a head first.
        if !(4096..=256 * 1024).contains(&self.server.max_header_bytes) {
            bad(
                "server.max_header_bytes",
                format!("{} is outside 4096..=262144", self.server.max_header_bytes),
            );
        }
        let metrics_token = self.server.metrics_token.trim();
        if !metrics_token.is_empty() && metrics_token.len() < 16 {
            bad(
                "server.metrics_token",
                "shorter than 16 characters; use a long random token (e.g. `openssl rand -hex 32`) or leave it empty".into(),
            );
        }
        if !(4096..=64 * 1024 * 1024).contains(&self.server.log_cap_bytes) {
            bad(
                "server.log_cap_bytes",
                format!("{} is outside 4096..=67108864", self.server.log_cap_bytes),
            );
        }
        match self.provision.provider.as_str() {
            "manual" | "local" | "terraform" => {}
            other => bad(
                "provision.provider",
                format!("`{other}` is not one of manual, local, terraform"),
            ),
        }
        if !(1..=86_400).contains(&self.provision.run_timeout_seconds) {
            bad(
                "provision.run_timeout_seconds",
                format!(
                    "{} is outside 1..=86400",
                    self.provision.run_timeout_seconds
                ),
            );
        }
        if !(1..=1000).contains(&self.provision.local_max_vms) {
            bad(
                "provision.local_max_vms",
                format!("{} is outside 1..=1000", self.provision.local_max_vms),
            );
        }
        problems
    }

    /// Settings accepted only for compatibility; worth a warning when they are set.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.db != Config::default().db {
            warnings.push(
                "db.*: LabLink keeps its data in an embedded store; the PostgreSQL settings are ignored"
                    .to_owned(),
            );
        }
        warnings
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.server.listen.parse().map_err(|_| {
            format!(
                "`{}` is not an address:port such as 127.0.0.1:5000 or 0.0.0.0:5000",
                self.server.listen
            )
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.server.data_dir)
    }

    pub fn reboot_policy(&self) -> crate::model::RebootPolicy {
        let p = &self.provision;
        let secs = |s: u64| chrono::Duration::seconds(s.min(i64::MAX as u64) as i64);
        crate::model::RebootPolicy {
            max_attempts: p.reboot_max_attempts.min(u64::from(u32::MAX)) as u32,
            cooldown: secs(p.reboot_cooldown_seconds),
            initializing_stale: secs(p.initializing_stale_seconds),
            rebooting_stale: secs(p.rebooting_stale_seconds),
        }
    }

    /// The parsed `access.allowed_emails`: lower-cased addresses and `@domain` suffixes.
    pub fn allowed_emails(&self) -> Result<Vec<String>, String> {
        let mut allowed = Vec::new();
        for entry in self.access.allowed_emails.split(',') {
            let entry = entry.trim().to_lowercase();
            if entry.is_empty() {
                continue;
            }
            let valid = match entry.strip_prefix('@') {
                Some(domain) => {
                    domain.contains('.')
                        && email_address::EmailAddress::is_valid(&format!("x@{domain}"))
                }
                None => email_address::EmailAddress::is_valid(&entry),
            };
            if !valid {
                return Err(format!(
                    "`{entry}` is neither an e-mail address nor a domain like @example.org"
                ));
            }
            allowed.push(entry);
        }
        Ok(allowed)
    }

    /// Whether anyone who reaches the participant page can take seats with made-up
    /// e-mail addresses: no join code, no allow-list, and the allocator listens on
    /// `listening`, an address other machines can reach (not loopback).
    pub fn anyone_can_claim(&self, listening: SocketAddr) -> bool {
        self.access.join_code.trim().is_empty()
            && self
                .access
                .allowed_emails
                .split(',')
                .all(|entry| entry.trim().is_empty())
            && !listening.ip().to_canonical().is_loopback()
    }

    /// The parsed `server.trusted_proxies`.
    pub fn trusted_proxies(&self) -> Result<Vec<std::net::IpAddr>, String> {
        self.server
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse().map_err(|_| {
                    format!("`{a}` is not an IP address (list addresses, comma-separated)")
                })
            })
            .collect()
    }

    /// Whether browsers reach the allocator over HTTPS (a TLS front configured under `ssl`,
    /// or an `https://` allocator URL): session cookies are then marked Secure.
    pub fn serves_tls(&self) -> bool {
        self.ssl.provider != "none" || self.provision.allocator_url.starts_with("https://")
    }

    pub fn long_poll(&self) -> Duration {
        Duration::from_secs(self.server.long_poll_seconds)
    }

    /// Whether client VMs hand their credential to the container in its environment
    /// (see `machine.agent_credential`).
    pub fn credential_in_environment(&self) -> bool {
        match self.machine.agent_credential.as_str() {
            "environment" => true,
            "file" => false,
            _ => self.machine.image.contains("lablink-client-base-image"),
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.server.heartbeat_seconds)
    }

    /// Silence longer than this makes a VM unresponsive.
    pub fn staleness_limit(&self) -> Duration {
        self.heartbeat_interval() * self.server.stale_after_heartbeats as u32
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.server.header_timeout_seconds)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.server.body_timeout_seconds)
    }
}

/// Upstream's sentinel (`MISSING`), the template's `PLACEHOLDER_*` values, or nothing.
pub fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    v.is_empty() || v == "MISSING" || v.to_ascii_uppercase().starts_with("PLACEHOLDER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_listen_on_loopback() {
        let c = Config::default();
        assert_eq!(c.validate(), vec![]);
        assert!(c.listen_addr().expect("addr").ip().is_loopback());
        assert_eq!(c.data_dir(), PathBuf::from("./lablink-data"));
    }

    #[test]
    fn claims_are_open_to_anyone_only_off_loopback_without_a_gate() {
        let at = |addr: &str| addr.parse::<SocketAddr>().expect("address");
        let open = Config::default();
        for reachable in [
            "0.0.0.0:5000",
            "10.1.2.3:5000",
            "[::]:5000",
            "[2001:db8::1]:80",
        ] {
            assert!(open.anyone_can_claim(at(reachable)), "{reachable}");
        }
        for local in [
            "127.0.0.1:5000",
            "127.0.0.2:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert!(!open.anyone_can_claim(at(local)), "{local}");
        }
        let mut coded = Config::default();
        coded.access.join_code = "owl-41".into();
        assert!(!coded.anyone_can_claim(at("0.0.0.0:5000")));
        let mut listed = Config::default();
        listed.access.allowed_emails = "@example.org".into();
        assert!(!listed.anyone_can_claim(at("10.1.2.3:5000")));
        let mut blank = Config::default();
        blank.access.allowed_emails = " , ".into();
        assert!(blank.anyone_can_claim(at("10.1.2.3:5000")));
    }

    #[test]
    fn every_provider_is_accepted_and_others_are_named() {
        for provider in ["manual", "local", "terraform"] {
            let mut c = Config::default();
            c.provision.provider = provider.into();
            assert_eq!(c.validate(), vec![], "{provider}");
        }
        let mut c = Config::default();
        c.provision.provider = "openstack".into();
        let problems = c.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "provision.provider");
        assert!(problems[0].message.contains("manual, local, terraform"));
    }

    #[test]
    fn an_enabled_startup_script_needs_a_path() {
        let mut c = Config::default();
        c.startup_script.enabled = true;
        let problems = c.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "startup_script.path");
        c.startup_script.path = "/etc/lablink/custom-startup.sh".into();
        assert!(c.validate().is_empty());
    }

    #[test]
    fn placeholders_are_refused_with_a_hint() {
        for pw in ["", "MISSING", "PLACEHOLDER_ADMIN_PASSWORD", "  "] {
            let mut c = Config::default();
            c.app.admin_password = Some(pw.into());
            let problems = c.validate();
            assert_eq!(problems.len(), 1, "{pw:?}");
            assert_eq!(problems[0].key, "app.admin_password");
            assert!(problems[0].message.contains("LABLINK_APP_ADMIN_PASSWORD"));
        }
        let mut c = Config::default();
        c.app.admin_password = Some("a real one".into());
        assert!(c.validate().is_empty());
    }

    #[test]
    fn trusted_proxies_must_be_addresses() {
        let mut c = Config::default();
        assert!(c.validate().is_empty());
        c.server.trusted_proxies = "10.0.0.5, fd00::1".into();
        assert!(c.validate().is_empty());
        assert_eq!(c.trusted_proxies().map(|p| p.len()), Ok(2));
        c.server.trusted_proxies = "10.0.0.5, proxy.local".into();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["server.trusted_proxies"]);
    }

    #[test]
    fn a_metrics_token_is_long_or_empty() {
        let mut c = Config::default();
        c.server.metrics_token = "short".into();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["server.metrics_token"]);
        c.server.metrics_token = "0123456789abcdef".into();
        assert!(c.validate().is_empty());
    }

    #[test]
    fn the_extension_is_letters_and_digits() {
        let mut c = Config::default();
        for bad in ["", ".slp", "s*", "slp'; rm", "a".repeat(17).as_str()] {
            c.machine.extension = bad.into();
            let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
            assert_eq!(keys, vec!["machine.extension"], "{bad}");
        }
        c.machine.extension = "h5".into();
        assert!(c.validate().is_empty());
    }

    #[test]
    fn the_download_caps_are_at_least_one_mib() {
        let mut c = Config::default();
        c.machine.export_max_mb_per_vm = 0;
        c.machine.export_max_total_mb = 0;
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "machine.export_max_mb_per_vm",
                "machine.export_max_total_mb"
            ]
        );
        c.machine.export_max_mb_per_vm = 1;
        c.machine.export_max_total_mb = 1;
        assert!(c.validate().is_empty());
    }

    #[test]
    fn the_software_makes_valid_vm_names() {
        let mut c = Config::default();
        for bad in ["sleap_nn", "sleap.", "-sleap", "sleap nn"] {
            c.machine.software = bad.into();
            let problems = c.validate();
            let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, vec!["machine.software"], "{bad}");
            assert!(problems[0].message.contains("VMs would be named"), "{bad}");
        }
        c.machine.software = "sleap-nn".into();
        assert!(c.validate().is_empty());
    }

    #[test]
    fn tls_rules_of_the_upstream_validator() {
        let mut c = Config::default();
        c.ssl.provider = "letsencrypt".into();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["ssl.provider"]);
        c.dns.enabled = true;
        c.dns.domain = "lab.example.org".into();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["ssl.email"]);
        c.ssl.provider = "cloudflare".into();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["dns.terraform_managed"]);
        c.ssl.provider = "acme".into();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["ssl.provider"]);
    }

    #[test]
    fn the_credential_goes_into_the_environment_only_for_upstream_images_or_when_asked() {
        let mut c = Config::default();
        assert!(
            c.credential_in_environment(),
            "the default image is upstream's"
        );
        c.machine.image = "ghcr.io/talmolab/lablink-client:0.1.0".into();
        assert!(!c.credential_in_environment());
        c.machine.agent_credential = "environment".into();
        assert!(c.credential_in_environment());
        c.machine.agent_credential = "env".into();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert!(
            keys.contains(&"machine.agent_credential".to_string()),
            "{keys:?}"
        );
    }

    #[test]
    fn key_list_covers_every_upstream_section() {
        let keys = Config::keys();
        for k in [
            "db.password",
            "machine.repository",
            "app.admin_password",
            "dns.zone_id",
            "eip.strategy",
            "ssl.certificate_arn",
            "allocator.image_tag",
            "bucket_name",
            "startup_script.on_error",
            "monitoring.thresholds.max_unauthorized_calls_per_15min",
            "monitoring.budget.monthly_budget_usd",
            "monitoring.cloudtrail.retention_days",
            "server.long_poll_seconds",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing");
        }
    }
}
