//! One typed configuration: upstream-style `config.yaml` < `LABLINK_*` environment < flags.
//!
//! Every key is declared once, in the `settings!` blocks below: its field, YAML key, type,
//! default, doc comment and rule. The YAML reader, the environment reader, `lablink config
//! keys`, `lablink config reference` (the README's table) and the per-key checks of
//! `Config::validate` all come from that declaration; rules that span keys are in
//! `Config::cross_checks`.

#[macro_use]
mod keys;
mod sources;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use keys::Key;
use keys::{one_of, range, rule, text};
pub use sources::{Problem, env_name};

/// Anything visiting the configuration tree: the readers that fill it.
pub trait Visitor {
    fn string(&mut self, key: &str, slot: &mut String);
    fn opt_string(&mut self, key: &str, slot: &mut Option<String>);
    fn boolean(&mut self, key: &str, slot: &mut bool);
    fn integer(&mut self, key: &str, slot: &mut u64);
    fn section(&mut self, key: &str, visit: &mut dyn FnMut(&mut dyn Visitor));
}

settings! {
    pub struct Config {
        /// Prefix of Terraform state keys; empty: `lablink`.
        deployment_name: String = "";
        /// `dev`, `test`, `ci-test` or `prod`; the `ENVIRONMENT` variable overrides it for VM
        /// names and state keys.
        environment: String = "prod";
        /// S3 bucket of the pool's Terraform state (`provision.terraform_backend: s3`).
        bucket_name: String = "tf-state-lablink-allocator-bucket";
        section db: DbConfig;
        section machine: MachineConfig;
        section app: AppConfig;
        section dns: DnsConfig;
        section eip: EipConfig;
        section ssl: SslConfig;
        section allocator: AllocatorImageConfig;
        section startup_script: StartupScriptConfig;
        section monitoring: MonitoringConfig;
        section server: ServerConfig;
        section provision: ProvisionConfig;
        section access: AccessConfig;
        section desktop: DesktopConfig;
        section event: EventConfig;
        section waitlist: WaitlistConfig;
        section rescue: RescueConfig;
        section budget: BudgetConfig;
        section idle: IdleConfig;
        section metrics: MetricsConfig;
    }
}

settings! {
    /// PostgreSQL settings of the system we replace: accepted so old files load, then ignored.
    pub struct DbConfig {
        /// Accepted for old files, ignored (the store is redb).
        dbname: String = "lablink_db";
        /// Ignored.
        user: String = "lablink";
        /// Ignored.
        password: String = "lablink";
        /// Ignored.
        host: String = "localhost";
        /// Ignored.
        port: u64 = 5432;
        /// Ignored.
        table_name: String = "vm_table";
        /// Ignored.
        message_channel: String = "vm_updates";
    }
}

settings! {
    pub struct MachineConfig {
        /// EC2 type of client VMs (a GPU family turns on the NVIDIA runtime).
        machine_type: String = "g4dn.xlarge";
        /// Git repository for the workshop, passed to VMs.
        repository: Option<String> = None;
        /// Client container image.
        image: String = "ghcr.io/talmolab/lablink-client-base-image:latest";
        /// AMI of client VMs (Ubuntu with Docker and the NVIDIA driver).
        ami_id: String = "ami-00c257e12d6828491";
        /// The program whose process means "in use"; with `environment` it begins the VMs'
        /// host names (`sleap-lablink-client-prod-vm-1`), so letters, digits and `-`.
        software: String = "sleap";
        /// Extension of participants' files, without the dot.
        extension: String = "slp", text("1–16 letters and digits", file_extension);
        /// How the client container gets its VM's credential: `file` (a root-only file only
        /// the agent reads; LabLink's client image), `environment` (`API_TOKEN`, which the
        /// desktop user can read too; upstream's client images read only that), or `auto`
        /// (`environment` for upstream's `lablink-client-base-image`, else `file`).
        agent_credential: String = "auto", one_of(&["auto", "file", "environment"]);
        /// Most MiB of participants' files one download takes from one VM; a VM with more is
        /// skipped and named in the zip's `_lablink_report.txt`.
        export_max_mb_per_vm: u64 = 2048, range(1, 16 * 1024 * 1024);
        /// Most MiB of participants' files one download takes in all (and never more than
        /// half the free space of the data directory); the VMs after that are skipped and
        /// named in the report.
        export_max_total_mb: u64 = 20480, range(1, 16 * 1024 * 1024);
    }
}

