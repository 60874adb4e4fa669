//! PostgreSQL for the ingestion bench: the cluster (a superuser URL given by the caller, or a
//! durable throwaway one started with `scripts/throwaway-postgres` and stopped when dropped),
//! a fresh database per configuration, the stored-event count for the end-of-run check, and
//! the postmaster's pid, whose process tree is the database server's CPU.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use tokio_postgres::NoTls;

/// A PostgreSQL cluster the bench may create databases in.
pub struct Cluster {
    /// A superuser URL, to the `postgres` database or any other.
    pub url: String,
    /// The throwaway cluster's directory, stopped and removed on drop; `None` for a cluster the
    /// caller runs.
    throwaway: Option<PathBuf>,
}

impl Cluster {
    /// `auto` starts a durable throwaway cluster (fsync on: a commit costs what it costs in
    /// production); anything else is taken as the superuser URL of a running one.
    pub fn open(setting: &str) -> anyhow::Result<Cluster> {
        if setting.trim() != "auto" {
            return Ok(Cluster {
                url: setting.trim().to_owned(),
                throwaway: None,
            });
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/throwaway-postgres");
        let out = Command::new(script)
            .args(["start", "--durable"])
            .output()
            .context("running scripts/throwaway-postgres start --durable")?;
        if !out.status.success() {
            bail!(
                "scripts/throwaway-postgres start --durable failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Its output is shell: `export FAULTLINE_TEST_POSTGRES=...` and `export PGTHROWAWAY=...`.
        let text = String::from_utf8_lossy(&out.stdout);
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(str::to_owned)
        };
        let dir = var("PGTHROWAWAY").context("no PGTHROWAWAY in the script's output")?;
        // Owned from here on, so that it is stopped even if the rest fails.
        let mut cluster = Cluster {
            url: String::new(),
            throwaway: Some(PathBuf::from(dir)),
        };
        cluster.url = var("FAULTLINE_TEST_POSTGRES")
            .context("no FAULTLINE_TEST_POSTGRES in the script's output")?;
        Ok(cluster)
    }

    /// Where the cluster is, for the log: the URL without its password, and whether it is
    /// the bench's own.
    pub fn describe(&self) -> String {
        let mut url = url::Url::parse(&self.url)
            .map(|mut u| {
                if u.password().is_some() {
                    let _ = u.set_password(Some("redacted"));
                }
                u.to_string()
            })
            .unwrap_or_else(|_| "[a connection string]".into());
        if let Some(dir) = &self.throwaway {
            url += &format!(" (durable throwaway cluster in {})", dir.display());
        }
        url
    }

    /// Creates the empty database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let client = connect(&self.url).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        let mut url = url::Url::parse(&self.url).context("the cluster's URL")?;
        url.set_path(&format!("/{name}"));
        Ok(url.to_string())
    }

    /// Drops the database `name` (its servers must be stopped); failures are only reported.
    pub async fn drop_database(&self, name: &str) {
        let result = async {
            let client = connect(&self.url).await?;
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(e) = result {
            eprintln!("  could not drop database {name}: {e:#}");
        }
    }

    /// The postmaster's pid, when the server runs on this machine and `/proc` shows it: the
    /// parent of the backend serving a connection of ours.
    pub async fn postmaster_pid(&self) -> Option<u32> {
        let client = connect(&self.url).await.ok()?;
        let backend: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .ok()?
            .get(0);
        let status = std::fs::read_to_string(format!("/proc/{backend}/status")).ok()?;
        // The same pid in our /proc can be another process if the server runs elsewhere (or in
        // another pid namespace): believe it only if its parent is a PostgreSQL server.
        let ppid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse()
            .ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
        matches!(comm.trim(), "postgres" | "postmaster").then_some(ppid)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(dir) = self.throwaway.take() {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/throwaway-postgres");
            match Command::new(script).arg("stop").arg(&dir).status() {
                Ok(s) if s.success() => {}
                _ => eprintln!(
                    "could not stop the throwaway PostgreSQL cluster; run scripts/throwaway-postgres stop {}",
                    dir.display()
                ),
            }
        }
    }
}

/// A connection of our own, driven by a task on the current runtime.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Rows in `events` (every day partition).
pub async fn count_events(url: &str) -> anyhow::Result<u64> {
    let client = connect(url).await?;
    let n: i64 = client
        .query_one("SELECT COUNT(*) FROM events", &[])
        .await?
        .get(0);
    Ok(n as u64)
}
