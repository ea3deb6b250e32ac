//! Megatec / Q1 protocol codec: pure functions from bytes to typed replies.
//!
//! Commands and replies end in CR. `Q1` gives the readings, `F` the rated
//! values, `I` the identity. Real units vary: a field of `@` characters means
//! "unknown", `(NAK` means "unsupported", some echo an unknown command back,
//! some send blank identity fields, online units report battery voltage per
//! cell. Every reply is checked before anything is taken from it.

use crate::model::Values;

/// The longest reply the protocol allows (I is 39 bytes); anything longer
/// without a CR is garbage and is discarded rather than buffered.
pub const MAX_REPLY: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The UPS answered `(NAK`: the command is not supported. Stop asking for it.
    #[error("command not supported by the UPS (NAK)")]
    Nak,
    /// The UPS echoed the command back: it does not know it. Stop asking.
    #[error("command echoed back (not supported)")]
    Echo,
    /// The reply is cut short or malformed: count it, try again next poll.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// Commands this codec can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Status inquiry.
    Q1,
    /// Rated values.
    F,
    /// Identity.
    I,
    /// 10-second battery test.
    Test,
    /// Test until battery low.
    TestLow,
    /// Cancel a battery test.
    CancelTest,
}

impl Command {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Command::Q1 => b"Q1\r",
            Command::F => b"F\r",
            Command::I => b"I\r",
            Command::Test => b"T\r",
            Command::TestLow => b"TL\r",
            Command::CancelTest => b"CT\r",
        }
    }
}

/// The shortest delay before a Megatec UPS switches its output off: `S.2`,
/// 12 s (the protocol's `.2` to `.9` are tenths of a minute).
pub(crate) const OFF_DELAY_MIN: std::time::Duration = std::time::Duration::from_secs(12);
/// The longest: `S10`, 10 minutes.
pub(crate) const OFF_DELAY_MAX: std::time::Duration = std::time::Duration::from_secs(600);
/// The longest wait before the output returns: `R9999`, in minutes.
pub(crate) const RETURN_MINUTES_MAX: u32 = 9999;

/// A delayed shutdown with return, as it goes on the wire, and the delays
/// the UPS will really use (the protocol's steps are coarser than a
/// duration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShutdownReturn {
    /// `S<n>R<m>` and CR.
    pub bytes: Vec<u8>,
    /// The off delay the UPS counts: `off_after` rounded down to a step of
    /// 6 s below one minute and of a minute above (as NUT's blazer drivers
    /// round `offdelay`).
    pub off_after: std::time::Duration,
    /// Minutes after switching off before the output may come back (when
    /// the mains are there).
    pub return_minutes: u32,
}

/// `shutdown.return` for a Megatec/Q1 UPS: `S<n>R<m>\r`, the output off
/// after n (`.2`-`.9` tenths of a minute, or `01`-`10` minutes) and back on
/// m minutes later (`0001`-`9999`) once the mains are there; a UPS whose
/// mains are still out stays off until they return. As NUT's blazer and
/// nutdrv_qx drivers send it (`offdelay` 12-600 s, `ondelay` in minutes).
/// `R0000` (stay off) is never sent: the Pi must come back with the mains.
pub(crate) fn shutdown_return(
    off_after: std::time::Duration,
    return_minutes: u32,
) -> Result<ShutdownReturn, CodecError> {
    if !(OFF_DELAY_MIN..=OFF_DELAY_MAX).contains(&off_after) {
        return Err(CodecError::Malformed(format!(
            "off delay {} outside what the UPS takes (12 s to 10 min)",
            humantime::format_duration(off_after)
        )));
    }
    if !(1..=RETURN_MINUTES_MAX).contains(&return_minutes) {
        return Err(CodecError::Malformed(format!(
            "return delay {return_minutes} min outside what the UPS takes (1 to {RETURN_MINUTES_MAX})"
        )));
    }
    let secs = off_after.as_secs();
    let (n, real) = if secs < 60 {
        (format!(".{}", secs / 6), secs - secs % 6)
    } else {
        (format!("{:02}", secs / 60), secs - secs % 60)
    };
    Ok(ShutdownReturn {
        bytes: format!("S{n}R{return_minutes:04}\r").into_bytes(),
        off_after: std::time::Duration::from_secs(real),
        return_minutes,
    })
}

