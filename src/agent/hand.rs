//! The "I need help" launcher on the participant's desktop, agent side. The desktop runs
//! as another account than the agent and cannot read the VM's credential, so the agent
//! listens on a Unix socket the desktop user can reach: `lablink hand` sends one line
//! (`raise` or `lower`), the agent forwards it to the allocator with its credential,
//! answers one line and shows the answer as a desktop notification. Only the desktop
//! user and the agent's own account are served (the peer's uid, from `SO_PEERCRED`).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::api::{Allocator, CallError, HandRefused, HandState};
use super::notify::Notifier;

/// The socket of an agent running as root (the usual VM): a folder everyone may enter.
pub const ROOT_SOCKET: &str = "/run/lablink/hand.sock";
/// Its name in `$XDG_RUNTIME_DIR` for an agent running as the desktop user itself.
const RUNTIME_SOCKET: &str = "lablink-hand.sock";
/// The variable both `lablink agent` and `lablink hand` read the socket's path from.
pub const SOCKET_ENV: &str = "LABLINK_HAND_SOCKET";
/// A request is one short word and a newline.
pub const MAX_REQUEST: usize = 64;
/// An answer line, at most (the allocator's message included).
pub const MAX_REPLY: usize = 4096;
/// A client has this long to send its line.
const READ_LIMIT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once.
const MAX_AT_ONCE: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Raise,
    Lower,
}

impl Request {
    pub fn word(self) -> &'static str {
        match self {
            Request::Raise => "raise",
            Request::Lower => "lower",
        }
    }

    fn parse(line: &str) -> Option<Request> {
        match line.trim() {
            "raise" => Some(Request::Raise),
            "lower" => Some(Request::Lower),
            _ => None,
        }
    }
}

/// The agent's one answer line: `ok TEXT`, `refused TEXT` or `unreachable TEXT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Done(String),
    /// The allocator (or the agent) said no; asking again the same way will not help.
    Refused(String),
    /// The allocator could not be reached.
    Unreachable(String),
}

impl Reply {
    pub fn text(&self) -> &str {
        match self {
            Reply::Done(t) | Reply::Refused(t) | Reply::Unreachable(t) => t,
        }
    }

    fn line(&self) -> String {
        let word = match self {
            Reply::Done(_) => "ok",
            Reply::Refused(_) => "refused",
            Reply::Unreachable(_) => "unreachable",
        };
        // One line whatever the allocator's message holds.
        let text: String = self
            .text()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_REPLY - 16)
            .collect();
        format!("{word} {text}\n")
    }

    pub fn parse(line: &str) -> Option<Reply> {
        let (word, text) = line.trim_end_matches(['\r', '\n']).split_once(' ')?;
        let text = text.to_owned();
        match word {
            "ok" => Some(Reply::Done(text)),
            "refused" => Some(Reply::Refused(text)),
            "unreachable" => Some(Reply::Unreachable(text)),
            _ => None,
        }
    }
}

/// Where the agent listens unless told: [`ROOT_SOCKET`] when it runs as root, else in
/// `$XDG_RUNTIME_DIR`, else in its state folder.
pub fn agent_default(state_dir: Option<&Path>) -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from(ROOT_SOCKET));
    }
    runtime_dir()
        .map(|dir| dir.join(RUNTIME_SOCKET))
        .or_else(|| state_dir.map(|dir| dir.join("hand.sock")))
}

/// Where `lablink hand` looks unless told: [`ROOT_SOCKET`] when it exists, else in
/// `$XDG_RUNTIME_DIR`.
pub fn client_default() -> Option<PathBuf> {
    let root = PathBuf::from(ROOT_SOCKET);
    if root.exists() {
        return Some(root);
    }
    runtime_dir().map(|dir| dir.join(RUNTIME_SOCKET))
}

fn runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
}

/// Serves the socket at `path` until `cancel`, for the accounts `allowed`. A socket that
/// cannot be made is logged and the agent goes on without it.
pub async fn run(
    alloc: Arc<Allocator>,
    notifier: Arc<Notifier>,
    path: PathBuf,
    allowed: Vec<u32>,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let listener = match bind(&path) {
        Ok(listener) => listener,
        Err(reason) => {
            tracing::error!(socket = %path.display(), "no \"I need help\" launcher: {reason}");
            cancel.cancelled().await;
            return Ok(());
        }
    };
    tracing::info!(socket = %path.display(), "listening for the desktop's \"I need help\" launcher");
    let slots = Arc::new(Semaphore::new(MAX_AT_ONCE));
    let allowed = Arc::new(allowed);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = cancel.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: give the others a moment to close theirs.
                tracing::warn!(error = %e, "cannot accept on the launcher's socket");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (alloc, notifier, allowed, cancel) = (
            alloc.clone(),
            notifier.clone(),
            allowed.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            serve(stream, &alloc, &notifier, &allowed, &cancel).await;
            drop(slot);
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// A listening socket at `path`, connectable by every account (each peer's uid is
/// checked), in a folder only the agent (or root) may change.
fn bind(path: &Path) -> Result<UnixListener, String> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| format!("{} is not a path in a folder", path.display()))?;
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let folder =
        std::fs::metadata(parent).map_err(|e| format!("cannot read {}: {e}", parent.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    // Whoever may rename entries there could put a socket of theirs in its place.
    if (folder.uid() != me && folder.uid() != 0) || folder.mode() & 0o022 != 0 {
        return Err(format!(
            "{} must belong to the agent's account (or root) and be writable by nobody else",
            parent.display()
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "another process (a second agent?) listens on {} already",
                    path.display()
                ));
            }
            // An earlier agent's, left by a crash.
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove the old {}: {e}", path.display()))?;
        }
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a socket; not replaced",
                path.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen on it: {e}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("cannot open it to the desktop user: {e}"))?;
    Ok(listener)
}

