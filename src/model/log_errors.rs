//! Which lines of a shipped VM log are errors: the one rule behind `?errors_only=true` on
//! the logs API, the console's logs page and its live stream.
//!
//! Upstream's rule (its `log_filter.py`): a line is an error when it carries an uppercase
//! level token (`ERROR`, `CRITICAL`, `FATAL`, cloudflared's `ERR`/`FTL`, postgres'
//! `PANIC`) as a whole word, unless it is one of a few known-harmless lines. Matching is
//! case-sensitive on purpose: the client's startup script prints `--retry-all-errors` and
//! `status=error` on its happy path. A Python traceback that follows an error line
//! (`logger.exception`) is kept with it: the header, its indented frames, the exception
//! line, and chained tracebacks after it. Lines carry an optional RFC 3339 timestamp and
//! `[tag] ` prefix (the agent's shipper and the startup script add them); when the error
//! line has a tag, lines of other tags inside its traceback are interleaved output of
//! other services, judged on their own.

const LEVELS: [&str; 6] = ["ERROR", "CRITICAL", "FATAL", "ERR", "FTL", "PANIC"];

/// Lines with a level token that do not mean something failed: the client's reporting
/// path giving up on one report (the VM still serves), the X11 socket-directory notice of
/// a non-root container, and GLib's `g_critical` from desktop programs.
const BENIGN: [&str; 5] = [
    "Failed to report GPU health after",
    "Failed to update in-use status after",
    "Push failed; will retry next interval",
    "ERROR: euid != 0",
    "-CRITICAL **:",
];

