//! Provisioning runs: the recent list, and one run's output streaming live.

use maud::{Markup, html};

use super::{Viewer, shell, time};
use crate::model::{Run, RunProgress};

pub fn run_list(recent: &[Run]) -> Markup {
    html! {
        @if recent.is_empty() {
            p.note { "No runs yet." }
        } @else {
            ul.runs {
                @for run in recent {
                    li {
                        a href={"/admin/runs/" (run.id)} { "#" (run.id) " " (run.action.describe()) }
                        " — " span.status.(run.state.describe()) { (run.state.describe()) }
                        @if let Some(p) = run.progress { " " (count(p)) }
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
        span.status.(run.state.describe()) { (run.state.describe()) }
        @if let Some(code) = run.exit_code { " (exit " (code) ")" }
        @if let Some(by) = &run.cancelled_by { " by " (by) }
        " · provider " (run.provider) " · requested by " (run.requested_by)
        @if let Some(from) = &run.requested_from { " from " (from) }
        " · started " (time(run.started_at))
        @if let Some(end) = run.ended_at { " · ended " (time(end)) }
    }
}

/// `done/total`, as the API's `progress` says it.
fn count(p: RunProgress) -> String {
    format!("{}/{}", p.done, p.total)
}

/// How far the run has come: "12/40" and a bar (nothing when the provider does not say).
pub fn progress(run: &Run) -> Markup {
    html! {
        @if let Some(p) = run.progress {
            @if p.total == 0 && p.done == 0 {
                span.note { "planning…" }
            } @else {
                strong.run-count { (count(p)) }
                " "
                progress value=(p.done) max=(p.total.max(p.done)) { (count(p)) }
                @if p.failed > 0 { " " span.status.failed { (p.failed) " failed" } }
            }
        }
    }
}

/// The button that stops a running run (SIGINT first: Terraform saves its state).
fn cancel_form(run: &Run, csrf: &str) -> Markup {
    let action = format!("/api/runs/{}/cancel", run.id);
    html! {
        form.inline method="post" action=(action) hx-post=(action)
            hx-target={"#run-cancel-result-" (run.id)} hx-swap="innerHTML" {
            input type="hidden" name="csrf_token" value=(csrf);
            button.small.danger type="submit" { "Cancel run" }
        }
        span #{"run-cancel-result-" (run.id)} {}
    }
}

/// The run's heading, state, progress and output; while it runs, new lines, the progress
/// and the final state arrive over SSE (resuming after the lines already shown), and a
/// button cancels it (`cancel`: the console's token, htmx also sends it as a header;
/// `None` for a helper, who may not cancel).
pub fn panel(run: &Run, lines: &[String], cancel: Option<&str>) -> Markup {
    let body = html! {
        h2 { "Run #" (run.id) ": " (run.action.describe()) }
        div.run-state #{"run-state-" (run.id)} sse-swap="state" {
            (summary(run))
            @if let Some(csrf) = cancel.filter(|_| !run.state.is_finished()) { " " (cancel_form(run, csrf)) }
        }
        p.run-progress #{"run-progress-" (run.id)} sse-swap="progress" { (progress(run)) }
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
            (panel(run, lines, viewer.is_admin().then_some(viewer.csrf)))
            p { a href="/admin/instances" { "Back to the instances" } }
        },
    )
}

/// The output lines of one SSE event: escaped, one per line.
pub fn lines_fragment(lines: &[String]) -> String {
    html! { @for line in lines { (line) "\n" } }.into_string()
}
