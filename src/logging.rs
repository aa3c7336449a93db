//! tracing setup: human-readable lines or JSON (for journald and log shippers), and the
//! ring of the newest lines the console shows. The filter comes from `LABLINK_LOG` (e.g.
//! `debug`, `lablink=debug,hyper=info`).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Utc};
use clap::ValueEnum;
use serde::Serialize;
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("LABLINK_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

pub fn init(format: LogFormat) {
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry()
        .with(filter())
        .with(RingLayer);
    let _ = match format {
        LogFormat::Text => registry.with(output).try_init(),
        // Each line carries the fields of the span it was written in (`span`, e.g. the
        // request's `request_id`) and of every span around it (`spans`).
        LogFormat::Json => registry
            .with(output.json().with_current_span(true).with_span_list(true))
            .try_init(),
    };
}

/// Only the ring, no output: for an allocator embedded in another program (the
/// integration tests), which keeps its own output. Does nothing when logging is set up.
pub fn init_ring_only() {
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(RingLayer)
        .try_init();
}

/// Most lines the ring keeps until the configuration says otherwise
/// (`server.log_ring_lines`).
const DEFAULT_RING_LINES: usize = 2000;

/// How severe a line is; ordered from the most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The filter levels the console and the API offer, most severe first.
    pub const CHOICES: [LogLevel; 4] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    /// One of [`LogLevel::CHOICES`] by name.
    pub fn parse(name: &str) -> Option<LogLevel> {
        LogLevel::CHOICES.into_iter().find(|l| l.name() == name)
    }

    fn of(level: &tracing::Level) -> LogLevel {
        match *level {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        }
    }
}

/// One line of the allocator's own log, as the ring keeps it.
#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    /// Counts up from 1 for the life of the process; a follower asks for lines after it.
    pub id: u64,
    pub at: DateTime<Utc>,
    pub level: LogLevel,
    /// The module that wrote it (`lablink::pool::launch`).
    pub target: String,
    /// The message and then the event's fields, `key=value`.
    pub message: String,
}

struct Lines {
    lines: VecDeque<LogLine>,
    capacity: usize,
    last_id: u64,
}

/// The newest lines of this process's log, for the console and `GET /api/allocator-log`.
/// The lines are the ones the journal gets (the same `LABLINK_LOG` filter), with VM
/// credentials masked as in run output; nothing logs other secrets in the first place.
pub struct LogRing {
    lines: Mutex<Lines>,
    /// The id of the newest line, for live followers.
    newest: watch::Sender<u64>,
}

impl LogRing {
    fn new(capacity: usize) -> LogRing {
        LogRing {
            lines: Mutex::new(Lines {
                lines: VecDeque::new(),
                capacity,
                last_id: 0,
            }),
            newest: watch::Sender::new(0),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps at most `capacity` lines from now on.
    pub fn set_capacity(&self, capacity: usize) {
        let mut ring = self.locked();
        ring.capacity = capacity;
        while ring.lines.len() > capacity {
            ring.lines.pop_front();
        }
    }

    fn push(&self, level: LogLevel, target: &str, message: String) {
        let id = {
            let mut ring = self.locked();
            if ring.capacity == 0 {
                return;
            }
            ring.last_id += 1;
            let line = LogLine {
                id: ring.last_id,
                at: Utc::now(),
                level,
                target: target.to_owned(),
                message: crate::shared_token::redact_vm_credentials(&message, "[redacted]"),
            };
            if ring.lines.len() == ring.capacity {
                ring.lines.pop_front();
            }
            ring.lines.push_back(line);
            ring.last_id
        };
        self.newest.send_replace(id);
    }

    /// Lines at `level` or more severe: with `after`, the oldest `limit` of those after
    /// that id; without, the newest `limit`. Oldest first, and the id a follower asks
    /// after next (the newest line looked at, kept or not). An `after` beyond the newest
    /// line is from before this process started: it reads from the oldest line.
    pub fn read(&self, level: LogLevel, after: Option<u64>, limit: usize) -> (Vec<LogLine>, u64) {
        let ring = self.locked();
        let wanted = |l: &&LogLine| l.level <= level;
        let Some(mut after) = after else {
            let mut out: Vec<LogLine> = ring
                .lines
                .iter()
                .rev()
                .filter(wanted)
                .take(limit)
                .cloned()
                .collect();
            out.reverse();
            return (out, ring.last_id);
        };
        if after > ring.last_id {
            after = 0;
        }
        let mut out = Vec::new();
        let mut seen = after;
        for line in ring.lines.iter().filter(|l| l.id > after) {
            if out.len() == limit {
                break;
            }
            seen = line.id;
            if wanted(&line) {
                out.push(line.clone());
            }
        }
        (out, seen)
    }

    /// Changes whenever a line is added (its value: the newest id).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }
}

static RING: LazyLock<LogRing> = LazyLock::new(|| LogRing::new(DEFAULT_RING_LINES));

/// This process's log ring.
pub fn ring() -> &'static LogRing {
    &RING
}

/// Feeds every event that passes the filter into [`ring`].
struct RingLayer;

impl<S: tracing::Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        // The console cannot show trace lines: kept, they would only push out the others.
        if *meta.level() == tracing::Level::TRACE {
            return;
        }
        let mut text = Fields::default();
        event.record(&mut text);
        ring().push(LogLevel::of(meta.level()), meta.target(), text.finish());
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

/// Longest line the ring keeps (in bytes; longer ones are cut, marked with "…"), so
/// its memory is bounded by its line count.
const MAX_LINE_BYTES: usize = 4096;

impl Fields {
    fn finish(mut self) -> String {
        if !self.rest.is_empty() {
            if !self.message.is_empty() {
                self.message.push(' ');
            }
            self.message.push_str(&self.rest);
        }
        if self.message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !self.message.is_char_boundary(cut) {
                cut -= 1;
            }
            self.message.truncate(cut);
            self.message.push('…');
        }
        self.message
    }

