//! What people read: the page in a real headless browser at
//! phone size, in Vietnamese and English, with several device kinds (sim
//! UPS and sensor, the Pi's health from fixture files, snmpd router,
//! pymodbus meters): every value in words, no raw dotted name, no long raw
//! number without a unit, Vietnamese number format, the language picked
//! with the link remembered across a reload, the backlog catch-up bar and
//! the charts' axes. Screenshots are kept in target/test-artifacts/.

use std::path::{Path, PathBuf};

use crate::common::peers::{ModbusPeer, Snmpd};
use crate::common::*;
use crate::web::while_steady;

/// Runs headless chromium on `url` with its own profile directory (kept
/// between calls, so cookies persist), as a phone would show it.
fn chromium(url: &str, profile: &Path, accept_lang: &str, shot: Option<(&Path, u32)>) -> String {
    let mut args = vec![
        "--hide-scrollbars".to_owned(),
        format!("--accept-lang={accept_lang}"),
    ];
    match shot {
        Some((png, height)) => {
            let _ = std::fs::remove_file(png);
            args.push(format!("--screenshot={}", png.display()));
            args.push(format!("--window-size=412,{height}"));
        }
        None => args.push("--dump-dom".to_owned()),
    }
    args.push(url.to_owned());
    let out = crate::common::chromium(profile, args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn dom_of(url: String, profile: PathBuf, accept_lang: &'static str) -> String {
    tokio::task::spawn_blocking(move || chromium(&url, &profile, accept_lang, None))
        .await
        .unwrap()
}

/// Takes the phone-size screenshot (and a tall one of the whole page).
async fn screenshots(url: String, profile: PathBuf, name: &'static str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    for (suffix, height) in [("", 915), ("-full", 2600)] {
        let png = dir.join(format!("{name}{suffix}.png"));
        let (u, p, png2) = (url.clone(), profile.clone(), png.clone());
        tokio::task::spawn_blocking(move || chromium(&u, &p, "vi-VN,vi", Some((&png2, height))))
            .await
            .unwrap();
        assert!(
            std::fs::metadata(&png).is_ok_and(|m| m.len() > 1000),
            "screenshot {} written",
            png.display()
        );
    }
}

/// The text a person reads: the page's body without tags, script and style.
fn visible_text(dom: &str) -> String {
    let mut s = dom.to_owned();
    for (open, close) in [("<script", "</script>"), ("<style", "</style>")] {
        while let Some(a) = s.find(open) {
            let Some(b) = s[a..].find(close) else { break };
            s.replace_range(a..a + b + close.len(), " ");
        }
    }
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
}

/// What a person should never read: a raw dotted value name
/// (`disk.free`), a number of more than 6 digits written without a unit
/// after it (`80267124736`), or one not grouped at all.
fn raw_things(text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        let core = w.trim_matches(|c: char| "()[],:;·—".contains(c));
        // A dotted name: letters, a dot, letters.
        if let Some((a, b)) = core.split_once('.') {
            let name =
                |p: &str| p.len() >= 2 && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if name(a)
                && name(b.split('.').next().unwrap_or(""))
                && a.chars().any(|c| c.is_ascii_alphabetic())
            {
                bad.push(format!("dotted name {core:?}"));
            }
        }
        let digits = core.chars().filter(|c| c.is_ascii_digit()).count();
        let numeric = !core.is_empty()
            && core
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == ',' || c == '-');
        if numeric && digits > 6 {
            let longest_run = core
                .split(|c: char| !c.is_ascii_digit())
                .map(str::len)
                .max()
                .unwrap_or(0);
            let next = words.get(i + 1).copied().unwrap_or("");
            let has_unit = next
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '%' || c == '°');
            if longest_run > 6 || !has_unit {
                bad.push(format!("raw number {core:?} (next {next:?})"));
            }
        }
    }
    bad
}

