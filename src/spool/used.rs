//! Exact "last used" sequence marks that survive a crash of the service at
//! no cost per reading.
//!
//! Reserving numbers in blocks keeps the SD card quiet, but after a crash
//! it leaves the operations centre unable to tell the numbers used just
//! before the stop (readings lost) from those never used. This file tells
//! them apart: a small memory-mapped file beside the spool, one 8-byte slot
//! per stream holding the stream's next number, updated in memory on every
//! stamp. A killed process leaves the page in the kernel's page cache, so
//! the next start reads exact marks; a power cut may lose the page (it is
//! never fsynced), which is why the marks are trusted only when the kernel
//! boot id is still the same. The kernel writes the page back about every
//! 30 s, so it costs the card one page per half minute at most.
//!
//! Written by hand over memmap2: no crate keeps counters in a shared file.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

const MAGIC: &[u8; 8] = b"WGUSED01";
const HEADER: usize = 64;
/// Streams with a slot; beyond this, streams have no exact mark.
pub(crate) const SLOTS: usize = 4096;
const SIZE: usize = HEADER + SLOTS * 8;

pub(crate) struct UsedMarks {
    map: MmapMut,
}

/// What the file held from the previous run.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Previous {
    pub(crate) epoch: u64,
    /// The kernel boot id when it was written.
    pub(crate) boot_id: String,
    /// Slot -> next number (0: none stamped).
    pub(crate) next: Vec<u64>,
}

pub(crate) fn path_for(spool: &Path) -> PathBuf {
    super::positions::sibling(spool, ".used")
}

/// The kernel's boot id (changes on every boot).
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Reads what a previous run left; None if there is no usable file.
pub(crate) fn read_previous(path: &Path) -> Option<Previous> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() != SIZE || &bytes[..8] != MAGIC {
        return None;
    }
    let epoch = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let boot_id = String::from_utf8_lossy(&bytes[16..HEADER])
        .trim_end_matches('\0')
        .to_owned();
    let next = bytes[HEADER..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    Some(Previous {
        epoch,
        boot_id,
        next,
    })
}

impl UsedMarks {
    /// Creates (or takes over) the file for this run; `Err` leaves the run
    /// without exact marks (a read-only card, say).
    pub(crate) fn create(path: &Path, epoch: u64, boot_id: &str) -> std::io::Result<UsedMarks> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        f.set_len(SIZE as u64)?;
        // SAFETY: the file is this process's own (beside its spool, in a
        // directory only the service writes); nothing else maps or truncates
        // it while it is mapped.
        let map = unsafe { MmapMut::map_mut(&f)? };
        let mut m = UsedMarks { map };
        m.map[HEADER..].fill(0);
        m.set_epoch(epoch);
        let id = boot_id.as_bytes();
        let n = id.len().min(HEADER - 16);
        m.map[16..HEADER].fill(0);
        m.map[16..16 + n].copy_from_slice(&id[..n]);
        m.map[..8].copy_from_slice(MAGIC);
        Ok(m)
    }

    fn set_epoch(&mut self, epoch: u64) {
        self.map[8..16].copy_from_slice(&epoch.to_le_bytes());
    }

    /// Records a stream's next number (a plain memory write).
    pub(crate) fn set(&mut self, slot: u32, next: u64) {
        let at = HEADER + slot as usize * 8;
        if let Some(s) = self.map.get_mut(at..at + 8) {
            s.copy_from_slice(&next.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_the_process_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_for(&dir.path().join("spool.db"));
        assert!(read_previous(&p).is_none());
        {
            let mut m = UsedMarks::create(&p, 0xabc, "boot-1").unwrap();
            m.set(0, 17);
            m.set(3, 4);
            m.set(SLOTS as u32, 9); // out of range: ignored
        }
        let prev = read_previous(&p).unwrap();
        assert_eq!(prev.epoch, 0xabc);
        assert_eq!(prev.boot_id, "boot-1");
        assert_eq!((prev.next[0], prev.next[3], prev.next[1]), (17, 4, 0));
        std::fs::write(&p, b"short").unwrap();
        assert!(read_previous(&p).is_none(), "a damaged file is ignored");
    }
}
