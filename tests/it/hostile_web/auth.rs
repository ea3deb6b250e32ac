//! Basic auth: brute force is slowed per client, and a password file
//! others can read is reported.

use std::time::{Duration, Instant};

use super::*;
use crate::common::*;

/// Item 6: brute-forced basic auth is slowed per client. After 5 failures
/// the client gets 429 with Retry-After, even with the right password; other
/// clients are unaffected; after the wait the right password works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_forced_basic_auth_is_slowed() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _pw, _no_broker) = password_config(dir.path(), "right-horse-battery\n", 0o600);
    let mut gw = Process::start(&cfg, &dir.path().join("log"));
    let addr = page_addr(&gw).await;
    // A bound for an exchange, not a promise: generous.
    let t = WAIT;
    let right = basic("staff", "right-horse-battery");
    let mut fifth_sent = Instant::now();
    for i in 0..5 {
        fifth_sent = Instant::now();
        let r = get_from(
            ATTACKER,
            addr,
            "/api/status",
            &basic("staff", &format!("guess{i}")),
            t,
        )
        .await
        .expect("an answer");
        assert_eq!(r.code, 401, "guess {i}: {r:?}");
    }
    // The back-off began when the gateway took the 5th guess, so not
    // before `fifth_sent`, and lasts FIRST_WAIT: any request answered
    // before `surely_on` was taken during it, however slow the machine.
    let surely_on = fifth_sent + FIRST_WAIT;
    let during = |what: &str, r: &Reply| {
        if Instant::now() < surely_on {
            assert_eq!(r.code, 429, "{what} during the back-off: {r:?}");
        } else {
            assert_ne!(r.code, 200, "{what}: {r:?}");
        }
    };
    let r = get_from(ATTACKER, addr, "/api/status", &basic("staff", "guess5"), t)
        .await
        .expect("an answer");
    during("the 6th guess", &r);
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"));
    assert!(
        (1..=FIRST_WAIT.as_secs()).contains(&wait),
        "Retry-After {wait}"
    );
    // The right password from the same client is refused during the back-off.
    let r = get_from(ATTACKER, addr, "/", &right, t).await.unwrap();
    during("the right password", &r);
    // A burst of guesses gets nowhere: every one answered while the
    // back-off surely lasts is refused with 429. The burst stops short of
    // its end (a guess taken after it would count as a new failure).
    let burst = Instant::now();
    let mut refused = 0;
    let mut i = 0;
    while Instant::now() + Duration::from_millis(300) < surely_on {
        let r = get_from(
            ATTACKER,
            addr,
            "/metrics",
            &basic("staff", &format!("b{i}")),
            t,
        )
        .await
        .unwrap();
        during(&format!("guess b{i}"), &r);
        refused += (r.code == 429) as u32;
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let burst = burst.elapsed();
    assert!(
        refused >= 20,
        "only {refused} guesses refused in the {burst:?} the back-off surely lasted"
    );
    // Other clients are unaffected, with and without the password.
    let r = get_from(HONEST, addr, "/api/status", &right, t)
        .await
        .unwrap();
    assert_eq!(r.code, 200, "another client: {r:?}");
    let r = get_from(OTHER, addr, "/api/status", &basic("staff", "typo"), t)
        .await
        .unwrap();
    assert_eq!(r.code, 401, "another client's first mistake: {r:?}");
    // /healthz never needs the password, and is not blocked.
    let r = get_from(ATTACKER, addr, "/healthz", "", t).await.unwrap();
    assert_ne!(r.code, 429, "{r:?}");
    // After the wait, the right password works, and resets the count: a
    // 429 names the wait, and once it has passed the right password is
    // let in (on a slow machine the last guess of the burst may have
    // started a second, longer wait: its Retry-After says so).
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(200)).await;
    let mut r = get_from(ATTACKER, addr, "/api/status", &right, t)
        .await
        .unwrap();
    if r.code == 429 {
        let again: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"));
        assert!(
            again <= 2 * FIRST_WAIT.as_secs(),
            "still refused after Retry-After {wait} s: {r:?}"
        );
        tokio::time::sleep(Duration::from_secs(again) + Duration::from_millis(200)).await;
        r = get_from(ATTACKER, addr, "/api/status", &right, t)
            .await
            .unwrap();
    }
    assert_eq!(r.code, 200, "after Retry-After: {r:?}");
    let r = get_from(ATTACKER, addr, "/api/status", &basic("staff", "x"), t)
        .await
        .unwrap();
    assert_eq!(r.code, 401, "the count starts again after a success: {r:?}");
    eprintln!(
        "hostile_web: Retry-After {wait} s after 5 failures; {refused} guesses refused in {burst:?}"
    );
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(Duration::from_secs(15)).await, Some(0));
}

/// Item 6: a password file that others can read is accepted (the page must
/// not go dark over it) but reported by `wardgate check`, in the log and on
/// the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_readable_password_file_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, pw, _no_broker) = password_config(dir.path(), "open-secret\n", 0o644);
    let (code, out) = wardgate_check(&cfg).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("web.password_file") && out.contains("readable by other users"),
        "check says nothing about the open password file:\n{out}"
    );
    let mut gw = Process::start(&cfg, &dir.path().join("log"));
    let addr = page_addr(&gw).await;
    eventually(WAIT, "the warning in the log", || {
        gw.log_text().contains("readable by other users")
    })
    .await;
    let r = get_from(
        HONEST,
        addr,
        "/?lang=en",
        &basic("staff", "open-secret"),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(r.code, 200);
    assert!(r.body.contains("readable by other users"), "{}", r.body);
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(Duration::from_secs(15)).await, Some(0));

    // With mode 0600: no warning.
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out) = wardgate_check(&cfg).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("readable by other users"), "{out}");
}
