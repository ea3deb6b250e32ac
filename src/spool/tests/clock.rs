//! Time: readings taken before the clock synchronised, driven
//! by a fake clock that stands still unless moved, so times are exact.
//! Spooled readings (memory and disk, every lane) go out corrected;
//! delivered ones are reported with their exact seq range; a reading of
//! another boot never gets this boot's offset.

use super::*;
use crate::clock::{Clock, FakeClock};
use crate::spool::db::StreamKey;

const DAY: i64 = 86_400_000;
/// The unsynchronised wall clock at the start (as `fake-hwclock` leaves it).
const W0: i64 = 1_790_000_000_000;
/// `CLOCK_BOOTTIME` at the start.
const B0: i64 = 20_000;

fn open_clocked(
    c: &SpoolConfig,
    clock: &Arc<FakeClock>,
    sinks: &[Lane],
) -> (Arc<Spool>, Vec<LaneHandle>) {
    let (s, _) = Spool::open_with_clock(c, "s", sinks, clock.clone() as Arc<dyn Clock>).unwrap();
    let lanes = sinks
        .iter()
        .map(|n| {
            let lane = s.lane(*n).unwrap();
            lane.set_max_bytes(1 << 20);
            lane
        })
        .collect();
    (s, lanes)
}

fn bodies(b: &Batch) -> Vec<serde_json::Value> {
    b.bodies
        .iter()
        .map(|x| serde_json::from_str(x).unwrap())
        .collect()
}

