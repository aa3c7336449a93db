//! Why a use case did not go ahead. Each boundary (the JSON API, the pages, the CLI) turns
//! it into its own answer; the message is written for the person who asked.

use std::time::Duration;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The request itself is wrong; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// The request is understood and refused (not on the workshop's list, wrong code).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("VM not found.")]
    VmNotFound,
    /// The pool is not in a state that allows it (nobody to release, nothing free).
    #[error("{0}")]
    Conflict(String),
    /// No VM is free for a claim (upstream's message).
    #[error("No available VMs. Please try again later. Please ask your instructor for help")]
    NoneFree,
    /// Asked too often; may ask again after this long.
    #[error("Too many requests; wait {} s and try again.", .0.as_secs().max(1))]
    Limited(Duration),
    /// Cannot be done right now (a VM's agent is not reachable); may work in a moment.
    #[error("{0}")]
    Unavailable(String),
    /// An outside action (a provider command) failed; the message says why.
    #[error("{0}")]
    Failed(String),
    /// A store failure, shown with the use case's generic message (details are logged).
    #[error("{message}")]
    Store {
        message: &'static str,
        source: StoreError,
    },
}

impl PoolError {
    /// Wraps a store error with the message this use case shows for it.
    pub fn store(message: &'static str) -> impl FnOnce(StoreError) -> PoolError {
        move |source| PoolError::Store { message, source }
    }
}
