//! Where the spool gets its time: the wall clock, the kernel's monotonic
//! clock since boot (`CLOCK_BOOTTIME`, which never jumps), the kernel's boot
//! id, and whether NTP has synchronised the wall clock. A small trait, so
//! that tests drive time ([`FakeClock`]: unsynced, then synced with a step
//! of days) and the gateway uses the kernel ([`KernelClock`]).
//!
//! Why both clocks: a Pi has no real-time clock, so until NTP syncs its wall
//! time may be days off, and it is then *stepped*. `CLOCK_BOOTTIME` is not
//! stepped, so once the clock is synced the true wall time of a reading
//! taken earlier in the same boot is `wall_now - (boottime_now -
//! reading.boottime)` (see `spool::retime`). Across a reboot the boottime
//! starts again from 0: a reading of another boot can never be corrected
//! this way, which is why every reading keeps its boot id.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Milliseconds since the Unix epoch, UTC.
pub fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        // A clock before 1970 is a broken clock; say so with a zero rather
        // than a negative time no consumer expects.
        Err(_) => 0,
    }
}

/// The clocks a reading is stamped with.
pub trait Clock: Send + Sync {
    /// Wall time, milliseconds since the Unix epoch (UTC).
    fn wall_ms(&self) -> i64;
    /// Milliseconds since this boot, counting suspend (`CLOCK_BOOTTIME`).
    fn boottime_ms(&self) -> i64;
    /// The kernel's boot id (changes on every boot); empty when unknown.
    fn boot_id(&self) -> Arc<str>;
    /// Whether the wall clock is synchronised (NTP).
    fn synced(&self) -> bool;
}

/// The kernel's clocks. The NTP state is asked (`adjtimex`) at most every
/// few seconds, so stamping a reading costs no system call beyond the vDSO
/// clock reads.
pub struct KernelClock {
    boot: Arc<str>,
    checked: Mutex<Option<Instant>>,
    synced: AtomicBool,
}

/// How long the kernel's NTP state is trusted before it is asked again.
const SYNC_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

impl KernelClock {
    pub fn new() -> KernelClock {
        KernelClock {
            boot: Arc::from(read_boot_id()),
            checked: Mutex::new(None),
            synced: AtomicBool::new(false),
        }
    }
}

impl Default for KernelClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for KernelClock {
    fn wall_ms(&self) -> i64 {
        now_ms()
    }

    fn boottime_ms(&self) -> i64 {
        boottime_ms()
    }

    fn boot_id(&self) -> Arc<str> {
        self.boot.clone()
    }

    fn synced(&self) -> bool {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if checked.is_none_or(|t| t.elapsed() >= SYNC_RECHECK) {
            self.synced.store(kernel_synced(), Ordering::Relaxed);
            *checked = Some(Instant::now());
        }
        self.synced.load(Ordering::Relaxed)
    }
}

/// The kernel's boot id (`/proc/sys/kernel/random/boot_id`); empty when it
/// cannot be read.
pub fn read_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `CLOCK_BOOTTIME` in milliseconds (0 if the kernel refuses, which Linux
/// never does).
pub fn boottime_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    // `time_t` and `long` are 32 bits on a 32-bit Pi OS: the casts widen there.
    #[allow(clippy::unnecessary_cast)]
    let ms = ts.tv_sec as i64 * 1000 + ts.tv_nsec as i64 / 1_000_000;
    ms
}

/// Reads the kernel's NTP state with `adjtimex(2)` (read-only: `modes = 0`).
/// `TIME_ERROR` or the `STA_UNSYNC` flag mean the clock is not synchronised.
pub fn kernel_synced() -> bool {
    // SAFETY: `timex` is plain old data; zeroed is a valid value, and with
    // `modes == 0` adjtimex only reads the kernel state into it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::adjtimex(&mut tx) };
    !(rc == -1 || rc == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0)
}

/// A clock that tests drive: it stands still until told to move (or, made
/// with [`FakeClock::running`], moves with real time), is unsynchronised
/// until told otherwise, and can be stepped or rebooted. Not used by the
/// daemon itself; public so the integration tests can run the gateway
/// in-process with it (`app::run_with_clock`).
pub struct FakeClock {
    state: Mutex<FakeState>,
    /// Milliseconds moved by hand, on both clocks.
    moved: AtomicI64,
}

struct FakeState {
    wall_base: i64,
    boot_base: i64,
    boot: Arc<str>,
    synced: bool,
    /// Real time also moves the clock (from this instant).
    since: Option<Instant>,
}

