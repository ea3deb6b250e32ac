//! Any bytes as APC Smart replies (with alerts mixed in): never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardgate::source::apc::codec::{self, Command};

fuzz_target!(|data: &[u8]| {
    let (_alerts, rest) = codec::split_alerts(data);
    for line in rest.split_inclusive(|b| *b == b'\n') {
        for cmd in Command::POLL {
            let _ = codec::parse(cmd, line);
        }
        let _ = codec::parse(Command::SmartMode, line);
    }
    if let Some(b) = data.first() {
        let _ = codec::status_tokens(*b);
    }
});
