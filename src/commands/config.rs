//! `lablink config check FILE`, `lablink config keys` and `lablink config reference`.

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::config::Config;

pub fn check(file: &Path) -> ExitCode {
    let (config, mut problems) = match Config::from_file(file) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    problems.extend(config.validate());
    for warning in config.warnings() {
        eprintln!("{}: warning: {warning}", file.display());
    }
    if problems.is_empty() {
        println!("{}: OK", file.display());
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        eprintln!("{}: {p}", file.display());
    }
    eprintln!("{} problem(s) found", problems.len());
    ExitCode::from(EXIT_CONFIG)
}

pub fn keys() -> ExitCode {
    for key in Config::key_table() {
        println!("{}\t{}", key.path, key.env);
    }
    ExitCode::SUCCESS
}

pub fn reference() -> ExitCode {
    print!("{}", Config::reference());
    ExitCode::SUCCESS
}
