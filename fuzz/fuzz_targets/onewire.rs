//! Any bytes as a 1-Wire `w1_slave` file: never a panic. A temperature is
//! given only for a YES CRC line followed by a `t=` integer, it is exactly
//! that integer in thousandths of a degree, finite, and never the power-on
//! 85 degC.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardgate::source::onewire::{parse_w1_slave, W1Error};

fuzz_target!(|data: &[u8]| {
    // The reader uses read_to_string: a file that is not UTF-8 is a bad
    // read before the parser. The parser still must take any text.
    let text = String::from_utf8_lossy(data);
    match parse_w1_slave(&text) {
        Ok(t) => {
            assert!(t.is_finite());
            assert_ne!(t, 85.0);
            let mut lines = text.lines();
            let crc = lines.next().expect("a first line");
            assert!(crc.contains("crc=") && crc.split_whitespace().last() == Some("YES"));
            let milli: i64 = lines
                .next()
                .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("t=")))
                .and_then(|m| m.parse().ok())
                .expect("a t= integer");
            assert_eq!(t, milli as f64 / 1000.0);
        }
        Err(W1Error::Crc) => assert!(text
            .lines()
            .next()
            .is_some_and(|l| l.contains("crc=") && l.split_whitespace().last() == Some("NO"))),
        Err(W1Error::PowerOn) | Err(W1Error::Malformed(_)) => {}
    }
});
