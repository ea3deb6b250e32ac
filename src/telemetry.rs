//! The gateway as a device of its own (`gateway`): its telemetry on
//! `{prefix}/{site}/gateway/telemetry` (spool, uplink and device health, see
//! docs/mqtt.md "Gateway telemetry") and the events it raises about itself
//! (what opening the spool found, what the spool reports while running).
//! Words come from the event catalogue (`crate::events`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::events;
use crate::ids::GATEWAY_DEVICE;
use crate::model::{now_ms, Severity, Values};
use crate::sink::mqtt::SinkCounters;
use crate::source::DeviceHandle;
use crate::spool::{Notice, Spool, StartReport};
use crate::status::StatusHub;
use serde::Deserialize;

/// Tells the operations centre what opening the spool found.
pub(crate) fn report_start(gateway: &DeviceHandle, report: &StartReport) {
    if let Some((aside, reason)) = &report.moved_aside {
        let mut v = Values::new();
        v.set("spool.moved_to", aside.display().to_string());
        v.set("spool.reason", reason.clone());
        let ev = events::SPOOL_CORRUPT;
        let msg = ev.render(&[("reason", reason), ("moved_to", &aside.display())]);
        gateway.event(ev.severity, ev.code, &msg, v);
    }
    if !report.resumed_unclean.is_empty() {
        let mut v = Values::new();
        let mut parts = Vec::new();
        for r in &report.resumed_unclean {
            let leaf = match r.kind {
                crate::model::Kind::Sample => "samples",
                crate::model::Kind::Event => "events",
            };
            v.num(&format!("seq_resumed.{}.{leaf}", r.device), r.at as f64);
            match r.last_used {
                Some(u) => {
                    v.num(&format!("seq_last_used.{}.{leaf}", r.device), u as f64);
                    parts.push(events::fill(
                        events::UNCLEAN_STREAM_USED,
                        &[
                            ("device", &r.device),
                            ("kind", &leaf),
                            ("used", &u),
                            ("at", &r.at),
                        ],
                    ));
                }
                None => parts.push(events::fill(
                    events::UNCLEAN_STREAM,
                    &[("device", &r.device), ("kind", &leaf), ("at", &r.at)],
                )),
            }
        }
        let ev = events::GATEWAY_UNCLEAN_STOP;
        let msg = ev.render(&[("streams", &parts.join("; "))]);
        gateway.event(ev.severity, ev.code, &msg, v);
    }
}

/// The `[gateway]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// How often the gateway publishes its own health on
    /// `{prefix}/{site}/gateway/telemetry`.
    #[serde(default = "default_gateway_interval")]
    pub telemetry_interval: TelemetryInterval,
    /// Read the Pi's own health as device "pi" without configuring it.
    #[serde(default = "default_true")]
    pub system_health: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        crate::types::defaults_of("gateway")
    }
}

/// The gateway's own telemetry: every 100 ms (tests) to once a day.
pub type TelemetryInterval = crate::types::Within<100, { crate::types::DAY_MS }>;

fn default_gateway_interval() -> TelemetryInterval {
    TelemetryInterval::of(Duration::from_secs(60))
}
fn default_true() -> bool {
    true
}

/// What the gateway's own telemetry is built from (never the whole config).
#[derive(Debug, Clone, Copy)]
pub struct TelemetrySetup {
    /// `gateway.telemetry_interval`.
    pub interval: Duration,
    /// `mqtt.max_packet_size`, said beside a record set aside as too big.
    pub max_packet_size: u64,
}

/// Turns what the spool reports into gateway events (shown on the page and
/// sent to the operations centre like any event).
pub(crate) async fn spool_notices(
    cfg: TelemetrySetup,
    spool: Arc<Spool>,
    gateway: DeviceHandle,
    cancel: CancellationToken,
) {
    loop {
        let notices = tokio::select! {
            _ = cancel.cancelled() => return,
            n = spool.next_notices() => n,
        };
        for n in notices {
            report_notice(&cfg, &gateway, n);
        }
    }
}

