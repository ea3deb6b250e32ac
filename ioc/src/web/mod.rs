//! The fleet pages over HTTP: `/` every site on one screen, `/site/<id>`
//! one site with its devices and ledger, `/report/<YYYY-MM>` (and
//! `.csv`) the monthly report, `/metrics` (Prometheus text),
//! `/healthz`. Server-side HTML, no script; the pages refresh themselves
//! (meta refresh). Vietnamese first, English with `?lang=en`.
//!
//! The pages only read: ingest writes the [`Monitor`] inside the
//! [`SharedView`] (`view.write().handle(topic, payload, at_ms)`, one
//! message at a time), the handlers take the read lock for as long as one
//! page takes to render (a few milliseconds for a thousand sites; never
//! across an await), so a message waits at most that long.

mod page;
mod report_page;
mod site_page;
pub mod words;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::fleet::Monitor;
use crate::metrics::ServiceCounts;

pub use page::fleet_page;
pub use site_page::site_page;

/// The view the pages read and ingest writes.
pub struct SharedView {
    monitor: RwLock<Monitor>,
    /// The consumer's clock, ms since 1970 (a fixed one in tests).
    clock: fn() -> i64,
    /// The running service's own counts, for `/metrics` (none in tests
    /// of the pages alone).
    counts: Option<Arc<ServiceCounts>>,
    /// Where the monthly report's history is (none: `/report` is 404).
    report: Option<Arc<ReportSource>>,
}

/// The store the report pages read (read-only) and `[report]`.
#[derive(Debug, Clone)]
pub struct ReportSource {
    pub store: std::path::PathBuf,
    pub cfg: crate::report::ReportConfig,
}

/// The system clock in ms since 1970 (0 if it reads before 1970).
pub fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl SharedView {
    pub fn new(monitor: Monitor) -> Self {
        SharedView::with_clock(monitor, system_ms)
    }

    pub fn with_clock(monitor: Monitor, clock: fn() -> i64) -> Self {
        SharedView {
            monitor: RwLock::new(monitor),
            clock,
            counts: None,
            report: None,
        }
    }

    /// `/report/<YYYY-MM>` reads the history in this store.
    pub fn with_report(mut self, source: ReportSource) -> Self {
        self.report = Some(Arc::new(source));
        self
    }

    /// `/metrics` also shows the service's own counts.
    pub fn with_counts(mut self, counts: Arc<ServiceCounts>) -> Self {
        self.counts = Some(counts);
        self
    }

    /// For the pages. A writer that panicked leaves the view as it was
    /// (every change is one message's): it is read all the same.
    pub fn read(&self) -> RwLockReadGuard<'_, Monitor> {
        self.monitor.read().unwrap_or_else(|p| p.into_inner())
    }

    /// For ingest: hold it for one message (or one batch), no longer.
    pub fn write(&self) -> RwLockWriteGuard<'_, Monitor> {
        self.monitor.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// `Fleet::tick` at the view's clock: ingest calls it once a second
    /// (devices turn silent). Returns the sites it changed.
    pub fn tick(&self) -> Vec<String> {
        let now = self.now_ms();
        self.write().fleet.tick(now)
    }
}

/// `?lang=en` (anything else, or none: Vietnamese).
#[derive(Debug, Deserialize)]
pub struct LangQuery {
    lang: Option<String>,
}

/// The routes, over `state`.
pub fn router(state: Arc<SharedView>) -> Router {
    Router::new()
        .route("/", get(fleet))
        .route("/site/{id}", get(site))
        .route("/report", get(report_page::current))
        .route("/report/{month}", get(report_page::month))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn fleet(State(v): State<Arc<SharedView>>, Query(q): Query<LangQuery>) -> Html<String> {
    let t = words::strings(q.lang.as_deref());
    let now = v.now_ms();
    let m = v.read();
    Html(fleet_page(t, &m.fleet, &m.ledger, now))
}

async fn site(
    State(v): State<Arc<SharedView>>,
    Path(id): Path<String>,
    Query(q): Query<LangQuery>,
) -> Response {
    let t = words::strings(q.lang.as_deref());
    let now = v.now_ms();
    let m = v.read();
    match m.fleet.site(&id) {
        Some(s) => Html(site_page(t, &id, s, &m.ledger, now)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><html lang=\"{}\"><meta charset=\"utf-8\"><title>{}</title><p>{}: {}</p><p><a href=\"/\">{}</a></p></html>",
                t.lang,
                t.not_found,
                t.not_found,
                words::esc(&id),
                t.back
            )),
        )
            .into_response(),
    }
}

async fn metrics(State(v): State<Arc<SharedView>>) -> Response {
    let now = v.now_ms();
    let mut body = {
        let m = v.read();
        crate::metrics::render(&m.fleet, &m.ledger, now)
    };
    if let Some(c) = &v.counts {
        crate::metrics::render_service(&mut body, c);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[cfg(test)]
mod tests;
