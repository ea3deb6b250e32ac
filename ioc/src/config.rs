//! `wardgate-ioc`'s configuration: one TOML file (default
//! `/etc/wardgate-ioc/ioc.toml`, `--config`), read with serde
//! (`deny_unknown_fields`: a typo is an error), then checked once by
//! [`RawConfig::validate`] into a [`Config`] whose values are known good.
//! Every message names the key. `config/ioc.example.toml` documents each key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where `run` and `check` look without `--config`.
pub const DEFAULT_PATH: &str = "/etc/wardgate-ioc/ioc.toml";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read: fix the path or its permissions.
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key or a value of the wrong type (serde's
    /// message names the key): fix the file.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A value out of range or keys that do not go together: the message
    /// names the key; fix the file.
    #[error("{key}: {why}")]
    Invalid { key: &'static str, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub mqtt: RawMqtt,
    pub store: RawStore,
    #[serde(default)]
    pub tsdb: Option<RawTsdb>,
    #[serde(default)]
    pub ingest: RawIngest,
    #[serde(default)]
    pub web: RawWeb,
    /// `[report]`: the monthly report (`report/config.rs`).
    #[serde(default)]
    pub report: crate::report::config::RawReport,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub shared_group: Option<String>,
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTsdb {
    pub url: String,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_tsdb_batch")]
    pub batch: usize,
    #[serde(default = "default_tsdb_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    #[serde(default = "default_commit_messages")]
    pub commit_messages: usize,
    #[serde(default = "default_from_zero")]
    pub from_zero: bool,
}

/// `[web]`: the fleet pages and `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    #[serde(default = "default_web_listen")]
    pub listen: String,
}

impl Default for RawWeb {
    fn default() -> Self {
        RawWeb {
            listen: default_web_listen(),
        }
    }
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            commit_interval: default_commit_interval(),
            commit_messages: default_commit_messages(),
            from_zero: default_from_zero(),
        }
    }
}

fn default_prefix() -> String {
    "ioc".into()
}
fn default_client_id() -> String {
    "wardgate-ioc".into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_tsdb_batch() -> usize {
    1000
}
fn default_tsdb_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_commit_interval() -> Duration {
    Duration::from_millis(200)
}
/// 2,000: a backlog commits in batches that big; each commit rewrites the
/// state of every site and stream it touched, so with a thousand sites
/// interleaved a batch of 500 rewrote about one site per message
/// (docs/ioc.md, "Figures": 5,400 messages/s at 500, 9,700 at 2,000).
fn default_commit_messages() -> usize {
    2000
}
fn default_from_zero() -> bool {
    true
}
/// Loopback: the pages and `/metrics` have no login (docs/ioc.md,
/// "Running wardgate-ioc"); another host reaches them only when the
/// operator says so.
fn default_web_listen() -> String {
    "127.0.0.1:8090".into()
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mqtt: MqttConfig,
    pub store_path: PathBuf,
    pub tsdb: Option<TsdbConfig>,
    pub ingest: IngestConfig,
    /// Where the fleet pages and `/metrics` are served (`web.listen`).
    pub web_listen: SocketAddr,
    pub report: crate::report::ReportConfig,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub prefix: String,
    pub client_id: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub tls: Option<TlsFiles>,
    pub shared_group: Option<String>,
    pub keep_alive: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TsdbConfig {
    /// Scheme, host and port, without a trailing slash.
    pub base: String,
    pub host: String,
    pub port: u16,
    /// The write path with its query (`/api/v2/write?…&precision=ms`).
    pub write_path: String,
    pub token_file: Option<PathBuf>,
    pub batch: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub commit_interval: Duration,
    pub commit_messages: usize,
    pub from_zero: bool,
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
        .map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })?
        .validate()
}

/// Parses TOML text (no checks beyond the types).
pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: String::new(),
        message: e.to_string().trim().to_owned(),
    })
}

