//! The network checks: the public URL's name and certificate, the allocator URL VMs are
//! given, and this clock against the `Date` of a server that answered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::{Finding, Setup};
use crate::exit::error_chain;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A certificate that ends sooner than this is worth a warning.
pub const RENEW_WITHIN: Duration = Duration::from_secs(14 * 24 * 3600);
const SKEW_WARN_SECONDS: f64 = 5.0;
const SKEW_FAIL_SECONDS: f64 = 60.0;

/// How far this clock is from a server's, measured from one answer.
pub struct Reference {
    source: String,
    /// Seconds this clock is ahead (negative: behind).
    ahead: f64,
}

/// `Date` has whole seconds: compare the middle of that second with the middle of the
/// request.
fn reference(
    source: String,
    headers: &reqwest::header::HeaderMap,
    sent: SystemTime,
) -> Option<Reference> {
    let received = SystemTime::now();
    let date = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    let date = httpdate::parse_http_date(date).ok()?;
    let seconds = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let middle = (seconds(sent) + seconds(received)) / 2.0;
    Some(Reference {
        source,
        ahead: middle - (seconds(date) + 0.5),
    })
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| error_chain(&e))
}

/// What a certificate check saw during the handshake.
#[derive(Debug, Clone)]
struct Seen {
    end_entity: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    name: ServerName<'static>,
    verdict: Result<(), rustls::Error>,
}

/// The usual verification (this host's trusted CAs), keeping the chain and the verdict so
/// they can be told apart from other failures and checked again at a later time.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<Seen>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(Seen {
                end_entity: end_entity.clone().into_owned(),
                intermediates: intermediates
                    .iter()
                    .map(|c| c.clone().into_owned())
                    .collect(),
                name: server_name.to_owned(),
                verdict: verdict.as_ref().map(drop).map_err(Clone::clone),
            });
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn recording_client() -> Result<(reqwest::Client, Arc<Recording>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("this host trusts no certificate authority ({e})"))?;
    let recording = Arc::new(Recording {
        inner,
        seen: Mutex::new(None),
    });
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recording.clone())
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| error_chain(&e))?;
    Ok((http, recording))
}

fn date_of(time: UnixTime) -> String {
    i64::try_from(time.as_secs())
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || "?".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

/// A certificate error in words a reader can act on.
fn explain(e: &rustls::Error, host: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "the certificate of {host} is not trusted: its issuer is unknown here \
                 (self-signed, or a CA this host does not trust)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the certificate is not valid for {host}")
            }
            CertificateError::Expired => format!("the certificate of {host} has expired"),
            CertificateError::ExpiredContext { not_after, .. } => format!(
                "the certificate of {host} expired on {}",
                date_of(*not_after)
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("the certificate of {host} is not valid yet (or this clock is behind)")
            }
            other => format!("the certificate of {host} is refused: {other:?}"),
        },
        other => format!("the certificate of {host} is refused: {other}"),
    }
}

/// The public URL: `--public-url`, else `dns.domain` (https unless `ssl.provider` is none).
fn public_url_of(setup: &Setup) -> Option<String> {
    if let Some(url) = &setup.public_url {
        return Some(url.clone());
    }
    let c = &setup.config;
    if !c.dns.enabled || c.dns.domain.trim().is_empty() {
        return None;
    }
    let scheme = if c.ssl.provider == "none" {
        "http"
    } else {
        "https"
    };
    Some(format!(
        "{scheme}://{}",
        c.dns.domain.trim().trim_start_matches('.')
    ))
}

/// The addresses `host` resolves to (bounded), or why it does not resolve.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<String>, String> {
    // RFC 6761: names under .invalid never resolve; nobody need be asked.
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == "invalid" || name.ends_with(".invalid") {
        return Err("names under .invalid never resolve".to_owned());
    }
    let lookup = tokio::net::lookup_host((host.trim_matches(['[', ']']), port));
    match tokio::time::timeout(REQUEST_TIMEOUT, lookup).await {
        Ok(Ok(found)) => {
            let mut addresses: Vec<String> = found.map(|a| a.ip().to_string()).collect();
            addresses.dedup();
            if addresses.is_empty() {
                Err("it has no address".to_owned())
            } else {
                Ok(addresses)
            }
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
    }
}

