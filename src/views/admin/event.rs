//! `/admin/event`: the workshop as an event: plan it, watch where it stands, change it,
//! end it now or call it off.

use maud::{Markup, html};

use super::{Flash, Viewer, csrf_field, flash, shell, time};
use crate::model::budget::CostFigures;
use crate::model::{EventPhase, EventPlan, LaunchReason};
use crate::pool::event::EventStatus;

/// What the form shows: the stored plan, or what the admin sent when it was refused.
#[derive(Default)]
pub struct Draft {
    pub name: String,
    pub start: String,
    pub end: String,
    pub seats: String,
    pub spare_percent: String,
    pub prewarm_minutes: String,
    pub warn_minutes: String,
}

impl Draft {
    /// The form for a new event, with the configuration's defaults.
    pub fn new(spare_percent: u64, prewarm_minutes: u64, warn_minutes: &str) -> Draft {
        Draft {
            spare_percent: spare_percent.to_string(),
            prewarm_minutes: prewarm_minutes.to_string(),
            warn_minutes: warn_minutes.to_owned(),
            ..Draft::default()
        }
    }

    pub fn of(plan: &EventPlan) -> Draft {
        let local = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M").to_string();
        Draft {
            name: plan.name.clone(),
            start: local(plan.starts_at),
            end: local(plan.ends_at),
            seats: plan.seats.to_string(),
            spare_percent: plan.spare_percent.to_string(),
            prewarm_minutes: plan.prewarm_minutes.to_string(),
            warn_minutes: plan
                .warn_minutes
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

fn duration(seconds: i64) -> String {
    let (h, m) = (seconds / 3600, (seconds % 3600) / 60);
    if h > 0 {
        format!("{h} h {m:02} min")
    } else {
        format!("{m} min {:02} s", seconds % 60)
    }
}

pub fn page(
    viewer: &Viewer,
    status: Option<&EventStatus>,
    draft: &Draft,
    message: Option<&Flash>,
    cost: Option<(&CostFigures, &str)>,
) -> Markup {
    let live = status.filter(|s| !matches!(s.phase, EventPhase::Ended | EventPhase::Cancelled));
    shell(
        viewer,
        "/admin/event",
        "Event",
        html! {
            h1 { "Workshop event" }
            (flash(message))
            @if let Some(s) = status {
                (summary(viewer, s))
            }
            @if let Some((figures, provider)) = cost {
                (super::cost::section(figures, provider))
            }
            @match live {
                Some(s) if s.event.from_config => {
                    p.note { "This event is defined in the configuration file's " code { "event" }
                        " section: change it there and restart the allocator." }
                }
                _ if !viewer.is_admin() => {}
                Some(_) => {
                    h2 { "Change the event" }
                    (form(viewer, draft, "Save changes"))
                }
                None => {
                    h2 { "Plan an event" }
                    p.note {
                        "From the pre-warm on, LabLink keeps the seats plus spares running (and \
                         replaces VMs that die); participants see the time left and are warned \
                         at each mark; at the end their files are rescued and every VM is destroyed."
                    }
                    (form(viewer, draft, "Plan the event"))
                }
            }
        },
    )
}

fn summary(viewer: &Viewer, s: &EventStatus) -> Markup {
    let e = &s.event;
    let plan = &e.plan;
    let can_change = viewer.is_admin()
        && !e.from_config
        && !matches!(s.phase, EventPhase::Ended | EventPhase::Cancelled);
    html! {
        section #event data-phase=(s.phase.as_str()) {
            h2 { (plan.name) " " span.status.(s.phase.as_str()) #event-phase { (s.phase.as_str()) } }
            p { a #event-report href="/admin/event/report" { "Report so far" } }
            dl.assignment {
                dt { "Start" } dd { (time(plan.starts_at)) }
                dt { "End (hard stop)" } dd { (time(plan.ends_at)) }
                @if matches!(s.phase, EventPhase::Planned | EventPhase::Warming | EventPhase::Open) {
                    dt { "Time left" } dd #event-left { (duration(e.seconds_left(s.now))) }
                }
                dt { "Pre-warm" } dd { (time(plan.prewarm_at())) " (" (plan.prewarm_minutes) " min before the start)" }
                dt { "Seats" } dd { (plan.seats) " + " (plan.spare_percent) " % spare = " (plan.target_vms()) " VMs" }
                dt { "VMs up" } dd #event-up { (s.up) " (" (s.free) " free, " (s.taken) " taken)" }
                dt { "Countdown marks" } dd {
                    @for m in &plan.warn_minutes {
                        span.mark.sent[e.marks_sent.contains(m)] { (m) " min " }
                    }
                }
                dt { "Join code" } dd { @if plan.join_code.is_empty() { "access.join_code" } @else { "set for this event" } }
                @if e.replaced > 0 {
                    dt { "Replaced VMs" } dd { (e.replaced) }
                }
                @if let Some(end) = &e.ended {
                    dt { "Ended" } dd #event-result { (time(end.at)) ": " (end.result) }
                }
                @if let Some(run) = e.stop_run {
                    dt { "Hard stop" } dd { a href={"/admin/runs/" (run)} { "run #" (run) } " (rescuing files, then destroying)" }
                }
            }
            @if !e.launches.is_empty() {
                h3 { "Launches" }
                ul {
                    @for l in e.launches.iter().rev().take(10) {
                        li {
                            (time(l.at)) ": "
                            (match l.reason { LaunchReason::Prewarm => "pre-warm", LaunchReason::Replace => "replacement" })
                            " of " (l.count) " VM(s), " a href={"/admin/runs/" (l.run_id)} { "run #" (l.run_id) }
                        }
                    }
                }
            }
            @if can_change {
                div.actions {
                    form method="post" action="/admin/event/end" {
                        (csrf_field(viewer))
                        label {
                            input type="checkbox" name="confirm" value="yes" required;
                            " Stop now: rescue the participants' files, then destroy every VM"
                        }
                        button.danger type="submit" { "End the event now" }
                    }
                    form method="post" action="/admin/event/cancel" {
                        (csrf_field(viewer))
                        button type="submit" { "Call the event off (VMs stay)" }
                    }
                }
            }
        }
    }
}

fn form(viewer: &Viewer, d: &Draft, submit: &str) -> Markup {
    html! {
        form.grid method="post" action="/admin/event" {
            (csrf_field(viewer))
            label for="name" { "Name" }
            input #name type="text" name="name" required maxlength="120" value=(d.name) autocomplete="off";
            label for="start" { "Start (UTC)" }
            input #start type="datetime-local" name="start" required value=(d.start);
            label for="end" { "End, the hard stop (UTC)" }
            input #end type="datetime-local" name="end" required value=(d.end);
            label for="seats" { "Seats" }
            input #seats type="number" name="seats" required min="1" max="5000" value=(d.seats);
            label for="spare_percent" { "Spare VMs (% of the seats)" }
            input #spare_percent type="number" name="spare_percent" min="0" max="100" value=(d.spare_percent);
            label for="prewarm_minutes" { "Pre-warm (minutes before the start)" }
            input #prewarm_minutes type="number" name="prewarm_minutes" min="0" max="1440" value=(d.prewarm_minutes);
            label for="join_code" { "Join code (empty: keep the current one)" }
            input #join_code type="text" name="join_code" maxlength="128" autocomplete="off";
            label for="warn_minutes" { "Warn participants (minutes before the end)" }
            input #warn_minutes type="text" name="warn_minutes" value=(d.warn_minutes) placeholder="30,10,2";
            button type="submit" { (submit) }
        }
    }
}
