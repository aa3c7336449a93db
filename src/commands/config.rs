//! `lablink config check FILE`, `lablink config keys` and `lablink config reference`.

use std::path::Path;

use crate::config::Config;
use crate::exit::{CliError, EXIT_CONFIG};

/// Prints the file's problems, if any: then the status is 2.
pub fn check(file: &Path) -> Result<(), CliError> {
    let (config, mut problems) = match Config::from_file(file) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("{message}");
            return Err(CliError::Reported(EXIT_CONFIG));
        }
    };
    problems.extend(config.validate());
    for warning in config.warnings() {
        eprintln!("{}: warning: {warning}", file.display());
    }
    if problems.is_empty() {
        println!("{}: OK", file.display());
        return Ok(());
    }
    for p in &problems {
        eprintln!("{}: {p}", file.display());
    }
    eprintln!("{} problem(s) found", problems.len());
    Err(CliError::Reported(EXIT_CONFIG))
}

pub fn keys() -> Result<(), CliError> {
    for key in Config::key_table() {
        println!("{}\t{}", key.path, key.env);
    }
    Ok(())
}

pub fn reference() -> Result<(), CliError> {
    print!("{}", Config::reference());
    Ok(())
}