settings! {
    pub struct AppConfig {
        /// Admin login.
        admin_user: String = "admin", text("not a placeholder", real_admin_user);
        /// Admin password; placeholders are refused. Unset: the first start generates one and
        /// writes it to a file in the data directory.
        admin_password: Option<String> = None, rule("not a placeholder", real_admin_password);
        /// AWS region of the pool.
        region: String = "us-west-2";
    }
}

settings! {
    pub struct DnsConfig {
        /// Use `dns.domain` in the URL VMs call.
        enabled: bool = false;
        /// *deployment*: a Route 53 record is created.
        terraform_managed: bool = true;
        /// The allocator's DNS name.
        domain: String = "", text("no dot at either end", no_edge_dots);
        /// *deployment*: Route 53 zone.
        zone_id: String = "";
    }
}

settings! {
    pub struct EipConfig {
        /// *deployment*: a persistent or a dynamic elastic IP.
        strategy: String = "dynamic", one_of(&["persistent", "dynamic"]);
    }
}

settings! {
    pub struct SslConfig {
        /// Anything but `none` means VMs call `https://` and cookies are `Secure`.
        // Upstream defaults to letsencrypt, which its own validator rejects without DNS;
        // plain HTTP is the only default that is valid on its own.
        provider: String = "none", one_of(&["none", "letsencrypt", "cloudflare", "acm"]);
        /// ACME account e-mail (`letsencrypt`).
        email: String = "";
        /// *deployment*: ACM certificate (`acm`).
        certificate_arn: String = "";
    }
}

settings! {
    pub struct AllocatorImageConfig {
        /// *deployment*: allocator image tag.
        image_tag: String = "linux-amd64-latest";
    }
}

settings! {
    pub struct StartupScriptConfig {
        /// Send the lab's custom startup script to every new VM.
        enabled: bool = false;
        /// That script (≤ 8 KiB, read at each launch); the agent runs it with retries before
        /// the VM is offered.
        path: String = "";
        /// What a script that never succeeds does on the VM: `continue`, or `fail` (status
        /// `error`, agent exits).
        on_error: String = "continue", one_of(&["continue", "fail"]);
    }
}

settings! {
    pub struct MonitoringConfig {
        /// *deployment*: CloudWatch alarms.
        enabled: bool = false;
        /// *deployment*: alarm e-mail.
        email: String = "";
        in thresholds {
            /// *deployment*.
            max_instances_per_5min: u64 = 10;
            /// *deployment*.
            max_terminations_per_5min: u64 = 20;
            /// *deployment*.
            max_unauthorized_calls_per_15min: u64 = 5;
        }
        in budget {
            /// *deployment*: AWS Budgets alert.
            budget_enabled as enabled: bool = false;
            /// *deployment*.
            monthly_budget_usd: u64 = 500;
        }
        in cloudtrail {
            /// *deployment*.
            cloudtrail_retention_days as retention_days: u64 = 90;
        }
    }
}

