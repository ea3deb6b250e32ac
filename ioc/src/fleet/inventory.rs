//! The retained inventory (`{prefix}/{site}/inventory`, docs/mqtt.md
//! "Inventory"; docs/schema/inventory.schema.json). The contract crate
//! does not type it (`DecodeError::Untyped`), so the fleet reads the
//! fields it shows, leniently: fields it does not use are ignored, the
//! ones it uses must have their schema's types.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The inventory's fields the fleet view uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Inventory {
    pub site: String,
    pub version: String,
    pub boot_id: String,
    pub run_id: String,
    pub config_hash: String,
    /// `synced` or `unsynced`.
    pub clock: String,
    pub devices: Vec<InventoryDevice>,
}

/// One configured device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InventoryDevice {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub interval_ms: u64,
    /// Each value name in words, as the gateway's page shows it.
    #[serde(default)]
    pub words: BTreeMap<String, Words>,
}

/// A value name's unit and labels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Words {
    #[serde(default)]
    pub unit: Option<String>,
    pub vi: String,
    pub en: String,
}

impl Inventory {
    /// Reads an inventory payload.
    pub fn from_slice(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}
