//! Sinks: where records go once read. Each keeps its own position in the
//! spool and reports success only after the remote acknowledged: MQTT
//! (always) and InfluxDB (when `influxdb.url` is set).

pub mod ack;
pub mod config;
pub mod influx;
pub mod lane;
pub mod mqtt;
pub mod payload;
