//! `faultline admin copy-database`: copies a data directory's SQLite database into an empty
//! PostgreSQL database, which is how an installation moves from SQLite to PostgreSQL with its
//! whole history (identities and their password hashes and tokens, keys and settings, errors,
//! events with their payloads, counts, alerts and web sessions).
//!
//! **Shape.** A blocking thread reads SQLite on a read-only connection inside one read
//! transaction, so every table comes from the same snapshot, and streams rows in batches (at
//! most [`BATCH_ROWS`] rows or about [`BATCH_BYTES`] bytes) through a small bounded channel; no
//! table is ever held in memory. The async side writes each table with one binary `COPY ...
//! FROM STDIN`, the fastest way into PostgreSQL and one that type-checks every value against
//! the column (`BIGINT`, `BOOLEAN`, `TEXT`, `BYTEA`). Ids are copied as they are; afterwards
//! every identity sequence (and `events_id_seq`) is moved past the highest id, and past what
//! SQLite's `AUTOINCREMENT` already handed out, so an id deleted on SQLite is not given again.
//!
//! **One transaction for everything.** The whole copy, the count check included, is one
//! PostgreSQL transaction. A copy that fails half-way (a broken connection, a full disk, a row
//! PostgreSQL refuses) leaves the target as empty as it was, so the command can simply be run
//! again: with one transaction per table, a failure would leave a partly filled database that
//! the emptiness check then refuses. The target is not in use meanwhile, so the long
//! transaction holds up no one; PostgreSQL has no limit on a transaction's size beyond disk.
//!
//! **Mapping.** Column names are the same on both sides. SQLite's 0/1 integers become
//! `BOOLEAN`s, blobs `BYTEA`. `events` is partitioned by the day received: each needed partition
//! is created first; copied events get `node = 0` and `node_seq = id`: node 0 has no
//! `ingest_nodes` row, so no node takes them for a dead node's uncounted tail (their counts
//! are in `errors` and `error_hourly` already: the SQLite counts are brought up to date before
//! the copy). `event_ids`, PostgreSQL's deduplication table, is filled from the copied events.
//! SQLite's `ingest_state` mark has no counterpart to copy (see `ingest_nodes` above).
//!
//! **Checks.** Before anything is written, both schemas are compared with the table list here
//! (every SQLite table and column, every PostgreSQL table and column), so a table added to one
//! schema later cannot be silently left behind. At the end, each table's row count in
//! PostgreSQL must equal SQLite's, or the transaction is rolled back and the error names the
//! table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use indicatif::{ProgressBar, ProgressStyle};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::schema::{create_partition_sql, DAY_MS};
use super::{locks, PgStore};
use crate::store::sqlite::{SqliteOptions, SqliteSink, SqliteStore};

/// Most rows in one batch from the reader.
const BATCH_ROWS: usize = 2_000;
/// A batch is sent once it holds about this many bytes of values: payloads and attachments
/// can be large, and a batch of 2,000 of them should not be.
const BATCH_BYTES: usize = 4 << 20;
/// Batches waiting between the reader and the writer: enough to keep both busy.
const CHANNEL_BATCHES: usize = 2;

/// How a column is read from SQLite and written to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `INTEGER` → `BIGINT`.
    Int,
    /// `INTEGER` 0/1 → `BOOLEAN`.
    Bool,
    Text,
    /// `BLOB` → `BYTEA`.
    Bytes,
}

impl Kind {
    fn pg_type(self) -> Type {
        match self {
            Kind::Int => Type::INT8,
            Kind::Bool => Type::BOOL,
            Kind::Text => Type::TEXT,
            Kind::Bytes => Type::BYTEA,
        }
    }
}

/// Where a table's ids come from in PostgreSQL, to be moved past the copied ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// No generated id.
    None,
    /// An identity column `id`.
    Identity,
    /// A plain sequence (a partitioned table cannot have an identity column).
    Sequence(&'static str),
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    ids: Ids,
    /// `events` only: PostgreSQL's `node` and `node_seq`, filled with 0 and the event's id.
    node_columns: bool,
}

use Kind::{Bool, Bytes, Int, Text};

