//! De-duplication by `(site, device, kind, epoch, seq)` (the contract's
//! `RecordKey`), as a pure structure.
//!
//! Each stream remembers the digests ([`Fingerprint`]) of the last
//! `window` distinct records it received, by arrival, and a copy of one of
//! them is judged with the contract's duplicate rule
//! ([`keep_fingerprints`]): the same content is a redelivery, an `unsynced`
//! copy and its `corrected` copy are one record (keep the corrected one),
//! anything else is a contract break ([`CopyConflict`]).
//!
//! Bounds: `window` digests per stream (32 bytes each) and `max_streams`
//! streams; past that the streams used least recently are forgotten (an
//! eighth at a time). A copy beyond the window is not judged here: the
//! ledger's numbers tell that it was received before (counted as a
//! duplicate, its content unchecked), so nothing is counted twice.

use std::collections::{HashMap, VecDeque};

use wardgate_contract::{keep_fingerprints, CopyConflict, Fingerprint, Keep, StreamKey};

/// How a record compares with what the window remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not in the window: new, or a copy older than the window (the ledger
    /// tells which).
    First,
    /// A copy of a record in the window; `Keep::Second` when this copy is
    /// the corrected one of an unsynced record (it replaces the first).
    Copy(Keep),
    /// A copy with other content: the contract is broken; the first is kept.
    Conflict(CopyConflict),
}

/// The last digests of one stream.
#[derive(Debug, Clone)]
pub struct Window {
    recent: VecDeque<(u64, Fingerprint)>,
    size: usize,
    used: u64,
    /// The highest number ever held (it may have left the window).
    top: Option<u64>,
}

impl Window {
    /// Judges record `seq` with digest `fp` and remembers it.
    pub fn observe(&mut self, seq: u64, fp: Fingerprint) -> Seen {
        // Above every number held (a live record in order): not a copy, no
        // search. Else newest first: copies usually come soon after the first.
        if self.top.is_none_or(|t| seq > t) {
            self.top = Some(seq);
        } else if let Some(slot) = self.recent.iter_mut().rev().find(|(s, _)| *s == seq) {
            return match keep_fingerprints(seq, &slot.1, &fp) {
                Ok(Keep::Second) => {
                    slot.1 = fp;
                    Seen::Copy(Keep::Second)
                }
                Ok(k) => Seen::Copy(k),
                Err(c) => Seen::Conflict(c),
            };
        }
        if self.recent.len() >= self.size {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, fp));
        Seen::First
    }
}

/// One stream's window as a store saves it ([`Dedup::saved`],
/// [`Dedup::restore_window`]): the digests by arrival and the top number.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedWindow {
    pub recent: Vec<(u64, Fingerprint)>,
    pub top: Option<u64>,
}

/// The windows of every stream.
#[derive(Debug, Clone)]
pub struct Dedup {
    streams: HashMap<StreamKey, Window>,
    window: usize,
    max_streams: usize,
    tick: u64,
}

impl Dedup {
    /// `window` digests per stream, at most `max_streams` streams.
    pub fn new(window: usize, max_streams: usize) -> Self {
        Dedup {
            streams: HashMap::new(),
            window: window.max(1),
            max_streams: max_streams.max(1),
            tick: 0,
        }
    }

    /// Judges a record of `stream` and remembers it.
    pub fn observe(&mut self, stream: &StreamKey, seq: u64, fp: Fingerprint) -> Seen {
        self.window(stream).observe(seq, fp)
    }

    /// The window of `stream` (look it up once for a message's records).
    pub fn window(&mut self, stream: &StreamKey) -> &mut Window {
        self.tick += 1;
        if !self.streams.contains_key(stream) {
            if self.streams.len() >= self.max_streams {
                self.forget_least_used();
            }
            let w = Window {
                recent: VecDeque::new(),
                size: self.window,
                used: 0,
                top: None,
            };
            self.streams.insert(stream.clone(), w);
        }
        let w = self
            .streams
            .get_mut(stream)
            .expect("the window was inserted just above");
        w.used = self.tick;
        w
    }

    /// The window of `stream` to save, if it has one.
    pub fn saved(&self, stream: &StreamKey) -> Option<SavedWindow> {
        self.streams.get(stream).map(|w| SavedWindow {
            recent: w.recent.iter().copied().collect(),
            top: w.top,
        })
    }

    /// Puts back a saved window (its newest `window` digests).
    pub fn restore_window(&mut self, stream: &StreamKey, saved: SavedWindow) {
        let w = self.window(stream);
        let skip = saved.recent.len().saturating_sub(w.size);
        w.recent = saved.recent.into_iter().skip(skip).collect();
        w.top = saved.top;
    }

    /// How many streams are remembered.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    fn forget_least_used(&mut self) {
        let mut used: Vec<u64> = self.streams.values().map(|w| w.used).collect();
        let cut = (used.len() / 8).max(1);
        let (_, nth, _) = used.select_nth_unstable(cut - 1);
        let limit = *nth;
        self.streams.retain(|_, w| w.used > limit);
    }
}

impl Default for Dedup {
    /// 256 records per stream (more than two full backlog batches of
    /// `mqtt.max_batch` = 100), 100,000 streams: at most about 800 MB in
    /// the worst case, a few MB for a province's usual traffic.
    fn default() -> Self {
        Dedup::new(256, 100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardgate_contract::{ClockState, Epoch, Kind};

    fn fp(body: u64, ts: i64, clock: ClockState) -> Fingerprint {
        Fingerprint { body, ts, clock }
    }

    fn key(device: &str) -> StreamKey {
        StreamKey {
            site: "xa-a".into(),
            device: device.into(),
            kind: Kind::Sample,
            epoch: Epoch(1),
        }
    }

    #[test]
    fn judges_copies_in_the_window() {
        use ClockState::*;
        let mut d = Dedup::new(4, 10);
        let k = key("ups1");
        // (seq, digest, verdict)
        let cases = [
            (1, fp(7, 10, Synced), Seen::First),
            (1, fp(7, 10, Synced), Seen::Copy(Keep::Either)),
            (
                1,
                fp(8, 10, Synced),
                Seen::Conflict(CopyConflict { seq: 1 }),
            ),
            (2, fp(9, 10, Unsynced), Seen::First),
            (2, fp(9, 99, Corrected), Seen::Copy(Keep::Second)),
            // The corrected copy replaced the first: the unsynced one again
            // is the older copy, the corrected one again a plain copy.
            (2, fp(9, 10, Unsynced), Seen::Copy(Keep::First)),
            (2, fp(9, 99, Corrected), Seen::Copy(Keep::Either)),
            (3, fp(1, 1, Synced), Seen::First),
            (4, fp(1, 1, Synced), Seen::First),
            (5, fp(1, 1, Synced), Seen::First),
            // 1 left the window (4 records): not judged here.
            (1, fp(8, 10, Synced), Seen::First),
        ];
        for (seq, f, want) in cases {
            assert_eq!(d.observe(&k, seq, f), want, "seq {seq} {f:?}");
        }
        // Another stream has its own window.
        assert_eq!(d.observe(&key("ups2"), 3, fp(2, 1, Synced)), Seen::First);
    }

    #[test]
    fn forgets_the_least_used_streams() {
        let mut d = Dedup::new(4, 16);
        for i in 0..100 {
            d.observe(&key(&format!("d{i}")), 0, fp(0, 0, ClockState::Synced));
            assert!(d.streams() <= 16);
        }
        // The newest is still remembered.
        assert_eq!(
            d.observe(&key("d99"), 0, fp(0, 0, ClockState::Synced)),
            Seen::Copy(Keep::Either)
        );
    }
}
