//! Recurring teardown rules: iCalendar RRULEs limited to DAILY and WEEKLY (what the admin
//! page offers), anchored at the schedule's destruction time: its UTC hour and minute (and
//! weekday, for WEEKLY without BYDAY) unless the rule names them.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rrule::{RRuleSet, Tz};

/// `FREQ=WEEKLY;BYDAY=MO` (an `RRULE:` prefix is allowed) → the rule text to store.
pub fn normalize(rule: &str) -> Result<String, String> {
    let rule = rule.trim();
    let rule = rule.strip_prefix("RRULE:").unwrap_or(rule).trim();
    if rule.is_empty() {
        return Err("recurrence_rule is empty".into());
    }
    let freq = rule
        .split(';')
        .find_map(|part| part.trim().strip_prefix("FREQ="))
        .ok_or("recurrence_rule needs FREQ=DAILY or FREQ=WEEKLY")?;
    if !matches!(freq, "DAILY" | "WEEKLY") {
        return Err(format!(
            "recurrence_rule: FREQ={freq} is not supported; use FREQ=DAILY or FREQ=WEEKLY"
        ));
    }
    if rule.contains("DTSTART") || rule.contains('\n') {
        return Err("recurrence_rule: give the rule only; the start is destruction_time".into());
    }
    Ok(rule.to_owned())
}

fn set(rule: &str, anchor: DateTime<Utc>) -> Result<RRuleSet, String> {
    let text = format!("DTSTART:{}\nRRULE:{rule}", anchor.format("%Y%m%dT%H%M%SZ"));
    RRuleSet::from_str(&text).map_err(|e| format!("recurrence_rule: {e}"))
}

/// The first firing strictly after `after` (`None` when the rule has ended).
pub fn next_after(
    rule: &str,
    anchor: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, String> {
    let found = set(rule, anchor)?
        .after(after.with_timezone(&Tz::UTC))
        .all(2)
        .dates;
    Ok(found
        .into_iter()
        .map(|d| d.with_timezone(&Utc))
        .find(|d| *d > after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn only_daily_and_weekly_rules_are_taken() {
        assert_eq!(normalize("RRULE:FREQ=DAILY").as_deref(), Ok("FREQ=DAILY"));
        assert_eq!(
            normalize("FREQ=WEEKLY;BYDAY=MO").as_deref(),
            Ok("FREQ=WEEKLY;BYDAY=MO")
        );
        assert!(normalize("FREQ=HOURLY").is_err());
        assert!(normalize("BYDAY=MO").is_err());
        assert!(normalize("").is_err());
        assert!(normalize("DTSTART:20260101T000000Z\nRRULE:FREQ=DAILY").is_err());
    }

    #[test]
    fn daily_fires_at_the_anchor_time_every_day() {
        let anchor = at(2026, 5, 1, 18, 30);
        let first = next_after("FREQ=DAILY", anchor, anchor - chrono::Duration::seconds(1));
        assert_eq!(first, Ok(Some(anchor)));
        let second = next_after("FREQ=DAILY", anchor, anchor);
        assert_eq!(second, Ok(Some(at(2026, 5, 2, 18, 30))));
        let much_later = next_after("FREQ=DAILY", anchor, at(2026, 6, 10, 19, 0));
        assert_eq!(much_later, Ok(Some(at(2026, 6, 11, 18, 30))));
    }

    #[test]
    fn weekly_uses_byday_or_the_anchor_weekday() {
        let anchor = at(2026, 5, 1, 18, 0); // a Friday
        let monday = next_after("FREQ=WEEKLY;BYDAY=MO", anchor, anchor)
            .expect("valid")
            .expect("fires");
        assert_eq!(monday.weekday(), Weekday::Mon);
        assert_eq!((monday.hour(), monday.minute()), (18, 0));
        let friday = next_after("FREQ=WEEKLY", anchor, anchor)
            .expect("valid")
            .expect("fires");
        assert_eq!(friday, at(2026, 5, 8, 18, 0));
        let explicit = next_after("FREQ=DAILY;BYHOUR=7;BYMINUTE=15", anchor, anchor)
            .expect("valid")
            .expect("fires");
        assert_eq!(explicit, at(2026, 5, 2, 7, 15));
    }

    #[test]
    fn a_bad_rule_is_an_error_and_an_ended_rule_is_none() {
        let anchor = at(2026, 5, 1, 18, 0);
        assert!(next_after("FREQ=WEEKLY;BYDAY=XX", anchor, anchor).is_err());
        assert_eq!(next_after("FREQ=DAILY;COUNT=1", anchor, anchor), Ok(None));
    }
}
