//! Host names a DNS rebinding would send are refused, and every response
//! carries the security headers (its CSP hashes checked against the page).

use std::time::Duration;

use super::*;
use crate::common::*;

fn sha256_b64(s: &str) -> String {
    use base64::Engine as _;
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(d.as_ref())
}

/// The text between `open` and the next `close` in `page`.
fn between<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
    let start = page.find(open).map(|i| i + open.len()).expect(open);
    let end = page[start..].find(close).expect(close);
    &page[start..start + end]
}

/// DNS rebinding: a request for a name that is not the gateway's, as a
/// browser sends it when another site has pointed its own name at the
/// gateway's address, is refused (421, logged), with the security headers;
/// the gateway's own names, any IP address and a listed name are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_host_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    let no_broker = closed_port();
    std::fs::write(
        &cfg,
        config_text(no_broker.port, dir.path(), "")
            .replace("[web]\n", "[web]\nallowed_hosts = [\"gw.ward3.lan\"]\n"),
    )
    .unwrap();
    let mut gw = Process::start(&cfg, &dir.path().join("log"));
    let addr = page_addr(&gw).await;
    let port = addr.port();
    let get = |target: String, host: String| async move {
        let req = format!("GET {target} HTTP/1.1\r\n{host}Connection: close\r\n\r\n");
        http_exchange(addr, &req, WAIT, "the page").await
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();

    // The rebinding: attacker.example now resolves to the gateway.
    let (code, text) = get(
        "/api/status".into(),
        format!("Host: attacker.example:{port}\r\n"),
    )
    .await;
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("does not answer to that name"), "{text}");
    assert!(
        text.contains("không trả lời tên đó"),
        "Vietnamese first: {text}"
    );
    assert!(
        !text.contains("\"uplink\""),
        "nothing of the status: {text}"
    );
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("x-frame-options: deny"), "{text}");
    assert!(lower.contains("content-security-policy:"), "{text}");
    // The same name in an absolute-form target, with an honest Host.
    let (code, text) = get(
        format!("http://attacker.example:{port}/"),
        "Host: localhost\r\n".into(),
    )
    .await;
    assert_eq!(code, 421, "{text}");
    // Counted where the IOC's scrape sees it.
    let (code, text) = get("/metrics".into(), "Host: localhost\r\n".into()).await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("wardgate_web_refused_hosts 2"), "{text}");
    // A Host that is no host at all.
    let (code, text) = get("/".into(), "Host: staff@localhost\r\n".into()).await;
    assert_eq!(code, 400, "{text}");

    // The normal requests.
    let mut ours = vec![
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("LOCALHOST.:{port}"),
        "GW.Ward3.lan".to_owned(),
        "[::1]".to_owned(),
    ];
    if !hostname.is_empty() {
        ours.push(format!("{hostname}:{port}"));
        ours.push(format!("{hostname}.local"));
    }
    for host in ours {
        let (code, text) = get("/api/status".into(), format!("Host: {host}\r\n")).await;
        assert_eq!(code, 200, "Host: {host}: {text}");
        assert!(text.contains("\"uplink\""), "Host: {host}: {text}");
    }

    // Refusals are counted and logged.
    let log = gw.log_text();
    assert!(
        log.contains("web page: request refused") && log.contains("attacker.example"),
        "{log}"
    );
    assert!(log.contains("web page answers to these names"), "{log}");
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(Duration::from_secs(15)).await, Some(0));
}

/// Item 6: security headers on every response (page, body, API, metrics,
/// health, 401 and 404), the CSP naming the hashes of exactly what the page
/// inlines, and the page's own script not blocked in a real browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_every_response() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = ups1_config(dir.path(), broker.port);
    let mut gw = Process::start(&cfg, &dir.path().join("log"));
    let addr = page_addr(&gw).await;
    // A bound for an exchange, not a promise: generous.
    let t = WAIT;
    let page = get_from(HONEST, addr, "/", "", t).await.expect("the page");
    assert_eq!(page.code, 200);
    let csp = page
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("no CSP on the page: {:?}", page.headers))
        .to_owned();
    for want in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(want), "{want} missing from {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let script = between(&page.body, "<script>", "</script>");
    let style = between(&page.body, "<style>", "</style>");
    assert!(
        csp.contains(&format!("script-src 'sha256-{}'", sha256_b64(script))),
        "the CSP does not allow the page's own script: {csp}"
    );
    assert!(
        csp.contains(&format!("style-src 'sha256-{}'", sha256_b64(style))),
        "the CSP does not allow the page's own style: {csp}"
    );
    for path in [
        "/",
        "/body",
        "/api/status",
        "/metrics",
        "/healthz",
        "/nothing-here",
    ] {
        let r = get_from(HONEST, addr, path, "", t)
            .await
            .unwrap_or_else(|| panic!("{path}: no answer"));
        let h = |n: &str| r.header(n).map(str::to_ascii_lowercase);
        assert_eq!(
            h("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}: {r:?}"
        );
        assert_eq!(h("x-frame-options").as_deref(), Some("deny"), "{path}");
        assert_eq!(
            h("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
        assert!(
            h("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")),
            "{path}: {r:?}"
        );
        assert_eq!(h("cache-control").as_deref(), Some("no-store"), "{path}");
    }

    // The page in a real browser, with the CSP: the refresh script runs
    // (chromium would log "Refused to execute inline script" otherwise) and
    // the page shows the headline.
    let url = format!("http://{addr}/");
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let p = profile.path().to_path_buf();
        move || {
            chromium(
                &p,
                [
                    "--enable-logging=stderr",
                    "--v=0",
                    "--accept-lang=en",
                    "--dump-dom",
                    &url,
                ],
            )
        }
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let console = String::from_utf8_lossy(&out.stderr);
    assert!(dom.contains("id=\"headline\""), "{dom}");
    assert!(
        !console.contains("Content Security Policy"),
        "the browser blocked part of the page: {console}"
    );
    broker.stop();
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(Duration::from_secs(15)).await, Some(0));
}
