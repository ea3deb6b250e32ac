//! Helpers for the device tests: the machine's clock state read from the
//! kernel, a check of every record's `clock` field against it, a recording
//! TCP relay (to see what the gateway said to a peer), and timings between
//! published records.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::Subscriber;

/// "unsynced" or "synced", as the kernel says now (`clock_adjtime`,
/// read-only): `STA_UNSYNC` or `TIME_ERROR` mean not synchronised.
pub fn machine_clock() -> &'static str {
    // SAFETY: `timex` is plain old data; with `modes == 0` the call only
    // reads the kernel state into it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::clock_adjtime(libc::CLOCK_REALTIME, &mut tx) };
    assert_ne!(rc, -1, "clock_adjtime: {}", std::io::Error::last_os_error());
    if rc == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0 {
        "unsynced"
    } else {
        "synced"
    }
}

/// Every sample and event the subscriber received carries `clock`, and it
/// is the machine's state, read before the test (`before`) and now; the two
/// reads must agree, or the check cannot say which is right.
pub fn assert_clock_is_the_machines(sub: &Subscriber, before: &str) {
    let now = machine_clock();
    assert_eq!(
        before, now,
        "the machine's clock state changed during the test"
    );
    let mut seen = 0;
    for m in sub.all() {
        for array in ["samples", "events"] {
            for r in m.body[array].as_array().into_iter().flatten() {
                seen += 1;
                assert_eq!(
                    r["clock"], now,
                    "{}: record's clock is not the machine's ({now}): {r}",
                    m.topic
                );
            }
        }
    }
    assert!(seen > 0, "no records to check the clock of");
}

/// The `ts` of a record, in ms.
pub fn ts(r: &Value) -> i64 {
    r["ts"].as_i64().unwrap_or_else(|| panic!("ts in {r}"))
}

/// The first event with `code` for `device`, if any.
pub fn first_event(sub: &Subscriber, device: &str, code: &str) -> Option<Value> {
    sub.events(device)
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e["code"] == code)
}

/// The latest sample of `device` stamped before `ts_ms`.
pub fn last_sample_before(sub: &Subscriber, device: &str, ts_ms: i64) -> Option<Value> {
    sub.samples(device)
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| ts(s) < ts_ms)
        .max_by_key(ts)
}

/// Wall clock now, in ms since the epoch (what `ts` is measured in).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// A TCP relay on a loopback port of its own in front of `upstream`,
/// recording what clients sent through it.
pub struct Relay {
    pub port: u16,
    sent: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream: u16) -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
        let s = sent.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = l.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = [0u8; 4096];
                        loop {
                            match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    s.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if sw.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Relay { port, sent, task }
    }

    /// What clients sent, as text.
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