async fn serve(
    mut stream: UnixStream,
    alloc: &Allocator,
    notifier: &Notifier,
    allowed: &[u32],
    cancel: &CancellationToken,
) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "the launcher's socket cannot tell who connected");
            return;
        }
    };
    if !allowed.contains(&uid) {
        tracing::warn!(
            uid,
            "refused a request for help from an account that is not the desktop's"
        );
        let refused =
            Reply::Refused("Only the desktop's own account may ask for help here.".into());
        let _ = stream.write_all(refused.line().as_bytes()).await;
        return;
    }
    let request = match read_request(&mut stream).await {
        Ok(request) => request,
        Err(Some(refused)) => {
            let _ = stream.write_all(refused.line().as_bytes()).await;
            return;
        }
        Err(None) => return,
    };
    let reply = forward(alloc, request).await;
    tracing::info!(
        request = request.word(),
        answer = reply.text(),
        "the desktop's \"I need help\" launcher"
    );
    let _ = stream.write_all(reply.line().as_bytes()).await;
    let _ = stream.shutdown().await;
    drop(stream);
    notifier.show(reply.text(), cancel).await;
}

/// The client's line; `Err(Some(reply))` answers a bad one, `Err(None)` a client that
/// went away or sent nothing in time.
async fn read_request(stream: &mut UnixStream) -> Result<Request, Option<Reply>> {
    let mut line = Vec::new();
    let mut limited = BufReader::new((&mut *stream).take(MAX_REQUEST as u64 + 1));
    let read = tokio::time::timeout(READ_LIMIT, limited.read_until(b'\n', &mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return Err(None);
    }
    if line.len() > MAX_REQUEST {
        return Err(Some(Reply::Refused(format!(
            "The request is longer than {MAX_REQUEST} bytes: send `raise` or `lower`."
        ))));
    }
    std::str::from_utf8(&line)
        .ok()
        .and_then(Request::parse)
        .ok_or_else(|| {
            Some(Reply::Refused(
                "Unknown request: send `raise` or `lower`.".into(),
            ))
        })
}

async fn forward(alloc: &Allocator, request: Request) -> Reply {
    reply(request, alloc.set_hand(request == Request::Raise).await)
}

/// What the participant is told.
fn reply(request: Request, answer: Result<HandState, HandRefused>) -> Reply {
    match answer {
        Ok(HandState {
            raised: true,
            taken_by,
        }) => Reply::Done(match taken_by {
            Some(who) => format!("Your hand is up — {who} is on the way."),
            None => "Your hand is up — a helper is on the way.".into(),
        }),
        Ok(HandState { raised: false, .. }) => Reply::Done(match request {
            Request::Lower => "Your hand is down: you no longer ask for help.".into(),
            Request::Raise => "Your hand is not up; please try again.".into(),
        }),
        Err(HandRefused::Said(message)) => Reply::Refused(message),
        Err(HandRefused::Call(CallError::Transport(e))) => {
            tracing::warn!(error = %e, "cannot forward the request for help");
            Reply::Unreachable(
                "The workshop's server cannot be reached just now; please wave to a helper.".into(),
            )
        }
        Err(HandRefused::Call(CallError::NotFound)) => Reply::Refused(
            "The workshop's server takes no requests for help from the desktop (an older \
             version); use the button on your seat's page, or wave to a helper."
                .into(),
        ),
        Err(HandRefused::Call(e)) => {
            tracing::warn!(error = %e, "the allocator refused the request for help");
            Reply::Refused(format!(
                "The workshop's server refused the request ({e}); please wave to a helper."
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_one_line_and_read_back() {
        for reply in [
            Reply::Done("Your hand is up — a helper is on the way.".into()),
            Reply::Refused("Too many\nrequests".into()),
            Reply::Unreachable(String::new()),
        ] {
            let line = reply.line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            let back = Reply::parse(&line).expect("parsed");
            assert_eq!(back.text(), reply.text().replace('\n', " "));
        }
        assert_eq!(Reply::parse("maybe later\n"), None);
        assert_eq!(Request::parse("raise\n"), Some(Request::Raise));
        assert_eq!(Request::parse("lower"), Some(Request::Lower));
        assert_eq!(Request::parse("raise now"), None);
    }

    #[test]
    fn the_participant_is_told_who_comes() {
        let up = |taken_by: Option<&str>| {
            reply(
                Request::Raise,
                Ok(HandState {
                    raised: true,
                    taken_by: taken_by.map(str::to_owned),
                }),
            )
        };
        assert_eq!(
            up(None),
            Reply::Done("Your hand is up — a helper is on the way.".into())
        );
        assert_eq!(
            up(Some("grace")),
            Reply::Done("Your hand is up — grace is on the way.".into())
        );
        let refused = reply(Request::Raise, Err(HandRefused::Said("Not now.".into())));
        assert_eq!(refused, Reply::Refused("Not now.".into()));
        let away = reply(
            Request::Lower,
            Err(HandRefused::Call(CallError::Transport("refused".into()))),
        );
        assert!(matches!(away, Reply::Unreachable(_)), "{away:?}");
    }
}