/// What a UPS answered to a command that needs no answer (`S..R..`): most
/// send nothing (`None`); some say `ACK` or `(ACK`. `(NAK` or the command
/// echoed back means it was refused.
pub(crate) fn parse_command_reply(reply: Option<&[u8]>) -> Result<(), CodecError> {
    let Some(reply) = reply else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\r', '\n']);
    if text.starts_with("ACK") || text.starts_with("(ACK") {
        Ok(())
    } else if text.starts_with("(NAK") || text == "NAK" {
        Err(CodecError::Nak)
    } else if text.starts_with('S') {
        Err(CodecError::Echo)
    } else {
        Err(CodecError::Malformed(format!(
            "unexpected answer to a command: {:?}",
            text.chars().take(32).collect::<String>()
        )))
    }
}

/// The status bits of a Q1 reply (b7..b0 from left to right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusBits {
    pub utility_fail: bool,
    pub battery_low: bool,
    pub bypass_boost_buck: bool,
    pub ups_failed: bool,
    /// Standby / line-interactive (true) or online (false).
    pub standby: bool,
    pub test_in_progress: bool,
    pub shutdown_active: bool,
    pub beeper_on: bool,
}

/// A decoded Q1 reply; `None` where the UPS sent `@` (unknown).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Q1 {
    pub input_voltage: Option<f64>,
    pub input_fault_voltage: Option<f64>,
    pub output_voltage: Option<f64>,
    pub load: Option<f64>,
    pub input_frequency: Option<f64>,
    pub battery_voltage: Option<f64>,
    /// The battery voltage was given per cell (`S.SS`, below 3 V).
    pub battery_per_cell: bool,
    pub temperature: Option<f64>,
    pub status: StatusBits,
}

/// A decoded F reply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rated {
    pub voltage: Option<f64>,
    pub current: Option<f64>,
    pub battery_voltage: Option<f64>,
    pub frequency: Option<f64>,
}

/// A decoded I reply; blank fields are `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Identity {
    pub mfr: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
}

/// Strips the trailing CR and spots NAK and echoes.
fn body(reply: &[u8], cmd: Command) -> Result<&str, CodecError> {
    let text = std::str::from_utf8(reply).map_err(|_| CodecError::Malformed("not ASCII".into()))?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.starts_with("(NAK") || text == "NAK" {
        return Err(CodecError::Nak);
    }
    let cmd_text = std::str::from_utf8(cmd.bytes())
        .unwrap_or("")
        .trim_end_matches('\r');
    if text == cmd_text {
        return Err(CodecError::Echo);
    }
    if !text.is_ascii() {
        return Err(CodecError::Malformed("not ASCII".into()));
    }
    Ok(text)
}

/// A number field; all-`@` (or all `-`) means unknown.
fn field(s: &str, name: &str) -> Result<Option<f64>, CodecError> {
    if s.chars().all(|c| c == '@' || c == '.' || c == '-') {
        return Ok(None);
    }
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(Some)
        .ok_or_else(|| CodecError::Malformed(format!("{name}: {s:?} is not a number")))
}

/// Decodes `(MMM.M NNN.N PPP.P QQQ RR.R S.SS TT.T b7b6b5b4b3b2b1b0<cr>`.
pub fn parse_q1(reply: &[u8]) -> Result<Q1, CodecError> {
    let text = body(reply, Command::Q1)?;
    let rest = text.strip_prefix('(').ok_or_else(|| {
        CodecError::Malformed(format!("Q1 reply does not start with '(': {text:?}"))
    })?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() != 8 {
        return Err(CodecError::Malformed(format!(
            "Q1 reply has {} fields, not 8 (truncated?): {text:?}",
            f.len()
        )));
    }
    let bits = f[7].as_bytes();
    if bits.len() != 8 || !bits.iter().all(|b| *b == b'0' || *b == b'1') {
        return Err(CodecError::Malformed(format!(
            "Q1 status bits {:?} are not 8 binary digits",
            f[7]
        )));
    }
    let bit = |i: usize| bits[i] == b'1';
    let battery_voltage = field(f[5], "battery voltage")?;
    Ok(Q1 {
        input_voltage: field(f[0], "input voltage")?,
        input_fault_voltage: field(f[1], "input fault voltage")?,
        output_voltage: field(f[2], "output voltage")?,
        load: field(f[3], "load")?,
        input_frequency: field(f[4], "input frequency")?,
        battery_per_cell: battery_voltage.is_some_and(|v| v < 3.0),
        battery_voltage,
        temperature: field(f[6], "temperature")?,
        status: StatusBits {
            utility_fail: bit(0),
            battery_low: bit(1),
            bypass_boost_buck: bit(2),
            ups_failed: bit(3),
            standby: bit(4),
            test_in_progress: bit(5),
            shutdown_active: bit(6),
            beeper_on: bit(7),
        },
    })
}

