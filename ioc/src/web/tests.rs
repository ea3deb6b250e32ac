//! The pages requested in-process (`tower::ServiceExt::oneshot`): both
//! languages' words, the order of the sites, the ledger on a site's page,
//! and free text from the wire escaped.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use wardgate_contract::{ClockState, Delivered, Envelope, Epoch, Event, Message, Severity, Values};

use super::*;
use crate::fleet::demo::{self, demo};

/// The demo's time, for the pages' clock.
static NOW: OnceLock<i64> = OnceLock::new();

fn now() -> i64 {
    NOW.get().copied().unwrap_or(0)
}

fn view(sites: usize) -> Arc<SharedView> {
    let (m, t) = demo(sites, 1).unwrap();
    let _ = NOW.set(t);
    Arc::new(SharedView::with_clock(m, now))
}

async fn get(v: &Arc<SharedView>, uri: &str) -> (StatusCode, String, String) {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        router(v.clone()).oneshot(req),
    )
    .await
    .unwrap()
    .unwrap();
    let status = res.status();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|h| h.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(res.into_body(), 10 << 20)
        .await
        .unwrap();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

fn site(i: usize) -> String {
    format!("site-{i:05}")
}

#[tokio::test]
async fn fleet_page_in_both_languages_worst_first() {
    let v = view(40);
    let (st, ctype, vi) = get(&v, "/").await;
    assert_eq!(st, StatusCode::OK);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    for w in [
        "<html lang=\"vi\">",
        "Các điểm giám sát",
        "mất điện lưới, đang chạy pin UPS",
        "mất kết nối",
        "mất liên lạc",
        "mất Internet",
        "chưa đồng bộ giờ",
        "phòng máy 38,5 °C &gt; 35 °C",
        "Dữ liệu chờ gửi",
        "400 bản ghi",
        "<meta http-equiv=\"refresh\" content=\"30\">",
        "href=\"/?lang=en\"",
        ">English<",
    ] {
        assert!(vi.contains(w), "vi: {w:?} missing");
    }
    assert!(!vi.contains("<script"), "no script on the page");
    let (_, _, en) = get(&v, "/?lang=en").await;
    for w in [
        "<html lang=\"en\">",
        "Ward sites",
        "mains lost, on UPS battery",
        "offline",
        "lost contact",
        "internet down",
        "not synced",
        "equipment room 38.5 °C &gt; 35 °C",
        "400 readings",
        "href=\"/?lang=vi\"",
        "href=\"/site/site-00003?lang=en\"",
    ] {
        assert!(en.contains(w), "en: {w:?} missing");
    }
    // Worst first: the offline site, then the one on battery.
    let pos = |page: &str, i: usize| page.find(&format!("<b>{}</b>", site(i))).unwrap();
    assert!(pos(&vi, demo::OFFLINE) < pos(&vi, demo::ON_BATTERY));
    assert!(pos(&vi, demo::ON_BATTERY) < pos(&vi, demo::BACKLOG));
    assert!(pos(&vi, demo::BACKLOG) < pos(&vi, 0) || vi.contains("class=\"bad\""));
}

