//! Configuration: built-in defaults, then one TOML file
//! (`/etc/wardgate/wardgate.toml` or `--config PATH`), then environment
//! variables `WARDGATE__SECTION__KEY`.
//!
//! Defaults live in exactly one place: the `#[serde(default = ...)]`
//! attributes below. Unknown keys are errors. [`Config::validate`] reports
//! every problem at once, one line each, naming the key and the bad value.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::model::valid_id;

/// Where the daemon looks when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/wardgate/wardgate.toml";

/// The device id reserved for the gateway's own health telemetry.
pub const GATEWAY_DEVICE: &str = "gateway";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key has the wrong type:
    /// the operator fixes the file; the daemon does not start.
    #[error("{0}")]
    Load(String),
    /// The file parsed but some values are invalid, one message per problem:
    /// the operator fixes the file; the daemon does not start.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// Every problem, one per line.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Load(m) => vec![m.clone()],
            ConfigError::Invalid(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This gateway's site id, used in every topic. Required.
    #[serde(default)]
    pub site: String,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub led: LedConfig,
    #[serde(default)]
    pub web: WebConfig,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    #[serde(default = "default_host")]
    pub host: String,
    /// Default 8883 with TLS, 1883 without. Kept wide here so that a value
    /// out of range gets a plain message from `validate` instead of a type error.
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// `None`: TLS unless the broker is on loopback.
    #[serde(default)]
    pub tls: Option<bool>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Default `wardgate-{site}`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default = "default_max_batch")]
    pub max_batch: i64,
    /// Cap on backlog messages per second; `None` = as fast as acks come.
    #[serde(default)]
    pub backlog_rate: Option<f64>,
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// QoS 1 messages in flight (sent, not yet acknowledged).
    #[serde(default = "default_inflight")]
    pub inflight: i64,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A batch's record bodies total at most this (a single record may exceed it).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: ByteSize,
    /// No MQTT packet bigger than this is sent; a record that would need
    /// one is set aside instead of blocking the uplink.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: ByteSize,
    /// Records pending, link up and no PUBACK for this long: the link is
    /// stuck (reconnect, `mqtt.stalled` event, `/healthz` 503).
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolPolicy {
    /// Send from memory; write to disk only what is not acknowledged in time.
    Spill,
    /// Commit every record to disk before sending it.
    Wal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    #[serde(default = "default_spool_path")]
    pub path: PathBuf,
    #[serde(default = "default_policy")]
    pub policy: SpoolPolicy,
    #[serde(default = "default_spill_after", with = "humantime_serde")]
    pub spill_after: Duration,
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Records held in memory per sink before the oldest are written to disk
    /// even though the link is up.
    #[serde(default = "default_memory_max")]
    pub memory_max: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// How often the gateway publishes its own health on
    /// `{prefix}/{site}/gateway/telemetry`.
    #[serde(default = "default_gateway_interval", with = "humantime_serde")]
    pub telemetry_interval: Duration,
    /// Read the Pi's own health as device "pi" without configuring it.
    #[serde(default = "default_true")]
    pub system_health: bool,
}

/// The local status page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_web_listen")]
    pub listen: String,
    /// Optional HTTP basic auth: both or neither.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// "vi" (default) or "en", when the browser does not say.
    #[serde(default = "default_language")]
    pub language: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        toml_default("web")
    }
}

fn default_true() -> bool {
    true
}
fn default_web_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_language() -> String {
    "vi".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedBackend {
    /// The kernel's LED class (the Pi's onboard ACT LED).
    Sysfs,
    /// An external LED on a GPIO pin.
    Gpio,
    /// No status LED.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedConfig {
    #[serde(default = "default_led_backend")]
    pub backend: LedBackend,
    /// The LED's directory (`/sys/class/leds/ACT`; `led0` on older Pi OS).
    #[serde(default = "default_led_path")]
    pub path: PathBuf,
    /// BCM pin number, for `backend = "gpio"`.
    #[serde(default)]
    pub pin: Option<i64>,
    #[serde(default)]
    pub active_low: bool,
}

impl Default for LedConfig {
    fn default() -> Self {
        toml_default("led")
    }
}

fn default_led_backend() -> LedBackend {
    LedBackend::Sysfs
}
fn default_led_path() -> PathBuf {
    PathBuf::from("/sys/class/leds/ACT")
}

/// One `[[device]]` table. The set of kinds is closed; the `type` key picks one.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum DeviceConfig {
    Sim(SimConfig),
    Megatec(MegatecConfig),
    Nut(NutConfig),
    ApcSmart(ApcSmartConfig),
    #[serde(rename = "onewire")]
    OneWire(OneWireConfig),
    System(SystemConfig),
    Probe(ProbeConfig),
    Gpio(GpioConfig),
    Modbus(ModbusConfig),
    Snmp(SnmpConfig),
}

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

    pub fn thresholds(&self) -> &[crate::source::threshold::ThresholdConfig] {
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimProfile {
    /// UPS-like values: status, load, battery, input/output voltage.
    Ups,
    /// Environment sensor values: temperature and humidity.
    Sensor,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub id: String,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_sim_profile")]
    pub profile: SimProfile,
    /// Produce an event every N samples (0 = never). For the UPS profile the
    /// events toggle between "on battery" and "back on mains".
    #[serde(default)]
    pub event_every: i64,
    /// Samples produced per interval tick (for load tests).
    #[serde(default = "default_one")]
    pub samples_per_tick: i64,
    /// Stop after this many samples (0 = never).
    #[serde(default)]
    pub count: i64,
    /// Alarms on this device's values (`[[device.threshold]]`).
    #[serde(default)]
    pub threshold: Vec<crate::source::threshold::ThresholdConfig>,
}

/// A Megatec / Q1 UPS on a serial line (Santak-class and most low-cost UPS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MegatecConfig {
    pub id: String,
    /// Stable path of the serial port (`/dev/serial/by-id/...`).
    pub serial: PathBuf,
    #[serde(default = "default_ups_baud")]
    pub baud: u32,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long to wait for each reply.
    #[serde(default = "default_reply_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Battery voltage at 0 % and 100 % for estimating `battery.charge`.
    /// Default: 10.4 V and 13.0 V per 12 V of the rated battery voltage.
    #[serde(default)]
    pub battery_voltage_low: Option<f64>,
    #[serde(default)]
    pub battery_voltage_high: Option<f64>,
    /// Alarms on this device's values (`[[device.threshold]]`).
    #[serde(default)]
    pub threshold: Vec<crate::source::threshold::ThresholdConfig>,
}