/// What the certificate of an https URL is worth.
#[derive(Debug)]
pub enum Certificate {
    /// Trusted, valid for the name now and for the time asked.
    Good,
    /// Trusted and valid now, but it ends within the time asked (on this date, if known).
    EndsSoon(Option<String>),
    /// Refused, in words a reader can act on.
    Refused(String),
    /// No TLS answer at all (nothing listens, the handshake broke off).
    NoAnswer(String),
    /// This host cannot check certificates at all.
    NoAuthorities(String),
}

/// The certificate `url` (https) presents, checked against this host's trusted CAs
/// (`SSL_CERT_FILE` names others), for its name and for `renew_within` more; with the
/// answer's `Date`, for the clock.
pub async fn certificate(
    url: &url::Url,
    renew_within: Duration,
) -> (Certificate, Option<Reference>) {
    let host = url.host_str().unwrap_or_default().to_owned();
    let (http, recording) = match recording_client() {
        Ok(pair) => pair,
        Err(e) => return (Certificate::NoAuthorities(e), None),
    };
    let sent = SystemTime::now();
    let answer = http.get(url.clone()).send().await;
    let seen = recording.seen.lock().ok().and_then(|s| s.clone());
    let seen = match (seen, &answer) {
        (Some(seen), _) => seen,
        (None, Ok(_)) => {
            return (
                Certificate::Refused(format!("{url} answered without a certificate check")),
                None,
            );
        }
        (None, Err(e)) => return (Certificate::NoAnswer(error_chain(e)), None),
    };
    if let Err(e) = &seen.verdict {
        return (Certificate::Refused(explain(e, &host)), None);
    }
    let date = answer
        .as_ref()
        .ok()
        .and_then(|a| reference(url.to_string(), a.headers(), sent));
    let later = SystemTime::now() + renew_within;
    let later = UnixTime::since_unix_epoch(later.duration_since(UNIX_EPOCH).unwrap_or_default());
    let then = recording.inner.verify_server_cert(
        &seen.end_entity,
        &seen.intermediates,
        &seen.name,
        &[],
        later,
    );
    let verdict = match then {
        Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            not_after,
            ..
        })) => Certificate::EndsSoon(Some(date_of(not_after))),
        Err(rustls::Error::InvalidCertificate(CertificateError::Expired)) => {
            Certificate::EndsSoon(None)
        }
        _ => Certificate::Good,
    };
    (verdict, date)
}

