//! The replay store: the final reply of each command that changed
//! something ([`Op::remembered`]: identify, config.set, restart) for 7
//! days, by id, with a digest of the request it answered. The same request
//! again gets the stored reply, marked `replayed`, and does not run twice;
//! another request under a known id is refused by the dispatcher ("id
//! reused"), so an id cannot be claimed in advance by someone else.
//!
//! It is capped ([`MAX_REPLIES`], [`MAX_BYTES`]): past either cap the
//! oldest replies are forgotten first, on disk and in memory alike. Its
//! SQLite file is its own, beside the spool's (`spool.db.replies`): the
//! spool's cap (`spool.max_bytes`) measures the pages in use of the
//! spool's file, so a table in that file would take its room from the
//! readings. A table left in the spool's file by an older version is moved
//! here at start.
//!
//! When the file cannot be used (a corrupt one is moved aside and replaced
//! first), ids are remembered in memory for this run only, and that is
//! logged. Every function here is blocking: the dispatcher calls it on a
//! blocking thread.
//!
//! [`Op::remembered`]: super::request::Op::remembered

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use wardgate_contract::command::Reply;

/// How long a completed id is remembered.
pub(crate) const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

/// The most replies remembered. Only commands that change something are
/// remembered, and the IOC sends those by hand or in the odd fleet-wide
/// change: a thousand is years of them on one gateway, and at the rate
/// limit's ten a second still a hundred seconds of a flood before the
/// oldest is forgotten (which then, sent again, would run again).
pub(crate) const MAX_REPLIES: usize = 1_000;

/// The most bytes of replies remembered (ids, replies and digests; the
/// file is larger by SQLite's pages and index, about twice at worst). A
/// remembered reply is a few hundred bytes (a config.set refusal listing
/// every key it refuses, a few KiB): a MiB holds the thousand above, and
/// it is little beside a spool of hundreds of MiB on a card.
pub(crate) const MAX_BYTES: usize = 1 << 20;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS cmd_replies (
    id TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    ts INTEGER NOT NULL,
    reply TEXT NOT NULL,
    digest TEXT
);
CREATE INDEX IF NOT EXISTS cmd_replies_ts ON cmd_replies(ts);";

/// The bytes a row counts for against [`MAX_BYTES`], in SQL.
const ROW_BYTES: &str =
    "LENGTH(CAST(id AS BLOB)) + LENGTH(CAST(reply AS BLOB)) + COALESCE(LENGTH(CAST(digest AS BLOB)), 0)";

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// SQLite refused: the caller logs it; the reply is kept in memory
    /// for this run.
    #[error("command replay store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The file could not be moved aside: the store runs in memory.
    #[error("command replay store: moving {path} aside: {source}")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The store's file beside the spool's: `<spool>.replies`.
pub(crate) fn path_for(spool: &Path) -> PathBuf {
    crate::spool::positions::sibling(spool, ".replies")
}

pub(crate) struct ReplayStore {
    conn: Option<Mutex<Connection>>,
    /// Used when the file cannot be; and always for this run's ids, so a
    /// write that fails still prevents a second run. Capped like the file.
    memory: Mutex<HashMap<String, Entry>>,
}

/// A stored final reply and the digest of the request it answered (none:
/// stored by an older version, or a reply given in a later run, such as a
/// config change confirmed after the restart).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    pub reply: Reply,
    pub digest: Option<String>,
}

