//! Any bytes as the positions file (`spool.db.seq`) and any text as a
//! stream key or epoch (also the meta table's keys): never a panic. A file
//! that parses has a 16-hex-digit epoch and reads back the same after it is
//! written; stream keys that parse format back to keys that parse the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardgate::spool::positions::{self, parse_epoch, parse_stream_key, stream_key};

fn key_round_trip(key: &str) {
    if let Some((kind, dev)) = parse_stream_key(key) {
        let again = stream_key(kind, dev);
        assert_eq!(parse_stream_key(&again), Some((kind, dev)), "{key:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = positions::parse(data) {
        let e = parse_epoch(&p.epoch).expect("a parsed file has a valid epoch");
        assert_eq!(parse_epoch(&positions::epoch_hex(e)), Some(e));
        let text = serde_json::to_vec_pretty(&p).expect("serialises");
        assert_eq!(positions::parse(&text).ok(), Some(p.clone()), "write then read");
        for k in p.streams.keys() {
            key_round_trip(k);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        key_round_trip(s);
        if let Some(e) = parse_epoch(s) {
            assert_eq!(s.len(), 16);
            assert_eq!(parse_epoch(&positions::epoch_hex(e)), Some(e));
        }
    }
});
