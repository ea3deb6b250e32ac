//! Integration tests of wardgate-ioc: one binary, a module per subject.

mod fleet_web;
mod loadgen;
mod schemas;