/// (seq, ts, clock) of every record of a batch.
fn times(b: &Batch) -> Vec<(u64, i64, String)> {
    bodies(b)
        .iter()
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                v["ts"].as_i64().unwrap(),
                v["clock"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Everything a lane has for one kind right now (memory, then the
/// backlog), acknowledged: (seq, ts, clock), by seq.
async fn drain(lane: &LaneHandle, kind: Kind) -> Vec<(u64, i64, String)> {
    drain_max(lane, kind, 100).await
}

async fn drain_max(lane: &LaneHandle, kind: Kind, max: usize) -> Vec<(u64, i64, String)> {
    let mut out = Vec::new();
    for (_, b) in drain_all(lane, max).await {
        if b.kind == kind {
            out.extend(times(&b));
        }
    }
    out.sort();
    out
}

/// Every batch a lane has right now, acknowledged, with its kind; done
/// when a few commit rounds (backlog reads) bring nothing more.
async fn drain_all(lane: &LaneHandle, max: usize) -> Vec<(Kind, Batch)> {
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 3 {
        let _ = lane.spool().flush(false);
        match tokio::time::timeout(Duration::from_millis(50), lane.next_batch(max)).await {
            Ok(b) => {
                idle = 0;
                let b = b.unwrap();
                lane.ack(b.id);
                out.push((b.kind, b));
            }
            Err(_) => idle += 1,
        }
    }
    out
}

fn corrections(s: &Spool) -> Vec<Notice> {
    notices(s)
        .into_iter()
        .filter(|n| matches!(n, Notice::ClockCorrected { .. }))
        .collect()
}

fn corrected(device: &str, kind: Kind, epoch: u64, range: (u64, u64), n: u64, off: i64) -> Notice {
    Notice::ClockCorrected {
        device: device.into(),
        kind,
        epoch,
        first_seq: range.0,
        last_seq: range.1,
        records: n,
        offset_ms: off,
    }
}

/// Readings 0..=11 taken a second apart, unsynchronised, on two sinks
/// (MQTT and InfluxDB lanes). On MQTT: 0..=4 and an event delivered, 5 in
/// flight when the clock syncs, 6..=11 spilled to disk (link down). On
/// InfluxDB: nothing delivered. Then NTP steps the clock by +3 days.
#[tokio::test]
async fn spooled_readings_go_out_corrected_and_delivered_ones_are_reported_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(W0, B0, "boot-a"));
    let (s, lanes) = open_clocked(
        &cfg(dir.path(), "spill", ""),
        &clock,
        &[Lane::Mqtt, Lane::Influx],
    );
    let (mqtt, influx) = (&lanes[0], &lanes[1]);
    mqtt.set_link(true);
    let dev: Arc<str> = Arc::from("ups1");
    let taken_at = |seq: u64| W0 + seq as i64 * 1000;
    for i in 0..5 {
        assert_eq!(s.push(&dev, sample(i as f64)).unwrap(), i);
        clock.advance(1000);
    }
    s.push(&dev, event()).unwrap();
    // Delivered unsynchronised on MQTT: the event, samples 0..=4.
    let ev = next(mqtt, 100).await;
    assert_eq!(times(&ev), vec![(0, taken_at(5), "unsynced".into())]);
    mqtt.ack(ev.id);
    let b = next(mqtt, 100).await;
    assert_eq!(seqs(&b), vec![0, 1, 2, 3, 4]);
    assert!(times(&b).iter().all(|t| t.2 == "unsynced"));
    mqtt.ack(b.id);
    // 5 is in flight when the clock syncs.
    s.push(&dev, sample(5.0)).unwrap();
    clock.advance(1000);
    let in_flight = next(mqtt, 100).await;
    assert_eq!(seqs(&in_flight), vec![5]);
    // 6..=11 spill to disk: MQTT's link is down.
    mqtt.set_link(false);
    for i in 6..12 {
        s.push(&dev, sample(i as f64)).unwrap();
        clock.advance(1000);
    }
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 6, "MQTT's 6..=11 on disk");
    assert!(corrections(&s).is_empty(), "nothing to say while unsynced");

    // NTP: +3 days, at once.
    clock.sync(3 * DAY);
    s.flush(false).unwrap();
    // The in-flight batch is acknowledged after the sync: already counted.
    mqtt.ack(in_flight.id);
    s.flush(false).unwrap();
    let epoch = s.epoch();
    let mut got = corrections(&s);
    got.sort_by_key(|n| format!("{n:?}"));
    assert_eq!(
        got,
        vec![
            corrected("ups1", Kind::Event, epoch, (0, 0), 1, 3 * DAY),
            corrected("ups1", Kind::Sample, epoch, (0, 5), 6, 3 * DAY),
        ],
        "one event per device and kind, the exact range delivered (or in flight)"
    );
    // The rows on disk were corrected in place, with a checksum that holds.
    let key = StreamKey {
        kind: Kind::Sample,
        device: "ups1".into(),
        epoch,
    };
    let (good, bad) = with_db(&s, |d| d.window("mqtt", &key, None, 100).unwrap());
    assert!(bad.is_empty(), "corrected rows pass their checks");
    assert_eq!(good.len(), 6);
    for r in &good {
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["clock"], "corrected", "row {}", r.seq);
        assert_eq!(v["ts"], taken_at(r.seq) + 3 * DAY, "row {}", r.seq);
    }
    // A reading after the sync is synced.
    s.push(&dev, sample(12.0)).unwrap();
    let now_ts = clock.wall_ms();

    // Every spooled reading goes out corrected with its exact time.
    let exact = |seq: u64| taken_at(seq) + 3 * DAY;
    mqtt.set_link(true);
    let out = drain(mqtt, Kind::Sample).await;
    let want: Vec<(u64, i64, String)> = (6..12)
        .map(|q| (q, exact(q), "corrected".into()))
        .chain([(12, now_ts, "synced".into())])
        .collect();
    assert_eq!(out, want, "MQTT: the disk backlog corrected, then live");
    influx.set_link(true);
    let mut ev_out = Vec::new();
    let mut out = Vec::new();
    for (kind, b) in drain_all(influx, 100).await {
        match kind {
            Kind::Event => ev_out.extend(times(&b)),
            Kind::Sample => out.extend(times(&b)),
        }
    }
    out.sort();
    let want: Vec<(u64, i64, String)> = (0..12)
        .map(|q| (q, exact(q), "corrected".into()))
        .chain([(12, now_ts, "synced".into())])
        .collect();
    assert_eq!(
        out, want,
        "InfluxDB: every reading of its memory queue corrected"
    );
    assert_eq!(
        ev_out,
        vec![(0, taken_at(5) + 3 * DAY, "corrected".into())],
        "the event too"
    );
    assert!(corrections(&s).is_empty(), "nothing reported twice");
    assert_eq!(s.counters().clock_uncorrected.load(Ordering::Relaxed), 0);
}

