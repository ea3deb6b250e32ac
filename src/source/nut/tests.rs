use super::*;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn list_var_over_a_stream() {
    let (a, mut b) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"LIST VAR \"u\"\n");
        b.write_all(
            b"BEGIN LIST VAR u\nVAR u ups.status \"OL\"\nVAR u ups.load \"12\"\nEND LIST VAR u\n",
        )
        .await
        .unwrap();
        let _ = b.read(&mut buf).await;
        b.write_all(b"ERR DATA-STALE\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let mut n = Nut::new(a, Duration::from_secs(1));
    let v = n.list_var("u").await.unwrap();
    assert_eq!(v.get("ups.load").and_then(|x| x.as_f64()), Some(12.0));
    match n.list_var("u").await {
        Err(NutError::Server(c)) => assert_eq!(c, "DATA-STALE"),
        other => panic!("{other:?}"),
    }
}

/// upsd on the other end of a stream, answering each request with the
/// next scripted reply; returns what it was asked.
async fn exchange(
    script: &[&'static str],
    off_after: Duration,
) -> (Result<String, String>, Vec<String>) {
    let (a, b) = tokio::io::duplex(4096);
    let replies: Vec<&'static str> = script.to_vec();
    let asked = tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(b);
        let mut r = BufReader::new(r);
        let mut asked = Vec::new();
        for reply in replies {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                break;
            }
            asked.push(line.trim_end().to_owned());
            if w.write_all(reply.as_bytes()).await.is_err() {
                break;
            }
        }
        // Then silence, until the client hangs up.
        let mut rest = String::new();
        while r.read_line(&mut rest).await.unwrap_or(0) > 0 {
            asked.push(std::mem::take(&mut rest).trim_end().to_owned());
        }
        asked
    });
    let mut n = Nut::new(a, Duration::from_secs(1));
    let r = n.shutdown_return("u", off_after).await;
    drop(n);
    (r, asked.await.unwrap())
}

const ON: &str = "SET TRACKING ON";
const GET: &str = "GET VAR \"u\" \"ups.delay.shutdown\"";
const SET: &str = "SET VAR \"u\" \"ups.delay.shutdown\" \"120\"";
const CMD: &str = "INSTCMD \"u\" \"shutdown.return\"";

