//! What a bench run measured: the lines it prints as it goes, and every figure with the
//! settings and the machine it was taken on, as one JSON document (`lablink bench --json`).
//! A baseline file is such a document with tolerances added (see [`super::gate`]).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::BenchArgs;
use super::gate::{Row, Tolerance};

/// Where a run's lines and figures go while it measures.
pub struct Record {
    /// With `--json` stdout carries only the document: the lines go to stderr.
    json: bool,
    figures: Mutex<BTreeMap<String, f64>>,
}

impl Record {
    pub fn new(json: bool) -> Record {
        Record {
            json,
            figures: Mutex::default(),
        }
    }

    /// Prints one line of the human-readable report.
    pub fn say(&self, line: impl Display) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    /// Keeps a figure for the document; one that could not be measured (NaN) is left out,
    /// so a comparison reports it missing.
    pub fn figure(&self, name: &str, value: f64) {
        if value.is_finite() {
            self.figures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_owned(), value);
        }
    }

    pub fn into_figures(self) -> BTreeMap<String, f64> {
        self.figures.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sizes a run was taken with: figures are comparable only between equal settings.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub clients: usize,
    pub seconds: u64,
    pub pool: u64,
    pub parked: u64,
    pub wakes: u64,
    pub heartbeat_vms: usize,
    pub heartbeat_every: u64,
    pub heartbeat_run: u64,
    pub frozen: usize,
    pub desktop_streams: usize,
    pub wall_seats: usize,
    pub wall_run: u64,
    /// Documents from before the broadcast phase ran none.
    #[serde(default)]
    pub broadcast_viewers: usize,
}

impl Settings {
    pub fn of(args: &BenchArgs) -> Settings {
        Settings {
            clients: args.clients,
            seconds: args.seconds,
            pool: args.pool,
            parked: args.parked,
            wakes: args.wakes,
            heartbeat_vms: args.heartbeat_vms,
            heartbeat_every: args.heartbeat_every,
            heartbeat_run: args.heartbeat_run,
            frozen: args.frozen,
            desktop_streams: args.desktop_streams,
            wall_seats: args.wall_seats,
            wall_run: args.wall_run,
            broadcast_viewers: args.broadcast_viewers,
        }
    }
}

/// The machine and the build a run measured.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Context {
    /// When the run started (UTC, RFC 3339).
    pub taken: String,
    /// Cores this process may use.
    pub cores: usize,
    /// The 1-minute load average when the run started: how busy the machine was.
    pub load_average: Option<f64>,
    /// `lablink version` of the server measured: version, commit and target.
    pub version: String,
    pub commit: String,
    pub target: String,
}

impl Context {
    /// The context of a run of `exe` starting now.
    pub async fn now(exe: &Path) -> Result<Context, String> {
        let out = tokio::process::Command::new(exe)
            .arg("version")
            .output()
            .await
            .map_err(|e| format!("cannot run {} version: {e}", exe.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(str::to_owned)
                .ok_or_else(|| format!("{} version did not say its {prefix}", exe.display()))
        };
        let load_average = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok());
        Ok(Context {
            taken: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average,
            version: field("lablink ")?,
            commit: field("commit ")?,
            target: field("target ")?,
        })
    }
}

/// A run's JSON document; a baseline is one with `tolerances` (and a `note` saying how
/// they were chosen).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub context: Context,
    pub settings: Settings,
    pub figures: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tolerances: BTreeMap<String, Tolerance>,
    /// The comparison with `--compare`'s baseline, row by row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparison: Vec<Row>,
}
