//! Validated config values that parse once, at deserialisation (the shape
//! of thin-edge's `Port: TryFrom`): a value of one of these types is in
//! range, so the code that uses it never clamps or checks it again.
//!
//! Each type's error text is the second half of a problem line; the loader
//! puts the key in front (`mqtt.port: 70000 is not a port (1-65535)`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A TCP or UDP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "i64")]
pub struct Port(u16);

impl Port {
    /// A port known at compile time (a default); 0 does not compile.
    pub const fn of(port: u16) -> Port {
        assert!(port > 0, "port 0 is not a port");
        Port(port)
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<i64> for Port {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u16::try_from(v) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(format!("{v} is not a port (1-65535)")),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A Raspberry Pi GPIO pin by its BCM number, 0-27 (the 40-pin header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "i64")]
pub struct BcmPin(u8);

impl BcmPin {
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for BcmPin {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u8::try_from(v) {
            Ok(p) if p <= 27 => Ok(BcmPin(p)),
            _ => Err(format!("{v} is not a BCM GPIO number (0-27)")),
        }
    }
}

impl fmt::Display for BcmPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The serial line speeds a UART and the devices we read agree on.
pub(crate) const BAUD_RATES: &[u32] = &[
    300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200,
];

/// A standard serial line speed (one of [`BAUD_RATES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "i64")]
pub struct Baud(u32);

impl Baud {
    /// A rate known at compile time (a default); a non-standard one does not compile.
    pub const fn of(rate: u32) -> Baud {
        let mut i = 0;
        while i < BAUD_RATES.len() {
            if BAUD_RATES[i] == rate {
                return Baud(rate);
            }
            i += 1;
        }
        panic!("not a standard baud rate");
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Baud {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u32::try_from(v) {
            Ok(b) if BAUD_RATES.contains(&b) => Ok(Baud(b)),
            _ => Err(format!(
                "{v} is not a standard rate ({})",
                BAUD_RATES
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// A whole number within `MIN..=MAX` (a batch size, a window, a count).
/// `MAX = u64::MAX` means no upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "i64")]
pub struct Bounded<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    /// A value known at compile time (a default); out of range does not compile.
    pub const fn of(v: u64) -> Self {
        assert!(MIN <= v && v <= MAX, "default out of its own bounds");
        Bounded(v)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// As a length or capacity (saturating on a 32-bit target, where no
    /// bound used here comes near `usize::MAX`).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<const MIN: u64, const MAX: u64> TryFrom<i64> for Bounded<MIN, MAX> {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u64::try_from(v) {
            Ok(n) if (MIN..=MAX).contains(&n) => Ok(Bounded(n)),
            _ if MAX == u64::MAX && MIN == 0 => Err(format!("{v} must not be negative")),
            _ if MAX == u64::MAX => Err(format!("{v} must be at least {MIN}")),
            _ => Err(format!("{v} must be between {MIN} and {MAX}")),
        }
    }
}

impl<const MIN: u64, const MAX: u64> fmt::Display for Bounded<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A rate in messages per second within `MIN..=MAX`: finite, so `1 / rate`
/// is a duration the timers can hold (`1e-300` would be 10^300 s).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct MessageRate<const MIN: u64, const MAX: u64>(f64);

impl<const MIN: u64, const MAX: u64> MessageRate<MIN, MAX> {
    pub fn get(self) -> f64 {
        self.0
    }

    /// The time between two messages at this rate.
    pub fn gap(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.0)
    }
}

impl<const MIN: u64, const MAX: u64> TryFrom<f64> for MessageRate<MIN, MAX> {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        // NaN fails both comparisons; the infinities fail one.
        if v >= MIN as f64 && v <= MAX as f64 {
            Ok(MessageRate(v))
        } else {
            // Debug prints 1e-300 as such, not as 300 zeros.
            Err(format!(
                "{v:?} must be between {MIN} and {MAX} messages per second"
            ))
        }
    }
}

impl<const MIN: u64, const MAX: u64> fmt::Display for MessageRate<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One day in milliseconds: the longest device interval, telemetry
/// interval or threshold duration. Timers and staleness deadlines are
/// built by adding these to the clock; a longer period has no use on a
/// ward and a huge one overflows the clock (a panic, not a config error).
pub(crate) const DAY_MS: u64 = 86_400_000;

/// A duration within `MIN_MS..=MAX_MS` milliseconds, written as humantime
/// (`"2s"`, `"500ms"`, `"1h"`). `MAX_MS = u64::MAX` means no upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "HumanDuration")]
pub struct Within<const MIN_MS: u64, const MAX_MS: u64>(Duration);

/// A humantime duration as written in the file, before its bounds are checked.
#[derive(Deserialize)]
struct HumanDuration(#[serde(with = "humantime_serde")] Duration);

impl<const MIN_MS: u64, const MAX_MS: u64> Within<MIN_MS, MAX_MS> {
    /// A duration known at compile time (a default); out of range does not compile.
    pub const fn of(d: Duration) -> Self {
        let ms = d.as_millis();
        assert!(
            MIN_MS as u128 <= ms && ms <= MAX_MS as u128,
            "default out of its own bounds"
        );
        Within(d)
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

/// Why `d` is not within `min..=max` (`max = None`: no upper bound), as the
/// second half of a problem line; also used for durations with bounds that
/// depend on other keys.
pub(crate) fn duration_problem(
    d: Duration,
    min: Duration,
    max: Option<Duration>,
) -> Option<String> {
    let f = humantime::format_duration;
    match max {
        Some(max) if d < min || d > max => Some(format!(
            "{} must be between {} and {}",
            f(d),
            f(min),
            f(max)
        )),
        None if d < min => Some(format!("{} is too short (at least {})", f(d), f(min))),
        _ => None,
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> TryFrom<Duration> for Within<MIN_MS, MAX_MS> {
    type Error = String;
    fn try_from(d: Duration) -> Result<Self, String> {
        let max = (MAX_MS != u64::MAX).then(|| Duration::from_millis(MAX_MS));
        match duration_problem(d, Duration::from_millis(MIN_MS), max) {
            None => Ok(Within(d)),
            Some(why) => Err(why),
        }
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> TryFrom<HumanDuration> for Within<MIN_MS, MAX_MS> {
    type Error = String;
    fn try_from(d: HumanDuration) -> Result<Self, String> {
        Self::try_from(d.0)
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> fmt::Display for Within<MIN_MS, MAX_MS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// An absolute path: the service runs from `/`, so a relative path in the
/// config would name a file nobody meant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "PathBuf")]
pub struct AbsPath(PathBuf);

impl TryFrom<PathBuf> for AbsPath {
    type Error = String;
    fn try_from(p: PathBuf) -> Result<Self, String> {
        if p.is_absolute() {
            Ok(AbsPath(p))
        } else {
            Err(format!(
                "{:?} must be an absolute path (the service runs from /)",
                p.display()
            ))
        }
    }
}

/// The absolute path of a serial port (`/dev/serial/by-id/...`, which stays
/// the same when adapters are plugged in another order).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "PathBuf")]
pub struct SerialPath(PathBuf);

impl TryFrom<PathBuf> for SerialPath {
    type Error = String;
    fn try_from(p: PathBuf) -> Result<Self, String> {
        if p.is_absolute() {
            Ok(SerialPath(p))
        } else {
            Err(format!(
                "{:?} must be an absolute path such as /dev/serial/by-id/...",
                p.display()
            ))
        }
    }
}

macro_rules! path_type {
    ($t:ident) => {
        impl $t {
            /// A path known to be absolute (a default, or a test's temp dir).
            /// Panics on a relative path: a bug in the caller, not in a config.
            pub fn known(p: impl Into<PathBuf>) -> $t {
                let p = p.into();
                assert!(p.is_absolute(), "{} is not absolute", p.display());
                $t(p)
            }
        }
        impl std::ops::Deref for $t {
            type Target = Path;
            fn deref(&self) -> &Path {
                &self.0
            }
        }
        impl AsRef<Path> for $t {
            fn as_ref(&self) -> &Path {
                &self.0
            }
        }
    };
}
path_type!(AbsPath);
path_type!(SerialPath);

/// The default polling interval of most device kinds.
pub(crate) fn default_interval() -> Duration {
    Duration::from_secs(5)
}

/// A section's defaults, from an empty table through serde: the
/// `#[serde(default = ...)]` attributes stay the one place defaults live.
pub(crate) fn defaults_of<T: serde::de::DeserializeOwned>(what: &str) -> T {
    ::config::Config::default()
        .try_deserialize()
        .unwrap_or_else(|e| panic!("defaults of [{what}] must deserialize from nothing: {e}"))
}

/// Why `p` is not absolute, as the second half of a problem line (for
/// path keys kept as plain `PathBuf`).
pub(crate) fn absolute_path_problem(p: &Path) -> Option<String> {
    AbsPath::try_from(p.to_path_buf()).err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port() {
        assert_eq!(Port::try_from(1).unwrap().get(), 1);
        assert_eq!(Port::try_from(65535).unwrap().get(), 65535);
        for bad in [0, -1, 65536, i64::MAX, i64::MIN] {
            let e = Port::try_from(bad).unwrap_err();
            assert_eq!(e, format!("{bad} is not a port (1-65535)"));
        }
        assert_eq!(Port::of(1883).to_string(), "1883");
    }

    #[test]
    fn bcm_pin() {
        assert_eq!(BcmPin::try_from(0).unwrap().get(), 0);
        assert_eq!(BcmPin::try_from(27).unwrap().get(), 27);
        for bad in [-1, 28, 40, 256, i64::MAX] {
            assert_eq!(
                BcmPin::try_from(bad).unwrap_err(),
                format!("{bad} is not a BCM GPIO number (0-27)")
            );
        }
    }

    #[test]
    fn baud() {
        assert_eq!(Baud::try_from(9600).unwrap().get(), 9600);
        assert_eq!(Baud::of(2400).get(), 2400);
        for bad in [0, -9600, 1234, 4_294_967_296 + 9600] {
            let e = Baud::try_from(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("{bad} is not a standard rate (300, ")),
                "{e}"
            );
        }
    }

    #[test]
    fn bounded() {
        type B = Bounded<1, 10_000>;
        assert_eq!(B::try_from(1).unwrap().get(), 1);
        assert_eq!(B::try_from(10_000).unwrap().as_usize(), 10_000);
        assert_eq!(B::try_from(0).unwrap_err(), "0 must be between 1 and 10000");
        assert_eq!(
            B::try_from(10_001).unwrap_err(),
            "10001 must be between 1 and 10000"
        );
        assert_eq!(
            B::try_from(-5).unwrap_err(),
            "-5 must be between 1 and 10000"
        );
        type N = Bounded<0, { u64::MAX }>;
        assert_eq!(N::try_from(0).unwrap().get(), 0);
        assert_eq!(N::try_from(-1).unwrap_err(), "-1 must not be negative");
        type A = Bounded<3, { u64::MAX }>;
        assert_eq!(A::try_from(2).unwrap_err(), "2 must be at least 3");
    }

    #[test]
    fn within() {
        type T = Within<100, 30_000>;
        let ms = Duration::from_millis;
        assert_eq!(T::try_from(ms(100)).unwrap().get(), ms(100));
        assert_eq!(T::try_from(ms(30_000)).unwrap().get(), ms(30_000));
        assert_eq!(
            T::try_from(ms(1)).unwrap_err(),
            "1ms must be between 100ms and 30s"
        );
        assert_eq!(
            T::try_from(ms(30_001)).unwrap_err(),
            "30s 1ms must be between 100ms and 30s"
        );
        type Short = Within<0, 5_000>;
        assert_eq!(Short::try_from(ms(0)).unwrap().get(), ms(0));
        assert_eq!(
            Short::try_from(ms(6_000)).unwrap_err(),
            "6s must be between 0s and 5s"
        );
        type Long = Within<5_000, { u64::MAX }>;
        assert_eq!(
            Long::try_from(Duration::from_secs(86_400 * 365))
                .unwrap()
                .get(),
            Duration::from_secs(86_400 * 365)
        );
        assert_eq!(
            Long::try_from(ms(4_999)).unwrap_err(),
            "4s 999ms is too short (at least 5s)"
        );
        assert_eq!(T::of(ms(2_000)).to_string(), "2s");
    }

    #[test]
    fn message_rate() {
        type R = MessageRate<1, 10_000>;
        assert_eq!(R::try_from(1.0).unwrap().get(), 1.0);
        assert_eq!(
            R::try_from(10_000.0).unwrap().gap(),
            Duration::from_micros(100)
        );
        assert_eq!(R::try_from(1.0).unwrap().gap(), Duration::from_secs(1));
        for bad in [0.999_999, 10_000.001, 0.0, -1.0, 1e-300, 1e300] {
            assert_eq!(
                R::try_from(bad).unwrap_err(),
                format!("{bad:?} must be between 1 and 10000 messages per second")
            );
        }
        assert_eq!(
            R::try_from(1e-300).unwrap_err(),
            "1e-300 must be between 1 and 10000 messages per second"
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(R::try_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn within_reads_humantime() {
        #[derive(Debug, Deserialize)]
        struct S {
            t: Within<100, 30_000>,
        }
        let s: S = serde_json::from_str(r#"{"t": "2s 500ms"}"#).unwrap();
        assert_eq!(s.t.get(), Duration::from_millis(2_500));
        let e = serde_json::from_str::<S>(r#"{"t": "1ms"}"#).unwrap_err();
        assert!(
            e.to_string().contains("1ms must be between 100ms and 30s"),
            "{e}"
        );
        let e = serde_json::from_str::<S>(r#"{"t": "soon"}"#).unwrap_err();
        assert!(
            e.to_string().contains("soon") || e.to_string().contains("unit"),
            "{e}"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            &*AbsPath::try_from(PathBuf::from("/var/lib/x")).unwrap(),
            Path::new("/var/lib/x")
        );
        assert_eq!(
            AbsPath::try_from(PathBuf::from("spool.db")).unwrap_err(),
            "\"spool.db\" must be an absolute path (the service runs from /)"
        );
        assert_eq!(
            AbsPath::try_from(PathBuf::from("")).unwrap_err(),
            "\"\" must be an absolute path (the service runs from /)"
        );
        assert_eq!(
            SerialPath::try_from(PathBuf::from("ttyUSB0")).unwrap_err(),
            "\"ttyUSB0\" must be an absolute path such as /dev/serial/by-id/..."
        );
        assert_eq!(
            SerialPath::known("/dev/ttyUSB0").display().to_string(),
            "/dev/ttyUSB0"
        );
    }
}