/// `[a-z0-9][a-z0-9_-]*`-like names of MQTT levels: no wildcard, no `/`.
fn level_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl RawConfig {
    /// Checks every value; the first problem is returned, naming its key.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mqtt = self.mqtt.validate()?;
        if self.store.path.as_os_str().is_empty() || !self.store.path.is_absolute() {
            return Err(invalid(
                "store.path",
                "must be an absolute path (the service runs in /)",
            ));
        }
        let tsdb = self.tsdb.map(RawTsdb::validate).transpose()?;
        let i = self.ingest;
        if i.commit_interval < Duration::from_millis(10)
            || i.commit_interval > Duration::from_secs(10)
        {
            return Err(invalid("ingest.commit_interval", "must be 10ms-10s"));
        }
        if !(1..=10_000).contains(&i.commit_messages) {
            return Err(invalid("ingest.commit_messages", "must be 1-10000"));
        }
        let web_listen: SocketAddr = self.web.listen.parse().map_err(|_| {
            invalid(
                "web.listen",
                format!(
                    "{:?} is not an address and port (127.0.0.1:8090, 0.0.0.0:8090, [::]:8090)",
                    self.web.listen
                ),
            )
        })?;
        if web_listen.port() == 0 {
            return Err(invalid("web.listen", "the port must be 1-65535"));
        }
        let report = self.report.validate().map_err(|e| ConfigError::Invalid {
            key: e.key,
            why: e.why,
        })?;
        Ok(Config {
            mqtt,
            store_path: self.store.path,
            tsdb,
            ingest: IngestConfig {
                commit_interval: i.commit_interval,
                commit_messages: i.commit_messages,
                from_zero: i.from_zero,
            },
            web_listen,
            report,
        })
    }
}

impl RawMqtt {
    fn validate(self) -> Result<MqttConfig, ConfigError> {
        if self.host.trim().is_empty() || self.host.contains(['/', ' ']) {
            return Err(invalid("mqtt.host", "must be a host name or address"));
        }
        if self.port == Some(0) {
            return Err(invalid("mqtt.port", "must be 1-65535"));
        }
        if self.prefix.split('/').any(|l| !level_ok(l)) {
            return Err(invalid(
                "mqtt.prefix",
                "must be topic levels of letters, digits, '-', '_', '.' (no wildcard, no empty level)",
            ));
        }
        if self.client_id.is_empty() || self.client_id.len() > 64 {
            return Err(invalid("mqtt.client_id", "must be 1-64 characters"));
        }
        if let Some(g) = &self.shared_group {
            if !level_ok(g) {
                return Err(invalid(
                    "mqtt.shared_group",
                    "must be one topic level of letters, digits, '-', '_', '.'",
                ));
            }
        }
        if self.password_file.is_some() && self.username.is_none() {
            return Err(invalid("mqtt.password_file", "needs mqtt.username"));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(invalid("mqtt.cert_file", "and mqtt.key_file go together"));
        }
        let any_tls_file =
            self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some();
        if any_tls_file && !self.tls {
            return Err(invalid(
                "mqtt.tls",
                "must be true when mqtt.ca_file, cert_file or key_file is set",
            ));
        }
        if self.keep_alive < Duration::from_secs(5) || self.keep_alive > Duration::from_secs(600) {
            return Err(invalid("mqtt.keep_alive", "must be 5s-10min"));
        }
        let port = self.port.unwrap_or(if self.tls { 8883 } else { 1883 });
        Ok(MqttConfig {
            host: self.host,
            port,
            prefix: self.prefix,
            client_id: self.client_id,
            username: self.username,
            password_file: self.password_file,
            tls: self.tls.then_some(TlsFiles {
                ca_file: self.ca_file,
                cert_file: self.cert_file,
                key_file: self.key_file,
            }),
            shared_group: self.shared_group,
            keep_alive: self.keep_alive,
        })
    }
}

