//! The regression gate: a run's figures against a baseline file (`bench/baseline.json`),
//! each within the tolerance the baseline states for it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::report::{Document, Settings};

/// Which way a figure improves.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// How far a figure may move the wrong way: `worst_ratio` is the worst now ÷ baseline
/// still accepted (at most 1 when higher is better, at least 1 when lower is).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub better: Better,
    pub worst_ratio: f64,
}

impl Tolerance {
    fn describe(&self) -> String {
        match self.better {
            Better::Higher => format!("≥ {}×", self.worst_ratio),
            Better::Lower => format!("≤ {}×", self.worst_ratio),
        }
    }

    /// A regression past `worst_ratio`; an improvement past its mirror (1 ÷ `worst_ratio`),
    /// better by more than the noise the tolerance allows for.
    fn verdict(&self, ratio: f64) -> Verdict {
        let (bad, good) = match self.better {
            Better::Higher => (ratio < self.worst_ratio, ratio > 1.0 / self.worst_ratio),
            Better::Lower => (ratio > self.worst_ratio, ratio < 1.0 / self.worst_ratio),
        };
        if bad {
            Verdict::Regression
        } else if good {
            Verdict::Improved
        } else {
            Verdict::Ok
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Within the tolerance.
    Ok,
    /// Better than the baseline by more than the tolerance: time for a new baseline.
    Improved,
    /// Worse than the tolerance allows.
    Regression,
    /// The run did not measure it.
    Missing,
}

/// One figure of the comparison.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Row {
    pub figure: String,
    pub baseline: f64,
    pub now: Option<f64>,
    pub ratio: Option<f64>,
    pub tolerance: Tolerance,
    pub verdict: Verdict,
}

/// Reads and checks a baseline file; the error names the file and what to fix.
pub fn load(path: &Path) -> Result<Document, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("baseline {}: cannot read it: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("baseline {}: {e}", path.display()))
}

fn parse(text: &str) -> Result<Document, String> {
    let baseline: Document =
        serde_json::from_str(text).map_err(|e| format!("not a bench document: {e}"))?;
    if baseline.tolerances.is_empty() {
        return Err("it states no tolerances (add a \"tolerances\" object: figure → {\"better\": \"higher\"|\"lower\", \"worst_ratio\": …})".into());
    }
    for (figure, tolerance) in &baseline.tolerances {
        match baseline.figures.get(figure) {
            Some(v) if *v > 0.0 => {}
            Some(v) => {
                return Err(format!(
                    "figure {figure} is {v}: a ratio needs a baseline above 0"
                ));
            }
            None => return Err(format!("tolerance for {figure}, which its figures lack")),
        }
        let w = tolerance.worst_ratio;
        let sensible = match tolerance.better {
            Better::Higher => w > 0.0 && w <= 1.0,
            Better::Lower => w >= 1.0 && w.is_finite(),
        };
        if !sensible {
            return Err(format!(
                "tolerance for {figure}: worst_ratio {w} does not fit better = {:?} (higher: 0 < worst_ratio ≤ 1; lower: worst_ratio ≥ 1)",
                tolerance.better
            ));
        }
    }
    Ok(baseline)
}

/// Compares `now` with the baseline's figures that have a tolerance. Settings that differ
/// from the baseline's are an error: those figures are not comparable.
pub fn compare(
    baseline: &Document,
    settings: &Settings,
    now: &BTreeMap<String, f64>,
) -> Result<Vec<Row>, String> {
    if baseline.settings != *settings {
        return Err(format!(
            "the baseline was taken with other settings ({}) than this run ({}): compare with a baseline of the same profile",
            settings_text(&baseline.settings),
            settings_text(settings)
        ));
    }
    Ok(baseline
        .tolerances
        .iter()
        .map(|(figure, tolerance)| {
            let base = baseline.figures[figure];
            let now = now.get(figure).copied();
            let ratio = now.map(|n| n / base);
            Row {
                figure: figure.clone(),
                baseline: base,
                now,
                ratio,
                tolerance: *tolerance,
                verdict: ratio.map_or(Verdict::Missing, |r| tolerance.verdict(r)),
            }
        })
        .collect())
}

fn settings_text(s: &Settings) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Counts of things that went wrong during a run. Any of them above zero means the run
/// measured something other than a working allocator (a ratio cannot show that: a server
/// that stops parking long-polls uses *less* memory per request), so it fails the gate
/// whatever the baseline says.
const MUST_BE_ZERO: [&str; 7] = [
    "claim_errors",
    "health_errors",
    "parked_not_parked",
    "wake_missed",
    "heartbeat_errors",
    "frozen_unseen",
    "wall_errors",
];

/// What went wrong during the run, if anything (see `MUST_BE_ZERO`).
pub fn broken(figures: &BTreeMap<String, f64>) -> Option<String> {
    let wrong: Vec<String> = MUST_BE_ZERO
        .iter()
        .filter_map(|name| {
            figures
                .get(*name)
                .filter(|v| **v > 0.0)
                .map(|v| format!("{name} = {v}"))
        })
        .collect();
    (!wrong.is_empty()).then(|| format!("the run itself failed: {}", wrong.join(", ")))
}

/// The comparison as a Markdown table (readable in a terminal and in a CI step summary).
pub fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| figure | baseline | now | ratio | tolerance | verdict |\n|---|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        let verdict = match r.verdict {
            Verdict::Ok => "ok",
            Verdict::Improved => "improved",
            Verdict::Regression => "REGRESSION",
            Verdict::Missing => "MISSING",
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {verdict} |\n",
            r.figure,
            number(r.baseline),
            r.now.map_or("—".into(), number),
            r.ratio.map_or("—".into(), |x| format!("{x:.2}×")),
            r.tolerance.describe(),
        ));
    }
    t
}

