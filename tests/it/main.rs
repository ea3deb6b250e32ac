//! Integration tests: one binary, real mosquitto on loopback, the gateway
//! in-process or as the real binary. One room per concern: spine (the live
//! and backlog path), delivery (at least once), uplink (the MQTT link),
//! durability (kills, stops and the spool's own faults), shutdown (status
//! at start and stop, a hung broker), storage (storage faults, issue 10),
//! (remote operation from the IOC, issue 13); helpers
//! InfluxDB sink, issue 12); helpers
//! hostile_peers (peers that flood, lie or flap, issue 11), commands
//! hostile_peers (peers that flood, lie or flap, issue 11), influx (the
//! hostile_peers (peers that flood, lie or flap, issue 11); helpers
//! people read, issue 15), install,
//! tls, cli, service (systemd), ups, power (the Pi shut down before the
//! UPS runs flat, issue 14), field, sensors, web, install,
//! tls, cli, service (systemd), ups, field, sensors, web, words (what
//! in common/.

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
