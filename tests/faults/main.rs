//! Fault-injection suite: runs the real `wardgate` binary (any build: the
//! path comes from `--bin PATH` or `WARDGATE_BIN`; `scripts/faults` passes
//! the shipped `cargo build --release` binary) against a real
//! mosquitto on loopback, injects one kind of fault per scenario, and
//! accounts for every reading.
//!
//! Run with `scripts/faults [--short] [--only NAME[,NAME]] [--list]`
//! (which builds the release binary, then runs
//! `cargo test --test faults -- … --bin target/release/wardgate`). `--short` is the quick
//! version the test suite runs; without it the runs are long (kill -9 × 200,
//! 20 broker restarts 20–40 s apart). `--figures` prints the slow-fsync
//! benchmark figures instead (used by `scripts/bench`); `--self-test` checks
//! the accounting rule on made-up messages (it also runs before every
//! suite); `--planted` is the suite's own check: a binary built with the
//! test-only feature `plant-faults` loses one record silently where
//! `WARDGATE_PLANT` says, and the scenario meant to catch it must FAIL
//! (see [`PLANTED`]).
//!
//! The load is two simulated devices (`sim`): `ups1` every 20 ms with an
//! event every 50 samples, `env1` every 50 ms with an event every 20, plus
//! the gateway's own telemetry every second. Only configuration keys that
//! every binary since the spine accepts are used (unknown keys are errors),
//! so the same harness can measure older builds too. Each scenario's own
//! expectation is in the doc comment of its function (scenarios/).
//!
//! The accounting rule, the same for every scenario, is written at the top
//! of accounting.rs.

// A harness run as its own process, not the gateway: blocking sleeps and
// process::exit with the verdict are what it is for.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod accounting;
mod disk;
mod peers;
mod recorder;
mod report;
mod rig;
mod scenarios;
mod selftest;
mod util;

use std::io::Write;
use std::path::{Path, PathBuf};

use peers::clean_up_everything;
use report::{detail, report};
use rig::Outcome;
use scenarios::{figures, ScenarioFn};
use selftest::self_test;

#[derive(Clone)]
struct Opts {
    short: bool,
    bin: PathBuf,
    root: PathBuf,
    /// `--planted`: the loss `WARDGATE_PLANT` asks the planted binary for.
    plant: Option<String>,
}

impl Opts {
    /// `short` or `long` by mode.
    fn pick<T>(&self, short: T, long: T) -> T {
        if self.short {
            short
        } else {
            long
        }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: scripts/faults [--short] [--only NAME[,NAME…]] [--bin PATH] [--list] [--figures] [--self-test] [--planted]\n\
         the binary is --bin, else $WARDGATE_BIN, else the one cargo built with the suite;\n\
         --planted: the binary must be built with --features plant-faults (scripts/faults --planted does)"
    );
    std::process::exit(2);
}

/// The planted losses (src/spool/plant.rs, `WARDGATE_PLANT`) and the
/// scenario that must catch each: `spooled` (a record lost on its way to
/// the card during an outage) by `sigterm_outage`, which allows no loss at
/// all; `tail` (the newest reading thrown away at a clean stop) by
/// `damaged_row`, whose one device run ends with that stop, so only the
/// tail check (the closing run's first numbers) can see it; `on_disk` (the
/// oldest reading on the card deleted at start) by `kill9_spill`, where
/// the row lies at or below a `seq_last_used` but was taken long before
/// the kill of a long cycle, so no crash excuses it.
const PLANTED: [(&str, &str); 3] = [
    ("spooled", "sigterm_outage"),
    ("tail", "damaged_row"),
    ("on_disk", "kill9_spill"),
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A SKIP as root is a FAIL: there (CI) every fault must be injectable.
fn skip_as_root(out: &mut Outcome, root: bool) {
    if !root {
        return;
    }
    if let Some(why) = out.skipped.take() {
        out.failures.push(format!(
            "SKIP as root: {why} (as root the fault must be injectable; CI runs as root)"
        ));
    }
}

/// Appends `faults: <scenario>: <why>` to `<repo>/target/skipped.txt`, the
/// file CI's closing line prints.
fn record_skip(root: &Path, name: &str, why: &str) {
    let dir = root.join("target");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("skipped.txt"))
    {
        let _ = writeln!(f, "faults: {name}: {}", why.replace('\n', " "));
    }
}

