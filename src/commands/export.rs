//! `lablink export [WHAT] [--format csv|json] [-o FILE]`: the console's downloads from a
//! running allocator: the pool's records, the event report, the seats' session metrics, the
//! participants' rescued files.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::output;
use super::remote::Target;
use crate::exit::CliError;
use crate::secret_file;

/// Longest pause in a download (the allocator packs a ZIP of rescues as it sends it).
const PAUSE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// Every VM with its participant and startup timings.
    Pool,
    /// The event's report (seats, claim→desktop times, failures, cost, one row per participant).
    Report,
    /// Each seat's session metrics: a summary row per seat (CSV) or with the series (JSON).
    Sessions,
    /// Every participant's rescued files, as one ZIP.
    Rescues,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(value_enum, default_value_t = What::Pool)]
    pub what: What,
    /// CSV or JSON (not for `rescues`, which is a ZIP).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write to this file (owner-only; replaced whole, only once complete) instead of
    /// stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

fn source(what: What, format: Option<Format>) -> Result<&'static str, CliError> {
    Ok(match (what, format.unwrap_or(Format::Csv)) {
        (What::Rescues, _) if format.is_some() => {
            return Err(CliError::Usage(
                "--format: `rescues` is a ZIP of files; leave --format out".into(),
            ));
        }
        (What::Rescues, _) => "/admin/rescues/all.zip",
        (What::Pool, Format::Csv) => "/admin/export.csv",
        (What::Pool, Format::Json) => "/admin/export.json",
        (What::Report, Format::Csv) => "/admin/event/report.csv",
        (What::Report, Format::Json) => "/api/event/report",
        (What::Sessions, Format::Csv) => "/admin/export-sessions.csv",
        (What::Sessions, Format::Json) => "/admin/export-sessions.json",
    })
}

pub fn run(args: ExportArgs) -> Result<(), CliError> {
    let path = source(args.what, args.format).map_err(|e| e.of("export"))?;
    if args.what == What::Rescues
        && args.output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(CliError::Usage(
            "rescues is a ZIP: give --output FILE or redirect stdout".into(),
        )
        .of("export"));
    }
    let admin = args.target.downloader(PAUSE).map_err(|e| e.of("export"))?;
    let runtime = output::runtime()?;
    let saved = match &args.output {
        // Owner-only (the records hold participants' e-mail addresses), written under
        // a temporary name and renamed when complete.
        Some(file) => {
            let partial = secret_file::with_suffix(file, ".partial");
            let cannot_write =
                |e: std::io::Error| CliError::Failed(format!("--output {}: {e}", file.display()));
            let written = runtime.block_on(async {
                let response = admin.fetch(path).await?;
                let mut out = secret_file::create(&partial).map_err(cannot_write)?;
                let bytes = admin.save(response, &mut out).await?;
                out.sync_all().map_err(cannot_write)?;
                std::fs::rename(&partial, file).map_err(cannot_write)?;
                Ok(bytes)
            });
            if written.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            written.map(|bytes| eprintln!("wrote {} ({bytes} bytes)", file.display()))
        }
        None => runtime.block_on(async {
            let response = admin.fetch(path).await?;
            admin
                .save(response, &mut std::io::stdout().lock())
                .await
                .map(|_| ())
        }),
    };
    saved.map_err(|e| e.of("export"))?;
    Ok(())
}
