//! HTML pages.

pub mod admin;
pub mod participant;
