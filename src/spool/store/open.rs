//! Opening the store at start: the database (a file that is not a spool is
//! moved aside and replaced), the positions file, and what the database
//! knows (its rows, the dropped total, and the positions a spool of the
//! first version kept there). Never fails on the disk's account: a store
//! that cannot be used is opened degraded, with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::caps::Caps;
use super::health::{io_reason, spool_error_reason, sql_reason, Health, STORE_RETRY};
use super::{Failure, Store};
use crate::spool::db::Db;
use crate::spool::positions::{self, Mark};
use crate::spool::report::SpoolCounters;

/// Where the streams stood at the last stop: (epoch, clean stop, marks).
pub(crate) type Known = (u64, bool, BTreeMap<String, Mark>);

/// What opening the store found.
pub(crate) struct Opened {
    pub(crate) store: Store,
    /// The positions, from the positions file, else from the database.
    pub(crate) known: Option<Known>,
    /// The database holds no row and no positions.
    pub(crate) empty_db: bool,
    /// Where an unreadable database was moved, and why.
    pub(crate) moved_aside: Option<(PathBuf, String)>,
    /// Why the store cannot be used, if it cannot.
    pub(crate) degraded: Option<Failure>,
}

/// Opens the store at `path`, setting the counters of what the database
/// holds (rows, bytes, dropped before this run).
pub(crate) fn open(path: &Path, counters: &SpoolCounters) -> Opened {
    let pos_path = positions::path_for(path);
    let file = positions::read(&pos_path);
    let mut degraded: Option<Failure> = None;
    let mut moved_aside = None;
    let mut db = match Db::open(path) {
        Ok((db, r)) => {
            moved_aside = r.moved_aside;
            Some(db)
        }
        Err(e) => {
            degraded = Some(spool_error_reason(&e, path));
            tracing::error!(spool = %path.display(), error = %e, "spool cannot be opened; readings stay in memory");
            None
        }
    };
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "sequence positions unreadable");
            if let (None, Some(io)) = (&degraded, e.io_error()) {
                degraded = Some((io_reason(io), e.to_string()));
            }
            None
        }
    };

    // Where each stream stands, from the positions file, else from the
    // database (a spool of the first version keeps them only there).
    let mut known: Option<Known> =
        file.and_then(|p| Some((positions::parse_epoch(&p.epoch)?, p.clean, p.streams)));
    let mut empty_db = true;
    if let Some(d) = db.as_mut() {
        match read_db_positions(d) {
            Ok((db_pos, rows)) => {
                empty_db = rows == 0 && db_pos.is_none();
                count_what_is_there(d, rows, counters);
                merge_positions(&mut known, db_pos);
            }
            Err(e) => {
                degraded = Some(sql_reason(&e, path));
                db = None;
            }
        }
    }
    let store = Store {
        path: path.to_path_buf(),
        pos_path,
        db,
        health: Health::new(Instant::now() + STORE_RETRY),
        caps: Caps::default(),
        marks: BTreeMap::new(),
        dropped_written: counters.dropped_total(),
        correct_at: (0, 0),
        correct_failing: false,
    };
    Opened {
        store,
        known,
        empty_db,
        moved_aside,
        degraded,
    }
}

/// Sets the counters of what the database holds.
fn count_what_is_there(d: &Db, rows: u64, counters: &SpoolCounters) {
    counters.disk_rows.store(rows as i64, Ordering::Relaxed);
    if let Ok(b) = d.used_bytes() {
        counters.disk_bytes.store(b, Ordering::Relaxed);
    }
    if let Ok(Some(n)) = d.meta_get("dropped") {
        counters
            .dropped_before
            .store(n.max(0) as u64, Ordering::Relaxed);
    }
}

/// Adds the database's positions to the file's: taken whole when the file
/// had none; of the same epoch, each stream's marks are the higher of the
/// two. The database may know streams the file lost track of (never: the
/// file is written first), or used marks from commits since the last
/// reservation.
fn merge_positions(known: &mut Option<Known>, db_pos: Option<Known>) {
    match (known.as_mut(), db_pos) {
        (None, Some(p)) => *known = Some(p),
        (Some((fe, _, fm)), Some((de, _, dm))) if *fe == de => {
            for (k, m) in dm {
                let e = fm.entry(k).or_insert(m);
                e.reserved = e.reserved.max(m.reserved);
                e.used = e.used.max(m.used);
            }
        }
        _ => {}
    }
}

/// Positions kept in the database: (epoch, clean, marks) and the row count.
fn read_db_positions(d: &Db) -> rusqlite::Result<(Option<Known>, u64)> {
    let rows = d.row_count()?;
    let clean = d.meta_get("clean")? == Some(1);
    let epoch = d.meta_get("epoch")?;
    let mut marks: BTreeMap<String, Mark> = BTreeMap::new();
    for (key, value) in d.meta_all("seq/")? {
        let k = key.trim_start_matches("seq/").to_owned();
        marks
            .entry(k)
            .or_insert(Mark {
                reserved: 0,
                used: -1,
                slot: None,
            })
            .reserved = value.max(0) as u64;
    }
    for (key, value) in d.meta_all("used/")? {
        let k = key.trim_start_matches("used/").to_owned();
        if let Some(m) = marks.get_mut(&k) {
            m.used = m.used.max(value);
        }
    }
    if marks.is_empty() && epoch.is_none() {
        return Ok((None, rows));
    }
    // A spool of the first version has positions but no epoch: its numbers
    // continue in epoch 0.
    Ok((Some((epoch.unwrap_or(0) as u64, clean, marks)), rows))
}
