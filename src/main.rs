//! The command line: `serve`, `migrate` and the offline `admin` commands. Nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use faultline::admin::AdminCommand;
use faultline::config::{Config, LogFormat, Overrides};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "faultline",
    version,
    about = "Sentry-compatible error-tracking gateway"
)]
struct Cli {
    /// A TOML configuration file (see config.example.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Directory holding the database.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Base URL SDKs reach the gateway by; written into DSNs.
    #[arg(long, global = true)]
    external_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users, projects, members and tokens without a running server; prints JSON.
    #[command(subcommand)]
    Admin(AdminCommand),
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // By default a failed write is reported with `eprintln!`, which panics when stderr is
        // gone (a closed pipe, a log collector that went away). The panic would land in
        // whatever thread logged: a request, the writer, the signal handler. Lost log lines
        // are better than a server that stops writing events or ignores SIGTERM.
        .log_internal_errors(false);
    match config.log.format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// mimalloc instead of the system allocator: every ingested event allocates and frees many
/// short-lived buffers across threads (request bodies, decoded payloads, parsed fields), and
/// glibc's malloc showed up as about a tenth of the server's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the cause chain on one line, without a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen,
        data_dir: cli.data_dir,
        external_url: cli.external_url,
    };
    let config =
        Config::load(cli.config.as_deref(), &overrides).context("loading configuration")?;
    init_logging(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve => rt.block_on(faultline::app::run(config)),
        Command::Migrate => {
            faultline::app::open_store(&config)?;
            println!(
                "{{\"schema_version\": {}}}",
                faultline::store::sqlite::schema_version()
            );
            Ok(())
        }
        Command::Admin(cmd) => rt.block_on(faultline::admin::run(&config, cmd)),
    }
}