/// Every table, in an order that copies each parent before its children.
const TABLES: &[Table] = &[
    Table {
        name: "users",
        columns: &[
            ("id", Int),
            ("username", Text),
            ("name", Text),
            ("email", Text),
            ("is_admin", Bool),
            ("created_at", Int),
            ("password_hash", Text),
        ],
        ids: Ids::Identity,
        node_columns: false,
    },
    Table {
        name: "projects",
        columns: &[
            ("id", Int),
            ("name", Text),
            ("path", Text),
            ("namespace_path", Text),
            ("path_with_namespace", Text),
            ("created_at", Int),
            ("deleting_since", Int),
            ("error_seq", Int),
        ],
        ids: Ids::Identity,
        node_columns: false,
    },
    Table {
        name: "project_members",
        columns: &[("project_id", Int), ("user_id", Int), ("access_level", Int)],
        ids: Ids::None,
        node_columns: false,
    },
    Table {
        name: "personal_access_tokens",
        columns: &[
            ("id", Int),
            ("user_id", Int),
            ("name", Text),
            ("digest", Bytes),
            ("scopes", Text),
            ("expires_at", Text),
            ("revoked", Bool),
            ("created_at", Int),
        ],
        ids: Ids::Identity,
        node_columns: false,
    },
    Table {
        name: "error_tracking_settings",
        columns: &[
            ("project_id", Int),
            ("active", Bool),
            ("integrated", Bool),
            ("project_name", Text),
            ("sentry_external_url", Text),
            ("api_url", Text),
        ],
        ids: Ids::None,
        node_columns: false,
    },
    Table {
        name: "client_keys",
        columns: &[
            ("id", Int),
            ("project_id", Int),
            ("public_key", Text),
            ("active", Bool),
            ("created_at", Int),
            ("deleted_at", Int),
        ],
        ids: Ids::Identity,
        node_columns: false,
    },
    Table {
        name: "errors",
        columns: &[
            ("id", Int),
            ("project_id", Int),
            ("fingerprint", Int),
            ("name", Text),
            ("description", Text),
            ("actor", Text),
            ("platform", Text),
            ("status", Int),
            ("event_count", Int),
            ("approximated_user_count", Int),
            ("first_seen_at", Int),
            ("last_seen_at", Int),
            ("short_seq", Int),
        ],
        ids: Ids::Identity,
        node_columns: false,
    },
    Table {
        name: "events",
        columns: &[
            ("id", Int),
            ("project_id", Int),
            ("error_id", Int),
            ("event_id", Text),
            ("occurred_at", Int),
            ("received_at", Int),
            ("level", Text),
            ("environment", Text),
            ("release", Text),
            ("platform", Text),
            ("user_identity", Text),
            ("message", Text),
            ("is_message", Bool),
            ("name", Text),
            ("description", Text),
            ("actor", Text),
            ("payload", Bytes),
            ("payload_codec", Int),
        ],
        ids: Ids::Sequence("events_id_seq"),
        node_columns: true,
    },
    Table {
        name: "attachments",
        columns: &[
            ("id", Int),
            ("project_id", Int),
            ("event_id", Text),
            ("filename", Text),
            ("content_type", Text),
            ("attachment_type", Text),
            ("data", Bytes),
            ("received_at", Int),
        ],
        ids: Ids::Identity,
        node_columns: false,
    },
    Table {
        name: "user_reports",
        columns: &[
            ("id", Int),
            ("project_id", Int),
            ("event_id", Text),
            ("name", Text),
            ("email", Text),
            ("comments", Text),
            ("payload", Bytes),
            ("received_at", Int),
        ],
        ids: Ids::Identity,
        node_columns: false,
    },
    Table {
        name: "error_hourly",
        columns: &[("error_id", Int), ("hour", Int), ("count", Int)],
        ids: Ids::None,
        node_columns: false,
    },
    Table {
        name: "error_users",
        columns: &[("error_id", Int), ("user_hash", Int)],
        ids: Ids::None,
        node_columns: false,
    },
    Table {
        name: "error_tags",
        columns: &[("error_id", Int), ("key", Text), ("value", Text)],
        ids: Ids::None,
        node_columns: false,
    },
    Table {
        name: "alert_rules",
        columns: &[
            ("id", Int),
            ("project_id", Int),
            ("name", Text),
            ("on_new", Bool),
            ("on_regression", Bool),
            ("frequency_count", Int),
            ("frequency_minutes", Int),
            ("quiet_minutes", Int),
            ("environments", Text),
            ("levels", Text),
            ("max_per_hour", Int),
            ("created_at", Int),
        ],
        ids: Ids::Identity,
        node_columns: false,
    },
    Table {
        name: "alert_channels",
        columns: &[
            ("id", Int),
            ("rule_id", Int),
            ("kind", Text),
            ("url", Text),
            ("secret", Text),
            ("created_at", Int),
            ("last_success_at", Int),
            ("last_failure_at", Int),
            ("last_failure_status", Int),
            ("last_failure_reason", Text),
        ],
        ids: Ids::Identity,
        node_columns: false,
    },
    Table {
        name: "alert_outbox",
        columns: &[
            ("id", Int),
            ("channel_id", Int),
            ("rule_id", Int),
            ("error_id", Int),
            ("trigger", Text),
            ("uuid", Text),
            ("created_at", Int),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("claimed_until", Int),
            ("claimed_by", Text),
        ],
        ids: Ids::Identity,
        node_columns: false,
    },
    Table {
        name: "alert_rule_state",
        columns: &[("rule_id", Int), ("error_id", Int), ("last_fired_at", Int)],
        ids: Ids::None,
        node_columns: false,
    },
    Table {
        name: "alert_deliveries",
        columns: &[("channel_id", Int), ("delivered_at", Int)],
        ids: Ids::None,
        node_columns: false,
    },
    Table {
        name: "web_sessions",
        columns: &[
            ("digest", Bytes),
            ("user_id", Int),
            ("csrf", Text),
            ("created_at", Int),
            ("expires_at", Int),
        ],
        ids: Ids::None,
        node_columns: false,
    },
];

