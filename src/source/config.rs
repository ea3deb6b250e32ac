//! The closed set of device kinds: one `[[device]]` table is one
//! [`DeviceConfig`], whose variant holds that kind's own section (each
//! beside its source). The loader in `config/` reads the tables by their
//! `type`; the accessors here are what every kind has.

use std::path::Path;
use std::time::Duration;

use crate::host::file::FileKind;
use crate::source::threshold::ThresholdConfig;

use super::apc::config::ApcSmartConfig;
use super::gpio_config::GpioConfig;
use super::megatec::config::MegatecConfig;
use super::modbus::config::ModbusConfig;
use super::nut::config::NutConfig;
use super::onewire_config::OneWireConfig;
use super::probe_config::ProbeConfig;
use super::sim_config::SimConfig;
use super::snmp_config::SnmpConfig;
use super::system_config::SystemConfig;

/// One `[[device]]` table. The set of kinds is closed; the `type` key picks one.
#[derive(Debug, Clone)]
pub enum DeviceConfig {
    Sim(SimConfig),
    Megatec(MegatecConfig),
    Nut(NutConfig),
    ApcSmart(ApcSmartConfig),
    OneWire(OneWireConfig),
    System(SystemConfig),
    Probe(ProbeConfig),
    Gpio(GpioConfig),
    Modbus(ModbusConfig),
    Snmp(SnmpConfig),
}

/// The `type` of each kind, in the order the docs list them.
pub(crate) const KINDS: &[&str] = &[
    "sim",
    "megatec",
    "nut",
    "apc-smart",
    "onewire",
    "system",
    "probe",
    "gpio",
    "modbus",
    "snmp",
];

/// One arm per device kind, for accessors every kind has (each kind's
/// struct has `id`, `interval` and `threshold`; serde's flatten would break
/// deny_unknown_fields, so there is no shared struct).
macro_rules! each_kind {
    ($d:expr, $c:ident => $e:expr) => {
        match $d {
            DeviceConfig::Sim($c) => $e,
            DeviceConfig::Megatec($c) => $e,
            DeviceConfig::Nut($c) => $e,
            DeviceConfig::ApcSmart($c) => $e,
            DeviceConfig::OneWire($c) => $e,
            DeviceConfig::System($c) => $e,
            DeviceConfig::Probe($c) => $e,
            DeviceConfig::Gpio($c) => $e,
            DeviceConfig::Modbus($c) => $e,
            DeviceConfig::Snmp($c) => $e,
        }
    };
}

impl DeviceConfig {
    pub fn id(&self) -> &str {
        each_kind!(self, c => &c.id)
    }

    pub fn interval(&self) -> Duration {
        each_kind!(self, c => c.interval)
    }

    pub fn thresholds(&self) -> &[ThresholdConfig] {
        each_kind!(self, c => &c.threshold)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            DeviceConfig::Sim(_) => "sim",
            DeviceConfig::Megatec(_) => "megatec",
            DeviceConfig::Nut(_) => "nut",
            DeviceConfig::ApcSmart(_) => "apc-smart",
            DeviceConfig::OneWire(_) => "onewire",
            DeviceConfig::System(_) => "system",
            DeviceConfig::Probe(_) => "probe",
            DeviceConfig::Gpio(_) => "gpio",
            DeviceConfig::Modbus(_) => "modbus",
            DeviceConfig::Snmp(_) => "snmp",
        }
    }

    /// This kind's own problems, each naming its key under `key`.
    pub(crate) fn kind_problems(&self, key: &str) -> Vec<String> {
        each_kind!(self, c => c.problems(key))
    }

    /// The files this device reads, with what they are (the host's one
    /// reader's rules: [`crate::host::file`]).
    pub(crate) fn files(&self) -> Vec<(&'static str, &Path, FileKind)> {
        let mut f = Vec::new();
        match self {
            DeviceConfig::Nut(c) => {
                if let Some(p) = &c.password_file {
                    f.push(("password_file", &**p, FileKind::Secret));
                }
                if let Some(p) = &c.ca_file {
                    f.push(("ca_file", &**p, FileKind::Certificate));
                }
            }
            DeviceConfig::System(c) => {
                f.push(("thermal_path", c.thermal_path.as_path(), FileKind::Kernel));
                f.push((
                    "throttled_path",
                    c.throttled_path.as_path(),
                    FileKind::Kernel,
                ));
            }
            _ => {}
        }
        f
    }
}
