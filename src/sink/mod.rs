//! Sinks: where records go once read. Each keeps its own position in the
//! spool and reports success only after the remote acknowledged: MQTT
//! (always) and InfluxDB (when `influxdb.url` is set).

pub(crate) mod ack;
pub(crate) mod config;
pub(crate) mod influx;
pub(crate) mod lane;
pub(crate) mod mqtt;
pub(crate) mod payload;
