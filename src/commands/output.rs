//! How the commands that talk to a running allocator print: aligned tables for people,
//! JSON for scripts (`--json`), times relative to now.

use chrono::{DateTime, Utc};
use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

use crate::exit::CliError;

/// A table with a header row and no borders, like `ps` or `kubectl get`.
pub fn table<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for row in rows {
        table.add_row(row);
    }
    // The preset pads the first column on the left as well; a table starts at the margin.
    table
        .lines()
        .map(|line| {
            line.strip_prefix(' ')
                .unwrap_or(&line)
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints `value` as pretty JSON on stdout.
pub fn json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// `value` as text for a table cell: strings bare, null as "-".
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => other.to_string(),
    }
}

/// A span of seconds as people say it: "45s", "12m", "3h 05m", "2d 4h".
pub fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// An RFC 3339 time from the API as "12m ago"; "-" when absent or unreadable.
pub fn ago(value: &Value, now: DateTime<Utc>) -> String {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(
            || "-".into(),
            |t| format!("{} ago", span((now - t.with_timezone(&Utc)).num_seconds())),
        )
}

/// A current-thread runtime for one command's HTTP calls.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spans_read_like_speech() {
        assert_eq!(span(-3), "0s");
        assert_eq!(span(59), "59s");
        assert_eq!(span(61), "1m");
        assert_eq!(span(3600 + 5 * 60), "1h 05m");
        assert_eq!(span(2 * 86_400 + 4 * 3600 + 7), "2d 4h");
    }

    #[test]
    fn times_are_relative_and_absent_is_a_dash() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        assert_eq!(ago(&json!("2026-12-07T09:48:00Z"), now), "12m ago");
        assert_eq!(ago(&Value::Null, now), "-");
        assert_eq!(ago(&json!("yesterday"), now), "-");
    }

    #[test]
    fn tables_align_columns_from_the_margin() {
        let text = table(
            ["HOST", "STATUS"],
            [
                ["vm-1".to_owned(), "running".to_owned()],
                ["vm-10".to_owned(), cell(&Value::Null)],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("HOST"), "{text}");
        let column = lines[0].find("STATUS").expect("a STATUS column");
        assert_eq!(lines[1].find("running"), Some(column), "{text}");
        assert_eq!(lines[2].rfind('-'), Some(column), "{text}");
    }
}
