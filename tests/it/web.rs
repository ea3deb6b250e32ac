//! The local page, the API and the metrics against a running gateway, and
//! the page in a real headless browser.

use std::time::Duration;

use crate::common::*;

/// Runs `dump` (a browser reading the page) while the devices and the link
/// stay as they are: every device ok before it starts, and no device event
/// (lost, fault, restored) nor link change while it runs; else it runs
/// again (three tries). A page test asserts what the page shows for a known
/// state; a device of a loaded machine going stale for a moment while
/// chromium takes both cores is not what it is about.
pub(crate) async fn while_steady<T, F>(
    status: &wardgate::status::StatusHub,
    what: &str,
    mut dump: impl FnMut() -> F,
) -> T
where
    F: std::future::Future<Output = T>,
{
    let all_ok = |s: &wardgate::status::Snapshot| {
        s.devices
            .values()
            .all(|d| d.health == wardgate::model::Health::Ok)
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        eventually(WAIT, "every device ok", || all_ok(&status.get())).await;
        let before = status.get();
        let from = wardgate::model::now_ms();
        let out = dump().await;
        let after = status.get();
        let changed: Vec<String> = after
            .events
            .iter()
            .filter(|e| {
                e.ts >= from
                    && ["device.lost", "device.fault", "device.restored"].contains(&e.code.as_str())
            })
            .map(|e| format!("{} {}", e.device, e.code))
            .collect();
        let link = |s: &wardgate::status::Snapshot| (s.uplink.connected, s.uplink.since_ms);
        if changed.is_empty() && all_ok(&after) && link(&before) == link(&after) {
            return out;
        }
        eprintln!("{what}: the state changed while the browser read the page ({changed:?}); again");
        seen.push(changed);
    }
    panic!("{what}: the devices or the link never stayed steady while the page was read: {seen:?}");
}

