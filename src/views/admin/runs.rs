//! Provisioning runs: the recent list, and one run's output streaming live.

use maud::{Markup, html};

use super::{Viewer, shell, time};
use crate::model::{Run, RunState};

pub fn state_text(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::TimedOut => "timed out",
        RunState::Cancelled => "cancelled",
        RunState::Interrupted => "interrupted",
    }
}

pub fn run_list(recent: &[Run]) -> Markup {
    html! {
        @if recent.is_empty() {
            p.note { "No runs yet." }
        } @else {
            ul.runs {
                @for run in recent {
                    li {
                        a href={"/admin/runs/" (run.id)} { "#" (run.id) " " (run.action.describe()) }
                        " — " span.status.(state_text(run.state)) { (state_text(run.state)) }
                        " · " (run.requested_by) " · " (time(run.started_at))
                    }
                }
            }
        }
    }
}

/// What a run is doing, as one line.
pub fn summary(run: &Run) -> Markup {
    html! {
        span.status.(state_text(run.state)) { (state_text(run.state)) }
        @if let Some(code) = run.exit_code { " (exit " (code) ")" }
        " · provider " (run.provider) " · requested by " (run.requested_by)
        @if let Some(from) = &run.requested_from { " from " (from) }
        " · started " (time(run.started_at))
        @if let Some(end) = run.ended_at { " · ended " (time(end)) }
    }
}

/// The run's heading, state and output; while it runs, new lines and the final state
/// arrive over SSE (resuming after the lines already shown).
pub fn panel(run: &Run, lines: &[String]) -> Markup {
    let body = html! {
        h2 { "Run #" (run.id) ": " (run.action.describe()) }
        p.run-state #{"run-state-" (run.id)} sse-swap="state" { (summary(run)) }
        pre.output #{"run-output-" (run.id)} sse-swap="line" hx-swap="beforeend" {
            @for line in lines { (line) "\n" }
        }
    };
    html! {
        @if run.state.is_finished() {
            section.run { (body) }
        } @else {
            section.run hx-ext="sse"
                sse-connect={"/admin/runs/" (run.id) "/events?from=" (lines.len())}
                sse-close="done" { (body) }
        }
    }
}

pub fn page(viewer: &Viewer, run: &Run, lines: &[String]) -> Markup {
    shell(
        viewer,
        "",
        &format!("Run #{}", run.id),
        html! {
            (panel(run, lines))
            p { a href="/admin/instances" { "Back to the instances" } }
        },
    )
}

/// The output lines of one SSE event: escaped, one per line.
pub fn lines_fragment(lines: &[String]) -> String {
    html! { @for line in lines { (line) "\n" } }.into_string()
}