/// Dry contacts and pulse counters on GPIO inputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    pub id: String,
    /// How often the inputs' state is published (changes are events at once).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    pub inputs: Vec<GpioInput>,
    #[serde(default)]
    pub threshold: Vec<crate::source::threshold::ThresholdConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    Up,
    Down,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpioMode {
    /// A contact: each debounced change is an event.
    Contact,
    /// A pulse counter (energy meter S0 output): rising edges are counted.
    Counter,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioInput {
    /// BCM pin number.
    pub pin: i64,
    /// Value name and event prefix: `door` -> `door`, `door.open`.
    pub name: String,
    /// Words for the active and the inactive state, e.g. ["open", "closed"],
    /// ["wet", "dry"].
    #[serde(default = "default_states")]
    pub states: [String; 2],
    #[serde(default = "default_pull")]
    pub pull: Pull,
    /// Active when the pin is low (contacts to ground with a pull-up).
    #[serde(default)]
    pub active_low: bool,
    #[serde(default = "default_debounce", with = "humantime_serde")]
    pub debounce: Duration,
    #[serde(default = "default_gpio_mode")]
    pub mode: GpioMode,
    /// Severity of the event when the input becomes active.
    #[serde(default = "default_warning")]
    pub severity: crate::model::Severity,
    /// Words for people in messages (e.g. "Cửa phòng máy").
    #[serde(default)]
    pub label: Option<String>,
}

fn default_states() -> [String; 2] {
    ["active".into(), "inactive".into()]
}
fn default_pull() -> Pull {
    Pull::Up
}
fn default_debounce() -> Duration {
    Duration::from_millis(50)
}
fn default_gpio_mode() -> GpioMode {
    GpioMode::Contact
}
fn default_warning() -> crate::model::Severity {
    crate::model::Severity::Warning
}

fn code_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModbusTransport {
    /// RS-485 (or RS-232) serial line.
    #[default]
    Rtu,
    /// Modbus TCP (a meter with Ethernet, or an RS-485-to-Ethernet gateway).
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParityName {
    None,
    Even,
    Odd,
}

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
    pub serial: Option<PathBuf>,
    /// RTU line settings; default from the profile, else 9600 8N1.
    #[serde(default)]
    pub baud: Option<u32>,
    #[serde(default)]
    pub parity: Option<ParityName>,
    #[serde(default)]
    pub stop_bits: Option<i64>,
    /// TCP: the device or gateway.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_modbus_port")]
    pub port: i64,
    /// Slave id (1-247); default from the profile, else 1.
    #[serde(default)]
    pub unit: Option<i64>,
    /// A built-in register map: "xy-md02" or "sdm120".
    #[serde(default)]
    pub profile: Option<String>,
    /// Registers to read (added to the profile's, if any).
    #[serde(default)]
    pub registers: Vec<crate::source::modbus::map::RegisterConfig>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long to wait for each reply.
    #[serde(default = "default_modbus_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Quiet time on the bus between a reply and the next request.
    #[serde(default = "default_modbus_gap", with = "humantime_serde")]
    pub gap: Duration,
    #[serde(default)]
    pub threshold: Vec<crate::source::threshold::ThresholdConfig>,
}

fn default_modbus_port() -> i64 {
    502
}
fn default_modbus_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_modbus_gap() -> Duration {
    Duration::from_millis(20)
}

impl ModbusConfig {
    fn profile_def(&self) -> Option<crate::source::modbus::profile::Profile> {
        self.profile
            .as_deref()
            .and_then(crate::source::modbus::profile::get)
    }
    pub fn baud(&self) -> u32 {
        self.baud
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
    pub fn all_registers(&self) -> Vec<crate::source::modbus::map::RegisterConfig> {
        let mut r = self.profile_def().map(|p| p.registers).unwrap_or_default();
        r.extend(self.registers.iter().cloned());
        r
    }
}

/// A router (or switch) read over SNMP v2c.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpConfig {
    pub id: String,
    pub host: String,
    #[serde(default = "default_snmp_port")]
    pub port: i64,
    #[serde(default = "default_community")]
    pub community: String,
    /// Interfaces by ifName (`"eth0"`, `"pppoe-wan"`) or ifIndex (`2`).
    #[serde(default)]
    pub interfaces: Vec<IfRef>,
    /// The interface that is the ward's link to the outside: its down/up
    /// changes are critical `wan.down` / `wan.up` events.
    #[serde(default)]
    pub wan: Option<IfRef>,
    #[serde(default = "default_snmp_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_snmp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_one")]
    pub retries: i64,
    #[serde(default)]
    pub threshold: Vec<crate::source::threshold::ThresholdConfig>,
}

/// An interface named by ifName or by ifIndex.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IfRef {
    Index(i64),
    Name(String),
}

impl std::fmt::Display for IfRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IfRef::Index(i) => write!(f, "ifIndex {i}"),
            IfRef::Name(n) => write!(f, "{n}"),
        }
    }
}

