//! The VNC server of a browser seat: started for each participant with a fresh random
//! password (in a private file, never on a command line), bound to loopback only, and
//! stopped when they leave. `x11vnc` attaches to the VM's existing X display; `xvnc`
//! (TigerVNC) is an X server of its own, with an optional session program started on it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::desktop_user::DesktopUser;
use crate::process::{self, Limits, Outcome, Stream};

/// Longest wait for a started VNC server to accept connections.
const READY_WAIT: Duration = Duration::from_secs(20);
/// The screen of an Xvnc display (participants' windows scale it to theirs).
pub const XVNC_SIZE: (u16, u16) = (1600, 900);
/// Lines of the server's output kept to explain a failed start.
const KEPT_LINES: usize = 8;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VncKind {
    /// x11vnc attached to the display the desktop already runs on.
    X11vnc,
    /// TigerVNC's Xvnc: a virtual X server of its own.
    Xvnc,
    /// No browser desktop on this VM.
    Off,
}

/// Where the running server listens and the password it wants.
#[derive(Clone)]
pub struct Endpoint {
    pub port: u16,
    pub password: String,
}

pub struct VncServer {
    pub kind: VncKind,
    pub program: PathBuf,
    /// The X display: attached to (x11vnc) or created (Xvnc), e.g. `:0`.
    pub display: String,
    pub port: u16,
    /// Started on an Xvnc display as its desktop session (a window manager, say).
    pub session: Option<PathBuf>,
    /// Where each seat's password folder is made (the system's temporary folder).
    pub secret_dir: PathBuf,
    pub user: Option<DesktopUser>,
    running: tokio::sync::Mutex<Option<Running>>,
    endpoint: Mutex<Option<Endpoint>>,
}

struct Running {
    stop: CancellationToken,
    server: JoinHandle<()>,
    session: Option<JoinHandle<()>>,
    password_file: PathBuf,
}

impl VncServer {
    pub fn new(
        kind: VncKind,
        program: PathBuf,
        display: String,
        port: u16,
        session: Option<PathBuf>,
        secret_dir: PathBuf,
        user: Option<DesktopUser>,
    ) -> VncServer {
        VncServer {
            kind,
            program,
            display,
            port,
            session,
            secret_dir,
            user,
            running: tokio::sync::Mutex::new(None),
            endpoint: Mutex::new(None),
        }
    }

    pub fn enabled(&self) -> bool {
        self.kind != VncKind::Off
    }