/// Decodes `#VVV.V CCC BB.B FF.F<cr>`.
pub fn parse_f(reply: &[u8]) -> Result<Rated, CodecError> {
    let text = body(reply, Command::F)?;
    let rest = text.strip_prefix('#').ok_or_else(|| {
        CodecError::Malformed(format!("F reply does not start with '#': {text:?}"))
    })?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() != 4 {
        return Err(CodecError::Malformed(format!(
            "F reply has {} fields, not 4: {text:?}",
            f.len()
        )));
    }
    Ok(Rated {
        voltage: field(f[0], "rated voltage")?,
        current: field(f[1], "rated current")?,
        battery_voltage: field(f[2], "rated battery voltage")?,
        frequency: field(f[3], "rated frequency")?,
    })
}

/// Decodes `#` + manufacturer (15) + ` ` + model (10) + ` ` + firmware (10) + CR.
pub fn parse_i(reply: &[u8]) -> Result<Identity, CodecError> {
    let text = body(reply, Command::I)?;
    let rest = text.strip_prefix('#').ok_or_else(|| {
        CodecError::Malformed(format!("I reply does not start with '#': {text:?}"))
    })?;
    let take = |from: usize, len: usize| -> Option<String> {
        let end = (from + len).min(rest.len());
        let s = rest.get(from.min(end)..end)?.trim();
        (!s.is_empty() && !s.chars().all(|c| c == '-' || c == '@')).then(|| s.to_owned())
    };
    if rest.len() < 15 {
        return Err(CodecError::Malformed(format!(
            "I reply too short: {text:?}"
        )));
    }
    Ok(Identity {
        mfr: take(0, 15),
        model: take(16, 10),
        firmware: take(27, 10),
    })
}

/// Battery voltage limits for estimating the charge (NUT's blazer drivers
/// do the same when the UPS does not report it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChargeEstimate {
    pub low: f64,
    pub high: f64,
}

impl ChargeEstimate {
    /// Defaults from the rated battery voltage: 10.4 V (empty) to 13.0 V
    /// (full) per 12 V block.
    pub fn from_rated(rated: Option<f64>) -> Option<ChargeEstimate> {
        let r = rated.filter(|r| *r > 0.0)?;
        Some(ChargeEstimate {
            low: 10.4 * r / 12.0,
            high: 13.0 * r / 12.0,
        })
    }

    pub fn charge(&self, volts: f64) -> Option<f64> {
        if self.high <= self.low {
            return None;
        }
        let c = (volts - self.low) / (self.high - self.low) * 100.0;
        Some((c.clamp(0.0, 100.0) * 10.0).round() / 10.0)
    }
}

/// NUT's `ups.status` tokens for a Q1 reply.
pub(crate) fn status_tokens(q: &Q1) -> String {
    let s = q.status;
    let mut t: Vec<&str> = Vec::new();
    if s.utility_fail {
        t.push("OB");
    } else {
        t.push("OL");
    }
    if s.battery_low {
        t.push("LB");
    }
    if s.bypass_boost_buck {
        if s.standby {
            // Line-interactive: boosting a low input, or trimming a high one.
            match (q.input_voltage, q.output_voltage) {
                (Some(i), Some(o)) if i < o => t.push("BOOST"),
                _ => t.push("TRIM"),
            }
        } else {
            t.push("BYPASS");
        }
    }
    if s.test_in_progress {
        t.push("CAL");
    }
    if s.shutdown_active {
        t.push("FSD");
    }
    t.join(" ")
}

