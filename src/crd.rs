//! Chrome Remote Desktop setup commands: the only part LabLink keeps is the `--code` value.
//!
//! Participants paste the whole "Debian Linux" command Google shows them. Everything but
//! the authorization code is discarded, and the code must consist of characters that can
//! never mean anything to a shell, so no later consumer (including upstream 0.1.2 clients,
//! which run the command through `sh -c`) can be tricked into running something else.

use thiserror::Error;

pub const MAX_CODE_LEN: usize = 512;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CrdError {
    #[error("the command has no --code value; copy the whole command for \"Debian Linux\"")]
    MissingCode,
    #[error("the --code value is empty")]
    EmptyCode,
    #[error("the --code value is longer than {MAX_CODE_LEN} characters")]
    TooLong,
    #[error(
        "the --code value contains characters a Chrome Remote Desktop code never has; copy the command again"
    )]
    BadCharacters,
}

/// Extracts and validates the authorization code from a pasted setup command.
/// Accepts `--code=VALUE` and `--code VALUE`, with one layer of matching quotes.
pub fn extract_code(command: &str) -> Result<String, CrdError> {
    let mut tokens = command.split_whitespace();
    let mut found = None;
    while let Some(token) = tokens.next() {
        if let Some(value) = token.strip_prefix("--code=") {
            found = Some(value);
        } else if token == "--code" {
            found = Some(tokens.next().ok_or(CrdError::EmptyCode)?);
        }
    }
    let raw = found.ok_or(CrdError::MissingCode)?;
    let code = strip_matching_quotes(raw);
    validate_code(code)?;
    Ok(code.to_owned())
}

pub fn validate_code(code: &str) -> Result<(), CrdError> {
    if code.is_empty() {
        return Err(CrdError::EmptyCode);
    }
    if code.len() > MAX_CODE_LEN {
        return Err(CrdError::TooLong);
    }
    if !code
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.' | b'~'))
    {
        return Err(CrdError::BadCharacters);
    }
    Ok(())
}

fn strip_matching_quotes(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "DISPLAY= /opt/google/chrome-remote-desktop/start-host \
        --code=\"4/0AVG7fiQp-9xYz_Ab.c~d\" \
        --redirect-url=\"https://remotedesktop.google.com/_/oauthredirect\" --name=$(hostname)";

    #[test]
    fn extracts_the_code_from_the_real_command_shape() {
        assert_eq!(extract_code(REAL), Ok("4/0AVG7fiQp-9xYz_Ab.c~d".into()));
    }

    #[test]
    fn accepts_the_separate_argument_and_single_quote_forms() {
        assert_eq!(extract_code("start-host --code 4/0Ab"), Ok("4/0Ab".into()));
        assert_eq!(extract_code("--code='4/0Ab'"), Ok("4/0Ab".into()));
    }

    #[test]
    fn refuses_commands_without_a_code() {
        assert_eq!(
            extract_code("start-host --name=x"),
            Err(CrdError::MissingCode)
        );
        assert_eq!(extract_code(""), Err(CrdError::MissingCode));
        assert_eq!(extract_code("start-host --code"), Err(CrdError::EmptyCode));
        assert_eq!(extract_code("--code=\"\""), Err(CrdError::EmptyCode));
    }

    #[test]
    fn refuses_anything_a_shell_could_interpret() {
        for bad in [
            "--code=4/0Ab;reboot",
            "--code=\"$(curl evil)\"",
            "--code=`id`",
            "--code=a|b",
            "--code=a&&b",
            "--code=\"4/0Ab\"\"",
            "--code=é",
        ] {
            assert_eq!(extract_code(bad), Err(CrdError::BadCharacters), "{bad}");
        }
    }

    #[test]
    fn refuses_overlong_codes() {
        let long = format!("--code={}", "a".repeat(MAX_CODE_LEN + 1));
        assert_eq!(extract_code(&long), Err(CrdError::TooLong));
    }
}