    fn field(&mut self, name: &str, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        if name == "message" {
            let _ = self.message.write_fmt(value);
        } else {
            if !self.rest.is_empty() {
                self.rest.push(' ');
            }
            let _ = write!(self.rest, "{name}={value}");
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != "message" && value.contains(char::is_whitespace) {
            self.field(field.name(), format_args!("{value:?}"));
        } else {
            self.field(field.name(), format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.field(field.name(), format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_and_filters_by_level() {
        let ring = LogRing::new(3);
        for (i, level) in [
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Debug,
            LogLevel::Error,
        ]
        .into_iter()
        .enumerate()
        {
            ring.push(level, "lablink::test", format!("line {}", i + 1));
        }
        let ids = |lines: Vec<LogLine>| lines.into_iter().map(|l| l.id).collect::<Vec<_>>();
        // Line 1 fell out; "warn" keeps warn and error.
        let (lines, next) = ring.read(LogLevel::Warn, None, 10);
        assert_eq!((ids(lines), next), (vec![2, 4], 4));
        let (lines, next) = ring.read(LogLevel::Debug, Some(2), 1);
        assert_eq!((ids(lines), next), (vec![3], 3));
        let (lines, next) = ring.read(LogLevel::Error, Some(2), 1);
        assert_eq!((ids(lines), next), (vec![4], 4));
        let (lines, next) = ring.read(LogLevel::Info, Some(4), 10);
        assert_eq!((ids(lines), next), (vec![], 4));
        // A follower from before a restart starts over.
        let (lines, _) = ring.read(LogLevel::Debug, Some(99), 10);
        assert_eq!(ids(lines), vec![2, 3, 4]);
        ring.set_capacity(1);
        assert_eq!(ids(ring.read(LogLevel::Debug, None, 10).0), vec![4]);
    }

    #[test]
    fn a_long_line_is_cut_at_a_character() {
        let mut fields = Fields::default();
        fields.field("message", format_args!("{}", "é".repeat(MAX_LINE_BYTES)));
        let line = fields.finish();
        assert!(line.ends_with('…'));
        assert!(line.len() <= MAX_LINE_BYTES + '…'.len_utf8());
        assert!(line.trim_end_matches('…').chars().all(|c| c == 'é'));
    }

    #[test]
    fn fields_follow_the_message_and_credentials_are_masked() {
        let ring = LogRing::new(10);
        let mut fields = Fields::default();
        fields.field("message", format_args!("run refused"));
        fields.field("by", format_args!("admin"));
        fields.field("reason", format_args!("{:?}", "over budget"));
        ring.push(LogLevel::Warn, "t", fields.finish());
        ring.push(
            LogLevel::Info,
            "t",
            "token lablink-vm:vm-1:ab:cdef used".into(),
        );
        let (lines, _) = ring.read(LogLevel::Debug, None, 10);
        assert_eq!(
            lines[0].message,
            "run refused by=admin reason=\"over budget\""
        );
        assert_eq!(lines[1].message, "token [redacted] used");
    }
}
