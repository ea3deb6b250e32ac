//! Shared helpers of the integration tests, one file per peer or concern.
//! Everything a test uses is re-exported here, so a test file says
//! `use crate::common::*;` and names the peer modules (nut, proxy, ...)
//! for the rest.

#![allow(dead_code)]

pub mod apc_sim;
mod contract;
pub mod devices;
mod gateway;
mod harness;
pub mod influx;
pub mod megatec_sim;
mod mosquitto;
pub mod nut;
pub mod peers;
mod ports;
pub mod proxy;
mod records;
pub mod storage;
mod subscriber;
mod web;

pub use contract::{check_envelope, is_request_topic, Schemas};
pub use gateway::{
    config, config_text, process_config, sim, ups_events, wardgate_check, wardgate_check_output,
    Gateway, Process,
};
pub use harness::{
    eventually, is_root, signal, skip, test_site, this_test, wait_for, within, STOP_BUDGET, WAIT,
};
pub use mosquitto::Broker;
pub use ports::{closed_port, free_port, ClosedPort};
pub use records::{
    assert_clock_unless_it_changed, assert_contiguous, count_distinct_events, dedupe, lateness_ms,
};
pub use subscriber::{run_subscribed, Subscriber};
pub use web::{chromium, http_exchange, http_get, page_addr, start_without_broker};