/// The public URL's name resolves and, over https, its certificate is valid, trusted and
/// not about to expire.
pub async fn public_url(setup: &Setup) -> (Finding, Option<Reference>) {
    let check = "public_url";
    let Some(text) = public_url_of(setup) else {
        return (
            Finding::skip(check, "dns.enabled is false: no public name to check"),
            None,
        );
    };
    let url = match url::Url::parse(&text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => {
            return (
                Finding::fail(
                    check,
                    format!("`{text}` is not an http(s) URL"),
                    "set dns.domain to a name like lablink.example.org",
                ),
                None,
            );
        }
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses = match resolve(&host, port).await {
        Ok(a) => a.join(", "),
        Err(why) => {
            return (
                Finding::fail(
                    check,
                    format!("{host} does not resolve: {why}"),
                    format!(
                        "create an A record for {host} pointing at this allocator \
                         (dns.terraform_managed: true creates it in the Route 53 zone dns.zone_id)"
                    ),
                ),
                None,
            );
        }
    };
    if url.scheme() == "http" {
        let sent = SystemTime::now();
        return match client() {
            Ok(http) => match http.get(url.clone()).send().await {
                Ok(answer) => (
                    Finding::pass(
                        check,
                        format!("{host} resolves to {addresses}; {url} answers"),
                    ),
                    reference(url.to_string(), answer.headers(), sent),
                ),
                Err(e) => (
                    Finding::warn(
                        check,
                        format!(
                            "{host} resolves to {addresses}, but {url} does not answer: {}",
                            error_chain(&e)
                        ),
                        format!("open port {port} to this host (security group, firewall)"),
                    ),
                    None,
                ),
            },
            Err(e) => (Finding::fail(check, e, "report this as a bug"), None),
        };
    }
    let cert_fix = format!(
        "serve a certificate for {host} from a trusted CA (ssl.provider: letsencrypt gets and \
         renews one; port 80 must reach this host)"
    );
    let days = RENEW_WITHIN.as_secs() / 86_400;
    let (verdict, date) = certificate(&url, RENEW_WITHIN).await;
    let finding = match verdict {
        Certificate::Good => Finding::pass(
            check,
            format!(
                "{host} resolves to {addresses}; its certificate is trusted, valid for the name and \
                 for {days} days more"
            ),
        ),
        Certificate::EndsSoon(until) => Finding::warn(
            check,
            format!(
                "the certificate of {host} is valid but expires within {days} days{}",
                until.map(|u| format!(" (until {u})")).unwrap_or_default()
            ),
            "renew it (letsencrypt renews by itself when port 80 reaches this host; \
             otherwise replace it)",
        ),
        Certificate::Refused(why) => Finding::fail(check, why, cert_fix),
        Certificate::NoAnswer(why) => Finding::fail(
            check,
            format!("{host} resolves to {addresses}, but no TLS answer from {url}: {why}"),
            format!("check the TLS front (Caddy, the load balancer) listens on port {port}"),
        ),
        Certificate::NoAuthorities(why) => Finding::fail(
            check,
            why,
            "install the CA certificates (`apt install ca-certificates`)",
        ),
    };
    (finding, date)
}

/// The URL VMs are given: `provision.allocator_url`, for Terraform upstream's rule
/// (`ALLOCATOR_FQDN`, `dns.domain`, `ALLOCATOR_PUBLIC_IP`), else where `serve` listens.
fn allocator_url_of(setup: &Setup) -> Result<String, Finding> {
    let c = &setup.config;
    if !c.provision.allocator_url.trim().is_empty() {
        return Ok(c
            .provision
            .allocator_url
            .trim()
            .trim_end_matches('/')
            .to_owned());
    }
    if c.provision.provider == "terraform" {
        let env = |name: &str| setup.var(name);
        return crate::provision::terraform::allocator_url(c, &env).ok_or_else(|| {
            Finding::fail(
                "allocator_url",
                "VMs would not know where to reach the allocator: no provision.allocator_url, \
                 dns.domain, ALLOCATOR_FQDN or ALLOCATOR_PUBLIC_IP",
                "set provision.allocator_url to the URL VMs reach this allocator at",
            )
        });
    }
    let addr = c.listen_addr().map_err(|e| {
        Finding::fail(
            "allocator_url",
            format!("server.listen `{}`: {e}", c.server.listen),
            "set server.listen to address:port",
        )
    })?;
    // As `serve` does for local agents: an all-addresses listener is reached on loopback.
    let host = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    };
    Ok(format!("http://{host}"))
}

/// `GET <allocator URL>/api/health` from this host.
pub async fn allocator_url(setup: &Setup) -> (Finding, Option<Reference>) {
    let check = "allocator_url";
    let base = match allocator_url_of(setup) {
        Ok(b) => b,
        Err(finding) => return (finding, None),
    };
    let url = format!("{base}/api/health");
    let http = match client() {
        Ok(h) => h,
        Err(e) => return (Finding::fail(check, e, "report this as a bug"), None),
    };
    let sent = SystemTime::now();
    let answer = match http.get(&url).send().await {
        Ok(a) => a,
        Err(e) => {
            return (
                Finding::fail(
                    check,
                    format!("{url} does not answer: {}", error_chain(&e)),
                    "start the allocator (`systemctl start lablink`) and make sure VMs can reach \
                     this URL; or correct provision.allocator_url",
                ),
                None,
            );
        }
    };
    let date = reference(base.clone(), answer.headers(), sent);
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    let is_lablink = body.get("status").is_some_and(serde_json::Value::is_string)
        && body.get("checks").is_some_and(serde_json::Value::is_object);
    let finding = if !is_lablink {
        Finding::warn(
            check,
            format!("{url} answers HTTP {status}, but not as a LabLink allocator"),
            "point provision.allocator_url at this allocator (not another service or a proxy's page)",
        )
    } else if status.is_success() && body["status"] == "ok" {
        Finding::pass(check, format!("{url} answers: the allocator is up"))
    } else {
        Finding::fail(
            check,
            format!("{url} answers HTTP {status}: the allocator is unhealthy ({body})"),
            "read the allocator's log (`journalctl -u lablink`)",
        )
    };
    (finding, date)
}

