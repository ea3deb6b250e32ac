//! The Pi's own health (`type = "system"`): CPU temperature, under-voltage
//! and throttling flags from the firmware, load, memory, free space on the
//! spool's filesystem, uptime. Paths are configurable for tests.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::supervisor::{self, Device, Fail, Policy};
use super::system_config::SystemConfig;
use super::DeviceHandle;
use crate::model::Values;

/// The firmware's `get_throttled` bits.
pub const UNDER_VOLTAGE_NOW: u32 = 1 << 0;
pub const FREQ_CAPPED_NOW: u32 = 1 << 1;
pub const THROTTLED_NOW: u32 = 1 << 2;
pub const SOFT_TEMP_LIMIT_NOW: u32 = 1 << 3;
pub const UNDER_VOLTAGE_SINCE_BOOT: u32 = 1 << 16;
pub const THROTTLED_SINCE_BOOT: u32 = 1 << 18;

/// Parses `get_throttled` ("0x50005", "50005" or "throttled=0x50005").
pub fn parse_throttled(s: &str) -> Option<u32> {
    let s = s.trim();
    let s = s.strip_prefix("throttled=").unwrap_or(s);
    let s = s.strip_prefix("0x").unwrap_or(s);
    u32::from_str_radix(s, 16).ok()
}

fn read(p: &Path) -> Option<String> {
    crate::host::file::read_kernel_text(p).ok()
}

/// The texts of the files this source reads (None: missing or unreadable).
#[derive(Debug, Default, Clone)]
pub struct Files {
    /// `/sys/class/thermal/thermal_zone0/temp` (millidegrees).
    pub thermal: Option<String>,
    /// The firmware's `get_throttled`.
    pub throttled: Option<String>,
    /// `/proc/loadavg`.
    pub loadavg: Option<String>,
    /// `/proc/meminfo`.
    pub meminfo: Option<String>,
    /// `/proc/uptime`.
    pub uptime: Option<String>,
}

/// One reading of everything available; what is missing is left out.
pub fn read_all(cfg: &SystemConfig, spool_dir: &Path) -> Values {
    let proc_ = &cfg.proc_root;
    let mut v = to_values(&Files {
        thermal: read(&cfg.thermal_path),
        throttled: read(&cfg.throttled_path),
        loadavg: read(&proc_.join("loadavg")),
        meminfo: read(&proc_.join("meminfo")),
        uptime: read(&proc_.join("uptime")),
    });
    if let Some((free, total)) = disk_space(spool_dir) {
        v.num("disk.free", free as f64);
        v.num("disk.total", total as f64);
    }
    v
}

/// Maps the files' texts to values; what is missing or unreadable is left
/// out. Pure, so it is fuzzed (`fuzz/fuzz_targets/system.rs`).
pub fn to_values(f: &Files) -> Values {
    let mut v = Values::new();
    if let Some(t) = f
        .thermal
        .as_deref()
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        v.num("cpu.temperature", t / 1000.0);
    }
    if let Some(bits) = f.throttled.as_deref().and_then(parse_throttled) {
        v.num("pi.throttled", bits as f64);
        v.set("pi.under_voltage", bits & UNDER_VOLTAGE_NOW != 0);
        v.set(
            "pi.under_voltage_since_boot",
            bits & UNDER_VOLTAGE_SINCE_BOOT != 0,
        );
        v.set(
            "pi.throttled_now",
            bits & (THROTTLED_NOW | FREQ_CAPPED_NOW | SOFT_TEMP_LIMIT_NOW) != 0,
        );
        v.set("pi.throttled_since_boot", bits & THROTTLED_SINCE_BOOT != 0);
    }
    if let Some(l) = &f.loadavg {
        let f: Vec<f64> = l
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() == 3 {
            v.num("system.load1", f[0]);
            v.num("system.load5", f[1]);
            v.num("system.load15", f[2]);
        }
    }
    if let Some(m) = &f.meminfo {
        let kb = |key: &str| {
            m.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|x| x.parse::<f64>().ok())
        };
        if let (Some(total), Some(avail)) = (kb("MemTotal:"), kb("MemAvailable:")) {
            v.num("memory.total", total * 1024.0);
            v.num("memory.available", avail * 1024.0);
            if total > 0.0 {
                v.num(
                    "memory.used_percent",
                    ((1.0 - avail / total) * 1000.0).round() / 10.0,
                );
            }
        }
    }
    if let Some(u) = f.uptime.as_deref().and_then(|s| {
        s.split_whitespace()
            .next()
            .and_then(|x| x.parse::<f64>().ok())
    }) {
        v.num("system.uptime", u.round());
    }
    v
}

