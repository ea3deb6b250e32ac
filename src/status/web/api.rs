//! The machine-facing endpoints: `/api/status` (the snapshot as JSON),
//! `/healthz` (is the pipeline alive) and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{authorised, AppState, Client};
use crate::model::now_ms;
use crate::status::{InfluxStatus, Snapshot};

/// Prometheus text exposition of the snapshot, with what the page itself
/// counts:
/// `refused_hosts`, the requests refused for a name the gateway does not
/// answer to (a DNS rebinding attempt, or a name missing from
/// `web.allowed_hosts`).
fn render_metrics_with(s: &Snapshot, refused_hosts: u64) -> String {
    let mut r = Registry::with_prefix("wardgate");
    register_devices(&mut r, s);
    register_records(&mut r, s);
    register_spool_and_uplink(&mut r, s);
    if let Some(i) = &s.influxdb {
        register_influx(&mut r, i);
    }
    register_gauge(
        &mut r,
        "web_refused_hosts",
        "Page requests refused since start for a Host that is not the gateway's (421/400)",
        refused_hosts as i64,
    );
    let build: Family<Labels, Gauge> = Family::default();
    build
        .get_or_create(&vec![("version".into(), s.version.clone())])
        .set(1);
    r.register("build_info", "Build information", build);
    let mut out = String::new();
    let _ = encode(&mut out, &r);
    out
}

/// A metric's labels, as `(name, value)` pairs.
type Labels = Vec<(String, String)>;

/// One gauge without labels.
fn register_gauge(r: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    r.register(name, help, g);
}

/// Per device: readings taken, the current health state, failed reads.
fn register_devices(r: &mut Registry, s: &Snapshot) {
    let samples: Family<Labels, Gauge> = Family::default();
    let health: Family<Labels, Gauge> = Family::default();
    let errors: Family<Labels, Gauge> = Family::default();
    for (id, d) in &s.devices {
        samples
            .get_or_create(&vec![("device".into(), id.clone())])
            .set(d.samples as i64);
        for st in ["ok", "stale", "fault"] {
            health
                .get_or_create(&vec![
                    ("device".into(), id.clone()),
                    ("state".into(), st.into()),
                ])
                .set((d.health.word() == st) as i64);
        }
        errors
            .get_or_create(&vec![("device".into(), id.clone())])
            .set(d.errors.values().sum::<u64>() as i64);
    }
    r.register(
        "samples_read",
        "Readings taken per device since start",
        samples,
    );
    r.register(
        "device_health",
        "1 for the device's current health state",
        health,
    );
    r.register(
        "device_errors",
        "Failed reads per device since start",
        errors,
    );
}

/// Per sink: records acknowledged, and records written to disk.
fn register_records(r: &mut Registry, s: &Snapshot) {
    let published: Family<Labels, Gauge> = Family::default();
    published
        .get_or_create(&vec![("sink".into(), "mqtt".into())])
        .set(s.uplink.acked as i64);
    if let Some(i) = &s.influxdb {
        published
            .get_or_create(&vec![("sink".into(), "influxdb".into())])
            .set(i.written as i64);
    }
    r.register(
        "records_published",
        "Records acknowledged by the sink since start",
        published,
    );
    let spooled: Family<Labels, Gauge> = Family::default();
    spooled
        .get_or_create(&vec![("sink".into(), "mqtt".into())])
        .set(s.spool.spilled as i64);
    r.register(
        "records_spooled",
        "Records written to disk since start (link down or slow)",
        spooled,
    );
}

/// What the spool holds and drops, and the MQTT link.
fn register_spool_and_uplink(r: &mut Registry, s: &Snapshot) {
    for (name, help, value) in [
        (
            "spool_records",
            "Records kept on disk",
            s.spool.disk_rows as i64,
        ),
        (
            "spool_memory_records",
            "Records in memory not yet acknowledged",
            s.spool.memory as i64,
        ),
        (
            "spool_bytes",
            "Bytes the spool uses on disk",
            s.spool.disk_bytes as i64,
        ),
        (
            "spool_dropped",
            "Records dropped by the spool (cap, age, errors)",
            s.spool.dropped as i64,
        ),
        (
            "uplink_up",
            "1 when connected to the broker",
            s.uplink.connected as i64,
        ),
        (
            "uplink_reconnects",
            "Reconnections since start",
            s.uplink.reconnects as i64,
        ),
    ] {
        register_gauge(r, name, help, value);
    }
}

