//! Integration tests: one binary, real mosquitto on loopback, the gateway
//! in-process or as the real binary.

mod common;
mod delivery;
mod field;
mod hostile_web;
mod install;
mod sensors;
mod spine;
mod storage;
mod uplink;
mod ups;
mod web;
