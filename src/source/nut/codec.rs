//! NUT network protocol codec (the line protocol `upsd` speaks on port
//! 3493): pure functions from lines to typed replies. This file reads
//! upsd's replies; `request` writes the commands, `explain` puts upsd's
//! error codes in plain words.
//!
//! Written here rather than taken from a crate: the only Rust client
//! (`rups`) is unmaintained, pins an old rustls, and has no sans-IO parser
//! to table-test; the part wardgate needs (LIST VAR, login, ERR, for the
//! power-off GET/SET VAR, INSTCMD and TRACKING, and STARTTLS) is small.

mod explain;
pub(crate) mod request;

use crate::model::Values;

pub(crate) use self::explain::{explain, explain_refusal, explain_starttls};

/// Longest line accepted from upsd; NUT's own limit is 512 bytes.
pub const MAX_LINE: usize = 1024;

/// Most variables accepted in one `LIST VAR` reply. A real UPS lists about
/// 50 to 150 (an APC Smart-UPS over usbhid-ups about 90, an Eaton 5PX
/// about 140); a reply longer than this is a broken or hostile upsd, and
/// collecting it without end would run the gateway out of memory.
const MAX_VARS: usize = 1000;

/// Most bytes (names and values) accepted in one `LIST VAR` reply: 150
/// variables of a real UPS take about 6 KiB.
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Line framing of upsd's replies, sans-IO: the reader feeds it what the
/// socket gave until a line is complete. Pure, so it is fuzzed
/// (`fuzz/fuzz_targets/nut.rs`).
#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    /// Takes bytes from `chunk` up to and including the first LF. Returns
    /// how many it took (always consumed, even when the line is refused),
    /// and the line (LF included) once complete. A line longer than
    /// [`MAX_LINE`] or not UTF-8 is an error.
    pub fn feed(&mut self, chunk: &[u8]) -> (usize, Result<Option<String>, CodecError>) {
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        self.buf.extend_from_slice(&chunk[..take]);
        if self.buf.len() > MAX_LINE {
            return (
                take,
                Err(CodecError::Malformed(format!(
                    "line longer than {MAX_LINE} bytes"
                ))),
            );
        }
        if !done {
            return (take, Ok(None));
        }
        let line = String::from_utf8(std::mem::take(&mut self.buf))
            .map(Some)
            .map_err(|_| CodecError::Malformed("not UTF-8".into()));
        (take, line)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A line that does not follow the protocol: count it, reconnect.
    #[error("malformed line from upsd: {0}")]
    Malformed(String),
    /// A reply past one of the exchange's limits ([`MAX_VARS`],
    /// [`MAX_REPLY_BYTES`]): the rest is not read; counted as `limit`,
    /// the device faults naming the limit, and the connection is made
    /// again.
    #[error("upsd sent {0}")]
    Limit(String),
    /// A word to send holds a line break or NUL, which a NUT command cannot
    /// carry (upsd reads a command per line: the rest would be a second
    /// command, and a key file's lines would go out): refused before
    /// anything is sent; a fault until the config or the file is fixed.
    /// Names the word, never its content (it may be a password).
    #[error("the {0} holds a line break or NUL, which a NUT command cannot carry: nothing was sent (fix the config or the file)")]
    Unsendable(&'static str),
}

/// One line from upsd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Ok,
    /// `OK TRACKING <id>`: accepted, and its outcome can be asked for
    /// (`GET TRACKING <id>`, upsd 2.8 and later after `SET TRACKING ON`).
    OkTracking(String),
    /// A tracked command still waiting for the driver.
    Pending,
    /// A tracked command the driver carried out.
    Success,
    /// `ERR <code> [<extra>]`: DATA-STALE, DRIVER-NOT-CONNECTED, UNKNOWN-UPS,
    /// ACCESS-DENIED, INVALID-PASSWORD...
    Err(String),
    BeginListVar(String),
    Var {
        ups: String,
        name: String,
        value: String,
    },
    EndListVar(String),
}