impl Stored {
    /// Whether this answers the request `op` with `digest`.
    pub(crate) fn answers(&self, op: &str, digest: &str) -> bool {
        self.reply.op == op && self.digest.as_deref().is_none_or(|d| d == digest)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    stored: Stored,
    ts: i64,
    bytes: usize,
}

/// How many of the newest replies to keep, given their sizes newest first:
/// as many as fit both `max_count` and `max_bytes`.
pub(crate) fn keep_newest(
    sizes_newest_first: impl IntoIterator<Item = usize>,
    max_count: usize,
    max_bytes: usize,
) -> usize {
    let mut total = 0usize;
    let mut n = 0;
    for b in sizes_newest_first {
        let with = total.saturating_add(b);
        if n == max_count || with > max_bytes {
            break;
        }
        total = with;
        n += 1;
    }
    n
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_damaged(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Sql(rusqlite::Error::SqliteFailure(f, _))
            if matches!(
                f.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            )
    )
}

impl ReplayStore {
    /// Opens (and creates) the store beside the spool file `spool`, moves
    /// there what an older version kept in the spool's file, and forgets
    /// replies older than 7 days or past the caps. Never fails: without
    /// the file, memory.
    pub(crate) fn open(spool: &Path, now_ms: i64) -> ReplayStore {
        let path = path_for(spool);
        let conn = match Self::open_file(&path, now_ms) {
            Err(e) if is_damaged(&e) => {
                let aside = crate::spool::positions::sibling(&path, ".corrupt");
                tracing::warn!(error = %e, file = %path.display(), aside = %aside.display(), "command replay store damaged: moved aside, completed command ids forgotten");
                std::fs::rename(&path, &aside)
                    .map_err(|source| StoreError::MoveAside {
                        path: path.clone(),
                        source,
                    })
                    .and_then(|()| Self::open_file(&path, now_ms))
            }
            r => r,
        };
        let conn = match conn {
            Ok(c) => {
                if let Err(e) = Self::take_over_spool_table(&c, spool, now_ms) {
                    tracing::warn!(error = %e, spool = %spool.display(), "the spool file's command replies (an older version's) could not be moved out: they stay there and are read no more");
                }
                if let Err(e) = Self::prune_file(&c, now_ms) {
                    tracing::warn!(error = %e, "command replay store not pruned");
                }
                Some(Mutex::new(c))
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    file = %path.display(),
                    "completed command ids are remembered in memory only (this run)"
                );
                None
            }
        };
        ReplayStore {
            conn,
            memory: Mutex::default(),
        }
    }

    /// Memory only (tests, or no spool file).
    pub(crate) fn in_memory() -> ReplayStore {
        ReplayStore {
            conn: None,
            memory: Mutex::default(),
        }
    }

