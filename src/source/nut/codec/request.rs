//! The requests the gateway sends upsd: one command per line, every word
//! quoted, and a word that would break the line refused before anything
//! is sent.

use super::CodecError;

/// Whether `s` can travel in a NUT command: no CR, LF or NUL.
fn sendable(s: &str) -> bool {
    !s.contains(['\r', '\n', '\0'])
}

/// Quotes a word for a command; `what` names it in the error when it holds
/// a character no command can carry ([`sendable`]).
fn quote(s: &str, what: &'static str) -> Result<String, CodecError> {
    if !sendable(s) {
        return Err(CodecError::Unsendable(what));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

pub(crate) fn cmd_list_var(ups: &str) -> Result<String, CodecError> {
    Ok(format!("LIST VAR {}\n", quote(ups, "UPS name")?))
}

pub(crate) fn cmd_username(user: &str) -> Result<String, CodecError> {
    Ok(format!("USERNAME {}\n", quote(user, "username")?))
}

pub(crate) fn cmd_password(pass: &str) -> Result<String, CodecError> {
    Ok(format!("PASSWORD {}\n", quote(pass, "password")?))
}

pub(crate) fn cmd_get_var(ups: &str, var: &str) -> Result<String, CodecError> {
    Ok(format!(
        "GET VAR {} {}\n",
        quote(ups, "UPS name")?,
        quote(var, "variable name")?
    ))
}

pub(crate) fn cmd_set_var(ups: &str, var: &str, value: &str) -> Result<String, CodecError> {
    Ok(format!(
        "SET VAR {} {} {}\n",
        quote(ups, "UPS name")?,
        quote(var, "variable name")?,
        quote(value, "value")?
    ))
}

pub(crate) fn cmd_instcmd(ups: &str, cmd: &str) -> Result<String, CodecError> {
    Ok(format!(
        "INSTCMD {} {}\n",
        quote(ups, "UPS name")?,
        quote(cmd, "command name")?
    ))
}

/// Asks upsd to keep the outcome of each SET and INSTCMD (upsd 2.8 and
/// later; an older one answers `ERR`).
pub(crate) const CMD_TRACKING_ON: &str = "SET TRACKING ON\n";

pub(crate) fn cmd_get_tracking(id: &str) -> Result<String, CodecError> {
    Ok(format!("GET TRACKING {}\n", quote(id, "tracking id")?))
}

/// Asks upsd to turn the connection into TLS. upsd answers `OK STARTTLS`
/// and then expects the client's TLS handshake, or `ERR <code>` and stays
/// in clear text ([`parse_starttls`](super::parse_starttls)).
pub(crate) const CMD_STARTTLS: &str = "STARTTLS\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::nut::codec::explain;

    #[test]
    fn commands_are_quoted() {
        let ok = |r: Result<String, CodecError>| r.unwrap();
        assert_eq!(ok(cmd_list_var("dummy")), "LIST VAR \"dummy\"\n");
        assert_eq!(ok(cmd_password("p\"w\\")), "PASSWORD \"p\\\"w\\\\\"\n");
        assert_eq!(ok(cmd_username("mon")), "USERNAME \"mon\"\n");
        assert!(explain("DATA-STALE").contains("stale"));
        assert_eq!(
            ok(cmd_set_var("qx", "ups.delay.shutdown", "120")),
            "SET VAR \"qx\" \"ups.delay.shutdown\" \"120\"\n"
        );
        assert_eq!(
            ok(cmd_get_var("qx", "ups.delay.shutdown")),
            "GET VAR \"qx\" \"ups.delay.shutdown\"\n"
        );
        assert_eq!(
            ok(cmd_instcmd("my ups", "shutdown.return")),
            "INSTCMD \"my ups\" \"shutdown.return\"\n"
        );
        assert_eq!(ok(cmd_get_tracking("a-1")), "GET TRACKING \"a-1\"\n");
    }

    /// A word with a line break would end the command and start another
    /// (a PEM key given as a password file would go out whole, line by
    /// line): every builder refuses CR, LF and NUL, naming the word and
    /// not its content.
    #[test]
    fn line_breaks_and_nul_are_refused_not_sent() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----";
        let cases: [(Result<String, CodecError>, &str); 8] = [
            (cmd_password(key), "password"),
            (cmd_password("pw\r"), "password"),
            (cmd_username("mon\nLOGOUT"), "username"),
            (cmd_list_var("u\0"), "UPS name"),
            (cmd_get_var("u", "a\nb"), "variable name"),
            (cmd_set_var("u", "v", "1\nINSTCMD u load.off"), "value"),
            (cmd_instcmd("u\r\n", "x"), "UPS name"),
            (cmd_get_tracking("a\n"), "tracking id"),
        ];
        for (r, what) in cases {
            let e = r.unwrap_err();
            assert_eq!(e, CodecError::Unsendable(what));
            let text = e.to_string();
            assert!(text.contains(what) && !text.contains("MIIE"), "{text}");
        }
    }
}
