//! `/admin/logs/<hostname>`: a VM's shipped logs, tailed live, all lines or errors only.

use maud::{Markup, html};

use super::{Viewer, shell};
use crate::model::log_errors::ErrorFilter;
use crate::store::logs::LogKind;

pub struct Tail<'a> {
    pub kind: LogKind,
    /// The newest batches (sequence, text), oldest first.
    pub chunks: &'a [(u64, String)],
}

pub fn page(viewer: &Viewer, host: &str, tails: &[Tail], errors_only: bool) -> Markup {
    let mut resume = tails
        .iter()
        .map(|t| {
            let next = t.chunks.last().map_or(0, |(seq, _)| seq + 1);
            format!("{}={next}", t.kind.slug())
        })
        .collect::<Vec<_>>()
        .join("&");
    if errors_only {
        resume.push_str("&errors_only=true");
    }
    let (toggle, toggle_text) = if errors_only {
        (format!("/admin/logs/{host}"), "Show all lines")
    } else {
        (
            format!("/admin/logs/{host}?errors_only=true"),
            "Errors only",
        )
    };
    shell(
        viewer,
        "/admin/instances",
        &format!("Logs of {host}"),
        html! {
            h1 { "Logs of " (host) @if errors_only { " (errors only)" } }
            p {
                a href="/admin/instances" { "Back to the instances" }
                " · "
                a #errors-toggle href=(toggle) aria-pressed=(errors_only) { (toggle_text) }
            }
            div hx-ext="sse" sse-connect={"/admin/logs/" (host) "/events?" (resume)} {
                @for tail in tails {
                    @let kind = tail.kind.slug();
                    @let text = shown(tail.chunks, errors_only);
                    section.log {
                        h2 { (tail.kind.title()) }
                        pre.output.tail #{"log-" (kind)} sse-swap=(kind) hx-swap="beforeend" {
                            @if tail.chunks.is_empty() {
                                span.note { "Nothing shipped yet." } "\n"
                            } @else if text.is_empty() {
                                span.note { "No error lines." } "\n"
                            }
                            (text)
                        }
                    }
                }
            }
        },
    )
}

fn shown(chunks: &[(u64, String)], errors_only: bool) -> String {
    let mut filter = ErrorFilter::default();
    chunks
        .iter()
        .map(|(_, text)| {
            if errors_only {
                filter.feed(text)
            } else {
                text.clone()
            }
        })
        .collect()
}
