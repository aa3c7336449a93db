//! Crash safety (issue #8): the real `lablink serve` is SIGKILLed at a random moment while
//! participants claim and VMs register, then restarted on the same data directory. After
//! every restart: the store opened by itself, every answered claim and registration is
//! still there, no VM is held by two e-mails nor an e-mail by two VMs, and a claim that was
//! cut off is either wholly there (record, e-mail index, free index) or not at all.
//!
//! The kill moments and the participants' choices come from a seeded generator; the seed
//! is printed, and `LABLINK_CRASH_SEED=<seed>` replays them (`LABLINK_CRASH_ROUNDS` sets
//! the number of rounds).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redb::ReadableTable as _;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_USER, Claimed, REQUEST_TIMEOUT, SERVE_ADMIN_PASSWORD, ServeProc, crd_command, free_port,
    html_field, within,
};

const DEFAULT_ROUNDS: usize = 20;
/// Participants claiming at once, each one after the other on its own connection.
const CLAIMERS: usize = 6;
const CLAIMS_PER_CLAIMER: usize = 25;
/// Share of claims that come back with an e-mail that already holds a VM.
const REJOIN_SHARE: f64 = 0.25;
/// VMs registered before the load, and while it runs.
const PRE_REGISTERED: usize = 6;
const REGISTERED_DURING_LOAD: usize = 24;
/// The kill lands uniformly within this many milliseconds after the load starts.
const KILL_WINDOW_MS: std::ops::Range<u64> = 5..300;

/// Plain HTTP only: no root certificates to load, so a client costs next to nothing.
fn http() -> Client {
    Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(1)
        .build()
        .expect("reqwest client")
}

/// A VM an e-mail is known to hold: its claim was answered, or found after a restart.
#[derive(Clone, Debug)]
struct Held {
    host: String,
    pin: String,
    /// The Chrome Remote Desktop codes the assignment may carry now: the last answered
    /// one, plus one whose rotation was cut off.
    codes: BTreeSet<String>,
    /// The claim cookie, when the claim that made the assignment was answered.
    cookie: Option<String>,
}

/// What the test knows across kills.
#[derive(Default)]
struct Known {
    held: BTreeMap<String, Held>,
    /// New claims that got no answer: e-mail → code. Resolved at the next restart.
    pending: BTreeMap<String, String>,
    /// Registrations answered 200.
    registered: BTreeSet<String>,
    /// Registrations that got no answer. Resolved at the next restart.
    maybe_registered: BTreeSet<String>,
    /// E-mails whose assignment changed (or appeared) since the last check.
    touched: BTreeSet<String>,
}

#[derive(Debug)]
enum Outcome {
    /// 200: the VM named in the page; the PIN and cookie when shown.
    Vm {
        host: String,
        pin: Option<String>,
        cookie: Option<String>,
    },
    /// 503 "No available VMs".
    NoVm,
    /// No answer: the allocator died under it.
    Lost,
}

#[derive(Debug)]
struct Event {
    email: String,
    code: String,
    rejoin: bool,
    sent_cookie: bool,
    outcome: Outcome,
}

async fn post_claim(
    client: &Client,
    base: &str,
    email: &str,
    code: &str,
    cookie: Option<&str>,
) -> Result<Claimed, reqwest::Error> {
    let mut req = client
        .post(format!("{base}/api/request_vm"))
        .form(&[("email", email), ("crd_command", &crd_command(code))]);
    if let Some(cookie) = cookie {
        req = req.header(reqwest::header::COOKIE, cookie);
    }
    let response = req.send().await?;
    let status = response.status();
    let cookie = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let html = response.text().await?;
    Ok(Claimed {
        status,
        html,
        cookie,
    })
}

