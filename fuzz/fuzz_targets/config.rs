//! Any bytes as `wardgate.toml`, the file a technician edits on the SD
//! card's FAT partition: never a panic. Text goes through
//! `Config::from_toml`; bytes that are not UTF-8 through `Config::load`
//! from a file, which must refuse them (naming the line), never read them
//! as lossy text. A config that loads has a site and device ids a topic can
//! carry, unique ids, and value names in the contract.
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
            // TOML must be UTF-8: the file is refused, not read as lossy
            // text (the `config` crate would turn bad bytes into U+FFFD).
            let r = Config::load_with_env(&path, true, std::iter::empty());
            let _ = std::fs::remove_file(&path);
            match r {
                Err(e) => {
                    let e = e.to_string();
                    // Bigger than the cap is refused for its size first.
                    assert!(
                        e.contains("not UTF-8") || e.contains("larger than"),
                        "{e}"
                    );
                }
                Ok(c) => panic!("bytes that are not UTF-8 loaded: {c:?}"),
            }
            return;
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
