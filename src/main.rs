//! The command line: `serve`, `migrate` and the offline `admin` commands. Nothing else lives here.

use std::io::IsTerminal as _;
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
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory holding the database [env: FAULTLINE_DATA_DIR; default ./data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The environment variables `serve --help` lists; every setting has one (see
/// config.example.toml), these are the ones a first deployment sets.
const SERVE_ENVIRONMENT: &str = "\
Environment (each overrides the config file; flags override both):
  FAULTLINE_LISTEN                       address:port to listen on (default 127.0.0.1:8080)
  FAULTLINE_DATA_DIR                     directory of the database (default ./data)
  FAULTLINE_DATABASE__URL                postgres://user:pass@host/db: PostgreSQL, several nodes
  FAULTLINE_EXTERNAL_URL                 base URL SDKs reach the gateway by, written into DSNs
  FAULTLINE_ADMIN_TOKEN                  an administrator token to create or accept at start-up
  FAULTLINE_LOG__LEVEL                   log filter, e.g. info or faultline=debug (RUST_LOG wins)
  FAULTLINE_LOG__FORMAT                  human or json
  FAULTLINE_LOG__COLOR                   auto (colour only on a terminal), always or never
  FAULTLINE_RETENTION__DAYS              days events are kept (default 90; 0 keeps them)
  FAULTLINE_INGEST__RATE_LIMIT_PER_MINUTE  events per key and minute (default 0: unlimited)
  FAULTLINE_DATABASE__SYNCHRONOUS        normal, or full to survive power loss
Any other setting: FAULTLINE_<SECTION>__<KEY>, as in config.example.toml.";

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    #[command(after_help = SERVE_ENVIRONMENT)]
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080; port 0 picks a free port
        /// [env: FAULTLINE_LISTEN].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Base URL SDKs reach the gateway by; written into DSNs [env: FAULTLINE_EXTERNAL_URL].
        #[arg(long, value_name = "URL")]
        external_url: Option<String>,
    },
    /// Create or upgrade the database in the data directory and exit.
    Migrate,
    /// Manage users, projects, members and tokens without a running server; prints JSON.
    /// Safe while a server runs on the same data directory.
    Admin {
        /// Create the database if the data directory has none (otherwise that is an error, so
        /// that a command run from the wrong directory does not make an empty one).
        #[arg(long, global = true)]
        create_database: bool,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

fn init_logging(config: &Config) {
    let spec = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| config.log.level.clone());
    let filter = faultline::config::log_filter(&spec);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(config.log.ansi(std::io::stderr().is_terminal()))
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
    let (listen, external_url) = match &cli.command {
        Command::Serve {
            listen,
            external_url,
        } => (*listen, external_url.clone()),
        _ => (None, None),
    };
    let overrides = Overrides {
        listen,
        data_dir: cli.data_dir,
        external_url,
    };
    let config =
        Config::load(cli.config.as_deref(), &overrides).context("loading configuration")?;
    init_logging(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve { .. } => rt.block_on(faultline::app::run(config)),
        Command::Migrate => {
            let store = rt.block_on(faultline::app::open_store(&config))?;
            println!("{{\"schema_version\": {}}}", store.schema_version());
            Ok(())
        }
        Command::Admin {
            create_database,
            command,
        } => rt.block_on(faultline::admin::run(&config, command, create_database)),
    }
}