/// One participant after another on one connection, until the allocator dies or the
/// claims run out. `rejoiners` are e-mails (held before this round) only this task uses.
async fn claimer(
    client: Client,
    base: String,
    round: usize,
    task: usize,
    seed: u64,
    rejoiners: Vec<(String, Held)>,
) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    for j in 0..CLAIMS_PER_CLAIMER {
        let code = format!("4/0R{round}T{task}J{j}");
        let rejoin = (!rejoiners.is_empty() && rng.random_bool(REJOIN_SHARE))
            .then(|| &rejoiners[rng.random_range(0..rejoiners.len())]);
        let (email, cookie) = match rejoin {
            // Half of the comebacks from the same browser, with a fresh code.
            Some((email, held)) => (
                email.clone(),
                held.cookie.as_deref().filter(|_| rng.random_bool(0.5)),
            ),
            None => (format!("r{round}-t{task}-c{j}@example.org"), None),
        };
        let answer = post_claim(&client, &base, &email, &code, cookie).await;
        let outcome = match answer {
            Err(_) => Outcome::Lost,
            Ok(c) if c.status == StatusCode::OK => Outcome::Vm {
                host: c.hostname(),
                pin: c.field("pin"),
                cookie: c.cookie,
            },
            Ok(c) if c.status == StatusCode::SERVICE_UNAVAILABLE => {
                assert!(c.html.contains("No available VMs"), "{}", c.html);
                Outcome::NoVm
            }
            Ok(c) => panic!("claim of {email}: unexpected {}: {}", c.status, c.html),
        };
        let lost = matches!(outcome, Outcome::Lost);
        events.push(Event {
            email,
            code,
            rejoin: rejoin.is_some(),
            sent_cookie: cookie.is_some(),
            outcome,
        });
        if lost {
            break;
        }
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..4000))).await;
    }
    events
}

/// Registers `hosts` one after the other; the answered ones, then the one cut off.
async fn registrar(
    client: Client,
    base: String,
    token: String,
    hosts: Vec<String>,
    seed: u64,
) -> (Vec<String>, Option<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = Vec::new();
    for host in hosts {
        let answer = client
            .post(format!("{base}/api/vm-status"))
            .bearer_auth(&token)
            .json(&json!({"hostname": host, "status": "running"}))
            .send()
            .await;
        match answer {
            Ok(r) if r.status() == StatusCode::OK => done.push(host),
            Ok(r) => panic!("registering {host}: {} {:?}", r.status(), r.text().await),
            Err(_) => return (done, Some(host)),
        }
        tokio::time::sleep(Duration::from_micros(rng.random_range(2000..8000))).await;
    }
    (done, None)
}

fn read_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("api-token"))
        .expect("api-token")
        .trim()
        .to_owned()
}

/// Claims of a round (or of the whole test) by answer.
#[derive(Default, Clone, Copy)]
struct Tally {
    /// New claims answered with a VM.
    won: usize,
    /// New claims answered "No available VMs".
    refused: usize,
    /// Comebacks answered with the e-mail's VM.
    rejoined: usize,
    /// Claims that got no answer.
    lost: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.won += o.won;
        self.refused += o.refused;
        self.rejoined += o.rejoined;
        self.lost += o.lost;
    }
}

/// Folds one round's answers into what is known, failing on any answer that breaks the
/// guarantees (a VM handed out twice, an e-mail given a second VM).
fn record(known: &mut Known, events: Vec<Event>) -> Tally {
    let mut tally = Tally::default();
    let mut owner: BTreeMap<String, String> = known
        .held
        .iter()
        .map(|(e, h)| (h.host.clone(), e.clone()))
        .collect();
    for Event {
        email,
        code,
        rejoin,
        sent_cookie,
        outcome,
    } in events
    {
        match (rejoin, outcome) {
            (false, Outcome::Vm { host, pin, cookie }) => {
                tally.won += 1;
                assert!(!known.held.contains_key(&email), "{email} claimed twice");
                if let Some(other) = owner.insert(host.clone(), email.clone()) {
                    panic!("{host} handed to {email} while {other} holds it");
                }
                let pin = pin.unwrap_or_else(|| panic!("new claim of {email} shows no PIN"));
                assert!(cookie.is_some(), "new claim of {email} set no cookie");
                known.held.insert(
                    email.clone(),
                    Held {
                        host,
                        pin,
                        codes: BTreeSet::from([code]),
                        cookie,
                    },
                );
                known.touched.insert(email);
            }
            (false, Outcome::NoVm) => tally.refused += 1,
            (false, Outcome::Lost) => {
                tally.lost += 1;
                known.pending.insert(email, code);
            }
            (true, Outcome::Vm { host, pin, .. }) => {
                tally.rejoined += 1;
                let held = known.held.get_mut(&email).expect("rejoin of a held e-mail");
                assert_eq!(host, held.host, "{email} came back to another VM");
                if sent_cookie {
                    assert_eq!(pin.as_ref(), Some(&held.pin), "{email}: PIN after rejoin");
                    held.codes = BTreeSet::from([code]);
                    known.touched.insert(email);
                } else {
                    assert!(pin.is_none(), "{email}: PIN shown without the cookie");
                }
            }
            (true, Outcome::NoVm) => panic!("{email} holds a VM but was told none is free"),
            (true, Outcome::Lost) => {
                tally.lost += 1;
                if sent_cookie {
                    let held = known.held.get_mut(&email).expect("held");
                    held.codes.insert(code);
                    known.touched.insert(email);
                }
            }
        }
    }
    tally
}

