//! APC Smart protocol codec: pure functions from bytes to typed replies.
//!
//! Single-character commands; replies end in CR LF; `NA` means the command
//! is not supported. The UPS also sends single alert characters at any time,
//! between or even inside replies: `!` line fail, `$` line restored, `%` low
//! battery, `+` battery recovered, and a few more; `|` (an EEPROM value
//! changed) and `&` (check the alarm register) are dropped, as NUT's
//! apcsmart driver drops them.
//!
//! The power-off uses the commands NUT's apcsmart driver uses
//! for `shutdown.return` (drivers/apcsmart.c, `sdtype = 0`): `S` (soft
//! hibernate) on battery, `@000` (hard hibernate, no extra wake-up delay)
//! otherwise. Both switch the output off after the UPS's grace delay (the
//! EEPROM setting `p`, stepped through its few fixed values with `-`) and
//! on again when the mains return. They answer `OK`, or `*` on older
//! models, and `NA` when they do not apply (`S` on mains).

/// Longest reply line accepted; real replies are under 16 bytes.
pub const MAX_REPLY: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// `NA`: the command is not supported. Stop asking for it.
    #[error("command not supported (NA)")]
    NotAvailable,
    /// A reply that does not parse: count it, try again next poll.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// Commands wardgate sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Enter smart mode (`Y` → `SM`).
    SmartMode,
    BatteryVoltage,
    BatteryCharge,
    InputVoltage,
    OutputVoltage,
    Load,
    Status,
    Runtime,
    Serial,
    Frequency,
    Temperature,
    /// The shutdown grace delay in seconds, `p` → `020` (an EEPROM value:
    /// see [`GRACE_DELAYS`]).
    GraceDelay,
    /// Step the value last read to its next one, `-` → `OK` (or `NO`).
    NextValue,
    /// Soft hibernate, `S` → `OK`: output off after the grace delay, on
    /// again when the mains return. Only on battery (`NA` on mains).
    SoftShutdown,
    /// Hard hibernate, `@` then three digits (extra wake-up delay in six
    /// minute units; wardgate sends `000`) → `OK`: as `S`, on mains too.
    Hibernate,
}

impl Command {
    pub fn byte(self) -> u8 {
        match self {
            Command::SmartMode => b'Y',
            Command::BatteryVoltage => b'B',
            Command::BatteryCharge => b'f',
            Command::InputVoltage => b'L',
            Command::OutputVoltage => b'O',
            Command::Load => b'P',
            Command::Status => b'Q',
            Command::Runtime => b'j',
            Command::Serial => b'n',
            Command::Frequency => b'F',
            Command::Temperature => b'C',
            Command::GraceDelay => b'p',
            Command::NextValue => b'-',
            Command::SoftShutdown => b'S',
            Command::Hibernate => b'@',
        }
    }

    /// The NUT variable the reply becomes.
    pub fn variable(self) -> &'static str {
        match self {
            Command::SmartMode => "",
            Command::BatteryVoltage => "battery.voltage",
            Command::BatteryCharge => "battery.charge",
            Command::InputVoltage => "input.voltage",
            Command::OutputVoltage => "output.voltage",
            Command::Load => "ups.load",
            Command::Status => "ups.status",
            Command::Runtime => "battery.runtime",
            Command::Serial => "ups.serial",
            Command::Frequency => "input.frequency",
            Command::Temperature => "ups.temperature",
            Command::GraceDelay => "ups.delay.shutdown",
            Command::NextValue | Command::SoftShutdown | Command::Hibernate => "",
        }
    }

    /// What is polled every interval, in order.
    pub const POLL: [Command; 10] = [
        Command::Status,
        Command::BatteryVoltage,
        Command::BatteryCharge,
        Command::InputVoltage,
        Command::OutputVoltage,
        Command::Load,
        Command::Runtime,
        Command::Frequency,
        Command::Temperature,
        Command::Serial,
    ];
}

/// An unsolicited alert character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    LineFail,
    LineRestored,
    LowBattery,
    BatteryRecovered,
    ReplaceBattery,
    Abnormal,
    AbnormalCleared,
    TurningOff,
}

impl Alert {
    pub fn from_byte(b: u8) -> Option<Alert> {
        Some(match b {
            b'!' => Alert::LineFail,
            b'$' => Alert::LineRestored,
            b'%' => Alert::LowBattery,
            b'+' => Alert::BatteryRecovered,
            b'#' => Alert::ReplaceBattery,
            b'?' => Alert::Abnormal,
            b'=' => Alert::AbnormalCleared,
            b'*' => Alert::TurningOff,
            _ => return None,
        })
    }
}