pub(crate) fn report_notice(cfg: &TelemetrySetup, gateway: &DeviceHandle, n: Notice) {
    let mut v = Values::new();
    let (severity, code, msg, vi) = match n {
        Notice::CorruptRecords { count, reason } => {
            v.num("spool.records", count as f64);
            v.set("spool.reason", reason.clone());
            words(
                events::SPOOL_CORRUPT_RECORD,
                &[("count", &count), ("reason", &reason)],
                &[("count", &count)],
            )
        }
        Notice::Degraded { reason, detail } => {
            v.set("spool.reason", reason);
            v.set("spool.detail", detail.clone());
            words(
                events::SPOOL_DEGRADED,
                &[
                    ("reason", &crate::spool::degraded_words(reason)),
                    ("detail", &detail),
                ],
                &[("reason", &events::degraded_reason_vi(reason))],
            )
        }
        Notice::Restored { degraded_for, lost } => {
            v.num("spool.degraded_for", degraded_for.as_secs() as f64);
            v.num("spool.lost", lost as f64);
            let after = humantime::format_duration(Duration::from_secs(degraded_for.as_secs()));
            words(
                events::SPOOL_RESTORED,
                &[("after", &after), ("lost", &lost)],
                &[],
            )
        }
        Notice::Quarantined {
            device,
            kind,
            seq,
            bytes,
            reason,
        } => quarantined(&mut v, cfg, device, kind, seq, bytes, reason),
        Notice::SequenceReset {
            epoch,
            previous,
            reason,
            first_start,
        } => sequence_reset(&mut v, epoch, previous, reason, first_start),
        n @ Notice::ClockCorrected { .. } => match clock_corrected(&mut v, n) {
            Some(w) => w,
            // Command replies travel with no sequence: nothing to correct.
            None => return,
        },
    };
    v.set("message.vi", vi);
    gateway.event(severity, code, &msg, v);
}

/// The words of a record set aside as too big to publish.
#[allow(clippy::too_many_arguments)]
fn quarantined(
    v: &mut Values,
    cfg: &TelemetrySetup,
    device: String,
    kind: crate::model::Kind,
    seq: u64,
    bytes: u64,
    reason: String,
) -> Words {
    v.set("record.device", device.clone());
    v.set(
        "record.kind",
        match kind {
            crate::model::Kind::Sample => "samples",
            crate::model::Kind::Event => "events",
        },
    );
    v.num("record.seq", seq as f64);
    v.num("record.bytes", bytes as f64);
    v.num("mqtt.max_packet_size", cfg.max_packet_size as f64);
    words(
        events::SPOOL_QUARANTINED,
        &[
            ("device", &device),
            ("seq", &seq),
            ("bytes", &bytes),
            ("reason", &reason),
        ],
        &[("device", &device)],
    )
}

/// The words of a new sequence epoch (an Info on the first start, which
/// has no numbers before it to lose).
fn sequence_reset(
    v: &mut Values,
    epoch: u64,
    previous: Option<u64>,
    reason: String,
    first_start: bool,
) -> Words {
    v.set("epoch", crate::spool::positions::epoch_hex(epoch));
    if let Some(p) = previous {
        v.set("previous_epoch", crate::spool::positions::epoch_hex(p));
    }
    v.set("reason", reason.clone());
    let (severity, code, msg, vi) = words(
        events::GATEWAY_SEQUENCE_RESET,
        &[
            ("epoch", &crate::spool::positions::epoch_hex(epoch)),
            ("reason", &reason),
        ],
        &[],
    );
    // A first start has no numbers before it to lose.
    let severity = if first_start {
        Severity::Info
    } else {
        severity
    };
    (severity, code, msg, vi)
}