fn pi_fixture(dir: &Path) -> String {
    let p = dir.join("pi");
    std::fs::create_dir_all(p.join("proc")).unwrap();
    std::fs::write(p.join("temp"), "48312\n").unwrap();
    // Under-voltage and throttling since boot, not now.
    std::fs::write(p.join("throttled"), "0x50000\n").unwrap();
    std::fs::write(p.join("proc/loadavg"), "0.52 0.40 0.31 1/123 4567\n").unwrap();
    std::fs::write(
        p.join("proc/meminfo"),
        "MemTotal:        4000000 kB\nMemFree:  10 kB\nMemAvailable:     1000000 kB\n",
    )
    .unwrap();
    // 3 days, 4 hours and 45 s.
    std::fs::write(p.join("proc/uptime"), "273645.20 100.00\n").unwrap();
    format!(
        "[[device]]\nid = \"pi\"\ntype = \"system\"\ninterval = \"1s\"\n\
         thermal_path = \"{t}\"\nthrottled_path = \"{th}\"\nproc_root = \"{pr}\"\n",
        t = p.join("temp").display(),
        th = p.join("throttled").display(),
        pr = p.join("proc").display()
    )
}

/// The page with a sim UPS and sensor, the Pi from fixture files, an
/// snmpd router and two pymodbus meters, in Vietnamese and English, in a
/// real browser: every value in words, the local number format, the
/// configured language first whatever the browser asks, the link's choice
/// remembered across a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_in_words_in_both_languages() {
    let broker = Broker::start();
    let snmpd = Snmpd::start();
    let modbus = ModbusPeer::tcp();
    let dir = tempfile::tempdir().unwrap();
    // Forgiving timings (stale after 3 s, an SNMP or Modbus answer may take
    // 2 s, SNMP tried twice): chromium takes both cores of a loaded machine
    // while it reads the page, and this test is about the words, not about
    // how soon a late device is noticed (see also `while_steady`).
    let bus = format!(
        "type = \"modbus\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\ninterval = \"1s\"\ntimeout = \"2s\"\n",
        modbus.port
    );
    let devs = format!(
        "{}{}{}\
         [[device]]\nid = \"router\"\ntype = \"snmp\"\nhost = \"127.0.0.1\"\nport = {}\ncommunity = \"wardtest\"\n\
         interfaces = [\"lo\"]\nwan = \"lo\"\ninterval = \"1s\"\ntimeout = \"2s\"\nretries = 1\n\
         [[device]]\nid = \"room\"\n{bus}profile = \"xy-md02\"\n\
         [[device]]\nid = \"meter\"\n{bus}profile = \"sdm120\"\nunit = 2\n\
         [[device]]\nid = \"cabinet\"\n{bus}unit = 1\n[[device.registers]]\nname = \"cabinet.temperature\"\n\
         function = \"input\"\naddress = 1\ntype = \"i16\"\nscale = 0.1\nunit = \"°C\"\n\
         label = \"Nhiệt độ tủ điện\"\nlabel_en = \"Cabinet temperature\"\n",
        sim("ups1", "1s", ""),
        sim("env1", "1s", "profile = \"sensor\""),
        pi_fixture(dir.path()),
        snmpd.port,
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &devs)).await;
    eventually(WAIT, "connected, every device ok, router rates", || {
        let s = gw.status.get();
        s.uplink.connected
            && s.devices.len() >= 7
            && s.devices
                .values()
                .all(|d| d.health == wardgate::model::Health::Ok)
            && s.devices["router"]
                .last_values
                .get("if.lo.in_bps")
                .is_some()
            && s.devices["pi"].last_values.get("system.uptime").is_some()
    })
    .await;
    let url = format!("http://{}/", gw.web.unwrap());
    let profile = tempfile::tempdir().unwrap();
    let prof = profile.path().to_path_buf();

    // The browser asks for English; the page is in web.language
    // (Vietnamese) all the same.
    let vi = while_steady(&gw.status, "vi page", || {
        dom_of(url.clone(), prof.clone(), "en-US,en")
    })
    .await;
    assert!(vi.contains("<html lang=\"vi\""), "{vi}");
    let text = visible_text(&vi);
    assert!(
        raw_things(&text).is_empty(),
        "vi: {:?}\n{text}",
        raw_things(&text)
    );
    for want in [
        "Nhiệt độ CPU",
        "48,3 °C",
        "Bộ nhớ còn trống",
        "1,0 GB (25 %)",
        "Thẻ nhớ còn trống",
        "3 ngày 4 giờ",
        "Từng thiếu điện từ lúc khởi động",
        "Cổng lo",
        "Mbit/s",
        "Điện năng tiêu thụ",
        "Độ ẩm",
        "đang dùng điện lưới",
        // A register's configured words.
        "Nhiệt độ tủ điện",
    ] {
        assert!(text.contains(want), "vi page lacks {want:?}:\n{text}");
    }
    assert!(text.contains(" GB ("), "{text}");
    screenshots(url.clone(), prof.clone(), "words-vi").await;

    // The link: English, remembered in a cookie across a reload of the
    // page without `?lang`.
    let en = dom_of(format!("{url}?lang=en"), prof.clone(), "vi-VN,vi").await;
    assert!(en.contains("<html lang=\"en\""), "{en}");
    let en = while_steady(&gw.status, "en page", || {
        dom_of(url.clone(), prof.clone(), "vi-VN,vi")
    })
    .await;
    assert!(
        en.contains("<html lang=\"en\""),
        "the language cookie did not survive a reload: {en}"
    );
    let text = visible_text(&en);
    assert!(
        raw_things(&text).is_empty(),
        "en: {:?}\n{text}",
        raw_things(&text)
    );
    for want in [
        "CPU temperature",
        "48.3 °C",
        "Cabinet temperature",
        "Memory free",
        "1.0 GB (25 %)",
        "3 days 4 hours",
        "Port lo",
        "Energy used",
        "on mains power",
    ] {
        assert!(text.contains(want), "en page lacks {want:?}:\n{text}");
    }
    screenshots(url.clone(), prof.clone(), "words-en").await;
    // And back: the link to Vietnamese is remembered too.
    dom_of(format!("{url}?lang=vi"), prof.clone(), "en").await;
    let back = dom_of(url.clone(), prof.clone(), "en").await;
    assert!(back.contains("<html lang=\"vi\""), "{back}");

    // `wardgate check` reads the same words.
    let cfg = process_config(dir.path(), broker.port, &pi_fixture(dir.path()));
    let (code, out) = wardgate_check(&cfg).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "cpu.temperature = 48.312  — Nhiệt độ CPU: 48,3 °C / CPU temperature: 48.3 °C"
        ),
        "{out}"
    );
    assert!(
        out.contains("3 ngày 4 giờ / Running for: 3 days 4 hours"),
        "{out}"
    );
    gw.stop().await;
}