/// After a restart: the pool as the admin export shows it agrees with everything answered;
/// cut-off claims and registrations are resolved (there wholly, or not at all).
async fn check(known: &mut Known, base: &str, token: &str) {
    let client = http();
    let export = client
        .get(format!("{base}/admin/export.json"))
        .basic_auth(ADMIN_USER, Some(SERVE_ADMIN_PASSWORD))
        .send()
        .await
        .expect("GET /admin/export.json");
    assert_eq!(export.status(), StatusCode::OK);
    let rows: Vec<Value> = export.json().await.expect("export is JSON");

    let mut hosts: BTreeSet<String> = BTreeSet::new();
    let mut by_email: BTreeMap<String, String> = BTreeMap::new();
    let mut unassigned = 0;
    for row in &rows {
        let host = row["hostname"].as_str().expect("hostname").to_owned();
        assert!(hosts.insert(host.clone()), "{host} listed twice");
        assert_eq!(row["status"], "running", "{row}");
        match row["participant_email"].as_str().expect("email") {
            "" => unassigned += 1,
            email => {
                if let Some(other) = by_email.insert(email.to_owned(), host.clone()) {
                    panic!("{email} holds {other} and {host}");
                }
            }
        }
    }

    // Registrations: every answered one is there; a cut-off one is there or not.
    for host in &hosts {
        assert!(
            known.registered.contains(host) || known.maybe_registered.contains(host),
            "{host} was never registered"
        );
    }
    for host in &known.registered {
        assert!(hosts.contains(host), "registered {host} is gone");
    }
    let maybe = std::mem::take(&mut known.maybe_registered);
    known
        .registered
        .extend(maybe.into_iter().filter(|h| hosts.contains(h)));

    // Claims: every answered one is there, on the same VM.
    for (email, held) in &known.held {
        assert_eq!(
            by_email.get(email),
            Some(&held.host),
            "{email} was answered {} and lost it",
            held.host
        );
    }
    let mut pending = std::mem::take(&mut known.pending);
    let mut found = Vec::new();
    for (email, host) in &by_email {
        if known.held.contains_key(email) {
            continue;
        }
        let code = pending
            .remove(email)
            .unwrap_or_else(|| panic!("{email} holds {host} but never got an answer or asked"));
        found.push((email.clone(), host.clone(), code));
    }
    // The rest of `pending` was not applied: its e-mails hold nothing (checked above).

    // The free index agrees with the records.
    let count: Value = client
        .get(format!("{base}/api/unassigned_vms_count"))
        .send()
        .await
        .expect("GET /api/unassigned_vms_count")
        .json()
        .await
        .expect("count is JSON");
    assert_eq!(count, json!({ "count": unassigned }), "free count");

    // Assignments found after the restart: their PIN from the VM's side.
    for (email, host, code) in found {
        let answer: Value = client
            .post(format!("{base}/vm_startup"))
            .bearer_auth(token)
            .json(&json!({ "hostname": host }))
            .send()
            .await
            .expect("POST /vm_startup")
            .json()
            .await
            .expect("JSON");
        let pin = answer["pin"]
            .as_str()
            .expect("assigned VM has a PIN")
            .to_owned();
        known.held.insert(
            email.clone(),
            Held {
                host,
                pin,
                codes: BTreeSet::from([code]),
                cookie: None,
            },
        );
        known.touched.insert(email);
    }

    // Every assignment that changed: whole (PIN and code of one claim), and the e-mail
    // index finds it (a comeback without the cookie names the same VM and takes nothing).
    let mut set = tokio::task::JoinSet::new();
    for email in std::mem::take(&mut known.touched) {
        let held = known.held[&email].clone();
        let (client, base, token) = (client.clone(), base.to_owned(), token.to_owned());
        set.spawn(async move {
            let answer: Value = client
                .post(format!("{base}/vm_startup"))
                .bearer_auth(&token)
                .json(&json!({ "hostname": held.host }))
                .send()
                .await
                .expect("POST /vm_startup")
                .json()
                .await
                .expect("JSON");
            assert_eq!(answer["status"], "success", "{email}: {answer}");
            assert_eq!(answer["pin"], held.pin.as_str(), "{email}: PIN");
            let command = answer["command"].as_str().expect("command");
            let code = held
                .codes
                .iter()
                .find(|c| command.contains(&format!("--code=\"{c}\"")))
                .unwrap_or_else(|| panic!("{email}: {command} carries none of {:?}", held.codes))
                .clone();
            let again = post_claim(&client, &base, &email, "4/0Stranger", None)
                .await
                .expect("comeback");
            assert_eq!(again.status, StatusCode::OK, "{email}: {}", again.html);
            assert_eq!(html_field(&again.html, "hostname"), Some(held.host.clone()));
            assert!(again.field("pin").is_none(), "PIN shown without the cookie");
            (email, code)
        });
    }
    while let Some(done) = set.join_next().await {
        let (email, code) = done.expect("check task");
        if let Some(held) = known.held.get_mut(&email) {
            held.codes = BTreeSet::from([code]);
        }
    }
    // Nothing the comebacks did changed the pool.
    let count: Value = client
        .get(format!("{base}/api/unassigned_vms_count"))
        .send()
        .await
        .expect("GET /api/unassigned_vms_count")
        .json()
        .await
        .expect("count is JSON");
    assert_eq!(
        count,
        json!({ "count": unassigned }),
        "free count after comebacks"
    );
}

