//! The checks of a stored record, pure (fuzzed: `fuzz/fuzz_targets/spool_row.rs`):
//! its checksum, its device id, its body.

use super::*;

/// The checksum of a stored record: it covers everything the record is sent
/// with (kind, epoch, seq, device and body), so a bit flip in any of them is
/// caught when the row is read back.
pub fn row_checksum(kind: Kind, epoch: u64, device: &str, seq: u64, body: &str) -> u32 {
    row_checksum_at(kind, epoch, device, seq, body, None)
}

/// The checksum of a row that also keeps when it was taken (`boot`,
/// `boottime`): those decide whether and by how much its `ts` is corrected
/// once the clock syncs, so they are covered too (after the same bytes as
/// [`row_checksum`], a zero byte, the boot id, a zero byte and the
/// boottime, big-endian). A row without them (an older version's) keeps
/// the plain rule, so rows written before the upgrade still check.
pub fn row_checksum_at(
    kind: Kind,
    epoch: u64,
    device: &str,
    seq: u64,
    body: &str,
    taken: Option<(&str, i64)>,
) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind.as_i64() as u8]);
    h.update(&epoch.to_be_bytes());
    h.update(&seq.to_be_bytes());
    h.update(device.as_bytes());
    h.update(&[0]);
    h.update(body.as_bytes());
    if let Some((boot, boottime)) = taken {
        h.update(&[0]);
        h.update(boot.as_bytes());
        h.update(&[0]);
        h.update(&boottime.to_be_bytes());
    }
    h.finalize()
}

/// Whether `id` can be a device id in a topic (the contract's pattern).
pub fn valid_device_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// Checks a row read back from disk: the stream's device id must be one a
/// topic can carry, the sequence number non-negative, the body text, and
/// the checksum right (a row of the first version, without one, must at
/// least be JSON). Returns the body, or why the row is damaged. Pure, so it
/// is fuzzed (`fuzz/fuzz_targets/spool_row.rs`).
pub fn check_row(
    key: &StreamKey,
    seq: i64,
    body: Option<&[u8]>,
    crc: Option<i64>,
) -> Result<String, &'static str> {
    check_row_at(key, seq, body, crc, None)
}

/// [`check_row`] for a row that keeps when it was taken (`taken`: its boot
/// and boottime columns, checked by [`row_checksum_at`]).
pub fn check_row_at(
    key: &StreamKey,
    seq: i64,
    body: Option<&[u8]>,
    crc: Option<i64>,
    taken: Option<(&str, i64)>,
) -> Result<String, &'static str> {
    if !valid_device_id(&key.device) {
        return Err("device id not valid");
    }
    if seq < 0 {
        return Err("negative sequence number");
    }
    let body = body
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or("body is not text")?;
    match crc {
        Some(c) => {
            if row_checksum_at(key.kind, key.epoch, &key.device, seq as u64, body, taken) as i64
                != c
            {
                return Err("checksum mismatch");
            }
        }
        None => {
            if taken.is_some() {
                // Every version that keeps the boot also keeps a checksum.
                return Err("checksum missing");
            }
            if serde_json::from_str::<serde::de::IgnoredAny>(body).is_err() {
                return Err("body is not JSON");
            }
        }
    }
    Ok(body.to_owned())
}
