//! GPU health: NVML when the library loads (glibc builds on GPU VMs), else `nvidia-smi`
//! (works from the static build), else "N/A", reported once. Reported on change only; a
//! later good probe after "Unhealthy" is a change, so health always has a way back.
//! Each probe also reads how busy the GPUs are; the heartbeat carries the latest figures.

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
use crate::process::{self, Limits, Outcome, Stream};

/// How busy the GPUs are: the busiest one's utilisation and the memory used on all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuUse {
    pub utilization_pct: f64,
    pub memory_used_mib: u64,
}

/// What `nvidia-smi` is asked: health is its exit status, the figures its output.
const SMI_QUERY: [&str; 2] = [
    "--query-gpu=utilization.gpu,memory.used",
    "--format=csv,noheader,nounits",
];

/// `nvidia-smi`'s answer to `SMI_QUERY`, one line per GPU (`37, 1024`); `None` when any
/// line is not two numbers (a GPU answering `[N/A]`).
pub fn parse_smi(lines: &[String]) -> Option<GpuUse> {
    let mut found: Option<GpuUse> = None;
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let (util, mem) = line.split_once(',')?;
        let util: f64 = util.trim().parse().ok()?;
        let mem: u64 = mem.trim().parse().ok()?;
        if !(0.0..=100.0).contains(&util) {
            return None;
        }
        let so_far = found.unwrap_or(GpuUse {
            utilization_pct: 0.0,
            memory_used_mib: 0,
        });
        found = Some(GpuUse {
            utilization_pct: so_far.utilization_pct.max(util),
            memory_used_mib: so_far.memory_used_mib.saturating_add(mem),
        });
    }
    found
}

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

    /// The GPUs' health, and how busy they are when the probe could tell.
    pub async fn check(&self, cancel: &CancellationToken) -> (Health, Option<GpuUse>) {
        match self {
            Probe::Unavailable => (Health::NotAvailable, None),
            Probe::Simulated => (Health::Healthy, None),
            Probe::Nvml(nvml) => {
                let nvml = nvml.clone();
                tokio::task::spawn_blocking(move || nvml_check(&nvml))
                    .await
                    .unwrap_or((Health::Unhealthy, None))
            }
            Probe::NvidiaSmi { program, timeout } => {
                let limits = Limits {
                    timeout: *timeout,
                    grace: Duration::from_secs(2),
                };
                let mut cmd = Command::new(program);
                cmd.args(SMI_QUERY);
                let mut out = Vec::new();
                let ran = process::run(cmd, None, limits, cancel, |stream, line| {
                    if matches!(stream, Stream::Stdout) && out.len() < 64 {
                        out.push(line);
                    }
                })
                .await;
                match ran {
                    Ok(Outcome::Exited(s)) if s.success() => (Health::Healthy, parse_smi(&out)),
                    // 127: the shell's "command not found", as upstream treats it.
                    Ok(Outcome::Exited(s)) if s.code() == Some(127) => (Health::NotAvailable, None),
                    Ok(Outcome::Exited(_) | Outcome::TimedOut | Outcome::Cancelled) => {
                        (Health::Unhealthy, None)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        (Health::NotAvailable, None)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot run nvidia-smi");
                        (Health::Unhealthy, None)
                    }
                }
            }
        }
    }
}

/// Every GPU must answer a temperature query; no GPU at all is unhealthy (as nvidia-smi's
/// "No devices were found"). The figures when every GPU gave them.
fn nvml_check(nvml: &Nvml) -> (Health, Option<GpuUse>) {
    let Ok(n) = nvml.device_count() else {
        return (Health::Unhealthy, None);
    };
    let mut figures = Some(GpuUse {
        utilization_pct: 0.0,
        memory_used_mib: 0,
    });
    for i in 0..n {
        let Ok(device) = nvml.device_by_index(i) else {
            return (Health::Unhealthy, None);
        };
        if device.temperature(TemperatureSensor::Gpu).is_err() {
            return (Health::Unhealthy, None);
        }
        let util = device.utilization_rates().ok();
        let mem = device.memory_info().ok();
        figures = match (figures, util, mem) {
            (Some(f), Some(u), Some(m)) => Some(GpuUse {
                utilization_pct: f.utilization_pct.max(f64::from(u.gpu.min(100))),
                memory_used_mib: f.memory_used_mib.saturating_add(m.used / (1024 * 1024)),
            }),
            _ => None,
        };
    }
    if n == 0 {
        (Health::Unhealthy, None)
    } else {
        (Health::Healthy, figures)
    }
}

/// Probes every `interval`, reports each change until acknowledged. Stops after reporting
/// "N/A" (no GPU tooling on this machine will not appear later).
/// `first_report` turns true once the first health value is acknowledged (or the monitor
/// ends), so the VM is not announced as running before its GPU was checked. `usage` holds
/// the latest figures (none when the last probe could not tell) for the heartbeat.
pub async fn monitor(
    alloc: Arc<Allocator>,
    probe: Probe,
    interval: Duration,
    first_report: tokio::sync::watch::Sender<bool>,
    usage: tokio::sync::watch::Sender<Option<GpuUse>>,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let _announce_on_exit = AnnounceOnDrop(first_report.clone());
    tracing::info!(probe = probe.name(), "GPU monitor started");
    let mut reported: Option<Health> = None;
    loop {
        let (health, figures) = probe.check(&cancel).await;
        if cancel.is_cancelled() {
            return Ok(());
        }
        usage.send_replace(figures);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn smi_figures_take_the_busiest_gpu_and_all_memory() {
        assert_eq!(
            parse_smi(&lines(&["37, 1024", " 80 , 512", ""])),
            Some(GpuUse {
                utilization_pct: 80.0,
                memory_used_mib: 1536
            })
        );
        assert_eq!(parse_smi(&lines(&[])), None);
        assert_eq!(parse_smi(&lines(&["[N/A], 1024"])), None);
        assert_eq!(parse_smi(&lines(&["37, 1024", "fake GPU 0: OK"])), None);
        assert_eq!(parse_smi(&lines(&["137, 1024"])), None);
    }
}
