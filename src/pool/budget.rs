//! The budget: the pool's cost metered as it runs (`jobs::budget` calls `meter`), the figures
//! the console, `/metrics` and the event's report show, and the cap that refuses launches.

use crate::model::budget::{
    CostFigures, EventWindow, Pricing, Spend, parse_cap, parse_prices, price_of,
};
use crate::model::{Event, EventPhase};
use crate::store::{StoreError, spend, vms};

use super::{Pool, PoolError};

/// The prices and cap of the configuration (validated at start-up).
pub fn pricing(pool: &Pool) -> Pricing {
    let budget = &pool.config.budget;
    let machine_type = pool.config.machine.machine_type.clone();
    let overrides = parse_prices(&budget.prices).unwrap_or_default();
    Pricing {
        price_per_hour: price_of(&overrides, &machine_type),
        machine_type,
        cap: parse_cap(&budget.cap_usd).unwrap_or_default(),
        warn_percent: budget.warn_percent,
    }
}

async fn read(pool: &Pool) -> Result<(Spend, usize), PoolError> {
    pool.store
        .read(|tx| Ok((spend::get(tx)?, vms::list(tx)?.len())))
        .await
        .map_err(PoolError::store("Failed to read the pool's cost."))
}

/// The cost of the running event (pre-warm to the end of its hard stop) or, without one,
/// of the pool outside events, up to now.
pub async fn figures(pool: &Pool) -> Result<CostFigures, PoolError> {
    let (spent, vms) = read(pool).await?;
    let event = pool.event.get();
    Ok(CostFigures::current(
        &spent,
        event.as_ref(),
        vms,
        &pricing(pool),
        pool.clock.now(),
    ))
}

/// The cost of `event` in any phase (an estimate before its pre-warm, the total once over).
pub async fn figures_of_event(pool: &Pool, event: &Event) -> Result<CostFigures, PoolError> {
    let (spent, vms) = read(pool).await?;
    Ok(CostFigures::of_event(
        &spent,
        event,
        vms,
        &pricing(pool),
        pool.clock.now(),
    ))
}

/// Adds the cost of the VM records since the last meter, when at least `every` seconds of
/// the pool's clock have passed (the first call only starts the meter). After a restart the
/// time the allocator was down is counted: the VMs kept running.
pub async fn meter(pool: &Pool, every: i64) -> Result<Spend, StoreError> {
    let vms = pool.store.read(|tx| Ok(vms::list(tx)?.len())).await?;
    let now = pool.clock.now();
    let price = pricing(pool).price_per_hour;
    // The current event's window also covers an event that ended or was called off since
    // the last meter, so its last stretch is charged to it.
    let window = pool
        .event
        .get()
        .filter(|e| e.phase(now) != EventPhase::Planned)
        .map(|e| EventWindow::of(&e));
    pool.store
        .write(move |tx| {
            let mut spent = spend::get_for_update(tx)?;
            let due = spent
                .metered_at
                .is_none_or(|at| (now - at).num_seconds() >= every);
            if due {
                spent.advance(now, vms, price, window);
                spend::put(tx, &spent)?;
            }
            Ok(spent)
        })
        .await
}

/// Refuses a launch of `count` VMs that would take the projected cost past
/// `budget.cap_usd`.
pub async fn check_launch(pool: &Pool, count: u32) -> Result<(), PoolError> {
    if pool.config.budget.cap_usd.trim().is_empty() {
        return Ok(());
    }
    match figures(pool).await?.refuses_launch(count) {
        Some(why) => Err(PoolError::Invalid(why)),
        None => Ok(()),
    }
}
