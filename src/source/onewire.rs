//! DS18B20 temperature probes on the Pi's 1-Wire bus (`type = "onewire"`),
//! read from the kernel's w1 driver (`dtoverlay=w1-gpio`):
//! `/sys/bus/w1/devices/28-*/w1_slave`.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::onewire_config::OneWireConfig;
use super::supervisor::{self, Action, Device, Fail, Policy};
use super::DeviceHandle;
use crate::model::Values;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum W1Error {
    /// The probe's CRC check failed (`NO`): a bad read, counted, not published.
    #[error("CRC check failed")]
    Crc,
    /// 85.000 °C is the DS18B20's power-on value, not a reading.
    #[error("power-on value (85 °C), not a reading")]
    PowerOn,
    /// Not the kernel's w1_slave format.
    #[error("malformed w1_slave: {0}")]
    Malformed(String),
}

/// Most probes read per poll: a 1-Wire bus on a Pi carries a handful, the
/// kernel driver at most 64 by default (`w1 max_slave_count`).
pub(crate) const MAX_PROBES: usize = 64;

/// Reads a probe's file: a regular file of at most [`MAX_FILE_BYTES`].
fn read_capped(path: &Path) -> Result<String, crate::host::file::FileError> {
    crate::host::file::read_kernel_text(path)
}

/// Parses a `w1_slave` file:
/// `72 01 4b 46 7f ff 0e 10 57 : crc=57 YES` / `72 01 4b 46 7f ff 0e 10 57 t=23125`.
pub fn parse_w1_slave(text: &str) -> Result<f64, W1Error> {
    let mut lines = text.lines();
    let crc = lines
        .next()
        .ok_or_else(|| W1Error::Malformed("empty".into()))?;
    if !crc.contains("crc=") {
        return Err(W1Error::Malformed(crc.chars().take(80).collect()));
    }
    match crc.split_whitespace().last() {
        Some("YES") => {}
        Some("NO") => return Err(W1Error::Crc),
        _ => return Err(W1Error::Malformed(crc.chars().take(80).collect())),
    }
    let data = lines
        .next()
        .ok_or_else(|| W1Error::Malformed("no temperature line".into()))?;
    let t = data
        .split_whitespace()
        .find_map(|w| w.strip_prefix("t="))
        .ok_or_else(|| W1Error::Malformed(data.chars().take(80).collect()))?;
    let milli: i64 = t
        .parse()
        .map_err(|_| W1Error::Malformed(format!("t={t}")))?;
    if milli == 85_000 {
        return Err(W1Error::PowerOn);
    }
    Ok(milli as f64 / 1000.0)
}

/// The probes present under `root` (directories named `28-*`), sorted.
pub(crate) fn probes(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("28-")
                .then(|| (name, e.path().join("w1_slave")))
        })
        .collect();
    out.sort();
    if out.len() > MAX_PROBES {
        // Said once per run, not every poll.
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
            found = out.len(),
            root = %root.display(),
            "more than {MAX_PROBES} 1-Wire probes; the first {MAX_PROBES} are read"
            );
        }
        out.truncate(MAX_PROBES);
    }
    Ok(out)
}

/// The value name for a probe: from `names`, else `ambient.temperature`
/// for a single probe, else `temperature.<probe id>`.
fn value_name(cfg: &OneWireConfig, id: &str, count: usize) -> String {
    if let Some(n) = cfg.names.get(id) {
        return n.clone();
    }
    if count == 1 {
        "ambient.temperature".into()
    } else {
        format!("temperature.{id}")
    }
}

/// One reading of every probe: values, and the bad reads by kind.
pub(crate) fn read_all(cfg: &OneWireConfig) -> Result<(Values, Vec<(String, W1Error)>), String> {
    let list = probes(&cfg.root).map_err(|e| format!("{}: {e}", cfg.root.display()))?;
    if list.is_empty() {
        return Err(format!(
            "no DS18B20 probe under {} (is dtoverlay=w1-gpio in config.txt?)",
            cfg.root.display()
        ));
    }
    let mut v = Values::new();
    let mut bad = Vec::new();
    for (id, path) in &list {
        match read_capped(path)
            .map_err(|e| W1Error::Malformed(e.to_string()))
            .and_then(|t| parse_w1_slave(&t))
        {
            Ok(c) => {
                v.num(&value_name(cfg, id, list.len()), c);
            }
            Err(e) => bad.push((id.clone(), e)),
        }
    }
    Ok((v, bad))
}

/// The supervisor's view of the 1-Wire bus: its sysfs files, read each
/// interval.
struct Bus {
    cfg: OneWireConfig,
}

impl Device for Bus {
    type Conn = ();

    async fn open(&mut self, _h: &DeviceHandle) -> Result<(), Fail> {
        Ok(())
    }

