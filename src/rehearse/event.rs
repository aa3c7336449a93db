//! `lablink rehearse URL --event`: a whole workshop event against an allocator that
//! launches its own VMs (`lablink demo`, or a `local`/`terraform` provider). It plans an
//! event starting in a few seconds and ending `--seconds` later; the participants arrive over `--arrive-over` seconds, queue when no seat is free,
//! some leave early (the admin releases their seat), some lose their VM (the admin destroys
//! it: the event replaces it, the participant asks again from the same browser); at the end
//! the allocator rescues and destroys everything, and the event's report is printed.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::COOKIE;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::RehearseArgs;
use super::participant::{Browser, element_text};
use crate::commands::remote::{Admin, RemoteError};

/// The event starts this long after it is planned, and launches its VMs then (no pre-warm:
/// the first participants meet a pool still booting, as an arrival spike would).
const LEAD: Duration = Duration::from_secs(5);
/// How often a participant's page looks at its seat.
const SEAT_POLL: Duration = Duration::from_millis(500);
/// After the end, how long the hard stop (rescue, then destroy) may take.
const STOP_LIMIT: Duration = Duration::from_secs(600);

/// What happened to one participant.
#[derive(Default)]
struct Journey {
    claimed: bool,
    queued: bool,
    seated_at: Option<Duration>,
    left: bool,
    lost_vm: bool,
    reseated: bool,
    errors: Vec<String>,
}

