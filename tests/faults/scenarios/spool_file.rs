//! Bad content in the spool file: garbage over the whole file, one
//! damaged row, a record too large for the broker.

use std::path::Path;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;

use crate::peers::Broker;
use crate::rig::{Load, Outcome, Rig};
use crate::util::sleep_ms;
use crate::Opts;

/// Every (device, kind, seq) a spool file holds, read with SQL (the columns
/// exist in every schema so far).
pub fn rows_in(path: &Path) -> Vec<(String, &'static str, u64)> {
    let Ok(c) = rusqlite::Connection::open(path) else {
        return vec![];
    };
    let Ok(mut st) = c.prepare("SELECT device, kind, seq FROM rec") else {
        return vec![];
    };
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    let Ok(rows) = rows else { return vec![] };
    rows.flatten()
        .map(|(d, k, s)| (d, if k == 1 { "events" } else { "samples" }, s as u64))
        .collect()
}

/// Garbage over spool.db between runs: the gateway starts and never reuses
/// a seq. What the overwritten file held is counted as destroyed.
pub async fn corrupt_file(o: &Opts) -> Outcome {
    let mut rig = Rig::new("corrupt_file", o, None).await;
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(20)).await.is_none() {
        rig.fail("no live reading after start".into());
    }
    // Some backlog too, so the file holds rows.
    rig.broker.stop();
    sleep_ms(2000).await;
    rig.term_expect_0(Duration::from_secs(10), "stop before the damage")
        .await;
    for r in rows_in(&rig.spool) {
        rig.destroyed.insert(r);
    }
    rig.note(format!(
        "{} rows destroyed with the file",
        rig.destroyed.len()
    ));
    let len = std::fs::metadata(&rig.spool).map(|m| m.len()).unwrap_or(0);
    let mut junk = vec![0u8; len.max(8192) as usize];
    rand::rng().fill(&mut junk[..]);
    if let Err(e) = std::fs::write(&rig.spool, &junk) {
        rig.fail(format!("writing garbage: {e}"));
    }
    rig.broker.spawn();
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(20)).await.is_none() {
        let code = rig.gw.exit_code();
        let tail = rig.gw.log_tail(2);
        rig.fail(format!(
            "corrupt spool: no live reading within 20 s (exit {code:?}; log: {tail})"
        ));
    }
    sleep_ms(2000).await;
    rig.term_expect_0(Duration::from_secs(10), "stop after the damage")
        .await;
    rig.finish().await
}

/// Stops the gateway with a backlog on disk (an outage, then SIGTERM).
pub async fn backlog_on_disk(rig: &mut Rig, load: Load, secs: u64) {
    let idx = rig.rec.len();
    rig.start(load);
    if rig.live_after(idx, Duration::from_secs(20)).await.is_none() {
        rig.fail("no live reading after start".into());
    }
    rig.broker.stop();
    sleep_ms(secs * 1000).await;
    rig.term_expect_0(Duration::from_secs(10), "stop with a backlog")
        .await;
}

