//! `lablink demo`: the whole system on this machine, offline, with simulated VMs.

use clap::Args;

use crate::config::Config;
use crate::exit::CliError;
use crate::logging;
use crate::logging::LogFormat;
use crate::model::RunAction;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Simulated VMs to launch at start.
    #[arg(long, default_value_t = 3)]
    pub vms: u32,
    /// Address to serve on; if it is taken, a free port is used instead.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: String,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How participants get their desktop (`desktop.mode`): `browser` and `both` give each
    /// simulated VM a real local desktop (TigerVNC's Xvnc, with xterm or XFCE on it when
    /// installed), shown in the browser.
    #[arg(long, value_parser = ["crd", "browser", "both"], default_value = "crd")]
    pub desktop: String,
}

/// Xvnc on PATH, or what to install.
fn browser_desktops_possible() -> Result<(), CliError> {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("Xvnc").is_file()));
    if found {
        Ok(())
    } else {
        Err(CliError::Usage(
            "--desktop browser needs a VNC server for the simulated VMs' desktops: \
             install TigerVNC's Xvnc (Debian/Ubuntu: apt-get install tigervnc-standalone-server, \
             and xterm for something to show on it), or use --desktop crd"
                .into(),
        )
        .of("demo"))
    }
}

pub fn run(args: DemoArgs) -> Result<(), CliError> {
    logging::init(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the runtime: {e}")))?;
    let dir = std::env::temp_dir().join(format!("lablink-demo-{}", std::process::id()));
    let ended = runtime.block_on(demo(args, dir.clone()));
    let _ = std::fs::remove_dir_all(&dir);
    ended
}

async fn demo(args: DemoArgs, dir: std::path::PathBuf) -> Result<(), CliError> {
    if args.desktop != "crd" {
        browser_desktops_possible()?;
    }
    let password = crate::store::meta::random_secret()[..16].to_owned();
    let mut config = Config::default();
    config.server.data_dir = dir.display().to_string();
    config.app.admin_password = Some(password.clone());
    config.provision.provider = "local".into();
    config.server.long_poll_seconds = 30;
    config.machine.software = "demo".into();
    config.desktop.mode = args.desktop.clone();
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(_) => match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                return Err(CliError::Failed(format!("cannot listen on loopback: {e}")));
            }
        },
    };
    let app = super::serve::open_app(config).await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!();
    println!("  LabLink demo — everything runs on this machine, nothing leaves it.");
    println!();
    println!("  Participant page   {url}/");
    println!("  Admin instances    {url}/admin/instances");
    println!(
        "  Admin login        user `{}`, password `{password}`",
        app.admin.user
    );
    println!();
    println!(
        "  {} simulated VM(s) are starting; they turn `running` within seconds.",
        args.vms
    );
    if args.desktop == "browser" {
        println!("  Claim one on the participant page with any e-mail: its desktop opens in");
        println!("  the browser (a real local X display; the instructor's view is under Desktop");
        println!("  on the instances page).");
    } else {
        println!("  Claim one on the participant page with any e-mail and a command such as");
        println!("    --code=4/0ADemoCode");
    }
    println!("  Ctrl-C stops the allocator and every simulated VM.");
    println!();
    let serving = tokio::spawn(crate::allocator::run(
        listener,
        app.clone(),
        crate::shutdown::signal(),
    ));
    if args.vms > 0
        && let Err(e) = app
            .provisioner
            .start(RunAction::Launch { count: args.vms }, "demo", None)
            .await
    {
        tracing::error!(error = %e, "cannot launch the simulated VMs");
    }
    serving.await.map_err(CliError::failed)??;
    Ok(())
}