const TRACEBACK: &str = "Traceback (most recent call last)";
const CHAINED: [&str; 2] = [
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
];

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `line` names an error (see the module's rule).
pub fn is_error_line(line: &str) -> bool {
    let bytes = line.as_bytes();
    let has_level = LEVELS.iter().any(|level| {
        line.match_indices(level).any(|(at, _)| {
            let end = at + level.len();
            (at == 0 || !is_word_byte(bytes[at - 1]))
                && (end == bytes.len() || !is_word_byte(bytes[end]))
        })
    });
    has_level && !BENIGN.iter().any(|b| line.contains(b))
}

/// `line` split into its `[tag]` (if any) and the text after the timestamp and tag.
fn split_prefix(line: &str) -> (Option<&str>, &str) {
    let mut rest = line;
    let b = rest.as_bytes();
    let stamp = b.len() >= 19
        && b[..19].is_ascii()
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[13] == b':'
        && b[16] == b':';
    if stamp {
        let after = rest[19..].trim_start_matches(|c: char| !c.is_whitespace());
        if after.starts_with(char::is_whitespace) {
            rest = after.trim_start();
        }
    }
    if let Some(inner) = rest.strip_prefix('[')
        && let Some(close) = inner.find(']')
    {
        let tag = &inner[..close];
        if !tag.is_empty()
            && tag
                .bytes()
                .all(|c| is_word_byte(c) || c == b'.' || c == b'-')
        {
            let body = &inner[close + 1..];
            return (Some(tag), body.strip_prefix(' ').unwrap_or(body));
        }
    }
    (None, rest)
}

#[derive(Clone, Debug, Default, PartialEq)]
enum Within {
    /// Not after an error line.
    #[default]
    Nothing,
    /// Right after an error line: a traceback header may follow.
    Error,
    /// Inside a traceback, after `frames` indented lines.
    Frames(usize),
    /// After a traceback's exception line: a chained one may follow.
    Exception,
}

/// The errors-only filter over a log read in pieces (a live stream's batches): it
/// remembers an open traceback from one piece to the next.
#[derive(Clone, Debug, Default)]
pub struct ErrorFilter {
    within: Within,
    /// The tag of the error line whose traceback is open.
    tag: Option<String>,
    /// Blank and "During handling…" lines after an exception, kept only if another
    /// traceback follows them.
    held: Vec<String>,
}

impl ErrorFilter {
    /// The lines of `text` to keep, each followed by a newline.
    pub fn feed(&mut self, text: &str) -> String {
        let mut out = String::new();
        for line in text.lines() {
            self.step(line, &mut out);
        }
        out
    }

    fn step(&mut self, line: &str, out: &mut String) {
        let mut keep = |line: &str| {
            out.push_str(line);
            out.push('\n');
        };
        let (tag, body) = split_prefix(line);
        if self.within != Within::Nothing && self.tag.is_some() && tag != self.tag.as_deref() {
            // Another service's line inside this traceback: judged on its own, and the
            // traceback stays open.
            if is_error_line(line) {
                keep(line);
            }
            return;
        }
        match self.within {
            Within::Error | Within::Exception if body.starts_with(TRACEBACK) => {
                for held in std::mem::take(&mut self.held) {
                    keep(&held);
                }
                self.within = Within::Frames(0);
                return keep(line);
            }
            Within::Frames(n) if body.starts_with(char::is_whitespace) => {
                self.within = Within::Frames(n + 1);
                return keep(line);
            }
            Within::Frames(n) if n > 0 => {
                self.within = Within::Exception;
                return keep(line);
            }
            Within::Exception if body.trim().is_empty() || CHAINED.contains(&body.trim()) => {
                self.held.push(line.to_owned());
                return;
            }
            _ => {}
        }
        self.held.clear();
        if is_error_line(line) {
            self.within = Within::Error;
            self.tag = tag.map(str::to_owned);
            keep(line);
        } else {
            self.within = Within::Nothing;
        }
    }
}

/// The error lines of a whole log (with their tracebacks), newline-separated; `""` when
/// the log has none.
pub fn errors_only(text: &str) -> String {
    let mut kept = ErrorFilter::default().feed(text);
    if kept.ends_with('\n') {
        kept.pop();
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uppercase_level_words_are_errors_and_the_happy_path_is_not() {
        for line in [
            "2026-03-01T10:00:00Z ERROR lablink::agent: cannot reach the allocator",
            "[start] ERROR: custom startup script failed after 3 attempts",
            "CRITICAL disk full",
            "[cloudflared] 2026-03-01T10:00:00Z ERR Failed to dial",
            "PANIC: could not write to file",
            "FATAL: role does not exist",
        ] {
            assert!(is_error_line(line), "{line}");
        }
        for line in [
            "curl --retry-all-errors https://example.org",
            "send_status error",
            "status=error",
            "WARNING: something odd",
            "wrote to STDERR",
            "ERRORS: none",
            "[agent] ERROR Failed to report GPU health after 5 attempts",
            "[kasmvnc] _XSERVTransmkdir: ERROR: euid != 0,directory /tmp/.X11-unix",
            "(xfdesktop:176): GLib-GObject-CRITICAL **: assertion failed",
        ] {
            assert!(!is_error_line(line), "{line}");
        }
    }

    #[test]
    fn a_traceback_after_an_error_line_is_kept_with_it() {
        let log = "\
[agent] INFO started
[agent] ERROR request failed
[agent] Traceback (most recent call last):
[agent]   File \"a.py\", line 1, in <module>
[kasmvnc] frame 12 drawn
[agent]     main()
[agent] ConnectionError: refused
[agent] 
[agent] During handling of the above exception, another exception occurred:
[agent] 
[agent] Traceback (most recent call last):
[agent]   File \"b.py\", line 2
[agent] RuntimeError: gave up
[agent] INFO retrying
[agent] 
[start] done";
        assert_eq!(
            errors_only(log),
            "\
[agent] ERROR request failed
[agent] Traceback (most recent call last):
[agent]   File \"a.py\", line 1, in <module>
[agent]     main()
[agent] ConnectionError: refused
[agent] 
[agent] During handling of the above exception, another exception occurred:
[agent] 
[agent] Traceback (most recent call last):
[agent]   File \"b.py\", line 2
[agent] RuntimeError: gave up"
        );
    }

    #[test]
    fn untagged_tracebacks_and_a_lone_header_line() {
        let log = "ERROR boom\nTraceback (most recent call last):\n  File \"x\"\nValueError: x\nok\nTraceback (most recent call last):\n  File \"y\"\nKeyError: y";
        assert_eq!(
            errors_only(log),
            "ERROR boom\nTraceback (most recent call last):\n  File \"x\"\nValueError: x"
        );
        assert_eq!(errors_only("all fine\nstill fine"), "");
    }

    #[test]
    fn a_traceback_split_between_pieces_of_a_stream_is_followed() {
        let mut filter = ErrorFilter::default();
        assert_eq!(
            filter.feed("INFO a\nERROR b\nTraceback (most recent call last):\n"),
            "ERROR b\nTraceback (most recent call last):\n"
        );
        assert_eq!(
            filter.feed("  File \"z\"\nOSError: z\nINFO c\n"),
            "  File \"z\"\nOSError: z\n"
        );
    }

    #[test]
    fn prefixes_are_read_without_being_fooled() {
        assert_eq!(
            split_prefix("2026-03-01T10:00:00.5Z [agent] x"),
            (Some("agent"), "x")
        );
        assert_eq!(split_prefix("[not a tag] x"), (None, "[not a tag] x"));
        assert_eq!(split_prefix("2026-é-01T10:00:00 x").0, None);
    }
}
