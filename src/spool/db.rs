//! SQLite storage of the spool: one table of records (one row per record per
//! sink), one table of counters. Every function here is blocking; callers run
//! it on a blocking thread.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::error::SpoolError;
use crate::model::Kind;

mod check;
mod correct;
pub use check::{check_row, check_row_at, row_checksum, row_checksum_at, valid_device_id};

/// A record on its way to disk.
pub(crate) struct NewRow<'a> {
    pub sink: &'a str,
    pub kind: Kind,
    pub device: &'a str,
    pub epoch: u64,
    pub seq: u64,
    pub ts: i64,
    pub synced: bool,
    pub body: &'a str,
    /// The kernel boot the record was taken in (empty: unknown, stored as
    /// NULL, and the record is never corrected from disk).
    pub boot: &'a str,
    /// `CLOCK_BOOTTIME` when it was taken, in ms.
    pub boottime: i64,
}

impl NewRow<'_> {
    /// The boot and boottime as stored: none without a boot id.
    pub(crate) fn taken(&self) -> Option<(&str, i64)> {
        (!self.boot.is_empty()).then_some((self.boot, self.boottime))
    }
}

/// A record read back for sending, checked: its checksum matched, its device
/// id is one a topic can carry and its body is text.
pub(crate) struct Row {
    pub id: i64,
    pub seq: u64,
    pub body: String,
    /// The boot and `CLOCK_BOOTTIME` (ms) it was taken at; None for rows of
    /// an older version (never corrected).
    pub taken: Option<(String, i64)>,
}

/// A row that failed the checks when read back.
pub(crate) struct BadRow {
    pub id: i64,
    pub reason: &'static str,
}

/// One backlog stream of a sink: records of one device, kind and epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub kind: Kind,
    pub device: String,
    pub epoch: u64,
}

/// One line of `wardgate spool stats`.
#[derive(Debug, serde::Serialize)]
pub struct SummaryRow {
    pub sink: String,
    /// 0 = sample, 1 = event.
    #[serde(skip)]
    pub kind: i64,
    pub device: String,
    pub records: u64,
    pub oldest_ts: i64,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// What opening found.
#[derive(Debug, Default)]
pub(crate) struct OpenReport {
    /// Where an unreadable spool was moved, and why.
    pub moved_aside: Option<(PathBuf, String)>,
}

pub struct Db {
    pub(super) conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rec (
    id     INTEGER PRIMARY KEY,
    sink   TEXT    NOT NULL,
    kind   INTEGER NOT NULL,
    device TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    synced INTEGER NOT NULL,
    body   TEXT    NOT NULL,
    epoch  INTEGER NOT NULL DEFAULT 0,
    crc    INTEGER,
    boot     TEXT,
    boottime INTEGER
);
CREATE INDEX IF NOT EXISTS rec_stream ON rec(sink, kind, device, epoch, seq);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The columns `rec` must have, in order; an older spool (without `epoch`
/// and `crc`, or without `boot` and `boottime`) is upgraded in place, any
/// other shape is moved aside.
const REC_COLUMNS: [&str; 12] = [
    "id", "sink", "kind", "device", "seq", "ts", "synced", "body", "epoch", "crc", "boot",
    "boottime",
];

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt)
    )
}

