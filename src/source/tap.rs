//! What other parts of the gateway may ask of a running device besides its
//! readings: every poll's outcome, as it happens ([`PollTap`], watched by
//! the power monitor), and a command sent to the UPS through the device's
//! own link ([`UpsCommand`], run by the supervisor between polls, so the
//! link keeps one owner). Neither sits on the data path: readings still go
//! only to the spool.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;

use crate::model::Values;

/// One poll's outcome, numbered so a watcher can tell two polls from one.
#[derive(Debug, Clone, Default)]
pub struct PollState {
    /// Polls so far (good or failed); 0: none yet.
    pub n: u64,
    /// The values of a good poll; None when the poll failed or the device
    /// went stale or faulted.
    pub values: Option<Values>,
    /// When it happened (None before the first poll).
    pub at: Option<Instant>,
}

/// The device's poll outcomes, for watchers. Sending costs nothing while
/// nobody watches.
#[derive(Debug)]
pub struct PollTap {
    tx: watch::Sender<PollState>,
}

impl Default for PollTap {
    fn default() -> Self {
        PollTap {
            tx: watch::Sender::new(PollState::default()),
        }
    }
}

impl PollTap {
    pub fn subscribe(&self) -> watch::Receiver<PollState> {
        self.tx.subscribe()
    }

    /// A poll ended: `values` for a good one, None for a failed one.
    pub fn record(&self, values: Option<&Values>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        self.tx.send_modify(|s| {
            s.n += 1;
            s.values = values.cloned();
            s.at = Some(Instant::now());
        });
    }
}

/// A command for the UPS itself, sent over the device's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsCommand {
    /// Switch the output off after `off_after`, and on again when the
    /// mains return (Megatec `S<n>R<m>`, APC Smart's delayed shutdown with
    /// return, NUT `shutdown.return` with `ups.delay.shutdown`).
    ShutdownReturn { off_after: Duration },
}

/// What the UPS was sent (in words, for the log and the event), or why not.
pub type CommandResult = Result<String, String>;

/// One command waiting for the device's loop.
#[derive(Debug, Default)]
pub(crate) struct CommandSlot {
    pending: Mutex<Option<(UpsCommand, oneshot::Sender<CommandResult>)>>,
    wake: Notify,
}

impl CommandSlot {
    /// Leaves a command for the loop (a newer one replaces one not yet
    /// taken: its caller is told so).
    pub(crate) fn put(&self, cmd: UpsCommand) -> oneshot::Receiver<CommandResult> {
        let (tx, rx) = oneshot::channel();
        let old = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace((cmd, tx));
        if let Some((_, old_tx)) = old {
            let _ = old_tx.send(Err("replaced by a newer command".into()));
        }
        self.wake.notify_one();
        rx
    }

    /// Waits until a command is left, and takes it.
    pub(crate) async fn take(&self) -> (UpsCommand, oneshot::Sender<CommandResult>) {
        loop {
            let notified = self.wake.notified();
            if let Some(c) = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return c;
            }
            notified.await;
        }
    }
}
