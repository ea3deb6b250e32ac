//! The local web page's server (axum): routes, basic auth, binding the
//! listen address. Read-only; it only observes the snapshot.
//!
//! Its rooms: `strings` (the words, per language), `page` (the HTML) and
//! `api` (`/api/status`, `/healthz`, `/metrics`).

mod api;
mod page;
mod strings;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::history::History;
use super::Snapshot;
pub use api::render_metrics;
pub use page::{headline, render_body, render_page};
pub use strings::{choose_language, Strings, EN, VI};

#[derive(Clone)]
struct AppState {
    status: watch::Receiver<Snapshot>,
    history: Arc<History>,
    language: String,
    /// `Basic <base64>` expected, when auth is on.
    auth: Option<String>,
}

#[derive(Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

fn authorised(st: &AppState, h: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(want) = &st.auth else { return Ok(()) };
    let got = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if got == Some(want.as_str()) {
        Ok(())
    } else {
        Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"wardgate\"")],
                "authentication required",
            )
                .into_response(),
        ))
    }
}

fn lang_of(st: &AppState, q: &LangQuery, h: &HeaderMap) -> &'static Strings {
    let accept = h.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    strings::strings(choose_language(q.lang.as_deref(), accept, &st.language))
}

async fn page(State(st): State<AppState>, Query(q): Query<LangQuery>, h: HeaderMap) -> Response {
    if let Err(r) = authorised(&st, &h) {
        return *r;
    }
    let t = lang_of(&st, &q, &h);
    let snap = st.status.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render_page(&snap, &st.history, t),
    )
        .into_response()
}

async fn body(State(st): State<AppState>, Query(q): Query<LangQuery>, h: HeaderMap) -> Response {
    if let Err(r) = authorised(&st, &h) {
        return *r;
    }
    let t = lang_of(&st, &q, &h);
    let snap = st.status.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render_body(&snap, &st.history, t),
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
    #[error("web.password_file {path}: {source}")]
    Password {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the page's address (so a caller knows the port) and returns the
/// server future.
pub async fn bind(
    cfg: &crate::config::WebConfig,
    status: watch::Receiver<Snapshot>,
    history: Arc<History>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), WebError> {
    let auth = match (&cfg.username, &cfg.password_file) {
        (Some(u), Some(p)) => {
            let pw = std::fs::read_to_string(p).map_err(|e| WebError::Password {
                path: p.display().to_string(),
                source: e,
            })?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"))
            ))
        }
        _ => None,
    };
    let state = AppState {
        status,
        history,
        language: cfg.language.clone(),
        auth,
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/body", get(body))
        .route("/api/status", get(api::api_status))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .with_state(state);
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
    let fut = async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "web page stopped");
        }
    };
    Ok((addr, fut))
}
