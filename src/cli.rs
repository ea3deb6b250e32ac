//! The technician's commands: `check`, `spool stats`, `spool export`.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::model::Kind;
use crate::source;
use crate::spool::db::Db;

/// Exit codes from sysexits.h, which systemd and technicians' scripts know.
pub mod exit {
    pub const OK: u8 = 0;
    /// A device could not be reached.
    pub(super) const UNAVAILABLE: u8 = 69;
    /// The spool or another file could not be read.
    pub const IO: u8 = 74;
    /// The configuration is invalid.
    pub const CONFIG: u8 = 78;
    /// A `restart` command stopped the gateway cleanly: non-zero, so
    /// systemd's `Restart=on-failure` starts it again (EX_TEMPFAIL).
    pub const RESTART: u8 = 75;
    /// `[power]`: the shutdown command would not be allowed (EX_NOPERM).
    pub(super) const NOPERM: u8 = 77;
}

/// Prints config problems, one per line, for a technician.
pub fn print_config_error(path: &Path, e: &ConfigError, out: &mut impl Write) {
    let _ = writeln!(
        out,
        "wardgate: configuration {} is not valid:",
        path.display()
    );
    for p in e.problems() {
        let _ = writeln!(out, "  - {p}");
    }
}

/// `wardgate check`: validates the config, then reads each device once and
/// prints what it read. Returns the exit code.
pub async fn check(
    path: &Path,
    explicit: bool,
    policy: &Path,
    config_only: bool,
    out: &mut impl Write,
) -> u8 {
    let cfg = match Config::load(path, explicit) {
        Ok(c) => c,
        Err(e) => {
            print_config_error(path, &e, out);
            return exit::CONFIG;
        }
    };
    print_config_summary(path, &cfg, out);
    let config_set = cfg.commands.enabled
        && cfg
            .commands
            .allowed()
            .contains(&crate::command::request::Op::ConfigSet);
    if config_set {
        // Said with --config-only too: it is about files, not devices.
        let _ = match crate::config::remote_policy::Policy::load(policy) {
            Ok(p) => writeln!(out, "config.set: remote change policy: {}", p.describe()),
            Err(e) => writeln!(out, "config.set: remote change policy NOT USABLE: {e}"),
        };
    }
    if config_only {
        return exit::OK;
    }
    if config_set {
        for l in crate::command::access::check_lines(path) {
            let _ = writeln!(out, "{l}");
        }
    }
    let mut code = exit::OK;
    if cfg.influxdb.enabled() && !influx_usable(&cfg, out).await {
        code = exit::UNAVAILABLE;
    }
    if let Some(p) = &cfg.power {
        let allowed = shutdown_allowed(p, out).await;
        if !allowed && code == exit::OK {
            code = exit::NOPERM;
        }
    }
    if !probe_devices(&cfg, out).await {
        code = exit::UNAVAILABLE;
    }
    code
}

/// The config's one-line summary, then the warnings the config alone
/// gives (files readable by others, logins in clear text), and the
/// InfluxDB target.
fn print_config_summary(path: &Path, cfg: &Config, out: &mut impl Write) {
    let _ = writeln!(
        out,
        "config {}: ok (site {}, {} device(s), broker {}:{}{})",
        if path.exists() {
            path.display().to_string()
        } else {
            "(defaults and environment)".into()
        },
        cfg.site,
        cfg.devices.len(),
        cfg.mqtt.host,
        cfg.mqtt_port(),
        if cfg.mqtt_tls() { ", TLS" } else { ", no TLS" }
    );
    if let Some(w) = crate::status::web::password_file_warning(&cfg.web) {
        let _ = writeln!(out, "warning: {w}");
    }
    for w in cfg.secret_warnings() {
        let _ = writeln!(out, "warning: {w}");
    }
    // A upsd login that would cross the network in clear text: said from
    // the config alone, whether upsd can be reached or not.
    for dev in &cfg.devices {
        if let crate::config::DeviceConfig::Nut(n) = dev {
            if let Some(w) = source::nut::cleartext_warning(n) {
                let _ = writeln!(out, "warning: {w}");
            }
        }
    }
    if let Some(url) = &cfg.influxdb.url {
        let _ = writeln!(
            out,
            "influxdb {url}: org {:?}, bucket {:?}",
            cfg.influxdb.org, cfg.influxdb.bucket
        );
    }
}

/// One authenticated request to InfluxDB (a zero-point write); false when
/// it failed.
async fn influx_usable(cfg: &Config, out: &mut impl Write) -> bool {
    match crate::sink::influx::check(&cfg.influxdb).await {
        Ok(found) => {
            let _ = writeln!(out, "influxdb: ok: {found}");
            true
        }
        Err(e) => {
            let _ = writeln!(out, "influxdb: NOT USABLE: {e}");
            false
        }
    }
}

