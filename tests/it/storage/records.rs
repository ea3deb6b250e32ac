//! Bad records in the spool: a damaged row, poison device ids, a record
//! too large for the broker, a body that is not text. Each is dropped or
//! set aside, counted and reported; the rest of the backlog flows.

use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::common::storage::*;
use crate::common::*;

/// One flipped byte in one row's body: every message is valid
/// JSON and schema-valid, the damaged record is not delivered, everything
/// else is, `spool.corrupt_record` is raised and `spool.dropped` (and
/// `spool.dropped.corrupt`) count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_row_body_is_dropped_counted_and_reported() {
    let mut victim = None;
    let (rig, _gw, _rows, _) = damaged_backlog("damaged row", 1.0, |conn, rows| {
        check_replica(rows);
        let v = middle_sample(rows, "ups1").clone();
        // A bit flip (0x22 '"' -> 0x23 '#') on the quote opening the second key.
        let at = v
            .body
            .match_indices('"')
            .nth(2)
            .map(|(i, _)| i)
            .expect("a body with two keys");
        let mut bytes = v.body.clone().into_bytes();
        bytes[at] ^= 0x01;
        damage_body(conn, &v, &String::from_utf8(bytes).unwrap());
        let id = v.id;
        victim = Some(v);
        vec![id]
    })
    .await;
    let victim = victim.expect("a victim");
    let sub = &rig.sub;
    assert!(
        !received_keys(sub).contains(&victim.key()),
        "the damaged record {:?} was delivered",
        victim.key()
    );
    let evs = spool_event_values(sub, "spool.corrupt_record");
    assert!(
        evs.iter().any(|v| v["spool.records"].as_f64() >= Some(1.0)
            && v["spool.reason"].as_str().is_some_and(|s| !s.is_empty())),
        "spool.corrupt_record values need spool.records >= 1 and spool.reason: {evs:?}"
    );
    assert!(
        gateway_max(sub, "spool.dropped", 0) >= Some(1.0),
        "gateway telemetry must count the drop in spool.dropped too; last: {}",
        last_spool_values(sub)
    );
}

/// Rows whose device id is `de#ice` and `a+b` (not valid topic
/// levels): they are not published, everything else in the backlog and
/// every live reading is, and `spool.corrupt_record` is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_device_ids_do_not_stop_publishing() {
    let (rig, _gw, _rows, _) = damaged_backlog("poison rows", 2.0, |conn, rows| {
        check_replica(rows);
        let a = middle_sample(rows, "ups1").clone();
        let b = middle_sample(rows, "env1").clone();
        // `de#ice`: a flipped device byte, the crc (where there is one) no
        // longer matches, as on a real damaged card. `a+b`: crc made correct
        // for it, so only the device id check can catch it.
        conn.execute("UPDATE rec SET device = 'de#ice' WHERE id = ?1", [a.id])
            .unwrap();
        rewrite_row(conn, &b, "a+b", &b.body);
        vec![a.id, b.id]
    })
    .await;
    let evs = spool_event_values(&rig.sub, "spool.corrupt_record");
    assert!(
        evs.iter().any(|v| v["spool.records"].as_f64() >= Some(1.0)),
        "no spool.corrupt_record event with spool.records >= 1: {evs:?}"
    );
}

/// With `mqtt.max_packet_size = "64 KiB"` (and a broker that
/// enforces the same), one ~200 KB record with a correct checksum in the
/// backlog: it is quarantined (`spool.quarantined`), never sent, everything
/// else flows, and the link is not dropped over it (one birth, no
/// reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_record_is_quarantined_without_disconnects() {
    let devices = two_devices();
    let mut rig = Rig::new(RigOpts {
        broker: "max_packet_size 65536\n",
        mqtt: "max_packet_size = \"64 KiB\"\nmax_batch_bytes = \"32 KiB\"\n",
        devices: &devices,
        ..Default::default()
    })
    .await;
    rig.make_backlog(Duration::from_secs(3)).await;
    let conn = open_spool(&rig.spool);
    let rows = spool_rows(&conn);
    check_replica(&rows);
    let big = middle_sample(&rows, "ups1").clone();
    let mut body: Value = serde_json::from_str(&big.body).expect("a stored body is JSON");
    body["values"]["sim.padding"] = Value::String("x".repeat(200_000));
    let body = serde_json::to_string(&body).unwrap();
    // Correct crc where the schema has one (rewrite_row): only the size is
    // wrong about this record.
    rewrite_row(&conn, &big, &big.device, &body);
    drop(conn);

    rig.broker.restart();
    let sub = &rig.sub;
    let mark = sub.all().len();
    let mut gw = rig.start();
    wait_backlog_and_live(&mut gw, sub, &rows, &[big.id], BACKLOG).await;
    let _ = wait_for(WAIT, || {
        !gateway_events(sub, "spool.quarantined").is_empty()
            && gateway_max(sub, "mqtt.reconnects", mark).is_some()
            && gateway_max(sub, "spool.dropped.too_large", mark) >= Some(1.0)
    })
    .await;
    gw.assert_running("after the oversized record");
    sub.assert_all_valid();
    assert_backlog_and_live(&gw, sub, &rows, &[big.id]);
    assert!(
        !received_keys(sub).contains(&big.key()),
        "the oversized record was delivered"
    );
    let evs = spool_event_values(sub, "spool.quarantined");
    assert!(
        evs.iter().any(|v| v["record.device"] == "ups1"
            && v["record.seq"].as_f64() == Some(big.seq as f64)
            && v["record.bytes"].as_f64() > Some(65_536.0)
            && v["mqtt.max_packet_size"].as_f64() == Some(65_536.0)),
        "spool.quarantined with record.device = ups1, record.seq = {}, record.bytes > 65536, mqtt.max_packet_size = 65536: got {evs:?}; gateway events: {:?}",
        big.seq,
        gateway_codes(sub)
    );
    // Births published live during this run (a retained copy comes again
    // whenever the subscriber resubscribes: not a connection).
    let births = sub
        .all()
        .iter()
        .skip(mark)
        .filter(|m| m.topic.ends_with("/status") && !m.retain && m.body["state"] == "online")
        .count();
    assert_eq!(
        births,
        1,
        "one connection in this run (births on the status topic); log tail:\n{}",
        gw.log_tail()
    );
    assert_eq!(
        gateway_max(sub, "mqtt.reconnects", mark),
        Some(0.0),
        "mqtt.reconnects in the gateway telemetry of this run; last: {}",
        last_spool_values(sub)
    );
    assert!(
        gateway_max(sub, "spool.dropped.too_large", mark) >= Some(1.0),
        "spool.dropped.too_large counts it; last: {}",
        last_spool_values(sub)
    );
}

/// A backlog row whose body is a BLOB: the rest of the backlog
/// and live readings arrive, the row is counted as corrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_body_does_not_block_the_backlog() {
    damaged_backlog("blob row", 1.0, |conn, rows| {
        let victim = middle_sample(rows, "ups1");
        conn.execute(
            "UPDATE rec SET body = CAST(body AS BLOB) WHERE id = ?1",
            [victim.id],
        )
        .unwrap();
        let t: String = conn
            .query_row(
                "SELECT typeof(body) FROM rec WHERE id = ?1",
                [victim.id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(t, "blob");
        vec![victim.id]
    })
    .await;
}
