//! How a command ends: `CliError` is what a subcommand returns when it does not succeed,
//! and `finish` is the one place that reports it on stderr and turns it into the exit
//! status. README ("Exit status") lists the statuses.

use std::process::ExitCode;

/// Exit status for bad configuration or arguments (as clap uses for usage errors).
pub const EXIT_CONFIG: u8 = 2;
/// Exit status when the allocator refuses the credentials: trying again will not help.
pub const EXIT_UNAUTHORIZED: u8 = 3;
/// Exit status when the allocator cannot be reached: trying again later may help.
pub const EXIT_UNREACHABLE: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags, arguments or configuration, naming the offending flag or key; one line
    /// per problem. Status 2.
    #[error("{0}")]
    Usage(String),
    /// The command could not do its work. Status 1.
    #[error("{0}")]
    Failed(String),
    /// The allocator refused the credentials (401), or they do not allow the request
    /// (403). Status 3.
    #[error("{0}")]
    Unauthorized(String),
    /// Nothing answered at the allocator's address. Status 4.
    #[error("{0}")]
    Unreachable(String),
    /// The command has already said why (a FAIL verdict, the problems of `config check`,
    /// the agent's refused token in its log): only this status remains.
    #[error("exit status {0}")]
    Reported(u8),
    /// An error of a subcommand that names itself in its messages: `lablink seat: …`.
    #[error("{command}: {error}")]
    In {
        command: &'static str,
        error: Box<CliError>,
    },
}

impl CliError {
    /// The same error, reported as `lablink COMMAND: …`.
    pub fn of(self, command: &'static str) -> CliError {
        CliError::In {
            command,
            error: Box::new(self),
        }
    }

    /// `Failed` with the error's text.
    pub fn failed(e: impl std::fmt::Display) -> CliError {
        CliError::Failed(e.to_string())
    }

    pub fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_CONFIG,
            CliError::Failed(_) => 1,
            CliError::Unauthorized(_) => EXIT_UNAUTHORIZED,
            CliError::Unreachable(_) => EXIT_UNREACHABLE,
            CliError::Reported(code) => *code,
            CliError::In { error, .. } => error.code(),
        }
    }

    /// What `finish` prints on stderr, line by line.
    fn lines(&self) -> Vec<String> {
        self.lines_as("lablink")
    }

    fn lines_as(&self, who: &str) -> Vec<String> {
        match self {
            CliError::Usage(message) => message.lines().map(|l| format!("{who}: {l}")).collect(),
            CliError::Failed(message)
            | CliError::Unauthorized(message)
            | CliError::Unreachable(message) => vec![format!("{who}: {message}")],
            CliError::Reported(_) => Vec::new(),
            CliError::In { command, error } => error.lines_as(&format!("{who} {command}")),
        }
    }
}

/// An I/O error no step expected (the runtime does not start, …): the command failed.
impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        CliError::failed(e)
    }
}

/// Reports a subcommand's error, if any, and its exit status.
pub fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            ExitCode::from(e.code())
        }
    }
}

/// "error: cause: cause" (reqwest's own message hides why a connection failed); a cause
/// its predecessor already says is left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status() {
        assert_eq!(finish(Ok(())), ExitCode::SUCCESS);
        let cases = [
            (CliError::Usage("--url: not an address".into()), 2),
            (CliError::Failed("cannot connect".into()), 1),
            (CliError::Reported(3), 3),
            (CliError::Reported(1), 1),
            (CliError::Usage("HOST: bad".into()).of("seat"), 2),
            (CliError::Failed("gone".into()).of("install"), 1),
            (CliError::Unauthorized("401".into()).of("status"), 3),
            (CliError::Unreachable("refused".into()), 4),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(finish(Err(error)), ExitCode::from(code));
        }
    }

    #[test]
    fn messages_are_prefixed_line_by_line() {
        assert_eq!(
            CliError::Usage("a: bad\nb: worse".into()).lines(),
            ["lablink: a: bad", "lablink: b: worse"]
        );
        assert_eq!(
            CliError::Failed("out:\nmore".into()).lines(),
            ["lablink: out:\nmore"]
        );
        assert_eq!(
            CliError::Usage("--to goes only with `move`".into())
                .of("seat")
                .lines(),
            ["lablink seat: --to goes only with `move`"]
        );
        assert!(CliError::Reported(2).lines().is_empty());
    }
}