/// Runs one scenario; a panic in it (a harness bug, a peer that would not
/// start) is its FAIL: its guards have already cleaned up (children
/// killed, mounts unmounted) while unwinding. A scenario that cannot inject
/// its fault is SKIP and written to target/skipped.txt; as root (CI runs
/// as root, where tmpfs, loop devices and remounts must work) it is a
/// FAIL too, so a green run as root has run every scenario.
fn run_one(rt: &tokio::runtime::Runtime, o: &Opts, name: &'static str, f: ScenarioFn) -> Outcome {
    let mut out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(f(o))))
        .unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into());
            let mut out = Outcome::skip(name, String::new());
            out.skipped = None;
            out.failures.push(format!("the harness panicked: {why}"));
            out
        });
    if let Some(why) = &out.skipped {
        record_skip(&o.root, out.name, why);
    }
    skip_as_root(&mut out, is_root());
    println!(
        "  {:<20} {:>5} ({:.0} s){}",
        out.name,
        out.verdict(),
        out.secs,
        out.skipped
            .as_ref()
            .map(|s| format!(": {s}"))
            .unwrap_or_default()
    );
    let _ = std::io::stdout().flush();
    out
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut short = false;
    let mut only: Vec<String> = vec![];
    let mut bin: Option<PathBuf> = std::env::var_os("WARDGATE_BIN").map(PathBuf::from);
    let mut list = false;
    let mut figs = false;
    let mut planted = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--short" => short = true,
            "--only" => only.extend(
                args.next()
                    .unwrap_or_else(|| usage())
                    .split(',')
                    .map(str::to_owned),
            ),
            "--bin" => bin = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--list" => list = true,
            "--figures" => figs = true,
            "--planted" => planted = true,
            "--self-test" => {
                self_test();
                println!("accounting self-test passed");
                return;
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    self_test();
    let all = scenarios::all();
    if list {
        for (n, _) in &all {
            println!("{n}");
        }
        return;
    }
    for n in &only {
        if !all.iter().any(|(a, _)| a == n) {
            eprintln!("unknown scenario {n:?} (see --list)");
            std::process::exit(2);
        }
    }
    // scripts/faults passes --bin target/release/wardgate (the shipped
    // build); a bare `cargo test --test faults` measures the binary cargo
    // built with the suite, in the suite's profile.
    let bin = bin.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wardgate")));
    if !bin.exists() {
        eprintln!(
            "no binary at {} (cargo build --release --bin wardgate)",
            bin.display()
        );
        std::process::exit(2);
    }
    let o = Opts {
        short,
        bin,
        root,
        plant: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("interrupted: stopping mosquitto and wardgate, unmounting");
        clean_up_everything();
        std::process::exit(130);
    });
    if figs {
        std::process::exit(rt.block_on(figures(&o)));
    }
    if planted {
        std::process::exit(run_planted(&rt, &o, &all));
    }
    println!(
        "wardgate fault injection ({}), binary {}",
        if short { "short" } else { "long" },
        o.bin.display()
    );
    let mut outcomes = Vec::new();
    for (name, f) in all {
        if !only.is_empty() && !only.iter().any(|n| n == name) {
            continue;
        }
        outcomes.push(run_one(&rt, &o, name, f));
    }
    report(&outcomes);
    let failed = outcomes.iter().any(|o| o.verdict() == "FAIL");
    let _ = std::io::stdout().flush();
    std::process::exit(if failed { 1 } else { 0 });
}

/// `--planted`: each planted loss against the scenario that must catch
/// it, expecting FAIL; exits 1 when one of them passes (the suite missed
/// a loss).
fn run_planted(rt: &tokio::runtime::Runtime, o: &Opts, all: &[(&'static str, ScenarioFn)]) -> i32 {
    println!(
        "wardgate fault injection, planted losses ({}), binary {}",
        if o.short { "short" } else { "long" },
        o.bin.display()
    );
    let mut rows = Vec::new();
    for (plant, scenario) in PLANTED {
        let Some((name, f)) = all.iter().find(|(n, _)| *n == scenario) else {
            continue;
        };
        println!("WARDGATE_PLANT={plant}:");
        let po = Opts {
            plant: Some(plant.to_owned()),
            ..o.clone()
        };
        let out = run_one(rt, &po, name, *f);
        rows.push((plant, out));
    }
    println!();
    println!(
        "{:<10} | {:<16} | {:>17} | {:<7} | caught",
        "planted", "scenario", "lost (undeclared)", "verdict"
    );
    println!("{}", "-".repeat(70));
    let mut missed = 0;
    for (plant, out) in &rows {
        let caught = out.verdict() == "FAIL";
        if !caught {
            missed += 1;
        }
        println!(
            "{:<10} | {:<16} | {:>17} | {:<7} | {}",
            plant,
            out.name,
            out.acct.undeclared,
            out.verdict(),
            if caught {
                "yes"
            } else {
                "NO: the suite missed it"
            }
        );
    }
    println!();
    for (plant, out) in &rows {
        println!("WARDGATE_PLANT={plant}:");
        for l in detail(out) {
            println!("  {l}");
        }
    }
    let _ = std::io::stdout().flush();
    i32::from(missed > 0)
}