/// The columns of table `rec`.
pub fn rec_columns(c: &rusqlite::Connection) -> Vec<String> {
    let Ok(mut st) = c.prepare("PRAGMA table_info(rec)") else {
        return vec![];
    };
    st.query_map([], |r| r.get::<_, String>(1))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// One stored row's body has a byte flipped while the gateway is stopped:
/// it must never be published as invalid JSON; the rest arrives.
pub async fn damaged_row(o: &Opts) -> Outcome {
    let mut rig = Rig::new("damaged_row", o, None).await;
    backlog_on_disk(&mut rig, Load::Normal, 3).await;
    let hit = (|| -> Result<(String, i64, u64, String), String> {
        let c = rusqlite::Connection::open(&rig.spool).map_err(|e| e.to_string())?;
        let (id, device, seq, body): (i64, String, i64, String) = c
            .query_row(
                "SELECT id, device, seq, body FROM rec WHERE device = 'ups1' AND kind = 0 \
                 ORDER BY seq LIMIT 1 OFFSET 5",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(|e| format!("no ups1 row in the backlog: {e}"))?;
        // Flip one bit of the first quote inside the values: `"` (0x22)
        // becomes `#` (0x23), a single bit error.
        let at = body
            .find("\"values\":{\"")
            .map(|i| i + "\"values\":{".len())
            .ok_or("body has no values")?;
        let mut bytes = body.clone().into_bytes();
        bytes[at] ^= 0x01;
        let damaged = String::from_utf8(bytes).map_err(|e| e.to_string())?;
        c.execute(
            "UPDATE rec SET body = ?1 WHERE id = ?2",
            rusqlite::params![damaged, id],
        )
        .map_err(|e| e.to_string())?;
        Ok((device, id, seq as u64, damaged))
    })();
    match hit {
        Ok((device, id, seq, damaged)) => {
            // Not destroyed: the gateway must declare it (corrupt), and
            // that declaration excuses it, once.
            rig.damaged.insert((device.clone(), "samples", seq));
            let short: String = damaged.chars().take(60).collect();
            rig.note(format!("damaged row {id} ({device} seq {seq}): {short}…"));
        }
        Err(e) => rig.fail(format!("could not damage a row: {e}")),
    }
    rig.finish().await
}

/// IEEE CRC-32 (the one crc32fast computes), for the spool's `crc` column.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for p in parts {
        for &b in *p {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
    }
    !c
}

/// A stored reading far bigger than any MQTT packet limit sits at the head
/// of ups1's backlog. Made with SQL, not with this crate's `Spool` (the
/// binary under test may have a newer schema than the library this harness
/// is built with): an existing row's body gets a 2 MiB value, and when the
/// table has a `crc` column the checksum is recomputed as docs/spec say
/// (crc32 over kind byte, epoch BE u64, seq BE u64, device, 0, body, and
/// for a row that keeps `boot` and `boottime`: 0, boot, 0, boottime BE), so
/// the record is valid but too large, not corrupt. The broker, like an
/// operations centre's, refuses packets over 1 MiB (mosquitto
/// `max_packet_size`: it disconnects the sender), which is also the new
/// default `mqtt.max_packet_size`. Expectation: env1 keeps delivering,
/// ups1's other backlog arrives, the big one is declared.
pub async fn oversized_reading(o: &Opts) -> Outcome {
    let broker = Broker::start_with("max_packet_size 1048576\n");
    let mut rig = Rig::with_broker("oversized_reading", o, None, broker).await;
    backlog_on_disk(&mut rig, Load::Normal, 3).await;
    let made = (|| -> Result<(u64, bool), String> {
        let c = rusqlite::Connection::open(&rig.spool).map_err(|e| e.to_string())?;
        let cols = rec_columns(&c);
        let has_epoch = cols.iter().any(|c| c == "epoch");
        let has_crc = cols.iter().any(|c| c == "crc");
        let has_boot = cols.iter().any(|c| c == "boot") && cols.iter().any(|c| c == "boottime");
        let q = format!(
            "SELECT id, kind, device, seq, body, {}, {} FROM rec WHERE device = 'ups1' AND kind = 0 ORDER BY seq LIMIT 1",
            if has_epoch { "epoch" } else { "0" },
            if has_boot { "boot, boottime" } else { "NULL, NULL" }
        );
        #[allow(clippy::type_complexity)]
        let (id, kind, device, seq, body, epoch, boot, boottime): (
            i64,
            i64,
            String,
            i64,
            String,
            i64,
            Option<String>,
            Option<i64>,
        ) = c
            .query_row(&q, [], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .map_err(|e| format!("no ups1 row in the backlog: {e}"))?;
        let mut v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        v["values"]["pad"] = Value::String("x".repeat(2 << 20));
        let big = v.to_string();
        c.execute(
            "UPDATE rec SET body = ?1 WHERE id = ?2",
            rusqlite::params![big, id],
        )
        .map_err(|e| e.to_string())?;
        if has_crc {
            let kind_b = [kind as u8];
            let epoch_be = (epoch as u64).to_be_bytes();
            let seq_be = (seq as u64).to_be_bytes();
            let mut parts: Vec<&[u8]> = vec![
                &kind_b,
                &epoch_be,
                &seq_be,
                device.as_bytes(),
                &[0],
                big.as_bytes(),
            ];
            // A row that keeps when it was taken has those covered too.
            let boottime_be = boottime.map(|t| t.to_be_bytes());
            if let (Some(b), Some(t)) = (&boot, &boottime_be) {
                parts.extend([&[0u8][..], b.as_bytes(), &[0], &t[..]]);
            }
            let crc = crc32(&parts);
            c.execute(
                "UPDATE rec SET crc = ?1 WHERE id = ?2",
                rusqlite::params![crc as i64, id],
            )
            .map_err(|e| e.to_string())?;
        }
        Ok((seq as u64, has_crc))
    })();
    match made {
        Ok((seq, crc)) => rig.note(format!(
            "ups1 sample seq {seq} made 2 MiB{}",
            if crc { " (crc recomputed)" } else { "" }
        )),
        Err(e) => rig.fail(format!("could not make the big row: {e}")),
    }
    // The broker returns; env1 must keep flowing while ups1's backlog is
    // sent around the big record.
    rig.broker.spawn();
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    // The window opens at the gateway's first birth message, not at its
    // start: start-up on a loaded machine is not the uplink being blocked.
    // env1's live readings are counted (not messages: readings that queue
    // up travel together), at 20 a second half of them must arrive.
    let Some(online) = rig
        .wait_while_up(idx, Duration::from_secs(20), &|r| r.is_status_online())
        .await
    else {
        let tail = rig.gw.log_tail(2);
        rig.fail(format!(
            "no birth message within 20 s of the start (log: {tail})"
        ));
        return rig.finish().await;
    };
    let (t, t_wall) = {
        let recs = rig.rec.lock();
        (recs[online].at, recs[online].wall_ms)
    };
    let window = Duration::from_millis(o.pick(6_000, 30_000));
    sleep_ms(window.saturating_sub(t.elapsed()).as_millis() as u64).await;
    // Readings taken in the window and delivered in it.
    let env1_live = {
        let recs = rig.rec.lock();
        recs[online..]
            .iter()
            .filter(|r| r.at < t + window && r.is_live("env1"))
            .filter_map(|r| r.json())
            .map(|v| {
                v["samples"].as_array().map_or(0, |a| {
                    a.iter()
                        .filter(|s| {
                            s["historical"] == false
                                && s["ts"].as_i64().is_some_and(|ts| ts >= t_wall)
                        })
                        .count()
                })
            })
            .sum::<usize>()
    };
    let expected = (window.as_millis() / 50) as usize;
    rig.note(format!(
        "env1 live readings in the {} s after the birth, with the big record queued: {env1_live} (about {expected} read)",
        window.as_secs()
    ));
    if env1_live * 2 < expected {
        rig.fail(format!(
            "uplink blocked: env1 got {env1_live} live readings of about {expected}"
        ));
    }
    rig.term_expect_0(Duration::from_secs(10), "stop").await;
    rig.finish().await
}