settings! {
    /// LabLink's own settings (not in upstream files).
    pub struct ServerConfig {
        /// Address and port to serve on.
        listen: String = "127.0.0.1:5000", text("address:port", listen_address);
        /// Store, token and generated files.
        data_dir: String = "./lablink-data", text("not empty", not_empty);
        /// How long `/vm_startup` holds a request before answering 408 so the agent asks
        /// again. Keep it below the idle timeout of any proxy in front (AWS ALB: 60 s).
        long_poll_seconds: u64 = 50, range(1, 3600);
        /// How often agents send a heartbeat (`POST /api/heartbeat`); they are told in its
        /// answer.
        heartbeat_seconds: u64 = 15, range(1, 300);
        /// Heartbeats an agent may miss before its VM counts as unresponsive: out of the free
        /// pool, shown with "last seen", handed to auto-reboot.
        stale_after_heartbeats: u64 = 3, range(2, 20);
        /// Per VM and log type (cloud-init, container), oldest lines dropped first.
        log_cap_bytes: u64 = 1024 * 1024, range(4096, 64 * 1024 * 1024);
        /// Newest lines of the allocator's own log kept in memory for the console's
        /// allocator log and `GET /api/allocator-log` (0: none).
        log_ring_lines: u64 = 2000, range(0, 100_000);
        /// Comma-separated addresses of reverse proxies whose `X-Forwarded-For` names the
        /// client (for the sign-in limit and the audit log).
        trusted_proxies: String = "127.0.0.1,::1", text("IP addresses", ip_addresses);
        /// Bearer token for `GET /metrics` from other machines (`Authorization: Bearer …`);
        /// empty: only loopback may scrape. A secret: never logged; prefer
        /// `LABLINK_SERVER_METRICS_TOKEN_FILE`.
        metrics_token: String = "", text("empty, or ≥ 16 characters", long_token);
        /// A client must send a complete request head within this time (also the idle limit
        /// of a kept-alive connection).
        header_timeout_seconds: u64 = 30, range(1, 3600);
        /// A request body must have arrived completely this long after its head, else 408 and
        /// the connection is closed.
        body_timeout_seconds: u64 = 60, range(1, 3600);
        /// Most connections served at once (parked `/vm_startup` long-polls count); more wait
        /// up to 1 s for a free slot, then get 503 and are closed.
        max_connections: u64 = 20_000, range(1, 1_000_000);
        /// Largest request head (request line and headers); larger ones get 431.
        // Above 256 KiB hyper's own read buffer limit (≈400 KB) would stop a head first.
        max_header_bytes: u64 = 64 * 1024, range(4096, 256 * 1024);
    }
}

settings! {
    /// How VMs are created (LabLink's own section).
    pub struct ProvisionConfig {
        /// `manual`: machines join by running `lablink agent` with the token (destroy only
        /// forgets them); `local`: VMs are `lablink agent` processes on this machine (demo,
        /// tests); `terraform`: AWS EC2 VMs from the embedded templates in
        /// `terraform/client-vm/`.
        provider: String = "manual", one_of(&["manual", "local", "terraform"]);
        /// A launch or destroy still running after this long is stopped.
        run_timeout_seconds: u64 = 3600, range(1, 86_400);
        /// Most agent processes the local provider runs at once.
        local_max_vms: u64 = 50, range(1, 1000);
        /// The `lablink` executable local agents run; empty: this one.
        local_executable: String = "";
        /// The executable VMs download and run as their agent; empty: `lablink-agent` beside
        /// this executable when there is one (the glibc build, which can load NVML), else
        /// this one.
        agent_binary: String = "";
        /// Terraform (≥ 1.6) or OpenTofu executable.
        terraform_bin: String = "terraform";
        /// The OpenSSH client used to reach Terraform VMs (reboot, participants' files).
        ssh_bin: String = "ssh";
        /// Where Terraform keeps its state: `local` (the data directory) or `s3`
        /// (`bucket_name`, under `<deployment>/<environment>/client/`).
        terraform_backend: String = "local", one_of(&["local", "s3"]);
        /// URL VMs reach the allocator at; empty: from `ALLOCATOR_FQDN`, `dns.domain` or
        /// `ALLOCATOR_PUBLIC_IP` as upstream does.
        allocator_url: String = "";
        /// Reboot failed VMs automatically (status `error`, unhealthy GPU not in use, stuck
        /// initializing or rebooting).
        auto_reboot: bool = true;
        /// Automatic reboots per VM; a VM out of attempts frees its participant to claim
        /// another VM.
        reboot_max_attempts: u64 = 3;
        /// Least time between two automatic reboots of a VM.
        reboot_cooldown_seconds: u64 = 300;
        /// How often VMs are checked for a reboot.
        reboot_check_seconds: u64 = 60;
        /// A VM still initializing this long after its status changed counts as failed.
        initializing_stale_seconds: u64 = 900;
        /// A VM still rebooting this long after the reboot counts as failed.
        rebooting_stale_seconds: u64 = 600;
    }
}

