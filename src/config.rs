//! Typed configuration, read once at start-up: defaults < `--config FILE` < `FAULTLINE_*`
//! environment < command-line flags. Modules receive typed values from here and never read the
//! environment themselves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::store::sqlite::Synchronous;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration")]
    Load(#[source] Box<figment::Error>),
    #[error("external_url {0:?} is not an absolute http(s) URL")]
    ExternalUrl(String),
    #[error("{0}")]
    Invalid(String),
}

/// A secret that never prints: `Debug` shows `[redacted]`.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// When ingestion answers 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After the batch holding the event committed (the default): a 200 survives a crash.
    #[default]
    Committed,
    /// As soon as the event is queued: faster, but a crash loses what was queued.
    Queued,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// Address and port to listen on; port 0 picks a free port (the log says which).
    pub listen: SocketAddr,
    /// Where the SQLite database and the initial admin token file live.
    pub data_dir: PathBuf,
    /// Base URL SDKs reach the gateway by, written into DSNs. Default: `http://` + the bound
    /// listen address.
    pub external_url: Option<String>,
    /// An administrator token to create (or accept, if present) at start-up.
    pub admin_token: Option<Secret>,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub ingest: IngestConfig,
    pub http: HttpConfig,
    pub retention: RetentionConfig,
    pub gitlab: GitlabConfig,
    pub alerts: AlertsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            external_url: None,
            admin_token: None,
            log: LogConfig::default(),
            database: DatabaseConfig::default(),
            ingest: IngestConfig::default(),
            http: HttpConfig::default(),
            retention: RetentionConfig::default(),
            gitlab: GitlabConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

/// The log filter for `spec` (`info`, `faultline=debug`, ...), with the PostgreSQL driver held
/// at `info` whatever `spec` asks: its debug lines print every query's parameters, and those
/// carry secrets (webhook secrets, password hashes, token digests).
pub fn log_filter(spec: &str) -> tracing_subscriber::EnvFilter {
    let filter = tracing_subscriber::EnvFilter::new(spec);
    match "tokio_postgres=info".parse() {
        Ok(cap) => filter.add_directive(cap),
        Err(_) => filter,
    }
}

/// When log lines carry colour codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogColor {
    /// Only when stderr is a terminal and `NO_COLOR` is not set (the default): a log file or a
    /// collector gets plain text.
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LogConfig {
    /// `human` (default) or `json`.
    pub format: LogFormat,
    /// A `tracing` filter; `RUST_LOG` wins when set. Default `info`.
    pub level: String,
    /// `auto` (default), `always` or `never`.
    pub color: LogColor,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
            color: LogColor::Auto,
        }
    }
}

