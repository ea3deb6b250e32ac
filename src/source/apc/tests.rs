use super::*;

#[test]
fn alerts_update_the_known_status() {
    let mut s = Some("OL".to_owned());
    apply(&mut s, "OB", "OL");
    assert_eq!(s.as_deref(), Some("OB"));
    apply(&mut s, "LB", "");
    assert_eq!(s.as_deref(), Some("LB OB"));
    apply(&mut s, "", "LB");
    apply(&mut s, "OL", "OB");
    assert_eq!(s.as_deref(), Some("OL"));
}

#[test]
fn alert_words_are_the_contract() {
    assert_eq!(
        alert_event(Alert::TurningOff),
        (
            Severity::Critical,
            "ups.shutdown_pending",
            "UPS is about to turn off",
            None
        )
    );
    assert_eq!(
        alert_event(Alert::Abnormal),
        (
            Severity::Warning,
            "ups.abnormal",
            "UPS reports an abnormal condition",
            None
        )
    );
    assert_eq!(
        alert_event(Alert::LineFail),
        (
            Severity::Critical,
            "ups.on_battery",
            "UPS on battery: mains power lost",
            Some(("OB", "OL"))
        )
    );
}

/// A Smart-UPS on the other end of a stream for the shutdown
/// commands, as its manual and NUT's driver describe it; what it
/// received is kept.
#[derive(Debug, Clone)]
struct Fake {
    status: &'static str,
    grace: Vec<u32>,
    /// Index into `grace`.
    at: usize,
    /// Replies to `S` and to `@000` (None: silence).
    s_reply: Option<&'static [u8]>,
    at_reply: Option<&'static [u8]>,
    /// Replies to `@` alone (a refusal before the digits).
    at_refuse: Option<&'static [u8]>,
    p_reply: Option<&'static [u8]>,
    dash_reply: &'static [u8],
}

impl Default for Fake {
    fn default() -> Self {
        Fake {
            status: "10",
            grace: codec::GRACE_DELAYS.to_vec(),
            at: 0,
            s_reply: Some(b"OK\r\n"),
            at_reply: Some(b"OK\r\n"),
            at_refuse: None,
            p_reply: None,
            dash_reply: b"OK\r\n|",
        }
    }
}

async fn shut(fake: Fake, off_after: u64) -> (Result<String, ApcError>, String, Fake) {
    let (a, mut b) = tokio::io::duplex(256);
    let got = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), fake)));
    let g = got.clone();
    tokio::spawn(async move {
        let mut c = [0u8; 1];
        let mut digits = 0;
        while b.read(&mut c).await.unwrap_or(0) == 1 {
            let reply: Option<Vec<u8>> = {
                let mut g = g.lock().unwrap();
                let (rx, f) = &mut *g;
                rx.push(c[0]);
                if digits > 0 {
                    digits -= 1;
                    if digits == 0 {
                        f.at_reply.map(<[u8]>::to_vec)
                    } else {
                        None
                    }
                } else {
                    match c[0] {
                        b'Q' => Some(format!("{}\r\n", f.status).into_bytes()),
                        b'p' => Some(match f.p_reply {
                            Some(r) => r.to_vec(),
                            None => format!("{:03}\r\n", f.grace[f.at]).into_bytes(),
                        }),
                        b'-' => {
                            if f.dash_reply.starts_with(b"OK") {
                                f.at = (f.at + 1) % f.grace.len();
                            }
                            Some(f.dash_reply.to_vec())
                        }
                        b'S' => f.s_reply.map(<[u8]>::to_vec),
                        b'@' => match f.at_refuse {
                            Some(r) => Some(r.to_vec()),
                            None => {
                                digits = 3;
                                None
                            }
                        },
                        _ => Some(b"NA\r\n".to_vec()),
                    }
                }
            };
            if let Some(r) = reply {
                let _ = b.write_all(&r).await;
            }
        }
    });
    let mut u = ApcSmart::new(a, Duration::from_secs(1));
    let r = u.shutdown_return(Duration::from_secs(off_after)).await;
    let g = got.lock().unwrap();
    (r, String::from_utf8_lossy(&g.0).into_owned(), g.1.clone())
}

