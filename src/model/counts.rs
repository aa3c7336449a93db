//! How many VMs of the pool are in each state, as the console and `/metrics` show them.

use super::{Health, Vm, VmStatus};

#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    pub total: usize,
    pub initializing: usize,
    pub running: usize,
    pub error: usize,
    pub rebooting: usize,
    pub free: usize,
    pub assigned: usize,
    pub unhealthy: usize,
}

impl Counts {
    /// Counts every VM of `pool`; a VM can count in several columns (running, free).
    pub fn of(pool: &[Vm]) -> Counts {
        let mut c = Counts {
            total: pool.len(),
            ..Counts::default()
        };
        for vm in pool {
            match vm.status {
                Some(VmStatus::Initializing) => c.initializing += 1,
                Some(VmStatus::Running) => c.running += 1,
                Some(VmStatus::Error) => c.error += 1,
                Some(VmStatus::Rebooting) => c.rebooting += 1,
                Some(VmStatus::Unknown) | None => {}
            }
            c.free += usize::from(vm.is_available());
            c.assigned += usize::from(vm.assignment.is_some());
            c.unhealthy += usize::from(vm.health == Some(Health::Unhealthy));
        }
        c
    }
}
