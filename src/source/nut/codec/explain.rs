//! upsd's error codes in plain words, each saying what to fix.

/// Plain words for upsd's refusal of STARTTLS, saying what to fix.
pub(crate) fn explain_starttls(code: &str) -> String {
    let why = match code {
        "FEATURE-NOT-CONFIGURED" => {
            "upsd has no certificate configured (CERTPATH and CERTIDENT for a upsd built with NSS, \
             or CERTFILE for one built with OpenSSL, in upsd.conf)"
        }
        "FEATURE-NOT-SUPPORTED" => "this upsd was built without TLS",
        "ALREADY-SSL-MODE" => "upsd says the connection is in TLS already",
        _ => "upsd refused it",
    };
    format!(
        "upsd does not offer TLS (it answered STARTTLS with ERR {code}: {why}); \
         nothing more was sent (no login): give upsd a certificate (docs/ups.md), or set tls = false \
         only if the network to upsd is trusted"
    )
}

/// Plain words for an `ERR` upsd gave to `what` (a SET VAR, the INSTCMD,
/// or a tracked outcome), saying what to fix.
pub(crate) fn explain_refusal(code: &str, what: &str) -> String {
    let why = match code {
        "ACCESS-DENIED" => "wrong password or unknown user, or the user lacks it in upsd.users \
                            (instcmds = shutdown.return for the command, actions = SET for the delay)"
            .to_owned(),
        "USERNAME-REQUIRED" | "PASSWORD-REQUIRED" => {
            "upsd needs a login: set username and password_file on this device".to_owned()
        }
        "INVALID-PASSWORD" | "INVALID-USERNAME" => "upsd refused the login".to_owned(),
        "CMD-NOT-SUPPORTED" => "the UPS's driver does not offer it (`upscmd -l` lists what it offers)".to_owned(),
        "VAR-NOT-SUPPORTED" => "the UPS's driver does not have this variable".to_owned(),
        "READONLY" => "the UPS's driver does not let it be changed".to_owned(),
        "INVALID-VALUE" => "the value is outside what the driver accepts".to_owned(),
        "SET-FAILED" | "INSTCMD-FAILED" => "upsd could not pass it to the driver".to_owned(),
        // Outcomes of a tracked command (GET TRACKING).
        "FAILED" => "the driver tried, and the UPS did not take it".to_owned(),
        "INVALID-ARGUMENT" => "the driver refused its argument".to_owned(),
        "UNKNOWN" => "the driver did not know it, or upsd forgot its outcome".to_owned(),
        _ => explain(code),
    };
    format!("{what}: upsd answered ERR {code}: {why}")
}

/// Plain words for upsd's error codes.
pub(crate) fn explain(code: &str) -> String {
    match code {
        "DATA-STALE" => "upsd: data stale (the UPS driver has no fresh data from the UPS)".into(),
        "DRIVER-NOT-CONNECTED" => "upsd: the UPS driver is not running or not connected".into(),
        "UNKNOWN-UPS" => "upsd does not know this UPS name (check `ups` in the config)".into(),
        "ACCESS-DENIED" => "upsd refused access (check upsd.users and the password)".into(),
        "INVALID-PASSWORD" | "INVALID-USERNAME" => "upsd refused the login".into(),
        other => format!("upsd: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starttls_refusals_say_what_to_fix() {
        for (code, words) in [
            ("FEATURE-NOT-CONFIGURED", "CERTPATH and CERTIDENT"),
            ("FEATURE-NOT-CONFIGURED", "CERTFILE"),
            ("FEATURE-NOT-SUPPORTED", "built without TLS"),
            ("SOMETHING-NEW", "upsd refused it"),
        ] {
            let t = explain_starttls(code);
            assert!(t.starts_with("upsd does not offer TLS"), "{t}");
            assert!(t.contains(&format!("ERR {code}")), "{t}");
            assert!(t.contains(words), "{code}: {t}");
            assert!(t.contains("nothing more was sent (no login)"), "{t}");
        }
    }

    #[test]
    fn refusals_say_what_to_fix() {
        let cases = [
            ("ACCESS-DENIED", "wrong password"),
            ("ACCESS-DENIED", "instcmds = shutdown.return"),
            ("USERNAME-REQUIRED", "set username and password_file"),
            ("PASSWORD-REQUIRED", "set username and password_file"),
            ("INVALID-PASSWORD", "refused the login"),
            ("CMD-NOT-SUPPORTED", "does not offer it"),
            ("VAR-NOT-SUPPORTED", "does not have this variable"),
            ("READONLY", "does not let it be changed"),
            ("INVALID-VALUE", "outside what the driver accepts"),
            ("INSTCMD-FAILED", "could not pass it to the driver"),
            ("FAILED", "the UPS did not take it"),
            ("DRIVER-NOT-CONNECTED", "not running"),
            ("SOMETHING-NEW", "upsd: SOMETHING-NEW"),
        ];
        for (code, words) in cases {
            let t = explain_refusal(code, "INSTCMD shutdown.return");
            assert!(
                t.starts_with(&format!(
                    "INSTCMD shutdown.return: upsd answered ERR {code}: "
                )),
                "{t}"
            );
            assert!(t.contains(words), "{code}: {t}");
        }
    }
}
