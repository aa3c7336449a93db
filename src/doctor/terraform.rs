//! Terraform (or OpenTofu): on the PATH, and a version the embedded templates accept.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Finding, Setup};
use crate::process::{Limits, Outcome, Stream};

/// A version as Terraform prints it (`1.9.5`, `1.10.0-beta1`); missing parts are 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Version {
    parts: [u64; 3],
    /// How many parts were written (`~>` looks at it).
    written: usize,
    pre: Option<String>,
}

impl Version {
    pub(super) fn parse(text: &str) -> Option<Version> {
        let text = text.trim().trim_start_matches('v');
        let (numbers, pre) = match text.split_once(['-', '+']) {
            Some((n, rest)) if text.as_bytes()[n.len()] == b'-' => (n, Some(rest.to_owned())),
            Some((n, _build)) => (n, None),
            None => (text, None),
        };
        let mut parts = [0u64; 3];
        let mut written = 0;
        for (i, part) in numbers.split('.').enumerate() {
            if i >= 3 {
                return None;
            }
            parts[i] = part.parse().ok()?;
            written = i + 1;
        }
        Some(Version {
            parts,
            written,
            pre,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c] = self.parts;
        write!(f, "{a}.{b}.{c}")?;
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        Ok(())
    }
}

impl Ord for Version {
    /// A pre-release comes before its release.
    fn cmp(&self, other: &Version) -> Ordering {
        self.parts
            .cmp(&other.parts)
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A `required_version` constraint: comma-separated `op version` terms, all of which must
/// hold (`>= 1.6, < 2.0`, `~> 1.6`).
#[derive(Debug)]
pub(super) struct Constraint {
    text: String,
    terms: Vec<(String, Version)>,
}

impl Constraint {
    pub(super) fn parse(text: &str) -> Result<Constraint, String> {
        let mut terms = Vec::new();
        for term in text.split(',') {
            let term = term.trim();
            let split = term
                .find(|c: char| c.is_ascii_digit() || c == 'v')
                .ok_or_else(|| format!("`{term}` names no version"))?;
            let (op, version) = term.split_at(split);
            let op = match op.trim() {
                "" => "=",
                op @ (">=" | ">" | "<=" | "<" | "=" | "!=" | "~>") => op,
                other => return Err(format!("unknown operator `{other}` in `{text}`")),
            };
            let version =
                Version::parse(version).ok_or_else(|| format!("`{version}` is not a version"))?;
            terms.push((op.to_owned(), version));
        }
        Ok(Constraint {
            text: text.trim().to_owned(),
            terms,
        })
    }

    pub(super) fn allows(&self, v: &Version) -> bool {
        self.terms.iter().all(|(op, c)| match op.as_str() {
            ">=" => v >= c,
            ">" => v > c,
            "<=" => v <= c,
            "<" => v < c,
            "!=" => v != c,
            // `~> 1.6` allows 1.6 up to (not including) 2.0; `~> 1.6.2` up to 1.7.0: all
            // parts but the last written one stay as they are.
            "~>" => {
                let fixed = c.written.saturating_sub(1);
                v >= c && v.parts[..fixed] == c.parts[..fixed]
            }
            _ => v.parts == c.parts && v.pre == c.pre,
        })
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The `required_version` of the embedded client-VM templates.
pub(super) fn required_version() -> Result<Constraint, String> {
    let templates = crate::provision::terraform::templates();
    let text = templates
        .iter()
        .filter(|(name, _)| name.ends_with(".tf"))
        .find_map(|(_, data)| {
            let text = String::from_utf8_lossy(data);
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with("required_version"))?;
            let quoted = line.split('"').nth(1)?;
            Some(quoted.to_owned())
        })
        .ok_or("the embedded templates name no required_version")?;
    Constraint::parse(&text)
}

/// `name` as the shell would find it: a path as it is, else the first executable file of
/// that name in `path` (the `PATH` variable).
pub(super) fn find_program(name: &str, path: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

/// What `BIN version -json` says (`terraform_version`, which OpenTofu prints too).
async fn installed_version(bin: &Path) -> Result<Version, String> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["version", "-json"])
        // `version` would otherwise ask HashiCorp whether a newer release exists.
        .env("CHECKPOINT_DISABLE", "1");
    let mut out = String::new();
    let mut err = String::new();
    let limits = Limits {
        timeout: Duration::from_secs(10),
        grace: Duration::from_secs(1),
    };
    let outcome = crate::process::run(cmd, None, limits, &CancellationToken::new(), |s, l| {
        let to = if s == Stream::Stdout {
            &mut out
        } else {
            &mut err
        };
        to.push_str(&l);
        to.push('\n');
    })
    .await
    .map_err(|e| format!("cannot run it: {e}"))?;
    match outcome {
        Outcome::Exited(status) if status.success() => {}
        Outcome::Exited(status) => {
            return Err(format!(
                "`version -json` exited with {status}: {}",
                err.trim()
            ));
        }
        Outcome::TimedOut | Outcome::Cancelled => {
            return Err("`version -json` did not answer within 10 s".into());
        }
    }
    let json: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| format!("`version -json` printed no JSON ({e}): {}", out.trim()))?;
    json["terraform_version"]
        .as_str()
        .and_then(Version::parse)
        .ok_or_else(|| format!("`version -json` names no terraform_version: {}", out.trim()))
}

pub async fn check(setup: &Setup) -> Finding {
    let config = &setup.config;
    if config.provision.provider != "terraform" {
        return Finding::skip(
            "terraform",
            format!(
                "provision.provider is {}: Terraform is not used",
                config.provision.provider
            ),
        );
    }
    let required = match required_version() {
        Ok(r) => r,
        Err(e) => {
            return Finding::fail(
                "terraform",
                e,
                "this build of lablink is broken: reinstall it",
            );
        }
    };
    let install =
        format!("install Terraform or OpenTofu ({required}) and set provision.terraform_bin to it");
    let configured = config.provision.terraform_bin.trim();
    let path = setup.var("PATH");
    let Some(bin) = find_program(configured, path.as_deref()) else {
        if configured == "terraform"
            && let Some(tofu) = find_program("tofu", path.as_deref())
        {
            return Finding::fail(
                "terraform",
                format!(
                    "`terraform` is not on the PATH; OpenTofu is, at {}",
                    tofu.display()
                ),
                format!("set provision.terraform_bin: {}", tofu.display()),
            );
        }
        return Finding::fail(
            "terraform",
            format!("provision.terraform_bin `{configured}` is not found (nor on the PATH)"),
            install,
        );
    };
    let name = match bin.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.starts_with("tofu") => "OpenTofu",
        _ => "Terraform",
    };
    match installed_version(&bin).await {
        Err(e) => Finding::fail("terraform", format!("{}: {e}", bin.display()), install),
        Ok(version) if !required.allows(&version) => Finding::fail(
            "terraform",
            format!(
                "{name} {version} at {} is outside the templates' required_version `{required}`",
                bin.display()
            ),
            install,
        ),
        Ok(version) => Finding::pass(
            "terraform",
            format!(
                "{name} {version} at {} (the templates need `{required}`)",
                bin.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).expect(text)
    }

    fn allows(constraint: &str, version: &str) -> bool {
        Constraint::parse(constraint)
            .expect(constraint)
            .allows(&v(version))
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(v("v1.9.5").to_string(), "1.9.5");
        assert_eq!(v("1.6").to_string(), "1.6.0");
        assert!(v("1.10.0") > v("1.9.9"));
        assert!(v("1.10.0-beta1") < v("1.10.0"));
        assert!(v("1.10.0-beta1") > v("1.9.0"));
        assert_eq!(v("1.7.0+local"), v("1.7.0"));
        assert!(Version::parse("one.two").is_none());
        assert!(Version::parse("1.2.3.4").is_none());
    }

    #[test]
    fn ranges_are_checked_term_by_term() {
        let c = ">= 1.6, < 2.0";
        assert!(allows(c, "1.6.0"));
        assert!(allows(c, "1.9.5"));
        assert!(!allows(c, "1.5.7"));
        assert!(!allows(c, "2.0.0"));
        assert!(allows("> 1.6, != 1.7.1, <= 1.8", "1.8.0"));
        assert!(!allows("> 1.6, != 1.7.1, <= 1.8", "1.7.1"));
        assert!(!allows("> 1.6", "1.6.0"));
        assert!(allows("1.6.2", "1.6.2"));
        assert!(!allows("= 1.6.2", "1.6.3"));
    }

    #[test]
    fn pessimistic_constraint_keeps_all_but_the_last_part() {
        assert!(allows("~> 1.6", "1.6.0"));
        assert!(allows("~> 1.6", "1.99.0"));
        assert!(!allows("~> 1.6", "2.0.0"));
        assert!(!allows("~> 1.6", "1.5.9"));
        assert!(allows("~> 1.6.2", "1.6.9"));
        assert!(!allows("~> 1.6.2", "1.7.0"));
        assert!(!allows("~> 1.6.2", "1.6.1"));
    }

    #[test]
    fn bad_constraints_are_refused() {
        assert!(Constraint::parse("=> 1.6").is_err());
        assert!(Constraint::parse(">= ").is_err());
    }

    #[test]
    fn the_embedded_templates_have_a_readable_constraint() {
        let c = required_version().expect("required_version");
        assert!(c.allows(&v("1.9.0")), "{c}");
        assert!(!c.allows(&v("1.0.0")), "{c}");
    }

    #[test]
    fn programs_are_found_on_the_path_or_by_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("tofu");
        std::fs::write(&bin, "#!/bin/sh\n").expect("write");
        let path = Some(dir.path().to_str().expect("utf-8"));
        assert_eq!(find_program("tofu", path), None, "not executable yet");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(find_program("tofu", path), Some(bin.clone()));
        assert_eq!(
            find_program(bin.to_str().expect("utf-8"), None),
            Some(bin.clone())
        );
        assert_eq!(find_program("terraform", path), None);
        assert_eq!(find_program("tofu", None), None);
    }
}
