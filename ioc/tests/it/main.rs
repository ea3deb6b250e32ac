//! Integration tests of wardgate-ioc: one binary, a module per subject.

mod loadgen;
mod schemas;
