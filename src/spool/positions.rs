//! Sequence positions kept apart from the spool database, so that losing the
//! spool (a corrupt file moved aside, a deleted database) does not lose them.
//!
//! The file (`<spool.path>.seq`) holds the sequence *epoch* and, per stream
//! (device and kind), the reserved mark: no number at or above it has ever
//! been used in this epoch. It is written whole, write-then-rename with
//! fsyncs, only when a block of numbers is reserved, at start and at a clean
//! stop, so it costs nothing per reading.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub(crate) enum PositionsError {
    /// The file could not be read or written: the store is degraded, the
    /// caller reports it and works with an epoch of its own.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is there but is not a positions file: treated as lost.
    #[error("{path} is damaged: {detail}")]
    Damaged { path: String, detail: String },
}

impl PositionsError {
    /// The OS error behind a failure, if any.
    pub(crate) fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            PositionsError::Io { source, .. } => Some(source),
            PositionsError::Damaged { .. } => None,
        }
    }
}

/// One stream's mark: every number used so far is below `reserved`;
/// `used` is the highest number known to have been used when the file was
/// written (-1: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub reserved: u64,
    pub used: i64,
    /// The stream's slot in the used-marks file ([`super::used`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    /// 16 hex digits.
    pub epoch: String,
    /// True only when written by a clean stop: `reserved` is then exact.
    pub clean: bool,
    /// Key: `<kind>/<device>` (kind 0 = samples, 1 = events).
    pub streams: BTreeMap<String, Mark>,
}

/// Where the positions of the spool at `spool` live.
pub(crate) fn path_for(spool: &Path) -> PathBuf {
    sibling(spool, ".seq")
}

/// `<spool file name><suffix>` beside the spool: the files that belong to it.
pub(crate) fn sibling(spool: &Path, suffix: &str) -> PathBuf {
    let mut name = spool
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "spool.db".into());
    name.push(suffix);
    spool.with_file_name(name)
}

pub fn epoch_hex(epoch: u64) -> String {
    format!("{epoch:016x}")
}

pub fn parse_epoch(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// Reads the file; `Ok(None)` when there is none.
pub(crate) fn read(path: &Path) -> Result<Option<Positions>, PositionsError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(PositionsError::Io {
                what: "reading",
                path: path.display().to_string(),
                source: e,
            })
        }
    };
    parse(&text)
        .map(Some)
        .map_err(|detail| PositionsError::Damaged {
            path: path.display().to_string(),
            detail,
        })
}

/// Parses the file's bytes (whatever the card gave back); the error says
/// what is damaged. Pure, so it is fuzzed (`fuzz/fuzz_targets/positions.rs`).
pub fn parse(bytes: &[u8]) -> Result<Positions, String> {
    let p: Positions = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if parse_epoch(&p.epoch).is_none() {
        return Err(format!("epoch {:?} is not 16 hex digits", p.epoch));
    }
    Ok(p)
}

/// Writes the file atomically: a temp file beside it, fsync, rename, fsync
/// of the directory (so the rename survives a power cut).
pub(crate) fn write(path: &Path, p: &Positions) -> Result<(), PositionsError> {
    let io = |what: &'static str| {
        let path = path.display().to_string();
        move |source| PositionsError::Io { what, path, source }
    };
    let text = serde_json::to_vec_pretty(p).map_err(|e| PositionsError::Damaged {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io("writing"))?;
        f.write_all(&text).map_err(io("writing"))?;
        f.sync_all().map_err(io("syncing"))?;
    }
    std::fs::rename(&tmp, path).map_err(io("renaming"))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            d.sync_all().map_err(io("syncing the directory of"))?;
        }
    }
    Ok(())
}

pub fn stream_key(kind: crate::model::Kind, device: &str) -> String {
    format!("{}/{device}", kind.as_i64())
}

/// The inverse of [`stream_key`]: only keys it writes (no "00/ups1", no
/// device id outside the pattern).
pub fn parse_stream_key(key: &str) -> Option<(crate::model::Kind, &str)> {
    let (k, dev) = key.split_once('/')?;
    let kind = crate::model::Kind::from_i64(k.parse().ok()?)?;
    (k == kind.as_i64().to_string() && super::db::valid_device_id(dev)).then_some((kind, dev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("spool.db"));
        assert_eq!(path.file_name().unwrap(), "spool.db.seq");
        assert!(read(&path).unwrap().is_none());
        let mut p = Positions {
            epoch: epoch_hex(0xdead_beef),
            clean: false,
            streams: BTreeMap::new(),
        };
        p.streams.insert(
            stream_key(Kind::Sample, "ups1"),
            Mark {
                reserved: 65_536,
                used: 12,
                slot: Some(0),
            },
        );
        write(&path, &p).unwrap();
        assert_eq!(read(&path).unwrap(), Some(p.clone()));
        p.clean = true;
        write(&path, &p).unwrap();
        assert!(read(&path).unwrap().unwrap().clean);
        assert!(!dir.path().join("spool.db.seq.tmp").exists());
        assert_eq!(
            parse_stream_key("1/ups1"),
            Some((Kind::Event, "ups1")),
            "key round trip"
        );
        for odd in ["01/ups1", "+1/ups1", "1/UPS 1", "1/", "1"] {
            assert_eq!(parse_stream_key(odd), None, "{odd}");
        }
    }

    #[test]
    fn damaged_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db.seq");
        for bad in [
            &b"garbage"[..],
            b"{\"epoch\":\"xyz\",\"clean\":true,\"streams\":{}}",
            b"\xff\xfe",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(read(&path), Err(PositionsError::Damaged { .. })));
        }
    }
}
