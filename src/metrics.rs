//! Prometheus metrics of the allocator (OpenMetrics text, `GET /metrics`): counters and
//! histograms updated where things happen, and gauges of the pool read from the store at
//! each scrape.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::model::Counts;
use crate::model::budget::CostFigures;
use crate::model::{RunAction, RunState, Vm, VmStatus};

/// What `GET /metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request durations, up to a minute: long-polls (`/vm_startup`) are held for
/// `server.long_poll_seconds` (50 s by default) by design.
const HTTP_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Provisioning runs: seconds for the local provider, up to the hour-long run timeout.
const RUN_BUCKETS: [f64; 11] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Time in the waiting list, from joining to being seated: up to a workshop day.
const WAIT_BUCKETS: [f64; 12] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// How a participant's claim (`POST /api/request_vm`) was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    Assigned,
    Rejoined,
    NoVm,
    /// The form was incomplete or wrong (400), or the join code or allow-list refused it (403).
    Invalid,
    /// Over the claim limits of the client's network or e-mail address (429).
    Limited,
    /// The store failed (500).
    Error,
}

impl ClaimOutcome {
    const ALL: [ClaimOutcome; 6] = [
        ClaimOutcome::Assigned,
        ClaimOutcome::Rejoined,
        ClaimOutcome::NoVm,
        ClaimOutcome::Invalid,
        ClaimOutcome::Limited,
        ClaimOutcome::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            ClaimOutcome::Assigned => "assigned",
            ClaimOutcome::Rejoined => "rejoined",
            ClaimOutcome::NoVm => "no_vm",
            ClaimOutcome::Invalid => "invalid",
            ClaimOutcome::Limited => "limited",
            ClaimOutcome::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VmLabels {
    status: &'static str,
    assigned: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    hostname: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metrics of one allocator (held in `App`).
pub struct Metrics {
    registry: Registry,
    claims: Family<ClaimLabels, Counter>,
    http: HistogramFamily<HttpLabels>,
    runs: Family<RunLabels, Counter>,
    run_seconds: HistogramFamily<RunLabels>,
    waitlist_wait: Histogram,
    waitlist_length: Gauge,
    cost: CostGauges,
}

/// The budget's figures; NaN while unknown (no price for the type, no cap).
struct CostGauges {
    spent: Gauge<f64, AtomicU64>,
    projected: Gauge<f64, AtomicU64>,
    cap: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register(
            "lablink_build",
            "Version and git commit of this allocator",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("LABLINK_GIT_COMMIT"),
            }),
        );
        let claims = Family::<ClaimLabels, Counter>::default();
        for outcome in ClaimOutcome::ALL {
            claims
                .get_or_create(&ClaimLabels {
                    outcome: outcome.label(),
                })
                .inc_by(0);
        }
        registry.register(
            "lablink_claims",
            "Participants' claims (POST /api/request_vm) by how they were answered",
            claims.clone(),
        );
        let http: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(|| Histogram::new(HTTP_BUCKETS));
        registry.register_with_unit(
            "lablink_http_request_duration",
            "Time to answer an HTTP request (to the response head; long-polls included)",
            Unit::Seconds,
            http.clone(),
        );
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "lablink_provision_runs",
            "Finished provisioning runs (launch, destroy) by outcome",
            runs.clone(),
        );
        let run_seconds: HistogramFamily<RunLabels> =
            Family::new_with_constructor(|| Histogram::new(RUN_BUCKETS));
        registry.register_with_unit(
            "lablink_provision_run_duration",
            "How long finished provisioning runs took",
            Unit::Seconds,
            run_seconds.clone(),
        );
        let waitlist_wait = Histogram::new(WAIT_BUCKETS);
        registry.register_with_unit(
            "lablink_waitlist_wait",
            "How long seated participants waited in the queue",
            Unit::Seconds,
            waitlist_wait.clone(),
        );
        let waitlist_length = Gauge::default();
        registry.register(
            "lablink_waitlist_length",
            "Participants waiting for a VM",
            waitlist_length.clone(),
        );
        let cost = CostGauges {
            spent: Gauge::default(),
            projected: Gauge::default(),
            cap: Gauge::default(),
        };
        registry.register(
            "lablink_cost_spent_usd",
            "What the running event (or the pool outside events) has cost so far, in USD",
            cost.spent.clone(),
        );
        registry.register(
            "lablink_cost_projected_usd",
            "Spent plus the VMs now running to the event's end (outside events: one hour), in USD",
            cost.projected.clone(),
        );
        registry.register(
            "lablink_budget_cap_usd",
            "budget.cap_usd (NaN: no cap)",
            cost.cap.clone(),
        );
        Metrics {
            registry,
            claims,
            http,
            runs,
            run_seconds,
            waitlist_wait,
            waitlist_length,
            cost,
        }
    }

    pub fn claim(&self, outcome: ClaimOutcome) {
        self.claims
            .get_or_create(&ClaimLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// A waiting participant was seated after `waited`.
    pub fn waitlist_seated(&self, waited: Duration) {
        self.waitlist_wait.observe(waited.as_secs_f64());
    }

    /// How many wait now (set at each scrape, from the store).
    pub fn waitlist_length(&self, waiting: u64) {
        self.waitlist_length
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// The budget's figures (set at each scrape).
    pub fn cost(&self, figures: &CostFigures) {
        let known = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let priced = figures.price_per_hour.is_some();
        self.cost.spent.set(known(priced.then_some(figures.spent)));
        self.cost.projected.set(known(figures.projected));
        self.cost.cap.set(known(figures.cap));
    }

    /// One answered request; `route` is the matched route pattern, never the raw path.
    pub fn http_request(
        &self,
        route: Option<&str>,
        method: &Method,
        status: StatusCode,
        took: Duration,
    ) {
        let labels = HttpLabels {
            route: route.unwrap_or("unmatched").to_owned(),
            method: method_label(method),
            status: status_class(status),
        };
        self.http.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// One finished provisioning run.
    pub fn provision_run(&self, action: &RunAction, state: RunState, took: Duration) {
        let labels = RunLabels {
            action: match action {
                RunAction::Launch { .. } => "launch",
                RunAction::DestroyAll => "destroy_all",
                RunAction::DestroyVm { .. } => "destroy_vm",
            },
            outcome: match state {
                RunState::Running => "running",
                RunState::Succeeded => "succeeded",
                RunState::Failed => "failed",
                RunState::TimedOut => "timed_out",
                RunState::Cancelled => "cancelled",
                RunState::Interrupted => "interrupted",
            },
        };
        self.runs.get_or_create(&labels).inc();
        self.run_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The whole exposition: what was counted so far, and the pool as it is now.
    /// `liveness`: each VM's seconds since its agent's last sign of life, where known.
    pub fn render(
        &self,
        pool: &[Vm],
        parked: usize,
        last_seen: &dyn Fn(&Vm) -> Option<u64>,
    ) -> String {
        let mut now = Registry::default();
        let vms = Family::<VmLabels, Gauge>::default();
        for status in VmStatus::ALL {
            for assigned in [false, true] {
                vms.get_or_create(&VmLabels {
                    status: status.as_str(),
                    assigned,
                })
                .set(0);
            }
        }
        for vm in pool {
            let status = vm.status.unwrap_or(VmStatus::Unknown).as_str();
            vms.get_or_create(&VmLabels {
                status,
                assigned: vm.assignment.is_some(),
            })
            .inc();
        }
        now.register(
            "lablink_vms",
            "VMs by reported status and whether a participant holds them",
            vms,
        );
        let counts = Counts::of(pool);
        let gauge = |value: usize| {
            let g: Gauge = Gauge::default();
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
            g
        };
        now.register(
            "lablink_vms_free",
            "VMs a participant can claim now (running, unassigned, GPU not unhealthy)",
            gauge(counts.free),
        );
        now.register(
            "lablink_vms_gpu_unhealthy",
            "VMs whose last GPU report was Unhealthy",
            gauge(counts.unhealthy),
        );
        now.register(
            "lablink_vms_unresponsive",
            "Running VMs whose agent has been silent past the staleness limit",
            gauge(
                pool.iter()
                    .filter(|vm| vm.unresponsive_since.is_some())
                    .count(),
            ),
        );
        let seen = Family::<HostLabels, Gauge>::default();
        for vm in pool {
            if let Some(ago) = last_seen(vm) {
                seen.get_or_create(&HostLabels {
                    hostname: vm.hostname.clone(),
                })
                .set(i64::try_from(ago).unwrap_or(i64::MAX));
            }
        }
        now.register_with_unit(
            "lablink_vm_last_seen",
            "Time since each VM's agent was last heard from (request or heartbeat)",
            Unit::Seconds,
            seen,
        );
        now.register(
            "lablink_long_polls_parked",
            "Agents' /vm_startup requests waiting for an assignment",
            gauge(parked),
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &now))
            .and_then(|()| encode_eof(&mut out));
        out
    }
}

/// Methods outside the standard ones share one label, so clients cannot add series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn the_exposition_has_every_family_and_ends_with_eof() {
        let m = Metrics::new();
        m.claim(ClaimOutcome::Assigned);
        m.http_request(
            Some("/api/health"),
            &Method::GET,
            StatusCode::OK,
            Duration::from_millis(3),
        );
        m.http_request(
            None,
            &Method::from_bytes(b"BREW").expect("method"),
            StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        m.provision_run(
            &RunAction::Launch { count: 2 },
            RunState::Succeeded,
            Duration::from_secs(7),
        );
        let now = Utc::now();
        let pool = vec![
            Vm::new("vm-1", now).with_status(VmStatus::Running, now),
            Vm::new("vm-2", now),
        ];
        m.waitlist_seated(Duration::from_secs(42));
        m.waitlist_length(2);
        let text = m.render(&pool, 3, &|_| Some(7));
        for expected in [
            "lablink_claims_total{outcome=\"assigned\"} 1\n",
            "lablink_claims_total{outcome=\"no_vm\"} 0\n",
            "lablink_http_request_duration_seconds_count{route=\"/api/health\",method=\"GET\",status=\"2xx\"} 1\n",
            "lablink_http_request_duration_seconds_bucket{le=\"60.0\",route=\"/api/health\",method=\"GET\",status=\"2xx\"} 1\n",
            "route=\"unmatched\",method=\"other\",status=\"4xx\"",
            "lablink_provision_runs_total{action=\"launch\",outcome=\"succeeded\"} 1\n",
            "lablink_provision_run_duration_seconds_sum{action=\"launch\",outcome=\"succeeded\"} 7.0\n",
            "lablink_vms{status=\"running\",assigned=\"false\"} 1\n",
            "lablink_vms{status=\"unknown\",assigned=\"false\"} 1\n",
            "lablink_vms{status=\"error\",assigned=\"true\"} 0\n",
            "lablink_vms_free 1\n",
            "lablink_long_polls_parked 3\n",
            "lablink_waitlist_wait_seconds_sum 42.0\n",
            "lablink_waitlist_wait_seconds_count 1\n",
            "lablink_waitlist_length 2\n",
            "lablink_build_info{version=\"",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
