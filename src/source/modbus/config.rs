//! The `[[device]]` table of `type = "modbus"`, its line settings (which a
//! built-in profile may supply) and its checks, including the one that
//! spans devices: Modbus devices on one serial bus share its speed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::map::RegisterConfig;
use super::profile::{self, Profile};
use crate::source::threshold::ThresholdConfig;
use crate::types::{default_interval, Baud, Port, SerialPath, Within};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModbusTransport {
    /// RS-485 (or RS-232) serial line.
    #[default]
    Rtu,
    /// Modbus TCP (a meter with Ethernet, or an RS-485-to-Ethernet gateway).
    Tcp,
}

pub use super::profile::ParityName;

/// How long to wait for each Modbus reply: 20ms to 30s.
pub(crate) type ModbusTimeout = Within<20, 30_000>;
/// Quiet time on the bus between a reply and the next request: at most 5s.
pub(crate) type BusGap = Within<0, 5_000>;

/// A Modbus slave: a sensor or meter on an RS-485 bus or over TCP.
/// Several devices may name the same `serial` bus (or TCP gateway); their
/// requests are then sent one at a time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    pub id: String,
    #[serde(default)]
    pub transport: ModbusTransport,
    /// RTU: the serial port (`/dev/serial/by-id/...`).
    #[serde(default)]
    pub serial: Option<SerialPath>,
    /// RTU line settings; default from the profile, else 9600 8N1.
    #[serde(default)]
    pub baud: Option<Baud>,
    #[serde(default)]
    pub parity: Option<ParityName>,
    #[serde(default)]
    pub stop_bits: Option<i64>,
    /// TCP: the device or gateway.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_modbus_port")]
    pub port: Port,
    /// Slave id (1-247); default from the profile, else 1.
    #[serde(default)]
    pub unit: Option<i64>,
    /// A built-in register map: "xy-md02" or "sdm120".
    #[serde(default)]
    pub profile: Option<String>,
    /// Registers to read (added to the profile's, if any).
    #[serde(default)]
    pub registers: Vec<RegisterConfig>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long to wait for each reply.
    #[serde(default = "default_modbus_timeout")]
    pub timeout: ModbusTimeout,
    /// Quiet time on the bus between a reply and the next request.
    #[serde(default = "default_modbus_gap")]
    pub gap: BusGap,
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

fn default_modbus_port() -> Port {
    Port::of(502)
}
fn default_modbus_timeout() -> ModbusTimeout {
    ModbusTimeout::of(Duration::from_secs(1))
}
fn default_modbus_gap() -> BusGap {
    BusGap::of(Duration::from_millis(20))
}

impl ModbusConfig {
    fn profile_def(&self) -> Option<Profile> {
        self.profile.as_deref().and_then(profile::get)
    }
    pub fn baud(&self) -> u32 {
        self.baud
            .map(Baud::get)
            .or(self.profile_def().map(|p| p.baud))
            .unwrap_or(9600)
    }
    pub fn parity(&self) -> ParityName {
        self.parity
            .or(self.profile_def().map(|p| p.parity))
            .unwrap_or(ParityName::None)
    }
    pub fn stop_bits(&self) -> u8 {
        self.stop_bits
            .and_then(|s| u8::try_from(s).ok())
            .or(self.profile_def().map(|p| p.stop_bits))
            .unwrap_or(1)
    }
    /// The slave id (validated 1-247).
    pub fn unit_id(&self) -> u8 {
        self.unit
            .and_then(|u| u8::try_from(u).ok())
            .or(self.profile_def().map(|p| p.unit))
            .unwrap_or(1)
    }
    /// The profile's registers, then the configured ones.
    pub fn all_registers(&self) -> Vec<RegisterConfig> {
        let mut r = self.profile_def().map(|p| p.registers).unwrap_or_default();
        r.extend(self.registers.iter().cloned());
        r
    }

    /// Problems the types cannot see, each naming its key under `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        match self.transport {
            ModbusTransport::Rtu => {
                if self.serial.is_none() {
                    p.push(format!(
                        "{key}.serial: needed for transport = \"rtu\" (the RS-485 adapter, /dev/serial/by-id/...)"
                    ));
                }
                if self.host.is_some() {
                    p.push(format!(
                        "{key}.host: only for transport = \"tcp\" (this device is on a serial line)"
                    ));
                }
            }
            ModbusTransport::Tcp => {
                match &self.host {
                    Some(h) if !h.trim().is_empty() => {}
                    _ => p.push(format!("{key}.host: needed for transport = \"tcp\"")),
                }
                if self.serial.is_some() {
                    p.push(format!(
                        "{key}.serial: only for transport = \"rtu\" (this device is on TCP)"
                    ));
                }
            }
        }
        if let Some(s) = self.stop_bits {
            if s != 1 && s != 2 {
                p.push(format!("{key}.stop_bits: {s} must be 1 or 2"));
            }
        }
        if let Some(u) = self.unit {
            if !(1..=247).contains(&u) {
                p.push(format!("{key}.unit: {u} is not a slave id (1-247)"));
            }
        }
        if let Some(name) = &self.profile {
            if profile::get(name).is_none() {
                p.push(format!(
                    "{key}.profile: {name:?} is not a built-in profile ({})",
                    profile::NAMES.join(", ")
                ));
            }
        }
        let regs = self.all_registers();
        if regs.is_empty() {
            p.push(format!(
                "{key}.registers: give a profile or at least one register"
            ));
        }
        for (i, r) in self.registers.iter().enumerate() {
            p.extend(r.problems(&format!("{key}.registers[{i}]")));
        }
        let mut names = HashSet::new();
        for r in &regs {
            if !names.insert(r.name.as_str()) {
                p.push(format!(
                    "{key}.registers: the value name {:?} is used twice",
                    r.name
                ));
            }
        }
        p
    }
}

/// Modbus devices on one serial bus must agree on the line settings.
/// `devices` are the Modbus devices with their index in `[[device]]`.
pub(crate) fn shared_bus_problems<'a>(
    devices: impl IntoIterator<Item = (usize, &'a ModbusConfig)>,
) -> Vec<String> {
    let mut p = Vec::new();
    let mut first: HashMap<&Path, (usize, u32, ParityName, u8)> = HashMap::new();
    for (i, c) in devices {
        let (ModbusTransport::Rtu, Some(path)) = (c.transport, &c.serial) else {
            continue;
        };
        let line = (i, c.baud(), c.parity(), c.stop_bits());
        match first.get(&**path) {
            None => {
                first.insert(path, line);
            }
            Some(&(j, b, par, st)) if (b, par, st) != (line.1, line.2, line.3) => p.push(format!(
                "device[{i}]: shares the bus {} with device[{j}] but its line settings differ ({} {:?} {} vs {b} {par:?} {st}); one bus has one speed",
                path.display(),
                line.1,
                line.2,
                line.3
            )),
            _ => {}
        }
    }
    p
}
