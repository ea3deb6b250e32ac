//! `wardgate-ioc run`: wires the store, the ledger and the fleet view, the
//! broker side, the ingest, the time-series writer and the pages, and stops
//! them on SIGTERM/SIGINT (the pending batch committed and acknowledged
//! first).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};

use super::{mqtt, restore, Ingest, IngestError};
use crate::config::Config;
use crate::metrics::ServiceCounts;
use crate::store::{SqliteStore, Store};
use crate::tsdb::Writer;
use crate::web::{router, ReportSource, SharedView};

/// Runs until a stop signal or an error.
pub async fn serve(cfg: Config, stop: watch::Receiver<bool>) -> Result<(), IngestError> {
    let mut store: Box<dyn Store> = Box::new(SqliteStore::open(&cfg.store_path)?);
    let (monitor, resume) = restore(&cfg, store.as_mut())?;
    let counts = Arc::new(ServiceCounts::default());
    ServiceCounts::add(&counts.outbox, resume.outbox);
    let view = Arc::new(
        SharedView::new(monitor)
            .with_counts(counts.clone())
            .with_report(ReportSource {
                store: cfg.store_path.clone(),
                cfg: cfg.report.clone(),
            }),
    );
    // Bound before anything connects: a taken address stops the start
    // with its reason, not a service without its pages.
    let listener = TcpListener::bind(cfg.web_listen)
        .await
        .map_err(|source| IngestError::Web {
            addr: cfg.web_listen,
            source,
        })?;
    let mut web = tokio::spawn(pages(listener, view.clone(), stop.clone()));
    let opts = mqtt::options(&cfg.mqtt, &cfg.mqtt.client_id, false)?;
    // Room for every acknowledgement of a full batch and the subscriptions.
    let cap = cfg.ingest.commit_messages * 2 + 16;
    let (client, el) = rumqttc::AsyncClient::new(opts, cap);
    let (tx, rx) = mpsc::channel(cfg.ingest.commit_messages * 2);
    // The broker side outlives the ingest by a moment: it writes the last
    // acknowledgements and the disconnect, then ends (or is stopped).
    let (poll_stop_tx, poll_stop) = watch::channel(false);
    let mut poller = tokio::spawn(mqtt::poll(
        el,
        client.clone(),
        mqtt::filters(&cfg.mqtt),
        tx,
        poll_stop,
    ));
    let wake = Arc::new(Notify::new());
    let writer = match &cfg.tsdb {
        Some(t) => {
            let w = Writer {
                cfg: t.clone(),
                store: Box::new(SqliteStore::open(&cfg.store_path)?),
                wake: wake.clone(),
                counts: counts.clone(),
            };
            Some(tokio::spawn(w.run(stop.clone())))
        }
        None => None,
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(
        host = %cfg.mqtt.host,
        port = cfg.mqtt.port,
        client_id = %cfg.mqtt.client_id,
        filters = ?mqtt::filters(&cfg.mqtt),
        web = %cfg.web_listen,
        "wardgate-ioc running"
    );
    let mut ingest = Ingest::new(cfg, view, resume, store, client.clone(), wake, counts);
    let res = ingest.run(rx, stop).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = client.try_disconnect();
    if res.is_err() {
        // Stopped by an error, not by `stop`: the writer and the pages do
        // not know.
        if let Some(w) = &writer {
            w.abort();
        }
        web.abort();
    }
    if tokio::time::timeout(Duration::from_secs(3), &mut poller)
        .await
        .is_err()
    {
        let _ = poll_stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), poller).await;
    }
    if let Some(w) = writer {
        match tokio::time::timeout(Duration::from_secs(5), w).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "tsdb writer"),
            Ok(_) => {}
            Err(_) => tracing::warn!("tsdb writer did not stop in 5 s; points stay in the outbox"),
        }
    }
    // A page being read is let finish; a browser keeping its connection
    // open does not hold the stop up.
    if tokio::time::timeout(Duration::from_secs(1), &mut web)
        .await
        .is_err()
    {
        web.abort();
    }
    res
}

/// The fleet pages and `/metrics` on `listener` until `stop`.
async fn pages(listener: TcpListener, view: Arc<SharedView>, mut stop: watch::Receiver<bool>) {
    let quit = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router(view))
        .with_graceful_shutdown(quit)
        .await
    {
        tracing::error!(error = %e, "the pages' server stopped");
    }
}
