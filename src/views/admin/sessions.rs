//! Session metrics in the console: a seat's sparkline (inline SVG, drawn here: no script,
//! nothing the CSP has to allow), the `/admin/sessions` summary (one row per seat, live
//! over the pool's event stream) and its CSV export.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Serialize;

use super::{Viewer, shell, time};
use crate::export::spreadsheet_safe;
use crate::model::SeatSeries;

const WIDTH: f64 = 120.0;
const HEIGHT: f64 = 28.0;
/// The in-use band under the lines.
const BAND: f64 = 4.0;
const PLOT: f64 = HEIGHT - BAND - 2.0;

/// "1 h 05 min", "12 min", "40 s".
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.0} %"))
}

fn mib(value: Option<u64>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v} MiB"))
}

/// What the sparkline shows, in words (its `<title>`, for screen readers and on hover).
fn described(series: &SeatSeries) -> String {
    let s = series.summary();
    let mut text = format!(
        "{} on {}: GPU mean {}, peak {}; memory peak {}; in use {} of {} sampled",
        series.email,
        series.hostname,
        pct(s.gpu_util_mean),
        pct(s.gpu_util_peak),
        mib(s.gpu_memory_peak_mib),
        duration(s.in_use_seconds),
        duration(s.sampled_seconds),
    );
    if let Some(connected) = s.connected_seconds {
        text.push_str(&format!("; desktop connected {}", duration(connected)));
    }
    text
}

/// The seat's GPU utilisation (solid line, 0–100 %), GPU memory (dashed, up to its peak)
/// and the time the software was in use (the band along the bottom), over the time it was
/// sampled.
pub fn sparkline(series: &SeatSeries) -> Markup {
    // No more points than the picture has pixels across.
    let series = &series.reduced_to(WIDTH as usize);
    let points = &series.points;
    let Some(first) = points.first() else {
        return html! { span.note { "no samples yet" } };
    };
    let t0 = first.at;
    let end = |i: usize| {
        points.get(i + 1).map_or_else(
            || points[i].at + chrono::Duration::milliseconds((points[i].seconds * 1000.0) as i64),
            |next| next.at,
        )
    };
    let span = (end(points.len() - 1) - t0).num_milliseconds().max(1) as f64;
    let x = |at: DateTime<Utc>| (at - t0).num_milliseconds() as f64 / span * WIDTH;
    // Each point is drawn at the middle of the time it stands for.
    let mid = |i: usize| (x(points[i].at) + x(end(i))) / 2.0;
    let peak_mem = points
        .iter()
        .filter_map(|p| p.gpu_memory_max_mib)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let line = |value: &dyn Fn(usize) -> Option<f64>| {
        let mut text = String::new();
        for i in 0..points.len() {
            if let Some(v) = value(i) {
                let y = 1.0 + PLOT - v.clamp(0.0, 1.0) * PLOT;
                text.push_str(&format!("{:.1},{:.1} ", mid(i), y));
            }
        }
        text
    };
    let util = line(&|i| points[i].gpu_util_mean.map(|u| u / 100.0));
    let mem = line(&|i| points[i].gpu_memory_max_mib.map(|m| m as f64 / peak_mem));
    let title = described(series);
    html! {
        svg.spark viewBox={"0 0 " (WIDTH) " " (HEIGHT)} width=(WIDTH) height=(HEIGHT)
            role="img" aria-label=(title) data-points=(points.len()) {
            title { (title) }
            rect.frame x="0" y="0" width=(WIDTH) height=(HEIGHT) {}
            @for (i, p) in points.iter().enumerate() {
                @if p.in_use == Some(true) {
                    rect.inuse x=(format!("{:.1}", x(p.at))) y=(HEIGHT - BAND)
                        width=(format!("{:.1}", (x(end(i)) - x(p.at)).max(0.5))) height=(BAND) {}
                }
            }
            polyline.mem points=(mem) {}
            polyline.util points=(util) {}
        }
    }
}

/// The summary's rows, re-sent over the pool's event stream on every change.
pub fn rows(seats: &[SeatSeries]) -> Markup {
    html! {
        @if seats.is_empty() {
            tr { td colspan="8" .note { "No session metrics yet: they arrive from the agents of assigned VMs every "
                "metrics.sample_seconds." } }
        }
        @for series in seats {
            @let s = series.summary();
            tr id={"session-" (series.hostname) "-" (series.assigned_at.timestamp_millis())} {
                td.assignee { (series.email) }
                td.host { (series.hostname) }
                td { (time(series.assigned_at)) }
                td { (pct(s.gpu_util_mean)) }
                td { (pct(s.gpu_util_peak)) " · " (mib(s.gpu_memory_peak_mib)) }
                td { (duration(s.in_use_seconds)) }
                td { (s.connected_seconds.map_or_else(|| "unknown".to_owned(), duration)) }
                td { (sparkline(series)) }
            }
        }
    }
}

pub fn page(viewer: &Viewer, seats: &[SeatSeries]) -> Markup {
    shell(
        viewer,
        "/admin/sessions",
        "Sessions",
        html! {
            h1 { "Sessions" }
            p.note {
                "One row per seat held now or during the current event. The line is GPU "
                "utilisation, the dashed line GPU memory (up to its peak), the band the time "
                "the software was in use. "
                a href="/admin/export-sessions.csv" { "CSV" } " · "
                a href="/admin/export-sessions.json" { "JSON" } " (every seat)"
            }
            div.scroll hx-ext="sse" sse-connect="/admin/events/pool?view=sessions" {
                table.pool.sessions {
                    thead { tr {
                        th { "Participant" } th { "Host" } th { "Since" } th { "Mean GPU" }
                        th { "Peak GPU · memory" } th { "In use" } th { "Connected" } th { "Activity" }
                    } }
                    tbody #sessions sse-swap="sessions" { (rows(seats)) }
                }
            }
        },
    )
}

#[derive(Serialize)]
struct CsvRow<'a> {
    participant_email: Cow<'a, str>,
    hostname: Cow<'a, str>,
    assigned_at: String,
    first_sample_at: String,
    last_sample_at: String,
    samples: u64,
    gpu_util_mean_pct: Option<f64>,
    gpu_util_peak_pct: Option<f64>,
    gpu_memory_peak_mib: Option<u64>,
    in_use_seconds: f64,
    connected_seconds: Option<f64>,
    sampled_seconds: f64,
}

/// One summary row per seat.
pub fn csv(seats: &[SeatSeries]) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let stamp = |t: Option<DateTime<Utc>>| t.map_or_else(String::new, |t| t.to_rfc3339());
    for series in seats {
        let s = series.summary();
        let row = CsvRow {
            participant_email: spreadsheet_safe(Cow::Borrowed(&series.email)),
            hostname: spreadsheet_safe(Cow::Borrowed(&series.hostname)),
            assigned_at: series.assigned_at.to_rfc3339(),
            first_sample_at: stamp(s.first_at),
            last_sample_at: stamp(s.last_at),
            samples: s.samples,
            gpu_util_mean_pct: s.gpu_util_mean.map(|v| (v * 10.0).round() / 10.0),
            gpu_util_peak_pct: s.gpu_util_peak,
            gpu_memory_peak_mib: s.gpu_memory_peak_mib,
            in_use_seconds: s.in_use_seconds,
            connected_seconds: s.connected_seconds,
            sampled_seconds: s.sampled_seconds,
        };
        // Writing plain fields into memory cannot fail.
        let _ = out.serialize(row);
    }
    out.into_inner().unwrap_or_default()
}
