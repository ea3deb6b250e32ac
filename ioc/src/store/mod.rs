//! What wardgate-ioc keeps across restarts, behind a small trait so that a
//! PostgreSQL store (several instances, one ledger) can be added beside
//! SQLite ([`sqlite::SqliteStore`]).
//!
//! One [`Commit`] holds everything a batch of messages changed: the
//! touched sites' ledger state and fleet-view state, the touched streams'
//! de-duplication windows, device types from inventories, the time-series
//! points of new readings (the outbox) and the running count of messages. It is written
//! in one transaction, and only after it the messages are acknowledged to
//! the broker (the report's history, [`history`], goes in the same
//! transaction): a restart resumes from the last commit, and the broker
//! redelivers what was not acknowledged.

pub mod history;
pub mod sqlite;

use std::collections::BTreeMap;

use wardgate_contract::StreamKey;

use crate::dedup::SavedWindow;
use crate::fleet::Site;
use crate::history::{Delta, Resumed};
use crate::ledger::{LedgerState, SiteState};

pub use history::{HistoryReader, HistoryRows, SiteHistory};
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
    /// Each site's fleet-view state (online since, alarms, versions…).
    pub fleet: BTreeMap<String, Site>,
    /// Fleet-view rows that could not be read (site, why): left out, the
    /// site's view starts afresh (the retained status and inventory and
    /// the next readings fill it in). The ledger's rows are not so
    /// lenient ([`StoreError::Corrupt`]): its counts cannot be rebuilt.
    pub fleet_unreadable: Vec<(String, String)>,
    pub windows: Vec<(StreamKey, SavedWindow)>,
    /// `(site, device)` -> the device's `type` from the inventory.
    pub types: BTreeMap<(String, String), String>,
    /// Messages committed since the store was made.
    pub messages: u64,
    /// Digests ([`message_digest`]) of the messages of the last
    /// [`KEEP_COMMITS`] commits: a copy the broker sends again (DUP set,
    /// the same packet id) of one of them was committed, perhaps not
    /// acknowledged (an acknowledgement handed to the client may never
    /// have reached the broker), and is not applied again.
    pub delivered: Vec<u64>,
    /// The report's history: open intervals and each site's last span
    /// heard ([`crate::history::Tracker`] resumes from them).
    pub history: Resumed,
}

/// How many commits' message digests are kept: 15 s at the default
/// `ingest.commit_interval` (the broker resends right after a reconnect,
/// before anything new), and 150,000 messages in a backlog of full
/// commits at the default `ingest.commit_messages` (2,000), as 300
/// commits of 500 were before.
pub const KEEP_COMMITS: u64 = 75;

/// A message's digest: 64-bit FNV-1a of its packet id, topic and payload.
/// The broker resends an unacknowledged message with its packet id (and
/// DUP set); mosquitto gives a client's messages ids in turn, so the same
/// id, topic and payload come again only after 65,535 other messages.
pub fn message_digest(pkid: u16, topic: &str, payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let id = pkid.to_be_bytes();
    for b in id
        .iter()
        .chain(topic.as_bytes())
        .chain(&[0u8])
        .chain(payload)
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One batch's changes, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub sites: Vec<(String, SiteState)>,
    /// The fleet-view state of the sites the batch touched (a message, or
    /// a device turning silent). A store keeping several instances' one
    /// ledger writes these under the same row lock as the site's ledger.
    pub fleet: Vec<(String, Site)>,
    pub windows: Vec<(StreamKey, SavedWindow)>,
    pub types: Vec<((String, String), String)>,
    /// Line-protocol lines of the new readings, for the time-series writer.
    pub lines: Vec<String>,
    /// Messages in this batch.
    pub messages: u64,
    /// The digests ([`message_digest`]) of this batch's messages.
    pub delivered: Vec<u64>,
    /// The report's history this batch added ([`history`]).
    pub history: Delta,
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