fn default_snmp_port() -> i64 {
    161
}
fn default_community() -> String {
    "public".into()
}
fn default_snmp_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_snmp_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Reachability of hosts: TCP connect time or ICMP echo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub id: String,
    #[serde(default = "default_probe_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_nut_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Rounds over which loss is computed.
    #[serde(default = "default_probe_window")]
    pub window: i64,
    pub targets: Vec<ProbeTarget>,
    #[serde(default)]
    pub threshold: Vec<crate::source::threshold::ThresholdConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTarget {
    /// Used in value names: `<name>.latency`, `<name>.loss`, `<name>.up`.
    pub name: String,
    /// `host:port` for TCP; `host` or `host:port` for ICMP (the port is
    /// used when ICMP is not permitted and TCP is measured instead; 443
    /// when not given).
    pub address: String,
    #[serde(default)]
    pub method: ProbeMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMethod {
    /// Time to open a TCP connection (no privilege needed).
    #[default]
    Tcp,
    /// ICMP echo (ping); needs net.ipv4.ping_group_range to include the
    /// service's group, or CAP_NET_RAW.
    Icmp,
}

impl ProbeTarget {
    /// Host and port, with the ICMP fallback port filled in.
    pub fn host_port(&self) -> Option<(String, u16)> {
        let a = self.address.trim();
        // [v6]:port, host:port, or a bare host / v6 address for ICMP.
        if let Some(rest) = a.strip_prefix('[') {
            let (h, p) = rest.split_once(']')?;
            let port = match p.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if p.is_empty() && self.method == ProbeMethod::Icmp => 443,
                None => return None,
            };
            return Some((h.to_owned(), port));
        }
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => Some((h.to_owned(), p.parse().ok()?)),
            _ if self.method == ProbeMethod::Icmp && !a.is_empty() => Some((a.to_owned(), 443)),
            _ => None,
        }
    }
}

fn default_probe_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_probe_window() -> i64 {
    10
}

/// DS18B20 probes on the 1-Wire bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneWireConfig {
    pub id: String,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Where the kernel lists 1-Wire devices.
    #[serde(default = "default_w1_root")]
    pub root: PathBuf,
    /// Value names by probe id (`"28-0316a2795aff" = "rack.temperature"`).
    #[serde(default)]
    pub names: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub threshold: Vec<crate::source::threshold::ThresholdConfig>,
}

fn default_w1_root() -> PathBuf {
    PathBuf::from("/sys/bus/w1/devices")
}

/// The Pi's own health; added automatically (id "pi") unless
/// `gateway.system_health = false` or a `system` device is configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    pub id: String,
    #[serde(default = "default_system_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_thermal")]
    pub thermal_path: PathBuf,
    /// The firmware's throttling flags (same as `vcgencmd get_throttled`).
    #[serde(default = "default_throttled")]
    pub throttled_path: PathBuf,
    #[serde(default = "default_proc")]
    pub proc_root: PathBuf,
    #[serde(default)]
    pub threshold: Vec<crate::source::threshold::ThresholdConfig>,
}

fn default_system_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_thermal() -> PathBuf {
    PathBuf::from("/sys/class/thermal/thermal_zone0/temp")
}
fn default_throttled() -> PathBuf {
    PathBuf::from("/sys/devices/platform/soc/soc:firmware/get_throttled")
}
fn default_proc() -> PathBuf {
    PathBuf::from("/proc")
}

impl SystemConfig {
    /// The automatic Pi health device.
    pub fn automatic() -> SystemConfig {
        SystemConfig {
            id: "pi".into(),
            interval: default_system_interval(),
            thermal_path: default_thermal(),
            throttled_path: default_throttled(),
            proc_root: default_proc(),
            threshold: Vec::new(),
        }
    }
}

/// An APC Smart-UPS on a serial line (APC's "smart" cable, 940-0024).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApcSmartConfig {
    pub id: String,
    pub serial: PathBuf,
    #[serde(default = "default_ups_baud")]
    pub baud: u32,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_reply_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Alarms on this device's values (`[[device.threshold]]`).
    #[serde(default)]
    pub threshold: Vec<crate::source::threshold::ThresholdConfig>,
}

/// A UPS served by an existing NUT `upsd` (any UPS NUT supports, USB HID
/// models included). One device per UPS name, so each has its own health,
/// sequence and events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NutConfig {
    pub id: String,
    #[serde(default = "default_nut_host")]
    pub host: String,
    #[serde(default = "default_nut_port")]
    pub port: i64,
    /// The UPS name in upsd (`upsc -l` lists them).
    pub ups: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_nut_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Alarms on this device's values (`[[device.threshold]]`).
    #[serde(default)]
    pub threshold: Vec<crate::source::threshold::ThresholdConfig>,
}

