//! Server-rendered HTML (maud).

pub mod layout;
pub mod participant;