/// Every reply of upsd to the power-off, and what it becomes.
#[tokio::test(start_paused = true)]
async fn shutdown_return_over_a_stream() {
    let delay_20 = "VAR u ups.delay.shutdown \"20\"\n";
    // What, each request with upsd's reply, the result.
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Result<&'static str, &'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "tracked: the delay set, then the command, each carried out",
            vec![
                (ON, "OK\n"),
                (GET, delay_20),
                (SET, "OK TRACKING a1\n"),
                ("GET TRACKING \"a1\"", "PENDING\n"),
                ("GET TRACKING \"a1\"", "SUCCESS\n"),
                (CMD, "OK TRACKING b2\n"),
                ("GET TRACKING \"b2\"", "SUCCESS\n"),
            ],
            Ok("ups.delay.shutdown set to 120 s (was 20 s): the driver carried it out; then INSTCMD shutdown.return: the driver carried it out"),
        ),
        (
            "an upsd without tracking",
            vec![
                (ON, "ERR INVALID-ARGUMENT\n"),
                (GET, delay_20),
                (SET, "OK\n"),
                (CMD, "OK\n"),
            ],
            Ok("then INSTCMD shutdown.return: upsd passed it to the driver (this upsd does not report the outcome)"),
        ),
        (
            "the delay is right already",
            vec![
                (ON, "OK\n"),
                (GET, "VAR u ups.delay.shutdown \"120\"\n"),
                (CMD, "OK TRACKING c\n"),
                ("GET TRACKING \"c\"", "SUCCESS\n"),
            ],
            Ok("ups.delay.shutdown is 120 s already; then INSTCMD"),
        ),
        (
            "a driver without the delay: the command alone",
            vec![
                (ON, "OK\n"),
                (GET, "ERR VAR-NOT-SUPPORTED\n"),
                (CMD, "OK TRACKING c\n"),
                ("GET TRACKING \"c\"", "SUCCESS\n"),
            ],
            Ok("GET VAR ups.delay.shutdown: upsd answered ERR VAR-NOT-SUPPORTED: the UPS's driver does not have this variable; the driver's own delay applies; then INSTCMD shutdown.return: the driver carried it out"),
        ),
        (
            "a read-only delay: the UPS keeps its own, the command is sent",
            vec![
                (ON, "OK\n"),
                (GET, delay_20),
                (SET, "ERR READONLY\n"),
                (CMD, "OK\n"),
            ],
            Ok("does not let it be changed; the UPS keeps 20 s; then INSTCMD shutdown.return: upsd passed it"),
        ),
        (
            "dummy-ups: no shutdown.return",
            vec![
                (ON, "OK\n"),
                (GET, delay_20),
                (SET, "OK TRACKING a\n"),
                ("GET TRACKING \"a\"", "SUCCESS\n"),
                (CMD, "ERR CMD-NOT-SUPPORTED\n"),
            ],
            Err("INSTCMD shutdown.return: upsd answered ERR CMD-NOT-SUPPORTED: the UPS's driver does not offer it"),
        ),
        (
            "a wrong password",
            vec![
                (ON, "OK\n"),
                (GET, delay_20),
                (SET, "ERR ACCESS-DENIED\n"),
                (CMD, "ERR ACCESS-DENIED\n"),
            ],
            Err("INSTCMD shutdown.return: upsd answered ERR ACCESS-DENIED: wrong password or unknown user"),
        ),
        (
            "no login",
            vec![
                (ON, "OK\n"),
                (GET, delay_20),
                (SET, "ERR USERNAME-REQUIRED\n"),
                (CMD, "ERR USERNAME-REQUIRED\n"),
            ],
            Err("set username and password_file"),
        ),
        (
            "the driver could not send it",
            vec![
                (ON, "OK\n"),
                (GET, "VAR u ups.delay.shutdown \"120\"\n"),
                (CMD, "OK TRACKING z\n"),
                ("GET TRACKING \"z\"", "ERR FAILED\n"),
            ],
            Err("upsd answered ERR FAILED: the driver tried, and the UPS did not take it"),
        ),
        (
            "upsd could not reach the driver",
            vec![
                (ON, "OK\n"),
                (GET, "VAR u ups.delay.shutdown \"120\"\n"),
                (CMD, "ERR INSTCMD-FAILED\n"),
            ],
            Err("could not pass it to the driver"),
        ),
        (
            "garbage",
            vec![(ON, "OK\n"), (GET, "HELLO THERE\n")],
            Err("malformed line from upsd: HELLO THERE"),
        ),
        (
            "another variable's line",
            vec![(ON, "OK\n"), (GET, "VAR u ups.load \"20\"\n")],
            Err("unexpected reply to GET VAR"),
        ),
        (
            "silence",
            vec![(ON, "OK\n"), (GET, "")],
            Err("upsd did not answer within 1s"),
        ),
    ];
    for (what, script, want) in cases {
        let replies: Vec<&'static str> = script.iter().map(|(_, r)| *r).collect();
        let (r, asked) = exchange(&replies, Duration::from_secs(120)).await;
        let expected: Vec<&str> = script.iter().map(|(q, _)| *q).collect();
        assert_eq!(asked, expected, "{what}");
        match (want, r) {
            (Ok(w), Ok(g)) => assert!(g.contains(w), "{what}: {g}"),
            (Err(w), Err(e)) => assert!(e.contains(w), "{what}: {e}"),
            (w, g) => panic!("{what}: wanted {w:?}, got {g:?}"),
        }
    }
    // A part of a second is rounded up: never shorter than asked.
    let (_, asked) = exchange(
        &["OK\n", "VAR u ups.delay.shutdown \"20\"\n", "OK\n", "OK\n"],
        Duration::from_millis(90_001),
    )
    .await;
    assert_eq!(asked[2], "SET VAR \"u\" \"ups.delay.shutdown\" \"91\"");
}

