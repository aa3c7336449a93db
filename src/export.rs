//! The pool as a download (CSV or JSON): assignments and startup timings for the
//! workshop's records. Chrome Remote Desktop codes and PINs are left out: they are
//! credentials, not records.

use serde::Serialize;

use crate::model::Vm;

#[derive(Serialize)]
struct Row<'a> {
    hostname: &'a str,
    status: &'a str,
    gpu_health: &'a str,
    in_use: bool,
    participant_email: &'a str,
    assigned_at: String,
    terraform_apply_seconds: Option<f64>,
    cloud_init_seconds: Option<f64>,
    container_seconds: Option<f64>,
    total_startup_seconds: Option<f64>,
    reboot_count: u32,
    created_at: String,
}

fn rows(pool: &[Vm]) -> Vec<Row<'_>> {
    pool.iter()
        .map(|vm| Row {
            hostname: &vm.hostname,
            status: vm.status.map_or("", |s| s.as_str()),
            gpu_health: vm.health.as_ref().map_or("", |h| h.as_str()),
            in_use: vm.in_use,
            participant_email: vm.assignment.as_ref().map_or("", |a| a.email.as_str()),
            assigned_at: vm
                .assignment
                .as_ref()
                .map_or_else(String::new, |a| a.assigned_at.to_rfc3339()),
            terraform_apply_seconds: vm.timings.terraform_apply.duration_seconds,
            cloud_init_seconds: vm.timings.cloud_init.duration_seconds,
            container_seconds: vm.timings.container.duration_seconds,
            total_startup_seconds: vm
                .timings
                .any_measured()
                .then(|| vm.timings.total_seconds()),
            reboot_count: vm.reboot_count,
            created_at: vm.created_at.to_rfc3339(),
        })
        .collect()
}

pub fn csv(pool: &[Vm]) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    for row in rows(pool) {
        // Writing plain fields into memory cannot fail.
        let _ = out.serialize(row);
    }
    out.into_inner().unwrap_or_default()
}

pub fn json(pool: &[Vm]) -> Vec<u8> {
    serde_json::to_vec_pretty(&rows(pool)).unwrap_or_default()
}
