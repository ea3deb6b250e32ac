//! Power: the gateway shuts the Pi down cleanly before the UPS that powers
//! it runs flat.

pub mod config;
pub mod decide;
