//! The results table and each scenario's failures and notes under it.

use crate::rig::Outcome;

/// The table and, under it, each scenario's failures and notes.
pub fn report(outcomes: &[Outcome]) {
    println!();
    println!(
        "{:<20} | {:>6} | {:>8} | {:>9} | {:>10} | {:>17} | verdict",
        "scenario", "cycles", "readings", "delivered", "duplicates", "lost (undeclared)"
    );
    println!("{}", "-".repeat(98));
    for out in outcomes {
        let a = &out.acct;
        println!(
            "{:<20} | {:>6} | {:>8} | {:>9} | {:>10} | {:>17} | {}",
            out.name,
            out.cycles,
            a.readings,
            a.delivered,
            a.duplicates,
            a.undeclared,
            out.verdict()
        );
    }
    println!();
    for out in outcomes {
        for l in detail(out) {
            println!("{l}");
        }
    }
}

/// A scenario's failures and notes, one line each under its name.
pub fn detail(out: &Outcome) -> Vec<String> {
    let a = &out.acct;
    let mut lines: Vec<String> = out.failures.iter().map(|f| format!("FAIL: {f}")).collect();
    if a.reused > 0 {
        lines.push(format!(
            "FAIL: {} seq reused with different content",
            a.reused
        ));
    }
    if a.invalid_json > 0 {
        lines.push(format!("FAIL: {} payloads are not JSON", a.invalid_json));
    }
    if a.schema_invalid > 0 {
        lines.push(format!(
            "FAIL: {} messages break their schema (docs/schema/)",
            a.schema_invalid
        ));
    }
    if a.undeclared > 0 {
        lines.push(format!(
            "FAIL: {} readings lost without declaration",
            a.undeclared
        ));
    }
    lines.extend(out.notes.iter().cloned());
    if let Some(s) = &out.skipped {
        lines.push(format!("skipped: {s}"));
    }
    if lines.is_empty() {
        return lines;
    }
    let mut v = vec![format!("{}:", out.name)];
    v.extend(lines.into_iter().map(|l| format!("  {l}")));
    v
}
