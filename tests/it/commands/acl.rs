//! The broker ACL example of docs/mqtt.md, set up from the document
//! itself: sites kept apart, client ids bound, writes limited.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::common::*;

/// docs/mqtt.md, read at run time (the tests use its broker examples as
/// written).
fn mqtt_doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/mqtt.md")).unwrap()
}

/// The docs' ACL example and a password file for `users` (user, password)
/// in `dir`; returns mosquitto's lines for both
/// (`password_file …`, `acl_file …`) and anonymous access off.
fn acl_from_docs(dir: &std::path::Path, users: &[(&str, &str)]) -> String {
    let doc = mqtt_doc();
    let acl = doc
        .split("mosquitto `acl_file`:\n\n```\n")
        .nth(1)
        .and_then(|r| r.split("```").next())
        .expect("the ACL example in docs/mqtt.md");
    let acl_path = dir.join("acl");
    std::fs::write(&acl_path, acl).unwrap();
    let pw = dir.join("passwd");
    for (i, (user, pass)) in users.iter().enumerate() {
        let mut c = std::process::Command::new("mosquitto_passwd");
        c.arg("-b");
        if i == 0 {
            c.arg("-c");
        }
        assert!(c.arg(&pw).args([user, pass]).status().unwrap().success());
    }
    for f in [&pw, &acl_path] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\n",
        pw.display(),
        acl_path.display()
    )
}

