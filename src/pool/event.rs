//! The workshop as an event: planning it (from the console, the API or the configuration
//! file), changing or cancelling it, ending it early, the journal of what happened during
//! it, and what participants are shown. The event job (`jobs::event`) keeps its pool
//! running, announces the countdown and does the hard stop.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Actor, Pool, PoolError};
use crate::clock::parse_time;
use crate::model::{
    Event, EventPhase, EventPlan, Health, JournalEntry, JournalKind, Vm, VmStatus, parse_marks,
};
use crate::store::{StoreError, events, vms};

/// The current event as last stored, for everyone who must react to a change (the
/// participants' live pages, the claim's join code, the agents' countdown notices).
pub struct EventCell {
    current: watch::Sender<Option<Event>>,
}

impl EventCell {
    pub fn new(current: Option<Event>) -> EventCell {
        EventCell {
            current: watch::Sender::new(current),
        }
    }

    pub fn get(&self) -> Option<Event> {
        self.current.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Event>> {
        self.current.subscribe()
    }

    fn set(&self, event: Event) {
        self.current.send_replace(Some(event));
    }
}

/// An event as the console form or the API sends it; times in ISO 8601.
#[derive(Debug, Default, Deserialize)]
pub struct EventForm {
    pub name: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub seats: Option<u32>,
    pub spare_percent: Option<u32>,
    pub prewarm_minutes: Option<u32>,
    pub join_code: Option<String>,
    /// Comma-separated minutes, e.g. `30,10,2`.
    pub warn_minutes: Option<String>,
}

impl EventForm {
    /// Each field sent, on its own rule (before anything is looked up).
    fn check_given(&self) -> Result<(), PoolError> {
        use crate::model::{
            check_join_code, check_marks, check_name, check_prewarm_minutes, check_seats,
            check_spare_percent,
        };
        let invalid = PoolError::Invalid;
        for (field, text) in [("start", &self.start), ("end", &self.end)] {
            if let Some(t) = text.as_deref().filter(|t| !t.trim().is_empty()) {
                parse_time(t).map_err(|e| invalid(format!("{field}: {e}")))?;
            }
        }
        if let Some(text) = &self.warn_minutes {
            let marks = parse_marks(text).map_err(|e| invalid(format!("warn_minutes: {e}")))?;
            check_marks(&marks).map_err(invalid)?;
        }
        let checks = [
            self.name.as_deref().map(check_name),
            self.seats.map(check_seats),
            self.spare_percent.map(check_spare_percent),
            self.prewarm_minutes.map(check_prewarm_minutes),
            self.join_code.as_deref().map(|c| check_join_code(c.trim())),
        ];
        checks
            .into_iter()
            .flatten()
            .collect::<Result<(), String>>()
            .map_err(invalid)
    }