fn default_nut_host() -> String {
    "127.0.0.1".into()
}
fn default_nut_port() -> i64 {
    3493
}
fn default_nut_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_ups_baud() -> u32 {
    2400
}
fn default_reply_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_host() -> String {
    "localhost".into()
}
fn default_prefix() -> String {
    "ioc".into()
}
fn default_max_batch() -> i64 {
    100
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_inflight() -> i64 {
    100
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_max_batch_bytes() -> ByteSize {
    ByteSize::kib(256)
}
fn default_max_packet_size() -> ByteSize {
    ByteSize::mib(1)
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_spool_path() -> PathBuf {
    PathBuf::from("/var/lib/wardgate/spool.db")
}
fn default_policy() -> SpoolPolicy {
    SpoolPolicy::Spill
}
fn default_spill_after() -> Duration {
    Duration::from_secs(2)
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_bytes() -> ByteSize {
    ByteSize::mib(256)
}
fn default_max_age() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_memory_max() -> i64 {
    10_000
}
fn default_gateway_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_sim_profile() -> SimProfile {
    SimProfile::Ups
}
fn default_one() -> i64 {
    1
}

impl Default for MqttConfig {
    fn default() -> Self {
        // One source of truth for defaults: an empty table through serde.
        toml_default("mqtt")
    }
}
impl Default for SpoolConfig {
    fn default() -> Self {
        toml_default("spool")
    }
}
impl Default for GatewayConfig {
    fn default() -> Self {
        toml_default("gateway")
    }
}

fn toml_default<T: serde::de::DeserializeOwned>(what: &str) -> T {
    let empty = config::Config::default();
    empty
        .try_deserialize()
        .unwrap_or_else(|e| panic!("defaults of [{what}] must deserialize from nothing: {e}"))
}

impl Config {
    /// Loads the file (if it exists or was named) and the environment, then
    /// validates. `explicit` says whether the path was given on the command
    /// line: a named file that is missing is an error, the default one is not.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        Self::load_with_env(path, explicit, std::env::vars())
    }

    /// As [`Config::load`], with the environment given (for tests).
    pub fn load_with_env(
        path: &Path,
        explicit: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("WARDGATE__"))
            .collect();
        let mut builder = config::Config::builder();
        if explicit || path.exists() {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "{}: no such file",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path.to_path_buf()).format(config::FileFormat::Toml),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("WARDGATE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))?;
        let cfg: Config = serde_path_to_error::deserialize(raw).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            if key.is_empty() || key == "." {
                ConfigError::Load(inner)
            } else {
                ConfigError::Load(format!("{key}: {inner}"))
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML text (no environment), then validates. For tests and tools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let cfg: Config = serde_path_to_error::deserialize(raw).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Load(format!("{key}: {}", e.into_inner()))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every problem, one message each, naming the key and the bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if self.site.is_empty() {
            p.push(
                "site: missing; set site = \"your-site-id\" (lowercase letters, digits, - and _)"
                    .into(),
            );
        } else if !valid_id(&self.site) {
            p.push(format!(
                "site: {:?} is not a valid id (lowercase letters, digits, - and _, starting with a letter or digit)",
                self.site
            ));
        }
        let m = &self.mqtt;
        if m.host.trim().is_empty() {
            p.push("mqtt.host: must not be empty".into());
        }
        if let Some(port) = m.port {
            if !(1..=65535).contains(&port) {
                p.push(format!("mqtt.port: {port} is not a port (1-65535)"));
            }
        }
        if m.prefix.is_empty()
            || m.prefix.contains(['#', '+'])
            || m.prefix.starts_with('/')
            || m.prefix.ends_with('/')
        {
            p.push(format!(
                "mqtt.prefix: {:?} is not a topic prefix (no #, +, or leading/trailing /)",
                m.prefix
            ));
        }
        if !(1..=10_000).contains(&m.max_batch) {
            p.push(format!(
                "mqtt.max_batch: {} must be between 1 and 10000",
                m.max_batch
            ));
        }
        if !(1..=65_535).contains(&m.inflight) {
            p.push(format!(
                "mqtt.inflight: {} must be between 1 and 65535",
                m.inflight
            ));
        }
        if let Some(r) = m.backlog_rate {
            if !(r.is_finite() && r > 0.0) {
                p.push(format!(
                    "mqtt.backlog_rate: {r} must be a positive number of messages per second"
                ));
            }
        }
        if m.keep_alive < Duration::from_secs(5) {
            p.push(format!(
                "mqtt.keep_alive: {} is too short (at least 5s)",
                humantime::format_duration(m.keep_alive)
            ));
        }
        if m.cert_file.is_some() != m.key_file.is_some() {
            p.push("mqtt.cert_file / mqtt.key_file: give both or neither".into());
        }
        if m.tls == Some(false) && (m.ca_file.is_some() || m.cert_file.is_some()) {
            p.push("mqtt.tls: false, but ca_file or cert_file is set".into());
        }
        if m.username.is_none() && m.password_file.is_some() {
            p.push("mqtt.password_file: set, but mqtt.username is not".into());
        }
        for (key, file) in [
            ("mqtt.ca_file", &m.ca_file),
            ("mqtt.cert_file", &m.cert_file),
            ("mqtt.key_file", &m.key_file),
            ("mqtt.password_file", &m.password_file),
        ] {
            if let Some(f) = file {
                if !f.is_absolute() {
                    p.push(format!(
                        "{key}: {:?} must be an absolute path (the service runs from /)",
                        f.display()
                    ));
                }
            }
        }
        if let Some(id) = &m.client_id {
            if id.is_empty() || id.len() > 128 {
                p.push(format!("mqtt.client_id: {id:?} must be 1-128 characters"));
            }
        }
        if m.connect_timeout < Duration::from_secs(1)
            || m.connect_timeout > Duration::from_secs(600)
        {
            p.push(format!(
                "mqtt.connect_timeout: {} must be between 1s and 10m",
                humantime::format_duration(m.connect_timeout)
            ));
        }
        // MQTT's own limit is 256 MiB - 1; below 4 KiB not even one
        // reading with its envelope fits.
        let (packet, batch) = (m.max_packet_size.as_u64(), m.max_batch_bytes.as_u64());
        if !(4 << 10..256 << 20).contains(&packet) {
            p.push(format!(
                "mqtt.max_packet_size: {} must be at least 4 KiB and less than 256 MiB",
                m.max_packet_size
            ));
        }
        if batch < 1 << 10 || batch >= packet {
            p.push(format!(
                "mqtt.max_batch_bytes: {} must be at least 1 KiB and less than mqtt.max_packet_size ({})",
                m.max_batch_bytes, m.max_packet_size
            ));
        }
        if m.stall_timeout < Duration::from_secs(1) || m.stall_timeout > Duration::from_secs(3600) {
            p.push(format!(
                "mqtt.stall_timeout: {} must be between 1s and 1h",
                humantime::format_duration(m.stall_timeout)
            ));
        }
        if let Some(r) = m.backlog_rate.filter(|r| r.is_finite() && *r > 0.0) {
            // A paced backlog must not look like a stuck link.
            if 1.0 / r >= m.stall_timeout.as_secs_f64() {
                p.push(format!(
                    "mqtt.backlog_rate: {r} messages per second is slower than one per mqtt.stall_timeout ({})",
                    humantime::format_duration(m.stall_timeout)
                ));
            }
        }

        let s = &self.spool;
        if !s.path.is_absolute() {
            p.push(format!(
                "spool.path: {:?} must be an absolute path (the service runs from /)",
                s.path.display()
            ));
        }
        if s.commit_interval < Duration::from_millis(10)
            || s.commit_interval > Duration::from_secs(60)
        {
            p.push(format!(
                "spool.commit_interval: {} must be between 10ms and 60s",
                humantime::format_duration(s.commit_interval)
            ));
        }
        if s.spill_after > Duration::from_secs(3600) {
            p.push(format!(
                "spool.spill_after: {} is longer than an hour",
                humantime::format_duration(s.spill_after)
            ));
        }
        if s.max_bytes.as_u64() < 64 * 1024 {
            p.push(format!(
                "spool.max_bytes: {} is too small (at least 64 KiB)",
                s.max_bytes
            ));
        }
        if s.max_age < Duration::from_secs(60) {
            p.push(format!(
                "spool.max_age: {} is too short (at least 1m)",
                humantime::format_duration(s.max_age)
            ));
        }
        if !(1..=10_000_000).contains(&s.memory_max) {
            p.push(format!(
                "spool.memory_max: {} must be between 1 and 10000000",
                s.memory_max
            ));
        }
        if self.gateway.telemetry_interval < Duration::from_millis(100) {
            p.push(format!(
                "gateway.telemetry_interval: {} is too short (at least 100ms)",
                humantime::format_duration(self.gateway.telemetry_interval)
            ));
        }

        match (self.led.backend, self.led.pin) {
            (LedBackend::Gpio, None) => {
                p.push("led.pin: needed with led.backend = \"gpio\" (BCM number)".into())
            }
            (LedBackend::Gpio, Some(pin)) if !(0..=27).contains(&pin) => {
                p.push(format!("led.pin: {pin} is not a BCM GPIO number (0-27)"))
            }
            _ => {}
        }
        let w = &self.web;
        if w.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "web.listen: {:?} is not an address:port such as \"0.0.0.0:8080\"",
                w.listen
            ));
        }
        if w.language != "vi" && w.language != "en" {
            p.push(format!(
                "web.language: {:?} must be \"vi\" or \"en\"",
                w.language
            ));
        }
        if w.username.is_some() != w.password_file.is_some() {
            p.push("web.username / web.password_file: give both or neither".into());
        }

        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            let id = d.id();
            let key = format!("device[{i}]");
            if !valid_id(id) {
                p.push(format!(
                    "{key}.id: {id:?} is not a valid id (lowercase letters, digits, - and _, starting with a letter or digit)"
                ));
            } else if id == GATEWAY_DEVICE {
                p.push(format!(
                    "{key}.id: {id:?} is reserved for the gateway's own telemetry"
                ));
            } else if !seen.insert(id) {
                p.push(format!("{key}.id: {id:?} is used by another device"));
            }
            for (ti, t) in d.thresholds().iter().enumerate() {
                p.extend(t.problems(&format!("{key}.threshold[{ti}]")));
            }
            if d.interval() < Duration::from_millis(1) {
                p.push(format!(
                    "{key}.interval: {} is too short (at least 1ms)",
                    humantime::format_duration(d.interval())
                ));
            }
            match d {
                DeviceConfig::OneWire(c) => {
                    // The names become value names in the contract.
                    for (probe, name) in &c.names {
                        if !crate::model::valid_value_name(name) {
                            p.push(format!(
                                "{key}.names.{probe:?}: {name:?} must be letters, digits, '.', '_' or '-'"
                            ));
                        }
                    }
                }
                DeviceConfig::System(_) => {}
                DeviceConfig::Modbus(c) => modbus_problems(&mut p, &key, c),
                DeviceConfig::Snmp(c) => {
                    if c.host.trim().is_empty() {
                        p.push(format!("{key}.host: must not be empty"));
                    }
                    if !(1..=65535).contains(&c.port) {
                        p.push(format!("{key}.port: {} is not a port (1-65535)", c.port));
                    }
                    if c.community.is_empty() {
                        p.push(format!("{key}.community: must not be empty"));
                    }
                    for (ii, i) in c.interfaces.iter().chain(c.wan.iter()).enumerate() {
                        match i {
                            IfRef::Index(n) if !(1..=i64::from(i32::MAX)).contains(n) => {
                                p.push(format!(
                                    "{key}.interfaces[{ii}]: {n} is not an ifIndex (1 or more)"
                                ))
                            }
                            IfRef::Name(n) if n.trim().is_empty() => {
                                p.push(format!("{key}.interfaces[{ii}]: empty interface name"))
                            }
                            _ => {}
                        }
                    }
                    if !(0..=5).contains(&c.retries) {
                        p.push(format!(
                            "{key}.retries: {} must be between 0 and 5",
                            c.retries
                        ));
                    }
                    if c.timeout < Duration::from_millis(100) || c.timeout > Duration::from_secs(30)
                    {
                        p.push(format!(
                            "{key}.timeout: {} must be between 100ms and 30s",
                            humantime::format_duration(c.timeout)
                        ));
                    }
                }
                DeviceConfig::Gpio(c) => {
                    if c.inputs.is_empty() {
                        p.push(format!("{key}.inputs: give at least one input"));
                    }
                    let mut pins = std::collections::HashSet::new();
                    for (ii, i) in c.inputs.iter().enumerate() {
                        let k = format!("{key}.inputs[{ii}]");
                        if !(0..=27).contains(&i.pin) {
                            p.push(format!(
                                "{k}.pin: {} is not a BCM GPIO number (0-27)",
                                i.pin
                            ));
                        } else if !pins.insert(i.pin) {
                            p.push(format!("{k}.pin: {} is used twice", i.pin));
                        }
                        if !code_word(&i.name) {
                            p.push(format!(
                                "{k}.name: {:?} must be lowercase letters, digits and _",
                                i.name
                            ));
                        }
                        for w in &i.states {
                            if !code_word(w) {
                                p.push(format!(
                                    "{k}.states: {w:?} must be lowercase letters, digits and _"
                                ));
                            }
                        }
                        if i.debounce > Duration::from_secs(10) {
                            p.push(format!(
                                "{k}.debounce: {} is longer than 10s",
                                humantime::format_duration(i.debounce)
                            ));
                        }
                    }
                }
                DeviceConfig::Probe(c) => {
                    if c.targets.is_empty() {
                        p.push(format!("{key}.targets: give at least one target"));
                    }
                    for (ti, t) in c.targets.iter().enumerate() {
                        if !valid_id(&t.name) {
                            p.push(format!(
                                "{key}.targets[{ti}].name: {:?} is not a valid name",
                                t.name
                            ));
                        }
                        if t.host_port().is_none() {
                            p.push(format!(
                                "{key}.targets[{ti}].address: {:?} is not {}",
                                t.address,
                                if t.method == ProbeMethod::Icmp {
                                    "a host or host:port"
                                } else {
                                    "host:port"
                                }
                            ));
                        }
                    }
                    if !(1..=1000).contains(&c.window) {
                        p.push(format!(
                            "{key}.window: {} must be between 1 and 1000",
                            c.window
                        ));
                    }
                }
                DeviceConfig::ApcSmart(c) => {
                    check_serial(&mut p, &key, &c.serial, c.baud);
                    if c.timeout < Duration::from_millis(100) || c.timeout > Duration::from_secs(30)
                    {
                        p.push(format!(
                            "{key}.timeout: {} must be between 100ms and 30s",
                            humantime::format_duration(c.timeout)
                        ));
                    }
                }
                DeviceConfig::Nut(c) => {
                    if !(1..=65535).contains(&c.port) {
                        p.push(format!("{key}.port: {} is not a port (1-65535)", c.port));
                    }
                    if c.host.trim().is_empty() {
                        p.push(format!("{key}.host: must not be empty"));
                    }
                    if c.ups.is_empty() || c.ups.contains(char::is_whitespace) {
                        p.push(format!("{key}.ups: {:?} is not a NUT UPS name", c.ups));
                    }
                    if c.username.is_none() && c.password_file.is_some() {
                        p.push(format!("{key}.password_file: set, but username is not"));
                    }
                    if let Some(f) = &c.password_file {
                        if !f.is_absolute() {
                            p.push(format!(
                                "{key}.password_file: {:?} must be an absolute path",
                                f.display()
                            ));
                        }
                    }
                }
                DeviceConfig::Megatec(c) => {
                    check_serial(&mut p, &key, &c.serial, c.baud);
                    if c.timeout < Duration::from_millis(100) || c.timeout > Duration::from_secs(30)
                    {
                        p.push(format!(
                            "{key}.timeout: {} must be between 100ms and 30s",
                            humantime::format_duration(c.timeout)
                        ));
                    }
                    match (c.battery_voltage_low, c.battery_voltage_high) {
                        (Some(l), Some(h))
                            if !(l.is_finite() && h.is_finite() && 0.0 < l && l < h) =>
                        {
                            p.push(format!(
                                "{key}.battery_voltage_low/high: {l} / {h}: need 0 < low < high"
                            ))
                        }
                        (Some(_), None) | (None, Some(_)) => p.push(format!(
                            "{key}.battery_voltage_low/high: give both or neither"
                        )),
                        _ => {}
                    }
                }
                DeviceConfig::Sim(c) => {
                    if c.event_every < 0 {
                        p.push(format!(
                            "{key}.event_every: {} must not be negative",
                            c.event_every
                        ));
                    }
                    if !(1..=100_000).contains(&c.samples_per_tick) {
                        p.push(format!(
                            "{key}.samples_per_tick: {} must be between 1 and 100000",
                            c.samples_per_tick
                        ));
                    }
                    if c.count < 0 {
                        p.push(format!("{key}.count: {} must not be negative", c.count));
                    }
                }
            }
        }

        shared_bus_problems(&mut p, &self.devices);

        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }

    /// The configured devices, plus the automatic Pi health device.
    pub fn all_devices(&self) -> Vec<DeviceConfig> {
        let mut d = self.devices.clone();
        let has_system = d.iter().any(|x| matches!(x, DeviceConfig::System(_)));
        let pi_taken = d.iter().any(|x| x.id() == "pi");
        if self.gateway.system_health && !has_system && !pi_taken {
            d.push(DeviceConfig::System(SystemConfig::automatic()));
        }
        d
    }

    /// TLS in effect: as configured, or on unless the broker is on loopback.
    pub fn mqtt_tls(&self) -> bool {
        match self.mqtt.tls {
            Some(t) => t,
            None => !is_loopback(&self.mqtt.host),
        }
    }

    pub fn mqtt_port(&self) -> u16 {
        match self.mqtt.port {
            Some(p) => u16::try_from(p).unwrap_or(1883),
            None if self.mqtt_tls() => 8883,
            None => 1883,
        }
    }

    pub fn mqtt_client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("wardgate-{}", self.site))
    }
}