#[tokio::test]
async fn site_page_shows_devices_and_ledger() {
    let v = view(40);
    let id = site(demo::ON_BATTERY);
    let (st, _, vi) = get(&v, &format!("/site/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    for w in [
        "Thiết bị",
        "Sổ theo dõi số liệu",
        "mất, không rõ lý do",
        "Thời gian pin còn",
        "ups1",
        "megatec",
        "pin còn khoảng 21 phút",
        // The values in the contract's words, as the gateway's own page
        // writes them: a duration in words, a UPS status as a phrase.
        "Thời gian pin còn: <b class=\"num\">21 phút</b>",
        "Tải: <b class=\"num\">23 %</b>",
        "Sự kiện gần đây",
        "href=\"/site/site-00003?lang=en\"",
    ] {
        assert!(vi.contains(w), "vi: {w:?} missing");
    }
    let (_, _, en) = get(&v, &format!("/site/{id}?lang=en")).await;
    for w in [
        "Devices",
        "Readings ledger",
        "lost, no reason given",
        "Battery runtime",
        "about 21 min",
        "Battery runtime: <b class=\"num\">21 min</b>",
        "Load: <b class=\"num\">23 %</b>",
        "Recent events",
        "href=\"/?lang=en\"",
    ] {
        assert!(en.contains(w), "en: {w:?} missing");
    }
    // A site whose ledger holds explained holes names why.
    let (mut any_reason, mut i) = (false, 0);
    while !any_reason && i < 40 {
        let (_, _, p) = get(&v, &format!("/site/{}?lang=en", site(i))).await;
        any_reason = ["(spool full)", "(lost in a crash)", "(numbers never used)"]
            .iter()
            .any(|r| p.contains(r));
        i += 1;
    }
    assert!(any_reason, "no explained range shown with its reason");
    let (st, _, nf) = get(&v, "/site/nowhere").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(nf.contains("Không có điểm này"));
}

#[tokio::test]
async fn metrics_and_healthz() {
    let v = view(10);
    let (st, ctype, m) = get(&v, "/metrics").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert!(m.contains(&format!(
        "wardgate_site_on_battery{{site=\"{}\"}} 1",
        site(demo::ON_BATTERY)
    )));
    assert!(m.contains(&format!(
        "wardgate_site_online{{site=\"{}\"}} 0",
        site(demo::OFFLINE)
    )));
    let (st, _, h) = get(&v, "/healthz").await;
    assert_eq!((st, h.as_str()), (StatusCode::OK, "ok\n"));
}

#[tokio::test]
async fn free_text_from_the_wire_is_escaped() {
    let v = view(4);
    let evil = "<script>alert(1)</script>\"'&";
    {
        let mut m = v.write();
        let mut values = Values::new();
        values.num("ambient.temperature", 40.0);
        values.set("message.vi", evil);
        let env = Envelope {
            site: site(0),
            device: "env1".into(),
            epoch: Epoch(9),
            records: vec![Delivered {
                historical: false,
                record: Event {
                    seq: 0,
                    ts: 1,
                    clock: ClockState::Synced,
                    severity: Severity::Critical,
                    code: "threshold.high".into(),
                    message: evil.into(),
                    values,
                },
            }],
        };
        m.fleet.apply(&site(0), &Message::Events(env), now());
        let inv = format!(
            r#"{{"site":"{}","version":"<img src=x onerror=alert(1)>","boot_id":"b","run_id":"r","started":1,"config_hash":"\"><marquee>","clock":"synced","devices":[{{"id":"ups1","type":"<i>","interval_ms":1,"values":[],"words":{{"ups.load":{{"vi":"<u>","en":"<u>"}}}}}}],"sinks":[],"commands":{{"enabled":false,"allow":[]}}}}"#,
            site(0)
        );
        m.fleet.inventory(&site(0), inv.as_bytes(), now()).unwrap();
    }
    for uri in [
        "/".to_owned(),
        "/?lang=en".to_owned(),
        format!("/site/{}", site(0)),
        format!("/site/{}?lang=en", site(0)),
        "/site/%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_owned(),
    ] {
        let (_, _, page) = get(&v, &uri).await;
        for raw in ["<script", "<img", "<i>", "<u>", "<marquee"] {
            assert!(!page.contains(raw), "{uri}: {raw} not escaped");
        }
        assert!(page.contains("&lt;"), "{uri}: escaped text missing");
    }
    let (_, _, page) = get(&v, &format!("/site/{}", site(0))).await;
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_pages_need_a_store_and_a_month() {
    let v = view(3);
    assert_eq!(get(&v, "/report/2026-12").await.0, StatusCode::NOT_FOUND);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.sqlite");
    drop(crate::store::SqliteStore::open(&store).unwrap());
    let (m, _) = demo(3, 1).unwrap();
    let v = Arc::new(SharedView::with_clock(m, now).with_report(ReportSource {
        store,
        cfg: crate::report::ReportConfig::default(),
    }));
    let (st, ctype, vi) = get(&v, "/report/2026-12").await;
    assert_eq!(st, StatusCode::OK);
    assert!(ctype.starts_with("text/html"));
    assert!(vi.contains("Báo cáo tháng 12/2026") && vi.contains("@media print"));
    let (st, ctype, csv) = get(&v, "/report/2026-12.csv?lang=en").await;
    assert_eq!(st, StatusCode::OK);
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    assert!(csv.starts_with("\u{feff}site,month,"));
    for bad in ["/report/2026-13", "/report/x.csv", "/report/2026-1"] {
        assert_eq!(get(&v, bad).await.0, StatusCode::NOT_FOUND, "{bad}");
    }
    let (st, _, _) = get(&v, "/report?lang=en").await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    // The fleet page links to it.
    assert!(get(&v, "/").await.2.contains("href=\"/report\""));
}
