//! Integration tests: one binary, real mosquitto on loopback, the gateway
//! in-process or as the real binary.

mod cli;
mod common;
mod delivery;
mod durability;
mod field;
mod install;
mod sensors;
mod service;
mod shutdown;
mod spine;
mod storage;
mod tls;
mod uplink;
mod ups;
mod web;
