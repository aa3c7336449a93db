//! `lablink serve`: load the configuration, open the store, serve until a signal.

use std::path::PathBuf;

use clap::Args;

use crate::config::{Config, Problem};
use crate::exit::CliError;
use crate::logging::{self, LogFormat};
use crate::server::App;
use crate::store::Store;

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// config.yaml to load (also LABLINK_CONFIG, or upstream's CONFIG_DIR/CONFIG_NAME).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:5000 (overrides server.listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory of the store and generated files (overrides server.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LABLINK_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// The config file to read: the flag, `LABLINK_CONFIG`, or upstream's
/// `CONFIG_DIR`/`CONFIG_NAME` (as the lablink-template container sets them).
pub fn config_path(args: &ServeArgs, env: &[(String, String)]) -> Option<PathBuf> {
    let var = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    if let Some(p) = &args.config {
        return Some(p.clone());
    }
    if let Some(p) = var("LABLINK_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let dir = var("CONFIG_DIR")?;
    let name = var("CONFIG_NAME").unwrap_or_else(|| "config.yaml".into());
    Some(PathBuf::from(dir).join(name))
}

/// File < environment < flags, with every problem collected.
pub fn resolve(args: &ServeArgs, env: &[(String, String)]) -> Result<Config, Vec<String>> {
    let (config, problems) = load(args, env)?;
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// As `resolve`, but a config with problems is returned with them (`lablink doctor` goes
/// on checking the rest); only a file that cannot be read at all is an error.
pub fn load(
    args: &ServeArgs,
    env: &[(String, String)],
) -> Result<(Config, Vec<String>), Vec<String>> {
    let mut problems: Vec<String> = Vec::new();
    let path = config_path(args, env);
    let mut config = match &path {
        Some(p) => match Config::from_file(p) {
            Ok((c, file_problems)) => {
                problems.extend(
                    file_problems
                        .iter()
                        .map(|x| format!("{}: {x}", p.display())),
                );
                c
            }
            Err(message) => return Err(vec![message]),
        },
        None => Config::default(),
    };
    problems.extend(config.apply_env(env).iter().map(Problem::to_string));
    if let Some(listen) = &args.listen {
        config.server.listen = listen.clone();
    }
    if let Some(dir) = &args.data_dir {
        config.server.data_dir = dir.display().to_string();
    }
    problems.extend(config.validate().iter().map(Problem::to_string));
    Ok((config, problems))
}

pub fn run(args: ServeArgs) -> Result<(), CliError> {
    logging::init(args.log_format);
    // Every parked agent holds a socket; the soft limit is often far below the hard one.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = resolve(&args, &env).map_err(|mut problems| {
        let summary = format!(
            "configuration has {} problem(s); not starting",
            problems.len()
        );
        problems.push(summary);
        CliError::Usage(problems.join("\n"))
    })?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(config, config_path(&args, &env)))
}

async fn serve(config: Config, config_file: Option<PathBuf>) -> Result<(), CliError> {
    let addr = config
        .listen_addr()
        .map_err(|e| CliError::Failed(format!("server.listen: {e}")))?;
    let app = open_app(config).await?;
    if let Some(file) = config_file {
        let _ = app.config_file.set(file);
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            app.store.close();
            return Err(CliError::Failed(format!(
                "cannot listen on {addr}: {e} (set --listen or server.listen)"
            )));
        }
    };
    let local = listener.local_addr().map_or(addr, |a| a);
    tracing::info!(
        url = %format!("http://{local}/"),
        data_dir = %app.config.data_dir().display(),
        admin_user = %app.admin.user,
        "LabLink allocator ready"
    );
    crate::systemd::ready(&format!("serving on http://{local}/"));
    crate::systemd::spawn_watchdog();
    let stop = async {
        crate::shutdown::signal().await;
        crate::systemd::stopping();
    };
    crate::allocator::run(listener, app, stop)
        .await
        .map_err(CliError::failed)
}

/// Opens the store in the configured data directory and starts the app on it.
pub async fn open_app(config: Config) -> Result<App, CliError> {
    let store = Store::open(&config.data_dir()).map_err(CliError::failed)?;
    crate::store::backup::remove_leftovers(&config.data_dir());
    App::start(config, store.clone()).await.map_err(|e| {
        store.close();
        CliError::failed(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            "server:\n  listen: 127.0.0.1:7000\n  data_dir: /from/file\n  long_poll_seconds: 20\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(file),
            listen: Some("127.0.0.1:9000".into()),
            ..Default::default()
        };
        let c = resolve(
            &args,
            &env(&[
                ("LABLINK_SERVER_LISTEN", "127.0.0.1:8000"),
                ("LABLINK_SERVER_DATA_DIR", "/from/env"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.server.listen, "127.0.0.1:9000");
        assert_eq!(c.server.data_dir, "/from/env");
        assert_eq!(c.server.long_poll_seconds, 20);
    }

    #[test]
    fn upstream_config_dir_is_honoured() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("config.yaml"),
            "app:\n  admin_password: PLACEHOLDER_ADMIN_PASSWORD\n",
        )
        .expect("write");
        let problems = resolve(
            &ServeArgs::default(),
            &env(&[("CONFIG_DIR", dir.path().to_str().expect("utf-8"))]),
        )
        .expect_err("placeholder refused");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("app.admin_password:"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn no_file_means_safe_defaults() {
        let c = resolve(&ServeArgs::default(), &[]).expect("defaults are valid");
        assert_eq!(c, Config::default());
    }
}