/// /api/status follows a broker outage and a device fault; /metrics is
/// Prometheus text; no secret appears anywhere; basic auth is enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_metrics_health_and_no_secrets() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mqtt.pw"), "MQTT-SECRET-123\n").unwrap();
    std::fs::write(dir.path().join("web.pw"), "WEB-SECRET-456\n").unwrap();
    let text = config_text(
        broker.port,
        dir.path(),
        "[[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"100ms\"\n\
         [[device]]\nid = \"ups2\"\ntype = \"megatec\"\nserial = \"/dev/serial/by-id/not-plugged\"\ninterval = \"200ms\"\n",
    )
    .replace("[mqtt]\n", &format!("[mqtt]\nusername = \"ward\"\npassword_file = \"{}\"\n", dir.path().join("mqtt.pw").display()))
    .replace("[web]\n", &format!("[web]\nusername = \"staff\"\npassword_file = \"{}\"\n", dir.path().join("web.pw").display()));
    let gw = Gateway::start(wardgate::config::Config::from_toml(&text).unwrap()).await;
    let addr = gw.web.expect("page enabled");
    use base64::Engine as _;
    let auth = format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode("staff:WEB-SECRET-456")
    );
    // Without credentials: refused.
    assert_eq!(http_get(addr, "/api/status", "").await.0, 401);
    assert_eq!(http_get(addr, "/", "").await.0, 401);
    let status = || async {
        let (code, text) = http_get(addr, "/api/status", &auth).await;
        assert_eq!(code, 200, "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = status().await;
        if s["uplink"]["connected"] == true && s["devices"]["ups2"]["health"]["state"] == "fault" {
            assert!(s["devices"]["ups2"]["health"]["reason"]
                .as_str()
                .unwrap()
                .contains("no such serial port"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connected+fault: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Broker outage: visible within one refresh (docs/api.md: every second)
    // plus detection (the broker closes the socket), plus 2 s for a loaded
    // machine: a documented latency, so a bound of its own, not WAIT.
    broker.stop();
    let t = std::time::Instant::now();
    loop {
        let s = status().await;
        if s["uplink"]["connected"] == false {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "outage not shown: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, health) = http_get(addr, "/healthz", "").await;
    assert_eq!(code, 200, "{health}");
    let (code, metrics) = http_get(addr, "/metrics", &auth).await;
    assert_eq!(code, 200);
    let body = metrics.split("\r\n\r\n").nth(1).unwrap_or("");
    let lines: Vec<String> = body.lines().map(str::to_owned).collect();
    let parsed =
        prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).expect("Prometheus text");
    let names: Vec<&str> = parsed.samples.iter().map(|s| s.metric.as_str()).collect();
    for want in [
        "wardgate_samples_read",
        "wardgate_records_published",
        "wardgate_records_spooled",
        "wardgate_spool_bytes",
        "wardgate_spool_dropped",
        "wardgate_uplink_up",
        "wardgate_device_health",
        "wardgate_build_info",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let up = parsed
        .samples
        .iter()
        .find(|s| s.metric == "wardgate_uplink_up")
        .unwrap();
    assert!(matches!(up.value, prometheus_parse::Value::Gauge(v) if v == 0.0));
    for path in [
        "/",
        "/body",
        "/api/status",
        "/metrics",
        "/healthz",
        "/?lang=en",
    ] {
        let (code, text) = http_get(addr, path, &auth).await;
        // Every page must really answer (a 401 or 404 page holds no
        // secret either, and the check below would prove nothing).
        assert_eq!(code, 200, "{path}: {text}");
        assert!(
            !text.contains("MQTT-SECRET-123"),
            "{path} leaks the broker password"
        );
        assert!(
            !text.contains("WEB-SECRET-456"),
            "{path} leaks the page password"
        );
    }
    gw.stop().await;
}

/// Headless chromium ([`crate::common::chromium`]) preferring Vietnamese,
/// as a phone in the ward; `args` are more flags and the URL. Its stdout.
fn chromium(args: &[&str], profile: &std::path::Path) -> String {
    let out = crate::common::chromium(
        profile,
        std::iter::once("--accept-lang=vi-VN,vi").chain(args.iter().copied()),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page in a real browser: Vietnamese headline, a card per device,
/// English on request, the outage sentence when the broker is gone, and a
/// screenshot as a test artifact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_in_headless_chromium() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // Forgiving timings (stale after 3 s): chromium takes both cores of a
    // loaded machine while it reads the page, and this test is about what
    // the page shows, not about how soon a late device is noticed.
    let gw = Gateway::start(config(
        broker.port,
        dir.path(),
        "[[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"1s\"\n\
         [[device]]\nid = \"env1\"\ntype = \"sim\"\nprofile = \"sensor\"\ninterval = \"1s\"\n",
    ))
    .await;
    eventually(WAIT, "connected", || gw.status.get().uplink.connected).await;
    let url = format!("http://{}/", gw.web.unwrap());
    let profile = tempfile::tempdir().unwrap();
    let dom = while_steady(&gw.status, "vi page", || {
        tokio::task::spawn_blocking({
            let (u, p) = (url.clone(), profile.path().to_path_buf());
            move || chromium(&["--dump-dom", &u], &p)
        })
    })
    .await
    .unwrap();
    assert!(dom.contains("Mọi thứ hoạt động bình thường"), "{dom}");
    // ups1, env1 and the Pi's own health.
    assert_eq!(
        dom.matches("class=\"card ok\"").count(),
        3,
        "one card per device"
    );
    assert!(dom.contains("data-device=\"pi\""));
    assert!(dom.contains("đang dùng điện lưới"));
    let dom = while_steady(&gw.status, "en page", || {
        tokio::task::spawn_blocking({
            let (u, p) = (format!("{url}?lang=en"), profile.path().to_path_buf());
            move || chromium(&["--dump-dom", &u], &p)
        })
    })
    .await
    .unwrap();
    assert!(dom.contains("All systems normal"), "{dom}");
    // No external assets: no absolute URL in any src or href, and no
    // http(s) URL anywhere in the page (both must hold).
    for bad in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!dom.contains(bad), "external asset ({bad}) in {dom}");
    }
    assert!(
        !dom.contains("http://") && !dom.contains("https://"),
        "an external URL in the page: {dom}"
    );

    broker.stop();
    eventually(WAIT, "link down", || !gw.status.get().uplink.connected).await;
    // A browser that has not picked English with the link (the profile
    // above remembers that choice in a cookie).
    let profile = tempfile::tempdir().unwrap();
    // A stale UPS would come before the outage in the headline.
    let dom = while_steady(&gw.status, "outage page", || {
        tokio::task::spawn_blocking({
            let (u, p) = (url.clone(), profile.path().to_path_buf());
            move || chromium(&["--dump-dom", &u], &p)
        })
    })
    .await
    .unwrap();
    assert!(
        dom.contains("Mất kết nối tới trung tâm — dữ liệu đang được lưu tạm"),
        "{dom}"
    );
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&shot).unwrap();
    let png = shot.join("status-page-outage.png");
    let _ = std::fs::remove_file(&png);
    tokio::task::spawn_blocking({
        let (u, p, png) = (url.clone(), profile.path().to_path_buf(), png.clone());
        move || {
            chromium(
                &[
                    &format!("--screenshot={}", png.display()),
                    "--window-size=412,915",
                    &u,
                ],
                &p,
            )
        }
    })
    .await
    .unwrap();
    assert!(
        std::fs::metadata(&png)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "screenshot written"
    );
    gw.stop().await;
}

/// SIGUSR1 asks the running daemon to identify itself (LED flicker for 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_starts_identify() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, addr, _no_broker) = start_without_broker(dir.path()).await;
    let identify = || async {
        let (_, text) = http_get(addr, "/api/status", "").await;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["identify_until_ms"].as_i64()
    };
    assert_eq!(identify().await, None);
    gw.signal(libc::SIGUSR1);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(until) = identify().await {
            let left = until - wardgate::model::now_ms();
            assert!((50_000..=60_000).contains(&left), "{left}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "identify not started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));
}

/// `/healthz` is 503 when the pipeline has never refreshed the status, and
/// again once it has not refreshed it for more than 10 s (a hung pipeline:
/// the page's own task still answers); 200 in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_503_when_the_status_is_not_refreshed() {
    let hub = wardgate::status::StatusHub::new(&test_site());
    let cfg = wardgate::config::WebConfig {
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let (addr, serve) = wardgate::status::web::bind(
        &cfg,
        hub.subscribe(),
        std::sync::Arc::new(wardgate::status::history::History::default()),
        cancel.clone(),
    )
    .await
    .expect("bind the page");
    let server = tokio::spawn(serve);
    let (code, text) = http_get(addr, "/healthz", "").await;
    assert_eq!(code, 503, "never refreshed: {text}");
    assert!(text.contains("not refreshed"), "{text}");
    hub.update(|s| s.updated_ms = wardgate::model::now_ms());
    let (code, text) = http_get(addr, "/healthz", "").await;
    assert_eq!(code, 200, "just refreshed: {text}");
    let asked = std::time::Instant::now();
    hub.update(|s| s.updated_ms = wardgate::model::now_ms() - 11_000);
    let (code, text) = http_get(addr, "/healthz", "").await;
    assert_eq!(code, 503, "not refreshed for 11 s: {text}");
    // The age in whole seconds: 11, or more by as long as the request took
    // on a loaded machine.
    let slack = asked.elapsed().as_secs() + 1;
    let age: u64 = text
        .split("not refreshed for ")
        .nth(1)
        .and_then(|t| t.split(" s").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no age in {text}"));
    assert!((11..=11 + slack).contains(&age), "{text}");
    cancel.cancel();
    within(WAIT, "page stops", server).await.unwrap();
}

/// A sysfs LED directory as the kernel shows it, in a temp dir.
fn fake_sysfs_led(dir: &std::path::Path) -> std::path::PathBuf {
    let led = dir.join("led");
    std::fs::create_dir_all(&led).unwrap();
    std::fs::write(led.join("trigger"), "none [mmc0] timer heartbeat\n").unwrap();
    std::fs::write(led.join("brightness"), "0\n").unwrap();
    led
}

fn led_files(led: &std::path::Path) -> Vec<(String, std::time::SystemTime)> {
    ["trigger", "brightness"]
        .iter()
        .map(|f| {
            let p = led.join(f);
            (
                std::fs::read_to_string(&p).unwrap(),
                std::fs::metadata(&p).unwrap().modified().unwrap(),
            )
        })
        .collect()
}

/// With a bad configuration wardgate does not start and does not touch the
/// LED (so it is off, or keeps the Pi's default trigger), as the README,
/// led.rs, the page legend and docs/technician.md say. First the same LED
/// with a valid configuration, to show that this test sees it when the LED
/// is driven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_exits_78_and_leaves_the_led_alone() {
    let dir = tempfile::tempdir().unwrap();
    // No broker (none needed): a port with no server.
    let no_broker = closed_port();
    let with_led = |led: &std::path::Path, extra: &str| {
        config_text(no_broker.port, dir.path(), extra).replace(
            "[led]\nbackend = \"none\"",
            &format!("[led]\nbackend = \"sysfs\"\npath = \"{}\"", led.display()),
        )
    };
    // A valid configuration: the LED is taken over (trigger "none").
    let good_led = fake_sysfs_led(&dir.path().join("good"));
    let cfg = dir.path().join("good.toml");
    std::fs::write(&cfg, with_led(&good_led, "")).unwrap();
    let mut gw = Process::start(&cfg, &dir.path().join("good.log"));
    eventually(WAIT, "the LED taken over", || {
        std::fs::read_to_string(good_led.join("trigger")).unwrap() == "none"
    })
    .await;
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));

    // A bad configuration (an unknown key): exit 78, the LED untouched.
    let bad_led = fake_sysfs_led(&dir.path().join("bad"));
    let before = led_files(&bad_led);
    // Make a write within the same clock tick visible in the mtime.
    std::thread::sleep(Duration::from_millis(20));
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, with_led(&bad_led, "colour = \"red\"")).unwrap();
    let log = dir.path().join("bad.log");
    let mut gw = Process::start(&cfg, &log);
    assert_eq!(gw.wait(WAIT).await, Some(78));
    assert!(gw.log_text().contains("colour"), "{}", gw.log_text());
    assert_eq!(led_files(&bad_led), before, "the LED was touched");
}
