//! The frame every test runs in: its deadlines ([`WAIT`], [`STOP_BUDGET`]),
//! polling for a condition, its own site id, saying what it could not check
//! ([`skip`]), and signals to the processes it started.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// How long a test waits for something that should happen. Wall-clock
/// bounds in these tests follow two rules, so that they hold on a loaded
/// machine (`--test-threads 4` on 2 cores):
/// - wait for the observable condition (a message, a log line, a counter, a
///   file), never sleep and assume it has happened by then; the deadline is
///   a generous one ([`WAIT`]), not the expected duration;
/// - a bound that checks a documented promise is that promise, named where
///   it is documented (e.g. [`STOP_BUDGET`]), plus at most 2 s for the
///   machine's load where the promise is a latency.
///
/// A fixed sleep is used only to let time pass on purpose (an outage of so
/// many seconds, readings piling up), never to wait for a result.
pub const WAIT: Duration = Duration::from_secs(60);

/// README ("What it promises", "Faults and what they do"): on SIGTERM the
/// gateway exits, even with the broker hung or the card failing, within
/// 10 s. A test that sends SIGTERM and waits for the exit uses this bound:
/// the promise itself, not a guess.
pub const STOP_BUDGET: Duration = Duration::from_secs(10);

static SITES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

thread_local! {
    static SITE: String = format!(
        "xa-t{}-{}",
        std::process::id(),
        SITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
}

/// This test's own site id (unique per test thread and process), used by
/// [`config_text`] and [`Subscriber::start`], so that the streams of two
/// tests never mix even if one reaches the other's broker. Call it from the
/// test's own thread (the body of a `#[tokio::test]` runs there), not from
/// a spawned task.
pub fn test_site() -> String {
    SITE.with(|s| s.clone())
}

/// Says that `test` (its path, e.g. `install::both_units_are_sandboxed`)
/// did not check something because this machine lacks a tool or a
/// capability (`why`): prints `SKIPPED: <test>: <why>` and appends the same
/// line to `target/skipped.txt` in the repository, which CI's closing line
/// reports (a test's output is only shown when it fails, so the file is
/// what makes a skip seen). Every early return for a missing tool goes
/// through here, so a green run with a skipped check cannot pass for a full
/// one. Fails the test if the line cannot be written.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("SKIPPED: {test}: {why}\n");
    print!("{line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).expect("create target/ for skipped.txt");
    let path = dir.join("skipped.txt");
    // O_APPEND and one write per line: tests running in parallel add
    // their lines without overwriting each other's.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Whether the tests run as root (files only root may write, chroots).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The path of the test running on this thread (libtest names a test's
/// thread after it; the body of a `#[tokio::test]` runs there), for
/// [`skip`] in a helper that is not told its test's name.
pub fn this_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("an unnamed test thread")
        .to_owned()
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; fails the
/// test if it never held.
pub async fn eventually(limit: Duration, what: &str, cond: impl FnMut() -> bool) {
    if !wait_for(limit, cond).await {
        panic!("timed out after {limit:?} waiting for: {what}");
    }
}

/// Polls `cond` every 50 ms; false if `limit` passed first (the caller's
/// assertions then say what is missing).
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}