settings! {
    /// Who may claim VMs, how often, and which credentials agents may use (LabLink's own).
    pub struct AccessConfig {
        /// Also accept the shared agents' token for every VM, as upstream 0.1.2 did. Off:
        /// each VM must use its own credential (`lablink token --vm NAME`), and can act only
        /// as itself.
        shared_agent_token: bool = false;
        /// Claims per client network per minute (IPv6 per /64; a classroom shares one NAT
        /// address, so keep it generous; loopback is exempt); 0: off.
        claims_per_network_per_minute: u64 = 120;
        /// Claims (and rejoins) per e-mail address per minute; 0: off.
        claims_per_email_per_minute: u64 = 10;
        /// A code participants must enter with their e-mail; empty: none. A secret: prefer
        /// `LABLINK_ACCESS_JOIN_CODE_FILE`.
        join_code: String = "", text("empty, or ≥ 4 characters", a_join_code);
        /// Comma-separated addresses (`ada@example.org`) or domains (`@example.org`) that may
        /// claim a VM; empty: anyone.
        allowed_emails: String = "", text("addresses and @domains", email_list);
    }
}

settings! {
    /// How participants reach their desktop (LabLink's own section).
    pub struct DesktopConfig {
        /// `crd`: Chrome Remote Desktop, as upstream 0.1.2 (participants paste a code);
        /// `browser`: the VM's desktop in a browser tab at `/desktop`, relayed through the
        /// allocator (needs `lablink agent` on the VMs and a VNC server there); `both`: the
        /// participant picks.
        mode: String = "crd", one_of(&["crd", "browser", "both"]);
        /// How long opening a browser desktop waits for the VM's agent to answer.
        open_timeout_seconds: u64 = 20, range(1, 300);
        /// Seconds between two pictures of a browser seat's desktop for the seat wall
        /// (`/admin/wall`); an agent sends one only when its desktop changed, or once a
        /// minute (the agents are told in the answer to each picture).
        thumbnail_seconds: u64 = 5, range(1, 3600);
    }
}

settings! {
    /// A workshop run from this file (LabLink's own section): with a `name`, the allocator
    /// keeps `seats` plus spares running from `prewarm_minutes` before `start`, counts down
    /// to `end`, and then rescues the participants' files and destroys the pool. The
    /// console shows such an event read-only; without a name, create one in the console.
    pub struct EventConfig {
        /// The event's name; empty: no event from this file.
        name: String = "";
        /// When participants arrive (ISO 8601; without an offset, UTC).
        start: String = "", text("empty, or an ISO 8601 time", iso_time);
        /// The hard stop (ISO 8601): files rescued, then every VM destroyed.
        end: String = "", text("empty, or an ISO 8601 time", iso_time);
        /// Participants' seats.
        seats: u64 = 0, range(0, crate::model::MAX_SEATS as u64);
        /// Spare VMs on top of the seats, in percent of the seats (rounded up).
        spare_percent: u64 = 10, range(0, 100);
        /// VMs are launched this long before `start`, to be running and alive when
        /// participants arrive.
        prewarm_minutes: u64 = 60, range(0, 1440);
        /// The code participants enter during the event; empty: `access.join_code`. A
        /// secret: prefer `LABLINK_EVENT_JOIN_CODE_FILE`.
        join_code: String = "", text("empty, or ≥ 4 characters", a_join_code);
        /// Minutes before the end at which participants are warned (pushed to their page
        /// and, through the agent, to their desktop).
        warn_minutes: String = "30,10,2", text("minutes, comma-separated", countdown_marks);
    }
}

fn iso_time(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Ok(());
    }
    crate::clock::parse_time(text).map(drop)
}

fn countdown_marks(text: &str) -> Result<(), String> {
    crate::model::check_marks(&crate::model::parse_marks(text)?)
}

settings! {
    /// The queue participants join when no VM is free (LabLink's own section).
    pub struct WaitlistConfig {
        /// Offer the queue when no VM is free; whoever waits is seated in turn as VMs free up.
        enabled: bool = true;
        /// Most participants waiting at once.
        max_entries: u64 = 1000, range(1, 1_000_000);
    }
}

settings! {
    /// Participants' files saved through the agent before their seat ends (LabLink's own).
    pub struct RescueConfig {
        /// Comma-separated globs of the files to save, relative to the desktop folder (`**`
        /// crosses folders); empty: `**/*.<machine.extension>`.
        patterns: String = "", text("globs, comma-separated", glob_list);
        /// Most MiB of files one rescue saves; the files beyond are listed in the archive.
        max_mb: u64 = 500, range(1, 64 * 1024);
        /// How long a destroy or a seat's reset waits for the agent's upload.
        timeout_seconds: u64 = 300, range(1, 3600);
        /// Days a rescued archive is kept, then deleted.
        keep_days: u64 = 14, range(1, 3650);
    }
}