/// SQLite tables deliberately not copied: the writer's count mark (on PostgreSQL each node
/// keeps its own in `ingest_nodes`, and copied events belong to no node) and the per-error
/// order of events (on PostgreSQL an index on `events` that the copied rows fill).
const SQLITE_ONLY: &[&str] = &["ingest_state", "event_by_error"];

/// PostgreSQL tables with no SQLite source: the dedup table (filled from `events`), the
/// nodes' marks, the key cache's revision and the migrations' bookkeeping.
const POSTGRES_ONLY: &[&str] = &[
    "event_ids",
    "ingest_nodes",
    "cache_revision",
    "schema_migrations",
];

/// One value on its way from SQLite to PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// Roughly what it occupies, for the batch size.
    fn size(&self) -> usize {
        match self {
            Value::Text(s) => s.len() + 8,
            Value::Bytes(b) => b.len() + 8,
            _ => 8,
        }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // Each arm checks its own type, so a value of the wrong kind is an error, not bytes
        // PostgreSQL would misread.
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => v.to_sql_checked(ty, out),
            Value::Bool(v) => v.to_sql_checked(ty, out),
            Value::Text(v) => v.to_sql_checked(ty, out),
            Value::Bytes(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A SQLite value as `kind`, or why it cannot be one.
fn convert(v: ValueRef<'_>, kind: Kind) -> anyhow::Result<Value> {
    Ok(match (v, kind) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(n), Kind::Int) => Value::Int(n),
        (ValueRef::Integer(n), Kind::Bool) => Value::Bool(n != 0),
        (ValueRef::Text(t), Kind::Text) => {
            Value::Text(String::from_utf8(t.to_vec()).context("text that is not valid UTF-8")?)
        }
        // SQLite does not enforce declared types; a blob column holding text is still bytes.
        (ValueRef::Blob(b) | ValueRef::Text(b), Kind::Bytes) => Value::Bytes(b.to_vec()),
        (other, kind) => bail!(
            "a {:?} value where {kind:?} was expected",
            other.data_type()
        ),
    })
}

/// What the reader found before the first row: the row counts, the days `events` spans and
/// what SQLite's `AUTOINCREMENT` handed out, all from the snapshot the rows come from.
#[derive(Debug, Default)]
struct Plan {
    /// Per entry of [`TABLES`].
    counts: Vec<u64>,
    event_days: Vec<i64>,
    /// `sqlite_sequence`: the highest id each `AUTOINCREMENT` table ever handed out.
    handed_out: BTreeMap<String, i64>,
}

