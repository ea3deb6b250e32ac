//! Sensors and alarms: thresholds through the whole path.

use crate::common::*;

/// A threshold on a simulated sensor raises an event (both languages)
/// that reaches the broker, schema-valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_event_reaches_the_broker() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let dev = "[[device]]\nid = \"env1\"\ntype = \"sim\"\nprofile = \"sensor\"\ninterval = \"100ms\"\n\
               [[device.threshold]]\nvalue = \"ambient.temperature\"\nhigh = 10.0\nhysteresis = 1.0\nfor = \"300ms\"\n\
               severity = \"critical\"\nlabel = \"phòng máy\"\nlabel_en = \"equipment room\"\nunit = \"°C\"\n";
    let gw = Gateway::start(config(broker.port, dir.path(), dev)).await;
    eventually(WAIT, "threshold event", || {
        sub.events("env1")
            .iter()
            .any(|(_, e)| e["code"] == "threshold.high")
    })
    .await;
    let (_, e) = sub
        .events("env1")
        .into_iter()
        .find(|(_, e)| e["code"] == "threshold.high")
        .unwrap();
    assert_eq!(e["severity"], "critical");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.starts_with("equipment room ") && msg.ends_with(" °C > 10 °C"),
        "{msg}"
    );
    assert!(e["values"]["message.vi"]
        .as_str()
        .unwrap()
        .starts_with("phòng máy "));
    assert_eq!(e["values"]["threshold.limit"], 10.0);
    // Raised once, not on every sample.
    let n = sub.seqs("env1").len();
    eventually(WAIT, "more samples", || sub.seqs("env1").len() > n + 5).await;
    assert_eq!(
        sub.events("env1")
            .iter()
            .filter(|(_, e)| e["code"] == "threshold.high")
            .count(),
        1
    );
    // The page shows it in Vietnamese.
    let (_, page) = http_get(gw.web.unwrap(), "/body?lang=vi", "").await;
    assert!(page.contains("phòng máy"), "{page}");
    gw.stop().await;
    sub.assert_all_valid();
}
