//! What the pool costs: hourly prices of instance types, the spend metered so far (per event,
//! and outside events), and the figures shown to the admin (spent, projected, cap).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Event, EventPhase};

/// AWS EC2 On-Demand, Linux, us-east-1, in USD per hour, as listed on the AWS pricing page
/// (recorded 2025). Other regions differ: `budget.prices` overrides or adds types.
pub const DEFAULT_PRICES: &[(&str, f64)] = &[
    ("g4dn.xlarge", 0.526),
    ("g4dn.2xlarge", 0.752),
    ("g4dn.4xlarge", 1.204),
    ("g4dn.8xlarge", 2.176),
    ("g4dn.12xlarge", 3.912),
    ("g4ad.xlarge", 0.378_53),
    ("g4ad.2xlarge", 0.541_17),
    ("g5.xlarge", 1.006),
    ("g5.2xlarge", 1.212),
    ("g5.4xlarge", 1.624),
    ("g5.8xlarge", 2.448),
    ("g5g.xlarge", 0.42),
    ("g5g.2xlarge", 0.556),
    ("g6.xlarge", 0.8048),
    ("g6.2xlarge", 0.9776),
    ("g6.4xlarge", 1.3232),
    ("g6e.xlarge", 1.861),
    ("g6e.2xlarge", 2.242_08),
    ("p3.2xlarge", 3.06),
];

/// Highest hourly price accepted in `budget.prices` (a typo guard).
const MAX_PRICE: f64 = 1000.0;

/// Parses `budget.prices`: `type=USD_per_hour` pairs, comma-separated (empty items are
/// skipped).
pub fn parse_prices(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut prices: Vec<(String, f64)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (kind, price) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not `instance_type=USD_per_hour`"))?;
        let kind = kind.trim();
        if kind.is_empty()
            || !kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!(
                "`{kind}` is not an instance type (letters, digits, `.`, `-`)"
            ));
        }
        let price = parse_usd(price)
            .filter(|p| *p <= MAX_PRICE)
            .ok_or_else(|| {
                format!(
                    "`{}` is not a price in USD per hour (0 to {MAX_PRICE})",
                    price.trim()
                )
            })?;
        if prices.iter().any(|(k, _)| k == kind) {
            return Err(format!("`{kind}` is priced twice"));
        }
        prices.push((kind.to_owned(), price));
    }
    Ok(prices)
}

/// A plain amount of dollars (`12`, `0.526`), finite and not negative.
pub fn parse_usd(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The cap of `budget.cap_usd`: `None` when empty or 0 (no cap).
pub fn parse_cap(text: &str) -> Result<Option<f64>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let cap = parse_usd(text)
        .ok_or_else(|| format!("`{}` is not an amount of US dollars", text.trim()))?;
    Ok((cap > 0.0).then_some(cap))
}

/// The hourly price of `machine_type`: `budget.prices` first, then the built-in table.
pub fn price_of(overrides: &[(String, f64)], machine_type: &str) -> Option<f64> {
    overrides
        .iter()
        .find(|(k, _)| k == machine_type)
        .map(|(_, p)| *p)
        .or_else(|| {
            DEFAULT_PRICES
                .iter()
                .find(|(k, _)| *k == machine_type)
                .map(|(_, p)| *p)
        })
}

/// When an event's VMs are charged to it: from its pre-warm to the end of its hard stop (or
/// its cancellation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventWindow {
    pub event: u64,
    pub from: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

impl EventWindow {
    pub fn of(event: &Event) -> EventWindow {
        EventWindow {
            event: event.id,
            from: event.plan.prewarm_at(),
            until: event.ended.as_ref().map(|e| e.at).or(event.cancelled_at),
        }
    }

    /// Seconds of `[a, b]` inside the window.
    fn overlap(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
        let start = a.max(self.from);
        let end = self.until.map_or(b, |u| b.min(u));
        seconds(end - start).max(0.0)
    }
}

fn seconds(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// What the pool has cost so far, metered as it runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    /// Up to when the cost has been counted; `None` before the first meter.
    pub metered_at: Option<DateTime<Utc>>,
    /// USD spent while no event ran.
    pub outside_events: f64,
    /// USD spent by each event (id → USD), from its pre-warm to its end.
    pub events: BTreeMap<u64, f64>,
}