settings! {
    /// What the pool costs and how much it may (LabLink's own section). Prices are per VM
    /// and hour of `machine.machine_type`; the local and manual providers are priced the
    /// same, as a simulation of the real pool.
    pub struct BudgetConfig {
        /// Comma-separated `instance_type=USD_per_hour` (e.g. `g5.xlarge=1.006`) over the
        /// built-in us-east-1 On-Demand prices; a type with no price has an unknown cost.
        prices: String = "", text("type=USD, comma-separated", price_list);
        /// Most USD the current event (or, outside events, the pool) may cost: launches that
        /// would take the projection past it are refused; empty or 0: no cap.
        cap_usd: String = "", text("empty, or USD ≥ 0", usd_cap);
        /// The console warns once the projected cost reaches this percentage of the cap.
        warn_percent: u64 = 80, range(1, 100);
    }
}

fn price_list(text: &str) -> Result<(), String> {
    crate::model::budget::parse_prices(text).map(drop)
}

fn usd_cap(text: &str) -> Result<(), String> {
    crate::model::budget::parse_cap(text).map(drop)
}

settings! {
    /// Taking back seats nobody uses (LabLink's own section; off unless `reclaim_minutes`).
    pub struct IdleConfig {
        /// Minutes a seat may stay idle (no desktop open, software not running, GPU under the
        /// threshold) before it is released; 0: never.
        reclaim_minutes: u64 = 0, range(0, 24 * 60);
        /// Minutes before the release at which the participant is warned (and may say they are
        /// still there).
        warn_minutes: u64 = 5, range(0, 24 * 60);
        /// GPU utilisation (percent) under which a seat counts as idle.
        gpu_threshold_percent: u64 = 5, range(0, 100);
        /// Release idle seats only while someone waits in the queue.
        only_when_waiting: bool = true;
    }
}

settings! {
    /// Per-seat session metrics sampled by the agents (LabLink's own section).
    pub struct MetricsConfig {
        /// Seconds between two samples of a seat's GPU, software and desktop (the agents are
        /// told in the heartbeat's answer).
        sample_seconds: u64 = 15, range(1, 3600);
        /// Most points kept per seat; when full, neighbours are merged (half the resolution),
        /// so a whole day keeps its shape.
        max_samples_per_seat: u64 = 720, range(16, 100_000);
    }
}

fn glob_list(list: &str) -> Result<(), String> {
    for pattern in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if pattern.starts_with('/') || pattern.split('/').any(|part| part == "..") {
            return Err(format!(
                "`{pattern}` must stay inside the desktop folder (no leading `/`, no `..`)"
            ));
        }
        globset::Glob::new(pattern).map_err(|e| format!("`{pattern}`: {e}"))?;
    }
    Ok(())
}

fn file_extension(ext: &str) -> Result<(), String> {
    if ext.is_empty() || ext.len() > 16 || !ext.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "`{ext}` must be a file extension of letters and digits, without the dot (e.g. slp)"
        ));
    }
    Ok(())
}

fn real_admin_user(user: &str) -> Result<(), String> {
    if is_placeholder(user) {
        return Err("empty or still a placeholder; set the admin user name in config.yaml or LABLINK_APP_ADMIN_USER".into());
    }
    Ok(())
}

fn real_admin_password(password: &Option<String>) -> Result<(), String> {
    match password {
        Some(p) if is_placeholder(p) => Err(
            "empty or still a placeholder; set a real password in config.yaml, \
             LABLINK_APP_ADMIN_PASSWORD or LABLINK_APP_ADMIN_PASSWORD_FILE, \
             or remove the key to have one generated on first start"
                .into(),
        ),
        _ => Ok(()),
    }
}

fn no_edge_dots(domain: &str) -> Result<(), String> {
    if domain.starts_with('.') || domain.ends_with('.') {
        return Err(format!("`{domain}` must not start or end with a dot"));
    }
    Ok(())
}

fn listen_address(listen: &str) -> Result<(), String> {
    parse_listen(listen).map(drop)
}

fn not_empty(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}