    async fn poll(&mut self, _: &mut (), h: &DeviceHandle) -> Result<(), Fail> {
        let c = self.cfg.clone();
        match tokio::task::spawn_blocking(move || read_all(&c)).await {
            Ok(Ok((values, bad))) => {
                for (id, e) in &bad {
                    h.count_error(match e {
                        W1Error::Crc => "crc",
                        W1Error::PowerOn => "power_on",
                        W1Error::Malformed(_) => "malformed",
                    });
                    tracing::debug!(device = h.id(), probe = %id, error = %e, "bad 1-Wire read");
                }
                if !values.is_empty() {
                    h.sample(values);
                }
                Ok(())
            }
            Ok(Err(reason)) => Err(Fail::new(Action::Fault, None, reason)),
            Err(e) => {
                tracing::error!(error = %e, "1-Wire read task failed");
                Ok(())
            }
        }
    }
}

pub(crate) async fn run(cfg: OneWireConfig, h: DeviceHandle, cancel: CancellationToken) {
    let policy = Policy {
        missed: tokio::time::MissedTickBehavior::Burst,
        ..Policy::new(cfg.interval)
    };
    supervisor::run(Bus { cfg }, policy, h, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str =
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";

    #[test]
    fn w1_slave_table() {
        let cases: &[(&str, Result<f64, W1Error>)] = &[
            (OK, Ok(23.125)),
            (
                "5e ff 4b 46 7f ff 02 10 2c : crc=2c YES\n5e ff 4b 46 7f ff 02 10 2c t=-10125\n",
                Ok(-10.125),
            ),
            (
                "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
                Err(W1Error::PowerOn),
            ),
            (
                "72 01 4b 46 7f ff 0e 10 57 : crc=ff NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
                Err(W1Error::Crc),
            ),
            ("", Err(W1Error::Malformed("empty".into()))),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_w1_slave(text), want, "{text:?}");
        }
        assert!(matches!(
            parse_w1_slave("garbage\n"),
            Err(W1Error::Malformed(_))
        ));
        assert!(matches!(
            parse_w1_slave("72 : crc=57 YES\n72 t=abc\n"),
            Err(W1Error::Malformed(_))
        ));
        assert!(matches!(
            parse_w1_slave("72 : crc=57 YES\n"),
            Err(W1Error::Malformed(_))
        ));
    }

    fn fixture(dir: &Path, id: &str, text: &str) {
        std::fs::create_dir_all(dir.join(id)).unwrap();
        std::fs::write(dir.join(id).join("w1_slave"), text).unwrap();
    }

    #[test]
    fn reads_probes_and_sets_bad_reads_aside() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), "28-000000000001", OK);
        fixture(
            dir.path(),
            "28-000000000002",
            "50 05 : crc=1c YES\n50 05 t=85000\n",
        );
        fixture(dir.path(), "28-000000000003", "72 : crc=ff NO\n72 t=1\n");
        std::fs::create_dir_all(dir.path().join("w1_bus_master1")).unwrap();
        let cfg: OneWireConfig = crate::config::Config::from_toml(&format!(
            "site = \"s\"\n[[device]]\nid = \"t\"\ntype = \"onewire\"\nroot = \"{}\"\n[device.names]\n\"28-000000000001\" = \"rack.temperature\"\n",
            dir.path().display()
        ))
        .map(|c| match c.devices[0].clone() {
            crate::config::DeviceConfig::OneWire(o) => o,
            _ => unreachable!(),
        })
        .unwrap();
        let (v, bad) = read_all(&cfg).unwrap();
        assert_eq!(
            v.get("rack.temperature").and_then(|x| x.as_f64()),
            Some(23.125)
        );
        assert_eq!(v.len(), 1, "bad reads are not published");
        assert_eq!(bad.len(), 2);
        let empty = tempfile::tempdir().unwrap();
        let mut c2 = cfg.clone();
        c2.root = empty.path().to_path_buf();
        assert!(read_all(&c2).unwrap_err().contains("w1-gpio"));
    }

    #[test]
    fn big_files_and_many_probes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        // A good reading followed by a megabyte: not a probe's file, refused
        // without reading it all.
        let big = format!("{OK}{}", "x".repeat(1 << 20));
        fixture(dir.path(), "28-000000000001", &big);
        let err = read_capped(&dir.path().join("28-000000000001/w1_slave")).unwrap_err();
        assert!(err.to_string().contains("larger than 4096 bytes"), "{err}");
        for i in 2..=MAX_PROBES + 5 {
            fixture(dir.path(), &format!("28-{i:012}"), OK);
        }
        assert_eq!(probes(dir.path()).unwrap().len(), MAX_PROBES);
    }
}
