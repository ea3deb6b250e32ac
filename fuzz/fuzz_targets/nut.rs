//! Any text as upsd's replies to LIST VAR: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardgate::source::nut::codec::{self, ListVar};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut list = ListVar::default();
    for line in text.split_inclusive('\n') {
        let _ = codec::parse_line(line);
        match list.feed("dummy", line) {
            Ok(Some(codec::ListOutcome::Vars(vars))) => {
                let _ = codec::to_values(&vars);
                list = ListVar::default();
            }
            Ok(_) => {}
            Err(_) => list = ListVar::default(),
        }
    }
});
