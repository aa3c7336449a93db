//! GPU health: NVML when the library loads (glibc builds on GPU VMs), else `nvidia-smi`
//! (works from the static build), else "N/A", reported once. Reported on change only; a
//! later good probe after "Unhealthy" is a change, so health always has a way back.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::api::{Allocator, CallError};
use super::config::GpuProbeKind;
use super::retry::{Gave, until_acknowledged};
use crate::model::Health;
use crate::process::{self, Limits, Outcome};

pub enum Probe {
    Nvml(Arc<Nvml>),
    NvidiaSmi {
        program: OsString,
        timeout: Duration,
    },
    Unavailable,
    Simulated,
}

impl Probe {
    pub async fn detect(kind: GpuProbeKind, timeout: Duration) -> Probe {
        let smi = || Probe::NvidiaSmi {
            program: "nvidia-smi".into(),
            timeout,
        };
        let nvml = || async {
            match tokio::task::spawn_blocking(Nvml::init).await {
                Ok(Ok(nvml)) => Some(Probe::Nvml(Arc::new(nvml))),
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "NVML not available");
                    None
                }
                Err(_) => None,
            }
        };
        match kind {
            GpuProbeKind::None => Probe::Unavailable,
            GpuProbeKind::Simulated => Probe::Simulated,
            GpuProbeKind::NvidiaSmi => smi(),
            GpuProbeKind::Nvml => nvml().await.unwrap_or(Probe::Unavailable),
            GpuProbeKind::Auto => match nvml().await {
                Some(p) => p,
                None => smi(),
            },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Probe::Nvml(_) => "NVML",
            Probe::NvidiaSmi { .. } => "nvidia-smi",
            Probe::Unavailable => "none",
            Probe::Simulated => "simulated",
        }
    }

    pub async fn check(&self, cancel: &CancellationToken) -> Health {
        match self {
            Probe::Unavailable => Health::NotAvailable,
            Probe::Simulated => Health::Healthy,
            Probe::Nvml(nvml) => {
                let nvml = nvml.clone();
                tokio::task::spawn_blocking(move || nvml_health(&nvml))
                    .await
                    .unwrap_or(Health::Unhealthy)
            }
            Probe::NvidiaSmi { program, timeout } => {
                let limits = Limits {
                    timeout: *timeout,
                    grace: Duration::from_secs(2),
                };
                match process::run(Command::new(program), None, limits, cancel, |_, _| {}).await {
                    Ok(Outcome::Exited(s)) if s.success() => Health::Healthy,
                    // 127: the shell's "command not found", as upstream treats it.
                    Ok(Outcome::Exited(s)) if s.code() == Some(127) => Health::NotAvailable,
                    Ok(Outcome::Exited(_) | Outcome::TimedOut | Outcome::Cancelled) => {
                        Health::Unhealthy
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Health::NotAvailable,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot run nvidia-smi");
                        Health::Unhealthy
                    }
                }
            }
        }
    }
}

/// Every GPU must answer a temperature query; no GPU at all is unhealthy (as nvidia-smi's
/// "No devices were found").
fn nvml_health(nvml: &Nvml) -> Health {
    let healthy = nvml.device_count().is_ok_and(|n| {
        n > 0
            && (0..n).all(|i| {
                nvml.device_by_index(i)
                    .and_then(|d| d.temperature(TemperatureSensor::Gpu))
                    .is_ok()
            })
    });
    if healthy {
        Health::Healthy
    } else {
        Health::Unhealthy
    }
}

/// Probes every `interval`, reports each change until acknowledged. Stops after reporting
/// "N/A" (no GPU tooling on this machine will not appear later).
/// `first_report` turns true once the first health value is acknowledged (or the monitor
/// ends), so the VM is not announced as running before its GPU was checked.
pub async fn monitor(
    alloc: Arc<Allocator>,
    probe: Probe,
    interval: Duration,
    first_report: tokio::sync::watch::Sender<bool>,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let _announce_on_exit = AnnounceOnDrop(first_report.clone());
    tracing::info!(probe = probe.name(), "GPU monitor started");
    let mut reported: Option<Health> = None;
    loop {
        let health = probe.check(&cancel).await;
        if cancel.is_cancelled() {
            return Ok(());
        }
        if reported.as_ref() != Some(&health) {
            let value = health.as_str().to_owned();
            match until_acknowledged("GPU health", &cancel, || alloc.report_gpu(&value)).await {
                Gave::Acknowledged => {
                    tracing::info!(gpu = %value, "GPU health reported");
                    reported = Some(health.clone());
                    first_report.send_replace(true);
                }
                Gave::Fatal(e) => return Err(e),
                Gave::Cancelled => return Ok(()),
            }
        }
        if health == Health::NotAvailable {
            tracing::info!("no GPU tooling found; GPU monitor stops");
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = cancel.cancelled() => return Ok(()),
        }
    }
}

struct AnnounceOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for AnnounceOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}