impl Spend {
    /// Counts `vms` VMs at `price` (USD/hour) from the last meter to `now`, charged to the
    /// event for the part inside `window` and to "outside events" for the rest. An unknown
    /// price counts nothing.
    pub fn advance(
        &mut self,
        now: DateTime<Utc>,
        vms: usize,
        price: Option<f64>,
        window: Option<EventWindow>,
    ) {
        let Some(last) = self.metered_at else {
            self.metered_at = Some(now);
            return;
        };
        if now <= last {
            return;
        }
        if let Some(price) = price {
            let cost = |secs: f64| price * vms as f64 * secs / 3600.0;
            let total = seconds(now - last);
            let inside = window.map_or(0.0, |w| w.overlap(last, now));
            if let Some(w) = window.filter(|_| inside > 0.0) {
                *self.events.entry(w.event).or_default() += cost(inside);
            }
            if total > inside {
                self.outside_events += cost(total - inside);
            }
        }
        self.metered_at = Some(now);
    }

    pub fn of_event(&self, id: u64) -> f64 {
        self.events.get(&id).copied().unwrap_or(0.0)
    }
}

/// The cost of the pool as the admin sees it, for the running event or, without one, for
/// what runs outside events (projected over the next hour).
#[derive(Clone, Debug, PartialEq)]
pub struct CostFigures {
    pub currency: &'static str,
    pub machine_type: String,
    /// `None`: no price is known for the type; the cost is unknown and the cap not enforced.
    pub price_per_hour: Option<f64>,
    /// The event the figures are about; `None`: outside events.
    pub event: Option<u64>,
    /// VM records now.
    pub vms: usize,
    pub spent: f64,
    /// Hours the projection runs to: the event's end, or one hour outside events.
    pub hours_left: f64,
    /// Spent plus the VMs now running to the end (`None` when the price is unknown).
    pub projected: Option<f64>,
    pub cap: Option<f64>,
    pub warn_percent: u64,
    /// The projection has reached `warn_percent` of the cap.
    pub warn: bool,
    pub metered_at: Option<DateTime<Utc>>,
}

/// The hour a launch outside events is checked over.
pub const HOURS_OUTSIDE_EVENTS: f64 = 1.0;

/// Settings the figures are computed with.
#[derive(Clone, Debug)]
pub struct Pricing {
    pub machine_type: String,
    pub price_per_hour: Option<f64>,
    pub cap: Option<f64>,
    pub warn_percent: u64,
}

impl CostFigures {
    /// The figures at `now` of `spend` (not metered since `spend.metered_at`: the time
    /// since then is added at the current VM count), for `event` when it is running, else
    /// for outside events.
    pub fn current(
        spend: &Spend,
        event: Option<&Event>,
        vms: usize,
        pricing: &Pricing,
        now: DateTime<Utc>,
    ) -> CostFigures {
        let running = event.filter(|e| {
            matches!(
                e.phase(now),
                EventPhase::Warming | EventPhase::Open | EventPhase::Stopping
            )
        });
        let mut spend = spend.clone();
        let window = event
            .filter(|e| e.phase(now) != EventPhase::Planned)
            .map(EventWindow::of);
        spend.advance(now, vms, pricing.price_per_hour, window);
        match running {
            Some(e) => CostFigures::of(
                pricing,
                Some(e.id),
                vms,
                spend.of_event(e.id),
                e.seconds_left(now) as f64 / 3600.0,
                spend.metered_at,
            ),
            None => CostFigures::of(
                pricing,
                None,
                vms,
                spend.outside_events,
                HOURS_OUTSIDE_EVENTS,
                spend.metered_at,
            ),
        }
    }

