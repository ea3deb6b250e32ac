//! The session's tests: the publisher sets aside what cannot be sent
//! and never stops silently.

use super::*;
use crate::spool::{Batch, SpoolError};

/// A lane fed by the test, recording what the sink did with it.
#[derive(Clone, Default)]
struct FakeLane(Arc<Mutex<FakeState>>);

#[derive(Default)]
struct FakeState {
    batches: std::collections::VecDeque<Batch>,
    set_aside: Vec<(u64, String)>,
    acked: Vec<u64>,
    nacks: usize,
}

impl FakeLane {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }
    fn push(&self, id: u64, device: &str, bodies: &[&str]) {
        self.state().batches.push_back(Batch {
            id,
            kind: crate::model::Kind::Sample,
            device: Arc::from(device),
            epoch: 0,
            first_seq: 0,
            historical: false,
            bodies: bodies.iter().map(|b| Arc::from(*b)).collect(),
        });
    }
}

impl Lane for FakeLane {
    async fn next_batch(&self, _max: usize) -> Result<Batch, SpoolError> {
        loop {
            if let Some(b) = self.state().batches.pop_front() {
                return Ok(b);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    fn ack(&self, id: u64) -> usize {
        self.state().acked.push(id);
        1
    }
    fn nack_all(&self) {
        self.state().nacks += 1;
    }
    fn set_link(&self, _up: bool) {}
    fn set_max_bytes(&self, _max_bytes: usize) {}
    fn set_aside(&self, id: u64, reason: &str) {
        self.state().set_aside.push((id, reason.to_owned()));
    }
    fn pending(&self) -> u64 {
        self.state().batches.len() as u64
    }
}

/// In milliseconds: a batch with a device id that cannot
/// be a topic, and one too big for a packet, are set aside and the next
/// one is published; when the client is gone the loop says why.
#[tokio::test]
async fn publisher_sets_aside_what_cannot_be_sent_and_never_stops_silently() {
    let cfg = Arc::new(
        crate::config::Config::from_toml(
            "site = \"s\"\n[mqtt]\nmax_packet_size = \"4 KiB\"\nmax_batch_bytes = \"1 KiB\"\n",
        )
        .unwrap()
        .mqtt_setup(),
    );
    let lane = FakeLane::default();
    let big = format!("{{\"seq\":1,\"pad\":\"{}\"}}", "x".repeat(5000));
    lane.push(1, "ups#1", &[r#"{"seq":0}"#]);
    lane.push(2, "ups1", &[&big]);
    lane.push(3, "ups1", &[r#"{"seq":2}"#]);
    let (tx, rx) = flume::bounded(10);
    let client = AsyncClient::from_senders(tx);
    let tracker: Arc<Mutex<AckTracker>> = Arc::default();
    let counters = Arc::new(SinkCounters::default());
    let task = tokio::spawn(publish_loop(
        client,
        lane.clone(),
        tracker.clone(),
        cfg,
        counters.clone(),
        None,
    ));
    let req = tokio::time::timeout(Duration::from_secs(5), rx.recv_async())
        .await
        .expect("a publish within 5 s")
        .unwrap();
    let rumqttc::Request::Publish(p) = req else {
        panic!("not a publish: {req:?}");
    };
    assert_eq!(p.topic, "ioc/s/ups1/telemetry");
    assert!(String::from_utf8_lossy(&p.payload).contains(r#""seq":2"#));
    assert_eq!(
        lane.state().set_aside,
        vec![(1, "bad device id".to_owned()), (2, "too large".to_owned())]
    );
    assert_eq!(counters.set_aside.load(Ordering::Relaxed), 2);
    assert_eq!(lock(&tracker).sent(1), Sent::Ok);
    assert_eq!(lock(&tracker).acked(1), Acked::Tag(Tag::Batch(3)));

    // The client's channel closes (the event loop is gone).
    drop(rx);
    lane.push(4, "ups1", &[r#"{"seq":3}"#]);
    let why = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the publisher ends")
        .unwrap();
    assert!(
        why.contains("handing a message to the MQTT client failed"),
        "{why}"
    );
    assert_eq!(
        lock(&tracker).outstanding(),
        0,
        "the abandoned tag was taken back"
    );
}