enum Msg {
    Plan(Plan),
    /// Rows of the current table, in PostgreSQL's column order, one after the other.
    Rows {
        rows: usize,
        values: Vec<Value>,
    },
    /// The current table is complete.
    TableDone,
}

/// The reader gave up because the writer stopped listening; the writer's error is the one to
/// report.
#[derive(Debug)]
struct WriterGone;

impl std::fmt::Display for WriterGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the PostgreSQL side stopped")
    }
}

impl std::error::Error for WriterGone {}

/// One table's row counts on both sides.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub sqlite: u64,
    pub postgres: u64,
}

/// What the copy did: the count check per table.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub tables: Vec<TableCount>,
}

/// Copies the SQLite database `source` describes into the PostgreSQL database at `url`, which
/// must be empty (it is migrated first). The caller holds the data directory's lock, so no
/// server writes to `source` meanwhile. Shows a progress bar on a terminal.
pub async fn copy_sqlite_to_postgres(
    source: SqliteOptions,
    url: &str,
) -> anyhow::Result<CopyReport> {
    // The source in this build's schema, with the counts a crash left unwritten recounted, so
    // that the copied counts match the copied events.
    let opts = source.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        drop(SqliteStore::open_with(opts.clone()).context("opening the SQLite database")?);
        drop(
            SqliteSink::open(&opts, Default::default())
                .context("bringing the SQLite error counts up to date")?,
        );
        Ok(())
    })
    .await??;

    let store = PgStore::open(url)
        .await
        .context("opening and migrating the PostgreSQL database")?;
    let mut client = store.connect().await.context("connecting to PostgreSQL")?;
    check_postgres_schema(&client).await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM projects)
                    OR EXISTS (SELECT 1 FROM event_ids)",
            &[],
        )
        .await?;
    if row.get::<_, bool>(0) {
        bail!(
            "the PostgreSQL database {} is not empty: copy only into a new, empty database",
            super::redacted_url(url)
        );
    }

    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let path = source.path.clone();
    let reader = tokio::task::spawn_blocking(move || read_source(path, tx));
    let written = write_target(&mut client, rx).await;
    let read = reader.await.context("the SQLite reader stopped")?;
    // A reader that failed closed the channel, which the writer reports only as such.
    match read {
        Ok(Ok(())) | Err(WriterGone) => {}
        Ok(Err(e)) => return Err(e.context("reading the SQLite database")),
    }
    written
}

/// The reader's side: everything from one read transaction, so all tables and counts are of
/// one moment. Returns `Err(WriterGone)` when the writer stopped listening.
fn read_source(path: PathBuf, tx: mpsc::Sender<Msg>) -> Result<anyhow::Result<()>, WriterGone> {
    match read_all(&path, &tx) {
        Ok(()) => Ok(Ok(())),
        Err(e) if e.is::<WriterGone>() => Err(WriterGone),
        Err(e) => Ok(Err(e)),
    }
}

