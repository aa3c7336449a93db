//! The simulated participants: each claims from a browser of its own (it keeps the claim
//! cookie), and one whose VM stopped responding follows its seat page and takes a new seat
//! from the same browser with a fresh code.

use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::Value;

use super::agent::kind_of;

/// How often a participant whose VM died looks at its seat. Faster than the seat page's
/// own script (3 s), so the re-seat time measures the allocator, not the page.
pub const SEAT_POLL: Duration = Duration::from_millis(250);
/// A re-seat answered "no free VM" is tried again after this.
const RETRY_NO_VM: Duration = Duration::from_millis(500);

const CLAIM_COOKIE: &str = "lablink_claim";

/// The claim form as a participant fills it in.
#[derive(Clone)]
pub struct Browser {
    pub email: String,
    pub join_code: String,
    /// `lablink_claim=…`, once the allocator set it.
    pub cookie: Option<String>,
}

/// What one submission of the form got.
pub struct Claimed {
    pub code: String,
    pub sent: Instant,
    pub answered: Instant,
    pub outcome: Result<Answer, String>,
}

pub struct Answer {
    pub status: u16,
    pub host: Option<String>,
    /// The page says the participant was given a new VM because theirs died.
    pub reseated: bool,
    pub cookie: Option<String>,
}

pub fn command_for(code: &str) -> String {
    format!(
        "DISPLAY= /opt/google/chrome-remote-desktop/start-host --code=\"{code}\" \
         --redirect-url=\"https://remotedesktop.google.com/_/oauthredirect\" --name=$(hostname)"
    )
}

/// The text of the element with `id` in an answer page (`<dd id="hostname">vm</dd>`).
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\">");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('<')?;
    Some(html[start..start + end].trim().to_owned())
}

/// `lablink_claim=…` from an answer's `Set-Cookie` headers.
fn claim_cookie(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{CLAIM_COOKIE}=")))
        .map(str::to_owned)
}

impl Browser {
    /// Submits the claim form with the CRD command carrying `code`.
    pub async fn claim(&self, http: &reqwest::Client, base: &str, code: String) -> Claimed {
        let sent = Instant::now();
        let command = command_for(&code);
        let mut form = vec![
            ("email", self.email.as_str()),
            ("crd_command", command.as_str()),
            ("join_code", self.join_code.as_str()),
        ];
        // With the claim's cookie, this is the seat page's "give me another VM" form.
        if self.cookie.is_some() {
            form.push(("reseat", "1"));
        }
        let mut request = http.post(format!("{base}/api/request_vm")).form(&form);
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        let outcome = match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let cookie = claim_cookie(r.headers());
                let page = r.text().await.unwrap_or_default();
                Ok(Answer {
                    status,
                    host: element_text(&page, "hostname"),
                    reseated: page.contains("You have a new VM"),
                    cookie,
                })
            }
            Err(e) => Err(kind_of(&e)),
        };
        Claimed {
            code,
            sent,
            answered: Instant::now(),
            outcome,
        }
    }

    /// The seat's state as the seat page's script reads it (`GET /api/my-vm`).
    async fn seat_state(&self, http: &reqwest::Client, base: &str) -> Result<String, String> {
        let mut request = http.get(format!("{base}/api/my-vm"));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                let seat: Value = r.json().await.unwrap_or_default();
                Ok(seat["state"].as_str().unwrap_or_default().to_owned())
            }
            Ok(r) => Err(format!("seat page: HTTP {}", r.status().as_u16())),
            Err(e) => Err(format!("seat page: {}", kind_of(&e))),
        }
    }

    /// The participant whose VM `old` died: watches the seat until it says so, then asks
    /// for a new VM with `code` until given one (or the deadline). Returns every
    /// submission (the last one is the re-seat if there was one) and whether it worked.
    pub async fn reseat(
        &self,
        http: &reqwest::Client,
        base: &str,
        old: &str,
        code: String,
        deadline: Instant,
    ) -> (Vec<Claimed>, Result<(), String>) {
        let mut tries = Vec::new();
        if let Err(e) = self.until_unresponsive(http, base, deadline).await {
            return (tries, Err(e));
        }
        loop {
            let claimed = self.claim(http, base, code.clone()).await;
            let verdict = match &claimed.outcome {
                Ok(a) if a.status == 200 && a.reseated && a.host.as_deref() != Some(old) => {
                    Some(Ok(()))
                }
                Ok(a) if a.status == 200 => Some(Err(format!(
                    "re-seat answered {} instead of a new VM",
                    a.host.as_deref().unwrap_or("a page without a VM")
                ))),
                Ok(a) if a.status == 503 => None,
                Ok(a) => Some(Err(format!("re-seat: HTTP {}", a.status))),
                Err(kind) => Some(Err(format!("re-seat: {kind}"))),
            };
            tries.push(claimed);
            match verdict {
                Some(result) => return (tries, result),
                None if Instant::now() + RETRY_NO_VM > deadline => {
                    let e = "no free VM to re-seat onto before the deadline".to_owned();
                    return (tries, Err(e));
                }
                None => tokio::time::sleep(RETRY_NO_VM).await,
            }
        }
    }

    /// Reads the seat as its page does until it says the VM stopped responding.
    async fn until_unresponsive(
        &self,
        http: &reqwest::Client,
        base: &str,
        deadline: Instant,
    ) -> Result<(), String> {
        loop {
            match self.seat_state(http, base).await?.as_str() {
                "unresponsive" => return Ok(()),
                "ready" | "rebooting" => {}
                other => return Err(format!("seat page said `{other}`, not unresponsive")),
            }
            if Instant::now() + SEAT_POLL > deadline {
                return Err("seat page never said unresponsive".into());
            }
            tokio::time::sleep(SEAT_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_pages_are_read_by_element_id() {
        let page = r#"<dl><dt>Assigned hostname</dt><dd id="hostname">vm-7</dd></dl>"#;
        assert_eq!(element_text(page, "hostname").as_deref(), Some("vm-7"));
        assert_eq!(element_text(page, "pin"), None);
    }

    #[test]
    fn the_claim_cookie_is_kept_without_its_attributes() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(SET_COOKIE, "other=1; Path=/".parse().expect("header"));
        headers.append(
            SET_COOKIE,
            "lablink_claim=abc.ZEBl; Path=/; Max-Age=604800; HttpOnly"
                .parse()
                .expect("header"),
        );
        assert_eq!(
            claim_cookie(&headers).as_deref(),
            Some("lablink_claim=abc.ZEBl")
        );
        assert_eq!(claim_cookie(&reqwest::header::HeaderMap::new()), None);
    }
}
