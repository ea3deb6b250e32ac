//! What wardgate-ioc keeps across restarts, behind a small trait so that a
//! PostgreSQL store (several instances, one ledger) can be added beside
//! SQLite ([`sqlite::SqliteStore`]).
//!
//! One [`Commit`] holds everything a batch of messages changed: the
//! touched sites' ledger state, the touched streams' de-duplication
//! windows, device types from inventories, the time-series points of new
//! readings (the outbox) and the running count of messages. It is written
//! in one transaction, and only after it the messages are acknowledged to
//! the broker: a restart resumes from the last commit, and the broker
//! redelivers what was not acknowledged.

pub mod sqlite;

use std::collections::BTreeMap;

use wardgate_contract::StreamKey;

use crate::dedup::SavedWindow;
use crate::ledger::{LedgerState, SiteState};

pub use sqlite::SqliteStore;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be opened, read or written (disk full, wrong
    /// permissions, locked): the ingest stops without acknowledging the
    /// batch (the broker redelivers it); fix the disk and restart.
    #[error("{path}: {source}")]
    Db {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    /// A saved row cannot be read back (damaged or from a newer version):
    /// the ingest refuses to start rather than count from a wrong state;
    /// move the file aside to start afresh (the broker's queue and the
    /// gateways' ledgers fill in what they can).
    #[error("{path}: {what}: {why}")]
    Corrupt {
        path: String,
        what: String,
        why: String,
    },
}

/// What a store gives back at start.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub state: LedgerState,
    pub windows: Vec<(StreamKey, SavedWindow)>,
    /// `(site, device)` -> the device's `type` from the inventory.
    pub types: BTreeMap<(String, String), String>,
    /// Messages committed since the store was made.
    pub messages: u64,
}

/// One batch's changes, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub sites: Vec<(String, SiteState)>,
    pub windows: Vec<(StreamKey, SavedWindow)>,
    pub types: Vec<((String, String), String)>,
    /// Line-protocol lines of the new readings, for the time-series writer.
    pub lines: Vec<String>,
    /// Messages in this batch.
    pub messages: u64,
}

/// Points waiting for the time-series database: `(id, line)` by id.
pub type OutboxRows = Vec<(i64, String)>;

/// The store. Every method is a short blocking call (SQLite on the
/// local disk); callers on the runtime wrap it in `block_in_place`.
pub trait Store: Send {
    /// Everything saved (empty for a new store).
    fn load(&mut self) -> Result<Loaded, StoreError>;
    /// Writes one batch's changes, all or nothing, durably.
    fn commit(&mut self, c: &Commit) -> Result<(), StoreError>;
    /// The oldest `max` points waiting for the time-series database.
    fn outbox_peek(&mut self, max: usize) -> Result<OutboxRows, StoreError>;
    /// Deletes the points up to and including `id` (written).
    fn outbox_done(&mut self, id: i64) -> Result<(), StoreError>;
    /// How many points wait.
    fn outbox_len(&mut self) -> Result<u64, StoreError>;
}