/// Free and total bytes of the filesystem holding `dir` (statvfs).
fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct for a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let bs = st.f_frsize as u64;
    Some((st.f_bavail as u64 * bs, st.f_blocks as u64 * bs))
}

/// What the supervisor keeps of the Pi: where the spool lives (its free
/// space is reported) and whether it was under-voltage at the last reading.
struct Pi {
    cfg: SystemConfig,
    spool_dir: std::path::PathBuf,
    under_voltage: Option<bool>,
}

impl Device for Pi {
    type Conn = ();

    async fn open(&mut self, _h: &DeviceHandle) -> Result<(), Fail> {
        Ok(())
    }

    async fn poll(&mut self, _: &mut (), h: &DeviceHandle) -> Result<(), Fail> {
        let (c, d) = (self.cfg.clone(), self.spool_dir.clone());
        let Ok(v) = tokio::task::spawn_blocking(move || read_all(&c, &d)).await else {
            return Ok(());
        };
        if let Some(crate::model::Value::Bool(uv)) = v.get("pi.under_voltage") {
            let was = self.under_voltage;
            if was != Some(*uv) && (*uv || was.is_some()) {
                let ev = if *uv {
                    crate::events::PI_UNDER_VOLTAGE
                } else {
                    crate::events::PI_VOLTAGE_OK
                };
                h.report(ev, &[], Values::new());
            }
            self.under_voltage = Some(*uv);
        }
        h.sample(v);
        Ok(())
    }
}

pub async fn run(
    cfg: SystemConfig,
    spool_dir: std::path::PathBuf,
    h: DeviceHandle,
    cancel: CancellationToken,
) {
    let policy = Policy {
        missed: tokio::time::MissedTickBehavior::Burst,
        ..Policy::new(cfg.interval)
    };
    let pi = Pi {
        cfg,
        spool_dir,
        under_voltage: None,
    };
    supervisor::run(pi, policy, h, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_formats() {
        assert_eq!(parse_throttled("0x50005\n"), Some(0x50005));
        assert_eq!(parse_throttled("throttled=0x0"), Some(0));
        assert_eq!(parse_throttled("50000"), Some(0x50000));
        assert_eq!(parse_throttled("nope"), None);
    }

    #[test]
    fn reads_fixture_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("temp"), "48312\n").unwrap();
        std::fs::write(p.join("throttled"), "0x50005\n").unwrap();
        std::fs::create_dir_all(p.join("proc")).unwrap();
        std::fs::write(p.join("proc/loadavg"), "0.52 0.40 0.31 1/123 4567\n").unwrap();
        std::fs::write(
            p.join("proc/meminfo"),
            "MemTotal:        1000000 kB\nMemFree:  1 kB\nMemAvailable:     250000 kB\n",
        )
        .unwrap();
        std::fs::write(p.join("proc/uptime"), "3600.42 7000.00\n").unwrap();
        let cfg = SystemConfig {
            id: "pi".into(),
            interval: std::time::Duration::from_secs(60),
            thermal_path: p.join("temp"),
            throttled_path: p.join("throttled"),
            proc_root: p.join("proc"),
            threshold: vec![],
        };
        let v = read_all(&cfg, p);
        let n = |k: &str| v.get(k).and_then(|x| x.as_f64());
        assert_eq!(n("cpu.temperature"), Some(48.312));
        assert_eq!(v.get("pi.under_voltage"), Some(&true.into()));
        assert_eq!(v.get("pi.under_voltage_since_boot"), Some(&true.into()));
        assert_eq!(v.get("pi.throttled_now"), Some(&true.into()));
        assert_eq!(n("system.load1"), Some(0.52));
        assert_eq!(n("memory.used_percent"), Some(75.0));
        assert_eq!(n("system.uptime"), Some(3600.0));
        assert!(n("disk.free").unwrap() > 0.0);
        // Missing files: left out, not an error.
        let cfg2 = SystemConfig {
            thermal_path: p.join("nope"),
            throttled_path: p.join("nope"),
            ..cfg
        };
        let v = read_all(&cfg2, p);
        assert!(v.get("cpu.temperature").is_none() && v.get("pi.throttled").is_none());
    }
}