    /// The running server's address and password, while a browser seat is served.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn arguments(&self, password_file: &str) -> Vec<String> {
        let port = self.port.to_string();
        let geometry = format!("{}x{}", XVNC_SIZE.0, XVNC_SIZE.1);
        let args: &[&str] = match self.kind {
            VncKind::X11vnc => &[
                "-display",
                &self.display,
                "-localhost",
                "-noipv6",
                "-rfbport",
                &port,
                "-rfbauth",
                password_file,
                "-forever",
                "-shared",
            ],
            VncKind::Xvnc => &[
                self.display.as_str(),
                "-localhost",
                "-rfbport",
                &port,
                "-rfbauth",
                password_file,
                "-SecurityTypes",
                "VncAuth",
                "-AlwaysShared",
                // Every stream is a connection from this agent (127.0.0.1), and Xvnc counts
                // each as a failed attempt until it has authenticated: by default the sixth
                // at once blacklists the agent for 10 s, and a broadcast opens one per
                // participant at the same moment. Above the allocator's 408 streams per VM.
                "-BlacklistThreshold",
                "500",
                "-geometry",
                &geometry,
                "-depth",
                "24",
            ],
            VncKind::Off => &[],
        };
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Starts the server for a new participant (stopping an earlier one first) and waits
    /// until it accepts connections.
    pub async fn start(&self) -> Result<(), String> {
        if !self.enabled() {
            return Err("this VM has no browser desktop (--vnc off)".into());
        }
        let mut running = self.running.lock().await;
        if let Some(old) = running.take() {
            self.end(old).await;
        }
        // Connecting is how readiness is told: a server still on the port (an earlier
        // agent's) would pass for this one, with another password.
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", self.port)) {
            return Err(format!(
                "port {} on 127.0.0.1 is not free for the VNC server ({e}); is an earlier one still running?",
                self.port
            ));
        }
        let password = crate::rfb::random_password();
        let password_file = self.password_file(&password)?;
        let mut cmd = Command::new(&self.program);
        cmd.args(self.arguments(&password_file.to_string_lossy()));
        self.environment(&mut cmd);
        let stop = CancellationToken::new();
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let server = spawn_child(cmd, stop.clone(), output.clone(), "VNC server");
        // Kept at once: when this start is abandoned (the participant left meanwhile),
        // `stop` still finds the server and ends it.
        let started = running.insert(Running {
            stop: stop.clone(),
            server,
            session: None,
            password_file,
        });
        if let Err(e) = self.wait_ready(started, &output).await {
            if let Some(failed) = running.take() {
                self.end(failed).await;
            }
            return Err(e);
        }
        if let (VncKind::Xvnc, Some(session)) = (self.kind, &self.session) {
            let mut cmd = Command::new(session);
            self.environment(&mut cmd);
            started.session = Some(spawn_child(
                cmd,
                stop.child_token(),
                Arc::new(Mutex::new(VecDeque::new())),
                "desktop session",
            ));
        }
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(Endpoint {
            port: self.port,
            password,
        });
        tracing::info!(display = %self.display, port = self.port, "VNC server started for the participant's browser desktop");
        Ok(())
    }

    /// Whether a server runs (or is starting) for a seat.
    pub async fn is_running(&self) -> bool {
        self.running.lock().await.is_some()
    }

    /// Stops the server (the participant left); their open streams end with it.
    pub async fn stop(&self) {
        let old = self.running.lock().await.take();
        if let Some(old) = old {
            self.end(old).await;
            tracing::info!("VNC server stopped");
        }
    }

    async fn end(&self, running: Running) {
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = None;
        running.stop.cancel();
        let _ = running.server.await;
        if let Some(session) = running.session {
            let _ = session.await;
        }
        let _ = std::fs::remove_file(&running.password_file);
        if let Some(dir) = running.password_file.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Writes the seat's password where the server (running as the desktop user) and
    /// nobody else can read it: a new folder of an unguessable name (so nobody can have
    /// made it first), 0700, owned by that user.
    fn password_file(&self, password: &str) -> Result<PathBuf, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = &self
            .secret_dir
            .join(format!("lablink-vnc-{:016x}", rand::random::<u64>()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file = dir.join("password");
        crate::rfb::write_password_file(&file, password)
            .map_err(|e| format!("cannot write the VNC password file: {e}"))?;
        // The file first: once the folder is the desktop user's, they could swap a path in
        // it for a link, and root must not act on paths in it any more.
        if let Some(user) = &self.user {
            for path in [file.as_path(), dir.as_path()] {
                user.own(path).map_err(|e| {
                    format!("cannot give {} to the desktop user: {e}", path.display())
                })?;
            }
        }
        Ok(file)
    }

    fn environment(&self, cmd: &mut Command) {
        if let Some(user) = &self.user {
            user.apply(cmd);
        }
        cmd.env("DISPLAY", &self.display);
    }

    async fn wait_ready(
        &self,
        running: &Running,
        output: &Mutex<VecDeque<String>>,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if running.server.is_finished() {
                let said = output
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" | ");
                return Err(format!(
                    "{} exited before accepting connections{}",
                    self.program.display(),
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(": {said}")
                    }
                ));
            }
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{} did not accept connections on 127.0.0.1:{} within {READY_WAIT:?}",
                    self.program.display(),
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl super::desktop_channel::DesktopSource for VncServer {
    fn endpoint(&self) -> Result<Endpoint, String> {
        VncServer::endpoint(self).ok_or_else(|| {
            if self.enabled() {
                "no browser desktop is running on this VM (no participant holds it as a browser seat)"
                    .into()
            } else {
                "this VM's agent runs without a VNC server (--vnc off)".into()
            }
        })
    }
}

/// Runs `cmd` until `stop`, its output logged (at debug level: VNC servers are chatty)
/// and the last lines kept in `output`.
fn spawn_child(
    cmd: Command,
    stop: CancellationToken,
    output: Arc<Mutex<VecDeque<String>>>,
    what: &'static str,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let limits = Limits {
            // Runs as long as the seat; `stop` ends it.
            timeout: Duration::from_secs(366 * 24 * 3600),
            grace: Duration::from_secs(3),
        };
        let outcome = process::run(cmd, None, limits, &stop, |stream, line| {
            match stream {
                Stream::Stdout => tracing::debug!(%program, "{line}"),
                Stream::Stderr => tracing::debug!(%program, "{line}"),
            }
            let mut kept = output.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(line);
        })
        .await;
        match outcome {
            Ok(Outcome::Cancelled) => {}
            Ok(Outcome::Exited(status)) => {
                tracing::warn!(%program, %status, "the {what} exited");
            }
            Ok(Outcome::TimedOut) => tracing::warn!(%program, "the {what} ran out its time"),
            Err(e) => {
                tracing::error!(%program, error = %e, "cannot start the {what}");
                output
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(format!("cannot start: {e}"));
            }
        }
    })
}
