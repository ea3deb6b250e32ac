//! Any bytes as `wardgate.toml`, the file a technician edits on the SD
//! card's FAT partition: never a panic. Text goes through
//! `Config::from_toml`; bytes that are not UTF-8 through `Config::load`
//! from a file, which reads them as their lossy text. A config that loads has a site and device
//! ids a topic can carry, unique ids, and value names in the contract.
#![no_main]
use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use wardgate::config::{Config, DeviceConfig};
use wardgate::spool::valid_device_id;

mod common;

fuzz_target!(|data: &[u8]| {
    let cfg = match std::str::from_utf8(data) {
        Ok(text) => Config::from_toml(text),
        Err(_) => {
            let path = std::env::temp_dir().join(format!(
                "wardgate-fuzz-config-{}.toml",
                std::process::id()
            ));
            std::fs::write(&path, data).expect("writing the temp file");
            // TOML must be UTF-8, but the `config` crate reads files with
            // String::from_utf8_lossy: the bad bytes become U+FFFD and the
            // file may load (reported in issue 18; the fix belongs in
            // src/config/mod.rs). It must at least load as its lossy text does.
            let r = Config::load_with_env(&path, true, std::iter::empty());
            let lossy = Config::from_toml(&String::from_utf8_lossy(data));
            assert_eq!(r.is_ok(), lossy.is_ok(), "{r:?} / {lossy:?}");
            r
        }
    };
    let Ok(cfg) = cfg else { return };
    assert!(cfg.validate().is_ok(), "validate is not idempotent");
    assert!(valid_device_id(&cfg.site), "site {:?}", cfg.site);
    let mut ids = HashSet::new();
    for d in &cfg.devices {
        assert!(valid_device_id(d.id()), "device id {:?}", d.id());
        assert!(ids.insert(d.id().to_owned()), "device id {:?} twice", d.id());
        match d {
            DeviceConfig::Modbus(m) => {
                for r in &m.registers {
                    assert!(common::in_contract(&r.name), "register {:?}", r.name);
                }
            }
            DeviceConfig::OneWire(o) => {
                for n in o.names.values() {
                    assert!(common::in_contract(n), "1-Wire name {n:?}");
                }
            }
            _ => {}
        }
    }
});
