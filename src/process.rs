//! Running an external program: explicit argument vector (never a shell), its own process
//! group, default signal handling, stdin fed from memory, stdout/stderr handed over line
//! by line, a timeout, and on timeout or cancellation SIGINT to the whole group, then
//! SIGKILL after a grace period.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, killpg, sigaction, sigprocmask,
};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug)]
pub enum Outcome {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
}

pub struct Limits {
    pub timeout: Duration,
    /// Between SIGINT and SIGKILL.
    pub grace: Duration,
}

/// Makes `cmd`'s process start with every signal at its default action and none blocked,
/// whatever this process inherited: a SIGINT ignored by the shell that started the
/// allocator (`trap '' INT`, `nohup` for SIGHUP) would otherwise be ignored by terraform
/// too, and stopping it would wait for SIGKILL. Every child is spawned through this.
#[allow(unsafe_code)]
pub fn clean_signals(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    let unblocked = SigSet::empty();
    let reset = move || -> std::io::Result<()> {
        for signal in Signal::iterator() {
            if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
                continue;
            }
            // SAFETY: SIG_DFL installs no handler of ours.
            unsafe { sigaction(signal, &default) }.map_err(std::io::Error::from)?;
        }
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&unblocked), None).map_err(std::io::Error::from)
    };
    // SAFETY: `reset` runs between fork and exec, where only async-signal-safe calls are
    // allowed: it makes sigaction and sigprocmask system calls with values prepared before
    // the fork, and neither allocates nor takes a lock.
    unsafe {
        cmd.pre_exec(reset);
    }
}

/// Runs `cmd` to completion (or until `timeout`/`cancel`), calling `on_line` for every
/// output line. Spawn errors (program missing, not executable) are returned as such.
pub async fn run(
    cmd: Command,
    stdin: Option<Vec<u8>>,
    limits: Limits,
    cancel: &CancellationToken,
    on_line: impl FnMut(Stream, String),
) -> std::io::Result<Outcome> {
    run_with(cmd, stdin, None, limits, cancel, on_line).await
}

/// As `run`, with the program's standard output written to `stdout` (binary data, such
/// as an archive); only standard error is handed over line by line. At most
/// `max_bytes + 1` bytes are written: a program that sends more is stopped as if
/// cancelled, and the file's length (above `max_bytes`) tells.
pub async fn run_to_file(
    cmd: Command,
    stdout: std::fs::File,
    max_bytes: u64,
    limits: Limits,
    cancel: &CancellationToken,
    on_line: impl FnMut(Stream, String),
) -> std::io::Result<Outcome> {
    run_with(
        cmd,
        None,
        Some((stdout, max_bytes)),
        limits,
        cancel,
        on_line,
    )
    .await
}

async fn run_with(
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    stdout: Option<(std::fs::File, u64)>,
    limits: Limits,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(Stream, String),
) -> std::io::Result<Outcome> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .env_remove(crate::systemd::NOTIFY_SOCKET)
    .process_group(0)
    .kill_on_drop(true);
    clean_signals(cmd.as_std_mut());
    let mut child = cmd.spawn()?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));

    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A program that exits without reading its input is not an error here.
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    let (tx, mut rx) = mpsc::channel(64);
    // Stopped at shutdown, or when the output to a file is larger than allowed.
    let stop = cancel.child_token();
    let mut copier = None;
    if let Some(out) = child.stdout.take() {
        match stdout {
            Some((file, max_bytes)) => {
                copier = Some(copy_at_most(out, file, max_bytes, stop.clone()));
            }
            None => forward_lines(out, Stream::Stdout, tx.clone()),
        }
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, Stream::Stderr, tx.clone());
    }
    drop(tx);

    let deadline = tokio::time::sleep(limits.timeout);
    tokio::pin!(deadline);
    let mut lines_open = true;
    let outcome = loop {
        tokio::select! {
            line = rx.recv(), if lines_open => match line {
                Some((stream, text)) => on_line(stream, text),
                None => lines_open = false,
            },
            status = child.wait() => break Outcome::Exited(status?),
            () = &mut deadline => break Outcome::TimedOut,
            () = stop.cancelled() => break Outcome::Cancelled,
        }
    };
    if !matches!(outcome, Outcome::Exited(_)) {
        stop_group(&mut child, pgid, limits.grace).await;
    }
    if let Some(copier) = copier {
        // Everything the program wrote is in the file before the caller reads it (bounded:
        // a grandchild may hold the pipe open).
        match tokio::time::timeout(limits.grace, copier).await {
            Ok(Ok(copied)) => {
                copied?;
            }
            Ok(Err(e)) => return Err(std::io::Error::other(e)),
            Err(_) => {}
        }
    }
    // Output written just before exit is still in the pipe: drain what is there.
    while let Ok(Some((stream, text))) =
        tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
    {
        on_line(stream, text);
    }
    Ok(outcome)
}

/// Copies `pipe` into `file` up to `max_bytes + 1` bytes; reaching that, or failing to
/// write, cancels `stop` (the program would otherwise block on a full pipe).
fn copy_at_most(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    file: std::fs::File,
    max_bytes: u64,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        let mut file = tokio::fs::File::from_std(file);
        let limit = max_bytes.saturating_add(1);
        let copied = async {
            let copied = tokio::io::copy(&mut pipe.take(limit), &mut file).await?;
            file.flush().await?;
            Ok::<_, std::io::Error>(copied)
        }
        .await;
        if copied.as_ref().map_or(true, |&n| n >= limit) {
            stop.cancel();
        }
        copied.map(|_| ())
    })
}