/// The store file itself, opened in-process after the last kill: the e-mail and free
/// indexes match the records exactly.
async fn check_store_file(dir: &Path, known: &Known) {
    use lablink::store::tables::{FREE_VMS, VM_BY_EMAIL};
    let store = lablink::store::Store::open(dir).expect("the store opens after SIGKILL");
    let (records, index, free) = store
        .read(|tx| {
            let records: BTreeMap<String, lablink::model::Vm> = lablink::store::vms::list(tx)?
                .into_iter()
                .map(|vm| (vm.hostname.clone(), vm))
                .collect();
            let mut index: BTreeMap<String, String> = BTreeMap::new();
            for entry in tx.open_table(VM_BY_EMAIL)?.iter()? {
                let (k, v) = entry?;
                index.insert(k.value().to_owned(), v.value().to_owned());
            }
            let mut free: BTreeSet<String> = BTreeSet::new();
            for entry in tx.open_table(FREE_VMS)?.iter()? {
                let (k, _) = entry?;
                free.insert(k.value().1.to_owned());
            }
            Ok((records, index, free))
        })
        .await
        .expect("read the store");
    store.close();
    let assigned: BTreeMap<String, String> = records
        .values()
        .filter_map(|vm| {
            vm.assignment
                .as_ref()
                .map(|a| (a.email.clone(), vm.hostname.clone()))
        })
        .collect();
    let expected: BTreeMap<String, String> = known
        .held
        .iter()
        .map(|(e, h)| (e.clone(), h.host.clone()))
        .collect();
    assert_eq!(assigned, expected, "assignments in the file");
    assert_eq!(index, assigned, "the e-mail index matches the records");
    let available: BTreeSet<String> = records
        .values()
        .filter(|vm| vm.is_available())
        .map(|vm| vm.hostname.clone())
        .collect();
    assert_eq!(free, available, "the free index matches the records");
    let names: BTreeSet<String> = records.keys().cloned().collect();
    assert_eq!(names, known.registered, "the VMs in the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_claims_survive_sigkill_at_random_moments() {
    let seed = std::env::var("LABLINK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let rounds = std::env::var("LABLINK_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    eprintln!("crash test: seed {seed} (replay: LABLINK_CRASH_SEED={seed}), {rounds} rounds");
    let mut rng = StdRng::seed_from_u64(seed);
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().join("data");
    let log = data.path().join("serve.log");
    let started = Instant::now();
    let mut known = Known::default();
    let mut next_vm = 1usize;
    let mut total = Tally::default();

    for round in 0..=rounds {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let restart = Instant::now();
        let mut server = within(
            40,
            "lablink serve starts",
            ServeProc::start(&dir, port, log.clone()),
        )
        .await;
        let token = read_token(&dir);
        let up = restart.elapsed();
        within(
            60,
            &format!("round {round}: checks after the restart"),
            async {
                check(&mut known, &base, &token).await;
            },
        )
        .await;
        let checked = restart.elapsed() - up;
        if round == rounds {
            server.kill().await;
            break;
        }

        let hosts = |n: usize, next: &mut usize| -> Vec<String> {
            let v = (*next..*next + n)
                .map(|i| format!("crash-vm-{i}"))
                .collect();
            *next += n;
            v
        };
        let before = hosts(PRE_REGISTERED, &mut next_vm);
        let (done, cut) = within(
            30,
            "registering the round's first VMs",
            registrar(http(), base.clone(), token.clone(), before, rng.random()),
        )
        .await;
        assert!(cut.is_none(), "registration failed before the kill");
        known.registered.extend(done);

        // The load: claimers (each with its own share of earlier e-mails) and a registrar.
        let mut shares: Vec<Vec<(String, Held)>> = vec![Vec::new(); CLAIMERS];
        for (i, (email, held)) in known.held.iter().enumerate() {
            shares[i % CLAIMERS].push((email.clone(), held.clone()));
        }
        let claimers: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(task, share)| {
                let client = http();
                tokio::spawn(claimer(
                    client,
                    base.clone(),
                    round,
                    task,
                    rng.random(),
                    share,
                ))
            })
            .collect();
        let during = hosts(REGISTERED_DURING_LOAD, &mut next_vm);
        let registering = tokio::spawn(registrar(
            http(),
            base.clone(),
            token.clone(),
            during,
            rng.random(),
        ));
        let delay = rng.random_range(KILL_WINDOW_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill().await;

        let mut events = Vec::new();
        within(30, "the load ends after the kill", async {
            for c in claimers {
                events.extend(c.await.expect("claimer"));
            }
            let (done, cut) = registering.await.expect("registrar");
            known.registered.extend(done);
            known.maybe_registered.extend(cut);
        })
        .await;
        let t = record(&mut known, events);
        total += t;
        eprintln!(
            "round {round:2}: up in {} ms, checked in {} ms, killed after {delay:3} ms; \
             {} new VMs, {} refused, {} comebacks, {} cut off; {} e-mails hold VMs",
            up.as_millis(),
            checked.as_millis(),
            t.won,
            t.refused,
            t.rejoined,
            t.lost,
            known.held.len()
        );
    }
    check_store_file(&dir, &known).await;
    eprintln!(
        "crash test: {rounds} kills in {:.1} s; claims: {} won, {} refused, {} comebacks, \
         {} cut off; {} VMs, {} assigned at the end",
        started.elapsed().as_secs_f64(),
        total.won,
        total.refused,
        total.rejoined,
        total.lost,
        known.registered.len(),
        known.held.len()
    );
}