    /// The plan this form asks for; fields left out keep `base`'s value (or the
    /// configuration's defaults for a new event).
    fn plan(self, base: Option<&EventPlan>, pool: &Pool) -> Result<EventPlan, PoolError> {
        self.check_given()?;
        let invalid = PoolError::Invalid;
        let time = |field: &str, text: Option<String>, kept: Option<DateTime<Utc>>| match text
            .filter(|t| !t.trim().is_empty())
        {
            Some(t) => parse_time(&t).map_err(|e| invalid(format!("{field}: {e}"))),
            None => kept.ok_or_else(|| invalid(format!("{field}: required"))),
        };
        let defaults = &pool.config.event;
        let plan = EventPlan {
            name: self
                .name
                .or_else(|| base.map(|b| b.name.clone()))
                .unwrap_or_default()
                .trim()
                .to_owned(),
            starts_at: time("start", self.start, base.map(|b| b.starts_at))?,
            ends_at: time("end", self.end, base.map(|b| b.ends_at))?,
            seats: self.seats.or(base.map(|b| b.seats)).unwrap_or(0),
            spare_percent: self
                .spare_percent
                .or(base.map(|b| b.spare_percent))
                .unwrap_or(u32::try_from(defaults.spare_percent).unwrap_or(0)),
            prewarm_minutes: self
                .prewarm_minutes
                .or(base.map(|b| b.prewarm_minutes))
                .unwrap_or(u32::try_from(defaults.prewarm_minutes).unwrap_or(0)),
            join_code: self
                .join_code
                .map(|c| c.trim().to_owned())
                .or_else(|| base.map(|b| b.join_code.clone()))
                .unwrap_or_default(),
            warn_minutes: match self.warn_minutes {
                Some(text) => {
                    parse_marks(&text).map_err(|e| invalid(format!("warn_minutes: {e}")))?
                }
                None => match base {
                    Some(b) => b.warn_minutes.clone(),
                    None => parse_marks(&defaults.warn_minutes).unwrap_or_default(),
                },
            },
        };
        plan.check().map_err(invalid)?;
        Ok(plan)
    }
}

/// Loads the current event, and the `event` section of the configuration over it: the
/// file's event is created, or brought up to date when it is already the current one.
pub async fn load(pool: &Pool) -> Result<(), EventLoadError> {
    let planned = pool.config.event_plan().map_err(EventLoadError::Config)?;
    let now = pool.clock.now();
    let current = pool
        .store
        .write(move |tx| {
            let current = events::current_for_update(tx)?;
            let Some(plan) = planned else {
                return Ok(Ok(current));
            };
            match current {
                // The same plan: the same event, whatever its phase (an ended one stays ended).
                Some(e) if e.from_config && e.plan == plan => Ok(Ok(Some(e))),
                Some(e) if e.plan.name == plan.name && e.from_config && !finished(&e, now) => {
                    let e = e.replanned(plan, now);
                    events::put(tx, &e)?;
                    Ok(Ok(Some(e)))
                }
                Some(e) if !finished(&e, now) => Ok(Err(format!(
                    "event.name: the event '{}' (created in the console) has not ended; end or cancel it there, or remove the event section",
                    e.plan.name
                ))),
                // A new event that is already over would destroy the pool at once.
                _ if plan.ends_at <= now => Ok(Err(format!(
                    "event.end: {} has passed; a new event must end in the future",
                    plan.ends_at
                ))),
                _ => {
                    let e = events::create(tx, Event::new(0, plan, true, "config", now))?;
                    Ok(Ok(Some(e)))
                }
            }
        })
        .await?;
    match current {
        Ok(current) => {
            if let Some(e) = &current {
                tracing::info!(event = %e.plan.name, phase = e.phase(now).as_str(), "workshop event");
            }
            pool.event.current.send_replace(current);
            Ok(())
        }
        Err(why) => Err(EventLoadError::Config(why)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventLoadError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn finished(e: &Event, now: DateTime<Utc>) -> bool {
    matches!(e.phase(now), EventPhase::Ended | EventPhase::Cancelled)
}

/// Plans a new event. Refused while another one has not ended.
pub async fn create(pool: &Pool, actor: &Actor, form: EventForm) -> Result<Event, PoolError> {
    let plan = form.plan(None, pool)?;
    let now = pool.clock.now();
    if plan.ends_at <= now {
        return Err(PoolError::Invalid("end: must be in the future".into()));
    }
    let by = actor.user.clone();
    let created = pool
        .store
        .write(move |tx| {
            if let Some(e) = events::current_for_update(tx)?
                && !finished(&e, now)
            {
                return Ok(Err(e));
            }
            events::create(tx, Event::new(0, plan, false, &by, now)).map(Ok)
        })
        .await
        .map_err(PoolError::store("Failed to create the event."))?
        .map_err(|e| {
            PoolError::Conflict(format!(
                "The event '{}' is {}; end or cancel it before planning another.",
                e.plan.name,
                e.phase(now).as_str()
            ))
        })?;
    pool.event.set(created.clone());
    pool.audit_by(actor, "event-create", describe(&created.plan))
        .await;
    Ok(created)
}

/// Changes the current event's plan (e.g. a later end).
pub async fn update(pool: &Pool, actor: &Actor, form: EventForm) -> Result<Event, PoolError> {
    form.check_given()?;
    let now = pool.clock.now();
    let current = editable(pool, now)?;
    let plan = form.plan(Some(&current.plan), pool)?;
    if plan.ends_at != current.plan.ends_at && plan.ends_at <= now {
        return Err(PoolError::Invalid(
            "end: must be in the future (use \"End now\" to stop at once)".into(),
        ));
    }
    let id = current.id;
    let changed = change(pool, id, move |e| Ok(e.replanned(plan, now))).await?;
    pool.audit_by(actor, "event-update", describe(&changed.plan))
        .await;
    Ok(changed)
}

/// The event stops now: files are rescued, then the pool is destroyed.
pub async fn end_now(pool: &Pool, actor: &Actor) -> Result<Event, PoolError> {
    let now = pool.clock.now();
    let current = editable(pool, now)?;
    let changed = change(pool, current.id, move |mut e| {
        if e.plan.ends_at > now {
            e.plan.ends_at = now;
            e.updated_at = now;
        }
        Ok(e)
    })
    .await?;
    pool.audit_by(actor, "event-end-now", changed.plan.name.clone())
        .await;
    Ok(changed)
}

/// Calls the event off: no more pre-warm, countdown or hard stop; the VMs stay.
pub async fn cancel(pool: &Pool, actor: &Actor) -> Result<Event, PoolError> {
    let now = pool.clock.now();
    let current = editable(pool, now)?;
    if current.stop_run.is_some() {
        return Err(PoolError::Conflict(
            "The hard stop has begun; it cannot be called off.".into(),
        ));
    }
    let changed = change(pool, current.id, move |mut e| {
        e.cancelled_at = Some(now);
        e.updated_at = now;
        Ok(e)
    })
    .await?;
    pool.audit_by(actor, "event-cancel", changed.plan.name.clone())
        .await;
    Ok(changed)
}

/// The current event, if the admin may still change it online.
fn editable(pool: &Pool, now: DateTime<Utc>) -> Result<Event, PoolError> {
    let current = pool
        .event
        .get()
        .filter(|e| !finished(e, now))
        .ok_or_else(|| PoolError::NotFound("There is no event in progress.".into()))?;
    if current.from_config {
        return Err(PoolError::Conflict(format!(
            "The event '{}' is defined in the configuration file; change its event section and restart.",
            current.plan.name
        )));
    }
    Ok(current)
}

/// Applies `f` to the stored event `id` and publishes the result.
pub async fn change(
    pool: &Pool,
    id: u64,
    f: impl FnOnce(Event) -> Result<Event, PoolError> + Send + 'static,
) -> Result<Event, PoolError> {
    let changed = pool
        .store
        .write(move |tx| {
            let Some(e) = events::current_for_update(tx)?.filter(|e| e.id == id) else {
                return Ok(Err(PoolError::NotFound(
                    "The event changed meanwhile; reload.".into(),
                )));
            };
            match f(e) {
                Ok(next) => {
                    events::put(tx, &next)?;
                    Ok(Ok(next))
                }
                Err(refused) => Ok(Err(refused)),
            }
        })
        .await
        .map_err(PoolError::store("Failed to change the event."))??;
    pool.event.set(changed.clone());
    Ok(changed)
}

fn describe(plan: &EventPlan) -> String {
    format!(
        "'{}' {} → {}, {} seats + {} % spare",
        plan.name, plan.starts_at, plan.ends_at, plan.seats, plan.spare_percent
    )
}

/// Records what happened in the current event's journal, while it runs (pre-warm to the
/// end of its hard stop). A store failure is logged: the report misses one line, the
/// workshop goes on.
pub async fn journal(
    pool: &Pool,
    kind: JournalKind,
    host: Option<&str>,
    email: Option<&str>,
    seconds: Option<f64>,
    detail: String,
) {
    let now = pool.clock.now();
    let Some(event) = pool.event.get().filter(|e| {
        matches!(
            e.phase(now),
            EventPhase::Warming | EventPhase::Open | EventPhase::Stopping
        )
    }) else {
        return;
    };
    let entry = JournalEntry {
        at: now,
        kind,
        host: host.map(str::to_owned),
        email: email.map(str::to_owned),
        seconds,
        detail,
    };
    match pool
        .store
        .write(move |tx| events::journal(tx, event.id, &entry))
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(event = %event.plan.name, "the event's journal is full; its report misses later entries")
        }
        Err(e) => tracing::error!(error = %e, "cannot write to the event's journal"),
    }
}

/// The join code participants must enter now: the event's, else `access.join_code`.
pub fn join_code(pool: &Pool) -> String {
    let now = pool.clock.now();
    pool.event
        .get()
        .filter(|e| !finished(e, now) && !e.plan.join_code.is_empty())
        .map_or_else(
            || pool.config.access.join_code.trim().to_owned(),
            |e| e.plan.join_code,
        )
}

/// Whether claims are refused because the event is over.
pub fn closed(pool: &Pool) -> Option<String> {
    let now = pool.clock.now();
    let e = pool.event.get()?;
    matches!(e.phase(now), EventPhase::Stopping | EventPhase::Ended).then(|| {
        format!(
            "The workshop '{}' has ended; no more desktops are handed out.",
            e.plan.name
        )
    })
}

/// The countdown warning of `minutes` left, as participants read it.
pub fn warning_text(minutes: u32) -> String {
    let left = if minutes == 1 {
        "1 minute".to_owned()
    } else {
        format!("{minutes} minutes")
    };
    format!(
        "The workshop ends in {left}. Save your work now: your files are saved for you when it ends, and everything on the desktop is deleted."
    )
}

/// What a participant's page shows of the event (`null` without one).
pub fn participant_view(pool: &Pool) -> Value {
    let now = pool.clock.now();
    let Some(e) = pool
        .event
        .get()
        .filter(|e| e.phase(now) != EventPhase::Cancelled)
    else {
        return Value::Null;
    };
    let warning = e.current_mark(now).map(|m| {
        json!({
            "minutes": m,
            "text": warning_text(m),
        })
    });
    json!({
        "name": e.plan.name,
        "phase": e.phase(now).as_str(),
        "starts_at": e.plan.starts_at,
        "ends_at": e.plan.ends_at,
        "warning": warning,
        // The participant's clock may be off: the page counts down from the allocator's.
        "server_now": now,
    })
}

/// The countdown notice a VM's agent shows on the desktop, with an id that changes with
/// each mark (the agent shows each id once).
pub fn desktop_notice(pool: &Pool) -> Option<(String, String)> {
    let now = pool.clock.now();
    let e = pool.event.get()?;
    let mark = e.current_mark(now)?;
    Some((format!("event-{}-{mark}", e.id), warning_text(mark)))
}

/// VMs that are up, or on their way up; dead ones (error, unhealthy GPU, agent silent) do
/// not count, and neither do VMs being destroyed.
pub fn counts_as_seat(vm: &Vm) -> bool {
    !vm.destroying
        && vm.unresponsive_since.is_none()
        && vm.health != Some(Health::Unhealthy)
        && vm.status != Some(VmStatus::Error)
}

/// An event with where it stands now.
pub struct EventStatus {
    pub event: Event,
    pub phase: EventPhase,
    pub now: DateTime<Utc>,
    /// VMs up or on their way.
    pub up: usize,
    /// VMs ready for a participant.
    pub free: usize,
    /// Seats taken.
    pub taken: usize,
}

/// The current event and the pool's counts, if there is an event.
pub async fn status(pool: &Pool) -> Result<Option<EventStatus>, PoolError> {
    let Some(event) = pool.event.get() else {
        return Ok(None);
    };
    let listed = pool
        .store
        .read(vms::list)
        .await
        .map_err(PoolError::store("Failed to read the pool."))?;
    let now = pool.clock.now();
    Ok(Some(EventStatus {
        phase: event.phase(now),
        event,
        now,
        up: listed.iter().filter(|vm| counts_as_seat(vm)).count(),
        free: listed.iter().filter(|vm| vm.is_available()).count(),
        taken: listed.iter().filter(|vm| vm.assignment.is_some()).count(),
    }))
}
