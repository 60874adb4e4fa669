//! Wires the pieces together: opens the store, bootstraps the first administrator, loads the key
//! cache, binds the listener and serves until shutdown. [`spawn`] is the one seam tests use to
//! start the real server on `127.0.0.1:0`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::domain::keycache::KeyCache;
use crate::domain::ratelimit::RateLimiter;
use crate::domain::tokens;
use crate::gitlab::{GitlabKeys, GitlabSettings};
use crate::http::ingest::IngestSettings;
use crate::http::serve::{serve, ServeConfig};
use crate::http::{self, AppParts, AppState};
use crate::metrics::Metrics;
use crate::store::{NewToken, NewUser, SinkHooks, Store};
use crate::writer::{Writer, WriterConfig};

/// Name of the file the first start writes the administrator's token (first line) and the
/// web UI password of `root` (second line) to.
pub const INITIAL_TOKEN_FILE: &str = "initial_admin_token";

/// A running gateway.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    /// The token created on first start, if this start created one.
    pub initial_admin_token: Option<String>,
    /// The web UI password of `root` created on first start, with the token.
    pub initial_admin_password: Option<String>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Asks the server to stop and waits until in-flight requests finished.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Waits for the server to stop on its own (after a signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }

    /// A sender that stops the server when `true` is sent.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Name of the file in the data directory that a running server holds locked.
pub const LOCK_FILE: &str = "faultline.lock";

/// A data directory held by this process: one server per directory, because each server's key
/// cache is loaded once and kept up to date by its own writes only. A second server on the same
/// directory would go on accepting keys the first one deleted. The lock is an advisory lock
/// (`flock`) on [`LOCK_FILE`], so the kernel drops it when the process ends, however it ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the data directory's lock, creating the directory if needed, or says which process
/// holds it.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<DataDirLock> {
    use std::io::{Read as _, Seek as _};
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // The holder's pid, for the message a second server prints.
            file.set_len(0)?;
            write!(file, "{}", std::process::id())?;
            Ok(DataDirLock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "another process".to_owned(),
                pid => format!("another process (pid {pid})"),
            };
            anyhow::bail!(
                "the data directory {} is in use by {holder}: one faultline server per data \
                 directory; stop that one or give this one its own --data-dir",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Opens the configured database and applies its migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    crate::store::open(&config.database, &config.data_dir)
        .await
        .context("opening the database")
}

/// Starts the gateway and returns once it is listening.
pub async fn spawn(config: Config) -> anyhow::Result<Server> {
    spawn_with_clock(config, Arc::new(SystemClock::new())).await
}

