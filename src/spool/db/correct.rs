//! Correcting the time of stored records once the clock syncs
//! (`super::super::retime`), one chunk of rows per commit round.

use super::*;

impl Db {
    /// Corrects the time of up to `limit` rows taken unsynchronised in
    /// `boot`, with `id > after` (in id order): each row's checksum is
    /// checked first (a damaged row is left for the backlog reader to
    /// report, never blessed with a new checksum), its body's leading
    /// `ts` and `clock` are rewritten ([`crate::spool::retime::retime`]: `ts =
    /// boottime + base`, `clock` `corrected`), and its checksum is made
    /// anew; all in one durable transaction.
    pub(crate) fn correct_boot(
        &mut self,
        boot: &str,
        base: i64,
        after: i64,
        limit: usize,
    ) -> rusqlite::Result<DiskCorrection> {
        let tx = self.conn.transaction()?;
        let mut out = DiskCorrection {
            last_id: after,
            ..Default::default()
        };
        let mut fixes: Vec<(i64, i64, String, u32)> = Vec::new();
        {
            let mut st = tx.prepare_cached(
                "SELECT id, kind, device, epoch, seq, body, crc, boot, boottime FROM rec WHERE id > ?1 AND boot = ?2 AND synced = 0 ORDER BY id LIMIT ?3",
            )?;
            let mut rows = st.query(params![after, boot, limit as i64])?;
            while let Some(r) = rows.next()? {
                out.seen += 1;
                let id: i64 = r.get(0)?;
                out.last_id = id;
                let kind = match r.get_ref(1)? {
                    rusqlite::types::ValueRef::Integer(k) => Kind::from_i64(k),
                    _ => None,
                };
                let device = match r.get_ref(2)? {
                    rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t).ok(),
                    _ => None,
                };
                let epoch = match r.get_ref(3)? {
                    rusqlite::types::ValueRef::Integer(e) => Some(e as u64),
                    _ => None,
                };
                let seq = match r.get_ref(4)? {
                    rusqlite::types::ValueRef::Integer(q) => q,
                    _ => -1,
                };
                let body = match r.get_ref(5)? {
                    rusqlite::types::ValueRef::Text(t) => Some(t),
                    _ => None,
                };
                let crc = match r.get_ref(6)? {
                    rusqlite::types::ValueRef::Integer(c) => Some(c),
                    _ => None,
                };
                let (Some(kind), Some(device), Some(epoch), Taken::Some(row_boot, boottime)) =
                    (kind, device, epoch, taken_columns(r, 7)?)
                else {
                    out.damaged += 1;
                    continue;
                };
                let key = StreamKey {
                    kind,
                    device: device.to_owned(),
                    epoch,
                };
                let Ok(body) =
                    check_row_at(&key, seq, body, crc, Some((row_boot.as_str(), boottime)))
                else {
                    out.damaged += 1;
                    continue;
                };
                let ts = crate::spool::retime::true_ts(boottime, base);
                let Some(new_body) = crate::spool::retime::retime(&body, ts) else {
                    out.unrewritable += 1;
                    continue;
                };
                let crc = row_checksum_at(
                    kind,
                    epoch,
                    device,
                    seq as u64,
                    &new_body,
                    Some((row_boot.as_str(), boottime)),
                );
                fixes.push((id, ts, new_body, crc));
            }
        }
        {
            let mut st = tx.prepare_cached(
                "UPDATE rec SET ts = ?2, synced = 1, body = ?3, crc = ?4 WHERE id = ?1",
            )?;
            for (id, ts, body, crc) in &fixes {
                st.execute(params![id, ts, body, *crc as i64])?;
            }
        }
        tx.commit()?;
        out.corrected = fixes.len() as u64;
        Ok(out)
    }
}