/// The ACL example of docs/mqtt.md, as written there: the gateway (user =
/// its site id) gets its own site's commands and answers them, the IOC's
/// command user sends them and reads the replies, and a gateway cannot
/// read another site's commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_example_keeps_sites_apart() {
    let dir = tempfile::tempdir().unwrap();
    let site = test_site();
    let other = format!("{site}-b");
    let access = acl_from_docs(
        dir.path(),
        &[(&site, "pa"), (&other, "pb"), ("ioc-cmd", "pc")],
    );
    let broker = Broker::start_with(&access);
    std::fs::write(dir.path().join("gw.pass"), "pa\n").unwrap();
    let login = format!(
        "[mqtt]\nusername = \"{site}\"\npassword_file = \"{}\"\nallow_plaintext_credentials = true\n",
        dir.path().join("gw.pass").display()
    );
    let text = config_text(broker.port, dir.path(), &cmd_config(&["status"], ""))
        .replace("[mqtt]\n", &format!("{}\n", login.trim_end()));
    let cfg = dir.path().join("wardgate.toml");
    std::fs::write(&cfg, text).unwrap();
    let gw = Process::start(&cfg, &dir.path().join("gw.log"));
    connected(&gw, 0).await;

    // The IOC's command user: sends, reads the reply.
    let ioc = Ioc::start(broker.port, &site, Some(("ioc-cmd", "pc"))).await;
    ioc.send("status", "acl-1", json!({})).await;
    assert_eq!(ioc.final_reply("acl-1").await["status"], "successful");

    // This site's gateway user subscribes to the other site's commands:
    // nothing arrives; the other site's own user gets it.
    let listen = |user: String, pass: &'static str, topic: String| {
        let port = broker.port;
        async move {
            use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
            let mut o = MqttOptions::new(
                format!("listen-{}", rand::random::<u32>()),
                "127.0.0.1",
                port,
            );
            o.set_credentials(user, pass);
            let (client, mut el) = AsyncClient::new(o, 10);
            let got: Arc<Mutex<Vec<String>>> = Arc::default();
            let g = got.clone();
            let subscribed = Arc::new(tokio::sync::Notify::new());
            let s2 = subscribed.clone();
            let task = tokio::spawn(async move {
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => s2.notify_one(),
                        Ok(Event::Incoming(Packet::Publish(p))) => g.lock().unwrap().push(p.topic),
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
            within(WAIT, "listener subscribed", subscribed.notified()).await;
            (got, task)
        }
    };
    let (snoop, t1) = listen(site.clone(), "pa", format!("ioc/{other}/cmd/#")).await;
    let (own, t2) = listen(other.clone(), "pb", format!("ioc/{other}/cmd/#")).await;
    let to_other = Ioc::start(broker.port, &other, Some(("ioc-cmd", "pc"))).await;
    to_other.send("status", "for-b", json!({})).await;
    eventually(
        WAIT,
        "the other site's gateway user gets its command",
        || !own.lock().unwrap().is_empty(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        snoop.lock().unwrap().is_empty(),
        "a gateway read another site's command: {:?}",
        snoop.lock().unwrap()
    );
    t1.abort();
    t2.abort();
}

/// docs/mqtt.md's broker setup, client ids and writes: with the gateways'
/// listener set as the docs say (`use_username_as_clientid true`) and the
/// docs' ACL, another ward's account that connects with this gateway's
/// client id does not take over its connection (no reconnect, no last
/// will), and what it publishes under this ward's subtree (a reading, a
/// retained "offline" status) never reaches the IOC's consumer, which
/// reads on a listener of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_example_binds_client_ids_and_writes() {
    use rumqttc::{AsyncClient, Event, MqttOptions, QoS};
    let dir = tempfile::tempdir().unwrap();
    let doc = mqtt_doc();
    let listener = doc
        .split("# mosquitto.conf: the gateways' listener\n")
        .nth(1)
        .and_then(|r| r.split("```").next())
        .expect("the gateways' listener in docs/mqtt.md");
    let rule = "use_username_as_clientid true";
    assert!(listener.contains(rule), "{listener}");
    let site = test_site();
    let other = format!("{site}-b");
    let access = acl_from_docs(
        dir.path(),
        &[(&site, "pa"), (&other, "pb"), ("ioc-ingest", "pi")],
    );
    // The gateways' listener with the docs' rule (TLS aside); the IOC's
    // consumer on a second listener without it.
    let broker = Broker::start_with_second_listener(&format!("{rule}\n{access}"), "");
    let ingest = Subscriber::start_login(
        broker.second_port.unwrap(),
        "ioc",
        &site,
        Some(("ioc-ingest", "pi")),
    )
    .await;
    std::fs::write(dir.path().join("gw.pass"), "pa\n").unwrap();
    let login = format!(
        "[mqtt]\nusername = \"{site}\"\npassword_file = \"{}\"\nallow_plaintext_credentials = true\n",
        dir.path().join("gw.pass").display()
    );
    let text = config_text(
        broker.port,
        dir.path(),
        &cmd_config(&["status"], &sim("ups1", "1s", "")),
    )
    .replace("[mqtt]\n", &format!("{}\n", login.trim_end()));
    let cfg = dir.path().join("wardgate.toml");
    std::fs::write(&cfg, text).unwrap();
    let gw = Process::start(&cfg, &dir.path().join("gw.log"));
    connected(&gw, 0).await;
    eventually(WAIT, "the gateway's readings reach the IOC", || {
        ingest
            .all()
            .iter()
            .any(|m| m.topic == format!("ioc/{site}/ups1/telemetry"))
    })
    .await;

    // Another ward's account, with this gateway's client id, writes into
    // this ward's subtree. mosquitto closes a 3.1.1 connection that
    // publishes where its ACL does not allow (a 3.1.1 PUBACK cannot say
    // "not authorised"): count what went out, then give the broker time to
    // deliver anything.
    let mut o = MqttOptions::new(format!("wardgate-{site}"), "127.0.0.1", broker.port);
    o.set_credentials(other.clone(), "pb");
    let (client, mut el) = AsyncClient::new(o, 10);
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s2 = sent.clone();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                    s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let forged = json!({"v": 1, "device": "ups1", "samples": [{"ts": 1, "seq": 999_999, "values": {"ups.load": 99.0}}]});
    client
        .publish(
            format!("ioc/{site}/ups1/telemetry"),
            QoS::AtLeastOnce,
            false,
            forged.to_string(),
        )
        .await
        .unwrap();
    client
        .publish(
            format!("ioc/{site}/status"),
            QoS::AtLeastOnce,
            true,
            r#"{"state":"offline","reason":"lost"}"#,
        )
        .await
        .unwrap();
    eventually(WAIT, "both forged messages went out", || {
        sent.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    task.abort();

    let log = gw.log_text();
    assert_eq!(
        log.matches("MQTT connected").count(),
        1,
        "the gateway was taken off by another ward's account:\n{log}"
    );
    let all = ingest.all();
    assert!(
        !all.iter().any(|m| m.topic == format!("ioc/{site}/status")
            && m.body.get("state").and_then(|s| s.as_str()) == Some("offline")),
        "an offline status reached the IOC"
    );
    assert!(
        !all.iter()
            .any(|m| m.topic == format!("ioc/{site}/ups1/telemetry")
                && m.body.to_string().contains("999999")),
        "a reading forged by another ward reached the IOC"
    );
}
