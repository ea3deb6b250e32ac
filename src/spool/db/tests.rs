//! Unit tests of the SQLite store: rows read back are checked.

use super::*;

#[test]
fn rows_read_back_are_checked() {
    let key = |device: &str| StreamKey {
        kind: Kind::Sample,
        device: device.into(),
        epoch: 9,
    };
    let body = r#"{"seq":3,"ts":1,"clock":"synced","values":{}}"#;
    let crc = row_checksum(Kind::Sample, 9, "ups1", 3, body) as i64;
    let flipped = body.replace('3', "2");
    type Case<'a> = (
        &'a str,
        i64,
        Option<&'a [u8]>,
        Option<i64>,
        Result<(), &'a str>,
    );
    let table: &[Case] = &[
        ("ups1", 3, Some(body.as_bytes()), Some(crc), Ok(())),
        // One flipped bit anywhere it covers.
        (
            "ups1",
            3,
            Some(flipped.as_bytes()),
            Some(crc),
            Err("checksum mismatch"),
        ),
        (
            "ups1",
            4,
            Some(body.as_bytes()),
            Some(crc),
            Err("checksum mismatch"),
        ),
        (
            "ups2",
            3,
            Some(body.as_bytes()),
            Some(crc),
            Err("checksum mismatch"),
        ),
        // A device id no topic can carry, whatever the checksum says.
        (
            "up#1",
            3,
            Some(body.as_bytes()),
            Some(crc),
            Err("device id not valid"),
        ),
        (
            "a+b",
            3,
            Some(body.as_bytes()),
            Some(crc),
            Err("device id not valid"),
        ),
        (
            "",
            3,
            Some(body.as_bytes()),
            Some(crc),
            Err("device id not valid"),
        ),
        (
            "ups1",
            -1,
            Some(body.as_bytes()),
            Some(crc),
            Err("negative sequence number"),
        ),
        ("ups1", 3, None, Some(crc), Err("body is not text")),
        (
            "ups1",
            3,
            Some(b"\xff\xfe"),
            Some(crc),
            Err("body is not text"),
        ),
        // First-version rows have no checksum: they must parse.
        ("ups1", 3, Some(body.as_bytes()), None, Ok(())),
        (
            "ups1",
            3,
            Some(b"{\"seq\":3,"),
            None,
            Err("body is not JSON"),
        ),
    ];
    for (dev, seq, b, c, want) in table {
        let got = check_row(&key(dev), *seq, *b, *c).map(|_| ());
        assert_eq!(
            got,
            *want,
            "{dev} {seq} {:?}",
            b.map(String::from_utf8_lossy)
        );
    }
    assert_eq!(
        check_row(&key("ups1"), 3, Some(body.as_bytes()), Some(crc)).unwrap(),
        body
    );
}