/// Splits a line into words; double quotes group, backslash escapes.
fn words(line: &str) -> Result<Vec<String>, CodecError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => {
                    cur.push(n);
                    has_word = true;
                }
                None => return Err(CodecError::Malformed(format!("dangling escape: {line:?}"))),
            },
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            ' ' | '\t' if !in_quotes => {
                if has_word {
                    out.push(std::mem::take(&mut cur));
                    has_word = false;
                }
            }
            c => {
                cur.push(c);
                has_word = true;
            }
        }
    }
    if in_quotes {
        return Err(CodecError::Malformed(format!("unclosed quote: {line:?}")));
    }
    if has_word {
        out.push(cur);
    }
    Ok(out)
}

pub fn parse_line(line: &str) -> Result<Line, CodecError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let w = words(line)?;
    let bad = || CodecError::Malformed(line.chars().take(120).collect());
    match w.first().map(String::as_str) {
        Some("OK") if w.len() == 3 && w[1] == "TRACKING" => Ok(Line::OkTracking(w[2].clone())),
        Some("OK") => Ok(Line::Ok),
        Some("PENDING") if w.len() == 1 => Ok(Line::Pending),
        Some("SUCCESS") if w.len() == 1 => Ok(Line::Success),
        Some("ERR") => Ok(Line::Err(w.get(1).cloned().ok_or_else(bad)?)),
        Some("BEGIN") if w.len() == 4 && w[1] == "LIST" && w[2] == "VAR" => {
            Ok(Line::BeginListVar(w[3].clone()))
        }
        Some("END") if w.len() == 4 && w[1] == "LIST" && w[2] == "VAR" => {
            Ok(Line::EndListVar(w[3].clone()))
        }
        Some("VAR") if w.len() == 4 => Ok(Line::Var {
            ups: w[1].clone(),
            name: w[2].clone(),
            value: w[3].clone(),
        }),
        _ => Err(bad()),
    }
}

/// upsd's answer to [`CMD_STARTTLS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartTls {
    /// `OK STARTTLS`: the TLS handshake comes next.
    Ok,
    /// `ERR <code>`: upsd does not offer TLS (FEATURE-NOT-CONFIGURED: no
    /// certificate in upsd.conf; FEATURE-NOT-SUPPORTED: built without TLS).
    Refused(String),
}

/// upsd's answer to `STARTTLS`. Only `OK STARTTLS` starts the handshake:
/// a bare `OK` or any other line is malformed (the client then hangs up,
/// and never goes on in clear text).
pub fn parse_starttls(line: &str) -> Result<StartTls, CodecError> {
    let trimmed = line.strip_suffix('\n').unwrap_or(line);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    let bad = || {
        CodecError::Malformed(format!(
            "expected OK STARTTLS, got {:?}",
            trimmed.chars().take(120).collect::<String>()
        ))
    };
    match words(trimmed)?.as_slice() {
        [ok, what] if ok == "OK" && what == "STARTTLS" => Ok(StartTls::Ok),
        [err, code, ..] if err == "ERR" => Ok(StartTls::Refused(code.clone())),
        _ => Err(bad()),
    }
}

/// Names whose values stay words even when they look like numbers.
fn is_text(name: &str) -> bool {
    const TEXT: &[&str] = &[
        "status",
        "alarm",
        "serial",
        "model",
        "mfr",
        "firmware",
        "date",
        "name",
        "version",
        "type",
        "id",
        "productid",
        "vendorid",
        "description",
        "contact",
        "location",
        "result",
        "sku",
        "macaddr",
        "package",
        "mode",
    ];
    let last = name.rsplit('.').next().unwrap_or(name);
    TEXT.contains(&last) || name.contains(".firmware") || name.contains(".mfr")
}

/// Maps one UPS's variables to values: numbers where NUT gives numbers,
/// words otherwise. `driver.*` variables (driver name, parameters) are
/// configuration, not readings, and are left out, and so are names outside
/// the contract's pattern (NUT's own are `[a-z0-9.]`; anything else is not
/// from a sane upsd and cannot be published).
pub fn to_values(vars: &[(String, String)]) -> Values {
    to_values_checked(vars).0
}

