//! APC Smart protocol codec: pure functions from bytes to typed replies.
//!
//! Single-character commands; replies end in CR LF; `NA` means the command
//! is not supported. The UPS also sends single alert characters at any time,
//! between or even inside replies: `!` line fail, `$` line restored, `%` low
//! battery, `+` battery recovered, and a few more.

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

/// Splits alert characters out of received bytes; what is left is reply text.
pub fn split_alerts(bytes: &[u8]) -> (Vec<Alert>, Vec<u8>) {
    let mut alerts = Vec::new();
    let mut rest = Vec::with_capacity(bytes.len());
    for &b in bytes {
        match Alert::from_byte(b) {
            Some(a) => alerts.push(a),
            None => rest.push(b),
        }
    }
    (alerts, rest)
}

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
    }

    #[test]
    fn every_polled_command_has_a_variable() {
        for c in Command::POLL {
            assert!(!c.variable().is_empty());
        }
    }
}