/// The catch-up after an outage and the 24-hour charts, on a page fed a
/// known status (a day of readings, a backlog of 40 000 draining at 100 a
/// second): the progress bar and its words, time labels in local time,
/// the unit on the value axis, the latest value marked; in Vietnamese and
/// English, at phone size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_bar_and_chart_axes() {
    use wardgate::status::words::Zone;
    let hub = wardgate::status::StatusHub::new(&test_site());
    let history = std::sync::Arc::new(wardgate::status::history::History::default());
    let dir = tempfile::tempdir().unwrap();
    // The Pi, from fixture files, and a simulated UPS.
    let pi_cfg = wardgate::source::system_config::SystemConfig {
        thermal_path: dir.path().join("pi/temp"),
        throttled_path: dir.path().join("pi/throttled"),
        proc_root: dir.path().join("pi/proc"),
        ..wardgate::source::system_config::SystemConfig::automatic()
    };
    pi_fixture(dir.path());
    let pi = wardgate::source::system::read_all(&pi_cfg, dir.path());
    hub.add_device("pi", "system");
    hub.add_device("ups1", "sim");
    let now = wardgate::model::now_ms();
    let day = 24 * 3_600_000;
    for i in 0..=144i64 {
        hub.update(|s| {
            s.uplink.attempts = 1;
            s.uplink.connected = true;
            let p = s.devices.get_mut("pi").unwrap();
            p.health = wardgate::model::Health::Ok;
            p.last_seen_ms = Some(now);
            p.last_values = pi.clone();
            p.last_values
                .num("cpu.temperature", 45.0 + (i as f64 / 10.0).sin() * 5.0);
            let u = s.devices.get_mut("ups1").unwrap();
            u.health = wardgate::model::Health::Ok;
            u.last_seen_ms = Some(now);
            u.last_values.set("ups.status", "OL");
            u.last_values.num("ups.load", 20.0 + (i % 30) as f64);
            u.last_values.num("battery.charge", 100.0);
            u.last_values.num("battery.runtime", 2400.0);
        });
        history.record(&hub.get(), now - day + i * 10 * 60_000);
    }
    // An outage kept 40 000 records; the link is back and they drain.
    hub.update(|s| {
        s.uplink.connected = false;
        s.spool.disk_rows = 40_000;
    });
    history.record(&hub.get(), now - 12_000);
    for i in 0..=10u64 {
        hub.update(|s| {
            s.uplink.connected = true;
            s.spool.disk_rows = 40_000 - 1_000 * i;
        });
        history.record(&hub.get(), now - 10_000 + i as i64 * 1000);
    }
    hub.update(|s| s.updated_ms = wardgate::model::now_ms());
    let cfg = wardgate::config::WebConfig {
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let (addr, serve) =
        wardgate::status::web::bind(&cfg, hub.subscribe(), history.clone(), cancel.clone())
            .await
            .expect("bind the page");
    let server = tokio::spawn(serve);
    let url = format!("http://{addr}/");
    let profile = tempfile::tempdir().unwrap();
    let prof = profile.path().to_path_buf();
    let vi = dom_of(url.clone(), prof.clone(), "vi-VN,vi").await;
    // 10 000 of 40 000 sent at 1 000 a second: 30 s left.
    assert!(
        vi.contains("<progress max=\"40000\" value=\"10000\">"),
        "{vi}"
    );
    let text = visible_text(&vi);
    assert!(
        text.contains("Đang gửi lại dữ liệu đã lưu: 10.000 / 40.000 bản ghi, còn dưới 1 phút"),
        "{text}"
    );
    assert!(raw_things(&text).is_empty(), "{:?}", raw_things(&text));
    // Charts: time labels at whole hours in Vietnam's time, the last one
    // the latest whole hour; the unit on the value axis; the latest value
    // marked.
    assert_eq!(vi.matches("class=\"axis-time\"").count() % 4, 0, "{vi}");
    assert!(vi.contains("class=\"axis-time\""), "{vi}");
    let later = wardgate::model::now_ms();
    let whole_hour = |ms: i64| format!(">{}:00</text>", &Zone::VIETNAM.hhmm(ms)[..2]);
    assert!(
        vi.contains(&whole_hour(now)) || vi.contains(&whole_hour(later)),
        "no time label for the latest hour: {vi}"
    );
    assert!(
        vi.contains(" °C</text>") && vi.contains(" %</text>"),
        "{vi}"
    );
    assert!(vi.contains("<circle class=\"latest\""), "{vi}");
    assert!(text.contains("Nhiệt độ CPU — 24 giờ qua"), "{text}");
    screenshots(url.clone(), prof.clone(), "words-backlog-vi").await;
    dom_of(format!("{url}?lang=en"), prof.clone(), "vi-VN,vi").await;
    let en = dom_of(url.clone(), prof.clone(), "vi-VN,vi").await;
    let text = visible_text(&en);
    assert!(
        text.contains(
            "Sending kept readings again: 10,000 / 40,000 readings, less than a minute left"
        ),
        "{text}"
    );
    assert!(raw_things(&text).is_empty(), "{:?}", raw_things(&text));
    screenshots(url.clone(), prof.clone(), "words-backlog-en").await;
    cancel.cancel();
    within(WAIT, "page stops", server).await.unwrap();
}

