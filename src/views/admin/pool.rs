//! Fragments of the pool that the live pages re-render on every change: the counts, the
//! startup chart and the instances table body.

use maud::{Markup, html};

use super::{Viewer, csrf_field, seconds};
use crate::model::{Counts, DesktopKind, SeatSeries, Vm};

pub fn counts(c: &Counts) -> Markup {
    let card = |label: &str, value: usize, class: &str| {
        html! { div.card.(class) { span.value { (value) } span.label { (label) } } }
    };
    html! {
        (card("VMs", c.total, "total"))
        (card("Initializing", c.initializing, "init"))
        (card("Running", c.running, "running"))
        (card("Error", c.error, "bad"))
        (card("Rebooting", c.rebooting, "init"))
        (card("Free", c.free, "free"))
        (card("Assigned", c.assigned, "assigned"))
        (card("Unhealthy GPU", c.unhealthy, "bad"))
    }
}

const CHART_WIDTH: f64 = 800.0;
const BAR_HEIGHT: f64 = 18.0;
const LABEL_WIDTH: f64 = 250.0;

/// Horizontal stacked bars of each VM's startup phases (Terraform, cloud-init, container),
/// as inline SVG: no script, nothing the CSP has to allow.
pub fn startup_chart(pool: &[Vm]) -> Markup {
    let measured: Vec<&Vm> = pool.iter().filter(|vm| vm.timings.any_measured()).collect();
    if measured.is_empty() {
        return html! { p.note { "No startup timings reported yet." } };
    }
    let longest = measured
        .iter()
        .map(|vm| vm.timings.total_seconds())
        .fold(1.0_f64, f64::max);
    let scale = (CHART_WIDTH - LABEL_WIDTH - 60.0) / longest;
    let height = BAR_HEIGHT * measured.len() as f64 + 30.0;
    let mut total = 0.0;
    for vm in &measured {
        total += vm.timings.total_seconds();
    }
    let mean = total / measured.len() as f64;
    html! {
        figure.chart {
            svg viewBox={"0 0 " (CHART_WIDTH) " " (height)} role="img"
                aria-label="Startup duration per VM" {
                @for (i, vm) in measured.iter().enumerate() {
                    @let y = i as f64 * BAR_HEIGHT;
                    @let t = &vm.timings;
                    @let tf = t.terraform_apply.duration_seconds.unwrap_or(0.0) * scale;
                    @let ci = t.cloud_init.duration_seconds.unwrap_or(0.0) * scale;
                    @let ct = t.container.duration_seconds.unwrap_or(0.0) * scale;
                    text x="0" y=(y + 13.0) class="label" { title { (vm.hostname) } (vm.hostname) }
                    rect.tf x=(LABEL_WIDTH) y=(y + 3.0) width=(tf) height=(BAR_HEIGHT - 6.0) {}
                    rect.ci x=(LABEL_WIDTH + tf) y=(y + 3.0) width=(ci) height=(BAR_HEIGHT - 6.0) {}
                    rect.ct x=(LABEL_WIDTH + tf + ci) y=(y + 3.0) width=(ct) height=(BAR_HEIGHT - 6.0) {}
                    text x=(LABEL_WIDTH + tf + ci + ct + 4.0) y=(y + 13.0) class="value" { (seconds(Some(t.total_seconds()))) }
                }
            }
            figcaption {
                span.key.tf { "Terraform" } " " span.key.ci { "cloud-init" } " " span.key.ct { "container" }
                " · mean " (seconds(Some(mean))) " over " (measured.len()) " VM(s)"
            }
        }
    }
}