const BAUD_RATES: &[u32] = &[
    300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200,
];

fn modbus_problems(p: &mut Vec<String>, key: &str, c: &ModbusConfig) {
    match c.transport {
        ModbusTransport::Rtu => {
            match &c.serial {
                Some(s) => check_serial(p, key, s, c.baud()),
                None => p.push(format!(
                    "{key}.serial: needed for transport = \"rtu\" (the RS-485 adapter, /dev/serial/by-id/...)"
                )),
            }
            if c.host.is_some() {
                p.push(format!(
                    "{key}.host: only for transport = \"tcp\" (this device is on a serial line)"
                ));
            }
        }
        ModbusTransport::Tcp => {
            match &c.host {
                Some(h) if !h.trim().is_empty() => {}
                _ => p.push(format!("{key}.host: needed for transport = \"tcp\"")),
            }
            if c.serial.is_some() {
                p.push(format!(
                    "{key}.serial: only for transport = \"rtu\" (this device is on TCP)"
                ));
            }
            if !(1..=65535).contains(&c.port) {
                p.push(format!("{key}.port: {} is not a port (1-65535)", c.port));
            }
        }
    }
    if let Some(s) = c.stop_bits {
        if s != 1 && s != 2 {
            p.push(format!("{key}.stop_bits: {s} must be 1 or 2"));
        }
    }
    if let Some(u) = c.unit {
        if !(1..=247).contains(&u) {
            p.push(format!("{key}.unit: {u} is not a slave id (1-247)"));
        }
    }
    if let Some(name) = &c.profile {
        if crate::source::modbus::profile::get(name).is_none() {
            p.push(format!(
                "{key}.profile: {name:?} is not a built-in profile ({})",
                crate::source::modbus::profile::NAMES.join(", ")
            ));
        }
    }
    let regs = c.all_registers();
    if regs.is_empty() {
        p.push(format!(
            "{key}.registers: give a profile or at least one register"
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, r) in c.registers.iter().enumerate() {
        p.extend(r.problems(&format!("{key}.registers[{i}]")));
    }
    for r in &regs {
        if !names.insert(r.name.as_str()) {
            p.push(format!(
                "{key}.registers: the value name {:?} is used twice",
                r.name
            ));
        }
    }
    if c.timeout < Duration::from_millis(20) || c.timeout > Duration::from_secs(30) {
        p.push(format!(
            "{key}.timeout: {} must be between 20ms and 30s",
            humantime::format_duration(c.timeout)
        ));
    }
    if c.gap > Duration::from_secs(5) {
        p.push(format!(
            "{key}.gap: {} is longer than 5s",
            humantime::format_duration(c.gap)
        ));
    }
}

/// Modbus devices on one serial bus must agree on the line settings.
fn shared_bus_problems(p: &mut Vec<String>, devices: &[DeviceConfig]) {
    let mut first: std::collections::HashMap<&Path, (usize, u32, ParityName, u8)> =
        std::collections::HashMap::new();
    for (i, d) in devices.iter().enumerate() {
        let DeviceConfig::Modbus(c) = d else { continue };
        let (ModbusTransport::Rtu, Some(path)) = (c.transport, &c.serial) else {
            continue;
        };
        let line = (i, c.baud(), c.parity(), c.stop_bits());
        match first.get(path.as_path()) {
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
}

fn check_serial(p: &mut Vec<String>, key: &str, path: &Path, baud: u32) {
    if !path.is_absolute() {
        p.push(format!(
            "{key}.serial: {:?} must be an absolute path such as /dev/serial/by-id/...",
            path.display()
        ));
    }
    if !BAUD_RATES.contains(&baud) {
        p.push(format!(
            "{key}.baud: {baud} is not a standard rate ({})",
            BAUD_RATES
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::from_toml(text) {
            Ok(_) => vec![],
            Err(e) => e.problems(),
        }
    }

    const MIN: &str = "site = \"xa-a\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MIN).unwrap();
        assert_eq!(c.mqtt.prefix, "ioc");
        assert_eq!(c.mqtt.max_batch, 100);
        assert_eq!(c.spool.policy, SpoolPolicy::Spill);
        assert_eq!(c.spool.spill_after, Duration::from_secs(2));
        assert_eq!(c.spool.max_bytes, ByteSize::mib(256));
        assert_eq!(c.spool.max_age, Duration::from_secs(30 * 86400));
        assert_eq!(c.spool.path, PathBuf::from("/var/lib/wardgate/spool.db"));
        // localhost: no TLS by default, so port 1883.
        assert!(!c.mqtt_tls());
        assert_eq!(c.mqtt_port(), 1883);
    }

    #[test]
    fn remote_broker_needs_tls_by_default() {
        let c = Config::from_toml("site = \"a\"\n[mqtt]\nhost = \"ioc.example\"\n").unwrap();
        assert!(c.mqtt_tls());
        assert_eq!(c.mqtt_port(), 8883);
        let c = Config::from_toml("site = \"a\"\n[mqtt]\nhost = \"127.0.0.2\"\n").unwrap();
        assert!(!c.mqtt_tls());
    }

    #[test]
    fn mqtt_sizes_and_timeouts() {
        let c = Config::from_toml(MIN).unwrap();
        assert_eq!(c.mqtt.max_batch_bytes, ByteSize::kib(256));
        assert_eq!(c.mqtt.max_packet_size, ByteSize::mib(1));
        assert_eq!(c.mqtt.stall_timeout, Duration::from_secs(60));
        let c = Config::from_toml(
            "site = \"a\"\n[mqtt]\nmax_batch_bytes = \"64 KiB\"\nmax_packet_size = 131072\nstall_timeout = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(c.mqtt.max_batch_bytes, ByteSize::kib(64));
        assert_eq!(c.mqtt.max_packet_size, ByteSize::kib(128));
        let cases: &[(&str, &str)] = &[
            (
                "max_batch_bytes = \"2 MiB\"",
                "mqtt.max_batch_bytes: 2.0 MiB must be",
            ),
            (
                "max_batch_bytes = 100",
                "mqtt.max_batch_bytes: 100 B must be",
            ),
            (
                "max_packet_size = \"1 KiB\"",
                "mqtt.max_packet_size: 1.0 KiB must be",
            ),
            (
                "max_packet_size = \"300 MiB\"",
                "mqtt.max_packet_size: 300.0 MiB must be",
            ),
            (
                "stall_timeout = \"100ms\"",
                "mqtt.stall_timeout: 100ms must be",
            ),
            (
                "connect_timeout = \"0s\"",
                "mqtt.connect_timeout: 0s must be",
            ),
            (
                "backlog_rate = 0.01",
                "mqtt.backlog_rate: 0.01 messages per second",
            ),
        ];
        for (line, want) in cases {
            let p = problems(&format!("site = \"a\"\n[mqtt]\n{line}\n"));
            assert!(p.iter().any(|m| m.contains(want)), "{line}: {p:?}");
        }
    }

    #[test]
    fn one_wire_names_must_be_value_names() {
        // Found by the config fuzz target: a name the contract cannot carry
        // passed validation and would have been published as a value name.
        for bad in ["\u{e0}rack.temperature", "rack temperature", ""] {
            let text = format!(
                "site = \"s1\"\n[[device]]\nid = \"rack\"\ntype = \"onewire\"\n[device.names]\n\"28-0316a2795aff\" = {bad:?}\n"
            );
            let e = Config::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains("names"), "{bad:?}: {e}");
        }
        let ok = "site = \"s1\"\n[[device]]\nid = \"rack\"\ntype = \"onewire\"\n[device.names]\n\"28-0316a2795aff\" = \"rack.temperature\"\n";
        Config::from_toml(ok).unwrap();
    }

    #[test]
    fn each_problem_names_its_key() {
        let cases: &[(&str, &str)] = &[
            ("site = \"a\"\n[mqtt]\nport = 70000\n", "mqtt.port: 70000 is not a port"),
            ("site = \"a\"\n[mqtt]\nprot = 1\n", "mqtt.prot"),
            ("site = \"a\"\nbogus = 1\n", "bogus"),
            ("", "site: missing"),
            ("site = \"Phuong Tan\"\n", "site: \"Phuong Tan\" is not a valid id"),
            (
                "site = \"a\"\n[[device]]\nid = \"UPS 1\"\ntype = \"sim\"\n",
                "device[0].id: \"UPS 1\"",
            ),
            (
                "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"sim\"\nspeed = 3\n",
                "speed",
            ),
            ("site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"warp\"\n", "warp"),
            ("site = \"a\"\n[spool]\npolicy = \"fast\"\n", "spool.policy"),
            ("site = \"a\"\n[led]\nbackend = \"gpio\"\n", "led.pin: needed"),
            ("site = \"a\"\n[led]\nbackend = \"gpio\"\npin = 40\n", "led.pin: 40"),
            ("site = \"a\"\n[led]\nbackend = \"blink\"\n", "led.backend"),
            ("site = \"a\"\n[web]\nlisten = \"8080\"\n", "web.listen"),
            ("site = \"a\"\n[web]\nlanguage = \"fr\"\n", "web.language"),
            ("site = \"a\"\n[web]\nusername = \"x\"\n", "web.username / web.password_file"),
            (
                "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"megatec\"\nserial = \"/dev/ttyUSB0\"\nbaud = 1234\n",
                "device[0].baud: 1234 is not a standard rate",
            ),
            (
                "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"megatec\"\n",
                "serial",
            ),
            (
                "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"megatec\"\nserial = \"ttyUSB0\"\n",
                "device[0].serial: \"ttyUSB0\" must be an absolute path",
            ),
            (
                "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"megatec\"\nserial = \"/dev/x\"\nbattery_voltage_low = 10.0\n",
                "give both or neither",
            ),
            (
                "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"nut\"\nups = \"x\"\nport = 0\n",
                "device[0].port: 0 is not a port",
            ),
            (
                "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"nut\"\n",
                "ups",
            ),
            (
                "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"apc-smart\"\nserial = \"/dev/x\"\ntimeout = \"1ms\"\n",
                "device[0].timeout",
            ),
            ("site = \"a\"\n[spool]\nspill_after = \"soon\"\n", "spool.spill_after"),
            ("site = \"a\"\n[spool]\npath = \"spool.db\"\n", "spool.path"),
            (
                "site = \"a\"\n[[device]]\nid = \"gateway\"\ntype = \"sim\"\n",
                "reserved",
            ),
            (
                "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"sim\"\n[[device]]\nid = \"u\"\ntype = \"sim\"\n",
                "device[1].id: \"u\" is used by another device",
            ),
        ];
        for (text, want) in cases {
            let p = problems(text);
            assert!(
                p.iter().any(|m| m.contains(want)),
                "config {text:?}: wanted a problem containing {want:?}, got {p:?}"
            );
        }
    }

    #[test]
    fn several_problems_reported_together() {
        let p = problems("site = \"A\"\n[mqtt]\nport = 0\nmax_batch = 0\n");
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            "site = \"a\"\n[mqtt]\nhost = \"file-host\"\nport = 1883\n",
        )
        .unwrap();
        let env = vec![
            ("WARDGATE__MQTT__HOST".to_string(), "env-host".to_string()),
            ("WARDGATE__MQTT__PORT".to_string(), "1999".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::load_with_env(&path, true, env).unwrap();
        assert_eq!(c.mqtt.host, "env-host");
        assert_eq!(c.mqtt_port(), 1999);
    }

    #[test]
    fn named_file_must_exist() {
        let e = Config::load_with_env(Path::new("/nonexistent/w.toml"), true, vec![]).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
    }

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wardgate.example.toml");
        let c = Config::load_with_env(&path, true, vec![]).unwrap();
        assert_eq!(c.site, "phuong-tan-phong");
        assert!(!c.devices.is_empty());
    }

    /// Every `[[device]]` example in the docs, and every commented-out
    /// device in the example config, is a valid device.
    #[test]
    fn documented_device_examples_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let header = "site = \"t\"\n[mqtt]\nhost = \"localhost\"\n";
        let mut n = 0;
        for doc in ["docs/sensors.md", "docs/ups.md"] {
            let text = std::fs::read_to_string(root.join(doc)).unwrap();
            for block in text.split("```toml").skip(1) {
                let body = block.split("```").next().unwrap();
                if !body.contains("[[device]]") {
                    continue;
                }
                let cfg = format!("{header}{body}");
                Config::from_toml(&cfg)
                    .unwrap_or_else(|e| panic!("{doc}: example does not load: {e}\n{body}"));
                n += 1;
            }
        }
        // The example config: each commented block starting at "# [[device]]".
        let text = std::fs::read_to_string(root.join("config/wardgate.example.toml")).unwrap();
        let mut blocks: Vec<String> = Vec::new();
        let mut cur: Option<String> = None;
        for line in text.lines() {
            if line == "# [[device]]" {
                if let Some(b) = cur.take() {
                    blocks.push(b);
                }
                cur = Some(String::new());
            }
            match (&mut cur, line.strip_prefix("# ")) {
                (Some(b), Some(l)) => {
                    b.push_str(l);
                    b.push('\n');
                }
                (Some(_), None) => blocks.extend(cur.take()),
                _ => {}
            }
        }
        blocks.extend(cur);
        assert!(
            blocks.len() >= 8,
            "found {} commented devices",
            blocks.len()
        );
        for b in &blocks {
            let b = b.replace("/etc/wardgate/nut.password", "/dev/null");
            Config::from_toml(&format!("{header}{b}"))
                .unwrap_or_else(|e| panic!("example config block does not load: {e}\n{b}"));
        }
        assert!(n >= 6, "only {n} doc examples");
    }
}
