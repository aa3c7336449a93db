//! `lablink verify-deploy`: after a deployment, waits (bounded) for the allocator to
//! answer — its name resolves, its certificate is trusted, valid for the name and not about
//! to expire, `GET /api/health` says ok — then reads the allocator's own checks
//! (`GET /api/doctor`). Exit status 1 names each stage or check that failed; 3 and 4 as the
//! other remote commands (credentials refused, nothing answered).

use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::remote::{self, Admin, Target};
use crate::doctor::{self, Certificate, Finding, Status};
use crate::exit::{CliError, error_chain};

#[derive(Args, Debug)]
pub struct VerifyDeployArgs {
    #[command(flatten)]
    pub target: Target,
    /// How long to wait in all for the name, the certificate and the health check: 90s,
    /// 15m, 1h (a bare number is seconds).
    #[arg(long, default_value = "15m", value_parser = parse_wait, value_name = "DURATION")]
    pub timeout: Duration,
    /// Fail when the certificate ends within this many days.
    #[arg(long, default_value_t = 14, value_name = "DAYS")]
    pub cert_days: u64,
    /// Print the stages and the allocator's findings as JSON: {"url", "stages", "doctor"}.
    #[arg(long)]
    pub json: bool,
}

/// Between two tries of a stage.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// One health request.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// `GET /api/doctor`: the allocator runs Terraform and probes the network meanwhile.
const DOCTOR_TIMEOUT: Duration = Duration::from_secs(90);

