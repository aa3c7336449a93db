//! HTML pages.

pub mod admin;
pub mod login;
pub mod participant;
pub mod seat;