/// The `Date` of the cloud's endpoint (Terraform provider only): the clock AWS signatures
/// are checked against. `AWS_ENDPOINT_URL_STS` or `AWS_ENDPOINT_URL` point it elsewhere.
pub async fn cloud_date(setup: &Setup) -> Option<Reference> {
    if setup.config.provision.provider != "terraform" {
        return None;
    }
    let url = setup
        .var("AWS_ENDPOINT_URL_STS")
        .or_else(|| setup.var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com/", setup.config.app.region));
    let sent = SystemTime::now();
    let answer = client().ok()?.get(&url).send().await.ok()?;
    reference(url, answer.headers(), sent)
}

/// Whether the kernel's clock is synchronised by NTP, as `timedatectl` says (`None`: no
/// systemd to ask).
pub async fn ntp_synchronized() -> Option<bool> {
    let run = tokio::process::Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(REQUEST_TIMEOUT, run)
        .await
        .ok()?
        .ok()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// This clock against an independent reference: the cloud's endpoint, else NTP's own
/// verdict. The public and allocator URLs are usually served by this very machine, so
/// their `Date` is only telling when it is far off.
pub fn clock(cloud: Option<Reference>, ntp: Option<bool>, own: [Option<Reference>; 2]) -> Finding {
    let check = "clock";
    let fix = "synchronise the clock: `timedatectl set-ntp true`, then `timedatectl status` should \
               say \"System clock synchronized: yes\"";
    let judge = |r: &Reference, independent: bool| {
        let off = r.ahead.abs();
        let way = if r.ahead >= 0.0 { "ahead of" } else { "behind" };
        let found = format!("this clock is {off:.0} s {way} {}", r.source);
        if off > SKEW_FAIL_SECONDS {
            Some(Finding::fail(
                check,
                format!("{found}: TLS and AWS request signatures fail at this skew"),
                fix,
            ))
        } else if off > SKEW_WARN_SECONDS {
            Some(Finding::warn(check, found, fix))
        } else if independent {
            Some(Finding::pass(check, found))
        } else {
            None
        }
    };
    if let Some(finding) = cloud.as_ref().and_then(|r| judge(r, true)) {
        return finding;
    }
    if let Some(finding) = own.iter().flatten().find_map(|r| judge(r, false)) {
        return finding;
    }
    match ntp {
        Some(true) => Finding::pass(check, "synchronised by NTP (timedatectl)"),
        Some(false) => Finding::warn(check, "not synchronised by NTP (timedatectl)", fix),
        None => Finding::warn(
            check,
            "no independent time source answered (the cloud's endpoint, timedatectl)",
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn reference(ahead: f64) -> Option<Reference> {
        Some(Reference {
            source: "http://a".into(),
            ahead,
        })
    }

    fn off(ahead: f64) -> Finding {
        clock(reference(ahead), None, [None, None])
    }

    #[test]
    fn skew_has_a_warning_and_a_failure() {
        assert_eq!(off(0.4).status, Status::Pass);
        assert_eq!(off(-7.0).status, Status::Warn);
        assert!(off(-7.0).found.contains("7 s behind http://a"));
        assert_eq!(off(61.0).status, Status::Fail);
        assert!(off(61.0).found.contains("ahead of"));
        assert_eq!(clock(None, None, [None, None]).status, Status::Warn);
        // This machine's own pages: telling only when far off; NTP decides otherwise.
        let own = |ahead| clock(None, Some(true), [None, reference(ahead)]);
        assert_eq!(own(0.2).status, Status::Pass);
        assert!(own(0.2).found.contains("NTP"));
        assert_eq!(own(-70.0).status, Status::Fail);
        assert_eq!(
            clock(None, Some(false), [reference(0.0), None]).status,
            Status::Warn
        );
    }

    #[test]
    fn the_cloud_comes_first_then_a_far_off_own_page() {
        let r = |source: &str, ahead| {
            Some(Reference {
                source: source.into(),
                ahead,
            })
        };
        let f = clock(None, None, [r("public", 100.0), r("allocator", 0.0)]);
        assert_eq!(f.status, Status::Fail);
        assert!(f.found.contains("public"));
        let f = clock(r("sts", 0.5), None, [r("public", 100.0), None]);
        assert_eq!(f.status, Status::Pass);
        assert!(f.found.contains("sts"));
    }
}