/// Reads each device once and prints its values (and, for a NUT device
/// with a login, whether upsd accepts it: the power-off needs it); false
/// when a device could not be read or its login is refused.
async fn probe_devices(cfg: &Config, out: &mut impl Write) -> bool {
    let mut all_fine = true;
    for dev in &cfg.devices {
        match source::probe(dev).await {
            Ok(values) => {
                let _ = writeln!(out, "device {} ({}): ok", dev.id(), dev.kind());
                for (k, v) in &values.0 {
                    let raw = serde_json::to_string(v).unwrap_or_default();
                    let _ = writeln!(out, "  {k} = {raw}{}", in_words(k, v, &values));
                }
                if let crate::config::DeviceConfig::Nut(n) = dev {
                    for (fine, line) in source::nut::check_login(n).await {
                        let _ = writeln!(out, "  {line}");
                        all_fine &= fine;
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "device {} ({}): NOT REACHABLE: {e}",
                    dev.id(),
                    dev.kind()
                );
                all_fine = false;
            }
        }
    }
    all_fine
}

/// Prints whether `power.shutdown_command` would be allowed for the
/// service's user; false when it certainly would not.
async fn shutdown_allowed(p: &crate::power::config::PowerConfig, out: &mut impl Write) -> bool {
    use crate::power::logind;
    let Some(prog) = p.shutdown_command.first() else {
        return false;
    };
    let shown = p.shutdown_command.join(" ");
    let Some(found) = logind::find_program(prog) else {
        let _ = writeln!(
            out,
            "power: shutdown command `{shown}`: {prog} NOT FOUND (as an absolute path, or in PATH)"
        );
        return false;
    };
    if !logind::goes_through_logind(&p.shutdown_command) {
        let _ = writeln!(
            out,
            "power: shutdown command `{shown}` ({}): allowed: unknown (not systemctl poweroff: check it runs as user {} under the service's sandbox)",
            found.display(),
            logind::SERVICE_USER
        );
        return true;
    }
    let v = logind::can_power_off().await;
    let _ = writeln!(
        out,
        "power: shutdown command `{shown}` ({}): {} ({})",
        found.display(),
        v.words(),
        v.how
    );
    if v.answer == "challenge" || v.answer == "no" {
        let _ = writeln!(
            out,
            "  the package installs a polkit rule allowing only power-off for user {} (/usr/share/polkit-1/rules.d/50-wardgate-power-off.rules): is polkitd installed? (docs/packaging.md)",
            logind::SERVICE_USER
        );
    }
    !matches!(v.answer.as_str(), "no" | "challenge" | "na")
}

/// `wardgate check --power-test`: what `[power]` would do, step by step,
/// with the UPS's current reading if it can be read. Sends nothing to the
/// UPS and runs nothing. Returns the exit code: 78 bad config or no
/// `[power]`, 69 the UPS could not be read, 77 the shutdown command would
/// not be allowed, 0 otherwise.
pub async fn power_test(path: &Path, explicit: bool, out: &mut impl Write) -> u8 {
    use crate::power::decide::{Limits, UpsReading};
    let cfg = match Config::load(path, explicit) {
        Ok(c) => c,
        Err(e) => {
            print_config_error(path, &e, out);
            return exit::CONFIG;
        }
    };
    let Some(p) = &cfg.power else {
        let _ = writeln!(
            out,
            "power: no [power] section in {}: the gateway never shuts the Pi down (docs/ups.md)",
            path.display()
        );
        return exit::CONFIG;
    };
    let _ = writeln!(
        out,
        "power test: nothing is sent to the UPS and nothing is run; this says what would happen."
    );
    let Some(dev) = cfg.devices.iter().find(|d| d.id() == p.ups) else {
        return exit::CONFIG;
    };
    let _ = writeln!(out, "UPS: {} ({})", dev.id(), dev.kind());
    let _ = writeln!(
        out,
        "shut down when, on battery, one of these holds on two good polls in a row (never on a poll that failed, nor on a stale or faulty UPS):"
    );
    for c in p.conditions() {
        let _ = writeln!(out, "  - {c}");
    }
    let mut code = exit::OK;
    match source::probe(dev).await {
        Ok(values) => {
            let shown = |k| crate::power::shown(&values, k);
            let _ = writeln!(
                out,
                "now: ups.status = {}, battery.runtime = {}, battery.charge = {}",
                shown("ups.status"),
                shown("battery.runtime"),
                shown("battery.charge")
            );
            let verdict = match UpsReading::of(&values) {
                None => "no ups.status: this reading would never count".to_owned(),
                Some(r) if !r.on_battery => {
                    "on mains: nothing would happen".to_owned()
                }
                Some(r) => match Limits::of(p).check(&r, std::time::Duration::ZERO) {
                    Some(reason) => format!(
                        "ON BATTERY and {}: the Pi would be shut down if the next poll says so too",
                        reason.words()
                    ),
                    None => "on battery: readings would be written to the card before they are sent; no condition holds yet".into(),
                },
            };
            let _ = writeln!(out, "  -> {verdict}");
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "now: the UPS could not be read: {e} (is wardgate running and holding its port? it reads the UPS itself)"
            );
            code = exit::UNAVAILABLE;
        }
    }
    let _ = writeln!(out, "then, in this order:");
    let _ = writeln!(
        out,
        "  1. a critical power.shutdown event (sent if the link is up; kept on the card if not), the page and LED say \"shutting down\""
    );
    let _ = writeln!(
        out,
        "  2. the sources stop, the spool is flushed, the offline status {{\"state\":\"offline\",\"reason\":\"power\"}} is sent"
    );
    if p.ups_off_delay.is_zero() {
        let _ = writeln!(
            out,
            "  3. the UPS is NOT asked to switch off (ups_off_delay = 0s)"
        );
    } else {
        let _ = writeln!(
            out,
            "  3. the UPS would be sent: {}",
            ups_command_words(dev, p.ups_off_delay)
        );
    }
    let _ = writeln!(out, "  4. the spool is closed");
    let _ = writeln!(
        out,
        "  5. the shutdown command runs: {}",
        p.shutdown_command.join(" ")
    );
    let allowed = shutdown_allowed(p, out).await;
    if !allowed && code == exit::OK {
        code = exit::NOPERM;
    }
    let _ = writeln!(
        out,
        "mains back before step 2: all of it is called off (power.restored)."
    );
    code
}