fn read_all(path: &std::path::Path, tx: &mpsc::Sender<Msg>) -> anyhow::Result<()> {
    let send = |m: Msg| tx.blocking_send(m).map_err(|_| WriterGone);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch("BEGIN DEFERRED")?;
    send(Msg::Plan(plan(&conn)?))?;
    for table in TABLES {
        let cols: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
        let mut st = conn.prepare(&format!("SELECT {} FROM {}", cols.join(", "), table.name))?;
        let mut it = st.query([])?;
        let (mut rows, mut bytes, mut values) = (0usize, 0usize, Vec::new());
        while let Some(r) = it
            .next()
            .with_context(|| format!("reading table {}", table.name))?
        {
            for (i, (col, kind)) in table.columns.iter().enumerate() {
                let v = convert(r.get_ref(i)?, *kind)
                    .with_context(|| format!("column {}.{col}", table.name))?;
                bytes += v.size();
                values.push(v);
            }
            if table.node_columns {
                let id: i64 = r.get(0)?;
                values.extend([Value::Int(0), Value::Int(id)]);
            }
            rows += 1;
            if rows >= BATCH_ROWS || bytes >= BATCH_BYTES {
                send(Msg::Rows {
                    rows,
                    values: std::mem::take(&mut values),
                })?;
                (rows, bytes) = (0, 0);
            }
        }
        if rows > 0 {
            send(Msg::Rows { rows, values })?;
        }
        send(Msg::TableDone)?;
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// Checks the SQLite schema against [`TABLES`] and reads the [`Plan`].
fn plan(conn: &Connection) -> anyhow::Result<Plan> {
    let mut st = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )?;
    let tables: BTreeSet<String> = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut columns = BTreeMap::new();
    for t in &tables {
        let mut st = conn.prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))?;
        let cols: BTreeSet<String> = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        columns.insert(t.clone(), cols);
    }
    check_schema("SQLite", &columns, SQLITE_ONLY, false)?;

    let mut plan = Plan::default();
    for table in TABLES {
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {}", table.name), [], |r| {
            r.get(0)
        })?;
        plan.counts.push(n as u64);
    }
    // The floor of received_at / DAY_MS (SQLite's division truncates towards zero), as
    // `schema::day_of`.
    let mut st = conn.prepare(&format!(
        "SELECT DISTINCT received_at / {DAY_MS} - (received_at % {DAY_MS} < 0) FROM events"
    ))?;
    plan.event_days = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare("SELECT name, seq FROM sqlite_sequence")?;
    plan.handed_out = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let (mark, last): (i64, i64) = conn.query_row(
        "SELECT (SELECT counted_through FROM ingest_state WHERE id = 1),
                (SELECT COALESCE(MAX(id), 0) FROM events)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if mark < last {
        bail!("the SQLite error counts are not up to date (events above {mark} are uncounted)");
    }
    Ok(plan)
}

/// Compares a schema's tables and columns (`found`) with [`TABLES`]; `only_here` are the
/// tables of this side that are deliberately not in the list. On PostgreSQL `events` has the
/// node columns as well.
fn check_schema(
    side: &str,
    found: &BTreeMap<String, BTreeSet<String>>,
    only_here: &[&str],
    postgres: bool,
) -> anyhow::Result<()> {
    for table in TABLES {
        let Some(cols) = found.get(table.name) else {
            bail!("the {side} database has no table {}", table.name);
        };
        let mut expected: BTreeSet<String> = table.columns.iter().map(|c| c.0.to_owned()).collect();
        if postgres && table.node_columns {
            expected.extend(["node".to_owned(), "node_seq".to_owned()]);
        }
        if *cols != expected {
            let missing: Vec<_> = expected.difference(cols).collect();
            let unknown: Vec<_> = cols.difference(&expected).collect();
            bail!(
                "the {side} table {} does not have the columns this copy knows \
                 (missing: {missing:?}, unknown: {unknown:?})",
                table.name
            );
        }
    }
    for t in found.keys() {
        if !TABLES.iter().any(|x| x.name == t) && !only_here.contains(&t.as_str()) {
            bail!("the {side} database has a table {t} that this copy does not know");
        }
    }
    Ok(())
}

/// Checks the migrated PostgreSQL schema against [`TABLES`] (partitions of `events` aside).
async fn check_postgres_schema(client: &Client) -> anyhow::Result<()> {
    let rows = client
        .query(
            "SELECT c.relname::text, a.attname::text
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
               AND NOT c.relispartition",
            &[],
        )
        .await?;
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rows {
        found.entry(r.get(0)).or_default().insert(r.get(1));
    }
    check_schema("PostgreSQL", &found, POSTGRES_ONLY, true)
}

