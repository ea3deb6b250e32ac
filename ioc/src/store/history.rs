//! The history the monthly report is computed from, in the same SQLite
//! file (docs/ioc.md, "Monthly report"):
//!
//! - `history_intervals`: each condition interval of a site (offline, on
//!   battery, internet down, backlog, excursions), `end_ms` NULL while
//!   open; written whole at its opening and again at its closing.
//! - `history_heard`: spans a site was heard from (messages no further
//!   apart than `report.offline_after`), rewritten as they grow.
//! - `history_days`: per site and local day, the ledger's running counts
//!   added up (received, filled late, duplicates, corrected copies,
//!   contract breaks, malformed).
//! - `meta.history_since`: when the first of these was written (the
//!   report measures nothing before it).
//!
//! Added to schema 1 like `fleet_sites`: an older build ignores the
//! tables; a store it made gets them on the first open.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use super::StoreError;
use crate::history::{DayCounts, Delta, Heard, Interval, Resumed};
use crate::ledger::{LedgerState, SiteState};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS history_intervals (
    site TEXT NOT NULL, condition TEXT NOT NULL, detail TEXT NOT NULL,
    start_ms INTEGER NOT NULL, end_ms INTEGER,
    PRIMARY KEY (site, condition, detail, start_ms));
CREATE INDEX IF NOT EXISTS history_intervals_end ON history_intervals (end_ms);
CREATE INDEX IF NOT EXISTS history_intervals_start ON history_intervals (start_ms);
CREATE TABLE IF NOT EXISTS history_heard (
    site TEXT NOT NULL, start_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
    PRIMARY KEY (site, start_ms));
CREATE INDEX IF NOT EXISTS history_heard_last ON history_heard (last_ms);
CREATE TABLE IF NOT EXISTS history_days (
    site TEXT NOT NULL, day INTEGER NOT NULL,
    received INTEGER NOT NULL, filled_late INTEGER NOT NULL, duplicates INTEGER NOT NULL,
    corrected_copies INTEGER NOT NULL, contract_breaks INTEGER NOT NULL, malformed INTEGER NOT NULL,
    PRIMARY KEY (site, day));
";

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn uint(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Writes one batch's history inside the commit's transaction.
pub(super) fn write(tx: &Transaction<'_>, d: &Delta) -> rusqlite::Result<()> {
    if d.is_empty() {
        return Ok(());
    }
    let first = d
        .heard
        .keys()
        .map(|k| k.1)
        .chain(d.intervals.iter().map(|i| i.start_ms))
        .min();
    if let Some(first) = first {
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('history_since', ?1)",
            params![first],
        )?;
    }
    let mut st = tx.prepare_cached(
        "INSERT OR REPLACE INTO history_intervals (site, condition, detail, start_ms, end_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for i in &d.intervals {
        st.execute(params![
            i.site,
            i.condition.as_str(),
            i.detail,
            i.start_ms,
            i.end_ms
        ])?;
    }
    let mut st = tx.prepare_cached(
        "INSERT OR REPLACE INTO history_heard (site, start_ms, last_ms) VALUES (?1, ?2, ?3)",
    )?;
    for ((site, start), last) in &d.heard {
        st.execute(params![site, start, last])?;
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO history_days (site, day, received, filled_late, duplicates, corrected_copies, contract_breaks, malformed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (site, day) DO UPDATE SET
           received = received + excluded.received, filled_late = filled_late + excluded.filled_late,
           duplicates = duplicates + excluded.duplicates, corrected_copies = corrected_copies + excluded.corrected_copies,
           contract_breaks = contract_breaks + excluded.contract_breaks, malformed = malformed + excluded.malformed",
    )?;
    for ((site, day), c) in &d.days {
        st.execute(params![
            site,
            day,
            int(c.received),
            int(c.filled_late),
            int(c.duplicates),
            int(c.corrected_copies),
            int(c.contract_breaks),
            int(c.malformed)
        ])?;
    }
    Ok(())
}

/// Where the tracker resumes: the open intervals and each site's last
/// span heard. A row naming a condition this build does not know is left
/// out (logged).
pub(super) fn resume(conn: &Connection) -> rusqlite::Result<Resumed> {
    let mut out = Resumed::default();
    let mut st = conn.prepare(
        "SELECT site, condition, detail, start_ms FROM history_intervals WHERE end_ms IS NULL",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (site, c, detail, start_ms) = row?;
        match c.parse() {
            Ok(condition) => out.open.push(Interval {
                site,
                condition,
                detail,
                start_ms,
                end_ms: None,
            }),
            Err(e) => tracing::warn!(%site, error = %e, "history row left out"),
        }
    }
    let mut st = conn.prepare(
        "SELECT site, start_ms, MAX(last_ms) FROM history_heard h
         WHERE start_ms = (SELECT MAX(start_ms) FROM history_heard WHERE site = h.site) GROUP BY site",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (site, start_ms, last_ms) = row?;
        out.heard.insert(site, Heard { start_ms, last_ms });
    }
    Ok(out)
}

/// One site's history over a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteHistory {
    pub intervals: Vec<Interval>,
    pub heard: Vec<Heard>,
    pub days: Vec<(i64, DayCounts)>,
}

