//! Integration tests: one binary, the gateway in-process or as the real
//! binary against real peers on loopback (mosquitto, NUT, snmpd, pymodbus,
//! VictoriaMetrics, chromium). One module per concern; helpers in common/.

// Test code: a failed unwrap is a failed test, and the peers' start-up
// helpers are synchronous and wait with a short blocking sleep.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

// The data path and MQTT delivery.
mod delivery; // at least once: lost PUBACKs, connections cut after a PUBLISH
mod durability; // kills and stops, a full or garbage spool: nothing read is lost
mod shutdown; // the status topic at start and stop, SIGTERM with a hung broker
mod spine; // sources -> spool -> acknowledged delivery, live and after an outage
mod storage; // storage faults and bad records against the spawned binary
mod tls; // MQTT over TLS, password auth, wrong password or CA
mod uplink; // the MQTT link under faults: reconnects, stalls, timeouts

// The InfluxDB sink.
mod influx; // readings into VictoriaMetrics beside MQTT; the error classes

// Devices and their peers.
mod clock; // readings before and after the clock syncs (a fake clock)
mod field; // Modbus RTU and TCP (pymodbus), the router over SNMP (snmpd)
mod nut_tls; // NUT over TLS against a real upsd
mod sensors; // thresholds and alarms through the whole path
mod ups; // UPS sources: simulators on pseudo-terminals, real NUT
mod ups_commands; // the UPS's own power-off with return, over its link

// Remote operation and power.
mod commands; // commands from the operations centre over MQTT, and the ACL example
mod flood; // a command flood must not cost a reading
mod power; // [power]: the Pi shut down before the UPS runs flat

// What people see: the page, the API, the words.
mod web; // the page, the API and the metrics; the page in headless chromium
mod words; // every value in words, Vietnamese and English, at phone size

// Hostile input.
mod hostile_config; // config values that must be refused by `wardgate check`
mod hostile_peers; // peers that flood, lie or flap
mod hostile_web; // the page under attack from the LAN

// Operations.
mod cli; // `wardgate check`, `spool stats`, `spool export`
mod install; // first-boot provisioning through the real binary
mod service; // under systemd: READY, WATCHDOG, STOPPING