/// The InfluxDB sink, when it is on: its link, depth, answers by class
/// and batch limit.
fn register_influx(r: &mut Registry, i: &InfluxStatus) {
    register_gauge(
        r,
        "influxdb_up",
        "1 when the last InfluxDB write was accepted",
        i.connected as i64,
    );
    register_gauge(
        r,
        "influxdb_depth",
        "Records waiting for the InfluxDB sink (memory and disk)",
        i.depth as i64,
    );
    let answers: Family<Labels, Gauge> = Family::default();
    for (class, n) in [
        ("written", i.written),
        ("rejected", i.rejected),
        ("retention", i.retention_dropped),
    ] {
        answers
            .get_or_create(&vec![("class".into(), class.into())])
            .set(n as i64);
    }
    r.register(
        "influxdb_points",
        "Points written to InfluxDB, set aside as bad, or dropped as outside retention, since start",
        answers,
    );
    let errors: Family<Labels, Gauge> = Family::default();
    for (class, n) in [
        ("too_large", i.too_large),
        ("refused", i.refused),
        ("retry", i.retries),
    ] {
        errors
            .get_or_create(&vec![("class".into(), class.into())])
            .set(n as i64);
    }
    r.register(
        "influxdb_errors",
        "InfluxDB answers that held data back, by class, since start (413 too_large, 401/403/4xx refused, 429/5xx/unreachable retry)",
        errors,
    );
    register_gauge(
        r,
        "influxdb_batch_limit",
        "Points per InfluxDB request now (halved on 413)",
        i.batch_limit as i64,
    );
}

pub(super) async fn api_status(
    State(st): State<AppState>,
    Extension(who): Extension<Client>,
    h: HeaderMap,
) -> Response {
    if let Err(r) = authorised(&st, who, &h) {
        return *r;
    }
    let snap = st.status.borrow().clone();
    axum::Json(snap).into_response()
}

pub(super) async fn healthz(State(st): State<AppState>) -> Response {
    let snap = st.status.borrow().clone();
    let age = now_ms() - snap.updated_ms;
    if snap.updated_ms == 0 || age > 10_000 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "pipeline not running: status not refreshed for {} s\n",
                age / 1000
            ),
        )
            .into_response()
    } else if snap.uplink.stalled {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "delivery stalled: the broker acknowledges nothing while records wait\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

pub(super) async fn metrics(
    State(st): State<AppState>,
    Extension(who): Extension<Client>,
    h: HeaderMap,
) -> Response {
    if let Err(r) = authorised(&st, who, &h) {
        return *r;
    }
    let snap = st.status.borrow().clone();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics_with(&snap, st.refused_hosts.total()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusHub;

    /// The exposition with no refused hosts.
    fn render_metrics(s: &Snapshot) -> String {
        render_metrics_with(s, 0)
    }

    #[test]
    fn metrics_exposition() {
        let hub = StatusHub::new("xa-a");
        hub.add_device("ups1", "sim");
        hub.update(|s| {
            s.uplink.attempts = 1;
            s.uplink.since_ms = 1;
        });
        let m = render_metrics(&hub.get());
        assert!(m.contains("wardgate_uplink_up 0"), "{m}");
        assert!(m.contains("wardgate_build_info{version="), "{m}");
        assert!(m.ends_with("# EOF\n"));
    }

    /// The InfluxDB sink's classes, when it is on (and nothing of it when
    /// it is off).
    #[test]
    fn metrics_show_the_influx_sink() {
        let hub = StatusHub::new("xa-a");
        assert!(!render_metrics(&hub.get()).contains("influxdb"));
        hub.update(|s| {
            s.influxdb = Some(crate::status::InfluxStatus {
                connected: true,
                depth: 12,
                written: 900,
                rejected: 3,
                retention_dropped: 2,
                too_large: 1,
                refused: 4,
                retries: 5,
                batch_limit: 500,
                ..Default::default()
            })
        });
        let m = render_metrics(&hub.get());
        for line in [
            "wardgate_influxdb_up 1",
            "wardgate_influxdb_depth 12",
            "wardgate_influxdb_points{class=\"written\"} 900",
            "wardgate_influxdb_points{class=\"rejected\"} 3",
            "wardgate_influxdb_points{class=\"retention\"} 2",
            "wardgate_influxdb_errors{class=\"too_large\"} 1",
            "wardgate_influxdb_errors{class=\"refused\"} 4",
            "wardgate_influxdb_errors{class=\"retry\"} 5",
            "wardgate_influxdb_batch_limit 500",
            "wardgate_records_published{sink=\"influxdb\"} 900",
        ] {
            assert!(m.contains(line), "{line} in\n{m}");
        }
    }
}
