//! Readings to a time-series database: the gateway's line protocol
//! ([`line`]) posted over HTTP to VictoriaMetrics or InfluxDB 2
//! (`tsdb.url`).
//!
//! The ingest puts the points of new readings into the store's outbox in
//! the same transaction as the ledger (so the broker's acknowledgement
//! does not wait for the database, and a dead database never stalls
//! MQTT); [`Writer::run`] takes them from the outbox in batches, posts
//! them and deletes them once the database answered 2xx. Transient errors
//! (no connection, timeout, 5xx, 408, 429) are retried with jittered,
//! growing back-off, points kept; a refused batch (other 4xx) is logged,
//! counted and set aside, never retried forever.

pub mod line;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::sync::Notify;

use crate::config::TsdbConfig;
use crate::metrics::ServiceCounts;
use crate::store::{Store, StoreError};

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    /// No connection, no answer in time, or the server is busy or broken
    /// (5xx, 408, 429): keep the points and try again after a back-off.
    #[error("transient: {0}")]
    Transient(String),
    /// The server refused the points (4xx): set the batch aside (logged,
    /// counted); retrying would loop.
    #[error("refused ({status}): {body}")]
    Refused { status: u16, body: String },
    /// The token file cannot be read: fix it; retried like a transient
    /// error (the technician may be copying it in).
    #[error("tsdb.token_file {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The store's outbox cannot be read or updated: the writer stops and
    /// the service with it (the store's error says why).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Posts `body` (lines separated by `\n`) to the configured write URL.
/// Returns the HTTP status on 2xx.
pub async fn post(cfg: &TsdbConfig, body: String) -> Result<u16, TsdbError> {
    let token = match &cfg.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|source| TsdbError::Token {
                    path: p.display().to_string(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let fut = async {
        let stream = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| TsdbError::Transient(format!("cannot reach {}: {e}", cfg.base)))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| TsdbError::Transient(format!("{}: {e}", cfg.base)))?;
        tokio::spawn(conn);
        let mut req = Request::post(&cfg.write_path)
            .header("host", format!("{}:{}", cfg.host, cfg.port))
            .header("content-type", "text/plain; charset=utf-8");
        if let Some(t) = &token {
            req = req.header("authorization", format!("Token {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TsdbError::Transient(format!("request: {e}")))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| TsdbError::Transient(format!("{}: {e}", cfg.base)))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        let body: String = body.trim().chars().take(300).collect();
        match status {
            200..=299 => Ok(status),
            408 | 429 | 500..=599 => Err(TsdbError::Transient(format!("{status}: {body}"))),
            _ => Err(TsdbError::Refused { status, body }),
        }
    };
    tokio::time::timeout(cfg.timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(TsdbError::Transient(format!(
                "no answer from {} in {:?}",
                cfg.base, cfg.timeout
            )))
        })
}

/// The outbox drainer: its own store connection, woken after each commit.
pub struct Writer {
    pub cfg: TsdbConfig,
    pub store: Box<dyn Store>,
    pub wake: Arc<Notify>,
    /// The service's counts: points written, retried, set aside, and the
    /// outbox gauge (lowered as rows leave it).
    pub counts: Arc<ServiceCounts>,
}

impl Writer {
    /// Drains the outbox until `stop` turns true; returns on a store error.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), TsdbError> {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let rows = tokio::task::block_in_place(|| self.store.outbox_peek(self.cfg.batch))?;
            let Some(last) = rows.last().map(|r| r.0) else {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            let n = rows.len() as u64;
            let mut body = String::new();
            for (_, l) in &rows {
                body.push_str(l);
                body.push('\n');
            }
            match post(&self.cfg, body).await {
                Ok(_) => {
                    tokio::task::block_in_place(|| self.store.outbox_done(last))?;
                    ServiceCounts::add(&self.counts.points_written, n);
                    self.counts.outbox_down(n);
                    backoff.reset();
                }
                Err(TsdbError::Refused { status, body }) => {
                    tracing::error!(points = n, status, %body, "tsdb refused a batch: set aside (points not written)");
                    tokio::task::block_in_place(|| self.store.outbox_done(last))?;
                    ServiceCounts::add(&self.counts.points_set_aside, n);
                    self.counts.outbox_down(n);
                }
                Err(e) => {
                    ServiceCounts::add(&self.counts.points_retried, n);
                    let wait = backoff.next_wait();
                    tracing::warn!(points = n, error = %e, ?wait, "tsdb write failed; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }
}
