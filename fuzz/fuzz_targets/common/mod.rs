//! Properties every target checks on what a parser hands on.
#![allow(dead_code)]

use wardgate::model::{Value, Values};

/// The contract's pattern for value names (`docs/schema/*.schema.json`,
/// `propertyNames`): `^[A-Za-z0-9_.-]+$`.
pub fn in_contract(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Every name in the contract's pattern, every number finite (JSON cannot
/// carry NaN or infinity).
pub fn check_values(v: &Values) {
    for (name, value) in &v.0 {
        assert!(in_contract(name), "value name {name:?} outside the contract");
        if let Value::Num(n) = value {
            assert!(n.is_finite(), "{name} = {n}");
        }
    }
}