/// Notices that are neither alerts nor reply text: `|` (an EEPROM value
/// changed, sent after `-`) and `&` (check the alarm register).
pub const IGNORED: &[u8] = b"|&";

/// Splits alert characters out of received bytes, and drops [`IGNORED`]
/// ones; what is left is reply text.
pub fn split_alerts(bytes: &[u8]) -> (Vec<Alert>, Vec<u8>) {
    let mut alerts = Vec::new();
    let mut rest = Vec::with_capacity(bytes.len());
    for &b in bytes {
        match Alert::from_byte(b) {
            Some(a) => alerts.push(a),
            None if IGNORED.contains(&b) => {}
            None => rest.push(b),
        }
    }
    (alerts, rest)
}

/// The reply to a command that changes something (`-`, `S`, `@000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ack {
    /// `OK` (or `*` from older models): done.
    Ok,
    /// `NO`: the value cannot be changed (`-`).
    No,
    /// `NA`: not now or not on this model (`S` on mains, `@` while the
    /// output is off).
    NotAvailable,
}

/// Decodes the reply to `-`, `S` or `@000`; `*` is how older models say OK
/// to a shutdown command (NUT's apcsmart driver reads it so).
pub(crate) fn parse_ack(line: &[u8]) -> Result<Ack, CodecError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| CodecError::Malformed("not ASCII".into()))?
        .trim_end_matches(['\r', '\n']);
    match text {
        "OK" | "*" => Ok(Ack::Ok),
        "NO" => Ok(Ack::No),
        "NA" => Ok(Ack::NotAvailable),
        other => Err(CodecError::Malformed(format!(
            "expected OK, NO or NA, got {:?}",
            other.chars().take(MAX_REPLY).collect::<String>()
        ))),
    }
}

/// The grace delays of a Smart-UPS (EEPROM `p`, seconds), in the order
/// `-` steps through them (APC's Smart protocol: 020, 180, 300, 600).
/// A model with other values is walked once round to learn its own.
pub(crate) const GRACE_DELAYS: [u32; 4] = [20, 180, 300, 600];

/// Most `-` steps wardgate takes to reach a grace delay: enough to learn a
/// model's values (one round) and walk to the chosen one.
pub(crate) const MAX_GRACE_STEPS: usize = 12;

/// The grace delay for an output-off after `wanted`: the shortest of
/// `offered` not shorter than it, else the longest (None if none offered).
pub(crate) fn choose_grace(wanted: std::time::Duration, offered: &[u32]) -> Option<u32> {
    let w = wanted.as_secs_f64();
    offered
        .iter()
        .copied()
        .filter(|v| f64::from(*v) >= w)
        .min()
        .or_else(|| offered.iter().copied().max())
}

/// One step of walking the grace delay toward the one wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GraceStep {
    /// The value now is the one to keep.
    Stay(u32),
    /// Step on with `-` (towards the target, or to learn the values).
    Next,
    /// Too many steps: keep what is there.
    GiveUp,
}

/// Decides the next step. `seen` is every value read so far, in order,
/// the current one last. The standard values ([`GRACE_DELAYS`]) are
/// assumed while only those have been seen; once the walk has come back to
/// the first value, the values seen are the model's own.
pub(crate) fn grace_step(wanted: std::time::Duration, seen: &[u32]) -> GraceStep {
    let Some((&now, _)) = seen.split_last() else {
        return GraceStep::GiveUp;
    };
    if seen.len() > MAX_GRACE_STEPS {
        return GraceStep::GiveUp;
    }
    // Back at the first value at some point: every value has been seen.
    let round = seen.get(1..).is_some_and(|rest| rest.contains(&seen[0]));
    let offered: Vec<u32> = if round {
        let mut v = seen.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    } else if seen.iter().all(|v| GRACE_DELAYS.contains(v)) {
        GRACE_DELAYS.to_vec()
    } else {
        return GraceStep::Next;
    };
    match choose_grace(wanted, &offered) {
        Some(t) if t == now => GraceStep::Stay(now),
        // A standard value assumed but never met: learn the real ones.
        _ => GraceStep::Next,
    }
}

/// Hard hibernate with no extra wake-up delay, as NUT sends it (`awd`
/// unset): `@` alone first, then the digits once the UPS said nothing.
pub(crate) const HIBERNATE_DIGITS: &[u8] = b"000";

/// A decoded reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    SmartMode,
    Number(f64),
    Text(String),
    /// NUT `ups.status` tokens.
    Status(String),
}

