//! `wardgate-ioc`: the operations centre's consumer. For now one
//! subcommand, `loadgen`, which writes the load generator's traffic or
//! checks the ledger against it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wardgate_ioc::ledger::Ledger;
use wardgate_ioc::loadgen::{generate, LoadConfig};
use wardgate_ioc::pipeline::Consumer;

#[derive(Parser)]
#[command(
    name = "wardgate-ioc",
    version,
    about = "The operations centre's consumer of wardgate's MQTT contract"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Contract-valid traffic of many sites with planted duplicates, holes,
    /// resets, backlog and clock corrections. Writes one JSON line per
    /// message (`{"topic":…,"at_ms":…,"payload":…}`), or with --check feeds
    /// it through decode, de-duplication and the ledger and compares what
    /// the ledger reports with what was planted.
    Loadgen {
        #[arg(long, default_value_t = 100)]
        sites: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Live steps per quiet stretch (more readings per site).
        #[arg(long, default_value_t = 8)]
        steps: u64,
        #[arg(long, default_value = "ioc")]
        prefix: String,
        /// Check the ledger instead of writing the traffic.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("wardgate-ioc: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let Command::Loadgen {
        sites,
        seed,
        steps,
        prefix,
        check,
    } = cli.command;
    let cfg = LoadConfig {
        sites,
        seed,
        prefix,
        steps,
    };
    let traffic = generate(&cfg).context("loadgen")?;
    if !check {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for w in &traffic.messages {
            // The payload as generated, byte for byte (its key order is the
            // gateway's), inside a line of JSON.
            let topic = serde_json::to_string(&w.topic).context("a topic")?;
            write!(
                out,
                "{{\"topic\":{topic},\"at_ms\":{},\"payload\":",
                w.at_ms
            )
            .and_then(|()| out.write_all(&w.payload))
            .and_then(|()| writeln!(out, "}}"))
            .context("writing the traffic")?;
        }
        out.flush().context("writing the traffic")?;
        return Ok(true);
    }
    let mut c = Consumer::new(&cfg.prefix, Ledger::default());
    for w in &traffic.messages {
        c.handle(&w.topic, &w.payload, w.at_ms)
            .with_context(|| format!("message on {}", w.topic))?;
    }
    let mut got = c.ledger.unexplained();
    let mut want = traffic.planted.undeclared.clone();
    got.sort();
    want.sort();
    let t = c.ledger.fleet_totals();
    let p = &traffic.planted;
    println!(
        "{} sites, {} messages: received {} (planted {}), unexplained holes {} (planted {}), explained numbers {} (declared {}), pending {}, duplicates {} ({}), corrected copies {} ({}), contract breaks {} ({})",
        cfg.sites,
        traffic.messages.len(),
        t.received,
        p.records,
        got.len(),
        want.len(),
        t.explained,
        p.declared,
        t.pending,
        t.duplicates,
        p.duplicates,
        t.corrected_copies,
        p.corrected_copies,
        t.contract_breaks,
        p.conflicts
    );
    let ok = got == want
        && t.pending == 0
        && t.explained == p.declared
        && t.duplicates == p.duplicates
        && t.contract_breaks == p.conflicts;
    println!("{}", if ok { "ok" } else { "MISMATCH" });
    Ok(ok)
}
