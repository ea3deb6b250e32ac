use super::*;
use crate::status::web::strings::{EN, VI};
use crate::status::StatusHub;

/// The one big sentence, and its colour class, with times in Vietnam's
/// time zone.
fn headline(s: &Snapshot, t: &Strings) -> (String, &'static str) {
    headline_in(s, t, Zone::default())
}

/// The page body, with times in Vietnam's time zone.
fn render_body(s: &Snapshot, history: &History, t: &Strings, notices: &[&str]) -> String {
    render_body_in(s, history, t, notices, Zone::default())
}

/// The whole page, with times in Vietnam's time zone.
fn render_page(s: &Snapshot, history: &History, t: &Strings, notices: &[&str]) -> String {
    render_page_in(s, history, t, notices, Zone::default())
}

#[test]
fn headlines_worst_first() {
    let hub = StatusHub::new("s");
    hub.add_device("ups1", "megatec");
    hub.add_device("env1", "sim");
    hub.update(|s| {
        s.uplink.attempts = 1;
        s.uplink.since_ms = 1;
    });
    let all_ok = |s: &mut Snapshot| {
        for d in s.devices.values_mut() {
            d.health = Health::Ok;
        }
        s.uplink.connected = true;
    };
    hub.update(all_ok);
    assert_eq!(headline(&hub.get(), &VI).0, "Mọi thứ hoạt động bình thường");
    assert_eq!(
        headline(&hub.get(), &EN),
        ("All systems normal".into(), "ok")
    );
    hub.update(|s| {
        s.uplink.connected = false;
        s.spool.disk_rows = 42;
    });
    let (h, c) = headline(&hub.get(), &VI);
    assert!(
        h.starts_with("Mất kết nối tới trung tâm — dữ liệu đang được lưu tạm (42 bản ghi"),
        "{h}"
    );
    assert_eq!(c, "warn");
    hub.update(|s| s.spool.degraded = Some("read_only".into()));
    let (h, c) = headline(&hub.get(), &VI);
    assert!(h.contains("thẻ nhớ chỉ đọc"), "{h}");
    assert_eq!(c, "bad");
    assert!(headline(&hub.get(), &EN).0.contains("read-only"));
    hub.update(|s| s.spool.degraded = None);
    hub.update(|s| s.devices.get_mut("ups1").unwrap().health = Health::Fault("x".into()));
    assert_eq!(headline(&hub.get(), &VI).0, "Thiết bị UPS không phản hồi");
    assert_eq!(headline(&hub.get(), &EN).0, "The UPS is not responding");
}

/// The InfluxDB sink's line: link, waiting, set aside, retention, and
/// the last failure in the reader's words.
#[test]
fn influx_line_shows_each_class() {
    let hub = StatusHub::new("xa-a");
    hub.update(|s| {
        s.uplink.attempts = 1;
        s.uplink.since_ms = 1;
    });
    let body = render_body(&hub.get(), &History::default(), &EN, &[]);
    assert!(!body.contains("id=\"influxdb\""), "off: no line");
    for (class, en, vi) in [
        (
            "too_large",
            "request too large, batch halved",
            "yêu cầu quá lớn",
        ),
        ("bad_points", "bad points set aside", "điểm dữ liệu sai"),
        (
            "retention",
            "points outside retention dropped",
            "quá hạn lưu trữ",
        ),
        (
            "refused",
            "token refused, readings kept",
            "mã truy cập bị từ chối",
        ),
        ("retry", "server busy, retrying", "máy chủ bận"),
        (
            "unreachable",
            "cannot reach it, retrying",
            "không kết nối được",
        ),
    ] {
        hub.update(|s| {
            s.influxdb = Some(crate::status::InfluxStatus {
                connected: false,
                depth: 4321,
                rejected: 7,
                retention_dropped: 2,
                last_class: Some(class.into()),
                ..Default::default()
            })
        });
        let b = render_body(&hub.get(), &History::default(), &EN, &[]);
        assert!(
            b.contains(
                "InfluxDB: <b>down</b> · waiting: 4321 · set aside: 7 · outside retention: 2"
            ),
            "{b}"
        );
        assert!(b.contains(&format!("data-class=\"{class}\">{en}<")), "{b}");
        let b = render_body(&hub.get(), &History::default(), &VI, &[]);
        assert!(b.contains(vi), "{class}: {b}");
    }
}