impl RawTsdb {
    fn validate(self) -> Result<TsdbConfig, ConfigError> {
        let rest = self.url.strip_prefix("http://").ok_or_else(|| {
            invalid(
                "tsdb.url",
                "must start with http:// (TLS to the time-series database is not built yet; put it beside wardgate-ioc)",
            )
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid("tsdb.url", format!("bad port {p:?}")))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(invalid("tsdb.url", "has no host"));
        }
        let path = path.trim_end_matches('/');
        // A URL naming the write endpoint is taken as it is; else InfluxDB
        // 2's `/api/v2/write` under the URL's path (VictoriaMetrics accepts
        // it too, and ignores org and bucket).
        let mut write_path = if path.ends_with("/write") {
            path.to_owned()
        } else {
            format!("{path}/api/v2/write")
        };
        let mut q = vec!["precision=ms".to_owned()];
        if let Some(o) = &self.org {
            q.push(format!("org={}", encode_query(o)));
        }
        if let Some(b) = &self.bucket {
            q.push(format!("bucket={}", encode_query(b)));
        }
        if write_path.ends_with("/api/v2/write") && self.bucket.is_none() && self.org.is_some() {
            return Err(invalid("tsdb.bucket", "is needed with tsdb.org"));
        }
        write_path.push('?');
        write_path.push_str(&q.join("&"));
        if !(1..=50_000).contains(&self.batch) {
            return Err(invalid("tsdb.batch", "must be 1-50000"));
        }
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(600) {
            return Err(invalid("tsdb.timeout", "must be 1s-10min"));
        }
        Ok(TsdbConfig {
            base: format!("http://{authority}"),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            write_path,
            token_file: self.token_file,
            batch: self.batch,
            timeout: self.timeout,
        })
    }
}

fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[mqtt]
host = "127.0.0.1"
[store]
path = "/var/lib/wardgate-ioc/ioc.sqlite"
"#;

    #[test]
    fn defaults_and_example() {
        let c = parse(OK).unwrap().validate().unwrap();
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.mqtt.prefix, "ioc");
        assert!(c.tsdb.is_none());
        assert_eq!(c.web_listen.to_string(), "127.0.0.1:8090");
        let example = include_str!("../../config/ioc.example.toml");
        let c = parse(example).unwrap().validate().unwrap();
        let t = c.tsdb.unwrap();
        assert_eq!(t.port, 8428);
        assert!(t.write_path.starts_with("/api/v2/write?precision=ms"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[mqtt]\nhost=\"h\"\nhots=1\n[store]\npath=\"/x\"", "hots"),
            ("[mqtt]\nhost=\"h\"\n[store]\npath=\"rel\"", "store.path"),
            (
                "[mqtt]\nhost=\"h\"\nprefix=\"a/+\"\n[store]\npath=\"/x\"",
                "mqtt.prefix",
            ),
            (
                "[mqtt]\nhost=\"h\"\nshared_group=\"a/b\"\n[store]\npath=\"/x\"",
                "mqtt.shared_group",
            ),
            (
                "[mqtt]\nhost=\"h\"\nca_file=\"/ca\"\n[store]\npath=\"/x\"",
                "mqtt.tls",
            ),
            (
                "[mqtt]\nhost=\"h\"\n[store]\npath=\"/x\"\n[tsdb]\nurl=\"ftp://x\"",
                "tsdb.url",
            ),
            (
                "[mqtt]\nhost=\"h\"\n[store]\npath=\"/x\"\n[tsdb]\nurl=\"http://x:0\"",
                "tsdb.url",
            ),
            (
                "[mqtt]\nhost=\"h\"\n[store]\npath=\"/x\"\n[ingest]\ncommit_messages=0",
                "ingest.commit_messages",
            ),
            (
                "[mqtt]\nhost=\"h\"\n[store]\npath=\"/x\"\n[web]\nlisten=\"localhost:80\"",
                "web.listen",
            ),
            (
                "[mqtt]\nhost=\"h\"\n[store]\npath=\"/x\"\n[web]\nlisten=\"0.0.0.0:0\"",
                "web.listen",
            ),
            (
                "[mqtt]\nhost=\"h\"\n[store]\npath=\"/x\"\n[web]\nlissten=\"0.0.0.0:1\"",
                "lissten",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text)
                .and_then(RawConfig::validate)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn tsdb_urls() {
        let t = |url: &str| {
            RawTsdb {
                url: url.into(),
                org: Some("o rg".into()),
                bucket: Some("b".into()),
                token_file: None,
                batch: 10,
                timeout: Duration::from_secs(5),
            }
            .validate()
            .unwrap()
        };
        let a = t("http://vm:8428/");
        assert_eq!(
            a.write_path,
            "/api/v2/write?precision=ms&org=o%20rg&bucket=b"
        );
        assert_eq!((a.host.as_str(), a.port), ("vm", 8428));
        assert_eq!(
            t("http://vm/write").write_path,
            "/write?precision=ms&org=o%20rg&bucket=b"
        );
        assert_eq!(
            t("http://vm/influx").write_path,
            "/influx/api/v2/write?precision=ms&org=o%20rg&bucket=b"
        );
    }
}
