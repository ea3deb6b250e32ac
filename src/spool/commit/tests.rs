//! The cap rule of a full spool: events past their share go first.

use super::*;
use crate::model::{Reading, Severity, Values};

#[test]
fn events_past_their_share_go_first() {
    assert_eq!(first_to_drop(1000, 10, 50), (Kind::Sample, 50));
    assert_eq!(first_to_drop(1000, 250, 50), (Kind::Sample, 50));
    assert_eq!(first_to_drop(1000, 260, 50), (Kind::Event, 10));
    assert_eq!(first_to_drop(1000, 900, 50), (Kind::Event, 50));
    assert_eq!(first_to_drop(3, 3, 1), (Kind::Event, 1));
}

/// A device flapping ten events per sample into a full spool: the
/// telemetry stays, the events are held to their share.
#[tokio::test]
async fn an_event_storm_cannot_push_telemetry_out() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "site = \"s\"\n[spool]\npath = \"{}\"\nmax_bytes = \"64 KiB\"\n",
        dir.path().join("spool.db").display()
    );
    let cfg = crate::config::Config::from_toml(&text).unwrap().spool;
    let (s, _) = Spool::open(&cfg, "s", &["mqtt"]).unwrap();
    s.lane("mqtt").unwrap().set_link(false);
    let dev: Arc<str> = Arc::from("d");
    for i in 0..4000 {
        let r = if i % 11 == 0 {
            let mut v = Values::new();
            v.num("x", f64::from(i));
            Reading::Sample(v)
        } else {
            Reading::Event {
                severity: Severity::Warning,
                code: "device.fault".into(),
                message: format!("flap {i}"),
                values: Values::new(),
            }
        };
        s.push(&dev, r).unwrap();
        if i % 200 == 0 {
            s.flush(false).unwrap();
        }
    }
    s.flush(false).unwrap();
    let mut st = s.take_store();
    let db = st.db.as_mut().unwrap();
    let (rows, events) = (db.row_count().unwrap(), db.count_kind(Kind::Event).unwrap());
    assert!(db.used_bytes().unwrap() <= 64 * 1024);
    s.put_store(st);
    assert!(events > 0, "events are kept too");
    assert!(rows - events >= rows / 2, "{events} events of {rows} rows");
    assert!(
        events <= rows / EVENT_SHARE + rows / 10,
        "{events} events of {rows} rows"
    );
    assert!(s.counters().dropped(DropReason::Full) > 0);
}