/// A record acknowledged on one lane and not the other: the one lane's
/// copy is covered by the event, the other lane's goes out corrected.
/// Readings already read ahead from disk (not yet taken) are corrected too.
#[tokio::test]
async fn read_ahead_backlog_is_corrected_and_acks_after_sync_are_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(W0, B0, "boot-a"));
    let (s, lanes) = open_clocked(&cfg(dir.path(), "spill", ""), &clock, &[Lane::Mqtt]);
    let lane = &lanes[0];
    lane.set_link(false);
    let dev: Arc<str> = Arc::from("d");
    for i in 0..30 {
        s.push(&dev, sample(i as f64)).unwrap();
        clock.advance(1000);
    }
    s.flush(false).unwrap();
    lane.set_link(true);
    // Batches of 10 are read ahead; the first is taken and delivered, the
    // second taken (in flight), the third left ready.
    let first = next(lane, 10).await;
    assert!(first.historical);
    lane.ack(first.id);
    let second = next(lane, 10).await;
    assert_eq!(seqs(&second), (10..20).collect::<Vec<_>>());
    clock.sync(DAY);
    s.flush(false).unwrap();
    let epoch = s.epoch();
    assert_eq!(
        corrections(&s),
        vec![corrected("d", Kind::Sample, epoch, (0, 19), 20, DAY)]
    );
    lane.ack(second.id);
    // Same bounds: the batch read ahead before the sync is the one sent.
    let rest = drain_max(lane, Kind::Sample, 10).await;
    let want: Vec<(u64, i64, String)> = (20..30)
        .map(|q| (q, W0 + q as i64 * 1000 + DAY, "corrected".into()))
        .collect();
    assert_eq!(rest, want);
    s.flush(false).unwrap();
    assert!(
        corrections(&s).is_empty(),
        "the late ack is not reported again"
    );
    assert_eq!(rows(&s), 0);
}

/// Readings stamped by other tasks while the sync is seen: each is either
/// taken before (and corrected with the others) or after (synced); none
/// goes out unsynchronised.
#[tokio::test]
async fn readings_taken_while_the_clock_syncs_are_never_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(W0, B0, "boot-a"));
    let (s, lanes) = open_clocked(
        &cfg(dir.path(), "spill", "memory_max = 100000"),
        &clock,
        &[Lane::Mqtt],
    );
    let pushers: Vec<_> = (0..3)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let dev: Arc<str> = Arc::from(format!("d{t}"));
                for i in 0..10_000 {
                    s.push(&dev, sample(i as f64)).unwrap();
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    clock.sync(3 * DAY);
    for p in pushers {
        p.join().unwrap();
    }
    lanes[0].set_link(true);
    let out = drain(&lanes[0], Kind::Sample).await;
    assert_eq!(out.len(), 30_000);
    assert!(
        out.iter()
            .all(|(_, ts, c)| *ts == W0 + 3 * DAY && c != "unsynced"),
        "every reading corrected or synced: {:?}",
        out.iter()
            .find(|(_, ts, c)| *ts != W0 + 3 * DAY || c == "unsynced")
    );
    assert!(corrections(&s).is_empty(), "nothing had been delivered");
}

