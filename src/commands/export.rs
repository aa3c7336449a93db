//! `lablink export [WHAT] [--format csv|json] [-o FILE]`: the console's downloads from a
//! running allocator: the pool's records, the event report, the seats' session metrics, the
//! participants' rescued files.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::output;
use super::remote::Target;
use crate::exit::CliError;

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
    let admin = args.target.admin().map_err(|e| e.of("export"))?;
    let bytes = output::runtime()?
        .block_on(admin.download(path))
        .map_err(|e| CliError::from(e).of("export"))?;
    match &args.output {
        Some(file) => {
            // Owner-only: the records hold participants' e-mail addresses.
            crate::secret_file::write_bytes(file, &bytes).map_err(|e| {
                CliError::Failed(format!("--output {}: {e}", file.display())).of("export")
            })?;
            eprintln!("wrote {} ({} bytes)", file.display(), bytes.len());
        }
        None => {
            let mut out = std::io::stdout().lock();
            // A reader that stops early (`| head`) is not an error.
            let _ = out.write_all(&bytes).and_then(|()| out.flush());
        }
    }
    Ok(())
}
