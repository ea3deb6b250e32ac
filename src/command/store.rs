//! The replay store: the final reply of every command of the last 7 days
//! that was run, by id, with a digest of the request it answered, in its
//! own table (`cmd_replies`) of the spool's SQLite file. The same request
//! again gets the stored reply, marked `replayed`, and does not run twice;
//! another request under a known id is refused by the dispatcher ("id
//! reused"), so an id cannot be claimed in advance by someone else.
//!
//! It uses a connection of its own (the spool runs in WAL mode, so the two
//! do not block each other beyond SQLite's short write lock, waited for up
//! to 5 s). When the file cannot be used, ids are remembered in memory for
//! this run only, and that is logged. Every function here is blocking:
//! the dispatcher calls it on a blocking thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::request::Reply;

/// How long a completed id is remembered.
pub const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS cmd_replies (
    id TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    ts INTEGER NOT NULL,
    reply TEXT NOT NULL,
    digest TEXT
);
CREATE INDEX IF NOT EXISTS cmd_replies_ts ON cmd_replies(ts);";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused: the caller logs it; the reply is kept in memory
    /// for this run.
    #[error("command replay store: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub struct ReplayStore {
    conn: Option<Mutex<Connection>>,
    /// Used when the file cannot be; and always for this run's ids, so a
    /// write that fails still prevents a second run.
    memory: Mutex<HashMap<String, Stored>>,
}

/// A stored final reply and the digest of the request it answered (none:
/// stored by an older version, or a reply given in a later run, such as a
/// config change confirmed after the restart).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub reply: Reply,
    pub digest: Option<String>,
}

impl Stored {
    /// Whether this answers the request `op` with `digest`.
    pub fn answers(&self, op: &str, digest: &str) -> bool {
        self.reply.op == op && self.digest.as_deref().is_none_or(|d| d == digest)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReplayStore {
    /// Opens (and creates) the table in the spool's file and forgets
    /// replies older than 7 days. Never fails: without the file, memory.
    pub fn open(path: &Path, now_ms: i64) -> ReplayStore {
        let conn = match Self::open_file(path, now_ms) {
            Ok(c) => Some(Mutex::new(c)),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    spool = %path.display(),
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
    pub fn in_memory() -> ReplayStore {
        ReplayStore {
            conn: None,
            memory: Mutex::default(),
        }
    }

    fn open_file(path: &Path, now_ms: i64) -> Result<Connection, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        // A table of an older version has no digest column.
        let has_digest = conn
            .prepare("SELECT 1 FROM pragma_table_info('cmd_replies') WHERE name = 'digest'")?
            .exists([])?;
        if !has_digest {
            conn.execute_batch("ALTER TABLE cmd_replies ADD COLUMN digest TEXT")?;
        }
        let n = conn.execute(
            "DELETE FROM cmd_replies WHERE ts < ?1",
            params![now_ms - KEEP_MS],
        )?;
        if n > 0 {
            tracing::debug!(forgotten = n, "command ids older than 7 days forgotten");
        }
        Ok(conn)
    }

    /// The stored final reply of `id`, if it completed in the last 7 days.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Stored> {
        if let Some(r) = lock(&self.memory).get(id) {
            return Some(r.clone());
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

    /// Remembers a final reply and the digest of the request it answered.
    pub fn put(&self, reply: &Reply, digest: Option<&str>, now_ms: i64) {
        lock(&self.memory).insert(
            reply.id.clone(),
            Stored {
                reply: reply.clone(),
                digest: digest.map(str::to_owned),
            },
        );
        let Some(conn) = &self.conn else { return };
        let c = lock(conn);
        let r = c
            .execute(
                "INSERT OR REPLACE INTO cmd_replies (id, op, ts, reply, digest) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![reply.id, reply.op, now_ms, reply.to_json(), digest],
            )
            .and_then(|_| {
                c.execute(
                    "DELETE FROM cmd_replies WHERE ts < ?1",
                    params![now_ms - KEEP_MS],
                )
            });
        if let Err(e) = r {
            tracing::warn!(id = %reply.id, error = %e, "command reply not stored on disk (kept in memory for this run)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::request::{State, Target};

    fn reply(id: &str) -> Reply {
        Reply::new(
            &Target {
                op: "status".into(),
                id: id.into(),
            },
            State::Successful,
            1,
        )
    }

    #[test]
    fn remembers_across_reopen_and_forgets_after_7_days() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let now = 1_800_000_000_000;
        let s = ReplayStore::open(&path, now);
        assert!(s.get("a", now).is_none());
        s.put(&reply("a"), Some("d1"), now);
        s.put(&reply("old"), None, now - KEEP_MS - 1);
        assert_eq!(s.get("a", now).map(|x| x.reply), Some(reply("a")));
        drop(s);
        let s = ReplayStore::open(&path, now + 1000);
        let got = s.get("a", now + 1000).unwrap();
        assert_eq!((got.reply, got.digest.as_deref()), (reply("a"), Some("d1")));
        assert!(s.get("old", now + 1000).is_none(), "older than 7 days");
        assert!(s.get("a", now + KEEP_MS + 1).is_none());
    }

    #[test]
    fn without_a_file_memory_still_prevents_a_second_run() {
        let s = ReplayStore::open(Path::new("/nonexistent-dir/x/spool.db"), 5);
        s.put(&reply("a"), None, 5);
        assert_eq!(s.get("a", 5).map(|x| x.reply), Some(reply("a")));
        let m = ReplayStore::in_memory();
        assert!(m.get("a", 5).is_none());
    }

    /// A request answers a stored reply only with the same op and digest
    /// (a stored reply without a digest, from an older version, by op).
    #[test]
    fn a_stored_reply_answers_only_its_own_request() {
        let s = Stored {
            reply: reply("a"),
            digest: Some("d1".into()),
        };
        assert!(s.answers("status", "d1"));
        assert!(!s.answers("status", "d2"));
        assert!(!s.answers("identify", "d1"));
        let old = Stored {
            reply: reply("a"),
            digest: None,
        };
        assert!(old.answers("status", "anything"));
        assert!(!old.answers("identify", "anything"));
    }

    /// A table made by an older version (no digest column) is upgraded in
    /// place; its rows answer by op.
    #[test]
    fn an_older_table_gets_the_digest_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let now = 1_800_000_000_000;
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE cmd_replies (id TEXT PRIMARY KEY, op TEXT NOT NULL, ts INTEGER NOT NULL, reply TEXT NOT NULL);",
            )
            .unwrap();
            c.execute(
                "INSERT INTO cmd_replies (id, op, ts, reply) VALUES ('a', 'status', ?1, ?2)",
                params![now, reply("a").to_json()],
            )
            .unwrap();
        }
        let s = ReplayStore::open(&path, now);
        let got = s.get("a", now).unwrap();
        assert_eq!((got.reply, got.digest), (reply("a"), None));
        s.put(&reply("b"), Some("d"), now);
        assert_eq!(s.get("b", now).unwrap().digest.as_deref(), Some("d"));
    }
}
