//! Any bytes as a Megatec reply: the codec must answer Ok or Err, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardgate::source::megatec::codec;

fuzz_target!(|data: &[u8]| {
    let q = codec::parse_q1(data);
    let f = codec::parse_f(data).ok();
    let i = codec::parse_i(data).ok();
    if let Ok(q) = q {
        let est = codec::ChargeEstimate::from_rated(f.as_ref().and_then(|r| r.battery_voltage));
        let v = codec::to_values(&q, f.as_ref(), i.as_ref(), est);
        // A decoded reply always says what the status is.
        assert!(v.get("ups.status").is_some());
    }
});