/// The UPS command `[power]` would send, in words.
fn ups_command_words(dev: &crate::config::DeviceConfig, off: std::time::Duration) -> String {
    use crate::config::DeviceConfig;
    let f = humantime::format_duration;
    match dev {
        DeviceConfig::Megatec(m) => {
            let minutes = (m.return_delay.get().as_secs() / 60).max(1) as u32;
            match crate::source::megatec::codec::shutdown_return(off, minutes) {
                Ok(c) => format!(
                    "{} (Megatec: output off in {}, back on {} min after that once the mains return)",
                    String::from_utf8_lossy(&c.bytes).trim_end(),
                    f(c.off_after),
                    c.return_minutes
                ),
                Err(e) => format!("nothing: {e}"),
            }
        }
        DeviceConfig::ApcSmart(_) => {
            let std = crate::source::apc::codec::GRACE_DELAYS;
            let grace = crate::source::apc::codec::choose_grace(off, &std)
                .map(|g| format!("{g} s"))
                .unwrap_or_else(|| "the UPS's own".into());
            format!(
                "APC Smart: grace delay (p) stepped with - to {grace} (the nearest of the standard 20/180/300/600 s not shorter than {}; a model with other values is stepped once round to learn them), then S on battery or @000 on mains: output off after the grace delay, on again when the mains return",
                f(off)
            )
        }
        DeviceConfig::Nut(n) => {
            let login = if n.username.is_some() {
                "as the configured upsd user"
            } else {
                "NOT POSSIBLE: the nut device has no username/password_file of a upsd user with instcmds = shutdown.return and actions = SET"
            };
            format!(
                "to upsd {login}: SET VAR {ups} ups.delay.shutdown \"{s}\" (when it differs), then INSTCMD {ups} shutdown.return, tracked until the driver says it was done",
                ups = n.ups,
                s = off.as_secs().max(1)
            )
        }
        other => format!("nothing: a {} device takes no UPS commands", other.kind()),
    }
}

/// A value in words after its raw form, Vietnamese then English, from the
/// words table the page reads (`crate::status::words`): "  — Nhiệt độ CPU:
/// 48,3 °C / CPU temperature: 48.3 °C"; a value without words, nothing.
fn in_words(name: &str, v: &crate::model::Value, all: &crate::model::Values) -> String {
    use crate::status::words;
    if words::lookup(name).is_none() {
        return String::new();
    }
    match (
        words::show(name, v, all, "vi"),
        words::show(name, v, all, "en"),
    ) {
        (Some((lv, tv)), Some((le, te))) => format!("  — {lv}: {tv} / {le}: {te}"),
        _ => {
            let (lv, le) = words::labels(name);
            format!("  — {lv} / {le}")
        }
    }
}

#[derive(Serialize)]
struct StatsRow {
    sink: String,
    kind: &'static str,
    device: String,
    records: u64,
    oldest_ts: i64,
    first_seq: i64,
    last_seq: i64,
}

