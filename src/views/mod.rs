//! Server-rendered HTML (maud).

pub mod admin;
pub mod layout;
pub mod participant;