/// What is sent for each state of the UPS, and what its replies mean.
#[tokio::test(start_paused = true)]
async fn shutdown_with_return() {
    let own = Fake {
        grace: vec![30, 90, 150],
        ..Fake::default()
    };
    // What, the UPS, ups_off_delay (s), the bytes sent, the result.
    type Case = (
        &'static str,
        Fake,
        u64,
        &'static str,
        Result<&'static str, &'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "on battery: the grace delay stepped to 180 s, then S",
            Fake::default(),
            120,
            "p-pQS",
            Ok("grace delay set at 180 s (the nearest not shorter than the 120 s asked"),
        ),
        (
            "the grace delay is right already",
            Fake {
                at: 1,
                ..Fake::default()
            },
            180,
            "pQS",
            Ok("grace delay kept at 180 s"),
        ),
        (
            "longer than any: the longest, from 300 s (wrapping round)",
            Fake {
                at: 2,
                ..Fake::default()
            },
            900,
            "p-pQS",
            Ok("grace delay set at 600 s (the longest this UPS offers; 900 s were asked"),
        ),
        (
            "shorter than any: 20 s, from 600 s",
            Fake {
                at: 3,
                ..Fake::default()
            },
            5,
            "p-pQS",
            Ok("set at 20 s"),
        ),
        (
            "on mains: @000",
            Fake {
                status: "08",
                ..Fake::default()
            },
            20,
            "pQ@000",
            Ok("then @000 (hard hibernate, on mains): the UPS answered OK"),
        ),
        (
            "an older model answers *",
            Fake {
                s_reply: Some(b"*"),
                ..Fake::default()
            },
            20,
            "pQS",
            Ok("then S (soft hibernate, on battery): the UPS answered OK"),
        ),
        (
            "S refused (the mains came back meanwhile): @000",
            Fake {
                s_reply: Some(b"NA\r\n"),
                ..Fake::default()
            },
            20,
            "pQS@000",
            Ok("then @000 (hard hibernate, after S: NA)"),
        ),
        (
            "the status cannot be read: on battery assumed",
            Fake {
                status: "ZZ",
                ..Fake::default()
            },
            20,
            "pQS",
            Ok("then S (soft hibernate"),
        ),
        (
            "values of its own: one round to learn them, then 150 s",
            own,
            120,
            "p-p-p-p-p-pQS",
            Ok("grace delay set at 150 s (the nearest not shorter"),
        ),
        (
            "no grace delay reported: sent anyway, said so",
            Fake {
                p_reply: Some(b"NA\r\n"),
                ..Fake::default()
            },
            120,
            "pQS",
            Ok("does not report its grace delay (p: NA), so it keeps its own"),
        ),
        (
            "garbage while stepping the grace delay: the power-off goes anyway",
            Fake {
                dash_reply: b"\xff\xfe?\r\n",
                ..Fake::default()
            },
            120,
            "p-QS",
            Ok("grace delay not set ("),
        ),
        (
            "the grace delay cannot be changed",
            Fake {
                dash_reply: b"NO\r\n",
                ..Fake::default()
            },
            120,
            "p-QS",
            Ok("refused to change its grace delay, so it stays 20 s"),
        ),
        (
            "@ refused at once: the digits are not sent",
            Fake {
                status: "08",
                at_refuse: Some(b"NA\r\n"),
                ..Fake::default()
            },
            20,
            "pQ@",
            Err("the UPS answered NA to @000"),
        ),
        (
            "@000 refused",
            Fake {
                status: "08",
                at_reply: Some(b"NO\r\n"),
                ..Fake::default()
            },
            20,
            "pQ@000",
            Err("the UPS answered NO to @000"),
        ),
        (
            "garbage to S",
            Fake {
                s_reply: Some(b"\xf8\x80xx\r\n"),
                ..Fake::default()
            },
            20,
            "pQS",
            Err("malformed reply"),
        ),
        (
            "no reply to S",
            Fake {
                s_reply: None,
                ..Fake::default()
            },
            20,
            "pQS",
            Err("no reply to 'S' within 1s"),
        ),
    ];
    for (what, fake, off, wire, want) in cases {
        let (r, sent, _) = shut(fake, off).await;
        assert_eq!(sent, wire, "{what}");
        match (want, r) {
            (Ok(w), Ok(g)) => assert!(g.contains(w), "{what}: {g}"),
            (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{what}: {e}"),
            (w, g) => panic!("{what}: wanted {w:?}, got {g:?}"),
        }
    }
}

#[tokio::test]
async fn smart_mode_poll_and_alerts_over_a_stream() {
    let (a, mut b) = tokio::io::duplex(256);
    tokio::spawn(async move {
        let mut c = [0u8; 1];
        while b.read(&mut c).await.unwrap_or(0) == 1 {
            let reply: &[u8] = match c[0] {
                b'Y' => b"SM\r\n",
                // An alert inside the status reply.
                b'Q' => b"1!0\r\n",
                b'B' => b"27.87\r\n",
                b'f' => b"094.0\r\n",
                b'j' => b"0012:\r\n",
                _ => b"NA\r\n",
            };
            let _ = b.write_all(reply).await;
        }
    });
    let mut u = ApcSmart::new(a, Duration::from_secs(1));
    u.smart_mode().await.unwrap();
    let v = u.poll().await.unwrap();
    assert_eq!(v.get("ups.status"), Some(&"OB".into()));
    assert_eq!(
        v.get("battery.runtime").and_then(|x| x.as_f64()),
        Some(720.0)
    );
    assert_eq!(u.take_alerts(), vec![Alert::LineFail]);
    // NA variables are not asked again.
    assert!(u.unsupported.contains(&b'C'));
}
