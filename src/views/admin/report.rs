//! `/admin/event/report`: the post-event report as a console page, and as CSV (one row per
//! seat).

use std::borrow::Cow;

use maud::{Markup, html};

use super::{Viewer, shell, time};
use crate::export::spreadsheet_safe;
use crate::pool::report::{Report, SeatRow, Spread};

/// `?event=ID` for a past event's links; nothing for the current one.
fn which(report: &Report, past: bool) -> String {
    if past {
        format!("?event={}", report.event.id)
    } else {
        String::new()
    }
}

fn secs(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |s| format!("{s:.1} s"))
}

fn spread(s: &Spread) -> String {
    if s.n == 0 {
        return "none measured".to_owned();
    }
    format!(
        "p50 {} · p90 {} · max {} (n = {})",
        secs(s.p50),
        secs(s.p90),
        secs(s.max),
        s.n
    )
}

fn counts<'a>(map: impl IntoIterator<Item = (&'a String, &'a usize)>) -> String {
    let parts: Vec<String> = map.into_iter().map(|(k, n)| format!("{k}: {n}")).collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `past`: the report of an event named by `?event=`, so its links keep naming it.
pub fn page(viewer: &Viewer, r: &Report, past: bool) -> Markup {
    let q = which(r, past);
    let e = &r.event;
    shell(
        viewer,
        "/admin/event",
        "Event report",
        html! {
            h1 { "Report: " (e.name) }
            p.note {
                "Event #" (e.id) ", " (time(e.starts_at)) " → " (time(e.ends_at)) "; made "
                (time(r.generated_at)) " from " (r.journal_entries) " journal entries. "
                a #report-csv href={"/admin/event/report.csv" (q)} { "CSV (one row per seat)" } " · "
                a #report-json href={"/api/event/report" (q)} { "JSON" }
            }
            dl.assignment #report-figures {
                dt { "Seats used / planned" } dd #report-seats { (r.seats.used) " / " (r.seats.planned) }
                dt { "Claims" } dd #report-claims { (r.claims) }
                dt { "Claim to desktop" } dd #report-desktop { (spread(&r.claim_to_desktop)) }
                dt { "VM failures" } dd #report-failures { (r.failures.count) " (" (counts(&r.failures.by_kind)) ")" }
                dt { "Reboots" } dd #report-reboots { (r.reboots) }
                dt { "Re-seats / moves / releases" } dd #report-changes { (r.reseats) " / " (r.moves) " / " (r.releases) }
                dt { "Waiting list" } dd #report-waitlist { (r.waitlist.seated) " seated; wait " (spread(&r.waitlist.wait)) }
                dt { "Idle reclaims" } dd #report-reclaims { (r.idle_reclaims) }
                dt { "Rescues" } dd #report-rescues { (counts(&r.rescues)) }
                dt { "Launches" } dd #report-launches {
                    (r.launches.prewarm) " pre-warm, " (r.launches.replacements) " replacement VM(s); "
                    (r.launches.refused) " refused"
                }
                dt { "Marks announced" } dd #report-marks {
                    @if r.marks_announced.is_empty() { "none" }
                    @for m in &r.marks_announced { (m) " min " }
                }
                dt { "How it ended" } dd #report-ending {
                    (r.ending.phase.as_str())
                    @if let Some(at) = r.ending.at { ", " (time(at)) }
                    @if let Some(result) = &r.ending.result { ": " (result) }
                    @if let Some(run) = r.ending.run_id { " (" a href={"/admin/runs/" (run)} { "run #" (run) } ")" }
                }
                dt { "VMs left" } dd #report-vms-left { (r.vms_left) }
                dt { "Cost" } dd #report-cost {
                    @match &r.cost {
                        Some(c) if c.price_per_hour.is_some() => {
                            (format!("{:.2} {} spent", c.spent, c.currency))
                            @if let Some(p) = c.projected { (format!(", {p:.2} projected to the end")) }
                            @if let Some(cap) = c.cap { (format!(" (cap {cap:.2})")) }
                            " — " (c.machine_type) (format!(" at {:.3}/h", c.price_per_hour.unwrap_or_default()))
                        }
                        Some(c) => { "unknown: no price for " (c.machine_type) " (set budget.prices)" }
                        None => { "—" }
                    }
                }
            }
            h2 { "Seats" }
            @if r.per_seat.is_empty() {
                p.note #report-no-seats { "Nobody had a seat." }
            } @else {
                div.scroll {
                    table.pool #report-seats-table {
                        thead { tr {
                            th { "E-mail" } th { "VM(s)" } th { "Claimed" } th { "Desktop after" }
                            th { "Waited" } th { "Released" } th { "Moved" } th { "Re-seated" }
                            th { "Failures" } th { "Rescue" } th { "GPU avg / max" } th { "Holds now" }
                        } }
                        tbody {
                            @for s in &r.per_seat {
                                tr {
                                    td { (s.email) }
                                    td { (s.vms.join(", ")) }
                                    td { (s.claimed_at.map_or_else(|| "—".to_owned(), time)) }
                                    td { (secs(s.desktop_after_seconds)) }
                                    td { (secs(s.waited_seconds)) }
                                    td { (s.released + s.reclaimed) }
                                    td { (s.moved) }
                                    td { (s.reseated) }
                                    td { (s.failures) }
                                    td { (s.rescue.as_deref().unwrap_or("—")) }
                                    td { (percent(s.gpu_util_avg)) " / " (percent(s.gpu_util_max)) }
                                    td { (s.holds_now.as_deref().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The CSV's columns, in order.
pub const CSV_HEADER: [&str; 14] = [
    "email",
    "vms",
    "claimed_at",
    "desktop_after_seconds",
    "waited_seconds",
    "released",
    "reclaimed",
    "moved",
    "reseated",
    "failures",
    "rescue",
    "holds_now",
    "gpu_util_avg",
    "gpu_util_max",
];

fn row(s: &SeatRow) -> [String; 14] {
    let num = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    [
        spreadsheet_safe(Cow::Borrowed(&s.email)).into_owned(),
        s.vms.join(" "),
        s.claimed_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        num(s.desktop_after_seconds),
        num(s.waited_seconds),
        s.released.to_string(),
        s.reclaimed.to_string(),
        s.moved.to_string(),
        s.reseated.to_string(),
        s.failures.to_string(),
        s.rescue.clone().unwrap_or_default(),
        s.holds_now.clone().unwrap_or_default(),
        num(s.gpu_util_avg),
        num(s.gpu_util_max),
    ]
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.0} %"))
}

/// One row per seat, after a header row.
pub fn csv(r: &Report) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    // Writing plain fields into memory cannot fail.
    let _ = out.write_record(CSV_HEADER);
    for s in &r.per_seat {
        let _ = out.write_record(row(s));
    }
    out.into_inner().unwrap_or_default()
}

/// The CSV's download name: the event's name with only letters, digits, `-` and `_` kept.
pub fn csv_file_name(r: &Report) -> String {
    let mut name = String::new();
    for c in r.event.name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name: String = name.trim_matches('-').chars().take(60).collect();
    let name = if name.is_empty() {
        "event".to_owned()
    } else {
        name
    };
    format!("lablink-report-{}-{name}.csv", r.event.id)
}
