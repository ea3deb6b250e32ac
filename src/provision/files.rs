//! Files on the card and in /etc/wardgate: reading a card file without
//! trusting it (no links, regular files only, size-capped before reading),
//! writing installed files atomically under random exclusive temp names,
//! and the UTC time text of the result file. No decisions: provision and
//! install (mod.rs) decide what to read and write.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What looking at one file on the card found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CardFile {
    Absent,
    Read(Vec<u8>),
    /// A symbolic link, directory, FIFO, device or socket: never read.
    NotAFile(&'static str),
    /// A regular file over the cap (given): refused from its size, not read.
    TooBig(u64),
}

/// Reads a file from the card, safely: the last path component is not
/// followed if it is a link (O_NOFOLLOW), a FIFO cannot block the open
/// (O_NONBLOCK), anything but a regular file is refused, and the size is
/// checked on the open file before reading, then enforced while reading (a
/// file growing meanwhile is cut at `max + 1` bytes and refused).
pub(super) fn look(path: &Path, max: u64) -> std::io::Result<CardFile> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CardFile::Absent),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(CardFile::NotAFile(
                "is a symbolic link (links are not followed)",
            ))
        }
        // A socket.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Ok(CardFile::NotAFile("is not a regular file"))
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if meta.is_dir() {
        return Ok(CardFile::NotAFile("is a directory, not a regular file"));
    }
    if !meta.is_file() {
        return Ok(CardFile::NotAFile(
            "is not a regular file (a FIFO or a device)",
        ));
    }
    if meta.len() > max {
        return Ok(CardFile::TooBig(max));
    }
    // meta.len() <= max, a few MiB at most.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&f).take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(CardFile::TooBig(max));
    }
    Ok(CardFile::Read(bytes))
}

pub(super) fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// Writes `bytes` to `path` so that a power cut leaves the old file or the
/// new one, never a torn one: temp file, fsync, rename, fsync the directory.
/// The temp file has a random name and is created exclusively (O_EXCL,
/// O_NOFOLLOW): nothing planted in the directory is followed or reused.
pub(super) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    gid: Option<u32>,
) -> std::io::Result<()> {
    write_atomic_with(path, bytes, mode, gid, true)
}

/// As [`write_atomic`]; with `strict_mode = false` a refused chmod is
/// ignored (FAT has no permission bits and may refuse the change).
pub(super) fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    gid: Option<u32>,
    strict_mode: bool,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut attempts = 0;
    let (tmp, mut f) = loop {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                attempts += 1
            }
            Err(e) => return Err(e),
        }
    };
    let written = (|| {
        f.write_all(bytes)?;
        match f.set_permissions(std::fs::Permissions::from_mode(mode)) {
            Err(e) if strict_mode => return Err(e),
            _ => {}
        }
        if let Some(g) = gid {
            std::os::unix::fs::fchown(&f, None, Some(g))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

/// The `wardgate` group's id, if the package created it.
pub(super) fn wardgate_gid() -> Option<u32> {
    let name = std::ffi::CString::new("wardgate").ok()?;
    // SAFETY: getgrnam returns a pointer to static storage or null; we only
    // read gr_gid before any other call could overwrite it.
    let g = unsafe { libc::getgrnam(name.as_ptr()) };
    if g.is_null() {
        None
    } else {
        Some(unsafe { (*g).gr_gid })
    }
}

/// UTC now as (year, month, day, hour, minute, second).
pub(super) fn utc_now() -> (i64, i64, i64, i64, i64, i64) {
    let secs = crate::model::now_ms() / 1000;
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

pub(super) fn now_text() -> String {
    // UTC, as the Pi's clock may not be synced yet at first boot.
    let (y, m, d, hh, mm, _) = utc_now();
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
}

/// Days since 1970-01-01 to a date (H. Hinnant's algorithm).
pub(super) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}