impl FakeClock {
    /// A clock standing at `wall_ms` wall time, `boottime_ms` since boot,
    /// in boot `boot_id`, unsynchronised.
    pub fn new(wall_ms: i64, boottime_ms: i64, boot_id: &str) -> FakeClock {
        FakeClock {
            state: Mutex::new(FakeState {
                wall_base: wall_ms,
                boot_base: boottime_ms,
                boot: Arc::from(boot_id),
                synced: false,
                since: None,
            }),
            moved: AtomicI64::new(0),
        }
    }

    /// As [`FakeClock::new`], and both clocks move with real time too.
    pub fn running(wall_ms: i64, boottime_ms: i64, boot_id: &str) -> FakeClock {
        let c = Self::new(wall_ms, boottime_ms, boot_id);
        c.lock().since = Some(Instant::now());
        c
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn elapsed(&self, s: &FakeState) -> i64 {
        self.moved.load(Ordering::SeqCst)
            + s.since.map(|t| t.elapsed().as_millis() as i64).unwrap_or(0)
    }

    /// Time passes: both clocks move by `ms`.
    pub fn advance(&self, ms: i64) {
        self.moved.fetch_add(ms, Ordering::SeqCst);
    }

    /// The wall clock is set (`settimeofday`): it jumps by `ms`; the
    /// monotonic clock does not.
    pub fn step(&self, ms: i64) {
        self.lock().wall_base += ms;
    }

    /// NTP: the wall clock jumps by `step_ms` and is synchronised, at once.
    pub fn sync(&self, step_ms: i64) {
        let mut s = self.lock();
        s.wall_base += step_ms;
        s.synced = true;
    }

    /// The synchronisation is lost (the wall clock does not move).
    pub fn unsync(&self) {
        self.lock().synced = false;
    }

    /// A reboot: a new boot id, the monotonic clock starts again at
    /// `boottime_ms`, the wall clock stands at `wall_ms`, unsynchronised.
    pub fn reboot(&self, boot_id: &str, wall_ms: i64, boottime_ms: i64) {
        let mut s = self.lock();
        let e = self.elapsed(&s);
        s.boot = Arc::from(boot_id);
        s.wall_base = wall_ms - e;
        s.boot_base = boottime_ms - e;
        s.synced = false;
    }
}

impl Clock for FakeClock {
    fn wall_ms(&self) -> i64 {
        let s = self.lock();
        s.wall_base + self.elapsed(&s)
    }

    fn boottime_ms(&self) -> i64 {
        let s = self.lock();
        s.boot_base + self.elapsed(&s)
    }

    fn boot_id(&self) -> Arc<str> {
        self.lock().boot.clone()
    }

    fn synced(&self) -> bool {
        self.lock().synced
    }
}

/// The three clock readings of one moment, taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall_ms: i64,
    pub boottime_ms: i64,
    pub synced: bool,
}

/// Reads `clock` once. With a [`FakeClock`] the two times are consistent to
/// the millisecond only when it stands still (tests that check exact times
/// use one that does).
pub fn now(clock: &dyn Clock) -> Now {
    let synced = clock.synced();
    Now {
        wall_ms: clock.wall_ms(),
        boottime_ms: clock.boottime_ms(),
        synced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_steps_the_wall_only() {
        let c = FakeClock::new(1_000_000, 5_000, "a");
        assert!(!c.synced());
        c.advance(250);
        assert_eq!((c.wall_ms(), c.boottime_ms()), (1_000_250, 5_250));
        c.sync(3 * 86_400_000);
        assert!(c.synced());
        assert_eq!(c.wall_ms(), 1_000_250 + 3 * 86_400_000);
        assert_eq!(c.boottime_ms(), 5_250, "the monotonic clock never jumps");
        c.reboot("b", 2_000_000, 100);
        assert_eq!(
            (&*c.boot_id(), c.wall_ms(), c.boottime_ms(), c.synced()),
            ("b", 2_000_000, 100, false)
        );
        c.advance(10);
        assert_eq!((c.wall_ms(), c.boottime_ms()), (2_000_010, 110));
    }

    // A plain test thread, no runtime to block.
    #[allow(clippy::disallowed_methods)]
    #[test]
    fn kernel_boottime_moves_and_boot_id_is_stable() {
        let k = KernelClock::new();
        let a = k.boottime_ms();
        assert!(a > 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(k.boottime_ms() >= a + 15);
        assert_eq!(&*k.boot_id(), read_boot_id().as_str());
        assert!(!k.boot_id().is_empty(), "Linux has a boot id");
    }
}