/// The writer's side: one transaction for everything (see the module docs).
async fn write_target(
    client: &mut Client,
    mut rx: mpsc::Receiver<Msg>,
) -> anyhow::Result<CopyReport> {
    let plan = match rx.recv().await {
        Some(Msg::Plan(p)) => p,
        _ => bail!("the SQLite reader stopped before it began"),
    };
    let total: u64 = plan.counts.iter().sum();
    let bar = progress_bar(total);
    let tx = client.transaction().await?;

    // Partitions first, under the same advisory lock and in the same table-lock order as the
    // writer's own partition creation, in case a node starts on this database meanwhile.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&locks::PARTITION])
        .await?;
    tx.batch_execute("LOCK TABLE projects, errors IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    for day in &plan.event_days {
        tx.batch_execute(&create_partition_sql(*day))
            .await
            .with_context(|| format!("creating the events partition of day {day}"))?;
    }

    for table in TABLES {
        bar.set_message(table.name);
        let copied = copy_table(&tx, table, &mut rx, &bar)
            .await
            .with_context(|| format!("copying table {}", table.name))?;
        let line = format!(
            "{}: {copied} {}",
            table.name,
            if copied == 1 { "row" } else { "rows" }
        );
        if bar.is_hidden() {
            tracing::info!(table = table.name, rows = copied, "table copied");
        } else {
            bar.println(line);
        }
        if table.name == "events" {
            bar.set_message("event_ids");
            tx.execute(
                "INSERT INTO event_ids (project_id, event_id, received_at)
                 SELECT project_id, event_id, received_at FROM events",
                &[],
            )
            .await
            .context("filling event_ids from the events")?;
        }
    }

    bar.set_message("sequences");
    for table in TABLES {
        let sequence = match table.ids {
            Ids::None => continue,
            Ids::Identity => format!("pg_get_serial_sequence('{}', 'id')", table.name),
            Ids::Sequence(name) => format!("'{name}'"),
        };
        let handed_out = plan.handed_out.get(table.name).copied().unwrap_or(0);
        // The next id is above every copied id and every id SQLite ever handed out; with
        // neither, the sequence starts at 1 as on a new database.
        tx.execute(
            &format!(
                "SELECT setval({sequence}, GREATEST((SELECT MAX(id) FROM {t}), $1::bigint, 1),
                               GREATEST((SELECT MAX(id) FROM {t}), $1::bigint) > 0)",
                t = table.name
            ),
            &[&handed_out],
        )
        .await
        .with_context(|| format!("moving the id sequence of {}", table.name))?;
    }

    bar.set_message("count check");
    let mut counts = Vec::new();
    for (table, &sqlite) in TABLES.iter().zip(&plan.counts) {
        counts.push(TableCount {
            table: table.name,
            sqlite,
            postgres: pg_count(&tx, table.name).await?,
        });
        if table.name == "events" {
            counts.push(TableCount {
                table: "event_ids",
                sqlite,
                postgres: pg_count(&tx, "event_ids").await?,
            });
        }
    }
    check_counts(&counts)?;
    tx.commit().await.context("committing the copy")?;
    // Statistics for the planner at once, rather than whenever autovacuum gets to the new rows.
    bar.set_message("analyze");
    client
        .batch_execute("ANALYZE")
        .await
        .context("analyzing the copied tables")?;
    bar.finish_and_clear();
    Ok(CopyReport { tables: counts })
}

/// Writes one table's rows from the reader with a binary `COPY`; returns the rows written.
async fn copy_table(
    tx: &Transaction<'_>,
    table: &Table,
    rx: &mut mpsc::Receiver<Msg>,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut names: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
    let mut types: Vec<Type> = table.columns.iter().map(|c| c.1.pg_type()).collect();
    if table.node_columns {
        names.extend(["node", "node_seq"]);
        types.extend([Type::INT8, Type::INT8]);
    }
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            table.name,
            names.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    let width = types.len();
    loop {
        match rx.recv().await {
            Some(Msg::Rows { rows, values }) => {
                for row in values.chunks(width) {
                    writer.as_mut().write_raw(row.iter()).await?;
                }
                bar.inc(rows as u64);
            }
            Some(Msg::TableDone) => break,
            Some(Msg::Plan(_)) => bail!("the SQLite reader sent a second plan"),
            None => bail!("the SQLite reader stopped"),
        }
    }
    Ok(writer.as_mut().finish().await?)
}

async fn pg_count(tx: &Transaction<'_>, table: &str) -> anyhow::Result<u64> {
    let n: i64 = tx
        .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
        .await
        .with_context(|| format!("counting the rows of {table}"))?
        .get(0);
    Ok(n as u64)
}