    fn open_file(path: &Path, now_ms: i64) -> Result<Connection, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let n = conn.execute(
            "DELETE FROM cmd_replies WHERE ts < ?1",
            params![now_ms - KEEP_MS],
        )?;
        if n > 0 {
            tracing::debug!(forgotten = n, "command ids older than 7 days forgotten");
        }
        Ok(conn)
    }

    /// Moves the `cmd_replies` table an older version kept in the spool's
    /// own file (where it counted against `spool.max_bytes`) into this
    /// store (a row already here wins: a move cut short and tried again),
    /// and drops it there. Nothing to do when the spool file or the table
    /// does not exist.
    fn take_over_spool_table(
        conn: &Connection,
        spool: &Path,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let Some(name) = spool.to_str() else {
            return Ok(());
        };
        if !spool.is_file() {
            return Ok(());
        }
        conn.execute("ATTACH DATABASE ?1 AS old", params![name])?;
        let moved = (|| -> Result<Option<usize>, StoreError> {
            let there = conn
                .prepare(
                    "SELECT 1 FROM old.sqlite_master WHERE type = 'table' AND name = 'cmd_replies'",
                )?
                .exists([])?;
            if !there {
                return Ok(None);
            }
            // A table of a still older version has no digest column: its
            // rows answer by op.
            let has_digest = conn
                .prepare(
                    "SELECT 1 FROM pragma_table_info('cmd_replies', 'old') WHERE name = 'digest'",
                )?
                .exists([])?;
            let digest = if has_digest { "digest" } else { "NULL" };
            let tx = conn.unchecked_transaction()?;
            let n = tx.execute(
                &format!(
                    "INSERT OR IGNORE INTO main.cmd_replies (id, op, ts, reply, digest)
                     SELECT id, op, ts, reply, {digest} FROM old.cmd_replies WHERE ts >= ?1"
                ),
                params![now_ms - KEEP_MS],
            )?;
            tx.execute_batch("DROP TABLE old.cmd_replies")?;
            tx.commit()?;
            Ok(Some(n))
        })();
        let detached = conn.execute_batch("DETACH DATABASE old");
        let moved = moved?;
        detached?;
        if let Some(n) = moved {
            tracing::info!(
                replies = n,
                "command replies moved out of the spool file into a file of their own"
            );
        }
        Ok(())
    }

    /// Forgets, on disk, replies older than 7 days and the oldest past the
    /// caps.
    fn prune_file(c: &Connection, now_ms: i64) -> Result<usize, StoreError> {
        let mut n = c.execute(
            "DELETE FROM cmd_replies WHERE ts < ?1",
            params![now_ms - KEEP_MS],
        )?;
        let rows: Vec<(i64, usize)> = c
            .prepare(&format!(
                "SELECT rowid, {ROW_BYTES} FROM cmd_replies ORDER BY ts DESC, rowid DESC"
            ))?
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as usize))
            })?
            .collect::<Result<_, _>>()?;
        let keep = keep_newest(rows.iter().map(|r| r.1), MAX_REPLIES, MAX_BYTES);
        if keep < rows.len() {
            let mut del = c.prepare("DELETE FROM cmd_replies WHERE rowid = ?1")?;
            for (rowid, _) in &rows[keep..] {
                n += del.execute(params![rowid])?;
            }
        }
        Ok(n)
    }

    /// Forgets, in memory, what [`ReplayStore::prune_file`] forgets on disk.
    fn prune_memory(m: &mut HashMap<String, Entry>, now_ms: i64) {
        m.retain(|_, e| e.ts >= now_ms - KEEP_MS);
        let bytes: usize = m.values().map(|e| e.bytes).sum();
        if m.len() <= MAX_REPLIES && bytes <= MAX_BYTES {
            return;
        }
        let mut by_age: Vec<(i64, usize, String)> =
            m.iter().map(|(k, e)| (e.ts, e.bytes, k.clone())).collect();
        by_age.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        let keep = keep_newest(by_age.iter().map(|e| e.1), MAX_REPLIES, MAX_BYTES);
        for (_, _, id) in &by_age[keep..] {
            m.remove(id);
        }
    }

    /// The stored final reply of `id`, if it completed in the last 7 days
    /// and was not pushed out by the caps since.
    pub(crate) fn get(&self, id: &str, now_ms: i64) -> Option<Stored> {
        if let Some(e) = lock(&self.memory).get(id) {
            if e.ts >= now_ms - KEEP_MS {
                return Some(e.stored.clone());
            }
        }
        let conn = self.conn.as_ref()?;
        let row: Result<Option<(String, Option<String>)>, rusqlite::Error> = lock(conn)
            .query_row(
                "SELECT reply, digest FROM cmd_replies WHERE id = ?1 AND ts >= ?2",
                params![id, now_ms - KEEP_MS],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional();
        match row {
            Ok(Some((text, digest))) => match serde_json::from_str::<Reply>(&text) {
                Ok(reply) => Some(Stored { reply, digest }),
                Err(e) => {
                    // A damaged row must not run the command again either.
                    tracing::warn!(id, error = %e, "a stored command reply cannot be read");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(id, error = %e, "command replay store not readable");
                None
            }
        }
    }

    /// Remembers a final reply and the digest of the request it answered;
    /// forgets the oldest past the caps.
    pub(crate) fn put(&self, reply: &Reply, digest: Option<&str>, now_ms: i64) {
        let text = reply.to_json();
        let bytes = reply.id.len() + text.len() + digest.map_or(0, str::len);
        {
            let mut m = lock(&self.memory);
            m.insert(
                reply.id.clone(),
                Entry {
                    stored: Stored {
                        reply: reply.clone(),
                        digest: digest.map(str::to_owned),
                    },
                    ts: now_ms,
                    bytes,
                },
            );
            Self::prune_memory(&mut m, now_ms);
        }
        let Some(conn) = &self.conn else { return };
        let c = lock(conn);
        let r = (|| -> Result<usize, StoreError> {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO cmd_replies (id, op, ts, reply, digest) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![reply.id, reply.op, now_ms, text, digest],
            )?;
            let n = Self::prune_file(&tx, now_ms)?;
            tx.commit()?;
            Ok(n)
        })();
        match r {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                forgotten = n,
                "oldest command replies forgotten (age or caps)"
            ),
            Err(e) => {
                tracing::warn!(id = %reply.id, error = %e, "command reply not stored on disk (kept in memory for this run)");
            }
        }
    }

    /// How many replies the file holds (tests).
    #[cfg_attr(not(test), allow(dead_code))] // used by the tests
    pub(crate) fn len_on_disk(&self) -> Option<usize> {
        let conn = self.conn.as_ref()?;
        lock(conn)
            .query_row("SELECT COUNT(*) FROM cmd_replies", [], |r| {
                r.get::<_, i64>(0)
            })
            .ok()
            .map(|n| n.max(0) as usize)
    }

    /// How many replies memory holds (tests).
    #[cfg_attr(not(test), allow(dead_code))] // used by the tests
    pub(crate) fn len_in_memory(&self) -> usize {
        lock(&self.memory).len()
    }
}

#[cfg(test)]
mod tests;
