//! What the process holds in memory while a ward idles (docs/packaging.md,
//! "Idle cost"): malloc's arenas bounded to one, and, once start-up is
//! over, the pages of the program file that only start-up used handed back.
//!
//! Most of an idle gateway's resident set is not its data (about 1 MiB)
//! but the pages of its own program file: start-up runs the TOML parser,
//! the config checks, the spool's schema and recovery, the TLS setup, and
//! the kernel maps each page it runs (and its neighbours, "fault-around")
//! into the process, where they stay mapped. [`trim`] unmaps them
//! (`MADV_DONTNEED`): they stay in the kernel's page cache like any file
//! read once, free to be reclaimed when memory is needed, and the pages
//! the running gateway still uses are mapped again on their next use (a
//! minor fault, no read from the card while the page is cached).
//!
//! Only read-only mappings of the program file that hold no private page
//! are touched: code and constants, never data, never the relocated
//! read-only data (the loader wrote it: its pages are private copies, and
//! unmapping them would bring back the file's unrelocated bytes), never a
//! shared library. `MADV_PAGEOUT` would free the pages outright, but the
//! kernel pages out a file's pages only for a process that could write
//! the file, and the service's user cannot write /usr/bin/wardgate.

use std::path::Path;

/// Bounds glibc's malloc to one arena. By default every thread that
/// allocates (the runtime's and the blocking threads the spool's commits
/// run on) may get an arena of its own, each keeping freed memory for
/// itself; a gateway that allocates little loses nothing by sharing one.
pub(crate) fn bound_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc tunable; called once, early.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// One mapping of `/proc/self/smaps` this module cares about.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub start: usize,
    pub end: usize,
}

/// The mappings of the file `exe` in the text of `/proc/self/smaps` that
/// can be unmapped without changing what the process reads: read-only
/// (`r-xp`, `r--p`), private, and with no private page (`Anonymous: 0
/// kB`, which the relocated read-only data never has). A mapping whose
/// lines do not parse is left out: nothing here is worth failing for.
pub(crate) fn program_mappings(smaps: &str, exe: &Path) -> Vec<Mapping> {
    let exe = exe.to_string_lossy();
    let mut out = Vec::new();
    // The mapping being read, while it still qualifies.
    let mut cur: Option<Mapping> = None;
    let mut anon_seen = false;
    let mut finish = |cur: &mut Option<Mapping>, anon_seen: bool| {
        if let (Some(m), true) = (cur.take(), anon_seen) {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            finish(&mut cur, anon_seen);
            anon_seen = false;
            let perms = f.next().unwrap_or("");
            // offset, device, inode, then the path (which may hold spaces).
            let path = line
                .splitn(6, char::is_whitespace)
                .nth(5)
                .map(str::trim_start);
            let readonly = perms.starts_with('r') && !perms.contains('w') && perms.ends_with('p');
            cur = match (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                (Ok(start), Ok(end)) if readonly && path == Some(&*exe) => {
                    Some(Mapping { start, end })
                }
                _ => None,
            };
        } else if first == "Anonymous:" && cur.is_some() {
            // Any private page, or a line that does not parse: left alone.
            if f.next() == Some("0") {
                anon_seen = true;
            } else {
                cur = None;
            }
        }
    }
    finish(&mut cur, anon_seen);
    out
}

/// Unmaps the program file's pages that [`program_mappings`] allows and
/// returns free heap to the system. Returns the bytes of mappings advised;
/// errors are logged and otherwise ignored (a sandbox without /proc: the
/// gateway only keeps more pages).
pub(crate) fn trim() -> usize {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory malloc holds free.
    unsafe {
        libc::malloc_trim(0);
    }
    let (Ok(maps), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/smaps"),
        std::fs::read_link("/proc/self/exe"),
    ) else {
        tracing::debug!("cannot read /proc/self: program pages kept");
        return 0;
    };
    let mut advised = 0;
    for m in program_mappings(&maps, &exe) {
        let len = m.end - m.start;
        // SAFETY: the range is a whole read-only private mapping of the
        // program file with no private page (checked just above, and the
        // loader writes none after start): unmapping it changes nothing
        // the process reads, the file's pages are mapped again on use.
        let r = unsafe { libc::madvise(m.start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if r == 0 {
            advised += len;
        } else {
            let e = std::io::Error::last_os_error();
            tracing::debug!(error = %e, "madvise(MADV_DONTNEED) refused: program pages kept");
            break;
        }
    }
    advised
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_programs_clean_read_only_mappings_are_taken() {
        let smaps = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 123 /usr/bin/wardgate
Rss:                 400 kB
Anonymous:             0 kB
55d0c0100000-55d0c0800000 r-xp 00100000 08:01 123 /usr/bin/wardgate
Rss:                4000 kB
Anonymous:             0 kB
55d0c0800000-55d0c0900000 r--p 00800000 08:01 123 /usr/bin/wardgate
Rss:                 300 kB
Anonymous:           300 kB
55d0c0900000-55d0c0910000 rw-p 00900000 08:01 123 /usr/bin/wardgate
Anonymous:             0 kB
55d0c0910000-55d0c0920000 r--s 00910000 08:01 123 /usr/bin/wardgate
Anonymous:             0 kB
55d0c0920000-55d0c0930000 r--p 00920000 08:01 123 /usr/bin/wardgate
Anonymous:          what kB
55d0c0930000-55d0c0940000 r--p 00930000 08:01 123 /usr/bin/wardgate
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
Anonymous:           100 kB
7f0000000000-7f0000200000 r-xp 00028000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000300000-7f0000400000 r-xp 00000000 08:01 789 /usr/bin/wardgate-other
Anonymous:             0 kB
zz-yy r-xp 0 0 0 /usr/bin/wardgate
Anonymous:             0 kB
";
        let got = program_mappings(smaps, Path::new("/usr/bin/wardgate"));
        // The relocated data (private pages), the writable data, a shared
        // mapping, and mappings whose Anonymous line is bad or missing are
        // left alone.
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x55d0c0000000,
                    end: 0x55d0c0100000
                },
                Mapping {
                    start: 0x55d0c0100000,
                    end: 0x55d0c0800000
                },
            ]
        );
        assert!(program_mappings(smaps, Path::new("/usr/bin/other")).is_empty());
    }

    /// The test binary's own pages are unmapped: the resident set falls,
    /// and the code (and the relocated data it reads) still works.
    #[test]
    fn trim_unmaps_the_programs_pages_and_it_still_runs() {
        fn file_resident_kib() -> u64 {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            s.lines()
                .find(|l| l.starts_with("RssFile:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap()
        }
        let before = file_resident_kib();
        let advised = trim();
        assert!(advised > 0, "nothing advised");
        let after = file_resident_kib();
        assert!(after < before, "RssFile {before} KiB -> {after} KiB");
        // Code unmapped runs again, and reads relocated data (a vtable,
        // formatting machinery) correctly.
        assert_eq!(program_mappings("", Path::new("/x")), vec![]);
        let shown: Box<dyn std::fmt::Display> = Box::new(42u32);
        assert_eq!(format!("{shown} {:?}", Path::new("/a")), "42 \"/a\"");
    }
}
