//! Any texts as the Pi health source's procfs/sysfs files (thermal zone,
//! get_throttled, loadavg, meminfo, uptime): never a panic; values in the
//! contract; the flags agree with the bits; memory.used_percent within
//! 0-100 when the file is consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardgate::model::Value;
use wardgate::source::system::{self, Files};

mod common;

fuzz_target!(|data: &[u8]| {
    // Five files, separated by NUL (which none of them holds); a part that
    // is not UTF-8 is a file read_to_string refuses, i.e. missing.
    let mut parts = data.split(|b| *b == 0).map(|p| std::str::from_utf8(p).ok().map(String::from));
    let mut next = || parts.next().flatten();
    let f = Files {
        thermal: next(),
        throttled: next(),
        loadavg: next(),
        meminfo: next(),
        uptime: next(),
    };
    let v = system::to_values(&f);
    common::check_values(&v);
    if let Some(bits) = v.get("pi.throttled").and_then(Value::as_f64) {
        assert!(bits >= 0.0 && bits <= f64::from(u32::MAX) && bits.fract() == 0.0);
        let bits = bits as u32;
        assert_eq!(
            v.get("pi.under_voltage"),
            Some(&Value::Bool(bits & system::UNDER_VOLTAGE_NOW != 0))
        );
        assert_eq!(system::parse_throttled(&format!("{bits:#x}")), Some(bits));
    }
    if let (Some(t), Some(a)) = (
        v.get("memory.total").and_then(Value::as_f64),
        v.get("memory.available").and_then(Value::as_f64),
    ) {
        if t > 0.0 && (0.0..=t).contains(&a) {
            let p = v.get("memory.used_percent").and_then(Value::as_f64);
            assert!(p.is_some_and(|p| (0.0..=100.0).contains(&p)), "{p:?}");
        }
    }
    if let Some(s) = f.throttled.as_deref() {
        let _ = system::parse_throttled(s);
    }
});