impl LogConfig {
    /// Whether to write colour codes, given whether stderr is a terminal.
    pub fn ansi(&self, stderr_is_terminal: bool) -> bool {
        match self.color {
            LogColor::Always => true,
            LogColor::Never => false,
            LogColor::Auto => {
                stderr_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct DatabaseConfig {
    /// A PostgreSQL URL (`postgres://user:pass@host:5432/db`, `FAULTLINE_DATABASE__URL`)
    /// selects the PostgreSQL backend, for several nodes on one database; unset, SQLite in the
    /// data directory. A secret, since it usually carries the password.
    pub url: Option<Secret>,
    /// SQLite: `normal` (default): commits survive a process crash; `full`: they survive power
    /// loss.
    pub synchronous: Synchronous,
    /// Cap on the database size in SQLite pages (4 KiB each); unset = no cap.
    pub max_page_count: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Largest decompressed event item or `/store/` body, bytes. Default 1 MiB (Sentry's).
    pub max_event_bytes: usize,
    /// Largest decompressed envelope, bytes. Default 200 MiB (Sentry's).
    pub max_envelope_bytes: usize,
    /// Largest compressed request body, bytes. Default 20 MiB (Sentry's).
    pub max_compressed_bytes: usize,
    /// Largest attachment item, bytes. Default 100 MiB (Sentry's).
    pub max_attachment_bytes: usize,
    /// When a 200 is sent: `committed` (default) or `queued`.
    pub ack: AckMode,
    /// Ingestion requests not yet committed (queued or in the open batch) before ingestion
    /// answers 503. Default 10 000: about a second of events at full speed, bounded memory
    /// (an event is at most 1 MiB and usually a few KiB).
    pub queue_capacity: usize,
    /// Most events committed in one transaction. Default 512.
    pub batch_size: usize,
    /// Longest the writer waits for more events to fill a batch once it holds one, in
    /// milliseconds. Default 0: commit as soon as nothing more is waiting. That is still group
    /// commit (events arriving during a commit share the next one) and measured fastest: waiting
    /// 5 ms capped 64 connections at about one batch per 10 ms.
    pub batch_interval_ms: u64,
    /// Events a key may send per minute; 0 (default) = unlimited.
    pub rate_limit_per_minute: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_event_bytes: 1024 * 1024,
            max_envelope_bytes: 200 * 1024 * 1024,
            max_compressed_bytes: 20 * 1024 * 1024,
            max_attachment_bytes: 100 * 1024 * 1024,
            ack: AckMode::Committed,
            queue_capacity: 10_000,
            batch_size: 512,
            batch_interval_ms: 0,
            rate_limit_per_minute: 0,
        }
    }
}

impl IngestConfig {
    pub fn batch_interval(&self) -> Duration {
        Duration::from_millis(self.batch_interval_ms)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Seconds in-flight requests and the writer queue get to finish on SIGTERM. Default 30.
    pub shutdown_timeout_secs: u64,
    /// Seconds a client may take to send its request headers. Default 10.
    pub header_timeout_secs: u64,
    /// Seconds a client may take to send a whole request body. Default 60.
    pub body_timeout_secs: u64,
    /// Most connections served at once; more wait in the kernel's backlog. Default 4096.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            shutdown_timeout_secs: 30,
            header_timeout_secs: 10,
            body_timeout_secs: 60,
            max_connections: 4096,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Events older than this many days are deleted. Default 90 (GitLab's); 0 keeps forever.
    pub days: u32,
    /// Seconds between retention passes. Default 3600.
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            days: 90,
            interval_secs: 3600,
        }
    }
}

/// faultline as the backend of a GitLab's integrated error tracking (see the README section
/// "faultline as GitLab's error-tracking backend").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct GitlabConfig {
    /// GitLab's base URL, e.g. `https://gitlab.example.com`. Set, a client key faultline does
    /// not know is checked by asking GitLab. Unset (default), only faultline's own keys work.
    pub url: Option<String>,
    /// The secret GitLab sends as `Gitlab-Error-Tracking-Token` (GitLab's application setting
    /// `error_tracking_access_token`). It grants the read API on every project, and faultline
    /// sends it back when it asks GitLab about a key. Unset (or blank), that header is refused.
    pub error_tracking_token: Option<Secret>,
    /// Seconds a key GitLab allowed is trusted before GitLab is asked again: the longest a key
    /// revoked in GitLab keeps working. Default 60.
    pub key_cache_secs: u64,
    /// Seconds a refusal from GitLab (key disabled, unknown project) is remembered, and the
    /// interval between two questions about one key while GitLab cannot be reached. Default 10.
    pub key_cache_negative_secs: u64,
    /// Seconds past `key_cache_secs` that a key GitLab allowed keeps working while GitLab
    /// cannot be reached. Default 300.
    pub key_grace_secs: u64,
    /// Most answers kept; the oldest-to-matter are dropped first beyond that. Default 100 000
    /// (well under 20 MB).
    pub key_cache_capacity: usize,
    /// Seconds one question to GitLab may take before GitLab counts as unreachable. Default 5.
    pub request_timeout_secs: u64,
}

impl Default for GitlabConfig {
    fn default() -> Self {
        GitlabConfig {
            url: None,
            error_tracking_token: None,
            key_cache_secs: 60,
            key_cache_negative_secs: 10,
            key_grace_secs: 300,
            key_cache_capacity: 100_000,
            request_timeout_secs: 5,
        }
    }
}

impl GitlabConfig {
    /// The shared token, if one is set and not blank: a blank one grants nothing.
    pub fn token(&self) -> Option<&Secret> {
        self.error_tracking_token
            .as_ref()
            .filter(|t| !t.0.trim().is_empty())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct AlertsConfig {
    /// Allow alert channels whose URLs reach loopback, private or link-local addresses.
    /// Default false: such targets are refused when the channel is created and when it is
    /// called (redirects included).
    pub allow_internal_targets: bool,
    /// Internal networks alerts may reach even so, e.g. `["10.20.0.0/16", "fd00:1::/32"]` for
    /// a chat server on the private network. Default none.
    pub allowed_internal_networks: Vec<String>,
    /// Milliseconds before the second delivery try; doubled for each try after. Default 1000.
    pub retry_base_ms: u64,
    /// Longest wait between two tries, seconds. Default 600.
    pub retry_max_secs: u64,
    /// An alert still undelivered this many seconds after it was queued is given up (the
    /// channel's last failure says so). Default 86 400 (a day).
    pub give_up_after_secs: u64,
    /// Longest one delivery request may take, milliseconds. Default 10 000.
    pub request_timeout_ms: u64,
    /// Milliseconds between looks at the outbox when nothing wakes delivery. Default 1000.
    pub poll_interval_ms: u64,
    /// Past a rule's `max_per_hour`, a channel gets at most one summary message this many
    /// seconds. Default 60.
    pub summary_interval_secs: u64,
    /// The mail server email channels send through.
    pub smtp: SmtpConfig,
}

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain SMTP: only for a relay on a trusted network.
    None,
    /// Plain SMTP upgraded with STARTTLS, which is required (the default; port 587).
    #[default]
    Starttls,
    /// TLS from the start (port 465).
    Tls,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct SmtpConfig {
    /// The mail server; unset (the default) means email channels cannot be created.
    pub host: Option<String>,
    /// Default 25, 587 or 465 by `security`.
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender address. Default `faultline@localhost`.
    pub from: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: None,
            port: None,
            security: SmtpSecurity::Starttls,
            username: None,
            password: None,
            from: "faultline@localhost".into(),
        }
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            allow_internal_targets: false,
            allowed_internal_networks: Vec::new(),
            retry_base_ms: 1000,
            retry_max_secs: 600,
            give_up_after_secs: 86_400,
            request_timeout_ms: 10_000,
            poll_interval_ms: 1000,
            summary_interval_secs: 60,
            smtp: SmtpConfig::default(),
        }
    }
}

impl AlertsConfig {
    pub fn settings(&self) -> Result<crate::alerts::AlertSettings, ConfigError> {
        let networks = self
            .allowed_internal_networks
            .iter()
            .map(|n| {
                crate::alerts::target::parse_network(n).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "alerts.allowed_internal_networks: {n:?} is not an address or network"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(crate::alerts::AlertSettings {
            allowed: std::sync::Arc::new(crate::alerts::target::Allowed {
                all: self.allow_internal_targets,
                networks,
            }),
            retry_base: Duration::from_millis(self.retry_base_ms.max(1)),
            retry_max: Duration::from_secs(self.retry_max_secs.max(1)),
            give_up_after: Duration::from_secs(self.give_up_after_secs),
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
            poll_interval: Duration::from_millis(self.poll_interval_ms.max(10)),
            summary_interval: Duration::from_secs(self.summary_interval_secs),
            email_enabled: self.smtp.host.as_deref().is_some_and(|h| !h.is_empty()),
        })
    }
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
}

impl Config {
    /// Loads the layers in order. Nested settings come from the environment with a double
    /// underscore: `FAULTLINE_INGEST__BATCH_SIZE=256`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            fig = fig.merge(Toml::file_exact(file));
        }
        fig = fig
            .merge(Env::prefixed("FAULTLINE_").split("__"))
            .merge(Serialized::defaults(overrides));
        let config: Config = fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.external_url {
            parse_external_url(url)?;
        }
        // An empty token (say `FAULTLINE_ADMIN_TOKEN=` left blank) would be registered, could
        // never authenticate (clients send no empty tokens, and surrounding blanks are trimmed
        // from headers), and would still stop the first start from generating a usable one:
        // nobody could ever log in.
        if let Some(token) = &self.admin_token {
            if token.0.trim().is_empty() || token.0.trim() != token.0 {
                return Err(ConfigError::Invalid(
                    "admin_token must not be empty or start or end with whitespace".into(),
                ));
            }
        }
        // Header values reach us trimmed, so a padded token could never match.
        if let Some(token) = self.gitlab.token() {
            if token.0.trim() != token.0 {
                return Err(ConfigError::Invalid(
                    "gitlab.error_tracking_token must not start or end with whitespace".into(),
                ));
            }
        }
        if let Some(url) = &self.gitlab.url {
            parse_http_url(url).map_err(|_| {
                ConfigError::Invalid(format!("gitlab.url {url:?} is not an absolute http(s) URL"))
            })?;
            // Without the token GitLab refuses every question, so every unknown key would be
            // refused: better not to start at all.
            if self.gitlab.token().is_none() {
                return Err(ConfigError::Invalid(
                    "gitlab.url needs gitlab.error_tracking_token (the secret GitLab is configured with)".into(),
                ));
            }
        }
        if self.gitlab.key_cache_secs == 0
            || self.gitlab.key_cache_negative_secs == 0
            || self.gitlab.key_cache_capacity == 0
            || self.gitlab.request_timeout_secs == 0
        {
            return Err(ConfigError::Invalid(
                "gitlab.key_cache_secs, key_cache_negative_secs, key_cache_capacity and request_timeout_secs must be positive".into(),
            ));
        }
        if self.ingest.batch_size == 0 || self.ingest.queue_capacity == 0 {
            return Err(ConfigError::Invalid(
                "ingest.batch_size and ingest.queue_capacity must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The external URL, defaulting to the address actually bound.
    pub fn external_url_for(&self, bound: SocketAddr) -> Result<Url, ConfigError> {
        match &self.external_url {
            Some(u) => parse_external_url(u),
            None => parse_external_url(&format!("http://{bound}")),
        }
    }
}

fn parse_external_url(s: &str) -> Result<Url, ConfigError> {
    parse_http_url(s)
}

/// An absolute `http` or `https` URL with a host.
pub fn parse_http_url(s: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(s).map_err(|_| ConfigError::ExternalUrl(s.to_owned()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::ExternalUrl(s.to_owned()));
    }
    Ok(url)
}

// figment's `Jail` closures return its own large error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        figment::Jail::expect_with(|_jail| {
            let cfg = Config::load(Some(&path), &Overrides::default()).expect("example config");
            let def = Config::default();
            assert_eq!(cfg.listen, def.listen);
            assert_eq!(cfg.ingest.max_event_bytes, def.ingest.max_event_bytes);
            assert_eq!(cfg.ingest.batch_size, def.ingest.batch_size);
            assert_eq!(cfg.retention.days, def.retention.days);
            assert_eq!(cfg.gitlab.key_cache_secs, def.gitlab.key_cache_secs);
            assert_eq!(cfg.gitlab.key_grace_secs, def.gitlab.key_grace_secs);
            assert_eq!(cfg.gitlab.url, None);
            assert_eq!(cfg.alerts.retry_base_ms, def.alerts.retry_base_ms);
            assert_eq!(cfg.alerts.give_up_after_secs, def.alerts.give_up_after_secs);
            assert_eq!(cfg.alerts.smtp.security, def.alerts.smtp.security);
            assert_eq!(cfg.alerts.smtp.from, def.alerts.smtp.from);
            Ok(())
        });
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("f.toml", "listen = \"127.0.0.1:1000\"\ndata_dir = \"/from-file\"\n[ingest]\nbatch_size = 7\n")?;
            jail.set_env("FAULTLINE_LISTEN", "127.0.0.1:2000");
            jail.set_env("FAULTLINE_INGEST__BATCH_SIZE", "9");
            let file = Path::new("f.toml");
            let cfg = Config::load(Some(file), &Overrides::default()).expect("load");
            assert_eq!(cfg.listen.port(), 2000);
            assert_eq!(cfg.data_dir, PathBuf::from("/from-file"));
            assert_eq!(cfg.ingest.batch_size, 9);
            let flags = Overrides {
                listen: Some("127.0.0.1:3000".parse().expect("addr")),
                ..Default::default()
            };
            let cfg = Config::load(Some(file), &flags).expect("load");
            assert_eq!(cfg.listen.port(), 3000);
            Ok(())
        });
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret("glpat-secret".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
    }

