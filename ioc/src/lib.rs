//! The operations centre's consumer of the wardgate MQTT contract
//! (docs/mqtt.md; docs/ioc.md says what this crate does). Built from the
//! contract crate (`wardgate-contract`): its envelopes, topics and rules
//! are used as they are, never copied.
//!
//! - [`dedup`]: de-duplication by record key, a bounded window per stream.
//! - [`ledger`]: the gap ledger, a pure state machine: every missing
//!   number pending, filled late, explained (and why) or unexplained.
//! - [`pipeline`]: topic and payload in, through decode, de-duplication
//!   and the ledger.
//! - [`loadgen`]: contract-valid traffic for many sites with planted
//!   duplicates, holes (declared and not), resets, backlog and clock
//!   corrections, and the list of the undeclared holes it planted.
//!
//! - [`fleet`], [`web`], [`metrics`]: the fleet view (a state machine per
//!   site), its pages and `/metrics`.
//!
//! - [`config`], [`ingest`], [`store`], [`tsdb`]: the running service
//!   (`wardgate-ioc run`): MQTT in, through the pipeline and the fleet view
//!   (one decode), committed to the store (SQLite) and acknowledged,
//!   readings to a time-series database, the pages and `/metrics` served
//!   from the same ledger and fleet view.
//!
//! - [`send`], [`console`]: the operator's commands: one command to a
//!   site's gateway over MQTT (`wardgate-ioc send`), the fleet table in a
//!   terminal from the store (`wardgate-ioc fleet`).
//! - [`history`], [`report`]: the monthly report, computed from the
//!   history the ingest keeps beside the ledger (per site: spans heard,
//!   condition intervals, day counts).

pub mod backoff;
pub mod config;
pub mod console;
pub mod dedup;
pub mod fleet;
pub mod history;
pub mod ingest;
pub mod ledger;
pub mod loadgen;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod send;
pub mod store;
pub mod tsdb;
pub mod web;
