//! Announcements: a short plain-text message from the console, shown at once on every
//! participant's page and, through the agents' heartbeat answers, as a desktop
//! notification. The latest few are kept in memory (a page opened later shows the latest);
//! a restart of the allocator forgets them (the audit log keeps their text).

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use super::error::PoolError;
use super::{Actor, Pool};

/// Longest announcement, in characters.
pub const MAX_CHARS: usize = 500;
/// Announcements kept for pages opened later and the console's list.
const KEPT: usize = 20;
/// An agent shows an announcement on the desktop only this long after it was made: a VM
/// whose agent starts later does not pop up old news.
const ON_DESKTOP_FOR: chrono::Duration = chrono::Duration::minutes(10);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Announcement {
    /// Increasing, also across restarts (it starts from the clock): the agents show each
    /// id once.
    pub id: u64,
    pub text: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

pub struct Announcements {
    /// Newest first.
    recent: Mutex<VecDeque<Announcement>>,
    latest: watch::Sender<Option<Announcement>>,
}

impl Default for Announcements {
    fn default() -> Announcements {
        Announcements {
            recent: Mutex::new(VecDeque::with_capacity(KEPT)),
            latest: watch::channel(None).0,
        }
    }
}

impl Announcements {
    /// The kept announcements, newest first.
    pub fn recent(&self) -> Vec<Announcement> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The latest announcement, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<Announcement>> {
        self.latest.subscribe()
    }
}

/// Checks an announcement's text: trimmed, not empty, at most [`MAX_CHARS`], no control
/// characters but line breaks and tabs.
pub fn checked_text(text: &str) -> Result<String, PoolError> {
    let text = text.trim().replace("\r\n", "\n");
    if text.is_empty() {
        return Err(PoolError::Invalid(
            "text: write the announcement (it is empty).".into(),
        ));
    }
    let chars = text.chars().count();
    if chars > MAX_CHARS {
        return Err(PoolError::Invalid(format!(
            "text: at most {MAX_CHARS} characters (this one has {chars}); shorten it."
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(PoolError::Invalid(
            "text: plain text only (no control characters).".into(),
        ));
    }
    Ok(text)
}

/// `actor` announces `text` to every participant. Audited.
pub async fn announce(pool: &Pool, actor: &Actor, text: &str) -> Result<Announcement, PoolError> {
    let text = checked_text(text)?;
    let at = pool.clock.now();
    let announcement = {
        let mut recent = pool
            .announcements
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let after = recent.front().map_or(0, |a| a.id);
        let id = u64::try_from(at.timestamp_millis())
            .unwrap_or(0)
            .max(after + 1);
        let announcement = Announcement {
            id,
            text,
            by: actor.user.clone(),
            at,
        };
        recent.push_front(announcement.clone());
        recent.truncate(KEPT);
        pool.announcements
            .latest
            .send_replace(Some(announcement.clone()));
        announcement
    };
    pool.audit_by(
        actor,
        "announcement",
        format!("announced {}: {}", announcement.id, announcement.text),
    )
    .await;
    Ok(announcement)
}

/// What an agent shows on its desktop: the latest announcement while it is recent.
pub fn for_desktop(pool: &Pool) -> Option<Announcement> {
    let latest = pool.announcements.latest.borrow().clone()?;
    (pool.clock.now() - latest.at <= ON_DESKTOP_FOR).then_some(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_checked() {
        assert_eq!(
            checked_text("  Break until 11:00 \r\n").expect("fine"),
            "Break until 11:00"
        );
        assert!(checked_text(" \n ").is_err());
        assert!(checked_text(&"x".repeat(MAX_CHARS)).is_ok());
        let long = checked_text(&"é".repeat(MAX_CHARS + 1)).expect_err("too long");
        assert!(long.to_string().contains("at most 500"), "{long}");
        assert!(checked_text("bell\u{7}").is_err());
        assert_eq!(checked_text("a\n\tb").expect("fine"), "a\n\tb");
    }
}
