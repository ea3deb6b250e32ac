//! The closed set of device kinds: one `[[device]]` table is one
//! [`DeviceConfig`], whose variant holds that kind's own section (each
//! beside its source). The loader in `config/` reads the tables by their
//! `type`; the accessors here are what every kind has.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::host::file::FileKind;
use crate::source::threshold::ThresholdConfig;
use crate::status::words::Label;

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

/// The words a device's configuration gives its values: a Modbus
/// register's `label`/`label_en`/`unit`, a GPIO input's `label` (for its
/// state, `.active` and `.count`). Values without configured words are not
/// in the map.
pub(crate) fn configured_labels(dev: &DeviceConfig) -> BTreeMap<String, Label> {
    let mut out = BTreeMap::new();
    match dev {
        DeviceConfig::Modbus(m) => {
            for r in &m.registers {
                if r.label.is_some() || r.label_en.is_some() {
                    let l = Label {
                        vi: r.label.clone(),
                        en: r.label_en.clone(),
                        unit: r.unit.clone(),
                    };
                    out.insert(r.name.clone(), l);
                }
            }
        }
        DeviceConfig::Gpio(g) => {
            for i in &g.inputs {
                if let Some(label) = &i.label {
                    let l = |vi: &str, en: &str| Label {
                        vi: Some(format!("{label}{vi}")),
                        en: Some(format!("{label}{en}")),
                        unit: None,
                    };
                    out.insert(i.name.clone(), l("", ""));
                    out.insert(
                        format!("{}.active", i.name),
                        l(" (đang tác động)", " (active)"),
                    );
                    out.insert(format!("{}.count", i.name), l(" (số xung)", " (pulses)"));
                }
            }
        }
        _ => {}
    }
    out
}
