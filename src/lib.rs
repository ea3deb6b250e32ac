//! wardgate: an edge telemetry gateway for ward service centres.
//!
//! Data runs one way: sources -> spool -> sinks. Status only observes.

pub mod app;
pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod events;
pub mod host;
pub mod model;
pub mod power;
pub mod provision;
pub mod sink;
pub mod source;
pub mod spool;
pub mod status;
pub mod telemetry;
pub mod tls;
