//! Many participants at once (issue #8): 10,000 claims from 500 clients, each on its own
//! connection, for 1,000 running VMs. Exactly 1,000 win, each VM once, each e-mail at
//! most one VM; the rest get the clean "No available VMs" 503. Then one e-mail claiming
//! from many browsers at once gets one VM, the same in every answer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::helpers::{Claimed, REQUEST_TIMEOUT, TestServer, claim_with, crd_command, within};

const VMS: usize = 1_000;
const CLIENTS: usize = 500;
const CLAIMS_PER_CLIENT: usize = 20;
/// Fresh e-mails each claiming from `BROWSERS` clients at once, with this many extra VMs.
const SAME_EMAIL: usize = 10;
const BROWSERS: usize = 20;

/// Every client its own connection: no pool shared between tasks, one idle connection.
/// Plain HTTP only: no root certificates to load, so 500 clients cost next to nothing.
fn own_client() -> Client {
    Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Server and clients live in this process: two descriptors per connection.
fn raise_fd_limit() {
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    let connections = VMS + CLIENTS + SAME_EMAIL * BROWSERS;
    let needed = 2 * connections as u64 + 512;
    assert!(
        limit >= needed,
        "open-file limit {limit} is below the {needed} this test needs; raise the hard limit"
    );
}

/// A claim the allocator answered as it should: its VM (200 with hostname, PIN and
/// cookie), or `None` for the 503 "No available VMs" form.
fn won(c: &Claimed, email: &str) -> Option<String> {
    match c.status {
        StatusCode::OK => {
            c.pin();
            assert!(c.cookie.is_some(), "{email}: no claim cookie");
            Some(c.hostname())
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            assert!(c.html.contains("No available VMs"), "{email}: {}", c.html);
            assert!(c.field("pin").is_none(), "{email}: PIN on a refusal");
            None
        }
        other => panic!("{email}: unexpected {other}: {}", c.html),
    }
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_claims_from_500_clients_for_1000_vms() {
    raise_fd_limit();
    let s = TestServer::start().await;
    within(120, "test", async {
        let t = Instant::now();
        s.register_many(VMS).await;
        let registering = t.elapsed();
        assert_eq!(s.free_count().await, VMS as u64);

        // Each client connects before the start, so the clock measures claims only.
        let start = Arc::new(Barrier::new(CLIENTS + 1));
        let mut tasks = JoinSet::new();
        for c in 0..CLIENTS {
            let (base, start) = (s.base.clone(), start.clone());
            tasks.spawn(async move {
                let client = own_client();
                let warm = client.get(format!("{base}/health")).send().await;
                assert_eq!(warm.expect("GET /health").status(), StatusCode::OK);
                start.wait().await;
                let mut answers = Vec::with_capacity(CLAIMS_PER_CLIENT);
                for j in 0..CLAIMS_PER_CLIENT {
                    let email = format!("p{c:03}-{j:02}@example.org");
                    let command = crd_command(&format!("4/0Code-{c}-{j}"));
                    let claimed = claim_with(&client, &base, &email, &command).await;
                    let host = won(&claimed, &email);
                    answers.push((email, host));
                }
                answers
            });
        }
        start.wait().await;
        let t = Instant::now();
        let mut winners: BTreeMap<String, String> = BTreeMap::new();
        let mut refused = 0;
        while let Some(done) = tasks.join_next().await {
            for (email, host) in done.expect("client task") {
                match host {
                    Some(host) => {
                        let previous = winners.insert(email.clone(), host);
                        assert!(previous.is_none(), "{email} answered twice");
                    }
                    None => refused += 1,
                }
            }
        }
        let claiming = t.elapsed();
        let total = CLIENTS * CLAIMS_PER_CLIENT;
        eprintln!(
            "concurrency: registered {VMS} VMs in {:.2} s ({:.0}/s); {total} claims from \
             {CLIENTS} clients in {:.2} s ({:.0} claims/s): {} assigned, {refused} refused",
            registering.as_secs_f64(),
            per_second(VMS, registering),
            claiming.as_secs_f64(),
            per_second(total, claiming),
            winners.len()
        );
        assert_eq!(winners.len(), VMS, "claims answered with a VM");
        assert_eq!(refused, total - VMS, "claims answered 503");
        let hosts: BTreeSet<&String> = winners.values().collect();
        assert_eq!(hosts.len(), VMS, "every VM handed out once");
        assert_eq!(s.free_count().await, 0);

        // The store agrees with the answers: one VM per e-mail, one e-mail per VM.
        let stored = assignments(&s).await;
        assert_eq!(stored, winners, "the store agrees with the pages");

        // Rejoin: fresh e-mails, each claiming from many browsers at once.
        let extra: Vec<String> = (1..=SAME_EMAIL)
            .map(|i| format!("vm-{}", VMS + i))
            .collect();
        for host in &extra {
            s.register_running(host).await;
        }
        assert_eq!(s.free_count().await, SAME_EMAIL as u64);
        let t = Instant::now();
        let start = Arc::new(Barrier::new(SAME_EMAIL * BROWSERS));
        let mut tasks = JoinSet::new();
        for e in 0..SAME_EMAIL {
            for b in 0..BROWSERS {
                let (base, start) = (s.base.clone(), start.clone());
                tasks.spawn(async move {
                    let client = own_client();
                    let email = format!("twin-{e}@example.org");
                    let command = crd_command(&format!("4/0Twin-{e}-{b}"));
                    start.wait().await;
                    let c = claim_with(&client, &base, &email, &command).await;
                    (email, c)
                });
            }
        }
        let mut seen: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
        while let Some(done) = tasks.join_next().await {
            let (email, c) = done.expect("browser task");
            assert_eq!(c.status, StatusCode::OK, "{email}: {}", c.html);
            let entry = seen.entry(email).or_default();
            entry.0.insert(c.hostname());
            // Only the claim that made the assignment shows the PIN and sets the cookie.
            if c.field("pin").is_some() {
                assert!(c.cookie.is_some());
                entry.1 += 1;
            } else {
                assert!(c.cookie.is_none());
            }
        }
        let mut twins: BTreeMap<String, String> = BTreeMap::new();
        for (email, (hosts, assigned)) in seen {
            assert_eq!(hosts.len(), 1, "{email} was shown {hosts:?}");
            assert_eq!(assigned, 1, "{email}: claims answered as new");
            twins.insert(email, hosts.into_iter().next().expect("one host"));
        }
        assert_eq!(twins.len(), SAME_EMAIL);
        let twin_hosts: BTreeSet<String> = twins.values().cloned().collect();
        assert_eq!(
            twin_hosts,
            extra.iter().cloned().collect(),
            "one extra VM each"
        );
        assert_eq!(s.free_count().await, 0);

        // Winners of the first wave coming back from several browsers at once.
        let mut tasks = JoinSet::new();
        for (email, host) in winners.iter().step_by(VMS / 10) {
            for b in 0..BROWSERS / 2 {
                let (base, email, host) = (s.base.clone(), email.clone(), host.clone());
                tasks.spawn(async move {
                    let client = own_client();
                    let command = crd_command(&format!("4/0Back-{b}"));
                    let c = claim_with(&client, &base, &email, &command).await;
                    assert_eq!(c.status, StatusCode::OK, "{email}: {}", c.html);
                    assert_eq!(c.hostname(), host, "{email} came back to another VM");
                    assert!(c.field("pin").is_none(), "PIN shown without the cookie");
                });
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("comeback task");
        }
        eprintln!(
            "concurrency: {SAME_EMAIL} e-mails × {BROWSERS} browsers at once and the \
             comebacks in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        let mut expected = winners;
        expected.extend(twins);
        assert_eq!(
            assignments(&s).await,
            expected,
            "the store after the rejoins"
        );
    })
    .await;
}

/// e-mail → VM as stored; fails if an e-mail holds two VMs.
async fn assignments(s: &TestServer) -> BTreeMap<String, String> {
    let vms = s
        .app
        .store
        .read(lablink::store::vms::list)
        .await
        .expect("list");
    let mut stored = BTreeMap::new();
    for vm in vms {
        if let Some(a) = vm.assignment {
            let previous = stored.insert(a.email.clone(), vm.hostname.clone());
            assert!(previous.is_none(), "{} holds two VMs", a.email);
        }
    }
    stored
}