fn forward_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    stream: Stream,
    tx: mpsc::Sender<(Stream, String)>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send((stream, line)).await.is_err() {
                break;
            }
        }
    });
}

/// SIGINT to the group, then SIGKILL if it is still there after `grace`.
async fn stop_group(child: &mut tokio::process::Child, pgid: Option<Pid>, grace: Duration) {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGINT);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            let _ = killpg(pgid, Signal::SIGKILL); // stragglers of the group
            return;
        }
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ms: u64) -> Limits {
        Limits {
            timeout: Duration::from_millis(ms),
            grace: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn output_and_stdin_and_exit_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "read a; echo got:$a; echo oops >&2; exit 3"]);
        let mut lines = Vec::new();
        let outcome = run(
            cmd,
            Some(b"hello\n".to_vec()),
            limits(5000),
            &CancellationToken::new(),
            |s, l| lines.push((s, l)),
        )
        .await
        .expect("spawn");
        assert!(matches!(outcome, Outcome::Exited(s) if s.code() == Some(3)));
        assert!(lines.contains(&(Stream::Stdout, "got:hello".into())));
        assert!(lines.contains(&(Stream::Stderr, "oops".into())));
    }

    #[tokio::test]
    async fn a_hanging_group_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let mut cmd = Command::new("sh");
        // The grandchild must die with the group, and SIGINT alone is ignored.
        cmd.arg("-c").arg(format!(
            "trap '' INT; sleep 30 & echo $! > {}; wait",
            pidfile.display()
        ));
        let started = std::time::Instant::now();
        let outcome = run(cmd, None, limits(300), &CancellationToken::new(), |_, _| {})
            .await
            .expect("spawn");
        assert!(matches!(outcome, Outcome::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            nix::sys::signal::kill(Pid::from_raw(pid), None).is_err()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        });
        assert!(gone, "grandchild {pid} survived");
    }

    #[tokio::test]
    async fn output_to_a_file_stops_at_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let cancel = CancellationToken::new();
        let run_into = |script: &str, max: u64| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script]);
            let file = std::fs::File::create(&path).expect("create");
            run_to_file(cmd, file, max, limits(5000), &cancel, |_, _| {})
        };
        let outcome = run_into("printf 12345", 5).await.expect("spawn");
        assert!(matches!(outcome, Outcome::Exited(s) if s.success()));
        assert_eq!(std::fs::read(&path).expect("read"), b"12345");

        let started = std::time::Instant::now();
        let outcome = run_into("yes", 1000).await.expect("spawn");
        assert!(matches!(outcome, Outcome::Cancelled), "{outcome:?}");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 1001);
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    /// Set in the copy of the test binary that `children_start_with_default_signals` runs.
    const SIGNALS_CHILD: &str = "LABLINK_TEST_SIGNALS_CHILD";
    const CHECKED: [Signal; 5] = [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGPIPE,
        Signal::SIGTERM,
    ];

    /// The `SigIgn` and `SigBlk` masks of a `/proc/<pid>/status` text.
    fn masks(status: &str) -> (u64, u64) {
        let mask = |name: &str| {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {status}"));
            u64::from_str_radix(line[name.len()..].trim(), 16).expect("a hex mask")
        };
        (mask("SigIgn:"), mask("SigBlk:"))
    }

    fn bits(signals: &[Signal]) -> u64 {
        signals.iter().map(|s| 1u64 << (*s as i32 - 1)).sum()
    }

    #[test]
    fn children_start_with_default_signals() {
        if std::env::var_os(SIGNALS_CHILD).is_some() {
            return spawn_where_signals_are_ignored_and_blocked();
        }
        // Ignoring signals is process-wide: that part runs in a copy of this test binary,
        // started by a shell that ignores them (as `trap '' INT` or `nohup` would).
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(
                "trap '' HUP INT QUIT PIPE TERM; exec \"$0\" --exact \
                 process::tests::children_start_with_default_signals --nocapture",
            )
            .arg(exe)
            .env(SIGNALS_CHILD, "1")
            .output()
            .expect("run the test binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("1 passed"),
            "the child test did not run: {text}"
        );
    }

    fn spawn_where_signals_are_ignored_and_blocked() {
        let wanted = bits(&CHECKED);
        let own = std::fs::read_to_string("/proc/self/status").expect("own status");
        assert_eq!(masks(&own).0 & wanted, wanted, "not ignored here: {own}");
        let mut blocked = SigSet::empty();
        for signal in CHECKED {
            blocked.add(signal);
        }
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)
            .expect("block");
        let own = std::fs::read_to_string("/proc/thread-self/status").expect("own status");
        assert_eq!(masks(&own).1 & wanted, wanted, "not blocked here: {own}");

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut status = String::new();
        let mut cmd = Command::new("cat");
        cmd.arg("/proc/self/status");
        let outcome = runtime
            .block_on(run(
                cmd,
                None,
                limits(5000),
                &CancellationToken::new(),
                |_, line| {
                    status.push_str(&line);
                    status.push('\n');
                },
            ))
            .expect("spawn");
        assert!(matches!(outcome, Outcome::Exited(s) if s.success()));
        // Every standard signal (real-time ones belong to whoever uses them).
        let standard = bits(&Signal::iterator().collect::<Vec<_>>());
        let (ignored, blocked) = masks(&status);
        assert_eq!(ignored & standard, 0, "the child ignores signals: {status}");
        assert_eq!(blocked & standard, 0, "the child blocks signals: {status}");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let cmd = Command::new("/nonexistent/lablink-test-program");
        let err = run(
            cmd,
            None,
            limits(1000),
            &CancellationToken::new(),
            |_, _| {},
        )
        .await
        .expect_err("missing");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
