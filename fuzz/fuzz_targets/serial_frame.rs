//! Any bytes from a serial port through the readers' line framing: Megatec
//! (CR) and APC Smart (CR LF, alert characters and the `|` `&` notices
//! taken out). A reply is cut
//! at its first terminator and never holds more than MAX_REPLY bytes before
//! its last byte; what it parses to is in the contract.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardgate::source::apc::codec as apc;
use wardgate::source::megatec::codec as megatec;
use wardgate::source::serial::{push_byte, Frame};

mod common;

fuzz_target!(|data: &[u8]| {
    let mut reply = Vec::new();
    for &b in data {
        let before = reply.len();
        match push_byte(&mut reply, b, b"\r", megatec::MAX_REPLY) {
            Frame::Done => {
                assert!(reply.len() <= megatec::MAX_REPLY + 1);
                assert_eq!(reply.iter().position(|c| *c == b'\r'), Some(reply.len() - 1));
                if let Ok(q) = megatec::parse_q1(&reply) {
                    common::check_values(&megatec::to_values(&q, None, None, None));
                }
                let _ = megatec::parse_f(&reply);
                let _ = megatec::parse_i(&reply);
                reply.clear();
            }
            Frame::TooLong => {
                assert_eq!(reply.len(), megatec::MAX_REPLY + 1);
                assert!(!reply.contains(&b'\r'));
                reply.clear();
            }
            Frame::More => assert!(reply.len() == before + 1 && reply.len() <= megatec::MAX_REPLY),
        }
    }

    let mut line = Vec::new();
    for &b in data {
        let (alerts, rest) = apc::split_alerts(&[b]);
        // An alert, reply text, or a dropped notice (`|`, `&`).
        let ignored = usize::from(apc::IGNORED.contains(&b));
        assert_eq!(alerts.len() + rest.len() + ignored, 1);
        for b in rest {
            match push_byte(&mut line, b, b"\r\n", apc::MAX_REPLY) {
                Frame::Done => {
                    assert!(line.len() <= apc::MAX_REPLY + 1 && line.ends_with(b"\r\n"));
                    assert!(!line[..line.len() - 2].windows(2).any(|w| w == b"\r\n"));
                    assert!(line.iter().all(|c| apc::Alert::from_byte(*c).is_none()));
                    for cmd in apc::Command::POLL {
                        if let Ok(apc::Reply::Number(n)) = apc::parse(cmd, &line) {
                            assert!(n.is_finite(), "{cmd:?}: {n}");
                        }
                    }
                    line.clear();
                }
                Frame::TooLong => {
                    assert_eq!(line.len(), apc::MAX_REPLY + 1);
                    line.clear();
                }
                Frame::More => assert!(line.len() <= apc::MAX_REPLY),
            }
        }
    }
});
