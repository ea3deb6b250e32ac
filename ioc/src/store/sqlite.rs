//! The SQLite store: one file, WAL, `synchronous=FULL` (a commit that
//! returned is on the disk before its messages are acknowledged).
//!
//! Tables: `sites` (the ledger's `SiteState` of each site as JSON: its
//! streams' numbers and holes as ranges, what the gateway said),
//! `fleet_sites` (the fleet view's `Site` of each site as JSON: online
//! since, alarms, versions, devices; added to schema 1 without a new
//! version number: an older build ignores the table, a store it made
//! gets the table on the first open),
//! `windows` (each stream's de-duplication digests), `device_types`
//! (from inventories), `outbox` (line-protocol points for the time-series
//! writer) and `meta` (the count of messages committed, the schema
//! version), and the monthly report's history (`store/history.rs`). The
//! time-series writer opens a second connection.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use wardgate_contract::{Epoch, Kind, StreamKey};

use super::{Commit, Loaded, OutboxRows, Store, StoreError, KEEP_COMMITS};
use crate::dedup::SavedWindow;
use crate::fleet::Site;
use crate::ledger::SiteState;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sites (site TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fleet_sites (site TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    site TEXT NOT NULL, device TEXT NOT NULL, kind INTEGER NOT NULL, epoch TEXT NOT NULL,
    window TEXT NOT NULL, PRIMARY KEY (site, device, kind, epoch));
CREATE TABLE IF NOT EXISTS device_types (
    site TEXT NOT NULL, device TEXT NOT NULL, type TEXT NOT NULL, PRIMARY KEY (site, device));
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS delivered (digest INTEGER NOT NULL, commit_no INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS delivered_commit ON delivered (commit_no);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', 1), ('messages', 0), ('commits', 0);
";

/// The SQLite store at one path.
pub struct SqliteStore {
    path: PathBuf,
    conn: Connection,
}

impl SqliteStore {
    /// Opens (or makes) the database and its tables.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let s = path.display().to_string();
        let db = |source| StoreError::Db {
            path: s.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        // Each commit rewrites the touched sites' and streams' rows (JSON
        // of some KB each): a 32 MiB page cache keeps them from being read
        // back from the file, and a checkpoint every 16,000 pages (64 MiB
        // of WAL, instead of SQLite's 1,000) copies a row rewritten by many
        // commits into the database once. Neither changes what a commit
        // guarantees (synchronous=FULL: the WAL is on the disk when the
        // commit returns); docs/ioc.md, "Figures".
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
             PRAGMA cache_size=-32768; PRAGMA wal_autocheckpoint=16000;",
        )
        .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        conn.execute_batch(super::history::SCHEMA).map_err(db)?;
        let version: i64 = conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .map_err(db)?;
        if version != 1 {
            return Err(StoreError::Corrupt {
                path: s,
                what: "schema".into(),
                why: format!("version {version}, this build knows 1"),
            });
        }
        Ok(SqliteStore {
            path: path.to_owned(),
            conn,
        })
    }

    fn db(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Db {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn corrupt(&self, what: String, why: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            what,
            why: why.to_string(),
        }
    }

    /// The fleet view's rows; one that does not read is left out and
    /// named ([`Loaded::fleet_unreadable`]).
    fn load_fleet(&self, loaded: &mut Loaded) -> Result<(), StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT site, state FROM fleet_sites")
            .map_err(|e| self.db(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.db(e))?;
        for row in rows {
            let (site, json) = row.map_err(|e| self.db(e))?;
            match serde_json::from_str::<Site>(&json) {
                Ok(s) => {
                    loaded.fleet.insert(site, s);
                }
                Err(e) => loaded.fleet_unreadable.push((site, e.to_string())),
            }
        }
        Ok(())
    }

    fn load_windows(&self) -> Result<Vec<(StreamKey, SavedWindow)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT site, device, kind, epoch, window FROM windows")
            .map_err(|e| self.db(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| self.db(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (site, device, kind, epoch, w) = row.map_err(|e| self.db(e))?;
            let what = || format!("window of {site}/{device}");
            let kind = Kind::from_i64(kind).ok_or_else(|| self.corrupt(what(), "kind"))?;
            let epoch: Epoch = epoch.parse().map_err(|e| self.corrupt(what(), e))?;
            let w: SavedWindow = serde_json::from_str(&w).map_err(|e| self.corrupt(what(), e))?;
            out.push((
                StreamKey {
                    site,
                    device,
                    kind,
                    epoch,
                },
                w,
            ));
        }
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        {
            let mut st = self
                .conn
                .prepare("SELECT site, state FROM sites")
                .map_err(|e| self.db(e))?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(|e| self.db(e))?;
            for row in rows {
                let (site, json) = row.map_err(|e| self.db(e))?;
                let s: SiteState = serde_json::from_str(&json)
                    .map_err(|e| self.corrupt(format!("site {site}"), e))?;
                loaded.state.sites.insert(site, s);
            }
            let mut st = self
                .conn
                .prepare("SELECT site, device, type FROM device_types")
                .map_err(|e| self.db(e))?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(|e| self.db(e))?;
            for row in rows {
                let (site, device, ty) = row.map_err(|e| self.db(e))?;
                loaded.types.insert((site, device), ty);
            }
        }
        loaded.windows = self.load_windows()?;
        self.load_fleet(&mut loaded)?;
        loaded.history = super::history::resume(&self.conn).map_err(|e| self.db(e))?;
        let n: i64 = self
            .conn
            .query_row("SELECT value FROM meta WHERE key='messages'", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.db(e))?;
        loaded.messages = u64::try_from(n).unwrap_or(0);
        let mut st = self
            .conn
            .prepare("SELECT digest FROM delivered")
            .map_err(|e| self.db(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(|e| self.db(e))?;
        for row in rows {
            // Stored as the same 64 bits, signed.
            loaded.delivered.push(row.map_err(|e| self.db(e))? as u64);
        }
        Ok(loaded)
    }

    fn commit(&mut self, c: &Commit) -> Result<(), StoreError> {
        let path = self.path.display().to_string();
        let db = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let corrupt = |what: String, e: serde_json::Error| StoreError::Corrupt {
            path: path.clone(),
            what,
            why: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut up = tx
                .prepare_cached("INSERT OR REPLACE INTO sites (site, state) VALUES (?1, ?2)")
                .map_err(db)?;
            for (site, s) in &c.sites {
                let json =
                    serde_json::to_string(s).map_err(|e| corrupt(format!("site {site}"), e))?;
                up.execute(params![site, json]).map_err(db)?;
            }
            let mut up = tx
                .prepare_cached("INSERT OR REPLACE INTO fleet_sites (site, state) VALUES (?1, ?2)")
                .map_err(db)?;
            for (site, s) in &c.fleet {
                let json =
                    serde_json::to_string(s).map_err(|e| corrupt(format!("fleet {site}"), e))?;
                up.execute(params![site, json]).map_err(db)?;
            }
            let mut up = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO windows (site, device, kind, epoch, window) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db)?;
            for (k, w) in &c.windows {
                let json = serde_json::to_string(w)
                    .map_err(|e| corrupt(format!("window {}", k.site), e))?;
                up.execute(params![
                    k.site,
                    k.device,
                    k.kind.as_i64(),
                    k.epoch.to_string(),
                    json
                ])
                .map_err(db)?;
            }
            let mut up = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO device_types (site, device, type) VALUES (?1, ?2, ?3)",
                )
                .map_err(db)?;
            for ((site, device), ty) in &c.types {
                up.execute(params![site, device, ty]).map_err(db)?;
            }
            let mut ins = tx
                .prepare_cached("INSERT INTO outbox (line) VALUES (?1)")
                .map_err(db)?;
            for l in &c.lines {
                ins.execute(params![l]).map_err(db)?;
            }
            tx.execute("UPDATE meta SET value = value + 1 WHERE key='commits'", [])
                .map_err(db)?;
            let no: i64 = tx
                .query_row("SELECT value FROM meta WHERE key='commits'", [], |r| {
                    r.get(0)
                })
                .map_err(db)?;
            let mut ins = tx
                .prepare_cached("INSERT INTO delivered (digest, commit_no) VALUES (?1, ?2)")
                .map_err(db)?;
            for d in &c.delivered {
                // The same 64 bits, signed (SQLite's integers).
                ins.execute(params![*d as i64, no]).map_err(db)?;
            }
            tx.execute(
                "DELETE FROM delivered WHERE commit_no <= ?1",
                params![no - KEEP_COMMITS as i64],
            )
            .map_err(db)?;
            super::history::write(&tx, &c.history).map_err(db)?;
            tx.execute(
                "UPDATE meta SET value = value + ?1 WHERE key='messages'",
                params![i64::try_from(c.messages).unwrap_or(i64::MAX)],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    fn outbox_peek(&mut self, max: usize) -> Result<OutboxRows, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, line FROM outbox ORDER BY id LIMIT ?1")
            .map_err(|e| self.db(e))?;
        let rows = st
            .query_map(params![i64::try_from(max).unwrap_or(i64::MAX)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.db(e))?;
        let out: Result<Vec<_>, _> = rows.collect();
        out.map_err(|e| self.db(e))
    }

    fn outbox_done(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM outbox WHERE id <= ?1", params![id])
            .map(|_| ())
            .map_err(|e| self.db(e))
    }

    fn outbox_len(&mut self) -> Result<u64, StoreError> {
        let n: Option<i64> = self
            .conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.db(e))?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::SiteTotals;
    use wardgate_contract::{ClockState, Fingerprint};

    #[test]
    fn commits_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sqlite");
        let mut s = SqliteStore::open(&p).unwrap();
        assert!(s.load().unwrap().state.sites.is_empty());
        let site = SiteState {
            totals: SiteTotals {
                received: 5,
                ..SiteTotals::default()
            },
            ..SiteState::default()
        };
        let key = StreamKey {
            site: "xa-a".into(),
            device: "ups1".into(),
            kind: Kind::Sample,
            epoch: Epoch(7),
        };
        let w = SavedWindow {
            recent: vec![(
                3,
                Fingerprint {
                    body: 1,
                    ts: 2,
                    clock: ClockState::Synced,
                },
            )],
            top: Some(3),
        };
        let fleet_site = Site {
            identity: crate::fleet::Identity {
                version: Some("0.1.0".into()),
                ..Default::default()
            },
            presence: Some(crate::fleet::Since {
                value: crate::fleet::Presence::Offline {
                    reason: "lost".into(),
                },
                since_ms: 1_700_000_000_000,
            }),
            ..Site::default()
        };
        let c = Commit {
            sites: vec![("xa-a".into(), site.clone())],
            fleet: vec![("xa-a".into(), fleet_site.clone())],
            windows: vec![(key.clone(), w.clone())],
            types: vec![(("xa-a".into(), "ups1".into()), "megatec".into())],
            lines: vec!["a".into(), "b".into(), "c".into()],
            messages: 2,
            delivered: vec![u64::MAX, 5],
            history: Default::default(),
        };
        s.commit(&c).unwrap();
        s.commit(&Commit {
            messages: 1,
            ..Commit::default()
        })
        .unwrap();
        drop(s);
        let mut s = SqliteStore::open(&p).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.state.sites["xa-a"], site);
        assert_eq!(l.fleet["xa-a"], fleet_site);
        assert_eq!(l.windows, vec![(key, w)]);
        assert_eq!(l.types[&("xa-a".into(), "ups1".into())], "megatec");
        assert_eq!(l.messages, 3);
        assert_eq!(l.delivered, vec![u64::MAX, 5]);
        let rows = s.outbox_peek(2).unwrap();
        assert_eq!(rows.len(), 2);
        s.outbox_done(rows[1].0).unwrap();
        assert_eq!(s.outbox_len().unwrap(), 1);
        assert_eq!(s.outbox_peek(10).unwrap()[0].1, "c");
    }

    #[test]
    fn a_damaged_row_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sqlite");
        let mut s = SqliteStore::open(&p).unwrap();
        s.conn
            .execute("INSERT INTO sites VALUES ('x', '{not json')", [])
            .unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("site x"), "{e}");
        // A fleet-view row that does not read is left out, not an error.
        s.conn.execute("DELETE FROM sites", []).unwrap();
        s.conn
            .execute(
                "INSERT INTO fleet_sites VALUES ('y', '{\"presence\":7}')",
                [],
            )
            .unwrap();
        let l = s.load().unwrap();
        assert!(l.fleet.is_empty());
        assert_eq!(l.fleet_unreadable.len(), 1);
        assert_eq!(l.fleet_unreadable[0].0, "y");
    }
}