fn parse_wait(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 90s, 15m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("`{text}`: the unit is s, m or h")),
    };
    if seconds == 0 {
        return Err("the timeout must be longer than 0 s".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// Why one try of a stage did not pass.
struct Miss {
    why: String,
    /// Nothing answered (no address, no connection): exit status 4 if it stays so.
    unreachable: bool,
}

impl Miss {
    fn answered(why: impl Into<String>) -> Miss {
        Miss {
            why: why.into(),
            unreachable: false,
        }
    }

    fn silent(why: impl Into<String>) -> Miss {
        Miss {
            why: why.into(),
            unreachable: true,
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    url: &'a str,
    stages: &'a [Finding],
    doctor: &'a [Finding],
}

pub fn run(args: VerifyDeployArgs) -> Result<(), CliError> {
    verify(args).map_err(|e| e.of("verify-deploy"))
}

fn verify(args: VerifyDeployArgs) -> Result<(), CliError> {
    let url = args.target.explicit_url().ok_or_else(|| {
        CliError::Usage(format!(
            "give the deployment's address: --url https://NAME (or {})",
            remote::URL_ENV
        ))
    })?;
    let base = remote::base_url(&url).map_err(CliError::Usage)?;
    let client = remote::client_for(&base, DOCTOR_TIMEOUT).map_err(CliError::Failed)?;
    // The credential first: a missing password is told now, not after the wait.
    let admin =
        Admin::with_client(client.clone(), &url, &args.target.login).map_err(CliError::Usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut stages = Vec::new();
    let mut findings = Vec::new();
    let outcome = runtime.block_on(async {
        let deadline = Instant::now() + args.timeout;
        let checks = Checks {
            base: &base,
            client: &client,
            cert_days: args.cert_days,
        };
        for stage in [Stage::Dns, Stage::Certificate, Stage::Health] {
            let (finding, failure) = checks.wait(stage, deadline, args.timeout).await;
            eprint!("{}", doctor::render_lines(std::slice::from_ref(&finding)));
            stages.push(finding);
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
        eprintln!("reading the allocator's own checks (GET /api/doctor)…");
        let answer = admin.get("/api/doctor").await.map_err(CliError::from)?;
        findings = serde_json::from_value::<Vec<Finding>>(answer).map_err(|e| {
            CliError::Failed(format!(
                "GET /api/doctor of {} did not answer the findings of `lablink doctor --json`: {e}",
                admin.base()
            ))
        })?;
        Ok(())
    });
    if args.json {
        let report = Report {
            url: admin.base(),
            stages: &stages,
            doctor: &findings,
        };
        let text = serde_json::to_string_pretty(&report).map_err(CliError::failed)?;
        println!("{text}");
    } else {
        print!("{}", doctor::render_lines(&stages));
        if !findings.is_empty() {
            println!(
                "\nthe allocator's own checks (GET {}/api/doctor):",
                admin.base()
            );
            print!("{}", doctor::render(&findings));
        }
    }
    outcome?;
    let failed: Vec<String> = findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .map(|f| format!("{} ({})", f.check, f.found))
        .collect();
    if !failed.is_empty() {
        return Err(CliError::Failed(format!(
            "{} of the allocator's checks failed: {}",
            failed.len(),
            failed.join("; ")
        )));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Stage {
    Dns,
    Certificate,
    Health,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Dns => "dns",
            Stage::Certificate => "certificate",
            Stage::Health => "health",
        }
    }
}

struct Checks<'a> {
    base: &'a reqwest::Url,
    client: &'a reqwest::Client,
    cert_days: u64,
}

impl Checks<'_> {
    fn host(&self) -> String {
        self.base.host_str().unwrap_or_default().to_owned()
    }

    /// What one try of `stage` does, for a try the deadline cut short.
    fn what(&self, stage: Stage) -> String {
        match stage {
            Stage::Dns => format!("resolving {}", self.host()),
            Stage::Certificate => format!("the TLS handshake with {}", self.base),
            Stage::Health => format!(
                "GET {}/api/health",
                self.base.as_str().trim_end_matches('/')
            ),
        }
    }

    fn fix(&self, stage: Stage) -> String {
        let host = self.host();
        match stage {
            Stage::Dns => format!(
                "point the DNS record of {host} at the allocator (`terraform output \
                 allocator_public_ip`), or wait for it to propagate"
            ),
            Stage::Certificate => format!(
                "let Caddy get a certificate for {host} (port 80 must reach the allocator; see \
                 `journalctl -u caddy` on it), or renew the one it serves"
            ),
            Stage::Health => "read the allocator's log on its box (`journalctl -u lablink`); the \
                              security group must let this machine reach it"
                .to_owned(),
        }
    }

    /// Tries `stage` until it passes or `deadline` comes; its finding and, if it failed,
    /// the error the command ends with.
    async fn wait(
        &self,
        stage: Stage,
        deadline: Instant,
        timeout: Duration,
    ) -> (Finding, Option<CliError>) {
        let name = stage.name();
        let started = Instant::now();
        let mut last: Option<Miss> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let miss = match tokio::time::timeout(left, self.try_once(stage)).await {
                Ok(Ok(Some(found))) => {
                    let found = format!("{found} ({} s)", started.elapsed().as_secs());
                    return (Finding::pass(name, found), None);
                }
                Ok(Ok(None)) => {
                    return (
                        Finding::skip(name, "plain HTTP: no certificate to check"),
                        None,
                    );
                }
                Ok(Err(miss)) => miss,
                // Cut short by the deadline: the last complete try tells more.
                Err(_) => last.take().unwrap_or_else(|| {
                    Miss::silent(format!(
                        "{} gave no answer within {} s",
                        self.what(stage),
                        timeout.as_secs()
                    ))
                }),
            };
            // Only a new reason is worth a line.
            if last.as_ref().is_none_or(|l| l.why != miss.why) {
                eprintln!("waiting for {name}: {}", miss.why);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let found = format!(
                    "stage `{name}` did not pass within {} s; last error: {}",
                    timeout.as_secs(),
                    miss.why
                );
                let error = if miss.unreachable {
                    CliError::Unreachable(found.clone())
                } else {
                    CliError::Failed(found.clone())
                };
                return (Finding::fail(name, found, self.fix(stage)), Some(error));
            }
            last = Some(miss);
            tokio::time::sleep(RETRY_EVERY.min(left)).await;
        }
    }

    /// One try: what passed, `None` for a stage that does not apply, or why not.
    async fn try_once(&self, stage: Stage) -> Result<Option<String>, Miss> {
        let host = self.host();
        let port = self.base.port_or_known_default().unwrap_or(443);
        match stage {
            Stage::Dns => match doctor::resolve(&host, port).await {
                Ok(addresses) => Ok(Some(format!("{host} resolves to {}", addresses.join(", ")))),
                Err(why) => Err(Miss::silent(format!("{host} does not resolve: {why}"))),
            },
            Stage::Certificate if self.base.scheme() == "http" => Ok(None),
            Stage::Certificate => {
                let within = Duration::from_secs(self.cert_days.saturating_mul(86_400));
                match doctor::certificate(self.base, within).await.0 {
                    Certificate::Good => Ok(Some(format!(
                        "the certificate of {host} is trusted, valid for the name and for {} \
                         days more",
                        self.cert_days
                    ))),
                    Certificate::EndsSoon(until) => Err(Miss::answered(format!(
                        "the certificate of {host} expires within {} days{}",
                        self.cert_days,
                        until.map(|u| format!(" (until {u})")).unwrap_or_default()
                    ))),
                    Certificate::Refused(why) | Certificate::NoAuthorities(why) => {
                        Err(Miss::answered(why))
                    }
                    Certificate::NoAnswer(why) => Err(Miss::silent(format!(
                        "no TLS answer from {}: {why}",
                        self.base
                    ))),
                }
            }
            Stage::Health => {
                let url = format!("{}/api/health", self.base.as_str().trim_end_matches('/'));
                let answer = self
                    .client
                    .get(&url)
                    .timeout(HEALTH_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| Miss::silent(format!("{url}: {}", error_chain(&e))))?;
                let status = answer.status();
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                if status.is_success() && body["status"] == "ok" {
                    Ok(Some(format!("{url} answers: the allocator is up")))
                } else {
                    Err(Miss::answered(format!(
                        "{url} answered HTTP {status}: {body}"
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_read_in_seconds_minutes_or_hours() {
        assert_eq!(parse_wait("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_wait("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_wait("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_wait("7"), Ok(Duration::from_secs(7)));
        assert!(parse_wait("0s").is_err());
        assert!(parse_wait("5d").is_err_and(|e| e.contains("s, m or h")));
        assert!(parse_wait("soon").is_err());
    }
}