    /// The figures of `event` whatever its phase: while it runs as `current`; before its
    /// pre-warm an estimate (its seats and spares from the pre-warm to the end); once over,
    /// what it cost.
    pub fn of_event(
        spend: &Spend,
        event: &Event,
        vms: usize,
        pricing: &Pricing,
        now: DateTime<Utc>,
    ) -> CostFigures {
        match event.phase(now) {
            EventPhase::Warming | EventPhase::Open | EventPhase::Stopping => {
                CostFigures::current(spend, Some(event), vms, pricing, now)
            }
            EventPhase::Planned => {
                let hours = seconds(event.plan.ends_at - event.plan.prewarm_at()) / 3600.0;
                CostFigures::of(
                    pricing,
                    Some(event.id),
                    event.plan.target_vms() as usize,
                    0.0,
                    hours,
                    spend.metered_at,
                )
            }
            EventPhase::Ended | EventPhase::Cancelled => CostFigures::of(
                pricing,
                Some(event.id),
                vms,
                spend.of_event(event.id),
                0.0,
                spend.metered_at,
            ),
        }
    }

    fn of(
        pricing: &Pricing,
        event: Option<u64>,
        vms: usize,
        spent: f64,
        hours_left: f64,
        metered_at: Option<DateTime<Utc>>,
    ) -> CostFigures {
        let projected = pricing
            .price_per_hour
            .map(|p| spent + vms as f64 * p * hours_left);
        let warn = match (projected, pricing.cap) {
            (Some(projected), Some(cap)) => projected * 100.0 >= cap * pricing.warn_percent as f64,
            _ => false,
        };
        CostFigures {
            currency: "USD",
            machine_type: pricing.machine_type.clone(),
            price_per_hour: pricing.price_per_hour,
            event,
            vms,
            spent,
            hours_left,
            projected,
            cap: pricing.cap,
            warn_percent: pricing.warn_percent,
            warn,
            metered_at,
        }
    }

