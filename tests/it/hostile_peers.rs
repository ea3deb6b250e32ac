//! Hostile and broken peers: a NUT server that
//! never stops listing variables, one that offers names outside the
//! contract and overlong values, and one whose error changes every poll.
//! Each peer is a fake upsd written here (a tokio listener on port 0
//! speaking NUT's line protocol), so it can do what no real upsd does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::peers::Snmpd;
use crate::common::*;

/// What the fake upsd answers to one `LIST VAR <ups>`.
enum Answer {
    /// These lines, then wait for the next command.
    Text(String),
    /// `BEGIN LIST VAR` and then VAR lines until the client hangs up.
    Flood,
}

type Script = dyn Fn(&str, u64) -> Answer + Send + Sync;

/// A fake upsd on a loopback port of its own. `script` gets the UPS name
/// and how many `LIST VAR`s came before this one (all connections).
struct FakeUpsd {
    port: u16,
    lists: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpsd {
    async fn start(script: impl Fn(&str, u64) -> Answer + Send + Sync + 'static) -> FakeUpsd {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let lists = Arc::new(AtomicU64::new(0));
        let script: Arc<Script> = Arc::new(script);
        let n = lists.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let (script, n) = (script.clone(), n.clone());
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let Some(ups) = line.strip_prefix("LIST VAR ") else {
                            if w.write_all(b"OK\n").await.is_err() {
                                return;
                            }
                            continue;
                        };
                        let ups = ups.trim_matches('"').to_owned();
                        match script(&ups, n.fetch_add(1, Ordering::SeqCst)) {
                            Answer::Text(t) => {
                                if w.write_all(t.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            Answer::Flood => {
                                let mut chunk = format!("BEGIN LIST VAR {ups}\n");
                                for i in 0..2000 {
                                    chunk.push_str(&format!(
                                        "VAR {ups} flood.v{i} \"{}\"\n",
                                        "7".repeat(200)
                                    ));
                                }
                                let body = chunk.split_once('\n').unwrap().1.to_owned();
                                let mut first = true;
                                loop {
                                    let b = if first { &chunk } else { &body };
                                    first = false;
                                    if w.write_all(b.as_bytes()).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        FakeUpsd { port, lists, task }
    }

    fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }
}

impl Drop for FakeUpsd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn nut(id: &str, port: u16, ups: &str, interval: &str) -> String {
    format!(
        "[[device]]\nid = \"{id}\"\ntype = \"nut\"\nhost = \"127.0.0.1\"\nport = {port}\nups = \"{ups}\"\ninterval = \"{interval}\"\ntimeout = \"2s\"\n"
    )
}

fn good_reply(ups: &str, status: &str) -> String {
    format!(
        "BEGIN LIST VAR {ups}\nVAR {ups} ups.status \"{status}\"\nVAR {ups} battery.charge \"100\"\nEND LIST VAR {ups}\n"
    )
}

/// The resident memory of a process in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A upsd that lists variables without end: the gateway's memory stays
/// under 64 MiB, the device faults with the limit in the reason, and a
/// simulated device keeps publishing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_variable_list_is_cut_off() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let upsd = FakeUpsd::start(|_, _| Answer::Flood).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}{}",
        sim("sim1", "200ms", ""),
        nut("flood", upsd.port, "u", "500ms")
    );
    let cfg = process_config(dir.path(), broker.port, &extra);
    let gw = Process::start(&cfg, &dir.path().join("log"));
    let pid = gw.child.id();
    const LIMIT_KIB: u64 = 64 * 1024;
    let mut peak = 0u64;
    let mut fault_at: Option<usize> = None;
    let started = tokio::time::Instant::now();
    // Watch for 12 s or until the flood was cut off several times, failing
    // at once when memory passes the bound (before the code had a limit it
    // grew by ~150 MB/s until the allocator aborted).
    while started.elapsed() < Duration::from_secs(12) || upsd.lists() < 4 {
        let rss = rss_kib(pid).unwrap_or_else(|| panic!("gateway gone; log:\n{}", gw.log_text()));
        peak = peak.max(rss);
        assert!(
            rss < LIMIT_KIB,
            "gateway RSS {rss} KiB under the flood, over 64 MiB (peak {peak} KiB)"
        );
        if fault_at.is_none()
            && sub
                .events("flood")
                .iter()
                .any(|(_, e)| e["code"] == "device.fault")
        {
            fault_at = Some(sub.samples("sim1").len());
        }
        assert!(
            started.elapsed() < WAIT,
            "flood served {} times",
            upsd.lists()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "peak RSS under the flood: {peak} KiB ({} floods served)",
        upsd.lists()
    );
    let fault = sub
        .events("flood")
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e["code"] == "device.fault")
        .expect("the flooding upsd faults its device");
    let msg = fault["message"].as_str().unwrap();
    assert!(msg.contains("more than 1000 variables"), "{msg}");
    assert!(
        sub.samples("flood").is_empty(),
        "nothing of the flood is published"
    );
    // The simulated device kept publishing after the fault.
    let at = fault_at.expect("fault seen while watching");
    eventually(WAIT, "sim1 keeps publishing", || {
        sub.samples("sim1").len() >= at + 10
    })
    .await;
    assert!(
        upsd.lists() >= 2,
        "the device was asked again after the cut"
    );
    sub.assert_all_valid();
}

/// A upsd that offers a variable named like markup and overlong values:
/// the name is never published (every message checked against the
/// schemas), the long word is cut to 256 characters, a line longer than
/// NUT's limit faults its device, and each is counted and logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_long_values_never_reach_the_broker() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let long_word = "é".repeat(450);
    let huge = "H".repeat(10_000);
    let (lw, hg) = (long_word.clone(), huge.clone());
    let upsd = FakeUpsd::start(move |ups, _| {
        Answer::Text(match ups {
            "bad" => format!(
                "BEGIN LIST VAR bad\nVAR bad ups.status \"OL\"\nVAR bad battery.charge \"100\"\n\
                 VAR bad \"x.<img src=x onerror=alert(1)>\" \"1\"\nVAR bad ups.model \"{lw}\"\nEND LIST VAR bad\n"
            ),
            _ => format!(
                "BEGIN LIST VAR {ups}\nVAR {ups} ups.status \"OL\"\nVAR {ups} ups.model \"{hg}\"\nEND LIST VAR {ups}\n"
            ),
        })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[gateway]\ntelemetry_interval = \"300ms\"\n{}{}",
        nut("upsbad", upsd.port, "bad", "200ms"),
        nut("upshuge", upsd.port, "huge", "200ms"),
    );
    let cfg = process_config(dir.path(), broker.port, &extra);
    let gw = Process::start(&cfg, &dir.path().join("log"));
    eventually(WAIT, "upsbad samples and upshuge's fault", || {
        sub.samples("upsbad").len() >= 5
            && sub
                .events("upshuge")
                .iter()
                .any(|(_, e)| e["code"] == "device.fault")
    })
    .await;
    // The gateway's own telemetry counts what was left out or cut.
    let errors = || {
        sub.samples("gateway")
            .iter()
            .filter_map(|(_, s)| s["values"]["device.upsbad.errors"].as_f64())
            .fold(0.0, f64::max)
    };
    eventually(WAIT, "device.upsbad.errors counts the bad name", || {
        errors() >= 4.0
    })
    .await;
    for m in sub.all() {
        let text = m.body.to_string();
        assert!(
            !text.contains("onerror") && !text.contains("<img"),
            "published: {text}"
        );
        assert!(!text.contains(&"H".repeat(300)), "the huge value left");
        assert!(!text.contains(&long_word), "the long word left uncut");
    }
    for (_, s) in sub.samples("upsbad") {
        let v = &s["values"];
        assert_eq!(v["ups.status"], "OL");
        let model = v["ups.model"].as_str().expect("the long word, cut");
        assert_eq!(model.chars().count(), 256, "{model}");
        assert!(long_word.starts_with(model));
    }
    assert!(sub.samples("upshuge").is_empty());
    let fault = sub
        .events("upshuge")
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e["code"] == "device.fault")
        .unwrap();
    assert!(
        fault["message"].as_str().unwrap().contains("1024 bytes"),
        "{fault}"
    );
    sub.assert_all_valid();
    // Logged once per name, however many polls brought it.
    let log = gw.log_text();
    let named = log.lines().filter(|l| l.contains("onerror")).count();
    assert_eq!(named, 1, "lines naming the bad name:\n{log}");
    let cut = log
        .lines()
        .filter(|l| l.contains("ups.model") && l.contains("upsbad"))
        .count();
    assert_eq!(cut, 1, "lines naming the cut value:\n{log}");
}

/// A upsd whose error text changes on every poll raises one `device.fault`
/// until the device recovers; the status shows the latest reason. After
/// recovery, a new fault is one new event again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_error_text_raises_one_fault_until_recovery() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    // Polls 0-2: good; 3-17: an error naming the poll; 18-22: good; then
    // errors again.
    let upsd = FakeUpsd::start(|ups, n| {
        Answer::Text(if n < 3 || (18..23).contains(&n) {
            good_reply(ups, "OL")
        } else {
            format!("ERR FLAP-{n}\n")
        })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        broker.port,
        dir.path(),
        &nut("flappy", upsd.port, "u", "150ms"),
    );
    let gw = Gateway::start(cfg).await;
    eventually(WAIT, "fifteen failing polls", || upsd.lists() >= 17).await;
    // The latest reason is on the page.
    eventually(WAIT, "the latest reason in the status", || {
        let st = gw.status.get();
        let reason = format!("{:?}", st.devices["flappy"].health);
        reason.contains("FLAP-16") || reason.contains("FLAP-17")
    })
    .await;
    eventually(WAIT, "device.restored", || {
        count_distinct_events(&sub, "flappy", "device.restored") == 1
    })
    .await;
    let before_recovery = sub
        .events("flappy")
        .into_iter()
        .skip_while(|(_, e)| e["code"] != "device.fault")
        .take_while(|(_, e)| e["code"] != "device.restored")
        .filter(|(_, e)| e["code"] == "device.fault")
        .count();
    assert_eq!(
        before_recovery,
        1,
        "fault events before recovery: {:#?}",
        sub.events("flappy")
    );
    eventually(WAIT, "the second run of errors", || upsd.lists() >= 35).await;
    eventually(WAIT, "a new fault after recovery", || {
        count_distinct_events(&sub, "flappy", "device.fault") >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count_distinct_events(&sub, "flappy", "device.fault"),
        2,
        "{:#?}",
        sub.events("flappy")
    );
    sub.assert_all_valid();
    gw.stop().await;
}

/// An SNMP agent whose interface table has no end in sight (2,200 extra
/// ifName rows, the column the interface lookup walks first, from a real
/// snmpd with `override` lines): the walk stops at the limit
/// (2,048 rows), the router faults naming it, nothing of it is published,
/// and a simulated device keeps publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_snmp_table_is_cut_off() {
    let extra: String = (10_000..12_200)
        .map(|i| format!("override .1.3.6.1.2.1.31.1.1.1.1.{i} octet_str if{i}\n"))
        .collect();
    let snmpd = Snmpd::start_with(&extra);
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let devs = format!(
        "{}[[device]]\nid = \"router\"\ntype = \"snmp\"\nhost = \"127.0.0.1\"\nport = {}\n\
         community = \"wardtest\"\ninterfaces = [\"lo\"]\ninterval = \"1s\"\ntimeout = \"2s\"\nretries = 0\n",
        sim("sim1", "200ms", ""),
        snmpd.port
    );
    let cfg = process_config(dir.path(), broker.port, &devs);
    let gw = Process::start(&cfg, &dir.path().join("log"));
    eventually(WAIT, "the router faults at the row limit", || {
        sub.events("router")
            .iter()
            .any(|(_, e)| e["code"] == "device.fault")
    })
    .await;
    let fault = sub
        .events("router")
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e["code"] == "device.fault")
        .expect("seen above");
    let msg = fault["message"].as_str().unwrap_or_default();
    assert!(msg.contains("more than 2048 rows"), "{msg}");
    assert!(
        sub.samples("router").is_empty(),
        "nothing of the endless table is published"
    );
    let seen = sub.samples("sim1").len();
    eventually(WAIT, "sim1 keeps publishing", || {
        sub.samples("sim1").len() >= seen + 5
    })
    .await;
    drop(gw);
    sub.assert_all_valid();
}
