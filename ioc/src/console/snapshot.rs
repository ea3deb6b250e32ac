//! The fleet as the running service last committed it, read from its
//! SQLite store without writing a byte: the file opened read-only
//! (`SQLITE_OPEN_READ_ONLY`, `query_only`), both tables read in one read
//! transaction, so the ledger and the fleet view are those of the same
//! commit. In WAL mode a reader never blocks the service's commits.
//!
//! It reads two tables the store writes (`sites`: the ledger's
//! `SiteState`, `fleet_sites`: the fleet view's `Site`, both JSON; see
//! `store/sqlite.rs`) and nothing else of it; the binary that writes them
//! is this one, so the JSON is the same version.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::dedup::Dedup;
use crate::fleet::Site;
use crate::ledger::{Ledger, LedgerConfig, LedgerState, SiteState, SiteTotals};

/// Why the store cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No file at `store.path`: the service has not run with this config
    /// (or the path is another's); check `--config`.
    #[error("{0}: no store here (has `wardgate-ioc run` run with this config?)")]
    Missing(String),
    /// SQLite cannot open or read it (permissions: the service's user or
    /// root; not a database): the message says which.
    #[error("{path}: {source}")]
    Db {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
}

/// One site as saved: its fleet view (None: no row, or one that does not
/// read, see [`Snapshot::unreadable`]) and its ledger's totals (None: no
/// ledger row; `Err`: a row that does not restore).
#[derive(Debug, Clone)]
pub struct SavedSite {
    pub site: Site,
    pub totals: Option<Result<SiteTotals, String>>,
}

/// Every site of the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub sites: BTreeMap<String, SavedSite>,
    /// Messages committed since the store was made.
    pub messages: u64,
    /// Rows that do not read: (site, what, why).
    pub unreadable: Vec<(String, &'static str, String)>,
}

/// Reads the store at `path` (`from_zero`: the config's
/// `ingest.from_zero`, as `run` restores the ledger).
pub fn read(path: &Path, from_zero: bool) -> Result<Snapshot, SnapshotError> {
    let p = path.display().to_string();
    if !path.exists() {
        return Err(SnapshotError::Missing(p));
    }
    let db = |source| SnapshotError::Db {
        path: p.clone(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
    conn.execute_batch("PRAGMA query_only = ON").map_err(db)?;
    // One read transaction: the two tables of the same commit.
    let tx = conn.unchecked_transaction().map_err(db)?;
    let ledger_rows = rows(&tx, "SELECT site, state FROM sites").map_err(db)?;
    let fleet_rows = rows(&tx, "SELECT site, state FROM fleet_sites").map_err(db)?;
    let messages: i64 = tx
        .query_row("SELECT value FROM meta WHERE key='messages'", [], |r| {
            r.get(0)
        })
        .map_err(db)?;
    drop(tx);
    let mut snap = Snapshot {
        messages: u64::try_from(messages).unwrap_or(0),
        ..Snapshot::default()
    };
    for (site, json) in fleet_rows {
        let s = match serde_json::from_str::<Site>(&json) {
            Ok(s) => s,
            Err(e) => {
                snap.unreadable
                    .push((site.clone(), "fleet view", e.to_string()));
                Site::default()
            }
        };
        snap.sites.insert(
            site,
            SavedSite {
                site: s,
                totals: None,
            },
        );
    }
    for (site, json) in ledger_rows {
        let totals = totals(&site, &json, from_zero);
        if let Err(why) = &totals {
            snap.unreadable.push((site.clone(), "ledger", why.clone()));
        }
        snap.sites
            .entry(site)
            .or_insert_with(|| SavedSite {
                site: Site::default(),
                totals: None,
            })
            .totals = Some(totals);
    }
    Ok(snap)
}

fn rows(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut st = conn.prepare(sql)?;
    let out = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(out)
}

/// One site's ledger restored alone (a damaged site spoils no other) and
/// its totals: the hole states are derived on restore, as at `run`'s start.
fn totals(site: &str, json: &str, from_zero: bool) -> Result<SiteTotals, String> {
    let state: SiteState = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut sites = BTreeMap::new();
    sites.insert(site.to_owned(), state);
    let ledger = Ledger::restore(
        LedgerConfig { from_zero },
        Dedup::new(1, 1),
        LedgerState { sites },
    )
    .map_err(|e| e.to_string())?;
    Ok(ledger.totals(site).unwrap_or_default())
}