/// The words of records sent with an unsynchronised time and corrected
/// at the sync; None for command replies, which are kept in the spool as
/// events of a reserved device but travel as replies with no sequence.
fn clock_corrected(v: &mut Values, n: Notice) -> Option<Words> {
    let Notice::ClockCorrected {
        device,
        kind,
        epoch,
        first_seq,
        last_seq,
        records,
        offset_ms,
    } = n
    else {
        return None;
    };
    // Command replies are kept in the spool as events of a reserved
    // device, but travel as replies with no sequence: nothing to
    // correct at the operations centre.
    if device == crate::ids::REPLY_DEVICE {
        return None;
    }
    let leaf = match kind {
        crate::model::Kind::Sample => "samples",
        crate::model::Kind::Event => "events",
    };
    let epoch = crate::spool::positions::epoch_hex(epoch);
    v.set("record.device", device.clone());
    v.set("record.kind", leaf);
    v.set("record.epoch", epoch.clone());
    v.num("record.first_seq", first_seq as f64);
    v.num("record.last_seq", last_seq as f64);
    v.num("record.count", records as f64);
    v.num("clock.offset_ms", offset_ms as f64);
    Some(words(
        events::GATEWAY_CLOCK_CORRECTED,
        &[
            ("offset", &off_words(offset_ms)),
            ("count", &records),
            ("kind", &leaf),
            ("device", &device),
            ("first", &first_seq),
            ("last", &last_seq),
            ("epoch", &epoch),
            ("offset_ms", &offset_ms),
        ],
        &[
            ("count", &records),
            ("device", &device),
            ("offset_ms", &offset_ms),
        ],
    ))
}

/// How far off the clock was, in words: a positive offset means the
/// unsynchronised clock was behind (its times were too early).
fn off_words(offset_ms: i64) -> String {
    let secs = offset_ms.unsigned_abs() as f64 / 1000.0;
    let d = if secs >= 60.0 {
        crate::status::words::duration(secs, "en")
    } else {
        format!("{secs:.1} s")
    };
    if offset_ms >= 0 {
        format!("{d} behind")
    } else {
        format!("{d} ahead")
    }
}

