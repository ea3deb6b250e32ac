//! Sinks: where records go once read. Each keeps its own position in the
//! spool and reports success only after the remote acknowledged.

pub mod ack;
pub mod config;
pub mod lane;
pub mod mqtt;
pub mod payload;
