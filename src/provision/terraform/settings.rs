//! What a Terraform run takes from the configuration and the environment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Config;
use crate::download::AgentBuild;
use crate::vm_identity::Identities;

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
    pub allocator_url: Option<String>,
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
/// None when none of them is set.
pub fn allocator_url(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if !config.provision.allocator_url.is_empty() {
        return Some(
            config
                .provision
                .allocator_url
                .trim_end_matches('/')
                .to_owned(),
        );
    }
    if let Some(fqdn) = env("ALLOCATOR_FQDN").filter(|v| !v.is_empty()) {
        let fqdn = fqdn.trim_end_matches('/');
        return Some(if fqdn.contains("://") {
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
        return Some(format!(
            "{scheme}://{}",
            config.dns.domain.trim_start_matches('.')
        ));
    }
    env("ALLOCATOR_PUBLIC_IP")
        .filter(|v| !v.is_empty())
        .map(|ip| format!("{scheme}://{ip}"))
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
        vars.insert("deployment".into(), json!(deployment));
        vars.insert("environment".into(), json!(environment));
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
        assert!(allocator_url(&c, &none).is_none());
        let ip = |k: &str| (k == "ALLOCATOR_PUBLIC_IP").then(|| "203.0.113.7".to_owned());
        assert_eq!(
            allocator_url(&c, &ip).as_deref(),
            Some("http://203.0.113.7")
        );
        c.dns.enabled = true;
        c.dns.domain = ".lab.example.org".into();
        c.ssl.provider = "letsencrypt".into();
        assert_eq!(
            allocator_url(&c, &ip).as_deref(),
            Some("https://lab.example.org")
        );
        let fqdn = |k: &str| (k == "ALLOCATOR_FQDN").then(|| "lablink.example.org".to_owned());
        assert_eq!(
            allocator_url(&c, &fqdn).as_deref(),
            Some("http://lablink.example.org")
        );
        c.provision.allocator_url = "https://x.example/".into();
        assert_eq!(
            allocator_url(&c, &fqdn).as_deref(),
            Some("https://x.example")
        );
    }

    #[test]
    fn ssh_is_limited_to_the_allocator_when_its_address_is_known() {
        let ip = |k: &str| (k == "ALLOCATOR_PUBLIC_IP").then(|| " 203.0.113.7 ".to_owned());
        assert_eq!(ssh_sources(&ip), ["203.0.113.7/32"]);
        let garbage = |k: &str| (k == "ALLOCATOR_PUBLIC_IP").then(|| "lab.example.org".to_owned());
        assert_eq!(ssh_sources(&garbage), ["0.0.0.0/0"]);
        assert_eq!(ssh_sources(&|_| None), ["0.0.0.0/0"]);
    }
}