/// A spool notice's severity, code, English message (filled with `en`) and
/// Vietnamese message (filled with `vi`).
/// An event's severity, code, English and Vietnamese words.
type Words = (Severity, &'static str, String, String);

fn words(
    ev: events::EventDef,
    en: &[(&str, &dyn std::fmt::Display)],
    vi: &[(&str, &dyn std::fmt::Display)],
) -> (Severity, &'static str, String, String) {
    (
        ev.severity,
        ev.code,
        ev.render(en),
        ev.render_vi(vi).unwrap_or_default(),
    )
}

/// The gateway's own health on `{prefix}/{site}/gateway/telemetry`.
pub(crate) async fn run(
    cfg: TelemetrySetup,
    gateway: DeviceHandle,
    status: StatusHub,
    spool: Arc<Spool>,
    counters: Arc<SinkCounters>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_msgs = 0u64;
    let mut last_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snap = status.get();
        let st = spool.stats();
        let c = spool.counters();
        let mut v = Values::new();
        v.num("spool.depth", st.disk_rows as f64);
        v.num("spool.bytes", st.disk_bytes as f64);
        v.num("spool.memory", st.memory as f64);
        v.num("spool.dropped", st.dropped as f64);
        v.num("spool.write_errors", st.write_errors as f64);
        v.num("spool.spilled", c.spilled.load(Ordering::Relaxed) as f64);
        v.set("spool.degraded", st.degraded.is_some());
        v.num(
            "clock.corrected",
            c.clock_corrected.load(Ordering::Relaxed) as f64,
        );
        v.num(
            "clock.uncorrected",
            c.clock_uncorrected.load(Ordering::Relaxed) as f64,
        );
        for r in crate::spool::DropReason::ALL {
            v.num(
                &format!("spool.dropped.{}", r.as_str()),
                c.dropped(r) as f64,
            );
        }
        v.set("mqtt.connected", snap.uplink.connected);
        let up = if snap.uplink.connected {
            ((now_ms() - snap.uplink.since_ms).max(0) / 1000) as f64
        } else {
            0.0
        };
        v.num("mqtt.link_uptime", up);
        v.num("mqtt.reconnects", snap.uplink.reconnects as f64);
        v.num(
            "mqtt.stalls",
            counters.stalls.load(Ordering::Relaxed) as f64,
        );
        let msgs = counters.messages_acked.load(Ordering::Relaxed);
        let dt = last_at.elapsed().as_secs_f64().max(0.001);
        v.num(
            "mqtt.publish_rate",
            ((msgs - last_msgs) as f64 / dt * 10.0).round() / 10.0,
        );
        last_msgs = msgs;
        last_at = tokio::time::Instant::now();
        v.num(
            "mqtt.records_acked",
            counters.records_acked.load(Ordering::Relaxed) as f64,
        );
        v.num(
            "commands.dropped",
            counters.commands_dropped.load(Ordering::Relaxed) as f64,
        );
        v.num(
            "commands.limited",
            counters.commands_limited.load(Ordering::Relaxed) as f64,
        );
        if let Some(i) = &snap.influxdb {
            v.set("influxdb.connected", i.connected);
            v.num("influxdb.depth", i.depth as f64);
            v.num("influxdb.written", i.written as f64);
            v.num("influxdb.rejected", i.rejected as f64);
            v.num("influxdb.retention_dropped", i.retention_dropped as f64);
            v.num("influxdb.too_large", i.too_large as f64);
            v.num("influxdb.refused", i.refused as f64);
            v.num("influxdb.retries", i.retries as f64);
        }
        v.num(
            "gateway.uptime",
            ((now_ms() - snap.started_ms).max(0) / 1000) as f64,
        );
        for (id, d) in &snap.devices {
            if id != GATEWAY_DEVICE {
                v.set(&format!("device.{id}.health"), d.health.word());
                v.num(
                    &format!("device.{id}.errors"),
                    d.errors.values().sum::<u64>() as f64,
                );
            }
        }
        gateway.sample(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::spool::Resumed;
    use crate::status::RecentEvent;

    fn setup() -> (TelemetrySetup, DeviceHandle, StatusHub, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let cfg = crate::config::Config::from_toml(&format!(
            "site = \"s\"\n[spool]\npath = \"{}\"\n",
            dir.path().join("s.db").display()
        ))
        .expect("config");
        let (spool, _) = Spool::open(&cfg.spool, "s", &[crate::spool::Lane::Mqtt]).expect("spool");
        let hub = StatusHub::new("s");
        let h = DeviceHandle::new(
            GATEWAY_DEVICE,
            "gateway",
            Duration::from_secs(60),
            spool,
            hub.clone(),
        );
        (cfg.telemetry_setup(), h, hub, dir)
    }

    fn last(hub: &StatusHub) -> RecentEvent {
        hub.get().events.front().cloned().expect("an event")
    }

    /// The words are the contract's (docs/mqtt.md), checked word for word.
    #[test]
    fn start_report_events() {
        let (_, h, hub, _d) = setup();
        let report = StartReport {
            moved_aside: Some((
                "/var/lib/wardgate/spool.db.bad".into(),
                "not a database".into(),
            )),
            resumed_unclean: vec![
                Resumed {
                    device: "ups1".into(),
                    kind: Kind::Sample,
                    at: 512,
                    last_used: Some(300),
                },
                Resumed {
                    device: "ups1".into(),
                    kind: Kind::Event,
                    at: 64,
                    last_used: None,
                },
            ],
        };
        report_start(&h, &report);
        let ev: Vec<RecentEvent> = hub.get().events.iter().rev().cloned().collect();
        assert_eq!(ev.len(), 2);
        assert_eq!(
            (ev[0].severity, ev[0].code.as_str(), ev[0].message.as_str()),
            (
                Severity::Critical,
                "spool.corrupt",
                "The spool was unreadable (not a database) and was moved to /var/lib/wardgate/spool.db.bad; a new one was started. Readings in it were not sent."
            )
        );
        assert_eq!(
            (ev[1].severity, ev[1].code.as_str(), ev[1].message.as_str()),
            (
                Severity::Warning,
                "gateway.unclean_stop",
                "wardgate did not stop cleanly last time (power cut or crash). ups1 samples: last known used 300, resumes at 512; ups1 events: resumes at 64. Numbers after the last known used one and before the resume point that never arrive were either never used or were readings lost in the stop (at most those of the last spool.spill_after + spool.commit_interval)."
            )
        );
        assert_eq!(ev[1].message_vi, None, "the page says it by code");
    }

    #[test]
    fn spool_notice_events() {
        let (cfg, h, hub, _d) = setup();
        let check = |n: Notice, sev: Severity, code: &str, en: &str, vi: &str| {
            report_notice(&cfg, &h, n);
            let e = last(&hub);
            assert_eq!(
                (e.severity, e.code.as_str(), e.message.as_str()),
                (sev, code, en)
            );
            assert_eq!(e.message_vi.as_deref(), Some(vi), "{code}");
        };
        check(
            Notice::CorruptRecords {
                count: 3,
                reason: "checksum".into(),
            },
            Severity::Warning,
            "spool.corrupt_record",
            "3 damaged record(s) in the spool were dropped, not sent (checksum).",
            "3 bản ghi bị hỏng trong bộ nhớ đệm đã bị bỏ, không gửi.",
        );
        check(
            Notice::Degraded {
                reason: "read_only",
                detail: "EROFS".into(),
            },
            Severity::Critical,
            "spool.degraded",
            &format!(
                "Readings cannot be kept on the card: {} (EROFS). They are sent from memory; if the link drops they are lost. Tried again every few seconds.",
                crate::spool::degraded_words("read_only")
            ),
            "Không lưu được dữ liệu vào thẻ nhớ: thẻ nhớ chỉ đọc. Dữ liệu vẫn được gửi từ bộ nhớ.",
        );
        check(
            Notice::Restored {
                degraded_for: Duration::from_millis(90_500),
                lost: 7,
            },
            Severity::Info,
            "spool.restored",
            "The spool can be written again after 1m 30s; 7 reading(s) could not be kept meanwhile.",
            "Đã lưu được dữ liệu vào thẻ nhớ trở lại.",
        );
        check(
            Notice::Quarantined {
                device: "ups1".into(),
                kind: Kind::Event,
                seq: 9,
                bytes: 2_000_000,
                reason: "too large".into(),
            },
            Severity::Warning,
            "spool.quarantined",
            "A record of ups1 (seq 9, 2000000 bytes) was set aside and will not be sent: too large.",
            "Một bản ghi của ups1 đã bị để riêng, không gửi được.",
        );
        for (first_start, sev) in [(true, Severity::Info), (false, Severity::Critical)] {
            check(
                Notice::SequenceReset {
                    epoch: 0x5f3a9c0e12d4b7a1,
                    previous: None,
                    reason: "first start".into(),
                    first_start,
                },
                sev,
                "gateway.sequence_reset",
                "Sequence numbers start again at 0 in epoch 5f3a9c0e12d4b7a1: first start.",
                "Số thứ tự dữ liệu bắt đầu lại từ 0.",
            );
        }
        check(
            Notice::ClockCorrected {
                device: "ups1".into(),
                kind: Kind::Sample,
                epoch: 0x5f3a9c0e12d4b7a1,
                first_seq: 0,
                last_seq: 41,
                records: 42,
                offset_ms: 259_200_000,
            },
            Severity::Info,
            "gateway.clock_corrected",
            "The clock synchronised after running 3 days behind: 42 samples of ups1 (seq 0 to 41, epoch 5f3a9c0e12d4b7a1) were sent with the unsynchronised time; add 259200000 ms to the ts of those marked unsynced.",
            "Đồng hồ đã được đồng bộ: thời gian của 42 bản ghi của ups1 đã gửi trước đó cần cộng thêm 259200000 ms.",
        );
        // Command replies travel without a sequence: nothing to correct.
        let before = hub.get().events.len();
        let front = last(&hub).message;
        report_notice(
            &cfg,
            &h,
            Notice::ClockCorrected {
                device: crate::ids::REPLY_DEVICE.into(),
                kind: Kind::Event,
                epoch: 1,
                first_seq: 0,
                last_seq: 0,
                records: 1,
                offset_ms: 1000,
            },
        );
        assert_eq!(hub.get().events.len(), before);
        assert_eq!(last(&hub).message, front);
    }
}