#[test]
fn the_raw_things_check_sees_raw_things() {
    assert_eq!(raw_things("disk.free 80267124736").len(), 2);
    assert!(raw_things("Thẻ nhớ còn trống 80,3 GB (67 %)").is_empty());
    assert!(raw_things("12.345 / 40.000 bản ghi").is_empty());
    assert_eq!(raw_things("1.234.567 lỗi 7.654.321").len(), 1);
    assert!(raw_things("Nhiệt độ 23,5 °C").is_empty());
}

/// The fenced code blocks of a guide, each without its `#` comments and
/// trailing spaces (comments are translated, commands are not).
fn code_blocks(md: &str) -> Vec<String> {
    md.split("```")
        .skip(1)
        .step_by(2)
        .map(|b| {
            b.lines()
                .skip(1)
                .map(|l| {
                    let l = if l.trim_start().starts_with('#') {
                        ""
                    } else {
                        l.split(" #").next().unwrap_or("")
                    };
                    l.trim_end().to_owned()
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// The commands a guide names inline (`sudo ...`, `journalctl ...`).
fn inline_commands(md: &str) -> std::collections::BTreeSet<String> {
    let prose: String = md.split("```").step_by(2).collect::<Vec<_>>().join(" ");
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|c| {
            let first = c.split_whitespace().next().unwrap_or("");
            [
                "sudo",
                "journalctl",
                "ls",
                "udevadm",
                "timedatectl",
                "df",
                "ping",
                "systemctl",
                "wardgate",
                "chown",
                "chmod",
            ]
            .contains(&first)
        })
        .map(str::to_owned)
        .collect()
}

/// docs/technician.vi.md is the Vietnamese twin of docs/technician.md:
/// the same sections in the same order, the same code blocks (commands and
/// examples; only comments are translated) and the same inline commands.
#[test]
fn the_technicians_guide_has_a_vietnamese_twin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let en = std::fs::read_to_string(root.join("docs/technician.md")).unwrap();
    let vi = std::fs::read_to_string(root.join("docs/technician.vi.md")).unwrap();
    let sections = |md: &str| md.lines().filter(|l| l.starts_with("## ")).count();
    assert!(sections(&en) >= 9);
    assert_eq!(sections(&en), sections(&vi), "the same number of sections");
    let tables = |md: &str| md.lines().filter(|l| l.starts_with("|---")).count();
    assert_eq!(tables(&en), tables(&vi), "the same tables");
    assert_eq!(code_blocks(&en), code_blocks(&vi), "the same code blocks");
    assert_eq!(
        inline_commands(&en),
        inline_commands(&vi),
        "the same commands"
    );
    assert!(en.contains("(technician.vi.md)") && vi.contains("(technician.md)"));
}

/// `wardgate spool stats` prints the page's catch-up line: on a spool
/// holding a backlog that nothing sends (the broker never came, the
/// gateway stopped), "not moving", in both languages in the JSON and in
/// Vietnamese on standard error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_stats_prints_the_catchup_line() {
    let dir = tempfile::tempdir().unwrap();
    // No broker: a port with no server, so the backlog stays in the spool.
    let no_broker = closed_port();
    let cfg_path = dir.path().join("w.toml");
    std::fs::write(
        &cfg_path,
        config_text(
            no_broker.port,
            dir.path(),
            &sim("ups1", "10ms", "count = 30\nevent_every = 15"),
        ),
    )
    .unwrap();
    let gw = Gateway::start(wardgate::config::Config::load(&cfg_path, true).unwrap()).await;
    // The second event comes with the 30th and last sample.
    eventually(WAIT, "30 samples read", || ups_events(&gw, "ups1") >= 2).await;
    gw.stop().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["spool", "stats", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = stats["records"].as_u64().unwrap();
    assert!(records >= 30, "{stats}");
    let vi = stats["catchup"][0].as_str().unwrap();
    let en = stats["catchup"][1].as_str().unwrap();
    assert_eq!(
        vi,
        format!(
            "Đang gửi lại dữ liệu đã lưu: {} bản ghi đang chờ, chưa gửi được (mất kết nối, hoặc wardgate không chạy)",
            wardgate::status::words::count(records, "vi")
        )
    );
    assert!(
        en.starts_with("Sending kept readings again: ") && en.contains("not moving"),
        "{en}"
    );
    assert!(err.contains(vi), "{err}");
}

/// The catch-up bar during a real recovery: readings kept through a broker
/// outage drain (paced by `mqtt.backlog_rate`) while the device keeps
/// reading, and the page shows the bar with the counts, in Vietnamese
/// numbers, and the time left once the drain rate is measured; when the
/// backlog is gone, so is the bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catchup_bar_during_a_real_recovery() {
    let mut broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    broker.stop();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        broker.port,
        dir.path(),
        &format!(
            "[gateway]\nsystem_health = false\n{}",
            sim("ups1", "5ms", "")
        ),
    )
    .replace("[mqtt]\n", "[mqtt]\nmax_batch = 10\nbacklog_rate = 20.0\n");
    let gw = Gateway::start(wardgate::config::Config::from_toml(&text).unwrap()).await;
    let addr = gw.web.unwrap();
    let db = dir.path().join("spool.db");
    eventually(WAIT, "1500 samples of ups1 on disk", || {
        wardgate::spool::db::Db::open_read_only(&db)
            .ok()
            .and_then(|d| d.summary().ok())
            .is_some_and(|rows| {
                rows.iter()
                    .any(|r| r.device == "ups1" && r.kind == 0 && r.records >= 1500)
            })
    })
    .await;
    tokio::task::block_in_place(|| broker.start_again());
    let page = || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(http_get(addr, "/", ""))
        })
        .1
    };
    // The catch-up block alone (the UPS card says "còn" too).
    let catchup = |body: &str| {
        body.split_once("id=\"catchup\"")
            .and_then(|(_, rest)| rest.split_once("</div>"))
            .map(|(c, _)| visible_text(c))
    };
    // 1500+ readings at 10 a message, 20 messages a second: several
    // seconds of catch-up; the time left shows once the rate is measured
    // (after 2 s of draining).
    let mut seen = String::new();
    let ok = wait_for(WAIT, || {
        let body = page();
        match catchup(&body) {
            Some(c) if c.contains("còn khoảng") || c.contains("còn dưới") => {
                seen = body;
                true
            }
            _ => false,
        }
    })
    .await;
    assert!(ok, "no catch-up bar with the time left during the recovery");
    let c = catchup(&seen).unwrap();
    assert!(seen.contains("<progress max="), "{seen}");
    assert!(
        c.contains("Đang gửi lại dữ liệu đã lưu:") && c.contains(" bản ghi"),
        "{c}"
    );
    // Vietnamese numbers: the total, over a thousand, with a dot.
    assert!(
        c.split_whitespace().any(|w| {
            let b = w.as_bytes();
            b.len() == 5 && b[1] == b'.' && w.bytes().filter(u8::is_ascii_digit).count() == 4
        }),
        "{c}"
    );
    screenshots(
        format!("http://{addr}/"),
        dir.path().join("chromium"),
        "catchup-real-vi",
    )
    .await;
    eventually(WAIT, "the bar gone once the backlog is empty", || {
        catchup(&page()).is_none()
    })
    .await;
    gw.stop().await;
    // The backlog itself arrived: every reading up to the 1500th (the
    // broker acknowledged them all; its delivery to the subscriber may
    // still be under way).
    let complete = wait_for(WAIT, || {
        let got = sub.seqs("ups1");
        (0..1500).all(|s| got.contains(&s))
    })
    .await;
    assert!(complete, "backlog incomplete");
    sub.assert_all_valid();
}