/// [`spawn`] with the clock the time-dependent caches read: tests pass a
/// [`crate::clock::ManualClock`] to move through cache lifetimes without waiting.
pub async fn spawn_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Server> {
    let gitlab_settings = GitlabSettings::from_config(&config.gitlab)?;
    // The port first: a busy port must not leave a half-made data directory or a printed
    // token behind.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let lock = lock_data_dir(&config.data_dir)?;
    let store = open_store(&config).await?;
    let initial = bootstrap_admin(store.as_ref(), &config).await?;
    let (initial_admin_token, initial_admin_password) = match initial {
        Some(i) => (Some(i.token), Some(i.password)),
        None => (None, None),
    };

    let settings = store.all_settings().await.context("loading settings")?;
    let key_count = store.key_count().await.context("counting client keys")?;
    let cache = Arc::new(KeyCache::with_capacity(
        usize::try_from(key_count).unwrap_or(0),
    ));
    for setting in settings {
        cache.set_setting(setting);
    }
    let filling = cache.clone();
    store
        .for_each_key(Box::new(move |key| filling.upsert_key(&key)))
        .await
        .context("loading client keys")?;
    tracing::info!(keys = cache.key_count(), "key cache loaded");
    let (tx, rx) = watch::channel(false);
    // With several nodes on one database, changes made through the others (PostgreSQL only).
    store.watch_key_cache(cache.clone(), tx.subscribe());

    let addr = listener.local_addr()?;
    let external_url = config.external_url_for(addr)?;

    let metrics = Arc::new(Metrics::new());
    let alert_clock = Arc::new(crate::clock::WallClock::default());
    let alerts_wake = Arc::new(tokio::sync::Notify::new());
    let alert_settings = config.alerts.settings()?;
    let alert_client =
        crate::alerts::http_client(&alert_settings).context("building the alert HTTP client")?;
    let mailer = crate::alerts::email::mailer(&config.alerts.smtp, alert_settings.request_timeout)
        .context("reading [alerts.smtp]")?;
    let sink = store
        .open_sink(SinkHooks {
            clock: alert_clock.clone(),
            alerts_queued: alerts_wake.clone(),
        })
        .await
        .context("opening the writer's connection")?;
    let writer = Writer::start(
        sink,
        WriterConfig {
            queue_capacity: config.ingest.queue_capacity,
            batch_size: config.ingest.batch_size,
            batch_interval: config.ingest.batch_interval(),
        },
        metrics.clone(),
    )
    .context("starting the writer thread")?;

    let retention_store = store.clone();
    let purge_store = store.clone();
    let purge = Arc::new(tokio::sync::Notify::new());
    let gitlab_token = config.gitlab.token();
    let gitlab = match (gitlab_settings, gitlab_token) {
        (Some(settings), Some(token)) => {
            tracing::info!(endpoint = %settings.endpoint, "unknown client keys are checked with GitLab");
            let keys = GitlabKeys::new(settings, &token.0, clock, store.clone(), metrics.clone())
                .context("setting up the GitLab key check")?;
            Some(Arc::new(keys))
        }
        _ => None,
    };
    let state = AppState::new(AppParts {
        store,
        keys: cache,
        metrics,
        external_url,
        writer: writer.handle(),
        rate_limiter: Arc::new(RateLimiter::new(config.ingest.rate_limit_per_minute)),
        ingest: Arc::new(IngestSettings {
            max_event_bytes: config.ingest.max_event_bytes,
            max_envelope_bytes: config.ingest.max_envelope_bytes,
            max_compressed_bytes: config.ingest.max_compressed_bytes,
            max_attachment_bytes: config.ingest.max_attachment_bytes,
            ack: config.ingest.ack,
            body_timeout: std::time::Duration::from_secs(config.http.body_timeout_secs),
        }),
        purge: purge.clone(),
        gitlab_token_digest: gitlab_token.map(|t| tokens::digest(&t.0)),
        gitlab,
        alert_clock: alert_clock.clone(),
        alerts_wake: alerts_wake.clone(),
        alert_settings: alert_settings.clone(),
        sign_in_throttle: Arc::new(crate::domain::passwords::SignInThrottle::new()),
    });
    let gateway = http::Gateway::new(state.clone());
    // Deletes data older than `retention.days` in the background; stops with the server.
    crate::retention::spawn(
        retention_store,
        config.retention.clone(),
        state.metrics.clone(),
        tx.subscribe(),
    );
    // Removes deleted projects' rows, starting with any a restart left half done.
    crate::purge::spawn(purge_store, purge, tx.subscribe());
    // Sends the alerts waiting in the outbox, those a previous run left included.
    crate::alerts::spawn(
        crate::alerts::Delivery {
            store: state.store.clone(),
            client: alert_client,
            settings: alert_settings,
            clock: alert_clock,
            wake: alerts_wake,
            external_url: state.external_url.clone(),
            writer: state.writer.clone(),
            node: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            mailer,
            mail_from: config.alerts.smtp.from.clone(),
        },
        tx.subscribe(),
    );
    let serve_config = ServeConfig {
        header_timeout: std::time::Duration::from_secs(config.http.header_timeout_secs),
        max_connections: config.http.max_connections,
        shutdown_timeout: std::time::Duration::from_secs(config.http.shutdown_timeout_secs),
    };
    let task = tokio::spawn(async move {
        serve(listener, gateway, serve_config, rx).await;
        // Every request that was answered has had its records committed (or, in queued mode,
        // queued); the writer now drains the queue before the process may exit.
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .context("writer shutdown")?;
        // Held until everything above is written.
        drop(lock);
        Ok(())
    });
    tracing::info!(%addr, external_url = %state.external_url, "faultline listening on {addr}");
    Ok(Server {
        addr,
        state,
        initial_admin_token,
        initial_admin_password,
        shutdown: tx,
        task,
    })
}