/// A tracked command the driver never reports on: the wait is bounded.
#[tokio::test(start_paused = true)]
async fn a_pending_outcome_is_not_waited_for_forever() {
    let mut script = vec![
        "OK\n",
        "VAR u ups.delay.shutdown \"120\"\n",
        "OK TRACKING p\n",
    ];
    script.extend(std::iter::repeat_n("PENDING\n", 100));
    let t0 = tokio::time::Instant::now();
    let (r, _) = exchange(&script, Duration::from_secs(120)).await;
    let r = r.unwrap();
    assert!(
        r.contains("upsd passed it to the driver, which has not reported yet"),
        "{r}"
    );
    assert!(t0.elapsed() <= Duration::from_secs(4), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn endless_list_is_cut_off() {
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        let _ = b.read(&mut buf).await;
        let _ = b.write_all(b"BEGIN LIST VAR u\n").await;
        for i in 0.. {
            if b.write_all(format!("VAR u v.{i} \"1\"\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut n = Nut::new(a, Duration::from_secs(1));
    match n.list_var("u").await {
        Err(e @ NutError::Codec(codec::CodecError::Limit(_))) => {
            assert_eq!(e.to_string(), "upsd sent more than 1000 variables for u")
        }
        other => panic!("{other:?}"),
    }
}

/// One line a little faster than the per-line timeout, forever: the
/// reply's own deadline ends it.
#[tokio::test(start_paused = true)]
async fn a_dripping_reply_is_cut_off_by_its_deadline() {
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        let _ = b.read(&mut buf).await;
        let _ = b.write_all(b"BEGIN LIST VAR u\n").await;
        for i in 0..900 {
            tokio::time::sleep(Duration::from_millis(900)).await;
            if b.write_all(format!("VAR u v.{i} \"1\"\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let started = tokio::time::Instant::now();
    let mut n = Nut::new(a, Duration::from_secs(1));
    match n.list_var("u").await {
        Err(e @ NutError::SlowReply(_)) => {
            assert_eq!(e.to_string(), "upsd did not finish its reply within 3s")
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() <= Duration::from_secs(3) + Duration::from_millis(10));
}

#[tokio::test]
async fn endless_line_is_rejected() {
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        let _ = b.read(&mut buf).await;
        let _ = b.write_all(&vec![b'x'; 4000]).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let mut n = Nut::new(a, Duration::from_secs(1));
    assert!(matches!(n.list_var("u").await, Err(NutError::Codec(_))));
}

#[tokio::test]
async fn starttls_over_a_stream() {
    // upsd's answer, then what `starttls` gives.
    let cases: &[(&[u8], Result<(), &str>)] = &[
        (b"OK STARTTLS\n", Ok(())),
        (
            b"ERR FEATURE-NOT-CONFIGURED\n",
            Err("upsd does not offer TLS (it answered STARTTLS with ERR FEATURE-NOT-CONFIGURED"),
        ),
        (b"OK\n", Err("expected OK STARTTLS")),
        // A man in the middle's clear text queued behind the yes.
        (
            b"OK STARTTLS\nOK\n",
            Err("upsd sent more after OK STARTTLS, before the TLS handshake"),
        ),
    ];
    for (reply, want) in cases {
        let (a, mut b) = tokio::io::duplex(4096);
        let sent = reply.to_vec();
        let peer = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = b.read(&mut buf).await.unwrap();
            b.write_all(&sent).await.unwrap();
            (buf[..n].to_vec(), b)
        });
        let got = Nut::new(a, Duration::from_secs(1)).starttls().await;
        let (asked, _b) = peer.await.unwrap();
        assert_eq!(asked, b"STARTTLS\n");
        match (want, got) {
            (Ok(()), Ok(_)) => {}
            (Err(m), Err(e)) => assert!(e.to_string().contains(m), "{reply:?}: {e}"),
            (w, g) => panic!("{reply:?}: wanted {w:?}, got {:?}", g.map(|_| ())),
        }
    }
}

/// A self-signed CA (P-256, good for a century) that signed nothing: the
/// unit tests need a CA to load, not the system's (a build box may have
/// none).
const UNIT_CA: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBlzCCAT2gAwIBAgIURjj6VE5mcO6vHfAHCDz6RxlfNOAwCgYIKoZIzj0EAwIw\n\
IDEeMBwGA1UEAwwVd2FyZGdhdGUgdW5pdCB0ZXN0IENBMCAXDTI2MTEzMDEyMzg1\n\
MloYDzIxMjYxMTA2MTIzODUyWjAgMR4wHAYDVQQDDBV3YXJkZ2F0ZSB1bml0IHRl\n\
c3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATlTvvXdq99O0p6+rAHy599\n\
ovsu8Uxs9wacoo4bEv1NkH5cql2uYngLf6rUBzxxKfNQQ4EM9nUg1BvDt/kyRlEl\n\
o1MwUTAdBgNVHQ4EFgQUVr+4rTX7Sc9Y2yp1muKEr5a0100wHwYDVR0jBBgwFoAU\n\
Vr+4rTX7Sc9Y2yp1muKEr5a0100wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD\n\
AgNIADBFAiAGHgE8NfwF+QSQVKU6AIqvSOy/PSorWkIymXsZYLE0rwIhANnErzp7\n\
OwkVhFTjAaS6uogRTNfuMZS4Yt/CKBOGoFSf\n\
-----END CERTIFICATE-----\n\
";

/// A NUT device with a login and `tls = true` against a local listener;
/// `extra` lines (a `ca_file`) override the unit test CA.
fn tls_device(port: u16, dir: &std::path::Path, extra: &str) -> NutConfig {
    let pw = dir.join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, UNIT_CA).unwrap();
    let ca_line = if extra.contains("ca_file") {
        String::new()
    } else {
        format!("ca_file = \"{}\"\n", ca.display())
    };
    toml::from_str(&format!(
        "id = \"u\"\nups = \"u\"\nhost = \"127.0.0.1\"\nport = {port}\ntimeout = \"2s\"\n\
         username = \"mon\"\npassword_file = \"{}\"\ntls = true\n{ca_line}{extra}",
        pw.display()
    ))
    .unwrap()
}

/// A fake upsd that answers each read with the next of `replies` and
/// records every byte it is sent until the client hangs up.
async fn fake_upsd(replies: &'static [&'static [u8]]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut replies = replies.iter();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return got,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
            if let Some(r) = replies.next() {
                let _ = s.write_all(r).await;
            }
        }
    });
    (port, task)
}

/// With tls on, a refused STARTTLS or a failed handshake ends the attempt
/// there: the word STARTTLS and a TLS ClientHello are all upsd gets.
#[tokio::test]
async fn tls_never_falls_back_to_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    // Refused: nothing after STARTTLS.
    let (port, seen) = fake_upsd(&[b"ERR FEATURE-NOT-CONFIGURED\n"]).await;
    let e = match connect(&tls_device(port, dir.path(), "")).await {
        Err(e) => e,
        Ok(_) => panic!("connected"),
    };
    assert!(matches!(e, NutError::NoTls(_)), "{e:?}");
    assert_eq!(seen.await.unwrap(), b"STARTTLS\n");
    // Yes, then clear text instead of a TLS server: the handshake fails,
    // and what followed STARTTLS was a TLS record, no login.
    let (port, seen) = fake_upsd(&[b"OK STARTTLS\n", b"not tls at all\n"]).await;
    let e = match connect(&tls_device(port, dir.path(), "")).await {
        Err(e) => e,
        Ok(_) => panic!("connected"),
    };
    assert!(matches!(e, NutError::Handshake(..)), "{e:?}");
    assert!(
        e.to_string().contains("nothing more was sent (no login)"),
        "{e}"
    );
    let seen = seen.await.unwrap();
    assert!(seen.starts_with(b"STARTTLS\n"), "{seen:?}");
    let rest = &seen[b"STARTTLS\n".len()..];
    assert!(
        rest.is_empty() || rest[0] == 0x16,
        "not a TLS record: {rest:?}"
    );
    let text = String::from_utf8_lossy(&seen);
    assert!(
        !text.contains("PASSWORD") && !text.contains("s3cret"),
        "{text}"
    );
    // A CA file that cannot be read: nothing is sent at all.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let e = match connect(&tls_device(
        port,
        dir.path(),
        "ca_file = \"/nonexistent/ca.pem\"\n",
    ))
    .await
    {
        Err(e) => e,
        Ok(_) => panic!("connected"),
    };
    assert!(matches!(e, NutError::TlsSetup(_)), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), l.accept())
            .await
            .is_err(),
        "connected although the CA could not be loaded"
    );
}

