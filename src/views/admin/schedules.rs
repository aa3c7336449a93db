//! `/admin/scheduled-destruction`: timed teardown of the pool.

use maud::{Markup, html};

use super::{Flash, Viewer, csrf_field, flash, shell, time};
use crate::model::{Schedule, ScheduleStatus};

/// The recurrences the form offers (upstream's choices).
pub const RECURRENCES: [(&str, &str); 9] = [
    ("", "Once"),
    ("FREQ=DAILY", "Every day"),
    ("FREQ=WEEKLY;BYDAY=MO", "Every Monday"),
    ("FREQ=WEEKLY;BYDAY=TU", "Every Tuesday"),
    ("FREQ=WEEKLY;BYDAY=WE", "Every Wednesday"),
    ("FREQ=WEEKLY;BYDAY=TH", "Every Thursday"),
    ("FREQ=WEEKLY;BYDAY=FR", "Every Friday"),
    ("FREQ=WEEKLY;BYDAY=SA", "Every Saturday"),
    ("FREQ=WEEKLY;BYDAY=SU", "Every Sunday"),
];

pub struct Draft<'a> {
    pub name: &'a str,
    pub time: &'a str,
    pub rule: &'a str,
}

pub fn page(
    viewer: &Viewer,
    schedules: &[Schedule],
    draft: &Draft,
    message: Option<&Flash>,
) -> Markup {
    shell(
        viewer,
        "/admin/scheduled-destruction",
        "Scheduled destruction",
        html! {
            h1 { "Scheduled destruction" }
            (flash(message))
            @if viewer.is_admin() { form.grid method="post" action="/admin/scheduled-destruction" {
                (csrf_field(viewer))
                label for="schedule_name" { "Name" }
                input #schedule_name type="text" name="schedule_name" required maxlength="255"
                    value=(draft.name) autocomplete="off";
                label for="destruction_time" { "Destroy all VMs at (UTC)" }
                input #destruction_time type="datetime-local" name="destruction_time" required
                    value=(draft.time);
                label for="recurrence_rule" { "Repeat" }
                select #recurrence_rule name="recurrence_rule" {
                    @for (rule, label) in RECURRENCES {
                        option value=(rule) selected[rule == draft.rule] { (label) }
                    }
                }
                button type="submit" { "Schedule" }
            } }
            h2 { "Schedules" }
            @if schedules.is_empty() {
                p.note { "Nothing scheduled." }
            } @else {
                div.scroll {
                    table.pool #schedules {
                        thead { tr {
                            th { "Name" } th { "Next run" } th { "Repeat" } th { "Status" }
                            th { "Runs" } th { "Last result" } th { "By" } th { "" }
                        } }
                        tbody {
                            @for s in schedules {
                                tr id={"schedule-" (s.id)} {
                                    td { (s.schedule_name) }
                                    td { (s.next_run.map_or_else(|| "—".to_owned(), time)) }
                                    td { (repeat_label(s.recurrence_rule.as_deref())) }
                                    td { span.status.(s.status.as_str()) { (s.status.as_str()) } }
                                    td { (s.execution_count) }
                                    td { (s.last_execution_result.as_deref().unwrap_or("—")) }
                                    td { (s.created_by) }
                                    td {
                                        @if s.status == ScheduleStatus::Scheduled && viewer.is_admin() {
                                            form method="post" action={"/admin/scheduled-destruction/" (s.id) "/cancel"} {
                                                (csrf_field(viewer))
                                                button.small type="submit" { "Cancel" }
                                            }
                                        }
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

fn repeat_label(rule: Option<&str>) -> String {
    match rule {
        None => "Once".into(),
        Some(rule) => RECURRENCES
            .iter()
            .find(|(r, _)| *r == rule)
            .map_or_else(|| rule.to_owned(), |(_, label)| (*label).to_owned()),
    }
}
