//! Under systemd: the notify protocol (READY, WATCHDOG, STOPPING) through a
//! real notify socket.

use crate::common::*;

/// Under systemd: READY=1 after start, WATCHDOG=1 while the pipeline runs,
/// STOPPING=1 on SIGTERM, through a real notify socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_ready_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    // A deadline for each notification (WATCHDOG=1 comes every 2 s).
    sock.set_read_timeout(Some(WAIT)).unwrap();
    // No broker (none needed): a port with no server.
    let no_broker = closed_port();
    let cfg = process_config(dir.path(), no_broker.port, &sim("ups1", "100ms", ""));
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid; `exec` keeps the
    // shell's pid for wardgate.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_wardgate"))
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        // 4 s: a check every 2 s, so that one slow commit round on a
        // loaded disk is not "no progress". The regression this guards (a
        // first check at once, before any progress could be made) still
        // warns at once whatever the period.
        .env("WATCHDOG_USEC", "4000000")
        .stderr(log)
        .spawn()
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 512];
    let recv = |seen: &mut Vec<String>, buf: &mut [u8]| {
        let n = sock.recv(buf).expect("a notification within WAIT");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    };
    while !seen.iter().any(|m| m.contains("WATCHDOG=1")) {
        recv(&mut seen, &mut buf);
    }
    assert!(seen[0].contains("READY=1"), "{seen:?}");
    signal(child.id(), libc::SIGTERM);
    while !seen.iter().any(|m| m.contains("STOPPING=1")) {
        recv(&mut seen, &mut buf);
    }
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    // A healthy start never claims the pipeline is stuck (the watchdog's
    // first check used to come at once, before any progress could be made).
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(!log.contains("not pinging"), "{log}");
}
