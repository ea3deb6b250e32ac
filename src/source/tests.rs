use super::*;

fn handle() -> (DeviceHandle, StatusHub, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let text = format!(
        "site = \"s\"\n[spool]\npath = \"{}\"\n",
        dir.path().join("s.db").display()
    );
    let cfg = crate::config::Config::from_toml(&text).expect("config");
    let (spool, _) = Spool::open(&cfg.spool, "s", &[crate::spool::Lane::Mqtt]).expect("spool");
    let hub = StatusHub::new("s");
    let h = DeviceHandle::new("d", "nut", Duration::from_secs(1), spool, hub.clone());
    (h, hub, dir)
}

fn codes(hub: &StatusHub) -> Vec<String> {
    let mut c: Vec<String> = hub.get().events.iter().map(|e| e.code.clone()).collect();
    c.reverse();
    c
}

#[test]
fn cut_keeps_whole_characters() {
    assert_eq!(cut("abc", 5), "abc");
    assert_eq!(cut("ééé", 2), "éé");
    assert_eq!(cut("", 0), "");
    assert!(matches!(cut("abc", 3), std::borrow::Cow::Borrowed(_)));
}

#[tokio::test]
async fn names_outside_the_contract_are_left_out_and_long_words_cut() {
    let (h, hub, _d) = handle();
    for _ in 0..3 {
        let mut v = Values::new();
        v.num("ups.load", 12.0);
        v.set("x.<img src=x onerror=alert(1)>", "1");
        v.set(&"n".repeat(129), "1");
        v.set("ups.model", "é".repeat(300));
        v.set("ups.mfr", "a".repeat(MAX_STRING_CHARS));
        h.sample(v);
    }
    let d = hub.get().devices["d"].clone();
    let names: Vec<&str> = d.last_values.0.keys().map(String::as_str).collect();
    assert_eq!(names, ["ups.load", "ups.mfr", "ups.model"]);
    assert_eq!(
        d.last_values.get("ups.model"),
        Some(&Value::Str("é".repeat(MAX_STRING_CHARS)))
    );
    assert_eq!(d.errors["bad_name"], 6, "two names, three polls");
    assert_eq!(d.errors["long_value"], 3, "256 characters are not cut");
    assert_eq!(h.lock().names_logged.len(), 3, "each name logged once");
    // An event's values too, but the gateway's own message is whole.
    let mut v = Values::new();
    v.set("ups.status", "O".repeat(1000));
    v.set("message.vi", "ư".repeat(1000));
    v.set("bad name", "1");
    h.event(Severity::Info, "ups.x", "m", v);
    let d = hub.get().devices["d"].clone();
    assert_eq!((d.errors["bad_name"], d.errors["long_value"]), (7, 4));
}

#[tokio::test]
async fn one_fault_event_until_the_device_recovers() {
    let (h, hub, _d) = handle();
    h.sample(Values::new());
    for i in 0..50 {
        h.fault(&format!("upsd: FLAP-{i}"));
        if i % 10 == 5 {
            h.mark_stale("upsd: data stale");
        }
    }
    assert_eq!(
        codes(&hub),
        ["device.fault", "device.lost"],
        "one event per kind of trouble"
    );
    assert_eq!(
        hub.get().devices["d"].health,
        Health::Fault("upsd: FLAP-49".into()),
        "the status has the latest reason"
    );
    h.sample(Values::new());
    h.fault("upsd: FLAP-50");
    h.fault("upsd: FLAP-51");
    assert_eq!(
        codes(&hub),
        [
            "device.fault",
            "device.lost",
            "device.restored",
            "device.fault"
        ]
    );
    h.fault(&"r".repeat(2000));
    match hub.get().devices["d"].health.clone() {
        Health::Fault(r) => assert_eq!(r.chars().count(), MAX_REASON_CHARS),
        h => panic!("{h:?}"),
    }
}
