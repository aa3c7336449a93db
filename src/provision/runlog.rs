//! A run's output: lines are redacted, then stored in order in the background (batched),
//! so a provider can log as fast as its child prints.

use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::{Store, runs};

pub struct RunLog {
    lines: Mutex<Option<mpsc::UnboundedSender<String>>>,
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    secrets: Vec<String>,
}

const REDACTED: &str = "[redacted]";

impl RunLog {
    pub fn start(id: u64, store: Store, secrets: Vec<String>) -> RunLog {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 256).await > 0 {
                let lines = std::mem::take(&mut batch);
                if let Err(e) = store
                    .write(move |tx| runs::append_lines(tx, id, &lines))
                    .await
                {
                    tracing::error!(run = id, error = %e, "cannot store run output");
                }
            }
        });
        RunLog {
            lines: Mutex::new(Some(tx)),
            writer: tokio::sync::Mutex::new(Some(writer)),
            secrets: secrets.into_iter().filter(|s| s.len() >= 4).collect(),
        }
    }

    /// Adds a line of output, with every known secret replaced.
    pub fn line(&self, text: impl Into<String>) {
        let mut text = text.into();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        let text = crate::shared_token::redact_vm_credentials(&text, REDACTED);
        if let Some(tx) = self
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(text);
        }
    }

    /// Stops taking lines and waits until every line so far is stored.
    pub async fn close(&self) {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).take();
        let writer = self.writer.lock().await.take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}