    #[test]
    fn blank_admin_token_is_refused() {
        for blank in ["", "   "] {
            figment::Jail::expect_with(|jail| {
                jail.set_env("FAULTLINE_ADMIN_TOKEN", blank);
                assert!(
                    Config::load(None, &Overrides::default()).is_err(),
                    "{blank:?}"
                );
                Ok(())
            });
        }
        // The environment is trimmed by figment; a file keeps what it says.
        figment::Jail::expect_with(|jail| {
            jail.create_file("f.toml", "admin_token = \" glpat-padded \"\n")?;
            assert!(Config::load(Some(Path::new("f.toml")), &Overrides::default()).is_err());
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("FAULTLINE_ADMIN_TOKEN", "glpat-configured");
            let cfg = Config::load(None, &Overrides::default()).expect("load");
            assert_eq!(cfg.admin_token, Some(Secret("glpat-configured".into())));
            Ok(())
        });
    }

    #[test]
    fn gitlab_settings_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FAULTLINE_GITLAB__URL", "https://gitlab.example.com");
            jail.set_env("FAULTLINE_GITLAB__ERROR_TRACKING_TOKEN", "shared-secret");
            let cfg = Config::load(None, &Overrides::default()).expect("load");
            assert_eq!(
                cfg.gitlab.url.as_deref(),
                Some("https://gitlab.example.com")
            );
            assert_eq!(cfg.gitlab.token(), Some(&Secret("shared-secret".into())));
            assert_eq!(cfg.gitlab.key_cache_secs, 60);
            let printed = format!("{cfg:?}");
            assert!(!printed.contains("shared-secret"), "{printed}");
            Ok(())
        });
        // A URL without the token cannot work, so it does not start; a blank token is no token.
        figment::Jail::expect_with(|jail| {
            jail.set_env("FAULTLINE_GITLAB__URL", "https://gitlab.example.com");
            jail.set_env("FAULTLINE_GITLAB__ERROR_TRACKING_TOKEN", " ");
            assert!(Config::load(None, &Overrides::default()).is_err());
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("FAULTLINE_GITLAB__URL", "gitlab.example.com");
            jail.set_env("FAULTLINE_GITLAB__ERROR_TRACKING_TOKEN", "shared-secret");
            assert!(Config::load(None, &Overrides::default()).is_err());
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("f.toml", "[gitlab]\nerror_tracking_token = \" padded \"\n")?;
            assert!(Config::load(Some(Path::new("f.toml")), &Overrides::default()).is_err());
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("FAULTLINE_GITLAB__ERROR_TRACKING_TOKEN", "");
            let cfg = Config::load(None, &Overrides::default()).expect("load");
            assert_eq!(cfg.gitlab.token(), None);
            Ok(())
        });
    }

    #[test]
    fn bad_external_url_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FAULTLINE_EXTERNAL_URL", "not a url");
            assert!(Config::load(None, &Overrides::default()).is_err());
            Ok(())
        });
    }
}
