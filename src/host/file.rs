//! The one reader of every file a config names: passwords, tokens, keys,
//! certificates, and the kernel files the Pi health and 1-Wire sources
//! read. Each is a regular file (a device, a FIFO or a directory is
//! refused: `/dev/zero` as a password must not fill the Pi's memory), read
//! up to a cap that fits what it is, and a secret is never reached through
//! a symbolic link (a link planted where a secret is expected could point
//! the service at another file it can read).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a file is, which sets how it is opened and how much of it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A password, token or private key: no symbolic link, at most
    /// [`MAX_SECRET_BYTES`].
    Secret,
    /// A certificate or CA bundle (public): links followed (CA files are
    /// often links into /etc/ssl/certs), at most [`MAX_PEM_BYTES`].
    Certificate,
    /// A kernel attribute under /sys or /proc (thermal zone, 1-Wire probe,
    /// firmware flags): links followed (/sys is made of them), at most
    /// [`MAX_KERNEL_BYTES`].
    Kernel,
}

/// A password, a token, a private key: a few KiB at most.
pub(crate) const MAX_SECRET_BYTES: u64 = 64 << 10;
/// A CA bundle (Debian's whole ca-certificates.crt is about 220 KiB).
pub(crate) const MAX_PEM_BYTES: u64 = 1 << 20;
/// A sysfs attribute is at most a page.
pub(crate) const MAX_KERNEL_BYTES: u64 = 4096;

impl FileKind {
    pub(crate) fn max_bytes(self) -> u64 {
        match self {
            FileKind::Secret => MAX_SECRET_BYTES,
            FileKind::Certificate => MAX_PEM_BYTES,
            FileKind::Kernel => MAX_KERNEL_BYTES,
        }
    }

    fn follows_links(self) -> bool {
        self != FileKind::Secret
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It cannot be opened (missing, no permission): the caller's fault
    /// path (a device fault, a sink that cannot connect), with the path.
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A secret's path is a symbolic link: refused; the technician puts the
    /// file itself there.
    #[error("{path}: is a symbolic link; a secret is read only from the file itself (links are not followed)")]
    Link { path: String },
    /// Not a regular file (a device such as /dev/zero, a FIFO, a
    /// directory): refused before a byte is read.
    #[error("{path}: is {what}, not a regular file")]
    NotRegular { path: String, what: &'static str },
    /// Larger than its kind allows: refused (not a password, key or kernel
    /// attribute).
    #[error("{path}: larger than {max} bytes: not {kind}")]
    TooBig {
        path: String,
        max: u64,
        kind: &'static str,
    },
}

/// What a file of this type is, in words.
fn type_words(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

fn kind_words(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Secret => "a password, token or key",
        FileKind::Certificate => "a certificate file",
        FileKind::Kernel => "a kernel attribute",
    }
}

/// Reads the file at `path` as `kind` says.
pub(crate) fn read(path: &Path, kind: FileKind) -> Result<Vec<u8>, FileError> {
    let shown = || path.display().to_string();
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !kind.follows_links() {
        flags |= libc::O_NOFOLLOW;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) if !kind.follows_links() => FileError::Link { path: shown() },
            _ => FileError::Open {
                path: shown(),
                source: e,
            },
        })?;
    let meta = f.metadata().map_err(|e| FileError::Open {
        path: shown(),
        source: e,
    })?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: shown(),
            what: type_words(meta.file_type()),
        });
    }
    let max = kind.max_bytes();
    let too_big = || FileError::TooBig {
        path: shown(),
        max,
        kind: kind_words(kind),
    };
    // sysfs and procfs report sizes that are not the content's (4096, 0):
    // only the bytes read count.
    if kind != FileKind::Kernel && meta.len() > max {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    (&f).take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::Open {
            path: shown(),
            source: e,
        })?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Reads a one-line secret (a password or token file): the text without
