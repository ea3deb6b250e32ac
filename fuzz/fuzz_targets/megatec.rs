//! Any bytes as a Megatec reply: the codec answers Ok or Err, never panics;
//! what it maps to values is in the contract.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardgate::source::megatec::codec;

mod common;

fuzz_target!(|data: &[u8]| {
    let q = codec::parse_q1(data);
    let f = codec::parse_f(data).ok();
    let i = codec::parse_i(data).ok();
    if let Some(f) = &f {
        for x in [f.battery_voltage].into_iter().flatten() {
            assert!(x.is_finite());
        }
    }
    if let Ok(q) = q {
        let est = codec::ChargeEstimate::from_rated(f.as_ref().and_then(|r| r.battery_voltage));
        let v = codec::to_values(&q, f.as_ref(), i.as_ref(), est);
        // A decoded reply always says what the status is.
        assert!(v.get("ups.status").is_some());
        common::check_values(&v);
        if let Some(c) = v.get("battery.charge").and_then(|c| c.as_f64()) {
            assert!((0.0..=100.0).contains(&c), "battery.charge {c}");
        }
    }
});
