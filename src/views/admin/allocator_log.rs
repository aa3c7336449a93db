//! `/admin/allocator-log`: the allocator's own newest log lines, by level, live.

use maud::{Markup, html};

use super::{Viewer, shell, time};
use crate::logging::{LogLevel, LogLine};

pub fn page(viewer: &Viewer, level: LogLevel, lines: &[LogLine], next: u64) -> Markup {
    shell(
        viewer,
        "/admin/allocator-log",
        "Allocator log",
        html! {
            h1 { "Allocator log" }
            p.note {
                "The newest lines this allocator wrote to its log (server.log_ring_lines keeps "
                "them in memory; the journal has them all). New lines appear as they are written."
            }
            nav.levels aria-label="Level" {
                "Show: "
                @for choice in LogLevel::CHOICES {
                    a href={"/admin/allocator-log?level=" (choice.name())}
                        aria-current=[(choice == level).then_some("page")] {
                        (choice.name()) @if choice != LogLevel::Error { " and above" }
                    }
                    " "
                }
            }
            div hx-ext="sse"
                sse-connect={"/admin/allocator-log/events?level=" (level.name()) "&after=" (next)} {
                pre.output.tail #allocator-log sse-swap="line" hx-swap="beforeend" {
                    @if lines.is_empty() { span.note { "No lines at this level yet." } "\n" }
                    (lines_fragment(lines))
                }
            }
        },
    )
}

/// Lines as the page shows them, one per line, the level marked for styling.
pub fn lines_fragment(lines: &[LogLine]) -> Markup {
    html! {
        @for line in lines {
            span.{"level-" (line.level.name())} data-id=(line.id) {
                (time(line.at)) " " (line.level.name().to_uppercase()) " " (line.target) ": "
                (line.message)
            }
            "\n"
        }
    }
}
