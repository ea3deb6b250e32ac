//! The `wardgate` command: CLI, logging, exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use wardgate::cli::{self, exit};
use wardgate::config::{Config, DEFAULT_PATH};

#[derive(Parser)]
#[command(
    name = "wardgate",
    version,
    about = "Edge telemetry gateway for ward service centres"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// What a remote `config.set` may change beyond the built-in rules: a
    /// file only root may write (docs/security.md, "Remote changes").
    #[arg(long, global = true, value_name = "PATH", default_value = wardgate::config::remote_policy::DEFAULT_PATH)]
    remote_change_policy: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (what the systemd service does).
    Run,
    /// Validate the configuration and read each device once.
    /// Exit 0 = all good, 78 = bad configuration, 69 = a device did not answer.
    Check {
        /// Only validate the configuration; do not touch devices.
        #[arg(long)]
        config_only: bool,
        /// Say what [power] would do on a long power cut (which UPS, the
        /// thresholds, its reading now, the command the UPS would get, the
        /// shutdown command and whether it is allowed). Sends nothing to
        /// the UPS and runs nothing. 77 = the shutdown would not be allowed.
        #[arg(long, conflicts_with = "config_only")]
        power_test: bool,
    },
    /// Install a configuration a technician put on the SD card's boot
    /// partition (run once at boot by wardgate-provision.service).
    /// Exit 0 = installed or nothing to do, 78 = the file is not valid
    /// (the errors are in wardgate-provisioning.txt beside it), 74 = I/O.
    Provision {
        /// Boot partition(s) to look in, first found wins.
        #[arg(long, value_name = "DIR", default_values_t = wardgate::provision::BOOT_DIRS.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
        boot: Vec<String>,
        /// Where the configuration is installed.
        #[arg(long, value_name = "DIR", default_value = "/etc/wardgate")]
        etc: PathBuf,
    },
    /// Look into the spool (the readings kept on this device).
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// What the spool holds: records per device, bytes, drops.
    Stats,
    /// Every record as JSON lines (to copy a backlog to a USB stick).
    Export {
        /// Write here instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    let filter = EnvFilter::try_from_env("WARDGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd stderr goes to the journal, which adds its own time.
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    // The last lines also go to a ring in memory, for the `log.tail`
    // command, through a filter of its own: the journal's filter applies to
    // the journal only.
    let registry = tracing_subscriber::registry().with(wardgate::command::logring::layer());
    if under_systemd {
        registry.with(fmt.without_time().with_filter(filter)).init();
    } else {
        registry.with(fmt.with_filter(filter)).init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let explicit = cli.config.is_some();
    let path = cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    let policy = cli.remote_change_policy;
    // One thread runs every task: a ward's gateway waits on a few devices
    // and one broker, and a second worker only adds wake-ups (tasks handed
    // between threads, each thread's stack and malloc arena) without
    // adding throughput it needs (docs/packaging.md, "Idle cost"). Disk
    // work still runs on blocking threads (`spawn_blocking`), never on
    // this one.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wardgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match cli.command {
        Command::Check {
            power_test: true, ..
        } => rt.block_on(cli::power_test(&path, explicit, &mut std::io::stdout())),
        Command::Check { config_only, .. } => rt.block_on(cli::check(
            &path,
            explicit,
            &policy,
            config_only,
            &mut std::io::stdout(),
        )),
        Command::Run => rt.block_on(run(&path, explicit, policy)),
        Command::Provision { boot, etc } => {
            let dirs: Vec<PathBuf> = boot.iter().map(PathBuf::from).collect();
            match wardgate::provision::provision(&dirs, &etc) {
                Ok(wardgate::provision::Outcome::Nothing) => {
                    println!("no wardgate.toml on the boot partition: nothing to do");
                    exit::OK
                }
                Ok(wardgate::provision::Outcome::Installed { from, files }) => {
                    println!(
                        "installed {} -> {}",
                        from.display(),
                        files
                            .iter()
                            .map(|f| f.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    exit::OK
                }
                Err(e @ wardgate::provision::ProvisionError::Invalid { .. }) => {
                    eprintln!("wardgate provision: {e}");
                    exit::CONFIG
                }
                Err(e) => {
                    eprintln!("wardgate provision: {e}");
                    exit::IO
                }
            }
        }
        Command::Spool { command } => {
            let cfg = match Config::load(&path, explicit) {
                Ok(c) => c,
                Err(e) => {
                    cli::print_config_error(&path, &e, &mut std::io::stderr());
                    return ExitCode::from(exit::CONFIG);
                }
            };
            let result = match command {
                SpoolCommand::Stats => cli::spool_stats(&cfg.spool.path, &mut std::io::stdout()),
                SpoolCommand::Export { output } => {
                    let r = match output {
                        Some(p) => std::fs::File::create(&p)
                            .map_err(|e| format!("{}: {e}", p.display()))
                            .and_then(|f| {
                                let mut w = std::io::BufWriter::new(f);
                                let n = cli::spool_export(&cfg.spool.path, &mut w)?;
                                std::io::Write::flush(&mut w).map_err(|e| e.to_string())?;
                                Ok(n)
                            }),
                        None => cli::spool_export(
                            &cfg.spool.path,
                            &mut std::io::BufWriter::new(std::io::stdout()),
                        ),
                    };
                    r.map(|n| eprintln!("exported {n} record(s)"))
                }
            };
            match result {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("wardgate: {e}");
                    exit::IO
                }
            }
        }
    };
    ExitCode::from(code)
}

async fn run(path: &std::path::Path, explicit: bool, policy: PathBuf) -> u8 {
    // A config the operations centre set and that has not been confirmed:
    // this start is counted first, and one too many (or too late) puts the
    // previous config back before anything is loaded.
    if wardgate::command::change::count_start(path, &wardgate::command::change::Start::now()) {
        tracing::warn!("config change rolled back at start: running the previous config");
    }
    let cfg = match Config::load(path, explicit) {
        Ok(c) => Config {
            remote_policy: Some(policy),
            ..c
        },
        Err(e) => {
            cli::print_config_error(path, &e, &mut std::io::stderr());
            // A config the operations centre just set: back to the previous.
            let why = format!("the new config did not load: {}", e.problems().join("; "));
            if wardgate::command::change::roll_back(path, &why) {
                return exit::RESTART;
            }
            return exit::CONFIG;
        }
    };
    wardgate::app::settle_memory();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        c.cancel();
    });
    let identify = |r: &wardgate::app::Running| {
        // SIGUSR1 (`systemctl kill -s USR1 wardgate`): flicker the LED for
        // 60 s so a technician can find this box.
        let status = r.status.clone();
        if let Ok(mut usr1) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    tracing::info!("identify requested: LED flickers for 60 s");
                    status.identify(std::time::Duration::from_secs(60));
                }
            });
        }
    };
    match wardgate::app::run(cfg, cancel, identify).await {
        Ok(()) => exit::OK,
        Err(e) if e.is::<wardgate::command::RestartRequested>() => {
            tracing::info!(
                "exiting for the requested restart (the service manager starts wardgate again)"
            );
            exit::RESTART
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wardgate: {e:#}");
            // A config the operations centre just set: back to the previous.
            if wardgate::command::change::roll_back(
                path,
                &format!("the gateway stopped with it: {e:#}"),
            ) {
                return exit::RESTART;
            }
            1
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
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
}
