//! Where "now" comes from, so time-driven behaviour (scheduled teardown) can be tested
//! without waiting for the wall clock.

use std::sync::Mutex;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to (tests, rehearsals).
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn starting_at(now: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Mutex::new(now),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// ISO 8601 as the admin page sends it (`toISOString()`), or with an offset; a time
/// without an offset is taken as UTC.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text.trim(), format) {
            return Ok(t.and_utc());
        }
    }
    Err(format!(
        "'{text}' is not an ISO 8601 time such as 2026-05-01T18:00:00Z"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_like_the_admin_page_sends_them() {
        let want = "2026-05-01T18:00:00Z";
        for text in [
            "2026-05-01T18:00:00Z",
            "2026-05-01T18:00:00.000Z",
            "2026-05-01T20:00:00+02:00",
            "2026-05-01T18:00:00",
            "2026-05-01T18:00",
        ] {
            let t = parse_time(text).expect(text);
            assert_eq!(
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                want,
                "{text}"
            );
        }
        assert!(parse_time("tomorrow").is_err());
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
    }
}
