//! The local web page's server (axum routes on hyper): routes, basic auth,
//! security headers, binding the listen address. Read-only; it only
//! observes the snapshot.
//!
//! Its rooms: `strings` (the words, per language), `page` (the HTML),
//! `api` (`/api/status`, `/healthz`, `/metrics`), `auth` (credentials,
//! back-off, the password file's mode), `host` (the `Host` check against
//! DNS rebinding) and `server` (the accept loop and connection limits that
//! keep the LAN from starving the data path).

mod api;
mod auth;
pub(crate) mod host;
mod page;
mod server;
mod strings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::history::History;
use super::Snapshot;
pub(crate) use auth::password_file_warning;
use auth::{Backoff, Client, Credentials};
use page::{content_security_policy, render_body_in, render_page_in};
use server::{Limits, FD_RESERVE};
use strings::{choose_language, cookie_language, Strings, LANG_COOKIE};

#[derive(Clone)]
struct AppState {
    status: watch::Receiver<Snapshot>,
    history: Arc<History>,
    language: String,
    /// The site's time zone, for every time the page shows.
    zone: crate::status::words::Zone,
    /// The credentials expected, when auth is on.
    auth: Option<Arc<Credentials>>,
    /// Failed attempts per client.
    backoff: Arc<Backoff>,
    /// The password file is readable by other users (shown on the page).
    password_file_open: bool,
    /// The names the page answers to besides IP addresses.
    hosts: Arc<host::AllowedHosts>,
    /// Requests refused by the `Host` check.
    refused_hosts: Arc<host::Refusals>,
}

#[derive(Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

/// Basic auth, with a back-off per client: a client with
/// [`auth::FREE_FAILURES`] failed attempts waits (429, `Retry-After`),
/// doubling with each further failure, and is refused during the wait even
/// with the right password. A request without credentials is not an
/// attempt (a browser asks without them first).
fn authorised(st: &AppState, who: Client, h: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(want) = &st.auth else { return Ok(()) };
    let now = Instant::now();
    if let Some(wait) = st.backoff.waiting(who, now) {
        return Err(Box::new(too_many(wait)));
    }
    let got = h.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match got {
        Some(got) if want.matches(got) => {
            st.backoff.succeeded(who);
            return Ok(());
        }
        Some(_) => {
            if let Some(wait) = st.backoff.failed(who, now) {
                tracing::warn!(
                    client = %who,
                    wait_s = wait.as_secs(),
                    "web page: repeated wrong passwords, client must wait"
                );
            }
        }
        None => {}
    }
    Err(Box::new(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"wardgate\"")],
            "authentication required",
        )
            .into_response(),
    ))
}

fn too_many(wait: std::time::Duration) -> Response {
    // Whole seconds, rounded up, at least 1.
    let secs = wait.as_millis().div_ceil(1000).max(1);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        format!("too many wrong passwords: try again in {secs} s\n"),
    )
        .into_response()
}

/// Refuses a request for a name that is not the gateway's (421), so that
/// a page on another site whose name has been re-pointed at the gateway
/// (DNS rebinding) reads nothing; and one whose `Host` is not a host at all
/// (400). Both are counted and logged: a rebinding attempt is worth
/// knowing about.
async fn allowed_host(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let verdict = host::check(
        &st.hosts,
        req.headers()
            .get_all(header::HOST)
            .iter()
            .map(HeaderValue::as_bytes),
        req.uri().authority().map(|a| a.as_str()),
        req.version() <= axum::http::Version::HTTP_10,
    );
    let (code, body, why) = match verdict {
        host::Verdict::Allowed => return next.run(req).await,
        host::Verdict::Foreign(name) => (
            StatusCode::MISDIRECTED_REQUEST,
            // Vietnamese first, as on the page: staff who typed a name
            // the gateway does not know read this.
            "Thiết bị này không trả lời tên đó: hãy mở trang bằng địa chỉ IP hoặc tên riêng của thiết bị.\n\
             this gateway does not answer to that name: open the page by the gateway's address or its own name\n",
            format!("host {name:?} is not this gateway's"),
        ),
        host::Verdict::Malformed(e) => (StatusCode::BAD_REQUEST, "bad Host header\n", e.to_string()),
    };
    if let Some(refused) = st.refused_hosts.count(Instant::now()) {
        let client = req.extensions().get::<Client>().map(|c| c.to_string());
        tracing::warn!(
            client = client.as_deref().unwrap_or("?"),
            refused,
            allowed = ?st.hosts.names().collect::<Vec<_>>(),
            "web page: request refused, {why} (a DNS rebinding attempt, or a name to add to web.allowed_hosts)"
        );
    }
    (code, [(header::CONNECTION, "close")], body).into_response()
}

