//! The folder Terraform runs in: the embedded templates, written to a folder named after
//! their version, the backend choice, and each run's variables file.

use std::path::{Path, PathBuf};

use rust_embed::RustEmbed;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::settings::Backend;
use super::{ProviderError, Terraform};

#[derive(RustEmbed)]
#[folder = "terraform/client-vm/"]
struct ClientVmTemplates;

pub(super) const VARS_FILE: &str = "lablink.tfvars.json";

/// EC2 refuses user data over 16 KiB; the boot script around it needs the rest.
const MAX_STARTUP_SCRIPT_BYTES: usize = 8 * 1024;

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
fn check_value(key: &str, value: &str) -> Result<(), ProviderError> {
    if value
        .chars()
        .any(|c| c == '\'' || c == '\\' || c.is_control())
    {
        return Err(ProviderError::Config {
            key: key.to_owned(),
            problem: format!(
                "quotes, backslashes and control characters are not allowed in `{value}`"
            ),
        });
    }
    Ok(())
}

impl Terraform {
    pub(super) fn workdir(&self) -> PathBuf {
        self.settings
            .root
            .join(format!("client-vm-{}", template_version()))
    }

    /// Writes the templates (and the backend choice) into the versioned folder.
    pub(super) fn prepare(&self) -> Result<PathBuf, ProviderError> {
        let dir = self.workdir();
        let create = |dir: &Path| {
            std::fs::create_dir_all(dir).map_err(ProviderError::io("create the folder", dir))
        };
        let write = |path: PathBuf, data: &[u8]| {
            std::fs::write(&path, data).map_err(ProviderError::io("write the template", path))
        };
        create(&dir)?;
        create(&self.settings.root.join("plugin-cache"))?;
        for (name, data) in templates() {
            write(dir.join(&name), &data)?;
        }
        let backend = match &self.settings.backend {
            Backend::Local { path } => {
                if let Some(parent) = path.parent() {
                    create(parent)?;
                }
                "local"
            }
            Backend::S3 { .. } => "s3",
        };
        write(
            dir.join("backend.tf"),
            format!("terraform {{\n  backend \"{backend}\" {{}}\n}}\n").as_bytes(),
        )?;
        Ok(dir)
    }

    /// The custom startup script, base64, or "" when there is none.
    async fn startup_script_b64(&self) -> Result<String, ProviderError> {
        let Some(path) = &self.settings.startup_script else {
            return Ok(String::new());
        };
        let key = "startup_script.path".to_owned();
        let script = tokio::fs::read(path)
            .await
            .map_err(|e| ProviderError::Config {
                key: key.clone(),
                problem: format!("cannot read {}: {e}", path.display()),
            })?;
        if script.len() > MAX_STARTUP_SCRIPT_BYTES {
            return Err(ProviderError::Config {
                key,
                problem: format!(
                    "{} has {} bytes; at most {MAX_STARTUP_SCRIPT_BYTES} fit in a VM's boot data \
                     (let the script download anything larger)",
                    path.display(),
                    script.len()
                ),
            });
        }
        use base64::Engine;
        Ok(base64::engine::general_purpose::STANDARD.encode(script))
    }

    /// Writes the variables of a run over the VMs `indices`, of which `fresh` are made by
    /// it (mode 0600: they hold the VMs' credentials).
    pub(super) async fn write_vars(
        &self,
        dir: &Path,
        indices: &[u64],
        fresh: &[u64],
    ) -> Result<(), ProviderError> {
        let url = self
            .settings
            .allocator_url
            .clone()
            .ok_or(ProviderError::NoAllocatorUrl)?;
        let checksum = self
            .settings
            .agent_build
            .sha256()
            .await
            .map_err(ProviderError::AgentChecksum)?;
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
            .map_err(|source| ProviderError::Identities {
                hosts: made.clone(),
                source,
            })?;
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
        crate::secret_file::write(&dir.join(VARS_FILE), &text)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
