//! Spool rows as read back from SQLite after whatever the SD card did to
//! them: `check_row` never panics, never returns Ok for a body that is not
//! valid UTF-8 (or a bad device id, a negative seq, a wrong checksum, a
//! checksum-less body that is not JSON), returns the body unchanged, takes
//! every intact row, and catches any single flipped bit.
#![no_main]
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use wardgate::model::Kind;
use wardgate::spool::db::{check_row, StreamKey};
use wardgate::spool::{row_checksum, valid_device_id};

fn run(u: &mut Unstructured) -> Result<()> {
    let kind = if u.arbitrary()? { Kind::Sample } else { Kind::Event };
    let device: String = if u.arbitrary()? {
        u.choose(&["ups1", "pi", "router-1", "a_b"])?.to_string()
    } else {
        u.arbitrary()?
    };
    let key = StreamKey {
        kind,
        device,
        epoch: u.arbitrary()?,
    };
    let seq: i64 = if u.arbitrary()? {
        u.int_in_range(0..=1_000_000)?
    } else {
        u.arbitrary()?
    };
    let body: Option<Vec<u8>> = if u.int_in_range(0..=9u8)? == 0 {
        None
    } else {
        Some(u.arbitrary()?)
    };
    let good_crc = |body: &[u8]| -> Option<i64> {
        let text = std::str::from_utf8(body).ok()?;
        (seq >= 0).then(|| row_checksum(key.kind, key.epoch, &key.device, seq as u64, text) as i64)
    };
    let crc: Option<i64> = match u.int_in_range(0..=3u8)? {
        0 => None,
        1 => u.arbitrary()?,
        _ => body.as_deref().and_then(good_crc),
    };

    let r = check_row(&key, seq, body.as_deref(), crc);
    let text = body.as_deref().and_then(|b| std::str::from_utf8(b).ok());
    match &r {
        Ok(s) => {
            assert_eq!(Some(s.as_str()), text, "Ok for a body that is not its UTF-8 text");
            assert!(valid_device_id(&key.device) && seq >= 0);
            match crc {
                Some(c) => assert_eq!(Some(c), body.as_deref().and_then(good_crc)),
                None => assert!(serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()),
            }
        }
        Err(_) => {
            // An intact row with its checksum is always taken.
            assert!(
                !(valid_device_id(&key.device)
                    && seq >= 0
                    && text.is_some()
                    && crc.is_some()
                    && crc == body.as_deref().and_then(good_crc)),
                "an intact row refused"
            );
        }
    }
    // One bit flipped in the body of an intact row: caught.
    if let (Ok(_), Some(c), Some(b)) = (&r, crc, &body) {
        if !b.is_empty() {
            let bit: usize = u.int_in_range(0..=b.len() * 8 - 1)?;
            let mut b2 = b.clone();
            b2[bit / 8] ^= 1 << (bit % 8);
            assert!(check_row(&key, seq, Some(&b2), Some(c)).is_err(), "a flipped bit passed");
        }
        let bit: u32 = u.int_in_range(0..=62)?;
        let seq2 = seq ^ (1i64 << bit);
        assert!(check_row(&key, seq2, Some(b), Some(c)).is_err(), "a flipped seq bit passed");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
