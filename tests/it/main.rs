//! Integration tests: one binary, real mosquitto on loopback, the gateway
//! in-process or as the real binary. One room per concern: spine (the live
//! and backlog path), delivery (at least once), uplink (the MQTT link),
//! durability (kills, stops and the spool's own faults), shutdown (status
//! at start and stop, a hung broker), storage (storage faults), clock,
//! hostile_peers (peers that flood, lie or flap), hostile_config,
//! hostile_web, influx (the InfluxDB sink), commands (remote operation from
//! the IOC), flood (a command flood must not cost a reading),
//! ups_commands, ups, nut_tls, power (the Pi shut down before the UPS runs
//! flat), field, sensors, web, words (what people read), install, tls,
//! cli, service (systemd); helpers in common/.

// Test code: a failed unwrap is a failed test, and the peers' start-up
// helpers are synchronous and wait with a short blocking sleep.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod cli;
mod clock;
mod commands;
mod common;
mod delivery;
mod durability;
mod field;
mod flood;
mod hostile_config;
mod hostile_peers;
mod hostile_web;
mod influx;
mod install;
mod nut_tls;
mod power;
mod sensors;
mod service;
mod shutdown;
mod spine;
mod storage;
mod tls;
mod uplink;
mod ups;
mod ups_commands;
mod web;
mod words;