/// Rows kept on the card across a reboot are of another boot: after the
/// next sync they go out as they were taken, and are never covered by this
/// boot's offset; this boot's readings are corrected.
#[tokio::test]
async fn a_restart_in_a_new_boot_never_applies_the_offset_of_another_boot() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), "spill", "");
    let clock = Arc::new(FakeClock::new(W0, B0, "boot-a"));
    let dev: Arc<str> = Arc::from("d");
    {
        let (s, lanes) = open_clocked(&c, &clock, &[Lane::Mqtt]);
        lanes[0].set_link(true);
        for i in 0..2 {
            s.push(&dev, sample(i as f64)).unwrap();
            clock.advance(1000);
        }
        let b = next(&lanes[0], 100).await;
        lanes[0].ack(b.id);
        lanes[0].set_link(false);
        for i in 2..5 {
            s.push(&dev, sample(i as f64)).unwrap();
            clock.advance(1000);
        }
        s.close().unwrap();
    }
    // A power cut and a reboot: the monotonic clock starts again, the wall
    // clock is the stale one again.
    clock.reboot("boot-b", W0 + 60_000, 5_000);
    let (s, lanes) = open_clocked(&c, &clock, &[Lane::Mqtt]);
    let lane = &lanes[0];
    lane.set_link(true);
    let first_b = s.push(&dev, sample(5.0)).unwrap();
    assert_eq!(first_b, 5, "a clean stop: the numbers continue");
    let live = next(lane, 100).await;
    assert_eq!(seqs(&live), vec![5]);
    lane.ack(live.id);
    clock.advance(1000);
    lane.set_link(false);
    s.push(&dev, sample(6.0)).unwrap();
    s.flush(false).unwrap();
    clock.sync(3 * DAY);
    s.flush(false).unwrap();
    let epoch = s.epoch();
    assert_eq!(
        corrections(&s),
        vec![corrected("d", Kind::Sample, epoch, (5, 5), 1, 3 * DAY)],
        "boot b's delivered reading only"
    );
    lane.set_link(true);
    let out = drain(lane, Kind::Sample).await;
    assert_eq!(
        out,
        vec![
            (2, W0 + 2000, "unsynced".into()),
            (3, W0 + 3000, "unsynced".into()),
            (4, W0 + 4000, "unsynced".into()),
            (6, W0 + 60_000 + 1000 + 3 * DAY, "corrected".into()),
        ],
        "boot a's rows as taken; boot b's corrected"
    );
    s.flush(false).unwrap();
    assert!(
        corrections(&s).is_empty(),
        "boot a's rows acked: not reported"
    );
}

/// A restart of the service in the same boot (not a reboot): rows kept by
/// the previous run are of this boot and are corrected.
#[tokio::test]
async fn a_restart_in_the_same_boot_corrects_the_rows_of_the_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), "spill", "");
    let clock = Arc::new(FakeClock::new(W0, B0, "boot-a"));
    let dev: Arc<str> = Arc::from("d");
    {
        let (s, lanes) = open_clocked(&c, &clock, &[Lane::Mqtt]);
        lanes[0].set_link(false);
        for i in 0..3 {
            s.push(&dev, sample(i as f64)).unwrap();
            clock.advance(1000);
        }
        s.close().unwrap();
    }
    clock.advance(5000);
    clock.sync(-DAY);
    let (s, lanes) = open_clocked(&c, &clock, &[Lane::Mqtt]);
    lanes[0].set_link(true);
    let out = drain(&lanes[0], Kind::Sample).await;
    assert_eq!(
        out,
        (0..3)
            .map(|q| (q, W0 + q as i64 * 1000 - DAY, "corrected".into()))
            .collect::<Vec<_>>(),
        "a clock that was ahead is corrected back"
    );
    assert!(corrections(&s).is_empty());
}