/// As [`to_values`], with the names left out for being outside the
/// contract, for the device to count and log
/// ([`crate::source::DeviceHandle::left_out`]).
pub(crate) fn to_values_checked(vars: &[(String, String)]) -> (Values, Vec<String>) {
    let mut v = Values::new();
    let mut bad = Vec::new();
    for (name, value) in vars {
        if name.starts_with("driver.") {
            continue;
        }
        if !crate::model::valid_value_name(name) {
            bad.push(name.clone());
            continue;
        }
        if !is_text(name) {
            if let Ok(n) = value.trim().parse::<f64>() {
                if v.num(name, n) {
                    continue;
                }
            }
        }
        v.set(name, value.clone());
    }
    (v, bad)
}

/// What a finished `LIST VAR` exchange said.
#[derive(Debug, Clone, PartialEq)]
pub enum ListOutcome {
    Vars(Vec<(String, String)>),
    /// upsd answered `ERR <code>`.
    Err(String),
}

/// Collects lines of a `LIST VAR <ups>` reply; feed lines until it returns
/// `Some`.
/// A reply past [`MAX_VARS`] or [`MAX_REPLY_BYTES`] is an error.
#[derive(Debug, Default)]
pub struct ListVar {
    started: bool,
    vars: Vec<(String, String)>,
    bytes: usize,
}

