//! `lablink hand [--lower]`: the "I need help" button of the participant's desktop, run as
//! the desktop user. It asks the VM's agent over its local socket (the agent holds the
//! VM's credential; the desktop does not), prints the answer and exits 0 when it was done.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::agent::hand::{self, Reply, Request};
use crate::exit::CliError;

/// The agent forwards to the allocator with a 20 s limit of its own.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct HandArgs {
    /// Lower the hand: you no longer need help.
    #[arg(long)]
    pub lower: bool,
    /// The agent's socket (default: /run/lablink/hand.sock when it exists, else
    /// $XDG_RUNTIME_DIR/lablink-hand.sock).
    #[arg(long, env = hand::SOCKET_ENV)]
    pub socket: Option<PathBuf>,
}

pub fn run(args: HandArgs) -> Result<(), CliError> {
    let request = if args.lower {
        Request::Lower
    } else {
        Request::Raise
    };
    let socket = args.socket.or_else(hand::client_default).ok_or_else(|| {
        CliError::Usage(format!(
            "no socket of the agent: give --socket or set {} (or XDG_RUNTIME_DIR)",
            hand::SOCKET_ENV
        ))
        .of("hand")
    })?;
    let unreachable = |e: std::io::Error| {
        CliError::Unreachable(format!(
            "cannot reach the LabLink agent at {}: {e}; is `lablink agent` running on this VM?",
            socket.display()
        ))
        .of("hand")
    };
    let mut stream = UnixStream::connect(&socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(ANSWER_WAIT))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_WAIT)))
        .map_err(unreachable)?;
    // An agent that refuses this account answers and hangs up without reading: its answer
    // is still there to read when the write failed.
    let sent = writeln!(stream, "{}", request.word());
    let mut line = String::new();
    let read = BufReader::new((&stream).take(hand::MAX_REPLY as u64)).read_line(&mut line);
    let reply = Reply::parse(&line);
    if reply.is_none() {
        sent.and(read).map_err(unreachable)?;
    }
    match reply {
        Some(Reply::Done(text)) => {
            println!("{text}");
            Ok(())
        }
        Some(Reply::Refused(text)) => Err(CliError::Failed(text).of("hand")),
        Some(Reply::Unreachable(text)) => Err(CliError::Unreachable(text).of("hand")),
        None => Err(
            CliError::Failed(format!("the agent at {} gave no answer", socket.display()))
                .of("hand"),
        ),
    }
}