/// One row per VM, with its actions, and the sparkline of its seat's session metrics
/// (`sessions`: those of the seats held now).
pub fn instance_rows(pool: &[Vm], sessions: &[SeatSeries], viewer: &Viewer) -> Markup {
    html! {
        @if pool.is_empty() {
            tr { td colspan="13" .note { "No VMs yet. " a href="/admin/create" { "Launch some." } } }
        }
        @for (i, vm) in pool.iter().enumerate() {
            tr id={"vm-" (vm.hostname)} data-status=(vm.status.map_or("", |s| s.as_str())) {
                td { (i + 1) }
                td.host { (vm.hostname) }
                td {
                    span.status.(vm.status.map_or("none", |s| s.as_str())) { (vm.status.map_or("—", |s| s.as_str())) }
                    @if let Some(since) = vm.unresponsive_since {
                        " " span.status.unresponsive title={"unresponsive since " (since.to_rfc3339())} {
                            "unresponsive"
                            @if let Some(seen) = vm.last_seen {
                                ", last seen " (ago(seen, viewer.now)) " ago"
                            }
                        }
                    }
                    @if vm.reset_pending {
                        " " span.status.init title="the last participant's desktop is being reset" { "resetting" }
                    }
                }
                td { (vm.health.as_ref().map_or("—", |h| h.as_str())) }
                td { (if vm.in_use { "Yes" } else { "No" }) }
                td.activity {
                    @if let Some(series) = sessions.iter().find(|s| crate::pool::usage::is_current_seat(vm, s)) {
                        (super::sessions::sparkline(series))
                    } @else if vm.assignment.is_some() {
                        span.note { "no samples yet" }
                    } @else {
                        "—"
                    }
                }
                td.assignee { (vm.assignment.as_ref().map_or("—", |a| a.email.as_str())) }
                td { (vm.assignment.as_ref().map_or("—", |a| a.pin.as_str())) }
                td { (seconds(vm.timings.terraform_apply.duration_seconds)) }
                td { (seconds(vm.timings.cloud_init.duration_seconds)) }
                td { (seconds(vm.timings.container.duration_seconds)) }
                td { (seconds(vm.timings.any_measured().then(|| vm.timings.total_seconds()))) }
                td.actions {
                    a.button.small href={"/admin/logs/" (vm.hostname)} { "Logs" }
                    @if vm.assignment.as_ref().is_some_and(|a| a.desktop == DesktopKind::Browser) {
                        a.button.small.peek href={"/admin/desktop/" (vm.hostname)}
                            title="view the participant's desktop (view only; they see a notice)" { "Desktop" }
                    }
                    @if viewer.is_admin() {
                    @let reboot = format!("/admin/instances/{}/reboot", vm.hostname);
                    form method="post" action=(reboot) hx-post=(reboot) hx-target="#flash"
                        hx-confirm={"Reboot " (vm.hostname) "?"} {
                        (csrf_field(viewer))
                        button.small type="submit" { "Reboot" }
                    }
                    (seat_actions(vm, viewer))
                    @let delete = format!("/api/vms/{}/destroy", vm.hostname);
                    form method="post" action=(delete) hx-post=(delete) hx-target="#flash"
                        hx-confirm={"Delete " (vm.hostname) "? Its participant loses the desktop."} {
                        (csrf_field(viewer))
                        button.small.danger type="submit" { "Delete" }
                    }
                    }
                }
            }
        }
    }
}

/// "42 s", "3 min", "2 h".
fn ago(then: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let s = (now - then).num_seconds().max(0);
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// Release, move, clear and revoke, folded away; release and revoke ask for the VM's
/// name. Kept as it is when the live table is redrawn (an open form keeps what the admin
/// typed), so every form is always there and the server says when one does not apply.
fn seat_actions(vm: &Vm, viewer: &Viewer) -> Markup {
    let host = vm.hostname.as_str();
    let action = |verb: &str| format!("/admin/instances/{host}/{verb}");
    html! {
        details.seat id={"seat-" (host)} hx-preserve="true" {
            summary { "Seat…" }
            form method="post" action=(action("move")) hx-post=(action("move")) hx-target="#flash" {
                (csrf_field(viewer))
                label { "Move participant to " input type="text" name="to" placeholder="first free VM" maxlength="253" size="14"; }
                button.small type="submit" { "Move" }
            }
            form method="post" action=(action("release")) hx-post=(action("release")) hx-target="#flash" {
                (csrf_field(viewer))
                label { "Type " code { (host) } " to release the seat " input type="text" name="confirm" required autocomplete="off" maxlength="253" size="14"; }
                button.small.danger type="submit" { "Release" }
            }
            form method="post" action=(action("clear")) hx-post=(action("clear")) hx-target="#flash" {
                (csrf_field(viewer))
                button.small type="submit" title="take back an unhealthy GPU report; waive a reset the agent cannot do" { "Clear flags" }
            }
            form method="post" action=(action("revoke")) hx-post=(action("revoke")) hx-target="#flash" {
                (csrf_field(viewer))
                label { "Type " code { (host) } " to revoke this VM's credential " input type="text" name="confirm" required autocomplete="off" maxlength="253" size="14"; }
                button.small.danger type="submit" { "Revoke" }
            }
        }
    }
}