pub async fn rehearse(
    args: RehearseArgs,
    http: reqwest::Client,
    base: String,
) -> Result<bool, String> {
    let admin = Admin::with_client(http.clone(), &base, &args.login)?;
    let run = format!("{:x}", rand::random::<u32>());
    let name = format!("Rehearsal {run}");
    let participants = args.participants.unwrap_or(args.agents);
    let start = Utc::now() + chrono::Duration::from_std(LEAD).unwrap_or_default();
    let end = start + chrono::Duration::seconds(i64::try_from(args.seconds).unwrap_or(60));
    admin
        .post(
            "/api/event",
            &json!({
                "name": name,
                "start": start.to_rfc3339(),
                "end": end.to_rfc3339(),
                "seats": participants,
                "spare_percent": args.spare_percent,
                "prewarm_minutes": 0,
                "warn_minutes": "1",
                "join_code": args.join_code.clone().unwrap_or_default(),
            }),
        )
        .await
        .map_err(|e| format!("planning the event: {e}"))?;
    println!(
        "event '{name}': {participants} seats + {} % spare, starts {start}, ends {end}",
        args.spare_percent
    );
    let started = Instant::now() + LEAD;
    let ends = started + Duration::from_secs(args.seconds);

    let mut people = JoinSet::new();
    for n in 0..participants {
        let offset = args.arrive_over as f64 * n as f64 / participants.max(1) as f64;
        let leaves = rand::random::<f64>() < args.leave_share;
        let browser = Browser {
            email: format!("event-{run}-{n}@{}", args.email_domain),
            join_code: args.join_code.clone().unwrap_or_default(),
            cookie: None,
        };
        let (http, base) = (http.clone(), base.clone());
        let arrive = started + Duration::from_secs_f64(offset);
        let leave_at =
            leaves.then(|| arrive + (ends - arrive).mul_f64(rand::random::<f64>() / 2.0));
        let admin = admin.clone();
        people.spawn(async move {
            tokio::time::sleep_until(arrive.into()).await;
            participant(&http, &base, &admin, browser, arrive, leave_at, ends).await
        });
    }

    // Mid-event, a share of the seated VMs die (destroyed under their participant).
    let mut lost = 0;
    if args.die_share > 0.0 {
        tokio::time::sleep_until((started + (ends - started) / 2).into()).await;
        let pool = admin.get("/api/vms").await.unwrap_or_default();
        let seated: Vec<String> = pool["vms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|vm| vm["participant"].is_string())
            .filter_map(|vm| vm["hostname"].as_str().map(str::to_owned))
            .collect();
        let victims = (seated.len() as f64 * args.die_share).round() as usize;
        for host in seated.iter().take(victims) {
            if destroy(&admin, host, ends).await {
                lost += 1;
            }
        }
    }

    let mut journeys = Vec::new();
    while let Some(done) = people.join_next().await {
        journeys.push(done.map_err(|e| e.to_string())?);
    }

    // The hard stop: rescue, then destroy.
    let limit = ends + STOP_LIMIT;
    let ended = loop {
        let event = admin.get("/api/event").await.unwrap_or_default();
        if event["phase"] == "ended" {
            break Some(event);
        }
        if Instant::now() > limit {
            break None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let report = admin
        .get("/api/event/report")
        .await
        .map_err(|e| e.to_string());
    Ok(print(&journeys, lost, ended.as_ref(), report))
}

/// One participant: arrives, claims (or queues), works, maybe leaves early or loses the VM.
async fn participant(
    http: &reqwest::Client,
    base: &str,
    admin: &Admin,
    mut browser: Browser,
    arrived: Instant,
    leave_at: Option<Instant>,
    ends: Instant,
) -> Journey {
    let mut j = Journey::default();
    let code = format!("4/0Event{}", browser.email.len());
    let claimed = browser.claim(http, base, code.clone()).await;
    match claimed.outcome {
        Ok(a) if a.status == 200 && a.host.is_some() => {
            j.claimed = true;
            browser.cookie = a.cookie;
            j.seated_at = Some(arrived.elapsed());
        }
        Ok(a) if a.status == 503 => match join(http, base, &browser, &code).await {
            Ok(cookie) => {
                j.queued = true;
                browser.cookie = Some(cookie);
            }
            Err(e) => j.errors.push(e),
        },
        Ok(a) => j.errors.push(format!("claim: HTTP {}", a.status)),
        Err(kind) => j.errors.push(format!("claim: {kind}")),
    }
    let mut host: Option<String> = None;
    while Instant::now() < ends && browser.cookie.is_some() {
        let seat = seat(http, base, &browser).await;
        match seat["state"].as_str() {
            Some("ready" | "rebooting" | "unresponsive") => {
                host = seat["hostname"].as_str().map(str::to_owned);
                if j.seated_at.is_none() {
                    j.seated_at = Some(arrived.elapsed());
                }
                if let (Some(at), Some(h)) = (leave_at, &host)
                    && Instant::now() >= at
                    && !j.left
                {
                    match admin
                        .post(&format!("/api/vms/{h}/release"), &json!({}))
                        .await
                    {
                        Ok(_) => j.left = true,
                        Err(e) => j.errors.push(format!("leaving: {e}")),
                    }
                    return j;
                }
            }
            Some("waiting") => {}
            // The VM is gone (destroyed under them): ask again from the same browser.
            Some(_) if host.is_some() && !j.left => {
                j.lost_vm = true;
                let again = browser.claim(http, base, format!("{code}again")).await;
                match again.outcome {
                    Ok(a) if a.status == 200 && a.host.is_some() => j.reseated = true,
                    Ok(a) if a.status == 503 => match join(http, base, &browser, &code).await {
                        Ok(_) => j.reseated = true,
                        Err(e) => j.errors.push(e),
                    },
                    Ok(a) => j.errors.push(format!("claim again: HTTP {}", a.status)),
                    Err(kind) => j.errors.push(format!("claim again: {kind}")),
                }
                host = None;
            }
            _ => {}
        }
        tokio::time::sleep(SEAT_POLL).await;
    }
    j
}

/// The "Join the waitlist" form; the claim cookie it sets.
async fn join(
    http: &reqwest::Client,
    base: &str,
    b: &Browser,
    code: &str,
) -> Result<String, String> {
    let command = super::participant::command_for(code);
    let mut request = http.post(format!("{base}/api/waitlist/join")).form(&[
        ("email", b.email.as_str()),
        ("crd_command", &command),
        ("join_code", &b.join_code),
    ]);
    if let Some(cookie) = &b.cookie {
        request = request.header(COOKIE, cookie);
    }
    let answer = request
        .send()
        .await
        .map_err(|e| format!("joining the waitlist: {e}"))?;
    let cookie = answer
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with("lablink_claim="))
        .map(str::to_owned)
        .or_else(|| b.cookie.clone());
    let status = answer.status().as_u16();
    let page = answer.text().await.unwrap_or_default();
    match cookie {
        Some(cookie) if status < 400 => Ok(cookie),
        _ => Err(format!(
            "joining the waitlist: HTTP {status}{}",
            element_text(&page, "error")
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )),
    }
}

async fn seat(http: &reqwest::Client, base: &str, b: &Browser) -> Value {
    let mut request = http.get(format!("{base}/api/my-vm"));
    if let Some(cookie) = &b.cookie {
        request = request.header(COOKIE, cookie);
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
        _ => Value::Null,
    }
}

/// Destroys `host` (one run at a time: waits for a free turn).
async fn destroy(admin: &Admin, host: &str, until: Instant) -> bool {
    while Instant::now() < until {
        match admin
            .post(&format!("/api/vms/{host}/destroy"), &json!({}))
            .await
        {
            Ok(_) => return true,
            Err(RemoteError::Refused { status: 409, .. }) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                eprintln!("destroying {host}: {e}");
                return false;
            }
        }
    }
    false
}

fn print(
    journeys: &[Journey],
    lost: usize,
    ended: Option<&Value>,
    report: Result<Value, String>,
) -> bool {
    let n = journeys.len();
    let count = |f: &dyn Fn(&Journey) -> bool| journeys.iter().filter(|j| f(j)).count();
    let mut waits: Vec<f64> = journeys
        .iter()
        .filter_map(|j| j.seated_at.map(|d| d.as_secs_f64()))
        .collect();
    waits.sort_by(f64::total_cmp);
    let q = |p: f64| {
        waits
            .get(((waits.len() as f64 - 1.0) * p).round() as usize)
            .map_or("—".to_owned(), |s| format!("{s:.1} s"))
    };
    println!("\nparticipants: {n}");
    println!("  seated at once:          {}", count(&|j| j.claimed));
    println!("  queued first:            {}", count(&|j| j.queued));
    println!(
        "  never seated:            {}",
        count(&|j| j.seated_at.is_none())
    );
    println!("  arrival → seat p50/p90:  {} / {}", q(0.5), q(0.9));
    println!("  left early:              {}", count(&|j| j.left));
    println!(
        "  lost their VM:           {} (VMs destroyed: {lost})",
        count(&|j| j.lost_vm)
    );
    println!("  asked again after that:  {}", count(&|j| j.reseated));
    let errors: Vec<&String> = journeys.iter().flat_map(|j| &j.errors).collect();
    for e in errors.iter().take(10) {
        println!("  error: {e}");
    }
    match ended {
        Some(e) => println!(
            "event ended: {}",
            e["ended"]["result"].as_str().unwrap_or("?")
        ),
        None => println!(
            "event did not end within {} s of its end",
            STOP_LIMIT.as_secs()
        ),
    }
    match &report {
        Ok(r) => {
            // The figures; the per-seat rows are on the report page and in its CSV.
            let mut figures = r.clone();
            if let Some(map) = figures.as_object_mut() {
                map.retain(|_, v| !v.is_array());
            }
            println!(
                "\nthe event's report (per seat: /admin/event/report):\n{}",
                serde_json::to_string_pretty(&figures).unwrap_or_default()
            );
        }
        Err(e) => println!("the event's report: {e}"),
    }
    let pass = ended.is_some() && errors.is_empty() && count(&|j| j.seated_at.is_none()) == 0;
    println!("\n{}", if pass { "PASS" } else { "FAIL" });
    pass
}