/// its trailing line break.
pub(crate) fn read_secret_line(path: &Path) -> Result<String, FileError> {
    let bytes = read(path, FileKind::Secret)?;
    Ok(String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\r', '\n'])
        .to_owned())
}

/// Reads a kernel attribute as text.
pub(crate) fn read_kernel_text(path: &Path) -> Result<String, FileError> {
    read(path, FileKind::Kernel).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Whether other users of the box may read the file (mode `o+r`); false
/// when it is private, absent or cannot be looked at.
pub(crate) fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// What is wrong with the path a config names, seen before the daemon
/// starts (`wardgate check --config-only` and `run`): a path that exists
/// but is not a regular file, or a secret that is a link. A file that does
/// not exist yet is not a config error here (provisioning may bring it;
/// the component that reads it says so at run time).
pub(crate) fn config_problem(path: &Path, kind: FileKind) -> Option<String> {
    let meta = if kind.follows_links() {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    let meta = meta.ok()?;
    let t = meta.file_type();
    if t.is_symlink() {
        return Some(format!(
            "{} is a symbolic link; a secret is read only from the file itself",
            path.display()
        ));
    }
    if !t.is_file() {
        return Some(format!(
            "{} is {}, not a regular file",
            path.display(),
            type_words(t)
        ));
    }
    if kind != FileKind::Kernel && meta.len() > kind.max_bytes() {
        return Some(format!(
            "{} is larger than {} bytes: not {}",
            path.display(),
            kind.max_bytes(),
            kind_words(kind)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused_before_reading() {
        for (p, what) in [
            ("/dev/zero", "a character device"),
            ("/dev/urandom", "a character device"),
            ("/", "a directory"),
        ] {
            for kind in [FileKind::Secret, FileKind::Certificate, FileKind::Kernel] {
                match read(Path::new(p), kind) {
                    Err(FileError::NotRegular { what: w, .. }) => assert_eq!(w, what, "{p}"),
                    other => panic!("{p} as {kind:?}: {other:?}"),
                }
                let why = config_problem(Path::new(p), kind).expect("a problem");
                assert!(why.contains(what), "{why}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // O_NONBLOCK: opening a FIFO with no writer does not hang.
        assert!(matches!(
            read(&fifo, FileKind::Secret),
            Err(FileError::NotRegular { what: "a FIFO", .. })
        ));
    }

    #[test]
    fn a_secret_is_never_read_through_a_link_and_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, "s3cret\r\n").unwrap();
        assert_eq!(read_secret_line(&real).unwrap(), "s3cret");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            read(&link, FileKind::Secret),
            Err(FileError::Link { .. })
        ));
        assert!(config_problem(&link, FileKind::Secret)
            .unwrap()
            .contains("symbolic link"));
        // A certificate may be a link (CA bundles are).
        assert_eq!(read(&link, FileKind::Certificate).unwrap(), b"s3cret\r\n");
        assert_eq!(config_problem(&link, FileKind::Certificate), None);

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            read(&big, FileKind::Secret),
            Err(FileError::TooBig { .. })
        ));
        assert!(config_problem(&big, FileKind::Secret).is_some());
        // Missing: not a config problem (provisioning may bring it), an
        // open error when read.
        let none = dir.path().join("none");
        assert_eq!(config_problem(&none, FileKind::Secret), None);
        assert!(matches!(
            read(&none, FileKind::Secret),
            Err(FileError::Open { .. })
        ));
    }

    #[test]
    fn kernel_files_are_read_by_content_not_by_reported_size() {
        // procfs reports 0 bytes; the content is read all the same.
        let t = read_kernel_text(Path::new("/proc/sys/kernel/random/boot_id")).unwrap();
        assert_eq!(t.trim().len(), 36);
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("w1_slave");
        std::fs::write(&big, vec![b'7'; MAX_KERNEL_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            read(&big, FileKind::Kernel),
            Err(FileError::TooBig { .. })
        ));
    }
}
