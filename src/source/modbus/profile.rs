//! Built-in device profiles, usable by name (`profile = "xy-md02"`): line
//! settings, default slave id and register map of devices common in
//! service centres.

use serde::Deserialize;

use super::map::{DataType, Function, RegisterConfig, WordOrder};

/// A serial line's parity, as a config or a profile names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParityName {
    None,
    Even,
    Odd,
}

pub(crate) struct Profile {
    pub baud: u32,
    pub parity: ParityName,
    pub stop_bits: u8,
    pub unit: u8,
    pub registers: Vec<RegisterConfig>,
}

/// Names of the built-in profiles.
pub(crate) const NAMES: &[&str] = &["xy-md02", "sdm120"];

fn input(name: &str, address: i64, t: DataType, scale: f64, unit: &str) -> RegisterConfig {
    RegisterConfig {
        name: name.into(),
        function: Function::Input,
        address,
        data_type: Some(t),
        word_order: WordOrder::HighFirst,
        scale,
        offset: 0.0,
        unit: (!unit.is_empty()).then(|| unit.to_owned()),
        // The page's table has words for the profiles' values.
        label: None,
        label_en: None,
    }
}

pub(crate) fn get(name: &str) -> Option<Profile> {
    match name {
        // XY-MD02 (SHT20) temperature/humidity sensor: function 04,
        // register 1 temperature x10 signed, register 2 humidity x10.
        "xy-md02" => Some(Profile {
            baud: 9600,
            parity: ParityName::None,
            stop_bits: 1,
            unit: 1,
            registers: vec![
                input("ambient.temperature", 0x0001, DataType::I16, 0.1, "°C"),
                input("ambient.humidity", 0x0002, DataType::U16, 0.1, "%"),
            ],
        }),
        // Eastron SDM120 single-phase energy meter: function 04, float32,
        // high word first.
        "sdm120" => {
            let f = |name: &str, a: i64, unit: &str| input(name, a, DataType::F32, 1.0, unit);
            Some(Profile {
                baud: 2400,
                parity: ParityName::None,
                stop_bits: 1,
                unit: 1,
                registers: vec![
                    f("voltage", 0x0000, "V"),
                    f("current", 0x0006, "A"),
                    f("power", 0x000C, "W"),
                    f("power.apparent", 0x0012, "VA"),
                    f("power.reactive", 0x0018, "var"),
                    f("power.factor", 0x001E, ""),
                    f("frequency", 0x0046, "Hz"),
                    f("energy.import", 0x0048, "kWh"),
                    f("energy.export", 0x004A, "kWh"),
                    f("energy.total", 0x0156, "kWh"),
                ],
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_valid_and_read_as_the_datasheets_say() {
        for n in NAMES {
            let p = get(n).unwrap();
            for (i, r) in p.registers.iter().enumerate() {
                assert!(r.problems(&format!("{n}[{i}]")).is_empty(), "{n} {r:?}");
            }
        }
        // XY-MD02: one request `01 04 00 01 00 02`.
        let p = super::super::map::plan(&get("xy-md02").unwrap().registers);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].function.code(), p[0].start, p[0].count), (4, 1, 2));
        // SDM120: voltage alone at 0x0000 (`02 04 00 00 00 02`), import and
        // export kWh together with Hz (0x46-0x4B, contiguous).
        let p = super::super::map::plan(&get("sdm120").unwrap().registers);
        assert_eq!((p[0].start, p[0].count), (0, 2));
        assert!(p.iter().any(|b| b.start == 0x46 && b.count == 6));
        assert!(get("nope").is_none());
    }
}
