//! Any bytes as APC Smart replies (with alerts and dropped notices mixed
//! in): never a panic;
//! numbers finite, text within the reply limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardgate::source::apc::codec::{self, Command, Reply};

mod common;

fn check(r: &Reply) {
    match r {
        Reply::Number(n) => assert!(n.is_finite(), "{n}"),
        Reply::Text(t) => assert!(t.is_ascii() && t.len() <= codec::MAX_REPLY),
        Reply::Status(s) => assert!(!s.is_empty()),
        Reply::SmartMode => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let (alerts, rest) = codec::split_alerts(data);
    // Every byte is an alert, reply text, or a notice that is dropped
    // (`|`, `&`).
    let ignored = data.iter().filter(|b| codec::IGNORED.contains(b)).count();
    assert_eq!(alerts.len() + rest.len() + ignored, data.len());
    assert!(rest.iter().all(|b| codec::Alert::from_byte(*b).is_none()));
    assert!(rest.iter().all(|b| !codec::IGNORED.contains(b)));
    for line in rest.split_inclusive(|b| *b == b'\n') {
        for cmd in Command::POLL {
            if let Ok(r) = codec::parse(cmd, line) {
                check(&r);
            }
            assert!(common::in_contract(cmd.variable()));
        }
        if let Ok(r) = codec::parse(Command::SmartMode, line) {
            check(&r);
        }
    }
    if let Some(b) = data.first() {
        let t = codec::status_tokens(*b);
        assert!(!t.is_empty() && t.split(' ').all(|w| !w.is_empty()));
    }
});