/// NUT tokens for the `Q` status byte (bit 0 CAL, 1 TRIM, 2 BOOST, 3 OL,
/// 4 OB, 5 OVER, 6 LB, 7 RB).
pub fn status_tokens(byte: u8) -> String {
    const BITS: [(u8, &str); 8] = [
        (3, "OL"),
        (4, "OB"),
        (6, "LB"),
        (7, "RB"),
        (0, "CAL"),
        (1, "TRIM"),
        (2, "BOOST"),
        (5, "OVER"),
    ];
    let mut t: Vec<&str> = BITS
        .iter()
        .filter(|(bit, _)| byte & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();
    if t.is_empty() {
        // Neither on line nor on battery: the output is off.
        t.push("OFF");
    }
    t.join(" ")
}

/// Decodes one reply line (without alerts) to `cmd`.
pub fn parse(cmd: Command, line: &[u8]) -> Result<Reply, CodecError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| CodecError::Malformed("not ASCII".into()))?
        .trim_end_matches(['\r', '\n']);
    if text == "NA" {
        return Err(CodecError::NotAvailable);
    }
    if text.is_empty() || !text.is_ascii() || text.len() > MAX_REPLY {
        return Err(CodecError::Malformed(format!("{text:?}")));
    }
    let number = |t: &str| {
        t.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| CodecError::Malformed(format!("{:?} is not a number", t)))
    };
    match cmd {
        Command::SmartMode => {
            if text == "SM" {
                Ok(Reply::SmartMode)
            } else {
                Err(CodecError::Malformed(format!("expected SM, got {text:?}")))
            }
        }
        Command::Status => u8::from_str_radix(text, 16)
            .map(|b| Reply::Status(status_tokens(b)))
            .map_err(|_| CodecError::Malformed(format!("status {text:?} is not hex"))),
        // Minutes, with a trailing colon: `0327:`.
        Command::Runtime => {
            let m = number(text.trim_end_matches(':'))?;
            Ok(Reply::Number(m * 60.0))
        }
        Command::Serial => Ok(Reply::Text(text.trim().to_owned())),
        _ => number(text).map(Reply::Number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        use Command::*;
        let cases: &[(Command, &[u8], Result<Reply, &str>)] = &[
            (SmartMode, b"SM\r\n", Ok(Reply::SmartMode)),
            (SmartMode, b"XX\r\n", Err("expected SM")),
            (BatteryVoltage, b"27.87\r\n", Ok(Reply::Number(27.87))),
            (BatteryCharge, b"100.0\r\n", Ok(Reply::Number(100.0))),
            (InputVoltage, b"230.4\r\n", Ok(Reply::Number(230.4))),
            (Load, b"023.4\r\n", Ok(Reply::Number(23.4))),
            (Status, b"08\r\n", Ok(Reply::Status("OL".into()))),
            (Status, b"50\r\n", Ok(Reply::Status("OB LB".into()))),
            (Status, b"0A\r\n", Ok(Reply::Status("OL TRIM".into()))),
            (Status, b"88\r\n", Ok(Reply::Status("OL RB".into()))),
            (Status, b"28\r\n", Ok(Reply::Status("OL OVER".into()))),
            (Status, b"00\r\n", Ok(Reply::Status("OFF".into()))),
            (Status, b"ZZ\r\n", Err("not hex")),
            (Runtime, b"0327:\r\n", Ok(Reply::Number(327.0 * 60.0))),
            (
                Serial,
                b"QS0123456789\r\n",
                Ok(Reply::Text("QS0123456789".into())),
            ),
            (Temperature, b"NA\r\n", Err("NA")),
            (Load, b"abc\r\n", Err("not a number")),
            (Load, b"\r\n", Err("malformed")),
            (Load, b"\xff\r\n", Err("ASCII")),
        ];
        for (cmd, line, want) in cases {
            match (want, parse(*cmd, line)) {
                (Ok(w), Ok(g)) => assert_eq!(&g, w, "{cmd:?} {line:?}"),
                (Err(m), Err(e)) => assert!(e.to_string().contains(m), "{line:?}: {e}"),
                (w, g) => panic!("{cmd:?} {line:?}: wanted {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn alerts_are_split_out_of_replies() {
        let (a, rest) = split_alerts(b"!23$0.4\r\n%+");
        assert_eq!(
            a,
            vec![
                Alert::LineFail,
                Alert::LineRestored,
                Alert::LowBattery,
                Alert::BatteryRecovered
            ]
        );
        assert_eq!(rest, b"230.4\r\n");
        assert_eq!(split_alerts(b"08\r\n"), (vec![], b"08\r\n".to_vec()));
        // `|` after a changed EEPROM value, `&` (alarm register): dropped.
        assert_eq!(split_alerts(b"OK\r\n|"), (vec![], b"OK\r\n".to_vec()));
        assert_eq!(split_alerts(b"1&80\r\n"), (vec![], b"180\r\n".to_vec()));
    }

    #[test]
    fn acks() {
        let cases: &[(&[u8], Result<Ack, &str>)] = &[
            (b"OK\r\n", Ok(Ack::Ok)),
            (b"OK", Ok(Ack::Ok)),
            // Older models answer a shutdown command with `*`.
            (b"*", Ok(Ack::Ok)),
            (b"NO\r\n", Ok(Ack::No)),
            (b"NA\r\n", Ok(Ack::NotAvailable)),
            (b"\r\n", Err("expected OK, NO or NA, got \"\"")),
            (b"SM\r\n", Err("got \"SM\"")),
            (b"020\r\n", Err("got \"020\"")),
            (b"\xfe\x80\r\n", Err("not ASCII")),
        ];
        for (line, want) in cases {
            match (want, parse_ack(line)) {
                (Ok(w), Ok(g)) => assert_eq!(&g, w, "{line:?}"),
                (Err(m), Err(e)) => assert!(e.to_string().contains(m), "{line:?}: {e}"),
                (w, g) => panic!("{line:?}: wanted {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn grace_delay_replies() {
        assert_eq!(
            parse(Command::GraceDelay, b"020\r\n"),
            Ok(Reply::Number(20.0))
        );
        assert_eq!(
            parse(Command::GraceDelay, b"600\r\n"),
            Ok(Reply::Number(600.0))
        );
        assert_eq!(
            parse(Command::GraceDelay, b"NA\r\n"),
            Err(CodecError::NotAvailable)
        );
        assert!(parse(Command::GraceDelay, b"0x0\r\n").is_err());
    }

    #[test]
    fn the_grace_delay_is_the_nearest_not_shorter() {
        let s = std::time::Duration::from_secs;
        let cases: &[(u64, &[u32], Option<u32>)] = &[
            (120, &GRACE_DELAYS, Some(180)),
            (180, &GRACE_DELAYS, Some(180)),
            (181, &GRACE_DELAYS, Some(300)),
            (0, &GRACE_DELAYS, Some(20)),
            (20, &GRACE_DELAYS, Some(20)),
            (21, &GRACE_DELAYS, Some(180)),
            // Longer than any: the longest.
            (900, &GRACE_DELAYS, Some(600)),
            (60, &[90, 30, 0], Some(90)),
            (60, &[], None),
        ];
        for (w, offered, want) in cases {
            assert_eq!(choose_grace(s(*w), offered), *want, "{w} of {offered:?}");
        }
        assert_eq!(
            choose_grace(std::time::Duration::from_millis(20_500), &GRACE_DELAYS),
            Some(180),
            "a part of a second counts"
        );
    }

    #[test]
    fn grace_walks() {
        use GraceStep::*;
        let s = std::time::Duration::from_secs;
        let cases: &[(u64, &[u32], GraceStep)] = &[
            // Standard values: straight to the one wanted.
            (120, &[20], Next),
            (120, &[20, 180], Stay(180)),
            (120, &[180], Stay(180)),
            (120, &[600], Next),
            (120, &[600, 20], Next),
            (120, &[600, 20, 180], Stay(180)),
            (900, &[20, 180, 300, 600], Stay(600)),
            // Values of its own: learn them (one round), then walk on.
            (120, &[30], Next),
            (120, &[30, 90], Next),
            (120, &[30, 90, 150, 30], Next),
            (120, &[30, 90, 150, 30, 90], Next),
            (120, &[30, 90, 150, 30, 90, 150], Stay(150)),
            (10, &[30, 90, 30], Stay(30)),
            // A standard value missing on this model: found at the round.
            (500, &[20, 180, 300, 20], Next),
            (500, &[20, 180, 300, 20, 180, 300], Stay(300)),
            // Never more than MAX_GRACE_STEPS.
            (120, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], GiveUp),
            (120, &[], GiveUp),
        ];
        for (w, seen, want) in cases {
            assert_eq!(&grace_step(s(*w), seen), want, "{w} after {seen:?}");
        }
    }

    #[test]
    fn every_polled_command_has_a_variable() {
        for c in Command::POLL {
            assert!(!c.variable().is_empty());
        }
    }
}
