//! Any bytes from upsd, through the reader's line framing (in reads of 1 to
//! 64 bytes, as a socket may give them), then the codec: never a panic.
//! Lines are cut exactly at LF, never longer than MAX_LINE (1,024 bytes),
//! refused when not UTF-8; values in the contract.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardgate::source::nut::codec::{self, LineReader, ListVar};

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&c, data)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(c % 64) + 1;
    let mut reader = LineReader::default();
    let mut list = ListVar::default();
    let (mut start, mut pos) = (0, 0);
    while pos < data.len() {
        let end = (pos + read_size).min(data.len());
        let (take, line) = reader.feed(&data[pos..end]);
        assert!(take >= 1 && take <= end - pos);
        let taken = &data[pos..pos + take];
        assert!(!taken[..take - 1].contains(&b'\n'), "framing past a LF");
        pos += take;
        let so_far = &data[start..pos];
        match line {
            Err(_) => {
                assert!(
                    so_far.len() > codec::MAX_LINE || std::str::from_utf8(so_far).is_err(),
                    "a good line refused"
                );
                // The reader reconnects: a fresh framer and exchange.
                reader = LineReader::default();
                list = ListVar::default();
                start = pos;
            }
            Ok(None) => {
                assert!(!taken.ends_with(b"\n") && so_far.len() <= codec::MAX_LINE);
            }
            Ok(Some(line)) => {
                assert_eq!(line.as_bytes(), so_far, "the line is exactly the bytes read");
                assert!(line.ends_with('\n') && line.len() <= codec::MAX_LINE);
                start = pos;
                let _ = codec::parse_line(&line);
                // STARTTLS's answer: a yes only when upsd said OK STARTTLS.
                if let Ok(codec::StartTls::Ok) = codec::parse_starttls(&line) {
                    assert!(
                        line.contains("OK") && line.contains("STARTTLS"),
                        "a yes to STARTTLS from {line:?}"
                    );
                }
                match list.feed("dummy", &line) {
                    Ok(Some(codec::ListOutcome::Vars(vars))) => {
                        common::check_values(&codec::to_values(&vars));
                        list = ListVar::default();
                    }
                    Ok(_) => {}
                    Err(_) => list = ListVar::default(),
                }
            }
        }
    }
});
