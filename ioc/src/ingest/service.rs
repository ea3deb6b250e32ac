//! `wardgate-ioc run`: wires the store, the ledger, the broker side, the
//! ingest and the time-series writer, and stops them on SIGTERM/SIGINT
//! (the pending batch committed and acknowledged first).

use std::sync::Arc;

use tokio::sync::{mpsc, watch, Notify};

use super::{mqtt, restore, Ingest, IngestError};
use crate::config::Config;
use crate::store::{SqliteStore, Store};
use crate::tsdb::{Writer, WriterCounts};

/// Runs until a stop signal or an error.
pub async fn serve(cfg: Config, stop: watch::Receiver<bool>) -> Result<(), IngestError> {
    let mut store: Box<dyn Store> = Box::new(SqliteStore::open(&cfg.store_path)?);
    let (ledger, batch, committed) = restore(&cfg, store.as_mut())?;
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
                counts: Arc::new(WriterCounts::default()),
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
        "wardgate-ioc running"
    );
    let mut ingest = Ingest::new(cfg, ledger, batch, committed, store, client.clone(), wake);
    let res = ingest.run(rx, stop).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = client.try_disconnect();
    if res.is_err() {
        // Stopped by an error, not by `stop`: the writer does not know.
        if let Some(w) = &writer {
            w.abort();
        }
    }
    if tokio::time::timeout(std::time::Duration::from_secs(3), &mut poller)
        .await
        .is_err()
    {
        let _ = poll_stop_tx.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), poller).await;
    }
    if let Some(w) = writer {
        match tokio::time::timeout(std::time::Duration::from_secs(5), w).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "tsdb writer"),
            Ok(_) => {}
            Err(_) => tracing::warn!("tsdb writer did not stop in 5 s; points stay in the outbox"),
        }
    }
    res
}