fn number(x: f64) -> String {
    match x.abs() {
        a if a >= 1000.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        _ => format!("{x:.3}"),
    }
}

/// What failed the gate, if anything: the figures that regressed or were not measured.
pub fn failures(rows: &[Row]) -> Option<String> {
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Regression | Verdict::Missing))
        .map(|r| match (r.now, r.ratio) {
            (Some(now), Some(ratio)) => format!(
                "{} is {} against {} ({ratio:.2}×; tolerance {})",
                r.figure,
                number(now),
                number(r.baseline),
                r.tolerance.describe()
            ),
            _ => format!("{} was not measured", r.figure),
        })
        .collect();
    (!failed.is_empty()).then(|| format!("regression: {}", failed.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BenchArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    /// The gate CI and the nightly run use: each committed baseline was taken with the
    /// settings its profile runs with, or every comparison would be refused.
    #[test]
    fn the_committed_baselines_have_their_profiles_settings() {
        for (file, args) in [
            ("bench/baseline.json", &["bench"][..]),
            ("bench/baseline-smoke.json", &["bench", "--smoke"][..]),
        ] {
            let baseline =
                load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).expect("a baseline");
            let args = Cli::parse_from(args).bench.profiled();
            assert_eq!(baseline.settings, Settings::of(&args), "{file}");
        }
    }

    fn settings() -> Settings {
        Settings {
            clients: 64,
            seconds: 3,
            pool: 100_000,
            parked: 5000,
            wakes: 50,
            heartbeat_vms: 0,
            heartbeat_every: 15,
            heartbeat_run: 30,
            frozen: 0,
            desktop_streams: 0,
            wall_seats: 0,
            wall_run: 30,
            broadcast_viewers: 0,
        }
    }

    /// A baseline with the gate's three figures and tolerances.
    fn baseline_text() -> String {
        serde_json::json!({
            "note": "test",
            "context": {"taken": "2026-12-07T00:00:00Z", "cores": 2, "load_average": 1.0,
                        "version": "0.1.0", "commit": "abc", "target": "x86_64-unknown-linux-musl"},
            "settings": settings(),
            "figures": {"claims_per_health": 0.40, "parked_longpoll_kib": 8.0, "start_ms": 50.0,
                        "health_rps": 40000.0},
            "tolerances": {
                "claims_per_health": {"better": "higher", "worst_ratio": 0.65},
                "parked_longpoll_kib": {"better": "lower", "worst_ratio": 1.35},
                "start_ms": {"better": "lower", "worst_ratio": 2.0}
            }
        })
        .to_string()
    }

    fn now(claims: f64, kib: f64, start: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("claims_per_health".to_owned(), claims),
            ("parked_longpoll_kib".to_owned(), kib),
            ("start_ms".to_owned(), start),
        ])
    }

    fn verdicts(rows: &[Row]) -> Vec<(&str, Verdict)> {
        rows.iter()
            .map(|r| (r.figure.as_str(), r.verdict))
            .collect()
    }

    #[test]
    fn within_tolerance_passes() {
        let base = parse(&baseline_text()).expect("the test baseline parses");
        // Each a little worse, but inside its tolerance.
        let rows = compare(&base, &settings(), &now(0.27, 10.7, 99.0)).expect("same settings");
        assert_eq!(
            verdicts(&rows),
            [
                ("claims_per_health", Verdict::Ok),
                ("parked_longpoll_kib", Verdict::Ok),
                ("start_ms", Verdict::Ok)
            ]
        );
        assert_eq!(failures(&rows), None);
        // A figure without a tolerance (health_rps) is not compared.
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn a_regression_beyond_the_tolerance_fails_and_is_named() {
        let base = parse(&baseline_text()).expect("the test baseline parses");
        let rows = compare(&base, &settings(), &now(0.20, 8.0, 120.0)).expect("same settings");
        assert_eq!(
            verdicts(&rows),
            [
                ("claims_per_health", Verdict::Regression),
                ("parked_longpoll_kib", Verdict::Ok),
                ("start_ms", Verdict::Regression)
            ]
        );
        let why = failures(&rows).expect("a failure");
        assert!(
            why.contains("claims_per_health is 0.200 against 0.400 (0.50×; tolerance ≥ 0.65×)"),
            "{why}"
        );
        assert!(
            why.contains("start_ms is 120.0 against 50.0 (2.40×; tolerance ≤ 2×)"),
            "{why}"
        );
        assert!(!why.contains("parked_longpoll_kib"), "{why}");
        let table = table(&rows);
        assert!(
            table.contains("| claims_per_health | 0.400 | 0.200 | 0.50× | ≥ 0.65× | REGRESSION |"),
            "{table}"
        );
        assert!(
            table.contains("| parked_longpoll_kib | 8.000 | 8.000 | 1.00× | ≤ 1.35× | ok |"),
            "{table}"
        );
    }

    #[test]
    fn an_improvement_beyond_the_tolerance_passes_and_says_so() {
        let base = parse(&baseline_text()).expect("the test baseline parses");
        let rows = compare(&base, &settings(), &now(0.68, 4.6, 20.0)).expect("same settings");
        assert!(
            rows.iter().all(|r| r.verdict == Verdict::Improved),
            "{rows:?}"
        );
        assert_eq!(failures(&rows), None);
    }

    #[test]
    fn a_figure_the_run_did_not_measure_fails() {
        let base = parse(&baseline_text()).expect("the test baseline parses");
        let mut figures = now(0.40, 8.0, 50.0);
        figures.remove("parked_longpoll_kib");
        let rows = compare(&base, &settings(), &figures).expect("same settings");
        let missing = rows
            .iter()
            .find(|r| r.figure == "parked_longpoll_kib")
            .expect("a row per tolerance");
        assert_eq!((missing.now, missing.verdict), (None, Verdict::Missing));
        assert!(
            table(&rows).contains("| parked_longpoll_kib | 8.000 | — | — | ≤ 1.35× | MISSING |")
        );
        assert_eq!(
            failures(&rows).expect("a failure"),
            "regression: parked_longpoll_kib was not measured"
        );
    }

    #[test]
    fn other_settings_are_refused() {
        let base = parse(&baseline_text()).expect("the test baseline parses");
        let mut other = settings();
        other.pool = 300;
        let e = compare(&base, &other, &now(0.4, 8.0, 50.0)).expect_err("refused");
        assert!(e.contains("pool 100000") && e.contains("pool 300"), "{e}");
    }

    #[test]
    fn bad_baseline_files_are_refused_with_what_to_fix() {
        let e = load(Path::new("/nonexistent/baseline.json")).expect_err("refused");
        assert!(
            e.starts_with("baseline /nonexistent/baseline.json: cannot read it"),
            "{e}"
        );

        let e = parse("{\"figures\": ").expect_err("refused");
        assert!(e.starts_with("not a bench document"), "{e}");

        let mut doc: serde_json::Value = serde_json::from_str(&baseline_text()).expect("JSON");
        doc["tolerances"] = serde_json::json!({});
        assert!(
            parse(&doc.to_string())
                .expect_err("refused")
                .contains("states no tolerances")
        );

        let mut doc: serde_json::Value = serde_json::from_str(&baseline_text()).expect("JSON");
        doc["figures"]
            .as_object_mut()
            .expect("figures")
            .remove("start_ms");
        assert_eq!(
            parse(&doc.to_string()).expect_err("refused"),
            "tolerance for start_ms, which its figures lack"
        );

        let mut doc: serde_json::Value = serde_json::from_str(&baseline_text()).expect("JSON");
        doc["tolerances"]["start_ms"]["worst_ratio"] = serde_json::json!(0.5);
        let e = parse(&doc.to_string()).expect_err("refused");
        assert!(
            e.starts_with("tolerance for start_ms: worst_ratio 0.5 does not fit"),
            "{e}"
        );

        let mut doc: serde_json::Value = serde_json::from_str(&baseline_text()).expect("JSON");
        doc["tolerances"]["start_ms"]["better"] = serde_json::json!("faster");
        assert!(
            parse(&doc.to_string())
                .expect_err("refused")
                .contains("unknown variant `faster`")
        );

        let mut doc: serde_json::Value = serde_json::from_str(&baseline_text()).expect("JSON");
        doc["figures"]["start_ms"] = serde_json::json!(0.0);
        assert!(
            parse(&doc.to_string())
                .expect_err("refused")
                .contains("a ratio needs a baseline above 0")
        );
    }

    #[test]
    fn a_run_with_errors_is_broken_whatever_its_ratios() {
        let mut figures = BTreeMap::from([
            ("claim_errors".to_string(), 0.0),
            ("parked_not_parked".to_string(), 0.0),
            ("claims_per_health".to_string(), 0.5),
        ]);
        assert_eq!(broken(&figures), None);
        figures.insert("parked_not_parked".into(), 12.0);
        figures.insert("wake_missed".into(), 1.0);
        assert_eq!(
            broken(&figures).as_deref(),
            Some("the run itself failed: parked_not_parked = 12, wake_missed = 1")
        );
    }
}
