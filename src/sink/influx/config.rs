//! The `[influxdb]` section: where the InfluxDB 2 sink writes, and the
//! checks that span its keys. The sink is on when `influxdb.url` is set.

use std::time::Duration;

use serde::Deserialize;

use crate::sink::config::is_loopback;
use crate::types::{defaults_of, AbsPath, Bounded, Within};

/// One request (connect, TLS, write, answer): 1 s to 10 min.
pub(crate) type WriteTimeout = Within<1_000, 600_000>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// InfluxDB 2 (or compatible) base URL, `https://host:8086`; `None`:
    /// the sink is off.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub org: String,
    #[serde(default)]
    pub bucket: String,
    /// The API token, read from this file at each connection (like
    /// `mqtt.password_file`). `None`: no `Authorization` header.
    #[serde(default)]
    pub token_file: Option<AbsPath>,
    /// CA certificates (PEM) for the server; default: the system's.
    #[serde(default)]
    pub ca_file: Option<AbsPath>,
    #[serde(default = "default_timeout")]
    pub timeout: WriteTimeout,
    /// Points per request, 1-10000 (halved while the server answers 413).
    #[serde(default = "default_max_batch")]
    pub max_batch: Bounded<1, 10_000>,
    /// Compress request bodies (`Content-Encoding: gzip`).
    #[serde(default = "default_true")]
    pub gzip: bool,
}

/// What the InfluxDB sink is built from: its own section, the site, and
/// each device's kind (a tag of its points), never the whole config.
#[derive(Debug, Clone)]
pub struct InfluxSetup {
    pub site: String,
    pub influxdb: InfluxConfig,
    /// Device id -> kind (`ups`, `modbus`, ...), the gateway's own included.
    pub device_kinds: std::collections::HashMap<String, String>,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        defaults_of("influxdb")
    }
}

fn default_timeout() -> WriteTimeout {
    WriteTimeout::of(Duration::from_secs(10))
}
fn default_max_batch() -> Bounded<1, 10_000> {
    Bounded::of(1000)
}
fn default_true() -> bool {
    true
}

/// A parsed `influxdb.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The URL's path without a trailing `/` (`""` or `/influx`), put in
    /// front of `/api/v2/write` and `/health`.
    pub base: String,
}

impl Endpoint {
    /// `host:port` as the `Host` header and logs want it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `http(s)://host[:port][/path]`; the words say what is wrong.
/// (`influxdb2`'s `Client::new` panics on a bad URL: this never does.)
pub(crate) fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("{url:?} must start with https:// or http://"));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) || hostport.contains('@') {
        return Err(format!(
            "{url:?}: give the base URL only (no user, query or fragment)"
        ));
    }
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let Some((h, after)) = r.split_once(']') else {
            return Err(format!("{url:?}: unclosed [ in the host"));
        };
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("{url:?}: bad port")),
        };
        (h.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
    {
        return Err(format!("{url:?}: {host:?} is not a host name"));
    }
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{url:?}: {p:?} is not a port (1-65535)")),
        },
    };
    Ok(Endpoint {
        tls,
        host,
        port,
        base: path.trim_end_matches('/').to_owned(),
    })
}