/// The count check: every table has as many rows in PostgreSQL as in SQLite.
fn check_counts(counts: &[TableCount]) -> anyhow::Result<()> {
    let differ: Vec<String> = counts
        .iter()
        .filter(|c| c.sqlite != c.postgres)
        .map(|c| {
            format!(
                "{} has {} rows in SQLite and {} in PostgreSQL",
                c.table, c.sqlite, c.postgres
            )
        })
        .collect();
    if !differ.is_empty() {
        bail!(
            "the row counts differ, so nothing was committed: {}",
            differ.join("; ")
        );
    }
    Ok(())
}

/// A bar over every row to copy, drawn on standard error when it is a terminal (hidden
/// otherwise, so logs and scripts see only the result).
fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg:>24} [{bar:40}] {human_pos}/{human_len} rows, {elapsed} (about {eta} left)",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::Synchronous;

    /// The table list covers this build's SQLite schema exactly: a migration that adds a table
    /// or a column fails here until the copy knows it.
    #[test]
    fn tables_cover_the_sqlite_schema() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = SqliteOptions {
            path: dir.path().join("faultline.db"),
            synchronous: Synchronous::Normal,
            max_page_count: None,
        };
        drop(SqliteStore::open_with(opts.clone()).expect("open"));
        let conn = Connection::open(&opts.path).expect("open");
        let plan = plan(&conn).expect("the schema matches");
        assert_eq!(plan.counts.len(), TABLES.len());
        assert!(plan.event_days.is_empty());
    }

    #[test]
    fn every_table_is_copied_after_its_parents() {
        // The foreign keys of the SQLite schema, parent before child in TABLES.
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = SqliteOptions {
            path: dir.path().join("faultline.db"),
            synchronous: Synchronous::Normal,
            max_page_count: None,
        };
        drop(SqliteStore::open_with(opts.clone()).expect("open"));
        let conn = Connection::open(&opts.path).expect("open");
        let position = |t: &str| TABLES.iter().position(|x| x.name == t);
        for (i, table) in TABLES.iter().enumerate() {
            let mut st = conn
                .prepare(&format!(
                    "SELECT \"table\" FROM pragma_foreign_key_list('{}')",
                    table.name
                ))
                .expect("prepare");
            let parents: Vec<String> = st
                .query_map([], |r| r.get(0))
                .expect("query")
                .collect::<rusqlite::Result<_>>()
                .expect("rows");
            for p in parents {
                let at = position(&p).expect("a parent table is copied");
                assert!(at < i, "{p} is copied after its child {}", table.name);
            }
        }
    }

    #[test]
    fn values_convert_by_kind() {
        assert_eq!(
            convert(ValueRef::Integer(1), Kind::Bool).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            convert(ValueRef::Integer(0), Kind::Bool).unwrap(),
            Value::Bool(false)
        );
        assert_eq!(
            convert(ValueRef::Integer(-7), Kind::Int).unwrap(),
            Value::Int(-7)
        );
        assert_eq!(convert(ValueRef::Null, Kind::Bytes).unwrap(), Value::Null);
        assert_eq!(
            convert(ValueRef::Blob(b"\x00\xff"), Kind::Bytes).unwrap(),
            Value::Bytes(vec![0, 255])
        );
        assert_eq!(
            convert(ValueRef::Text(b"ab"), Kind::Text).unwrap(),
            Value::Text("ab".into())
        );
        assert!(convert(ValueRef::Text(b"\xff"), Kind::Text).is_err());
        assert!(convert(ValueRef::Text(b"1"), Kind::Int).is_err());
        assert!(convert(ValueRef::Real(1.5), Kind::Int).is_err());
    }

    #[test]
    fn the_count_check_names_the_table() {
        let ok = [TableCount {
            table: "users",
            sqlite: 2,
            postgres: 2,
        }];
        assert!(check_counts(&ok).is_ok());
        let off = [
            TableCount {
                table: "users",
                sqlite: 2,
                postgres: 2,
            },
            TableCount {
                table: "events",
                sqlite: 10,
                postgres: 9,
            },
        ];
        let e = check_counts(&off).unwrap_err().to_string();
        assert!(
            e.contains("events has 10 rows in SQLite and 9 in PostgreSQL"),
            "{e}"
        );
        assert!(!e.contains("users"), "{e}");
    }
}
