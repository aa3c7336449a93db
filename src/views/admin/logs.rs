//! `/admin/logs/<hostname>`: a VM's shipped logs, tailed live.

use maud::{Markup, html};

use super::{Viewer, shell};
use crate::store::logs::LogKind;

pub struct Tail<'a> {
    pub kind: LogKind,
    /// The newest batches (sequence, text), oldest first.
    pub chunks: &'a [(u64, String)],
}

pub fn page(viewer: &Viewer, host: &str, tails: &[Tail]) -> Markup {
    let resume = tails
        .iter()
        .map(|t| {
            let next = t.chunks.last().map_or(0, |(seq, _)| seq + 1);
            format!("{}={next}", t.kind.slug())
        })
        .collect::<Vec<_>>()
        .join("&");
    shell(
        viewer,
        "/admin/instances",
        &format!("Logs of {host}"),
        html! {
            h1 { "Logs of " (host) }
            p { a href="/admin/instances" { "Back to the instances" } }
            div hx-ext="sse" sse-connect={"/admin/logs/" (host) "/events?" (resume)} {
                @for tail in tails {
                    @let kind = tail.kind.slug();
                    section.log {
                        h2 { (tail.kind.title()) }
                        pre.output.tail #{"log-" (kind)} sse-swap=(kind) hx-swap="beforeend" {
                            @if tail.chunks.is_empty() { span.note { "Nothing shipped yet." } "\n" }
                            @for (_, text) in tail.chunks { (text) }
                        }
                    }
                }
            }
        },
    )
}