fn ip_addresses(list: &str) -> Result<(), String> {
    parse_trusted_proxies(list).map(drop)
}

fn long_token(token: &str) -> Result<(), String> {
    let token = token.trim();
    if !token.is_empty() && token.len() < 16 {
        return Err("shorter than 16 characters; use a long random token (e.g. `openssl rand -hex 32`) or leave it empty".into());
    }
    Ok(())
}

fn a_join_code(code: &str) -> Result<(), String> {
    if !code.is_empty() && code.trim().chars().count() < 4 {
        return Err("use at least 4 characters, or leave it empty for no code".into());
    }
    Ok(())
}

fn email_list(list: &str) -> Result<(), String> {
    parse_allowed_emails(list).map(drop)
}

fn parse_listen(listen: &str) -> Result<SocketAddr, String> {
    listen.parse().map_err(|_| {
        format!("`{listen}` is not an address:port such as 127.0.0.1:5000 or 0.0.0.0:5000")
    })
}

fn parse_trusted_proxies(list: &str) -> Result<Vec<std::net::IpAddr>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse().map_err(|_| {
                format!("`{a}` is not an IP address (list addresses, comma-separated)")
            })
        })
        .collect()
}

fn parse_allowed_emails(list: &str) -> Result<Vec<String>, String> {
    let mut allowed = Vec::new();
    for entry in list.split(',') {
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

impl Config {
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

    /// Every key: path, variable, type, default, allowed values and meaning.
    pub fn key_table() -> Vec<Key> {
        let mut rows = Vec::new();
        Config::describe("", &mut rows);
        rows
    }

    /// Every dotted key path this config knows, for documentation and checks.
    pub fn keys() -> Vec<String> {
        Config::key_table().into_iter().map(|k| k.path).collect()
    }

    /// The README's "Configuration reference" section (Markdown, heading included).
    pub fn reference() -> String {
        keys::reference(&Config::key_table())
    }

    /// Checks values that parse but make no sense (each key's own rule, then the rules
    /// spanning keys). Every problem is returned.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.check_keys("", &mut problems);
        self.cross_checks(&mut problems);
        problems
    }

    /// The rules no single key's declaration can state.
    fn cross_checks(&self, problems: &mut Vec<Problem>) {
        let mut bad = |key: &str, message: String| {
            problems.push(Problem {
                key: key.to_owned(),
                message,
            })
        };
        if self.dns.enabled && self.dns.domain.is_empty() {
            bad(
                "dns.domain",
                "dns.enabled is true but no domain is set".into(),
            );
        }
        // Other providers are refused by ssl.provider's own rule.
        match self.ssl.provider.as_str() {
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
            _ => {}
        }
        if self.startup_script.enabled && self.startup_script.path.trim().is_empty() {
            bad(
                "startup_script.path",
                "startup_script.enabled is true: name the script to run on every new VM".into(),
            );
        }
        if !self.event.name.trim().is_empty()
            && let Err(e) = self.event_plan()
        {
            // The plan's messages begin with the field they are about.
            let field = e.split(':').next().unwrap_or("name");
            bad(&format!("event.{field}"), e);
        }
        // A destroy waits for its rescues inside the run, which is stopped at its timeout.
        if self.rescue.timeout_seconds + 60 > self.provision.run_timeout_seconds {
            bad(
                "rescue.timeout_seconds",
                format!(
                    "{} s leaves a destroy no time within provision.run_timeout_seconds ({} s): keep it at least 60 s shorter",
                    self.rescue.timeout_seconds, self.provision.run_timeout_seconds
                ),
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
        parse_listen(&self.server.listen)
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
        parse_allowed_emails(&self.access.allowed_emails)
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
        parse_trusted_proxies(&self.server.trusted_proxies)
    }

    /// Whether browsers reach the allocator over HTTPS (a TLS front configured under `ssl`,
    /// or an `https://` allocator URL): session cookies are then marked Secure.
    pub fn serves_tls(&self) -> bool {
        self.ssl.provider != "none" || self.provision.allocator_url.starts_with("https://")
    }

    /// The desktops a participant may choose from (`desktop.mode`), the default first.
    /// The event of the `event` section, if it names one.
    pub fn event_plan(&self) -> Result<Option<crate::model::EventPlan>, String> {
        let e = &self.event;
        if e.name.trim().is_empty() {
            return Ok(None);
        }
        let time = |key: &str, text: &str| {
            if text.trim().is_empty() {
                return Err(format!("{key}: required when event.name is set"));
            }
            crate::clock::parse_time(text).map_err(|why| format!("{key}: {why}"))
        };
        let plan = crate::model::EventPlan {
            name: e.name.trim().to_owned(),
            starts_at: time("start", &e.start)?,
            ends_at: time("end", &e.end)?,
            seats: u32::try_from(e.seats).unwrap_or(u32::MAX),
            spare_percent: u32::try_from(e.spare_percent).unwrap_or(u32::MAX),
            prewarm_minutes: u32::try_from(e.prewarm_minutes).unwrap_or(u32::MAX),
            join_code: e.join_code.trim().to_owned(),
            warn_minutes: crate::model::parse_marks(&e.warn_minutes)
                .map_err(|why| format!("warn_minutes: {why}"))?,
        };
        plan.check()?;
        Ok(Some(plan))
    }

    pub fn desktop_kinds(&self) -> &'static [crate::model::DesktopKind] {
        use crate::model::DesktopKind::{Browser, Crd};
        match self.desktop.mode.as_str() {
            "browser" => &[Browser],
            "both" => &[Browser, Crd],
            _ => &[Crd],
        }
    }

    pub fn desktop_open_timeout(&self) -> Duration {
        Duration::from_secs(self.desktop.open_timeout_seconds)
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

    /// The globs a rescue packs (`rescue.patterns`, or every `*.<machine.extension>`).
    pub fn rescue_patterns(&self) -> Vec<String> {
        let listed: Vec<String> = self
            .rescue
            .patterns
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if listed.is_empty() {
            vec![format!("**/*.{}", self.machine.extension)]
        } else {
            listed
        }
    }

    pub fn rescue_max_bytes(&self) -> u64 {
        self.rescue.max_mb * 1024 * 1024
    }

    pub fn rescue_timeout(&self) -> Duration {
        Duration::from_secs(self.rescue.timeout_seconds)
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
    fn every_key_in_the_table_is_read_from_its_variable() {
        let table = Config::key_table();
        let vars: Vec<(String, String)> = table
            .iter()
            .map(|k| {
                let value = match k.type_name {
                    "integer" => "7",
                    "boolean" => "true",
                    _ => "set-from-the-environment",
                };
                (k.env.clone(), value.to_owned())
            })
            .collect();
        let mut c = Config::default();
        assert_eq!(c.apply_env(&vars), vec![]);
        assert_eq!(c.server.listen, "set-from-the-environment");
        assert_eq!(c.monitoring.cloudtrail_retention_days, 7);
        assert!(c.monitoring.budget_enabled);
        assert_eq!(
            c.app.admin_password.as_deref(),
            Some("set-from-the-environment")
        );
        let mut paths: Vec<&str> = table.iter().map(|k| k.path.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), table.len(), "a key is declared twice");
    }

    #[test]
    fn the_table_shows_each_keys_default_rule_and_meaning() {
        let table = Config::key_table();
        for k in &table {
            assert!(!k.doc.is_empty() && !k.doc.contains('\n'), "{}", k.path);
        }
        let row = |path: &str| table.iter().find(|k| k.path == path).expect(path);
        let heartbeat = row("server.heartbeat_seconds");
        assert_eq!(heartbeat.type_name, "integer");
        assert_eq!(heartbeat.default, "`15`");
        assert_eq!(heartbeat.allowed, "1–300");
        assert_eq!(
            row("provision.provider").allowed,
            "`manual`, `local`, `terraform`"
        );
        assert_eq!(row("app.admin_password").default, "none");
        assert_eq!(row("dns.domain").default, "`\"\"`");
        assert_eq!(
            row("monitoring.budget.enabled").env,
            "LABLINK_MONITORING_BUDGET_ENABLED"
        );
    }

    #[test]
    fn the_terraform_backend_is_local_or_s3() {
        let mut c = Config::default();
        c.provision.terraform_backend = "S3".into();
        let problems = c.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "provision.terraform_backend");
        assert!(
            problems[0].message.contains("local, s3"),
            "{}",
            problems[0].message
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