impl InfluxConfig {
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// The parsed URL, when the sink is on and the URL is good.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.url.as_deref().and_then(|u| parse_url(u).ok())
    }

    /// Problems the types cannot see, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let Some(url) = &self.url else {
            return p;
        };
        match parse_url(url) {
            Err(why) => p.push(format!("influxdb.url: {why}")),
            Ok(ep) => {
                if !ep.tls && !is_loopback(&ep.host) {
                    p.push(format!(
                        "influxdb.url: {url:?} is plain http to {}, which is not on loopback; the token would cross the network in clear: use https://",
                        ep.host
                    ));
                }
                if !ep.tls && self.ca_file.is_some() {
                    p.push(
                        "influxdb.ca_file: set, but influxdb.url is http://, so it would not be used"
                            .into(),
                    );
                }
            }
        }
        if self.org.trim().is_empty() {
            p.push("influxdb.org: needed when influxdb.url is set".into());
        }
        if self.bucket.trim().is_empty() {
            p.push("influxdb.bucket: needed when influxdb.url is set".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ep = parse_url("https://ioc-tsdb.example:8086").unwrap();
        assert_eq!(
            ep,
            Endpoint {
                tls: true,
                host: "ioc-tsdb.example".into(),
                port: 8086,
                base: "".into()
            }
        );
        assert_eq!(
            parse_url("http://127.0.0.1/influx/").unwrap().base,
            "/influx"
        );
        assert_eq!(parse_url("http://127.0.0.1/").unwrap().port, 80);
        assert_eq!(parse_url("https://h").unwrap().port, 443);
        let v6 = parse_url("http://[::1]:8428").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8428));
        assert_eq!(v6.authority(), "[::1]:8428");
        for bad in [
            "",
            "ioc:8086",
            "ftp://x",
            "https://",
            "https://h:0",
            "https://h:99999",
            "https://h:x",
            "https://u@h",
            "https://h/?q",
            "https://h h",
            "https://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    fn cfg(toml: &str) -> InfluxConfig {
        crate::config::Config::from_toml(&format!("site = \"s\"\n[influxdb]\n{toml}"))
            .map(|c| c.influxdb)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(toml: &str) -> String {
        match crate::config::Config::from_toml(&format!("site = \"s\"\n[influxdb]\n{toml}")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_rules() {
        let c = cfg("");
        assert!(!c.enabled());
        assert_eq!(c.max_batch.get(), 1000);
        assert_eq!(c.timeout.get(), Duration::from_secs(10));
        assert!(c.gzip);
        let c = cfg("url = \"http://localhost:8428\"\norg = \"o\"\nbucket = \"b\"\ntimeout = \"3s\"\nmax_batch = 10\ngzip = false");
        assert!(c.enabled());
        assert_eq!(c.timeout.get(), Duration::from_secs(3));
        assert!(!c.gzip);
        let p = problems("url = \"http://tsdb.example:8086\"\norg = \"o\"\nbucket = \"b\"");
        assert!(p.contains("influxdb.url") && p.contains("https"), "{p}");
        let p = problems("url = \"https://tsdb.example:8086\"");
        assert!(
            p.contains("influxdb.org") && p.contains("influxdb.bucket"),
            "{p}"
        );
        let p = problems("url = \"tsdb:8086\"\norg = \"o\"\nbucket = \"b\"");
        assert!(p.contains("influxdb.url"), "{p}");
        let p = problems("url = \"https://t\"\norg = \"o\"\nbucket = \"b\"\nmax_batch = 0");
        assert!(p.contains("influxdb.max_batch"), "{p}");
        let p = problems("url = \"https://t\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"rel\"");
        assert!(p.contains("influxdb.token_file"), "{p}");
        let p = problems("nope = 1");
        assert!(p.contains("nope"), "{p}");
    }

    /// The commented `[influxdb]` block of the example config, and the
    /// example in docs/influxdb.md, load once uncommented.
    #[test]
    fn documented_examples_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("config/wardgate.example.toml")).unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| *l != "#[influxdb]")
            .take_while(|l| !l.starts_with("[spool]"))
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| !l.starts_with(' '))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(block.contains("url = "), "{block}");
        let c = crate::config::Config::from_toml(&format!("site = \"s\"\n{block}"))
            .unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert!(c.influxdb.enabled());
        let doc = std::fs::read_to_string(root.join("docs/influxdb.md")).unwrap();
        let body = doc
            .split("```toml")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let c = crate::config::Config::from_toml(&format!("site = \"s\"\n{body}"))
            .unwrap_or_else(|e| panic!("{e}\n{body}"));
        assert_eq!(c.influxdb.bucket, "wards");
    }
}