#[test]
fn page_has_cards_and_no_external_references() {
    let hub = StatusHub::new("xa-a");
    hub.add_device("ups1", "sim");
    hub.update(|s| {
        s.uplink.attempts = 1;
        s.uplink.since_ms = 1;
        let d = s.devices.get_mut("ups1").unwrap();
        d.last_values.set("ups.status", "OB");
        d.last_values.num("ups.load", 31.0);
        d.last_values.num("battery.runtime", 1200.0);
    });
    let page = render_page(&hub.get(), &History::default(), &VI, &[]);
    assert!(page.contains("data-device=\"ups1\""));
    assert!(page.contains("đang chạy bằng pin"));
    assert!(page.contains("20 phút"));
    hub.record_event(crate::status::RecentEvent {
        device: "ups1".into(),
        ts: 0,
        severity: Severity::Critical,
        code: "ups.on_battery".into(),
        message: "UPS on battery: mains power lost".into(),
        message_vi: None,
    });
    let vi = render_body(&hub.get(), &History::default(), &VI, &[]);
    assert!(
        vi.contains("UPS chuyển sang chạy pin: mất điện lưới"),
        "{vi}"
    );
    let en = render_body(&hub.get(), &History::default(), &EN, &[]);
    assert!(en.contains("UPS on battery: mains power lost"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external URL"
    );
}

#[test]
fn values_in_words_configured_words_first() {
    let hub = StatusHub::new("xa-a");
    hub.add_device("pi", "system");
    hub.add_device("tank", "modbus");
    hub.update(|s| {
        s.uplink.attempts = 1;
        s.uplink.since_ms = 1;
        let d = s.devices.get_mut("pi").unwrap();
        d.last_values.num("disk.free", 80_267_124_736.0);
        d.last_values.num("disk.total", 120_000_000_000.0);
        d.last_values.num("system.uptime", 273_645.0);
        d.last_values.num("pi.throttled", 327_680.0);
        let d = s.devices.get_mut("tank").unwrap();
        d.last_values.num("tank.level", 1234.5);
        d.last_values.num("raw.thing", 7.0);
    });
    hub.set_labels(
        "tank",
        [(
            "tank.level".to_owned(),
            words::Label {
                vi: Some("Mức nước bể".into()),
                en: Some("Tank level".into()),
                unit: Some("cm".into()),
            },
        )]
        .into(),
    );
    let vi = render_body(&hub.get(), &History::default(), &VI, &[]);
    assert!(
        vi.contains("<dt>Thẻ nhớ còn trống</dt><dd>80,3 GB (67 %)</dd>"),
        "{vi}"
    );
    assert!(vi.contains("<dd>3 ngày 4 giờ</dd>"), "{vi}");
    assert!(
        !vi.contains("327680") && !vi.contains("327.680"),
        "raw bits: {vi}"
    );
    assert!(
        vi.contains("<dt>Mức nước bể</dt><dd>1.234,5 cm</dd>"),
        "{vi}"
    );
    // A value nobody gave words still shows, with its name.
    assert!(vi.contains("<dt>raw.thing</dt><dd>7</dd>"), "{vi}");
    let en = render_body(&hub.get(), &History::default(), &EN, &[]);
    assert!(
        en.contains("<dt>SD card free</dt><dd>80.3 GB (67 %)</dd>"),
        "{en}"
    );
    assert!(
        en.contains("<dt>Tank level</dt><dd>1,234.5 cm</dd>"),
        "{en}"
    );
}

#[test]
fn identify_by_the_operations_centre_is_shown() {
    let hub = StatusHub::new("xa-a");
    hub.identify(std::time::Duration::from_secs(60));
    let en = render_body(&hub.get(), &History::default(), &EN, &[]);
    assert!(!en.contains("id=\"identify\""), "SIGUSR1: no line");
    hub.identify_remote(std::time::Duration::from_secs(60));
    let en = render_body(&hub.get(), &History::default(), &EN, &[]);
    assert!(
        en.contains("Identify requested by the operations centre"),
        "{en}"
    );
    let vi = render_body(&hub.get(), &History::default(), &VI, &[]);
    assert!(vi.contains("Trung tâm điều hành yêu cầu nhận diện"), "{vi}");
    hub.identify_remote(std::time::Duration::ZERO);
    let over = render_body(&hub.get(), &History::default(), &EN, &[]);
    assert!(!over.contains("id=\"identify\""), "over: no line");
}

/// `[power]`: on battery and shutting down head the page, in the
/// reader's language, over a device that is not answering.
#[test]
fn power_states_head_the_page() {
    let hub = crate::status::StatusHub::new("s");
    hub.add_device("ups1", "megatec");
    hub.update(|s| {
        s.uplink.attempts = 1;
        s.uplink.since_ms = 1;
        s.power = Some(crate::status::PowerStatus {
            ups: "ups1".into(),
            state: PowerState::Mains,
            since_ms: 0,
            write_through: false,
            reason: None,
            reason_vi: None,
        });
    });
    let (h, _) = headline(&hub.get(), &VI);
    assert_eq!(
        h, VI.ups_not_responding,
        "on mains, the UPS not answering heads the page"
    );
    hub.update(|s| {
        let p = s.power.as_mut().unwrap();
        p.state = PowerState::OnBattery;
    });
    let snap = hub.get();
    assert_eq!(headline(&snap, &VI), (VI.on_battery.to_owned(), "bad"));
    assert_eq!(headline(&snap, &EN), (EN.on_battery.to_owned(), "bad"));
    let body = render_body(&snap, &History::default(), &VI, &[]);
    assert!(body.contains("id=\"power\""), "{body}");
    assert!(body.contains("Ba lần nháy ngắn"), "the LED legend");
    hub.update(|s| {
        s.devices
            .get_mut("ups1")
            .unwrap()
            .last_values
            .set("ups.status", "OB LB");
    });
    assert_eq!(headline(&hub.get(), &VI).0, VI.low_battery);
    hub.update(|s| {
        let p = s.power.as_mut().unwrap();
        p.state = PowerState::ShuttingDown;
        p.reason = Some("the UPS says its battery is low".into());
        p.reason_vi = Some("UPS báo pin yếu".into());
    });
    let snap = hub.get();
    assert_eq!(
        headline(&snap, &VI).0,
        format!("{} (UPS báo pin yếu)", VI.power_shutting_down)
    );
    assert!(headline(&snap, &EN)
        .0
        .ends_with("(the UPS says its battery is low)"));
    let body = render_body(&snap, &History::default(), &VI, &[]);
    assert!(
        !body.contains("id=\"power\""),
        "the on-battery line is gone"
    );
}

#[test]
fn the_csp_allows_exactly_what_the_page_inlines() {
    let hub = StatusHub::new("xa-a");
    hub.update(|s| {
        s.uplink.attempts = 1;
        s.uplink.since_ms = 1;
    });
    let page = render_page(&hub.get(), &History::default(), &EN, &["<b>careful</b>"]);
    let inner = |open: &str, close: &str| {
        let a = page.find(open).unwrap() + open.len();
        page[a..a + page[a..].find(close).unwrap()].to_owned()
    };
    assert_eq!(inner("<script>", "</script>"), SCRIPT);
    assert_eq!(inner("<style>", "</style>"), STYLE);
    assert_eq!(page.matches("<script").count(), 1, "one inline script");
    assert_eq!(page.matches("<style").count(), 1, "one inline style");
    assert!(
        !page.contains(" style="),
        "no style attributes (the CSP blocks them)"
    );
    let csp = content_security_policy();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    // A notice is escaped like everything else.
    assert!(page.contains("⚠ &lt;b&gt;careful&lt;/b&gt;"), "{page}");
}
