//! Integration tests: one binary, real mosquitto on loopback, the gateway
//! in-process or as the real binary.

mod common;
mod delivery;
mod field;
mod install;
mod sensors;
mod shutdown;
mod spine;
mod storage;
mod uplink;
mod ups;
mod web;
