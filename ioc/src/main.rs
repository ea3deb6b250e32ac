//! `wardgate-ioc`: the operations centre's consumer. `run` ingests the
//! gateways' MQTT traffic and serves the fleet pages and `/metrics`
//! (docs/ioc.md, "Running wardgate-ioc"); `check` validates the config and
//! probes the broker, the store, the time-series database and the pages'
//! address; `send` sends one command to a site's gateway and prints its
//! replies; `fleet` prints the fleet table from the store; `report`
//! writes the monthly report; `loadgen` writes the load generator's
//! traffic or checks the ledger against it.

use std::io::Write;
use std::path::PathBuf;
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
    /// Ingest: MQTT in, through de-duplication, the ledger and the fleet
    /// view, committed to the store, then acknowledged; readings to the
    /// time-series database; the fleet pages and /metrics on web.listen.
    Run {
        #[arg(long, default_value = wardgate_ioc::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the config and probe the broker, the store, the
    /// time-series database and the pages' address. Exit 0 usable, 78 bad
    /// config, 69 a peer is not usable.
    Check {
        #[arg(long, default_value = wardgate_ioc::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Validate the config only; probe nothing (the unit's
        /// ExecCondition).
        #[arg(long)]
        config_only: bool,
    },
    /// Send one command to a site's gateway and print its replies until
    /// the final one.
    ///
    /// docs/mqtt.md, "Commands from the IOC"; docs/ioc.md, "send". Args:
    /// key=value (a string), key:=json (a number, true, …), key=@file (the
    /// file's text), or one JSON object. Exit 0 successful, 1 rejected or
    /// failed, 2 bad command line, 68 unknown site, 69 broker unusable, 75
    /// no final reply in time, 78 bad config.
    Send {
        #[arg(long, default_value = wardgate_ioc::config::DEFAULT_PATH)]
        config: PathBuf,
        /// The request expires this long after it is sent (at most 24h).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        expires_in: std::time::Duration,
        /// How long to wait for the final reply [default: the expiry + 30s].
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Print each reply as one line of JSON.
        #[arg(long)]
        json: bool,
        /// The site id (the gateway's `site`).
        site: String,
        /// The op: identify, poll, status, spool.stats, log.tail,
        /// config.get, config.set, restart.
        op: String,
        /// The op's arguments, e.g. device=ups1 or seconds:=30.
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The fleet in a terminal: one line per site, worst first.
    ///
    /// docs/ioc.md, "fleet". Read-only from the store the config names;
    /// within 100 columns; --json for scripts. Exit 0, 69 the store cannot
    /// be read, 78 bad config.
    Fleet {
        #[arg(long, default_value = wardgate_ioc::config::DEFAULT_PATH)]
        config: PathBuf,
        /// The table's language.
        #[arg(long, default_value = "vi", value_parser = ["vi", "en"])]
        lang: String,
        /// Every site as JSON (times in ms), nothing cut.
        #[arg(long)]
        json: bool,
    },
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
    /// The monthly report of every site: availability (24 h and office
    /// hours), power outages, internet, environment, completeness
    /// (docs/ioc.md, "Monthly report"). Reads the store read-only, beside
    /// a running service. Exit 78 on a bad config, 1 on an error.
    Report {
        #[arg(long, default_value = wardgate_ioc::config::DEFAULT_PATH)]
        config: PathBuf,
        /// YYYY-MM, in the report's local time (`[report] utc_offset`).
        #[arg(long)]
        month: String,
        #[arg(long, default_value = "vi", value_parser = ["vi", "en"])]
        lang: String,
        #[arg(long, default_value = "html", value_parser = ["html", "csv"])]
        format: String,
        /// Write here (replaced whole) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => return serve(&config),
        Command::Check {
            config,
            config_only,
        } => {
            return block_on(wardgate_ioc::ingest::check::check(
                &config,
                config_only,
                &mut std::io::stdout(),
            ));
        }
        Command::Send {
            config,
            expires_in,
            timeout,
            json,
            site,
            op,
            args,
        } => {
            let opts = wardgate_ioc::send::SendOptions {
                site,
                op,
                args,
                expires_in,
                timeout,
                json,
            };
            return block_on(wardgate_ioc::send::send(
                &config,
                &opts,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            ));
        }
        Command::Fleet { config, lang, json } => {
            return ExitCode::from(wardgate_ioc::console::fleet(
                &config,
                &lang,
                json,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            ));
        }
        Command::Report {
            config,
            month,
            lang,
            format,
            out,
        } => return report(&config, &month, &lang, &format, out.as_deref()),
        Command::Loadgen { .. } => {}
    }
    match loadgen(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("wardgate-ioc: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn report(
    config: &std::path::Path,
    month: &str,
    lang: &str,
    format: &str,
    out: Option<&std::path::Path>,
) -> ExitCode {
    use wardgate_ioc::report::{cli, Format, ReportError};
    let format = if format == "csv" {
        Format::Csv
    } else {
        Format::Html
    };
    match cli(config, month, lang, format, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardgate-ioc: {e}");
            match e {
                ReportError::Config(_) => ExitCode::from(wardgate_ioc::ingest::check::exit::CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Two workers: the ingest and its store commits on one, the broker's
/// event loop, the time-series writer and the pages beside it.
/// Runs a command's future to its exit code on a runtime of its own
/// (`check`, `send`); a runtime that cannot start is exit 1.
fn block_on(fut: impl std::future::Future<Output = u8>) -> ExitCode {
    match runtime() {
        Ok(rt) => ExitCode::from(rt.block_on(fut)),
        Err(e) => {
            eprintln!("wardgate-ioc: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `run`: exit 0 after a stop signal, 78 on a bad config, 1 on an error
/// (systemd's Restart=on-failure starts it again from the last commit).
fn serve(path: &std::path::Path) -> ExitCode {
    init_logging();
    let cfg = match wardgate_ioc::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wardgate-ioc: {e}");
            return ExitCode::from(wardgate_ioc::ingest::check::exit::CONFIG);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wardgate-ioc: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            tracing::info!("stop signal: committing what is pending");
            let _ = stop_tx.send(true);
        });
        wardgate_ioc::ingest::service::serve(cfg, stop).await
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "wardgate-ioc stopped");
            ExitCode::FAILURE
        }
    }
}

fn loadgen(cli: Cli) -> anyhow::Result<bool> {
    let Command::Loadgen {
        sites,
        seed,
        steps,
        prefix,
        check,
    } = cli.command
    else {
        return Ok(false);
    };
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
        "{} sites, {} messages: received {} (planted {}), unexplained holes {} (planted {}), explained numbers {} + unused {} (declared {}), pending {}, duplicates {} ({}), corrected copies {} ({}), contract breaks {} ({})",
        cfg.sites,
        traffic.messages.len(),
        t.received,
        p.records,
        got.len(),
        want.len(),
        t.explained,
        t.unused,
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
        && t.explained + t.unused == p.declared
        && t.duplicates == p.duplicates
        && t.contract_breaks == p.conflicts;
    println!("{}", if ok { "ok" } else { "MISMATCH" });
    Ok(ok)
}