/// Refuses any request that carries a body: nothing here takes input, so a
/// body is at best a mistake and at worst a way to hold the connection.
async fn no_bodies(req: Request, next: Next) -> Response {
    let h = req.headers();
    let declared = h
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || h.contains_key(header::TRANSFER_ENCODING);
    if declared {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            "this page takes no request body\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// The security headers, on every response the routes give (and on 404,
/// 405, 401, 413 and 429).
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(content_security_policy()),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The status changes every second and may be behind a password: no
    // cache, and no other site may embed what it says.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    res
}

fn notices(st: &AppState, t: &Strings) -> Vec<&'static str> {
    let mut n = Vec::new();
    if st.password_file_open {
        n.push(t.password_file_open);
    }
    n
}

fn lang_of(st: &AppState, q: &LangQuery, h: &HeaderMap) -> &'static Strings {
    let cookie = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(cookie_language);
    strings::strings(choose_language(q.lang.as_deref(), cookie, &st.language))
}

/// The language picked with the link, remembered for a year (the page
/// itself, not a script, sets it; the language alone, nothing else).
fn remember_language(q: &LangQuery, res: &mut Response) {
    if let Some(l) = q.lang.as_deref() {
        let l = if l == "en" { "en" } else { "vi" };
        let c = format!("{LANG_COOKIE}={l}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly");
        if let Ok(v) = HeaderValue::from_str(&c) {
            res.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
}

async fn page(
    State(st): State<AppState>,
    Extension(who): Extension<Client>,
    Query(q): Query<LangQuery>,
    h: HeaderMap,
) -> Response {
    let mut res = html(&st, who, &q, &h, render_page_in);
    remember_language(&q, &mut res);
    res
}

async fn body(
    State(st): State<AppState>,
    Extension(who): Extension<Client>,
    Query(q): Query<LangQuery>,
    h: HeaderMap,
) -> Response {
    html(&st, who, &q, &h, render_body_in)
}

/// The page or its body (the refresh): authorised, in the reader's
/// language, rendered from the latest status.
fn html(
    st: &AppState,
    who: Client,
    q: &LangQuery,
    h: &HeaderMap,
    render: impl FnOnce(&Snapshot, &History, &Strings, &[&str], crate::status::words::Zone) -> String,
) -> Response {
    if let Err(r) = authorised(st, who, h) {
        return *r;
    }
    let t = lang_of(st, q, h);
    let snap = st.status.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render(&snap, &st.history, t, &notices(st, t), st.zone),
    )
        .into_response()
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The listen address is taken or not allowed: the page is off, the
    /// gateway goes on.
    #[error("web page on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The basic-auth password file cannot be read.
    #[error("web.password_file {0}")]
    Password(#[source] crate::host::file::FileError),
}

/// Binds the page's address (so a caller knows the port) and returns the
/// server future. Reads (and raises, if it may) the process's descriptor
/// limit and fits the connection cap under it.
pub async fn bind(
    cfg: &crate::status::config::WebConfig,
    status: watch::Receiver<Snapshot>,
    history: Arc<History>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), WebError> {
    let auth = match (&cfg.username, &cfg.password_file) {
        (Some(u), Some(p)) => {
            let pw = crate::host::file::read_secret_line(p).map_err(WebError::Password)?;
            Some(Arc::new(Credentials::new(u, &pw)))
        }
        _ => None,
    };
    let password_file_open = match password_file_warning(cfg) {
        Some(w) => {
            tracing::warn!("{w}");
            true
        }
        None => false,
    };
    let state = AppState {
        status,
        history,
        language: cfg.language.clone(),
        zone: cfg.zone(),
        auth,
        backoff: Arc::new(Backoff::default()),
        password_file_open,
        hosts: Arc::new(host::AllowedHosts::new(
            host::own_hostname().as_deref(),
            &cfg.allowed_hosts,
        )),
        refused_hosts: Arc::new(host::Refusals::default()),
    };
    tracing::info!(
        names = ?state.hosts.names().collect::<Vec<_>>(),
        "web page answers to these names and to any IP address"
    );
    let app = Router::new()
        .route("/", get(page))
        .route("/body", get(body))
        .route("/api/status", get(api::api_status))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .layer(middleware::from_fn(no_bodies))
        // Outside `no_bodies`: a foreign name learns nothing else.
        .layer(middleware::from_fn_with_state(state.clone(), allowed_host))
        .layer(middleware::map_response(security_headers))
        .with_state(state);
    let soft = server::descriptor_limit();
    let wanted = cfg.max_connections.as_usize();
    let limits = Limits::fitting(wanted, soft, cfg.header_timeout.get());
    if limits.total < wanted {
        tracing::warn!(
            wanted,
            allowed = limits.total,
            fd_limit = soft,
            reserve = FD_RESERVE,
            "web.max_connections lowered to keep file descriptors for the devices and sinks (raise LimitNOFILE)"
        );
    }
    tracing::info!(
        max_connections = limits.total,
        per_client = limits.per_client,
        header_timeout_s = limits.header_timeout.as_secs_f32(),
        fd_limit = soft,
        "web page limits"
    );
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| WebError::Bind {
            addr: cfg.listen.clone(),
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| WebError::Bind {
        addr: cfg.listen.clone(),
        source: e,
    })?;
    Ok((addr, server::serve(listener, app, limits, cancel)))
}