#[derive(Serialize)]
struct Stats {
    path: String,
    bytes: u64,
    records: u64,
    dropped: i64,
    clean_stop: bool,
    /// The sequence epoch (from the positions file beside the spool).
    epoch: Option<String>,
    backlog: Vec<StatsRow>,
    /// The catch-up in words, as the page says it (Vietnamese, English),
    /// from two looks at the spool [`CATCHUP_LOOK`] apart; none when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    catchup: Option<[String; 2]>,
}

/// How long `spool stats` watches a non-empty spool drain to measure the
/// rate the backlog is sent at.
const CATCHUP_LOOK: std::time::Duration = std::time::Duration::from_secs(2);

/// The spool's records now, and again after `look`, as the catch-up line.
fn catchup_of(path: &Path, first: u64, look: std::time::Duration) -> Option<[String; 2]> {
    use crate::status::words::Catchup;
    if first == 0 {
        return None;
    }
    let t = std::time::Instant::now();
    // `spool stats` runs on main's own thread, outside the runtime.
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(look);
    let later = Db::open_read_only(path).ok()?.row_count().ok()?;
    let secs = t.elapsed().as_secs_f64();
    let c = Catchup {
        sent: None,
        total: None,
        left: later,
        rate: Some(first.saturating_sub(later) as f64 / secs),
    };
    (later > 0).then(|| [c.line("vi"), c.line("en")])
}

fn kind_word(k: i64) -> &'static str {
    match Kind::from_i64(k) {
        Some(Kind::Sample) => "sample",
        Some(Kind::Event) => "event",
        None => "unknown",
    }
}

/// `wardgate spool stats`: what the spool holds, as JSON, with the
/// catch-up line (also printed on standard error, for the technician)
/// when records are waiting.
pub fn spool_stats(path: &Path, out: &mut impl Write) -> Result<(), String> {
    let stats = stats_of(path)?;
    let text = serde_json::to_string_pretty(&stats).map_err(|e| e.to_string())?;
    writeln!(out, "{text}").map_err(|e| e.to_string())
}

/// What `wardgate spool stats` prints, as a JSON value (also the
/// `spool.stats` command's result).
pub fn spool_stats_json(path: &Path) -> Result<serde_json::Value, String> {
    serde_json::to_value(stats_of(path)?).map_err(|e| e.to_string())
}

fn stats_of(path: &Path) -> Result<Stats, String> {
    if !path.exists() {
        return Err(format!("{}: no spool there", path.display()));
    }
    let db = Db::open_read_only(path).map_err(|e| e.to_string())?;
    let e = |e: rusqlite::Error| format!("{}: {e}", path.display());
    let rows = db.summary().map_err(e)?;
    let positions =
        crate::spool::positions::read(&crate::spool::positions::path_for(path)).unwrap_or(None);
    let records = db.row_count().map_err(e)?;
    let catchup = catchup_of(path, records, CATCHUP_LOOK);
    if let Some([vi, _]) = &catchup {
        eprintln!("{vi}");
    }
    let stats = Stats {
        path: path.display().to_string(),
        bytes: db.used_bytes().map_err(e)?,
        records,
        catchup,
        dropped: db.meta_get("dropped").map_err(e)?.unwrap_or(0),
        clean_stop: positions.as_ref().is_some_and(|p| p.clean),
        epoch: positions.map(|p| p.epoch),
        backlog: rows
            .into_iter()
            .map(|r| StatsRow {
                kind: kind_word(r.kind),
                sink: r.sink,
                device: r.device,
                records: r.records,
                oldest_ts: r.oldest_ts,
                first_seq: r.first_seq,
                last_seq: r.last_seq,
            })
            .collect(),
    };
    Ok(stats)
}

/// `wardgate spool export`: every record as one JSON line
/// `{"sink","kind","device","seq","ts","record":{…}}`, oldest first.
pub fn spool_export(path: &Path, out: &mut impl Write) -> Result<u64, String> {
    if !path.exists() {
        return Err(format!("{}: no spool there", path.display()));
    }
    let db = Db::open_read_only(path).map_err(|e| e.to_string())?;
    db.for_each_record(|sink, kind, device, seq, ts, body| {
        // The body is stored JSON; a damaged one is exported as a string so
        // nothing is silently left out.
        let record: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|_| serde_json::Value::String(body.to_owned()));
        let line = serde_json::json!({
            "sink": sink,
            "kind": kind_word(kind),
            "device": device,
            "seq": seq,
            "ts": ts,
            "record": record,
        });
        writeln!(out, "{line}")
    })
    .map_err(|e| e.to_string())
}
