//! Integration tests of wardgate-ioc: one binary, a module per subject.

mod fleet38;
mod fleet_cli;
mod fleet_web;
mod ingest;
mod ingest_gateway;
mod ingest_peers;
mod ingest_web;
mod loadgen;
mod report;
mod schemas;
mod send;