impl Db {
    /// Opens (or creates) the spool. A file that is not a database, fails
    /// SQLite's quick check or holds tables of another shape is moved aside
    /// as `<name>.corrupt-<time>` and a new spool is created in its place;
    /// other failures (permissions, a read-only or full disk) are errors the
    /// caller reports as a degraded store and retries.
    pub(crate) fn open(path: &Path) -> Result<(Db, OpenReport), SpoolError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| SpoolError::Io {
                    what: format!("creating {}", dir.display()),
                    source: e,
                })?;
            }
        }
        match Self::open_checked(path) {
            Ok(db) => Ok((db, OpenReport::default())),
            Err(OpenFail::Corrupt(reason)) => {
                let aside = move_aside(path)?;
                tracing::error!(
                    spool = %path.display(),
                    moved_to = %aside.display(),
                    %reason,
                    "spool unreadable: moved aside, starting a new one"
                );
                match Self::open_checked(path) {
                    Ok(db) => Ok((
                        db,
                        OpenReport {
                            moved_aside: Some((aside, reason)),
                        },
                    )),
                    Err(OpenFail::Corrupt(r)) => Err(SpoolError::Corrupt(r)),
                    Err(OpenFail::Other(e)) => Err(e),
                }
            }
            Err(OpenFail::Other(e)) => Err(e),
        }
    }

    fn open_checked(path: &Path) -> Result<Db, OpenFail> {
        let conn = Connection::open(path).map_err(|e| OpenFail::from_sql(e, path))?;
        let db = Db { conn };
        db.init().map_err(|e| OpenFail::from_sql(e, path))?;
        let check: String = db
            .conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(|e| OpenFail::from_sql(e, path))?;
        if check != "ok" {
            return Err(OpenFail::Corrupt(format!("quick_check: {check}")));
        }
        db.check_shape().map_err(|e| match e {
            ShapeError::Sql(e) => OpenFail::from_sql(e, path),
            ShapeError::Wrong(w) => OpenFail::Corrupt(w),
        })?;
        Ok(db)
    }

    fn init(&self) -> rusqlite::Result<()> {
        // auto_vacuum must be chosen before the first table exists; on an
        // existing file this is a no-op.
        self.conn
            .pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "spool could not switch to WAL journal mode");
        }
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        // Keep the page cache small: the Pi has little memory and the spool
        // is read sequentially.
        self.conn.pragma_update(None, "cache_size", -1024)?;
        self.conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(())
    }

    /// Creates the tables, upgrades a spool of the first version (no `epoch`
    /// or `crc` columns), and refuses tables of any other shape.
    fn check_shape(&self) -> Result<(), ShapeError> {
        let cols = |table: &str| -> rusqlite::Result<Vec<String>> {
            let mut st = self
                .conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        };
        let rec = cols("rec")?;
        if rec.len() == 8 && rec[..] == REC_COLUMNS[..8] {
            self.conn.execute_batch(
                "ALTER TABLE rec ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE rec ADD COLUMN crc INTEGER;
                 ALTER TABLE rec ADD COLUMN boot TEXT;
                 ALTER TABLE rec ADD COLUMN boottime INTEGER;
                 DROP INDEX IF EXISTS rec_lane;",
            )?;
        } else if rec.len() == 10 && rec[..] == REC_COLUMNS[..10] {
            // A spool without the boot columns: its rows keep no boot and
            // are never corrected.
            self.conn.execute_batch(
                "ALTER TABLE rec ADD COLUMN boot TEXT;
                 ALTER TABLE rec ADD COLUMN boottime INTEGER;",
            )?;
        } else if !rec.is_empty() && rec[..] != REC_COLUMNS[..] {
            return Err(ShapeError::Wrong(format!(
                "table rec has columns ({}), not a wardgate spool",
                rec.join(", ")
            )));
        }
        let meta = cols("meta")?;
        if !meta.is_empty() && meta[..] != ["key", "value"] {
            return Err(ShapeError::Wrong(format!(
                "table meta has columns ({}), not a wardgate spool",
                meta.join(", ")
            )));
        }
        self.conn.execute_batch(SCHEMA)?;
        Ok(())
    }

    /// Opens an existing spool read-only (for `wardgate spool stats/export`
    /// while the daemon runs).
    pub fn open_read_only(path: &Path) -> Result<Db, SpoolError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| SpoolError::Sql {
            what: format!("opening {}", path.display()),
            source: e,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| SpoolError::Sql {
                what: format!("opening {}", path.display()),
                source: e,
            })?;
        Ok(Db { conn })
    }

    /// One durable transaction: inserts `rows` (returning their ids in
    /// order), deletes `delete` (returning how many existed) and sets `meta`.
    pub(crate) fn commit(
        &mut self,
        rows: &[NewRow<'_>],
        delete: &[i64],
        meta: &[(String, i64)],
    ) -> rusqlite::Result<(Vec<i64>, usize)> {
        let tx = self.conn.transaction()?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut deleted = 0;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO rec (sink, kind, device, seq, ts, synced, body, epoch, crc, boot, boottime) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for r in rows {
                let taken = r.taken();
                let crc = row_checksum_at(r.kind, r.epoch, r.device, r.seq, r.body, taken);
                st.execute(params![
                    r.sink,
                    r.kind.as_i64(),
                    r.device,
                    r.seq as i64,
                    r.ts,
                    r.synced as i64,
                    r.body,
                    r.epoch as i64,
                    crc as i64,
                    taken.map(|t| t.0),
                    taken.map(|t| t.1)
                ])?;
                ids.push(tx.last_insert_rowid());
            }
            let mut st = tx.prepare_cached("DELETE FROM rec WHERE id = ?1")?;
            for id in delete {
                deleted += st.execute([id])?;
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?;
            for (k, v) in meta {
                st.execute(params![k, v])?;
            }
        }
        tx.commit()?;
        Ok((ids, deleted))
    }

    /// The backlog streams of one sink and kind that hold rows.
    pub(crate) fn streams(&self, sink: &str, kind: Kind) -> rusqlite::Result<Vec<StreamKey>> {
        let mut st = self.conn.prepare_cached(
            "SELECT DISTINCT device, epoch FROM rec WHERE sink = ?1 AND kind = ?2",
        )?;
        let rows = st.query_map(params![sink, kind.as_i64()], |r| {
            let device = match r.get_ref(0)? {
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                _ => String::new(),
            };
            Ok(StreamKey {
                kind,
                device,
                epoch: r.get::<_, i64>(1)? as u64,
            })
        })?;
        rows.collect()
    }

    /// Up to `limit` rows of one stream with `seq > after`, in `seq` order,
    /// each checked; rows that fail the checks come back apart.
    pub(crate) fn window(
        &self,
        sink: &str,
        key: &StreamKey,
        after: Option<u64>,
        limit: usize,
    ) -> rusqlite::Result<(Vec<Row>, Vec<BadRow>)> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, seq, body, crc, boot, boottime FROM rec WHERE sink = ?1 AND kind = ?2 AND device = ?3 AND epoch = ?4 AND seq > ?5 ORDER BY seq LIMIT ?6",
        )?;
        let after = after.map(|a| a as i64).unwrap_or(-1);
        let mut rows = st.query(params![
            sink,
            key.kind.as_i64(),
            key.device,
            key.epoch as i64,
            after,
            limit as i64
        ])?;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let seq = r.get::<_, i64>(1)?;
            let body = match r.get_ref(2)? {
                rusqlite::types::ValueRef::Text(t) => Some(t),
                _ => None,
            };
            let crc = match r.get_ref(3)? {
                rusqlite::types::ValueRef::Integer(c) => Some(c),
                _ => None,
            };
            let taken = match taken_columns(r, 4)? {
                Taken::None => None,
                Taken::Some(boot, t) => Some((boot, t)),
                Taken::Damaged => {
                    bad.push(BadRow {
                        id,
                        reason: "boot columns damaged",
                    });
                    continue;
                }
            };
            match check_row_at(
                key,
                seq,
                body,
                crc,
                taken.as_ref().map(|(b, t)| (b.as_str(), *t)),
            ) {
                Ok(body) => good.push(Row {
                    id,
                    seq: seq as u64,
                    body,
                    taken,
                }),
                Err(reason) => bad.push(BadRow { id, reason }),
            }
        }
        Ok((good, bad))
    }

    /// Bytes the database really uses (pages in use, not free pages): what
    /// `spool.max_bytes` caps. Every table in the file counts, so nothing
    /// but the spool's own tables may live here; the command replay store
    /// has a file of its own for this reason (a flood of commands once
    /// grew a table here and the cap dropped readings to make room).
    pub fn used_bytes(&self) -> rusqlite::Result<u64> {
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * page_size) as u64)
    }

    pub fn row_count(&self) -> rusqlite::Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM rec", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Deletes the `n` oldest records of one kind (all sinks); returns how
    /// many went.
    pub(crate) fn drop_oldest(&mut self, kind: Kind, n: usize) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM rec WHERE id IN (SELECT id FROM rec WHERE kind = ?1 ORDER BY ts, id LIMIT ?2)",
            params![kind.as_i64(), n as i64],
        )
    }

    /// Deletes records taken with a synchronised clock before `cutoff_ms`.
    #[cfg(test)]
    pub(crate) fn drop_older_than(&mut self, cutoff_ms: i64) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM rec WHERE synced = 1 AND ts < ?1",
            params![cutoff_ms],
        )
    }

    /// Deletes records older than the age cap, taken with a synchronised
    /// clock: those of boot `boot` by their `CLOCK_BOOTTIME` (before
    /// `boottime_cutoff`: a step of the wall clock does not move them),
    /// the others (another boot, or none known) by their wall time before
    /// `wall_cutoff`, and not at all when it is `None`.
    pub(crate) fn drop_aged(
        &mut self,
        boot: &str,
        boottime_cutoff: i64,
        wall_cutoff: Option<i64>,
    ) -> rusqlite::Result<usize> {
        let this_boot = self.conn.execute(
            "DELETE FROM rec WHERE synced = 1 AND boot = ?1 AND boottime IS NOT NULL AND boottime < ?2",
            params![boot, boottime_cutoff],
        )?;
        let others = match wall_cutoff {
            Some(cutoff) => self.conn.execute(
                "DELETE FROM rec WHERE synced = 1 AND ts < ?2 \
                 AND (boot IS NULL OR boot != ?1 OR boottime IS NULL)",
                params![boot, cutoff],
            )?,
            None => 0,
        };
        Ok(this_boot + others)
    }

    pub(crate) fn count_kind(&self, kind: Kind) -> rusqlite::Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM rec WHERE kind = ?1",
            [kind.as_i64()],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Gives free pages back to the filesystem, a little at a time.
    pub(crate) fn vacuum_some(&mut self, pages: u32) -> rusqlite::Result<()> {
        self.conn
            .execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))
    }

    pub(crate) fn checkpoint(&mut self) -> rusqlite::Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    }

    /// Removes sequence positions kept by the first version of the spool.
    pub(crate) fn forget_positions(&mut self) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM meta WHERE key LIKE 'seq/%' OR key LIKE 'used/%' OR key IN ('clean', 'epoch')",
            [],
        )
    }

    pub fn meta_get(&self, key: &str) -> rusqlite::Result<Option<i64>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    pub(crate) fn meta_all(&self, prefix: &str) -> rusqlite::Result<Vec<(String, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT key, value FROM meta WHERE key >= ?1 AND key < ?2")?;
        let hi = format!("{prefix}\u{10FFFF}");
        let rows = st.query_map(params![prefix, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Every record, oldest first, for export: (sink, kind, device, seq, ts, body).
    pub fn for_each_record(
        &self,
        mut f: impl FnMut(&str, i64, &str, i64, i64, &str) -> std::io::Result<()>,
    ) -> Result<u64, SpoolError> {
        let sql_err = |e| SpoolError::Sql {
            what: "reading records".into(),
            source: e,
        };
        let mut st = self
            .conn
            .prepare("SELECT sink, kind, device, seq, ts, body FROM rec ORDER BY id")
            .map_err(sql_err)?;
        let mut rows = st.query([]).map_err(sql_err)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(sql_err)? {
            let sink: String = r.get(0).unwrap_or_default();
            let kind: i64 = r.get(1).unwrap_or(-1);
            // Damaged rows are exported too, as well as they can be read.
            let text = |i: usize| -> Result<String, SpoolError> {
                Ok(match r.get_ref(i).map_err(sql_err)? {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                    other => format!("{other:?}"),
                })
            };
            let device = text(2)?;
            let seq: i64 = r.get(3).unwrap_or(-1);
            let ts: i64 = r.get(4).unwrap_or(0);
            let body = text(5)?;
            f(&sink, kind, &device, seq, ts, &body).map_err(|e| SpoolError::Io {
                what: "writing export".into(),
                source: e,
            })?;
            n += 1;
        }
        Ok(n)
    }

    /// Per (sink, kind, device): rows, oldest ts, lowest and highest seq.
    pub fn summary(&self) -> rusqlite::Result<Vec<SummaryRow>> {
        let mut st = self.conn.prepare(
            "SELECT sink, kind, device, COUNT(*), MIN(ts), MIN(seq), MAX(seq) FROM rec GROUP BY sink, kind, device ORDER BY sink, kind, device",
        )?;
        let rows = st.query_map([], |r| {
            Ok(SummaryRow {
                sink: r.get(0)?,
                kind: r.get(1)?,
                device: r.get(2)?,
                records: r.get::<_, i64>(3)? as u64,
                oldest_ts: r.get(4)?,
                first_seq: r.get(5)?,
                last_seq: r.get(6)?,
            })
        })?;
        rows.collect()
    }
}

/// What one [`Db::correct_boot`] pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskCorrection {
    /// The last row id looked at (the next pass starts after it).
    pub last_id: i64,
    /// Rows looked at (fewer than the limit: none are left).
    pub seen: u64,
    pub corrected: u64,
    /// Rows that failed their checks: left for the backlog reader.
    pub damaged: u64,
    /// Rows whose body does not start as the spool writes it: left as they
    /// are (sent `unsynced`, covered by the `gateway.clock_corrected` rule).
    pub unrewritable: u64,
}

/// A row's `boot` and `boottime` columns.
enum Taken {
    None,
    Some(String, i64),
    /// One without the other, or of the wrong type.
    Damaged,
}

fn taken_columns(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Taken> {
    use rusqlite::types::ValueRef;
    Ok(match (r.get_ref(at)?, r.get_ref(at + 1)?) {
        (ValueRef::Null, ValueRef::Null) => Taken::None,
        (ValueRef::Text(b), ValueRef::Integer(t)) => match std::str::from_utf8(b) {
            Ok(b) => Taken::Some(b.to_owned(), t),
            Err(_) => Taken::Damaged,
        },
        _ => Taken::Damaged,
    })
}

enum OpenFail {
    Corrupt(String),
    Other(SpoolError),
}

enum ShapeError {
    Sql(rusqlite::Error),
    Wrong(String),
}

impl From<rusqlite::Error> for ShapeError {
    fn from(e: rusqlite::Error) -> Self {
        ShapeError::Sql(e)
    }
}

impl OpenFail {
    fn from_sql(e: rusqlite::Error, path: &Path) -> Self {
        if is_corruption(&e) {
            OpenFail::Corrupt(e.to_string())
        } else {
            OpenFail::Other(SpoolError::Sql {
                what: format!("opening {}", path.display()),
                source: e,
            })
        }
    }
}

/// Renames the spool and its WAL to `<name>.corrupt-<UTC time>`, drops the
/// shared-memory file, and syncs the directory so the rename survives a
/// power cut.
fn move_aside(path: &Path) -> Result<PathBuf, SpoolError> {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "spool.db".into());
    let aside = path.with_file_name(format!("{name}.corrupt-{stamp}"));
    let io = |what: String| move |e| SpoolError::Io { what, source: e };
    std::fs::rename(path, &aside).map_err(io(format!("moving {} aside", path.display())))?;
    let wal = path.with_file_name(format!("{name}-wal"));
    if wal.exists() {
        let wal_aside = aside.with_file_name(format!(
            "{}-wal",
            aside
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        std::fs::rename(&wal, wal_aside).map_err(io(format!("moving {} aside", wal.display())))?;
    }
    let shm = path.with_file_name(format!("{name}-shm"));
    if shm.exists() {
        std::fs::remove_file(&shm).map_err(io(format!("removing {}", shm.display())))?;
    }
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            // Best effort: a directory fsync failing leaves the rename in place.
            let _ = d.sync_all();
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests;