/// What the store holds for a report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryRows {
    /// When the history began (`None`: nothing written yet).
    pub since_ms: Option<i64>,
    /// Every site known (the fleet view's and those heard), with its
    /// history touching the time asked for.
    pub sites: BTreeMap<String, SiteHistory>,
}

/// A read-only connection for the report (the CLI beside a running
/// service, the pages): it never takes the writer's lock.
pub struct HistoryReader {
    path: String,
    conn: Connection,
}

impl HistoryReader {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let p = path.display().to_string();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Db {
            path: p.clone(),
            source,
        })?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(10));
        Ok(HistoryReader { path: p, conn })
    }

    /// The ledger as committed (each site's state), read-only; a row that
    /// does not read is [`StoreError::Corrupt`].
    pub fn ledger_state(&self) -> Result<LedgerState, StoreError> {
        let db = |source| StoreError::Db {
            path: self.path.clone(),
            source,
        };
        let mut st = self
            .conn
            .prepare("SELECT site, state FROM sites")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db)?;
        let mut out = LedgerState::default();
        for row in rows {
            let (site, json) = row.map_err(db)?;
            let s: SiteState = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("site {site}"),
                why: e.to_string(),
            })?;
            out.sites.insert(site, s);
        }
        Ok(out)
    }

    /// The history touching `[from_ms, to_ms)` (spans heard up to `reach`
    /// before `from_ms`), and the local days `days`.
    pub fn rows(
        &self,
        from_ms: i64,
        to_ms: i64,
        reach_ms: i64,
        days: std::ops::Range<i64>,
    ) -> Result<HistoryRows, StoreError> {
        self.read(from_ms, to_ms, reach_ms, days)
            .map_err(|source| StoreError::Db {
                path: self.path.clone(),
                source,
            })
    }

    fn read(
        &self,
        from_ms: i64,
        to_ms: i64,
        reach_ms: i64,
        days: std::ops::Range<i64>,
    ) -> rusqlite::Result<HistoryRows> {
        let c = &self.conn;
        let mut out = HistoryRows::default();
        let has = |t: &str| -> rusqlite::Result<bool> {
            c.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?1",
                params![t],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        };
        if !has("history_heard")? {
            // A store no build with the report has written yet.
            return Ok(out);
        }
        out.since_ms = c
            .query_row(
                "SELECT value FROM meta WHERE key='history_since'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let mut st =
            c.prepare("SELECT site FROM fleet_sites UNION SELECT site FROM history_heard")?;
        for s in st.query_map([], |r| r.get::<_, String>(0))? {
            out.sites.insert(s?, SiteHistory::default());
        }
        let mut st = c.prepare(
            "SELECT site, condition, detail, start_ms, end_ms FROM history_intervals
             WHERE start_ms < ?2 AND (end_ms IS NULL OR end_ms > ?1)",
        )?;
        let rows = st.query_map(params![from_ms, to_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })?;
        for row in rows {
            let (site, c, detail, start_ms, end_ms) = row?;
            let Ok(condition) = c.parse() else { continue };
            out.sites
                .entry(site.clone())
                .or_default()
                .intervals
                .push(Interval {
                    site,
                    condition,
                    detail,
                    start_ms,
                    end_ms,
                });
        }
        let mut st = c.prepare(
            "SELECT site, start_ms, last_ms FROM history_heard WHERE start_ms < ?2 AND last_ms >= ?1",
        )?;
        let rows = st.query_map(params![from_ms.saturating_sub(reach_ms), to_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (site, start_ms, last_ms) = row?;
            out.sites
                .entry(site)
                .or_default()
                .heard
                .push(Heard { start_ms, last_ms });
        }
        let mut st = c.prepare(
            "SELECT site, day, received, filled_late, duplicates, corrected_copies, contract_breaks, malformed
             FROM history_days WHERE day >= ?1 AND day < ?2",
        )?;
        let rows = st.query_map(params![days.start, days.end], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                DayCounts {
                    received: uint(r.get(2)?),
                    filled_late: uint(r.get(3)?),
                    duplicates: uint(r.get(4)?),
                    corrected_copies: uint(r.get(5)?),
                    contract_breaks: uint(r.get(6)?),
                    malformed: uint(r.get(7)?),
                },
            ))
        })?;
        for row in rows {
            let (site, day, counts) = row?;
            out.sites.entry(site).or_default().days.push((day, counts));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Condition;
    use crate::store::{Commit, SqliteStore, Store};

    #[test]
    fn written_in_the_commit_read_back_for_a_month_and_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sqlite");
        let mut s = SqliteStore::open(&p).unwrap();
        let iv = |start_ms, end_ms| Interval {
            site: "xa-a".into(),
            condition: Condition::Battery,
            detail: String::new(),
            start_ms,
            end_ms,
        };
        let day = DayCounts {
            received: 5,
            duplicates: 1,
            ..DayCounts::default()
        };
        let mut d = Delta {
            intervals: vec![iv(100, None), iv(10, Some(20))],
            ..Delta::default()
        };
        d.heard.insert(("xa-a".into(), 5), 150);
        d.days.insert(("xa-a".into(), 0), day);
        s.commit(&Commit {
            history: d.clone(),
            ..Commit::default()
        })
        .unwrap();
        // The open interval closes; the span grows; the day adds up.
        d.intervals = vec![iv(100, Some(300))];
        d.heard.insert(("xa-a".into(), 5), 300);
        d.heard.insert(("xa-b".into(), 400), 400);
        s.commit(&Commit {
            history: d,
            ..Commit::default()
        })
        .unwrap();
        let r = HistoryReader::open(&p).unwrap();
        let rows = r.rows(50, 1000, 0, 0..1).unwrap();
        assert_eq!(rows.since_ms, Some(5));
        let a = &rows.sites["xa-a"];
        assert_eq!(a.intervals, vec![iv(100, Some(300))], "[10, 20) is before");
        assert_eq!(
            a.heard,
            vec![Heard {
                start_ms: 5,
                last_ms: 300
            }]
        );
        assert_eq!(a.days[0].1.received, 10);
        assert_eq!(rows.sites["xa-b"].heard.len(), 1);
        let loaded = s.load().unwrap();
        assert!(loaded.history.open.is_empty());
        assert_eq!(
            loaded.history.heard["xa-a"],
            Heard {
                start_ms: 5,
                last_ms: 300
            }
        );
        // A store made before the report: nothing, no error.
        let q = dir.path().join("old.sqlite");
        Connection::open(&q)
            .unwrap()
            .execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);")
            .unwrap();
        let rows = HistoryReader::open(&q)
            .unwrap()
            .rows(0, 1, 0, 0..1)
            .unwrap();
        assert_eq!(rows, HistoryRows::default());
    }
}