/// Synchronisation lost and found again: the second stretch gets its own
/// offset; the first is not reported twice.
#[tokio::test]
async fn sync_lost_and_found_again_reports_each_stretch_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(W0, B0, "boot-a"));
    let (s, lanes) = open_clocked(&cfg(dir.path(), "spill", ""), &clock, &[Lane::Mqtt]);
    let lane = &lanes[0];
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("d");
    s.push(&dev, sample(0.0)).unwrap();
    let b = next(lane, 100).await;
    lane.ack(b.id);
    clock.sync(3 * DAY);
    s.flush(false).unwrap();
    let epoch = s.epoch();
    assert_eq!(
        corrections(&s),
        vec![corrected("d", Kind::Sample, epoch, (0, 0), 1, 3 * DAY)]
    );
    clock.unsync();
    clock.advance(1000);
    s.push(&dev, sample(1.0)).unwrap();
    let b = next(lane, 100).await;
    assert_eq!(times(&b), vec![(1, W0 + 1000 + 3 * DAY, "unsynced".into())]);
    lane.ack(b.id);
    s.push(&dev, sample(2.0)).unwrap();
    clock.sync(-250);
    s.flush(false).unwrap();
    assert_eq!(
        corrections(&s),
        vec![corrected("d", Kind::Sample, epoch, (1, 1), 1, -250)]
    );
    let out = drain(lane, Kind::Sample).await;
    assert_eq!(
        out,
        vec![(2, W0 + 1000 + 3 * DAY - 250, "corrected".into())]
    );
}

/// A spool of the previous version (no `boot`, `boottime` columns) opens,
/// keeps its rows, and they are sent as they were: never corrected.
#[tokio::test]
async fn a_spool_of_the_previous_version_keeps_its_rows_uncorrected() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"{"seq":5,"ts":1000,"clock":"unsynced","values":{}}"#;
    {
        let c = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE rec (id INTEGER PRIMARY KEY, sink TEXT NOT NULL, kind INTEGER NOT NULL,
               device TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,
               synced INTEGER NOT NULL, body TEXT NOT NULL,
               epoch INTEGER NOT NULL DEFAULT 0, crc INTEGER);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO meta VALUES ('seq/0/d', 7), ('clean', 1);",
        )
        .unwrap();
        let crc = row_checksum(Kind::Sample, 0, "d", 5, body);
        c.execute(
            "INSERT INTO rec (sink, kind, device, seq, ts, synced, body, epoch, crc) VALUES ('mqtt', 0, 'd', 5, 1000, 0, ?1, 0, ?2)",
            rusqlite::params![body, crc as i64],
        )
        .unwrap();
    }
    let clock = Arc::new(FakeClock::new(W0, B0, "boot-a"));
    let (s, lanes) = open_clocked(&cfg(dir.path(), "spill", ""), &clock, &[Lane::Mqtt]);
    assert_eq!(rows(&s), 1, "the row was kept");
    clock.sync(DAY);
    assert_eq!(s.push(&Arc::from("d"), sample(0.0)).unwrap(), 7);
    lanes[0].set_link(true);
    let out = drain(&lanes[0], Kind::Sample).await;
    assert_eq!(
        out,
        vec![(5, 1000, "unsynced".into()), (7, W0 + DAY, "synced".into())]
    );
    assert_eq!(s.counters().dropped_corrupt.load(Ordering::Relaxed), 0);
}

