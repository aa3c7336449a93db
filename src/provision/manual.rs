//! Machines the lab already owns: they join by running `lablink agent` with the token.
//! Nothing to launch; destroying only forgets them (the machines keep running).

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{LaunchContext, Launched, Provider, RunFailure, RunLog};

pub struct Manual;

#[async_trait]
impl Provider for Manual {
    fn name(&self) -> &'static str {
        "manual"
    }

    fn cannot_launch(&self) -> Option<&'static str> {
        Some(
            "the manual provider does not launch machines: run `lablink agent` on each machine with the token that `lablink token` prints",
        )
    }

    async fn launch(
        &self,
        _: &RunLog,
        _: LaunchContext,
        _: u32,
        _: &CancellationToken,
    ) -> Result<Launched, RunFailure> {
        Err(RunFailure::failed(self.cannot_launch().unwrap_or_default()))
    }

    async fn destroy(
        &self,
        log: &RunLog,
        hosts: &[String],
        _: bool,
        _: &CancellationToken,
    ) -> Result<(), RunFailure> {
        for host in hosts {
            log.line(format!(
                "forgetting {host}; the machine itself keeps running"
            ));
        }
        let total = hosts.len() as u32;
        log.progress(|p| {
            *p = crate::model::RunProgress {
                done: total,
                total,
                failed: 0,
            }
        });
        Ok(())
    }
}
