//! The gateway's status snapshot. Components report into it; the LED, the
//! web page, the gateway telemetry and the watchdog only read it. Nothing
//! here sits on the data path.

pub(crate) mod config;
pub mod history;
pub(crate) mod led;
pub mod web;
pub mod words;

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use tokio::sync::watch;

use crate::model::{now_ms, Health, Severity, Values};
use crate::spool::SpoolStats;

/// How many recent events the snapshot keeps.
pub const RECENT_EVENTS: usize = 50;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Uplink {
    pub connected: bool,
    /// When `connected` last changed, ms since the epoch.
    pub since_ms: i64,
    /// The last connection error, in words.
    pub last_error: Option<String>,
    pub reconnects: u64,
    /// Connection attempts since start (successful or not).
    pub attempts: u64,
    /// When the broker last acknowledged a message, ms since the epoch.
    pub last_ack_ms: Option<i64>,
    /// Records acknowledged by the broker since start.
    pub acked: u64,
    /// Records pending, link up and no acknowledgement for
    /// `mqtt.stall_timeout`; cleared when acknowledgements move again.
    pub stalled: bool,
}

impl Uplink {
    /// Starting: the first connection attempt to the broker has not ended
    /// yet (it neither connected nor failed), so the gateway cannot say
    /// whether its link works. The LED's double flash and the page's
    /// "starting" line.
    pub fn starting(&self) -> bool {
        self.since_ms == 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    pub kind: String,
    pub health: Health,
    pub last_seen_ms: Option<i64>,
    pub last_values: Values,
    pub samples: u64,
    /// Failed reads by kind (timeout, garbage, malformed, port...).
    pub errors: BTreeMap<String, u64>,
    /// Words the configuration gives this device's values (a Modbus
    /// register's `label` / `label_en` / `unit`); the page prefers them to
    /// the words table ([`words`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, words::Label>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecentEvent {
    pub device: String,
    pub ts: i64,
    pub severity: Severity,
    pub code: String,
    pub message: String,
    /// The message in Vietnamese, when the source gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_vi: Option<String>,
}

/// Where the UPS that powers the Pi stands (`[power]`), as the power
/// monitor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    Mains,
    OnBattery,
    /// A shutdown was decided: the gateway is stopping and the Pi will be
    /// powered off.
    ShuttingDown,
}

/// `[power]` in the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerStatus {
    /// The UPS's device id.
    pub ups: String,
    pub state: PowerState,
    /// When `state` last changed, ms since the epoch.
    pub since_ms: i64,
    /// Readings are written to the card before they are sent (on battery).
    pub write_through: bool,
    /// Why the Pi is shut down, in English and in Vietnamese.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_vi: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub site: String,
    pub version: String,
    pub started_ms: i64,
    pub uplink: Uplink,
    /// The InfluxDB sink, when it is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub influxdb: Option<InfluxStatus>,
    pub spool: SpoolStats,
    pub devices: BTreeMap<String, DeviceStatus>,
    pub events: VecDeque<RecentEvent>,
    /// "Identify" (LED flicker) is on until then, ms since the epoch.
    pub identify_until_ms: Option<i64>,
    /// Who asked for the identify under way: `"ioc"` for the operations
    /// centre's `identify` command; absent for SIGUSR1 (a technician).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identify_by: Option<String>,
    /// When the app last refreshed the snapshot (the pipeline's heartbeat).
    pub updated_ms: i64,
    /// The UPS that powers the Pi, when `[power]` is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerStatus>,
}

/// The sending side of the snapshot.
#[derive(Clone)]
pub struct StatusHub {
    tx: watch::Sender<Snapshot>,
}

impl StatusHub {
    pub fn new(site: &str) -> Self {
        let (tx, _) = watch::channel(Snapshot {
            site: site.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms: now_ms(),
            uplink: Uplink::default(),
            influxdb: None,
            spool: SpoolStats::default(),
            devices: BTreeMap::new(),
            events: VecDeque::new(),
            identify_until_ms: None,
            identify_by: None,
            updated_ms: 0,
            power: None,
        });
        StatusHub { tx }
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    pub fn get(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        self.tx.send_modify(f);
    }

    pub fn add_device(&self, id: &str, kind: &str) {
        self.update(|s| {
            s.devices.insert(
                id.to_owned(),
                DeviceStatus {
                    kind: kind.to_owned(),
                    health: Health::Stale,
                    last_seen_ms: None,
                    last_values: Values::new(),
                    samples: 0,
                    errors: BTreeMap::new(),
                    labels: BTreeMap::new(),
                },
            );
        });
    }

    /// The configured words of a device's values (see
    /// [`DeviceStatus::labels`]); a source calls this once at start.
    pub fn set_labels(&self, id: &str, labels: BTreeMap<String, words::Label>) {
        self.update(|s| {
            if let Some(d) = s.devices.get_mut(id) {
                d.labels = labels;
            }
        });
    }

    /// Starts "identify": the LED flickers for `d` so the right box can be found.
    pub fn identify(&self, d: std::time::Duration) {
        let until = now_ms() + d.as_millis() as i64;
        self.update(|s| {
            s.identify_until_ms = Some(until);
            s.identify_by = None;
        });
    }

    /// As [`StatusHub::identify`], asked by the operations centre (the
    /// page says so).
    pub fn identify_remote(&self, d: std::time::Duration) {
        let until = now_ms() + d.as_millis() as i64;
        self.update(|s| {
            s.identify_until_ms = Some(until);
            s.identify_by = Some("ioc".into());
        });
    }

    pub fn record_event(&self, ev: RecentEvent) {
        self.update(|s| {
            s.events.push_front(ev);
            s.events.truncate(RECENT_EVENTS);
        });
    }
}

/// What the status shows about the InfluxDB sink.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InfluxStatus {
    pub url: String,
    pub connected: bool,
    /// When `connected` last changed, ms since the epoch.
    pub since_ms: i64,
    /// Records of this sink's lane not yet written (memory and disk).
    pub depth: u64,
    pub written: u64,
    pub rejected: u64,
    pub retention_dropped: u64,
    pub too_large: u64,
    pub refused: u64,
    pub retries: u64,
    pub batch_limit: u64,
    /// The class of the last failed answer: `too_large`, `bad_points`,
    /// `retention`, `refused`, `retry` or `unreachable`.
    pub last_class: Option<String>,
    pub last_error: Option<String>,
    pub last_write_ms: Option<i64>,
}