    /// Why launching `count` more VMs is refused by the cap, if it is: the spend plus every
    /// VM (those running and the new ones) to the end would exceed it. Without a known price
    /// the cap cannot be enforced and nothing is refused.
    pub fn refuses_launch(&self, count: u32) -> Option<String> {
        let (price, cap) = (self.price_per_hour?, self.cap?);
        let total = self.spent + (self.vms + count as usize) as f64 * price * self.hours_left;
        if total <= cap {
            return None;
        }
        let until = match self.event {
            Some(_) => format!("to the event's end ({:.1} h)", self.hours_left),
            None => "over the next hour".to_owned(),
        };
        Some(format!(
            "Launching {count} VM(s) would exceed the budget cap of ${cap:.2} (budget.cap_usd): \
             ${spent:.2} spent, ${projected:.2} projected {until} with the {vms} VM(s) running, \
             ${total:.2} with the new ones at ${price:.4}/h each.",
            spent = self.spent,
            projected = self.projected.unwrap_or(self.spent),
            vms = self.vms,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventPlan;
    use crate::model::tests::t;

    #[test]
    fn prices_parse_and_override_the_table() {
        let parsed = parse_prices(" g5.xlarge=1.2 , my-type.large=0.5,, ").expect("valid");
        assert_eq!(
            parsed,
            vec![("g5.xlarge".into(), 1.2), ("my-type.large".into(), 0.5)]
        );
        assert_eq!(price_of(&parsed, "g5.xlarge"), Some(1.2));
        assert_eq!(price_of(&parsed, "g4dn.xlarge"), Some(0.526));
        assert_eq!(price_of(&parsed, "my-type.large"), Some(0.5));
        assert_eq!(price_of(&parsed, "x9.huge"), None);
        assert_eq!(parse_prices(""), Ok(vec![]));
        for bad in [
            "g5.xlarge",
            "g5.xlarge=",
            "g5.xlarge=-1",
            "g5.xlarge=1e3",
            "g5.xlarge=abc",
            "=1",
            "g5 xlarge=1",
            "g5.xlarge=5000",
            "g5.xlarge=1,g5.xlarge=2",
        ] {
            assert!(parse_prices(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn the_cap_is_dollars_and_zero_means_none() {
        assert_eq!(parse_cap(""), Ok(None));
        assert_eq!(parse_cap("0"), Ok(None));
        assert_eq!(parse_cap("250"), Ok(Some(250.0)));
        assert_eq!(parse_cap(" 99.5 "), Ok(Some(99.5)));
        assert!(parse_cap("-5").is_err());
        assert!(parse_cap("$100").is_err());
        assert!(parse_cap("NaN").is_err());
    }

    fn event() -> Event {
        let plan = EventPlan {
            name: "Course".into(),
            starts_at: t(3600),
            ends_at: t(3 * 3600),
            seats: 4,
            spare_percent: 0,
            prewarm_minutes: 30,
            join_code: String::new(),
            warn_minutes: vec![],
        };
        Event::new(7, plan, false, "admin", t(0))
    }

    #[test]
    fn spend_is_split_at_the_prewarm_and_the_end() {
        let e = event();
        let mut s = Spend::default();
        s.advance(t(0), 2, Some(1.0), Some(EventWindow::of(&e)));
        assert_eq!(s.metered_at, Some(t(0)));
        assert_eq!(s.outside_events, 0.0);
        // The pre-warm is at 1800 s: half an hour outside, half an hour for the event.
        s.advance(t(3600), 2, Some(1.0), Some(EventWindow::of(&e)));
        assert!((s.outside_events - 1.0).abs() < 1e-9);
        assert!((s.of_event(7) - 1.0).abs() < 1e-9);
        // Ended at 2 h: the hour after it is outside again.
        let mut ended = e.clone();
        ended.ended = Some(crate::model::EventEnd {
            at: t(2 * 3600),
            run_id: None,
            result: String::new(),
        });
        s.advance(t(3 * 3600), 4, Some(1.0), Some(EventWindow::of(&ended)));
        assert!((s.of_event(7) - 5.0).abs() < 1e-9);
        assert!((s.outside_events - 5.0).abs() < 1e-9);
        // Unknown price: time passes, nothing is counted.
        s.advance(t(4 * 3600), 4, None, None);
        assert_eq!(s.metered_at, Some(t(4 * 3600)));
        assert!((s.outside_events - 5.0).abs() < 1e-9);
    }

    #[test]
    fn figures_project_to_the_end_and_warn_before_the_cap() {
        let e = event();
        let pricing = Pricing {
            machine_type: "g5.xlarge".into(),
            price_per_hour: Some(2.0),
            cap: Some(20.0),
            warn_percent: 80,
        };
        let spend = Spend {
            metered_at: Some(t(3600)),
            outside_events: 0.0,
            events: BTreeMap::from([(7, 3.0)]),
        };
        // Half an hour unmetered at 3 VMs, then 1.5 h left.
        let f = CostFigures::current(&spend, Some(&e), 3, &pricing, t(5400));
        assert_eq!(f.event, Some(7));
        assert!((f.spent - 6.0).abs() < 1e-9);
        assert!((f.hours_left - 1.5).abs() < 1e-9);
        assert!((f.projected.expect("priced") - 15.0).abs() < 1e-9);
        assert!(!f.warn);
        // Half an hour at 4 VMs: 3 + 4 = 7 spent, 7 + 4 × 2 × 1.5 = 19 ≥ 80 % of 20.
        let f4 = CostFigures::current(&spend, Some(&e), 4, &pricing, t(5400));
        assert!(f4.warn);
        assert_eq!(f4.refuses_launch(0), None);
        let why = f4.refuses_launch(1).expect("over the cap");
        assert!(why.contains("$20.00"), "{why}");
        assert!(why.contains("$7.00 spent, $19.00 projected"), "{why}");
        assert!(why.contains("$22.00 with the new ones"), "{why}");
        // Outside events: one hour ahead.
        let outside = CostFigures::current(&spend, None, 1, &pricing, t(3600));
        assert_eq!(outside.event, None);
        assert!((outside.projected.expect("priced") - 2.0).abs() < 1e-9);
        // Planned: an estimate of seats from the pre-warm to the end (2.5 h × 4 × 2).
        let planned = CostFigures::of_event(&Spend::default(), &e, 9, &pricing, t(0));
        assert!((planned.projected.expect("priced") - 20.0).abs() < 1e-9);
        // No price: nothing refused, nothing projected.
        let unknown = Pricing {
            price_per_hour: None,
            ..pricing
        };
        let f = CostFigures::current(&spend, Some(&e), 100, &unknown, t(5400));
        assert_eq!(f.projected, None);
        assert_eq!(f.refuses_launch(100), None);
    }
}
