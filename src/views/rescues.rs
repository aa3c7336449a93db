//! The participant's saved files (`/my-files`) and the admin's list of rescues.

use maud::{Markup, html};

use super::admin::{Viewer, shell, time};
use super::layout::page;
use crate::model::{Rescue, RescueOutcome};

fn size(r: &Rescue) -> String {
    match &r.outcome {
        RescueOutcome::Saved { bytes, .. } => human_bytes(*bytes),
        _ => "—".into(),
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn outcome(r: &Rescue) -> String {
    match &r.outcome {
        RescueOutcome::Saved {
            files, left_out, ..
        } if *left_out > 0 => format!("saved {files} file(s); {left_out} too big to keep"),
        RescueOutcome::Saved { files, .. } if r.expired => format!("{files} file(s), expired"),
        RescueOutcome::Saved { files, .. } => format!("saved {files} file(s)"),
        RescueOutcome::Failed { why } => format!("failed: {why}"),
        other => other.as_str().replace('_', " "),
    }
}

/// `/my-files`: the archives kept of this participant's seats.
pub fn participant(rescues: &[Rescue], keep_days: u64) -> Markup {
    let kept: Vec<&Rescue> = rescues.iter().filter(|r| r.has_archive()).collect();
    page(
        "Your saved files",
        &[],
        html! {
            h1 { "Your saved files" }
            @if kept.is_empty() {
                p #no-files { "Nothing saved for you yet. When your seat ends (released, moved or the workshop closes), your files are saved here." }
            } @else {
                p { "Your files from the desktop, saved when your seat ended. They are kept " (keep_days) " days." }
                ul #my-files {
                    @for r in &kept {
                        li {
                            a href=(format!("/my-files/{}", r.id)) download { (r.hostname) " — " (time(r.requested_at)) }
                            " (" (outcome(r)) ", " (size(r)) ")"
                        }
                    }
                }
            }
            p { a href="/my-vm" { "Back to your seat" } }
        },
    )
}

/// `/admin/rescues`: every rescue and its archive.
pub fn admin(viewer: &Viewer, rescues: &[Rescue]) -> Markup {
    shell(
        viewer,
        "/admin/rescues",
        "Rescued files",
        html! {
            h1 { "Rescued files" }
            p.note { "Participants' files, saved through each VM's agent before a destroy or a seat's reset." }
            @if rescues.iter().any(Rescue::has_archive) {
                p { a.button href="/admin/rescues/all.zip" download { "Download all" } }
            }
            @if rescues.is_empty() {
                p.note { "No rescues yet." }
            } @else {
                div.scroll {
                    table.pool #rescues {
                        thead { tr { th { "VM" } th { "Participant" } th { "Reason" } th { "Outcome" } th { "Size" } th { "When" } th { "Download" } } }
                        tbody {
                            @for r in rescues {
                                tr data-outcome=(r.outcome.as_str()) {
                                    td { (r.hostname) }
                                    td { (r.email) }
                                    td { (r.reason.as_str()) }
                                    td { (outcome(r)) }
                                    td { (size(r)) }
                                    td { (time(r.requested_at)) }
                                    td {
                                        @if r.has_archive() {
                                            a href=(format!("/admin/rescues/{}", r.id)) download { "zip" }
                                        } @else { "—" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_well() {
        assert_eq!(super::human_bytes(12), "12 bytes");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