/// Maps what was read to NUT's variable names.
pub fn to_values(
    q: &Q1,
    rated: Option<&Rated>,
    ident: Option<&Identity>,
    estimate: Option<ChargeEstimate>,
) -> Values {
    let mut v = Values::new();
    v.set("ups.status", status_tokens(q));
    let opt = |v: &mut Values, k: &str, x: Option<f64>| {
        if let Some(x) = x {
            v.num(k, x);
        }
    };
    opt(&mut v, "input.voltage", q.input_voltage);
    opt(&mut v, "input.voltage.fault", q.input_fault_voltage);
    opt(&mut v, "output.voltage", q.output_voltage);
    opt(&mut v, "ups.load", q.load);
    opt(&mut v, "input.frequency", q.input_frequency);
    opt(&mut v, "ups.temperature", q.temperature);
    let battery = match (q.battery_voltage, q.battery_per_cell) {
        (Some(b), false) => Some(b),
        // Per cell: a lead-acid cell is 2 V nominal, so the rated battery
        // voltage gives the number of cells.
        (Some(b), true) => rated
            .and_then(|r| r.battery_voltage)
            .map(|r| ((b * (r / 2.0).round()) * 100.0).round() / 100.0),
        (None, _) => None,
    };
    opt(&mut v, "battery.voltage", battery);
    if let (Some(b), Some(e)) = (battery, estimate) {
        if let Some(c) = e.charge(b) {
            v.num("battery.charge", c);
            v.set("battery.charge.estimated", true);
        }
    }
    v.set(
        "ups.type",
        if q.status.standby {
            "offline / line interactive"
        } else {
            "online"
        },
    );
    v.set(
        "ups.beeper.status",
        if q.status.beeper_on {
            "enabled"
        } else {
            "disabled"
        },
    );
    if q.status.ups_failed {
        v.set("ups.alarm", "UPS internal failure");
    }
    if let Some(r) = rated {
        opt(&mut v, "input.voltage.nominal", r.voltage);
        opt(&mut v, "input.current.nominal", r.current);
        opt(&mut v, "battery.voltage.nominal", r.battery_voltage);
        opt(&mut v, "input.frequency.nominal", r.frequency);
    }
    if let Some(i) = ident {
        if let Some(m) = &i.mfr {
            v.set("device.mfr", m.clone());
        }
        if let Some(m) = &i.model {
            v.set("device.model", m.clone());
        }
        if let Some(f) = &i.firmware {
            v.set("ups.firmware", f.clone());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    const Q1_OK: &[u8] = b"(230.4 140.0 229.8 023 50.0 13.6 30.5 00001001\r";

    fn num(v: &Values, k: &str) -> Option<f64> {
        v.get(k).and_then(Value::as_f64)
    }

    #[test]
    fn q1_real_frame() {
        assert_eq!(Q1_OK.len(), 47);
        let q = parse_q1(Q1_OK).unwrap();
        assert_eq!(q.input_voltage, Some(230.4));
        assert_eq!(q.input_fault_voltage, Some(140.0));
        assert_eq!(q.output_voltage, Some(229.8));
        assert_eq!(q.load, Some(23.0));
        assert_eq!(q.input_frequency, Some(50.0));
        assert_eq!(q.battery_voltage, Some(13.6));
        assert!(!q.battery_per_cell);
        assert_eq!(q.temperature, Some(30.5));
        assert!(q.status.standby && q.status.beeper_on);
        assert!(!q.status.utility_fail && !q.status.battery_low);
        assert_eq!(status_tokens(&q), "OL");
    }

    #[test]
    fn q1_table() {
        // (frame, expected ups.status or error substring)
        let cases: &[(&[u8], Result<&str, &str>)] = &[
            (
                b"(230.4 140.0 229.8 023 50.0 13.6 30.5 00001001\r",
                Ok("OL"),
            ),
            (
                b"(000.0 000.0 229.8 023 00.0 12.1 30.5 10001001\r",
                Ok("OB"),
            ),
            (
                b"(000.0 000.0 229.8 023 00.0 10.6 30.5 11001001\r",
                Ok("OB LB"),
            ),
            (
                b"(198.0 140.0 220.0 023 50.0 13.6 30.5 00101001\r",
                Ok("OL BOOST"),
            ),
            (
                b"(250.0 140.0 220.0 023 50.0 13.6 30.5 00101001\r",
                Ok("OL TRIM"),
            ),
            (
                b"(230.0 140.0 230.0 023 50.0 2.27 30.5 00100000\r",
                Ok("OL BYPASS"),
            ),
            (
                b"(230.0 140.0 230.0 023 50.0 13.6 30.5 00001100\r",
                Ok("OL CAL"),
            ),
            (
                b"(000.0 140.0 230.0 023 50.0 11.0 30.5 10001010\r",
                Ok("OB FSD"),
            ),
            // Unknown fields: omitted, not an error.
            (
                b"(230.0 @@@.@ 230.0 023 50.0 13.6 @@.@ 00001001\r",
                Ok("OL"),
            ),
            (b"(NAK\r", Err("NAK")),
            (b"Q1\r", Err("echoed")),
            // Truncated.
            (b"(230.4 140.0 229.8 023 50.0 13.6\r", Err("fields")),
            (
                b"(230.4 140.0 229.8 023 50.0 13.6 30.5 0000100\r",
                Err("status bits"),
            ),
            (
                b"(230.4 140.0 229.8 023 50.0 13.6 30.5 00002001\r",
                Err("status bits"),
            ),
            (
                b"230.4 140.0 229.8 023 50.0 13.6 30.5 00001001\r",
                Err("'('"),
            ),
            (
                b"(23x.4 140.0 229.8 023 50.0 13.6 30.5 00001001\r",
                Err("not a number"),
            ),
            (b"(\xff\xfe\r", Err("ASCII")),
            (b"", Err("'('")),
            (
                b"(nan 140.0 229.8 023 50.0 13.6 30.5 00001001\r",
                Err("not a number"),
            ),
        ];
        for (frame, want) in cases {
            let got = parse_q1(frame);
            match (want, got) {
                (Ok(status), Ok(q)) => assert_eq!(status_tokens(&q), *status, "{frame:?}"),
                (Err(msg), Err(e)) => {
                    assert!(e.to_string().contains(msg), "{frame:?}: {e} lacks {msg}")
                }
                (w, g) => panic!("{frame:?}: wanted {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_are_left_out() {
        let q = parse_q1(b"(230.0 @@@.@ 230.0 023 50.0 13.6 @@.@ 00001001\r").unwrap();
        let v = to_values(&q, None, None, None);
        assert!(v.get("input.voltage.fault").is_none());
        assert!(v.get("ups.temperature").is_none());
        assert_eq!(num(&v, "input.voltage"), Some(230.0));
    }

    #[test]
    fn f_and_i_frames() {
        let r = parse_f(b"#230.0 004 012.0 50.0\r").unwrap();
        assert_eq!(
            r,
            Rated {
                voltage: Some(230.0),
                current: Some(4.0),
                battery_voltage: Some(12.0),
                frequency: Some(50.0)
            }
        );
        let i = parse_i(b"#SANTAK          BLAZER-PRO VT12046Q  \r").unwrap();
        assert_eq!(i.mfr.as_deref(), Some("SANTAK"));
        assert_eq!(i.model.as_deref(), Some("BLAZER-PRO"));
        assert_eq!(i.firmware.as_deref(), Some("VT12046Q"));
        // Blank fields.
        let i = parse_i(b"#                                     \r").unwrap();
        assert_eq!(i, Identity::default());
        let i = parse_i(b"#-------------   ------     VT12046Q  \r").unwrap();
        assert_eq!((i.mfr, i.model), (None, None));
        assert_eq!(i.firmware.as_deref(), Some("VT12046Q"));
        assert_eq!(parse_f(b"(NAK\r"), Err(CodecError::Nak));
        assert_eq!(parse_i(b"I\r"), Err(CodecError::Echo));
        assert!(parse_f(b"#230.0 004\r").is_err());
        assert!(parse_i(b"#SHORT\r").is_err());
    }

    #[test]
    fn per_cell_battery_voltage_and_estimated_charge() {
        let q = parse_q1(b"(230.0 140.0 230.0 023 50.0 2.27 30.5 00000000\r").unwrap();
        assert!(q.battery_per_cell);
        let rated = parse_f(b"#230.0 004 012.0 50.0\r").unwrap();
        let est = ChargeEstimate::from_rated(rated.battery_voltage);
        let v = to_values(&q, Some(&rated), None, est);
        // 2.27 V x 6 cells.
        assert_eq!(num(&v, "battery.voltage"), Some(13.62));
        assert_eq!(num(&v, "battery.charge"), Some(100.0));
        assert_eq!(v.get("battery.charge.estimated"), Some(&Value::Bool(true)));
        assert_eq!(v.get("ups.type"), Some(&"online".into()));
        // Without rated values a per-cell voltage cannot be scaled: left out.
        let v = to_values(&q, None, None, None);
        assert!(v.get("battery.voltage").is_none());
    }

    #[test]
    fn charge_estimate_is_linear_and_clamped() {
        let e = ChargeEstimate::from_rated(Some(24.0)).unwrap();
        assert_eq!(e.charge(20.8), Some(0.0));
        assert_eq!(e.charge(26.0), Some(100.0));
        assert_eq!(e.charge(23.4), Some(50.0));
        assert_eq!(e.charge(30.0), Some(100.0));
        assert_eq!(e.charge(5.0), Some(0.0));
        assert!(ChargeEstimate::from_rated(None).is_none());
        assert!(ChargeEstimate {
            low: 2.0,
            high: 1.0
        }
        .charge(1.5)
        .is_none());
    }

    #[test]
    fn full_mapping_of_the_real_frames() {
        let q = parse_q1(Q1_OK).unwrap();
        let r = parse_f(b"#230.0 004 012.0 50.0\r").unwrap();
        let i = parse_i(b"#SANTAK          BLAZER-PRO VT12046Q  \r").unwrap();
        let v = to_values(
            &q,
            Some(&r),
            Some(&i),
            ChargeEstimate::from_rated(r.battery_voltage),
        );
        assert_eq!(v.get("ups.status"), Some(&"OL".into()));
        assert_eq!(num(&v, "ups.load"), Some(23.0));
        assert_eq!(num(&v, "input.voltage.nominal"), Some(230.0));
        assert_eq!(num(&v, "battery.voltage.nominal"), Some(12.0));
        assert_eq!(num(&v, "battery.charge"), Some(100.0));
        assert_eq!(
            v.get("ups.type"),
            Some(&"offline / line interactive".into())
        );
        assert_eq!(v.get("ups.beeper.status"), Some(&"enabled".into()));
        assert_eq!(v.get("device.mfr"), Some(&"SANTAK".into()));
        assert!(v.get("ups.alarm").is_none());
    }

    #[test]
    fn shutdown_return_table() {
        let s = std::time::Duration::from_secs;
        // (off delay, return minutes, wire, off delay the UPS counts)
        let ok: &[(u64, u32, &str, u64)] = &[
            (12, 3, "S.2R0003\r", 12),
            (17, 3, "S.2R0003\r", 12),
            (18, 1, "S.3R0001\r", 18),
            (54, 3, "S.9R0003\r", 54),
            (59, 3, "S.9R0003\r", 54),
            (60, 3, "S01R0003\r", 60),
            (119, 10, "S01R0010\r", 60),
            (120, 3, "S02R0003\r", 120),
            (600, 9999, "S10R9999\r", 600),
        ];
        for (off, ret, wire, real) in ok {
            let c = shutdown_return(s(*off), *ret).unwrap();
            assert_eq!(std::str::from_utf8(&c.bytes).unwrap(), *wire, "{off} s");
            assert_eq!(c.off_after, s(*real), "{off} s");
            assert_eq!(c.return_minutes, *ret);
        }
        for (off, ret) in [(0, 3), (11, 3), (601, 3), (3600, 3), (60, 0), (60, 10_000)] {
            assert!(shutdown_return(s(off), ret).is_err(), "{off} s, R{ret}");
        }
    }

    #[test]
    fn command_replies() {
        assert_eq!(parse_command_reply(None), Ok(()));
        assert_eq!(parse_command_reply(Some(b"ACK\r")), Ok(()));
        assert_eq!(parse_command_reply(Some(b"(ACK\r")), Ok(()));
        assert_eq!(parse_command_reply(Some(b"(NAK\r")), Err(CodecError::Nak));
        assert_eq!(
            parse_command_reply(Some(b"S02R0003\r")),
            Err(CodecError::Echo)
        );
        assert!(parse_command_reply(Some(b"\xff\xfe\r")).is_err());
    }

    #[test]
    fn commands() {
        assert_eq!(Command::Q1.bytes(), b"Q1\r");
        assert_eq!(Command::Test.bytes(), b"T\r");
        assert_eq!(Command::TestLow.bytes(), b"TL\r");
        assert_eq!(Command::CancelTest.bytes(), b"CT\r");
    }
}