/// A peer that never answers STARTTLS (a TLS-only port, a hung upsd), or
/// says yes and then never starts the handshake: each attempt ends within
/// the device's timeout, saying what it waited for, and nothing but
/// STARTTLS (and a ClientHello) went out.
#[tokio::test]
async fn a_silent_upsd_ends_the_attempt_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let quick = |port| {
        let mut c = tls_device(port, dir.path(), "");
        c.timeout = Duration::from_millis(300);
        c
    };
    let (port, seen) = fake_upsd(&[]).await;
    let e = match connect(&quick(port)).await {
        Err(e) => e,
        Ok(_) => panic!("connected"),
    };
    assert!(
        e.to_string().contains("no answer to STARTTLS within"),
        "{e}"
    );
    assert_eq!(seen.await.unwrap(), b"STARTTLS\n");
    let (port, seen) = fake_upsd(&[b"OK STARTTLS\n"]).await;
    let e = match connect(&quick(port)).await {
        Err(e) => e,
        Ok(_) => panic!("connected"),
    };
    assert!(matches!(e, NutError::Handshake(..)), "{e:?}");
    assert!(e.to_string().contains("no answer within"), "{e}");
    let seen = seen.await.unwrap();
    assert!(
        !String::from_utf8_lossy(&seen).contains("PASSWORD"),
        "{seen:?}"
    );
}

