//! HTML pages.

pub mod participant;
