//! `lablink doctor`: checks of an allocator box before a workshop. Each check says what it
//! found and, when something is wrong, how to fix it; nothing here changes the setup (the
//! store is only opened read-only, the data directory only probed with a file removed at
//! once).
//!
//! Every network probe is bounded by a short timeout and goes only where the configuration
//! (or a standard AWS variable such as `AWS_EC2_METADATA_SERVICE_ENDPOINT`) points it.

mod aws;
mod local;
mod net;
mod terraform;

pub use net::{Certificate, RENEW_WITHIN, certificate, resolve};

use std::borrow::Cow;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// The check does not apply to this setup (no Terraform with the manual provider…).
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// What one check found (also as `GET /api/doctor` answers it, read back by
/// `lablink verify-deploy`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    pub check: Cow<'static, str>,
    pub status: Status,
    pub found: String,
    /// A command to run or a key to set; only with WARN and FAIL.
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(check: &'static str, found: impl Into<String>) -> Finding {
        Finding {
            check: Cow::Borrowed(check),
            status: Status::Pass,
            found: found.into(),
            fix: None,
        }
    }

    pub fn skip(check: &'static str, found: impl Into<String>) -> Finding {
        Finding {
            check: Cow::Borrowed(check),
            status: Status::Skip,
            found: found.into(),
            fix: None,
        }
    }

    pub fn warn(check: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check: Cow::Borrowed(check),
            status: Status::Warn,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(check: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check: Cow::Borrowed(check),
            status: Status::Fail,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What the checks look at.
pub struct Setup {
    /// The configuration as `lablink serve` would load it (file, environment, flags),
    /// problems included.
    pub config: Config,
    /// The file it came from, if any.
    pub config_file: Option<PathBuf>,
    /// What is wrong with it (`config check`'s list).
    pub config_problems: Vec<String>,
    /// This process's environment (AWS variables, `PATH`, `HOME`, `ALLOCATOR_FQDN`…).
    pub env: Vec<(String, String)>,
    /// Free MiB on the data directory's filesystem under which the check fails.
    pub min_free_mb: u64,
    /// Checked instead of the URL made of `dns.domain`.
    pub public_url: Option<String>,
    /// The checks run inside the allocator itself (`GET /api/doctor`): the store check,
    /// which opens the store beside a running allocator, is left out.
    pub inside_allocator: bool,
}

/// Free MiB on the data directory's filesystem under which `free_space` fails, unless told.
pub const DEFAULT_MIN_FREE_MB: u64 = 256;

impl Setup {
    fn var(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.trim().is_empty())
    }
}

/// Runs every check, in the order a reader fixes them: configuration and disk first, then
/// the tools and credentials, then the network.
pub async fn examine(setup: &Setup) -> Vec<Finding> {
    let mut findings = vec![local::config(setup)];
    findings.extend(local::data_dir(setup));
    findings.push(local::free_space(setup));
    if !setup.inside_allocator {
        findings.push(local::store(setup));
    }
    findings.push(terraform::check(setup).await);
    findings.push(aws::credentials(setup).await);
    let (public, allocator, cloud, ntp) = tokio::join!(
        net::public_url(setup),
        net::allocator_url(setup),
        net::cloud_date(setup),
        net::ntp_synchronized()
    );
    let (public, public_date) = public;
    let (allocator, allocator_date) = allocator;
    findings.push(public);
    findings.push(allocator);
    findings.push(net::clock(cloud, ntp, [public_date, allocator_date]));
    findings.push(local::exposure(setup));
    findings
}

/// The one finding when the config file cannot be read at all (missing, not YAML).
pub fn unreadable_config(problems: &[String]) -> Finding {
    Finding::fail(
        "config",
        problems.join("; "),
        "name a readable YAML file (--config, LABLINK_CONFIG); the other checks need it",
    )
}

/// The lines people read, then how many of each status.
pub fn render(findings: &[Finding]) -> String {
    let mut out = render_lines(findings);
    out.push_str(&summary(findings));
    out.push('\n');
    out
}

/// Status, check, what was found, and the fix indented below.
pub fn render_lines(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "{}  {:<17} {}\n",
            f.status.label(),
            f.check,
            f.found
        ));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("      fix: {fix}\n"));
        }
    }
    out
}

/// `1 FAIL, 0 WARN, 7 PASS, 1 SKIP`.
pub fn summary(findings: &[Finding]) -> String {
    let count = |s: Status| findings.iter().filter(|f| f.status == s).count();
    format!(
        "{} FAIL, {} WARN, {} PASS, {} SKIP",
        count(Status::Fail),
        count(Status::Warn),
        count(Status::Pass),
        count(Status::Skip)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_are_printed_under_their_line() {
        let text = render(&[
            Finding::pass("config", "no problems"),
            Finding::fail("exposure", "anyone can take a seat", "set access.join_code"),
        ]);
        assert_eq!(
            text,
            "PASS  config            no problems\n\
             FAIL  exposure          anyone can take a seat\n      fix: set access.join_code\n\
             1 FAIL, 0 WARN, 1 PASS, 0 SKIP\n"
        );
    }

    #[test]
    fn json_names_the_status_in_capitals() {
        let json = serde_json::to_value(Finding::warn("clock", "6 s ahead", "sync")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"check": "clock", "status": "WARN", "found": "6 s ahead", "fix": "sync"})
        );
    }
}