/// Runs until SIGINT or SIGTERM, then stops cleanly.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let server = spawn(config).await?;
    if let Some(token) = &server.initial_admin_token {
        // Printed once, on stdout rather than through the log, so that log collection does not
        // keep a copy of the secret.
        // Not `println!`, which panics when stdout is closed; the token is in the data
        // directory as well.
        let _ = writeln!(
            std::io::stdout(),
            "Initial administrator token (shown once, also saved to the data directory): {token}"
        );
    }
    if let Some(password) = &server.initial_admin_password {
        let _ = writeln!(
            std::io::stdout(),
            "Initial web UI password of root (shown once, also saved to the data directory): {password}"
        );
    }
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, finishing in-flight requests");
        let _ = stop.send(true);
    });
    server.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Makes sure an administrator can log in:
/// - with `admin_token` configured, that token is accepted (created for the `root` user, made
///   an administrator if needed, when its digest is not stored yet);
/// - otherwise, on an empty database, a `root` administrator with a token and a web UI password
///   are created; both are written to `<data dir>/initial_admin_token` (the token on the first
///   line, the password on the second) with mode 0600 and returned.
pub async fn bootstrap_admin(
    store: &dyn Store,
    config: &Config,
) -> anyhow::Result<Option<InitialAdmin>> {
    if let Some(secret) = &config.admin_token {
        let digest = tokens::digest(&secret.0);
        if store.token_by_digest(digest).await?.is_some() {
            return Ok(None);
        }
        let root = match store.user_by_username("root").await? {
            Some(u) if u.is_admin => u,
            Some(_) => anyhow::bail!(
                "a non-administrator user named root exists; cannot attach admin_token to it"
            ),
            // Several nodes starting together on one database race for these two rows: the
            // loser of each race takes the winner's.
            None => match store.create_user(root_user()).await {
                Ok(root) => root,
                Err(crate::store::StoreError::Conflict(_)) => store
                    .user_by_username("root")
                    .await?
                    .context("root vanished while starting")?,
                Err(e) => return Err(e.into()),
            },
        };
        let created = store
            .create_token(NewToken {
                user_id: root.id,
                name: "configured admin token".into(),
                scopes: vec!["api".into()],
                expires_at: None,
                digest,
            })
            .await;
        match created {
            Ok(_) | Err(crate::store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!("configured administrator token registered");
        return Ok(None);
    }
    if store.user_count().await? > 0 {
        return Ok(None);
    }
    let root = match store.create_user(root_user()).await {
        Ok(root) => root,
        // Another node on the same database created it first; that node prints the secrets.
        Err(crate::store::StoreError::Conflict(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let secret = tokens::generate_token();
    store
        .create_token(NewToken {
            user_id: root.id,
            name: "initial admin token".into(),
            scopes: vec!["api".into()],
            expires_at: None,
            digest: tokens::digest(&secret),
        })
        .await?;
    let password = crate::domain::passwords::generate();
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || crate::domain::passwords::hash(&password)).await??
    };
    store.set_password(root.id, hash).await?;
    let path = config.data_dir.join(INITIAL_TOKEN_FILE);
    write_secret_file(&path, &format!("{secret}\n{password}"))?;
    tracing::info!(file = %path.display(), "created administrator 'root'; its token and password were written to the file");
    Ok(Some(InitialAdmin {
        token: secret,
        password,
    }))
}

/// What the first start creates for `root`.
pub struct InitialAdmin {
    pub token: String,
    /// The web UI password.
    pub password: String,
}

/// The administrator every fresh installation gets.
fn root_user() -> NewUser {
    NewUser {
        username: "root".into(),
        name: "Administrator".into(),
        email: None,
        is_admin: true,
    }
}

/// Writes `secret` to `path`, readable by the owner only. The mode is set at creation, so the
/// secret is never briefly readable by others.
fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{secret}")?;
    #[cfg(unix)]
    {
        // In case the file already existed with a wider mode.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    f.sync_all()?;
    Ok(())
}
