use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    lablink::cli::run(lablink::cli::Cli::parse())
}
