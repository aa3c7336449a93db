//! `lablink doctor`: check this allocator box before a workshop (see `crate::doctor`).
//! Exit status 1 when any check fails, 0 otherwise.

use std::path::PathBuf;

use clap::Args;

use super::serve::{self, ServeArgs};
use crate::doctor::{self, Setup, Status};
use crate::exit::CliError;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// config.yaml to load, as `lablink serve` does (also LABLINK_CONFIG, or upstream's
    /// CONFIG_DIR/CONFIG_NAME); LABLINK_* variables apply over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of the store (overrides server.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the findings as a JSON array: check, status (PASS, WARN, FAIL, SKIP), found, fix.
    #[arg(long)]
    pub json: bool,
    /// Free MiB on the data directory's filesystem under which the check fails (it warns
    /// under 2048).
    #[arg(long, default_value_t = doctor::DEFAULT_MIN_FREE_MB, value_name = "MIB")]
    pub min_free_mb: u64,
    /// Check this URL as the public one (default: https://<dns.domain>, or http:// when
    /// ssl.provider is none).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

pub fn run(args: DoctorArgs) -> Result<(), CliError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let serve_args = ServeArgs {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        ..Default::default()
    };
    let config_file = serve::config_path(&serve_args, &env);
    let findings = match serve::load(&serve_args, &env) {
        // Nothing else can be checked without the file.
        Err(problems) => vec![doctor::unreadable_config(&problems)],
        Ok((config, config_problems)) => {
            let setup = Setup {
                config,
                config_file,
                config_problems,
                env,
                min_free_mb: args.min_free_mb,
                public_url: args.public_url,
                inside_allocator: false,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(doctor::examine(&setup))
        }
    };
    if args.json {
        let text = serde_json::to_string_pretty(&findings).map_err(CliError::failed)?;
        println!("{text}");
    } else {
        print!("{}", doctor::render(&findings));
    }
    if findings.iter().any(|f| f.status == Status::Fail) {
        return Err(CliError::Reported(1));
    }
    Ok(())
}