impl ListVar {
    pub fn feed(&mut self, ups: &str, line: &str) -> Result<Option<ListOutcome>, CodecError> {
        match parse_line(line)? {
            Line::Err(code) if !self.started => Ok(Some(ListOutcome::Err(code))),
            Line::BeginListVar(u) if !self.started && u == ups => {
                self.started = true;
                Ok(None)
            }
            Line::Var {
                ups: u,
                name,
                value,
            } if self.started && u == ups => {
                if self.vars.len() >= MAX_VARS {
                    return Err(CodecError::Limit(format!(
                        "more than {MAX_VARS} variables for {ups}"
                    )));
                }
                self.bytes += name.len() + value.len();
                if self.bytes > MAX_REPLY_BYTES {
                    return Err(CodecError::Limit(format!(
                        "more than {} KiB of variables for {ups}",
                        MAX_REPLY_BYTES / 1024
                    )));
                }
                self.vars.push((name, value));
                Ok(None)
            }
            Line::EndListVar(u) if self.started && u == ups => {
                Ok(Some(ListOutcome::Vars(std::mem::take(&mut self.vars))))
            }
            other => Err(CodecError::Malformed(format!(
                "unexpected in LIST VAR {ups}: {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let mut r = LineReader::default();
        assert_eq!(r.feed(b"OK"), (2, Ok(None)));
        assert_eq!(r.feed(b"\nERR X\n"), (1, Ok(Some("OK\n".into()))));
        assert_eq!(r.feed(b"ERR X\n"), (6, Ok(Some("ERR X\n".into()))));
        let mut r = LineReader::default();
        assert!(matches!(r.feed(b"\xff\n"), (2, Err(_))));
        let mut r = LineReader::default();
        let long = vec![b'x'; MAX_LINE + 1];
        assert!(matches!(r.feed(&long), (n, Err(_)) if n == MAX_LINE + 1));
    }

    #[test]
    fn lines() {
        let cases: &[(&str, Result<Line, &str>)] = &[
            ("OK\n", Ok(Line::Ok)),
            ("ERR DATA-STALE\n", Ok(Line::Err("DATA-STALE".into()))),
            (
                "ERR DRIVER-NOT-CONNECTED",
                Ok(Line::Err("DRIVER-NOT-CONNECTED".into())),
            ),
            (
                "BEGIN LIST VAR dummy\n",
                Ok(Line::BeginListVar("dummy".into())),
            ),
            ("END LIST VAR dummy\n", Ok(Line::EndListVar("dummy".into()))),
            (
                "VAR dummy ups.status \"OL CHRG\"\n",
                Ok(Line::Var {
                    ups: "dummy".into(),
                    name: "ups.status".into(),
                    value: "OL CHRG".into(),
                }),
            ),
            (
                "VAR su700 ups.mfr \"APC \\\"Smart\\\" \\\\ co\"\r\n",
                Ok(Line::Var {
                    ups: "su700".into(),
                    name: "ups.mfr".into(),
                    value: "APC \"Smart\" \\ co".into(),
                }),
            ),
            (
                "VAR dummy ups.alarm \"\"\n",
                Ok(Line::Var {
                    ups: "dummy".into(),
                    name: "ups.alarm".into(),
                    value: "".into(),
                }),
            ),
            ("VAR dummy ups.status \"OL\n", Err("unclosed quote")),
            ("VAR dummy ups.status\n", Err("malformed")),
            ("HELLO\n", Err("malformed")),
            ("", Err("malformed")),
            ("ERR\n", Err("malformed")),
            ("VAR a b \"c\\", Err("dangling escape")),
            (
                "OK TRACKING 1bd31808-cb49-4aec-9d75-d056e6f018d2\n",
                Ok(Line::OkTracking(
                    "1bd31808-cb49-4aec-9d75-d056e6f018d2".into(),
                )),
            ),
            ("OK Goodbye\n", Ok(Line::Ok)),
            ("PENDING\n", Ok(Line::Pending)),
            ("SUCCESS\n", Ok(Line::Success)),
            ("ERR FAILED\n", Ok(Line::Err("FAILED".into()))),
            ("ERR ACCESS-DENIED\n", Ok(Line::Err("ACCESS-DENIED".into()))),
            (
                "ERR CMD-NOT-SUPPORTED\n",
                Ok(Line::Err("CMD-NOT-SUPPORTED".into())),
            ),
            ("SUCCESS now\n", Err("malformed")),
            (
                "VAR qx ups.delay.shutdown \"30\"\n",
                Ok(Line::Var {
                    ups: "qx".into(),
                    name: "ups.delay.shutdown".into(),
                    value: "30".into(),
                }),
            ),
        ];
        for (line, want) in cases {
            match (want, parse_line(line)) {
                (Ok(w), Ok(g)) => assert_eq!(&g, w, "{line:?}"),
                (Err(m), Err(e)) => assert!(e.to_string().contains(m), "{line:?}: {e}"),
                (w, g) => panic!("{line:?}: wanted {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn starttls_replies() {
        let cases: &[(&str, Result<StartTls, &str>)] = &[
            ("OK STARTTLS\n", Ok(StartTls::Ok)),
            ("OK STARTTLS\r\n", Ok(StartTls::Ok)),
            ("OK STARTTLS", Ok(StartTls::Ok)),
            (
                "ERR FEATURE-NOT-CONFIGURED\n",
                Ok(StartTls::Refused("FEATURE-NOT-CONFIGURED".into())),
            ),
            (
                "ERR FEATURE-NOT-SUPPORTED\n",
                Ok(StartTls::Refused("FEATURE-NOT-SUPPORTED".into())),
            ),
            (
                "ERR ALREADY-SSL-MODE extra words\n",
                Ok(StartTls::Refused("ALREADY-SSL-MODE".into())),
            ),
            // Anything else is not a yes: never taken as one.
            ("OK\n", Err("expected OK STARTTLS, got \"OK\"")),
            ("OK Goodbye\n", Err("expected OK STARTTLS")),
            ("OK STARTTLS now\n", Err("expected OK STARTTLS")),
            ("ok starttls\n", Err("expected OK STARTTLS")),
            ("OK TRACKING 1\n", Err("expected OK STARTTLS")),
            ("ERR\n", Err("expected OK STARTTLS")),
            ("\n", Err("expected OK STARTTLS")),
            ("", Err("expected OK STARTTLS")),
            ("BEGIN LIST VAR u\n", Err("expected OK STARTTLS")),
            ("OK \"STARTTLS\n", Err("unclosed quote")),
            ("\u{16}\u{3}\u{1}\n", Err("expected OK STARTTLS")),
        ];
        for (line, want) in cases {
            match (want, parse_starttls(line)) {
                (Ok(w), Ok(g)) => assert_eq!(&g, w, "{line:?}"),
                (Err(m), Err(e)) => assert!(e.to_string().contains(m), "{line:?}: {e}"),
                (w, g) => panic!("{line:?}: wanted {w:?}, got {g:?}"),
            }
        }
        assert_eq!(request::CMD_STARTTLS, "STARTTLS\n");
    }

    #[test]
    fn list_var_exchange() {
        let mut l = ListVar::default();
        let reply = [
            "BEGIN LIST VAR dummy",
            "VAR dummy battery.charge \"100\"",
            "VAR dummy ups.status \"OB LB\"",
            "VAR dummy ups.serial \"0123\"",
            "VAR dummy driver.name \"dummy-ups\"",
            "VAR dummy input.voltage \"230.0\"",
        ];
        for r in reply {
            assert_eq!(l.feed("dummy", r).unwrap(), None);
        }
        let Some(ListOutcome::Vars(vars)) = l.feed("dummy", "END LIST VAR dummy").unwrap() else {
            panic!()
        };
        let v = to_values(&vars);
        assert_eq!(
            v.get("battery.charge").and_then(|x| x.as_f64()),
            Some(100.0)
        );
        assert_eq!(v.get("ups.status"), Some(&"OB LB".into()));
        assert_eq!(
            v.get("ups.serial"),
            Some(&"0123".into()),
            "serials stay text"
        );
        assert!(v.get("driver.name").is_none());
        let mut l = ListVar::default();
        assert_eq!(
            l.feed("dummy", "ERR DATA-STALE").unwrap(),
            Some(ListOutcome::Err("DATA-STALE".into()))
        );
        let mut l = ListVar::default();
        assert!(
            l.feed("dummy", "VAR dummy x \"1\"").is_err(),
            "VAR before BEGIN"
        );
        let mut l = ListVar::default();
        l.feed("dummy", "BEGIN LIST VAR dummy").unwrap();
        assert!(
            l.feed("dummy", "VAR other x \"1\"").is_err(),
            "another UPS's line"
        );
    }

    #[test]
    fn names_outside_the_contract_are_left_out() {
        // Names as fuzz/fuzz_targets/nut.rs sends them: NUL bytes, spaces,
        // nothing at all. None of them reaches the telemetry.
        let vars = vec![
            ("ups.s\0\0\0l".to_string(), "OL".to_string()),
            ("".into(), "1".into()),
            ("bad name".into(), "1".into()),
            ("battery.char-e".into(), "100".into()),
        ];
        let (v, bad) = to_values_checked(&vars);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(
            v.get("battery.char-e").and_then(|x| x.as_f64()),
            Some(100.0)
        );
    }

    #[test]
    fn a_reply_past_the_limits_is_an_error() {
        let mut l = ListVar::default();
        l.feed("u", "BEGIN LIST VAR u").unwrap();
        for i in 0..MAX_VARS {
            assert_eq!(l.feed("u", &format!("VAR u v.{i} \"1\"")), Ok(None));
        }
        let e = l.feed("u", "VAR u one.more \"1\"").unwrap_err();
        assert_eq!(e.to_string(), "upsd sent more than 1000 variables for u");
        // Fewer variables, but too many bytes.
        let mut l = ListVar::default();
        l.feed("u", "BEGIN LIST VAR u").unwrap();
        let value = "v".repeat(1000);
        let mut lines = 0;
        let e = loop {
            match l.feed("u", &format!("VAR u v.{lines} \"{value}\"")) {
                Ok(None) => lines += 1,
                other => break other,
            }
        };
        assert!(
            matches!(&e, Err(CodecError::Limit(m)) if m.contains("256 KiB")),
            "{e:?}"
        );
        assert!(
            (250..262).contains(&lines),
            "{lines}: names and values count"
        );
    }
}
