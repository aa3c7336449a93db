//! The admin pages in plain form: the pool, and a provisioning run's output.

use maud::{Markup, html};

use super::layout::page;
use crate::model::{Run, RunState, Vm};

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |s| format!("{s:.1}s"))
}

pub fn instances(vms: &[Vm], provider: &str, current: Option<&Run>, recent: &[Run]) -> Markup {
    page(
        "Instances",
        &[],
        html! {
            h1 { "Instances" }
            p.note { "Provider: " strong { (provider) } " · " (vms.len()) " VM(s)" }
            @if let Some(run) = current {
                p.busy { "In progress: " a href={"/admin/runs/" (run.id)} { "run #" (run.id) " — " (run.action.describe()) } }
            }
            section.actions {
                form method="post" action="/api/launch" {
                    label for="num_vms" { "Launch VMs" }
                    input #num_vms type="number" name="num_vms" min="1" max="500" value="1" required;
                    button type="submit" { "Launch" }
                }
                form method="post" action="/destroy" {
                    button.danger type="submit" { "Destroy all VMs" }
                }
            }
            table.pool {
                thead { tr {
                    th { "#" } th { "Hostname" } th { "Status" } th { "GPU" } th { "In use" }
                    th { "Participant" } th { "PIN" } th { "Terraform" } th { "Cloud-init" }
                    th { "Container" } th { "Total" } th { "" }
                } }
                tbody {
                    @for (i, vm) in vms.iter().enumerate() {
                        tr {
                            td { (i + 1) }
                            td { a href={"/api/vm-logs/" (vm.hostname)} { (vm.hostname) } }
                            td { (vm.status.map_or("—", |s| s.as_str())) }
                            td { (vm.health.as_ref().map_or("—", |h| h.as_str())) }
                            td { (if vm.in_use { "Yes" } else { "No" }) }
                            td { (vm.assignment.as_ref().map_or("—", |a| a.email.as_str())) }
                            td { (vm.assignment.as_ref().map_or("—", |a| a.pin.as_str())) }
                            td { (seconds(vm.timings.terraform_apply.duration_seconds)) }
                            td { (seconds(vm.timings.cloud_init.duration_seconds)) }
                            td { (seconds(vm.timings.container.duration_seconds)) }
                            td { (seconds(vm.timings.any_measured().then(|| vm.timings.total_seconds()))) }
                            td {
                                form method="post" action={"/api/vms/" (vm.hostname) "/destroy"} {
                                    button.small type="submit" { "Destroy" }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Recent runs" }
            ul.runs {
                @for run in recent {
                    li { a href={"/admin/runs/" (run.id)} { "#" (run.id) " " (run.action.describe()) } " — " (state_text(run.state)) " · " (run.requested_by) " · " (run.started_at.format("%Y-%m-%d %H:%M:%S UTC")) }
                }
            }
        },
    )
}

fn state_text(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::TimedOut => "timed out",
        RunState::Cancelled => "cancelled",
        RunState::Interrupted => "interrupted",
    }
}

pub fn run(run: &Run, lines: &[String]) -> Markup {
    page(
        &format!("Run #{}", run.id),
        &[],
        html! {
            @if !run.state.is_finished() {
                meta http-equiv="refresh" content="2";
            }
            h1 { "Run #" (run.id) ": " (run.action.describe()) }
            p {
                (state_text(run.state))
                @if let Some(code) = run.exit_code { " (exit " (code) ")" }
                " · provider " (run.provider) " · requested by " (run.requested_by)
                @if let Some(from) = &run.requested_from { " from " (from) }
                " · started " (run.started_at.format("%Y-%m-%d %H:%M:%S UTC"))
            }
            pre.output { @for line in lines { (line) "\n" } }
            p { a href="/admin/instances" { "Back to the instances" } }
        },
    )
}