#[test]
fn a_login_to_another_box_in_clear_text_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |host: &str, extra: &str| -> NutConfig {
        let mut c = tls_device(3493, dir.path(), extra);
        c.host = host.into();
        c
    };
    let off = |mut c: NutConfig| {
        c.tls = false;
        c
    };
    assert_eq!(cleartext_warning(&off(cfg("127.0.0.1", ""))), None);
    assert_eq!(cleartext_warning(&off(cfg("localhost", ""))), None);
    assert_eq!(cleartext_warning(&cfg("192.0.2.7", "")), None, "tls on");
    let w = cleartext_warning(&off(cfg("192.0.2.7", ""))).expect("a warning");
    assert!(
        w.contains("device u") && w.contains("192.0.2.7") && w.contains("clear text"),
        "{w}"
    );
    assert!(
        w.contains("set tls = true") && w.contains("CERTPATH"),
        "{w}"
    );
    assert!(w.contains("login"), "{w}");
    // No login: nothing secret crosses, but the readings can be forged by
    // whoever answers for that address: warned too.
    let mut anon = off(cfg("192.0.2.7", ""));
    anon.username = None;
    let w = cleartext_warning(&anon).expect("a warning without a login too");
    assert!(w.contains("forge") && w.contains("set tls = true"), "{w}");
}
