//! A run's output: lines are redacted, then stored in order in the background (batched),
//! so a provider can log as fast as its child prints. The run's progress is stored with
//! the batch of lines that comes with it, so telling it adds no write of its own (and
//! a provider cannot write faster than the store takes batches).

use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::RunProgress;
use crate::store::{Store, runs};

enum Entry {
    Line(String),
    Progress(RunProgress),
}

pub struct RunLog {
    entries: Mutex<Option<mpsc::UnboundedSender<Entry>>>,
    progress: Mutex<RunProgress>,
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    secrets: Vec<String>,
}

const REDACTED: &str = "[redacted]";

impl RunLog {
    pub fn start(id: u64, store: Store, secrets: Vec<String>) -> RunLog {
        let (tx, mut rx) = mpsc::unbounded_channel::<Entry>();
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 256).await > 0 {
                let mut lines = Vec::with_capacity(batch.len());
                let mut progress = None;
                for entry in batch.drain(..) {
                    match entry {
                        Entry::Line(line) => lines.push(line),
                        Entry::Progress(p) => progress = Some(p),
                    }
                }
                if let Err(e) = store
                    .write(move |tx| runs::append_lines(tx, id, &lines, progress))
                    .await
                {
                    tracing::error!(run = id, error = %e, "cannot store run output");
                }
            }
        });
        RunLog {
            entries: Mutex::new(Some(tx)),
            progress: Mutex::new(RunProgress::default()),
            writer: tokio::sync::Mutex::new(Some(writer)),
            secrets: secrets.into_iter().filter(|s| s.len() >= 4).collect(),
        }
    }

    fn send(&self, entry: Entry) {
        if let Some(tx) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(entry);
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
        self.send(Entry::Line(text));
    }

    /// Changes the run's progress (from nothing reported: all zero); stored with the
    /// next lines, or on its own when none follow.
    pub fn progress(&self, change: impl FnOnce(&mut RunProgress)) {
        let now = {
            let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            let before = *progress;
            change(&mut progress);
            if *progress == before && before != RunProgress::default() {
                return;
            }
            *progress
        };
        self.send(Entry::Progress(now));
    }

    /// Stops taking lines and waits until every line so far is stored.
    pub async fn close(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let writer = self.writer.lock().await.take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}