/// A damaged row of this boot is never blessed with a new checksum by the
/// correction: it stays damaged and is dropped when read, counted.
#[tokio::test]
async fn the_correction_never_blesses_a_damaged_row() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(W0, B0, "boot-a"));
    let (s, lanes) = open_clocked(&cfg(dir.path(), "spill", ""), &clock, &[Lane::Mqtt]);
    lanes[0].set_link(false);
    let dev: Arc<str> = Arc::from("d");
    for i in 0..3 {
        s.push(&dev, sample(i as f64)).unwrap();
    }
    s.flush(false).unwrap();
    with_db(&s, |d| {
        // A flipped bit in the middle row's body, and one in the last
        // row's boottime (which decides its corrected time).
        d.conn
            .execute(
                "UPDATE rec SET body = replace(body, '\"x\":1.0', '\"x\":3.0') WHERE seq = 1",
                [],
            )
            .unwrap();
        d.conn
            .execute("UPDATE rec SET boottime = boottime + 1 WHERE seq = 2", [])
            .unwrap();
    });
    clock.sync(DAY);
    s.flush(false).unwrap();
    lanes[0].set_link(true);
    let out = drain(&lanes[0], Kind::Sample).await;
    assert_eq!(out, vec![(0, W0 + DAY, "corrected".into())]);
    assert_eq!(s.counters().dropped_corrupt.load(Ordering::Relaxed), 2);
}

/// The seq of every sample row of device `d` on disk.
/// (The test rewrites a row's boot, which its checksum covers: counted
/// here straight from the table.)
fn disk_rows(s: &Spool) -> Vec<u64> {
    with_db(s, |d| {
        let mut st = d
            .conn
            .prepare("SELECT seq FROM rec WHERE device = 'd' AND kind = ?1 ORDER BY seq")
            .unwrap();
        st.query_map([Kind::Sample.as_i64()], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|r| r.unwrap() as u64)
            .collect()
    })
}

/// One age check now (the commit round makes one a minute).
fn age_check(s: &Spool) {
    let mut st = s.store.take();
    st.caps.last_age_check = None;
    st.enforce_caps(&s.cfg, std::time::Instant::now(), &s.clock, &s.report)
        .unwrap();
    s.store.put(st);
}

/// `spool.max_age` (1 day here) against a wall clock stepped relative to
/// `CLOCK_BOOTTIME`: a step of more than a day purges nothing, in this boot
/// or from another; real time passing ages this boot's records by the
/// monotonic clock, whatever the wall clock says.
#[tokio::test]
async fn a_stepped_clock_does_not_purge_the_backlog_through_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), "spill", "max_age = \"1d\"");
    let clock = Arc::new(FakeClock::new(W0, B0, "boot-a"));
    clock.sync(0);
    let (s, lanes) = open_clocked(&c, &clock, &[Lane::Mqtt]);
    lanes[0].set_link(false);
    let dev: Arc<str> = Arc::from("d");
    for i in 0..3 {
        s.push(&dev, sample(i as f64)).unwrap();
        clock.advance(1000);
    }
    s.flush(false).unwrap();
    age_check(&s);
    assert_eq!(disk_rows(&s), vec![0, 1, 2], "young records stay");

    // A step of 40 days forward, synchronised all along (a wrong time
    // source): nothing goes.
    clock.step(40 * DAY);
    age_check(&s);
    assert_eq!(disk_rows(&s), vec![0, 1, 2], "a step is not age");

    // A record of another boot, taken synced 2 days before the first
    // ones: the wall clock is all there is to age it, and it is not
    // trusted while stepped.
    with_db(&s, |d| {
        d.conn
            .execute(
                "UPDATE rec SET boot = 'boot-0', ts = ?1 WHERE seq = 0",
                [W0 - 2 * DAY],
            )
            .unwrap()
    });
    age_check(&s);
    assert_eq!(
        disk_rows(&s),
        vec![0, 1, 2],
        "not while the clock is stepped"
    );

    // The clock comes back: the old boot's record is 2 days old by a wall
    // clock that agrees with the monotonic one again, and goes.
    clock.step(-40 * DAY);
    age_check(&s);
    assert_eq!(disk_rows(&s), vec![1, 2]);

    // Real time passes (both clocks move): this boot's records age by the
    // monotonic clock, the wall clock stepped back by 10 days or not.
    clock.step(-10 * DAY);
    clock.advance(DAY + 10_000);
    age_check(&s);
    assert!(disk_rows(&s).is_empty(), "aged a day by CLOCK_BOOTTIME");
}
