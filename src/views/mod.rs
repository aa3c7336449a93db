//! Server-rendered HTML (maud).

pub mod admin;
pub mod classroom;
pub mod desktop;
pub mod layout;
pub mod participant;
pub mod rescues;
