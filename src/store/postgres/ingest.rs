//! The writer's side on PostgreSQL ([`EventSink`]): one transaction per batch on a connection of
//! the writer's own, and the error counts it adds up in memory between flushes
//! ([`crate::store::counts`]), for several gateway nodes writing into one database.
//!
//! **Calling convention.** The trait is synchronous and the writer calls it from its own OS
//! thread, not from a tokio worker. The sink keeps the runtime's [`Handle`] from `open_sink` and
//! runs each method's queries with `Handle::block_on`; the connection itself is driven by a task
//! on the runtime.
//!
//! **A batch** is one transaction, committed before any of its jobs is answered, with one
//! statement per table (arrays through `UNNEST`), not one per event. Projects are looked up once
//! (`FOR KEY SHARE`, so the project row cannot be deleted before the commit; a project that is
//! gone or marked for deletion makes its events `ProjectGone`, as on SQLite). Event ids are
//! claimed in `event_ids` with `ON CONFLICT DO NOTHING RETURNING`: `events` is partitioned, so
//! it cannot hold the unique key itself; only the ids returned are stored, every other event
//! (one stored before, or an earlier one of the same batch) is a `Duplicate`. Each error of the
//! batch is looked up once; the missing ones take their short-id numbers from
//! `projects.error_seq` (in first-seen order, as on SQLite) and are inserted with
//! `ON CONFLICT DO NOTHING`, so an error another node created at the same moment is found
//! instead of doubled. A resolved error reopens (a regression); alerts are queued in the batch's
//! transaction.
//!
//! **Lock order.** Two nodes' batches, count writes and upkeep touch the same rows, so every
//! transaction takes its locks in one order and no two can wait on each other: projects
//! (ascending id), `event_ids` (sorted keys), errors (inserted in (project, fingerprint) order,
//! then `FOR KEY SHARE` and, for those that change, `FOR NO KEY UPDATE`, each in ascending id),
//! `error_users`, and only then `events`, `error_tags`, attachments and user reports. Count
//! writes lock their errors in ascending id before they change them. Table locks follow the same
//! order, which is what creating a partition relies on (below). A deadlock or serialization
//! failure that slips through anyway is retried a few times, since the whole batch is still in
//! memory.
//!
//! **Partitions.** `events` has one partition per day of `received_at`. Before a batch, the
//! partition of its day must exist; the sink remembers the days it has seen and otherwise
//! creates the partition (and tomorrow's, so midnight finds it ready) in a short transaction of
//! its own under the advisory lock [`locks::PARTITION`], because two nodes running
//! `CREATE TABLE IF NOT EXISTS ... PARTITION OF` at once can fail. Creating one locks `projects`
//! and `errors` (for the foreign keys) after `events`; the creator takes those first
//! (`SHARE ROW EXCLUSIVE`), in the order every batch takes them.
//!
//! **Counts across nodes.** Each node registers in `ingest_nodes` when its writer connects
//! (`INSERT ... RETURNING node`) and holds the session advisory lock `NODE_BASE + node` on that
//! connection, taken in the same transaction, so no other node sees the row before the lock is
//! held. The lock is the node's liveness: PostgreSQL releases it exactly when the session ends,
//! whether the process exited, was killed or lost its network. Every stored event carries
//! `node` and `node_seq`, a counter this sink keeps in memory from 1; one writer thread commits
//! serially, so the node's order is its commit order. Counts wait in memory ([`PendingCounts`],
//! keyed by `node_seq`) and are written as increments (`event_count = event_count + n`,
//! `GREATEST` for last seen, hourly rows added with `ON CONFLICT DO UPDATE`), the errors locked
//! in ascending id, together with `ingest_nodes.counted_through` for this node, in one
//! transaction. So, for every node, the events with `node_seq > counted_through` are exactly the
//! ones whose counts are not in the database.
//!
//! **Recovery.** At open, and then every [`RECOVERY_INTERVAL`] (the writer calls `flush_counts`
//! when `counts_due_in` says so, and batches check the time too), the sink tries
//! `pg_try_advisory_lock(NODE_BASE + n)` for every other registered node `n`. Getting it means
//! that node's session is gone and its events are final; holding it means no other survivor
//! recounts the same node. The sink then counts that node's events above its mark (joined to
//! their errors, as SQLite's `recount_tail`), writes them as increments and deletes the node's
//! row in one transaction, and releases the lock. A node whose counts were all written leaves a
//! row with nothing above its mark, which the next survivor just deletes.
//!
//! **Reconnection.** When the writer's connection breaks, the counts waiting in memory are
//! dropped, not written later: the commit they belong to may or may not have happened, and
//! another node may already be recounting them from the database. The failing call returns
//! `StoreError::Unavailable`; the next one connects again and registers a new node, and the old
//! node is recovered like any dead one (by this sink as soon as the server has ended the old
//! session). Until then the pending flag stays set, so readers ask for a flush, which recovers
//! it first when it can.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement, Transaction};

use super::alerts;
use super::schema::{create_partition_sql, day_of, partition_name};
use super::{locks, now_millis, PgStore};
use crate::clock::WallClock;
use crate::store::alerts::Trigger;
use crate::store::counts::PendingCounts;
use crate::store::ingest::{user_hash, EventOutcome, EventRecord, EventSink, Record, SinkHooks};
use crate::store::read::ErrorStatus;
use crate::store::{StoreError, StoreResult};

/// How often the sink looks for dead nodes whose counts are not all written.
pub const RECOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// Shortest time between two attempts to connect again, so that a database that refuses
/// connections is not asked again for every batch.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// How often a transaction that lost a deadlock or a serialization check is tried again.
const TRANSIENT_RETRIES: usize = 3;

/// Waits at open while another node's lock is still held: a process killed just before this
/// one started keeps its session for a moment, until the server notices the closed socket.
const OPEN_RECOVERY_WAITS_MS: [u64; 3] = [50, 100, 200];

/// Most pairs one [`KnownPairs`] holds before it starts over; about 4 MB.
const KNOWN_PAIRS_MAX: usize = 100_000;

/// Whether any text field of `r` contains a NUL character.
fn has_nul(r: &Record) -> bool {
    let nul = |s: &str| s.contains('\0');
    let opt = |s: &Option<String>| s.as_deref().is_some_and(nul);
    match r {
        Record::Event(e) => {
            nul(&e.event_id)
                || nul(&e.name)
                || nul(&e.description)
                || nul(&e.actor)
                || opt(&e.platform)
                || opt(&e.level)
                || opt(&e.environment)
                || opt(&e.release)
                || opt(&e.message)
                || opt(&e.user_identity)
                || e.search_tags.iter().any(|(k, v)| nul(k) || nul(v))
        }
        Record::Attachment(a) => {
            nul(&a.event_id) || nul(&a.filename) || opt(&a.content_type) || opt(&a.attachment_type)
        }
        Record::UserReport(u) => {
            opt(&u.event_id) || opt(&u.name) || opt(&u.email) || opt(&u.comments)
        }
    }
}

/// `r` with every NUL in its text fields replaced by U+FFFD, the replacement character.
fn without_nul(r: Record) -> Record {
    fn fix(s: &mut String) {
        if s.contains('\0') {
            *s = s.replace('\0', "\u{fffd}");
        }
    }
    fn fix_opt(s: &mut Option<String>) {
        if let Some(s) = s {
            fix(s);
        }
    }
    match r {
        Record::Event(mut e) => {
            for s in [
                &mut e.event_id,
                &mut e.name,
                &mut e.description,
                &mut e.actor,
            ] {
                fix(s);
            }
            for s in [
                &mut e.platform,
                &mut e.level,
                &mut e.environment,
                &mut e.release,
                &mut e.message,
                &mut e.user_identity,
            ] {
                fix_opt(s);
            }
            for (k, v) in &mut e.search_tags {
                fix(k);
                fix(v);
            }
            Record::Event(e)
        }
        Record::Attachment(mut a) => {
            fix(&mut a.event_id);
            fix(&mut a.filename);
            fix_opt(&mut a.content_type);
            fix_opt(&mut a.attachment_type);
            Record::Attachment(a)
        }
        Record::UserReport(mut u) => {
            for s in [&mut u.event_id, &mut u.name, &mut u.email, &mut u.comments] {
                fix_opt(s);
            }
            Record::UserReport(u)
        }
    }
}

/// Opens the writer's own connection and registers this node (see the module docs).
pub async fn open_sink(store: &PgStore, hooks: SinkHooks) -> StoreResult<Box<dyn EventSink>> {
    Ok(Box::new(PgSink::open(store, hooks).await?))
}

/// Prepared statements of one connection, by their text.
type Statements = HashMap<&'static str, Statement>;

/// The writer's connection and the node it is registered as.
struct Link {
    client: Client,
    node: i64,
    /// The `node_seq` of the next stored event.
    next_seq: i64,
    statements: Statements,
}

/// Writes batches into PostgreSQL on the writer's own connection.
pub struct PgSink {
    store: PgStore,
    handle: Handle,
    /// `None` after the connection broke, until the next call connects again.
    link: Option<Link>,
    /// No connection attempt before this, after a failed one.
    connect_after: Option<Instant>,
    known_users: KnownPairs,
    known_tags: KnownPairs,
    /// Error counts of committed batches not yet written.
    pending: PendingCounts,
    /// Set while counts of acknowledged events may be missing from the database: counts in
    /// `pending`, or a former node of this sink not yet recovered.
    has_pending: Arc<AtomicBool>,
    /// Nodes this sink was registered as before its connection broke, until recovered.
    orphans: Vec<i64>,
    /// Days whose `events` partition is known to exist.
    partitions: BTreeSet<i64>,
    next_recovery: Instant,
    clock: Arc<WallClock>,
    alerts_queued: Arc<Notify>,
}

/// (error id, user hash) pairs known to be in `error_users`, so that a user seen again on the
/// same error costs no insert attempt; a second set does the same for (error id, tag hash) pairs
/// in `error_tags` (as on SQLite). The sets only ever under-state what is stored: pairs are
/// added after their batch commits, rows leave those tables only with their error, and error
/// ids come from an identity column, so they are never handed out again. Another node storing
/// the same pair only makes this node's insert find it.
#[derive(Default)]
struct KnownPairs {
    by_error: HashMap<i64, HashSet<i64>>,
    len: usize,
}

impl KnownPairs {
    fn contains(&self, error_id: i64, item: i64) -> bool {
        self.by_error
            .get(&error_id)
            .is_some_and(|items| items.contains(&item))
    }

    fn remember(&mut self, pairs: Vec<(i64, i64)>) {
        for (error_id, item) in pairs {
            if self.len >= KNOWN_PAIRS_MAX {
                // Starting over is simpler than tracking recency, and the set refills within
                // a few batches.
                self.by_error.clear();
                self.len = 0;
            }
            if self.by_error.entry(error_id).or_default().insert(item) {
                self.len += 1;
            }
        }
    }
}

/// A hash of a (key, value) tag, for [`KnownPairs`]; kept in memory only (see SQLite's twin).
fn tag_hash(key: &str, value: &str) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    value.hash(&mut h);
    h.finish() as i64
}

fn unavailable(why: &'static str) -> StoreError {
    StoreError::Unavailable(why.into())
}

/// A deadlock or serialization failure: the transaction was rolled back and may be run again.
fn is_transient(e: &StoreError) -> bool {
    let StoreError::Database(source) = e else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

async fn prepared(
    cache: &mut Statements,
    tx: &Transaction<'_>,
    sql: &'static str,
) -> StoreResult<Statement> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let s = tx.prepare(sql).await?;
    cache.insert(sql, s.clone());
    Ok(s)
}

impl PgSink {
    async fn open(store: &PgStore, hooks: SinkHooks) -> StoreResult<PgSink> {
        let mut sink = PgSink {
            store: store.clone(),
            handle: Handle::current(),
            link: None,
            connect_after: None,
            known_users: KnownPairs::default(),
            known_tags: KnownPairs::default(),
            pending: PendingCounts::default(),
            has_pending: Arc::new(AtomicBool::new(false)),
            orphans: Vec::new(),
            partitions: BTreeSet::new(),
            next_recovery: Instant::now(),
            clock: hooks.clock,
            alerts_queued: hooks.alerts_queued,
        };
        sink.connect().await?;
        sink.ensure_partitions(day_of(now_millis())).await?;
        for wait in OPEN_RECOVERY_WAITS_MS.map(Some).into_iter().chain([None]) {
            let busy = sink.recover().await?;
            match wait {
                Some(ms) if busy > 0 => tokio::time::sleep(Duration::from_millis(ms)).await,
                _ => break,
            }
        }
        Ok(sink)
    }

    /// Makes sure the writer's connection is up, connecting and registering a new node if not.
    async fn connect(&mut self) -> StoreResult<&mut Link> {
        if self.link.as_ref().is_some_and(|l| l.client.is_closed()) {
            self.lose_link();
        }
        if self.link.is_none() {
            if self.connect_after.is_some_and(|t| Instant::now() < t) {
                return Err(unavailable("the writer is reconnecting to PostgreSQL"));
            }
            match register(&self.store).await {
                Ok(link) => {
                    tracing::info!(node = link.node, "writer connected to PostgreSQL");
                    self.link = Some(link);
                    self.connect_after = None;
                    // Former nodes of this sink are recovered as soon as possible.
                    if !self.orphans.is_empty() {
                        self.next_recovery = Instant::now();
                    }
                }
                Err(e) => {
                    self.connect_after = Some(Instant::now() + RECONNECT_PAUSE);
                    return Err(e);
                }
            }
        }
        self.link
            .as_mut()
            .ok_or_else(|| unavailable("the writer is not connected"))
    }

    /// Forgets a broken connection and what only it could have written (see the module docs).
    fn lose_link(&mut self) {
        if let Some(link) = self.link.take() {
            tracing::warn!(
                node = link.node,
                "the writer's PostgreSQL connection broke; its uncounted events are recounted"
            );
            self.orphans.push(link.node);
            self.pending.clear();
            self.has_pending.store(true, Ordering::Release);
        }
    }

    /// Passes `e` on, dropping the connection first if `e` says it is broken.
    fn failed(&mut self, e: StoreError) -> StoreError {
        let broken = matches!(e, StoreError::Unavailable(_))
            || self.link.as_ref().is_some_and(|l| l.client.is_closed());
        if broken {
            self.lose_link();
        }
        e
    }

    /// Makes sure the partitions of `day` and the day after exist.
    async fn ensure_partitions(&mut self, day: i64) -> StoreResult<()> {
        if self.partitions.contains(&day) && self.partitions.contains(&(day + 1)) {
            return Ok(());
        }
        self.connect().await?;
        for d in [day, day + 1] {
            if self.partitions.contains(&d) {
                continue;
            }
            let Some(link) = self.link.as_mut() else {
                return Err(unavailable("the writer is not connected"));
            };
            match create_partition(&mut link.client, d).await {
                Ok(()) => {
                    self.partitions.insert(d);
                }
                // Tomorrow's is only ahead of time: tried again with the next batch.
                Err(e) if d != day && !matches!(e, StoreError::Unavailable(_)) => {
                    tracing::warn!(error = %e, day = d, "creating tomorrow's events partition failed");
                }
                Err(e) => return Err(e),
            }
        }
        self.partitions.retain(|&d| d >= day - 1);
        Ok(())
    }

    async fn write_batch_async(
        &mut self,
        jobs: &[&[Record]],
    ) -> StoreResult<Vec<Vec<EventOutcome>>> {
        // A connection found broken is replaced here, on the next batch.
        if let Err(e) = self.connect().await {
            return Err(self.failed(e));
        }
        let received_at = now_millis();
        if let Err(e) = self.ensure_partitions(day_of(received_at)).await {
            return Err(self.failed(e));
        }
        let batch = Batch {
            jobs,
            received_at,
            alert_now: self.clock.now_millis(),
            known_users: &self.known_users,
            known_tags: &self.known_tags,
        };
        let Some(link) = self.link.as_mut() else {
            return Err(unavailable("the writer is not connected"));
        };
        let mut attempt = 0;
        let result = loop {
            match store_batch(link, &batch).await {
                Err(e) if is_transient(&e) && attempt < TRANSIENT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "batch rolled back by a lock conflict; trying again");
                }
                r => break r,
            }
        };
        let written = match result {
            Ok(w) => w,
            Err(e) => return Err(self.failed(e)),
        };
        link.next_seq += written.stored;
        self.known_users.remember(written.users);
        self.known_tags.remember(written.tags);
        if !written.counts.is_empty() {
            self.pending.merge(written.counts);
            // Before the caller answers any job of this batch.
            self.has_pending.store(true, Ordering::Release);
        }
        // After the flag: delivery has the counts written first, and must see them waiting.
        if written.alerts > 0 {
            self.alerts_queued.notify_one();
        }
        // The batch is committed: what follows can fail without failing it.
        if self.pending.due() {
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "writing error counts failed; tried again later");
            }
        }
        if Instant::now() >= self.next_recovery {
            if let Err(e) = self.recover().await {
                tracing::warn!(error = %e, "recounting the events of stopped nodes failed");
            }
        }
        Ok(written.outcomes)
    }

    /// Writes the pending counts with this node's mark.
    async fn flush(&mut self) -> StoreResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_millis();
        let Some(link) = self.link.as_mut() else {
            // Pending counts are dropped with the connection, so this does not happen.
            return Err(unavailable("the writer is not connected"));
        };
        let mut attempt = 0;
        let result = loop {
            match write_own_counts(link, &self.pending, now).await {
                Err(e) if is_transient(&e) && attempt < TRANSIENT_RETRIES => attempt += 1,
                r => break r,
            }
        };
        match result {
            Ok(queued) => {
                self.pending.clear();
                if self.orphans.is_empty() {
                    self.has_pending.store(false, Ordering::Release);
                }
                if queued > 0 {
                    self.alerts_queued.notify_one();
                }
                Ok(())
            }
            Err(e) => {
                // Tried again after another interval, not in a loop.
                self.pending.postpone();
                Err(self.failed(e))
            }
        }
    }

    /// Recounts the nodes that are gone (see the module docs). Returns how many other nodes
    /// were still holding their lock.
    async fn recover(&mut self) -> StoreResult<usize> {
        self.next_recovery = Instant::now() + RECOVERY_INTERVAL;
        if let Err(e) = self.connect().await {
            return Err(self.failed(e));
        }
        let Some(link) = self.link.as_mut() else {
            return Err(unavailable("the writer is not connected"));
        };
        let result = recover_nodes(link).await;
        let (recounted, busy) = match result {
            Ok(r) => r,
            Err(e) => return Err(self.failed(e)),
        };
        if recounted > 0 {
            tracing::info!(
                events = recounted,
                "counted events that stopped nodes stored after their last count write"
            );
        }
        if !self.orphans.is_empty() {
            let orphans = self.orphans.clone();
            let Some(link) = self.link.as_mut() else {
                return Err(unavailable("the writer is not connected"));
            };
            let left = link
                .client
                .query(
                    "SELECT node FROM ingest_nodes WHERE node = ANY($1::bigint[])",
                    &[&orphans],
                )
                .await;
            match left {
                Ok(rows) => {
                    let left: HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
                    self.orphans.retain(|n| left.contains(n));
                }
                Err(e) => return Err(self.failed(e.into())),
            }
            if self.orphans.is_empty() && self.pending.is_empty() {
                self.has_pending.store(false, Ordering::Release);
            }
        }
        Ok(busy)
    }

    async fn flush_counts_async(&mut self) -> StoreResult<()> {
        if self.pending.is_empty() && self.orphans.is_empty() {
            if Instant::now() >= self.next_recovery {
                // Nothing of this node waits: a failure here only delays another node's
                // recount, so it is logged, not reported to the reader.
                if let Err(e) = self.recover().await {
                    tracing::warn!(error = %e, "recounting the events of stopped nodes failed");
                }
            }
            return Ok(());
        }
        if let Err(e) = self.connect().await {
            return Err(self.failed(e));
        }
        self.flush().await?;
        if !self.orphans.is_empty() || Instant::now() >= self.next_recovery {
            self.recover().await?;
            if !self.orphans.is_empty() {
                // The former session is still open on the server; a later flush retries.
                return Err(unavailable(
                    "counts of a broken writer connection are not recounted yet",
                ));
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn node(&self) -> Option<i64> {
        self.link.as_ref().map(|l| l.node)
    }
}

impl EventSink for PgSink {
    fn write_batch(&mut self, jobs: &[&[Record]]) -> StoreResult<Vec<Vec<EventOutcome>>> {
        let handle = self.handle.clone();
        if !jobs.iter().flat_map(|j| j.iter()).any(has_nul) {
            return handle.block_on(self.write_batch_async(jobs));
        }
        // Rare: a text field with a NUL character, which PostgreSQL's TEXT cannot hold. The
        // batch is written from a copy with each NUL replaced, rather than failing every
        // event in it; payloads are bytes and keep theirs.
        let owned: Vec<Vec<Record>> = jobs
            .iter()
            .map(|j| j.iter().cloned().map(without_nul).collect())
            .collect();
        let slices: Vec<&[Record]> = owned.iter().map(Vec::as_slice).collect();
        handle.block_on(self.write_batch_async(&slices))
    }

    fn flush_counts(&mut self) -> StoreResult<()> {
        let handle = self.handle.clone();
        handle.block_on(self.flush_counts_async())
    }

    fn counts_due_in(&self) -> Option<Duration> {
        // Always some: the writer's idle wake-up is also when dead nodes are looked for.
        let recovery = self.next_recovery.saturating_duration_since(Instant::now());
        Some(match self.pending.until_due() {
            Some(due) => due.min(recovery),
            None => recovery,
        })
    }

    fn pending_flag(&self) -> Arc<AtomicBool> {
        self.has_pending.clone()
    }
}

/// Connects and registers a new node, holding its lock (see the module docs).
async fn register(store: &PgStore) -> StoreResult<Link> {
    let mut client = store.connect().await?;
    let tx = client.transaction().await?;
    let node: i64 = tx
        .query_one(
            "INSERT INTO ingest_nodes (started_at) VALUES ($1) RETURNING node",
            &[&now_millis()],
        )
        .await?
        .get(0);
    // In the registering transaction: no other node sees the row before the lock is held.
    tx.execute("SELECT pg_advisory_lock($1)", &[&(locks::NODE_BASE + node)])
        .await?;
    tx.commit().await?;
    Ok(Link {
        client,
        node,
        next_seq: 1,
        statements: Statements::new(),
    })
}

/// Creates `day`'s partition unless it exists (see the module docs).
async fn create_partition(client: &mut Client, day: i64) -> StoreResult<()> {
    const EXISTS: &str =
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                          WHERE i.inhparent = 'events'::regclass AND c.relname = $1)";
    let name = partition_name(day);
    let exists: bool = client.query_one(EXISTS, &[&name]).await?.get(0);
    if exists {
        return Ok(());
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&locks::PARTITION])
        .await?;
    let exists: bool = tx.query_one(EXISTS, &[&name]).await?.get(0);
    if !exists {
        // The partition's foreign keys lock `projects` and `errors` after `events`; batches
        // lock them before `events`, so they are taken here first, in the batches' order.
        tx.batch_execute("LOCK TABLE projects, errors IN SHARE ROW EXCLUSIVE MODE")
            .await?;
        tx.batch_execute(&create_partition_sql(day)).await?;
        tracing::info!(partition = %name, "created an events partition");
    }
    tx.commit().await?;
    Ok(())
}

/// One write of this node's pending counts and mark, with the frequency alerts they make due.
async fn write_own_counts(
    link: &mut Link,
    pending: &PendingCounts,
    now: i64,
) -> StoreResult<usize> {
    let Link {
        client,
        statements,
        node,
        ..
    } = link;
    let tx = client.transaction().await?;
    write_counts(&tx, statements, pending).await?;
    let mark = prepared(
        statements,
        &tx,
        "UPDATE ingest_nodes SET counted_through = GREATEST(counted_through, $2) WHERE node = $1",
    )
    .await?;
    if tx.execute(&mark, &[&*node, &pending.through()]).await? == 0 {
        // Only a survivor that took this node's lock deletes the row, so the session that
        // held it is gone: this connection is not the one it seems.
        return Err(unavailable("this node's registration is gone"));
    }
    let queued = if alerts::any_frequency_rule(&tx).await? {
        let mut ids: Vec<i64> = pending.error_ids().collect();
        ids.sort_unstable();
        alerts::check_frequency(&tx, &ids, now).await?
    } else {
        0
    };
    tx.commit().await?;
    Ok(queued)
}

/// Adds `counts` to the errors and their hourly rows in `tx`, the errors locked in ascending id
/// first. An error deleted since is skipped, its hours too.
async fn write_counts(
    tx: &Transaction<'_>,
    cache: &mut Statements,
    counts: &PendingCounts,
) -> StoreResult<()> {
    if counts.is_empty() {
        return Ok(());
    }
    let mut gains: Vec<_> = counts.errors().collect();
    gains.sort_unstable_by_key(|g| g.0);
    let ids: Vec<i64> = gains.iter().map(|g| g.0).collect();
    let fingerprints: Vec<i64> = gains.iter().map(|g| g.1).collect();
    let events: Vec<i64> = gains.iter().map(|g| g.2).collect();
    let last_seen: Vec<i64> = gains.iter().map(|g| g.3).collect();
    let descriptions: Vec<&str> = gains.iter().map(|g| g.4).collect();
    let actors: Vec<&str> = gains.iter().map(|g| g.5).collect();
    let lock = prepared(cache, tx, LOCK_ERRORS).await?;
    tx.query(&lock, &[&ids]).await?;
    let bump = prepared(
        cache,
        tx,
        "UPDATE errors e SET event_count = e.event_count + u.n,
                             last_seen_at = GREATEST(e.last_seen_at, u.last),
                             description = u.d,
                             actor = u.a
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
                     $6::text[]) AS u(id, f, n, last, d, a)
         WHERE e.id = u.id AND e.fingerprint = u.f
         RETURNING e.id",
    )
    .await?;
    let updated: HashSet<i64> = tx
        .query(
            &bump,
            &[
                &ids,
                &fingerprints,
                &events,
                &last_seen,
                &descriptions,
                &actors,
            ],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut hours: Vec<((i64, i64), i64)> = counts
        .hours()
        .filter(|((id, _), _)| updated.contains(id))
        .collect();
    if hours.is_empty() {
        return Ok(());
    }
    hours.sort_unstable();
    let error_ids: Vec<i64> = hours.iter().map(|h| h.0 .0).collect();
    let hour: Vec<i64> = hours.iter().map(|h| h.0 .1).collect();
    let n: Vec<i64> = hours.iter().map(|h| h.1).collect();
    let bump_hours = prepared(
        cache,
        tx,
        "INSERT INTO error_hourly (error_id, hour, count)
         SELECT e, h, n FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS t(e, h, n)
         ORDER BY e, h
         ON CONFLICT (error_id, hour) DO UPDATE SET count = error_hourly.count + EXCLUDED.count",
    )
    .await?;
    tx.execute(&bump_hours, &[&error_ids, &hour, &n]).await?;
    Ok(())
}

/// Recounts every other node whose lock can be taken. Returns the events counted and how many
/// nodes were still holding their lock.
async fn recover_nodes(link: &mut Link) -> StoreResult<(u64, usize)> {
    let nodes: Vec<i64> = link
        .client
        .query(
            "SELECT node FROM ingest_nodes WHERE node <> $1 ORDER BY node",
            &[&link.node],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut recounted = 0;
    let mut busy = 0;
    for node in nodes {
        let key = locks::NODE_BASE + node;
        let free: bool = link
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?
            .get(0);
        if !free {
            busy += 1;
            continue;
        }
        let result = recover_node(link, node).await;
        let unlocked = link
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await;
        recounted += result?;
        unlocked?;
    }
    Ok((recounted, busy))
}

/// Counts the events of the dead node `node` above its mark and deletes its row, while this
/// connection holds the node's lock.
async fn recover_node(link: &mut Link, node: i64) -> StoreResult<u64> {
    let Link {
        client, statements, ..
    } = link;
    let Some(mark) = client
        .query_opt(
            "SELECT counted_through FROM ingest_nodes WHERE node = $1",
            &[&node],
        )
        .await?
        .map(|r| r.get::<_, i64>(0))
    else {
        // Recovered by another node between the list and the lock.
        return Ok(0);
    };
    // Read before the write transaction, which then locks no table behind `events` (see the
    // lock order): the node is gone, so these rows no longer change.
    let rows = client
        .query(
            "SELECT ev.node_seq, ev.error_id, er.fingerprint, ev.occurred_at, ev.description,
                    ev.actor
             FROM events ev JOIN errors er ON er.id = ev.error_id
             WHERE ev.node = $1 AND ev.node_seq > $2
             ORDER BY ev.node_seq",
            &[&node, &mark],
        )
        .await?;
    let mut tail = PendingCounts::default();
    for r in &rows {
        tail.add(
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get::<_, &str>(4),
            r.get::<_, &str>(5),
        );
    }
    let mut attempt = 0;
    loop {
        let result = async {
            let tx = client.transaction().await?;
            write_counts(&tx, statements, &tail).await?;
            tx.execute("DELETE FROM ingest_nodes WHERE node = $1", &[&node])
                .await?;
            tx.commit().await?;
            Ok::<(), StoreError>(())
        }
        .await;
        match result {
            Err(e) if is_transient(&e) && attempt < TRANSIENT_RETRIES => attempt += 1,
            Err(e) => return Err(e),
            Ok(()) => break,
        }
    }
    if !rows.is_empty() {
        tracing::info!(
            node,
            events = rows.len(),
            "counted the events a stopped node left uncounted"
        );
    }
    Ok(rows.len() as u64)
}

/// Locks errors for a change, in ascending id; with their status, read under the lock.
const LOCK_ERRORS: &str =
    "SELECT id, status FROM errors WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE";

/// Finds errors by (project, fingerprint), each kept from deletion until the commit.
const FIND_ERRORS: &str = "SELECT e.id, e.project_id, e.fingerprint, e.status, e.first_seen_at
     FROM errors e JOIN UNNEST($1::bigint[], $2::bigint[]) AS k(p, f)
       ON e.project_id = k.p AND e.fingerprint = k.f
     ORDER BY e.id
     FOR KEY SHARE OF e";

/// One batch's input.
struct Batch<'a> {
    jobs: &'a [&'a [Record]],
    received_at: i64,
    alert_now: i64,
    known_users: &'a KnownPairs,
    known_tags: &'a KnownPairs,
}

/// What a committed batch leaves for the sink to act on.
struct Written {
    outcomes: Vec<Vec<EventOutcome>>,
    /// Events stored, which took `node_seq`s from the link's next one.
    stored: i64,
    /// (error, user) pairs stored or found stored, for [`KnownPairs`].
    users: Vec<(i64, i64)>,
    /// (error, tag hash) pairs stored or found stored.
    tags: Vec<(i64, i64)>,
    counts: PendingCounts,
    alerts: usize,
}

/// Where one record of a job ends up.
enum Slot {
    Gone,
    Duplicate,
    /// Index into the events whose id is claimed next.
    Candidate(usize),
    /// Not an event: no outcome.
    Other,
}

/// Stores one batch in one transaction (see the module docs).
async fn store_batch(link: &mut Link, b: &Batch<'_>) -> StoreResult<Written> {
    let Link {
        client,
        statements: cache,
        node,
        next_seq,
    } = link;
    let tx = client.transaction().await?;
    let mut project_ids: Vec<i64> = b
        .jobs
        .iter()
        .flat_map(|j| j.iter().map(Record::project_id))
        .collect();
    project_ids.sort_unstable();
    project_ids.dedup();
    // A project may be deleted after a handler accepted its event; its records are skipped.
    // The share lock keeps a project found here until the commit.
    let live_projects = prepared(
        cache,
        &tx,
        "SELECT id FROM projects WHERE id = ANY($1::bigint[]) AND deleting_since IS NULL
         ORDER BY id FOR KEY SHARE",
    )
    .await?;
    let live: HashSet<i64> = tx
        .query(&live_projects, &[&project_ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(b.jobs.len());
    let mut candidates: Vec<&EventRecord> = Vec::new();
    let mut in_batch: HashSet<(i64, &str)> = HashSet::new();
    let mut attachments = Vec::new();
    let mut reports = Vec::new();
    for job in b.jobs {
        let mut job_slots = Vec::with_capacity(job.len());
        for record in job.iter() {
            let live = live.contains(&record.project_id());
            job_slots.push(match record {
                Record::Event(_) if !live => Slot::Gone,
                Record::Event(e) => {
                    if in_batch.insert((e.project_id, e.event_id.as_str())) {
                        candidates.push(e);
                        Slot::Candidate(candidates.len() - 1)
                    } else {
                        Slot::Duplicate
                    }
                }
                Record::Attachment(a) => {
                    if live {
                        attachments.push(a);
                    }
                    Slot::Other
                }
                Record::UserReport(u) => {
                    if live {
                        reports.push(u);
                    }
                    Slot::Other
                }
            });
        }
        slots.push(job_slots);
    }

    // Claim the event ids; those another batch (of any node) stored are duplicates.
    let mut claimed: HashMap<i64, HashSet<String>> = HashMap::new();
    if !candidates.is_empty() {
        let mut keys: Vec<(i64, &str)> = candidates
            .iter()
            .map(|e| (e.project_id, e.event_id.as_str()))
            .collect();
        keys.sort_unstable();
        let (projects, ids): (Vec<i64>, Vec<&str>) = keys.into_iter().unzip();
        let claim = prepared(
            cache,
            &tx,
            "INSERT INTO event_ids (project_id, event_id, received_at)
             SELECT p, e, $3::bigint FROM UNNEST($1::bigint[], $2::text[]) AS t(p, e)
             ORDER BY p, e
             ON CONFLICT DO NOTHING
             RETURNING project_id, event_id",
        )
        .await?;
        for r in tx.query(&claim, &[&projects, &ids, &b.received_at]).await? {
            claimed.entry(r.get(0)).or_default().insert(r.get(1));
        }
    }
    let is_claimed = |e: &EventRecord| {
        claimed
            .get(&e.project_id)
            .is_some_and(|ids| ids.contains(e.event_id.as_str()))
    };
    let accepted: Vec<&EventRecord> = candidates
        .iter()
        .copied()
        .filter(|e| is_claimed(e))
        .collect();
    let outcomes = slots
        .into_iter()
        .map(|job| {
            job.into_iter()
                .filter_map(|slot| match slot {
                    Slot::Gone => Some(EventOutcome::ProjectGone),
                    Slot::Duplicate => Some(EventOutcome::Duplicate),
                    Slot::Candidate(i) if is_claimed(candidates[i]) => Some(EventOutcome::Stored),
                    Slot::Candidate(_) => Some(EventOutcome::Duplicate),
                    Slot::Other => None,
                })
                .collect()
        })
        .collect();

    let mut written = Written {
        outcomes,
        stored: 0,
        users: Vec::new(),
        tags: Vec::new(),
        counts: PendingCounts::default(),
        alerts: 0,
    };
    if !accepted.is_empty() {
        store_events(&tx, cache, &accepted, b, *node, *next_seq, &mut written).await?;
    }

    if !attachments.is_empty() {
        let projects: Vec<i64> = attachments.iter().map(|a| a.project_id).collect();
        let events: Vec<&str> = attachments.iter().map(|a| a.event_id.as_str()).collect();
        let names: Vec<&str> = attachments.iter().map(|a| a.filename.as_str()).collect();
        let types: Vec<Option<&str>> = attachments
            .iter()
            .map(|a| a.content_type.as_deref())
            .collect();
        let kinds: Vec<Option<&str>> = attachments
            .iter()
            .map(|a| a.attachment_type.as_deref())
            .collect();
        let data: Vec<&[u8]> = attachments.iter().map(|a| a.data.as_slice()).collect();
        let insert = prepared(
            cache,
            &tx,
            "INSERT INTO attachments (project_id, event_id, filename, content_type,
                                      attachment_type, data, received_at)
             SELECT p, e, f, ct, at, d, $7::bigint
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::bytea[]) WITH ORDINALITY AS t(p, e, f, ct, at, d, i)
             ORDER BY i",
        )
        .await?;
        tx.execute(
            &insert,
            &[
                &projects,
                &events,
                &names,
                &types,
                &kinds,
                &data,
                &b.received_at,
            ],
        )
        .await?;
    }
    if !reports.is_empty() {
        let projects: Vec<i64> = reports.iter().map(|u| u.project_id).collect();
        let events: Vec<Option<&str>> = reports.iter().map(|u| u.event_id.as_deref()).collect();
        let names: Vec<Option<&str>> = reports.iter().map(|u| u.name.as_deref()).collect();
        let emails: Vec<Option<&str>> = reports.iter().map(|u| u.email.as_deref()).collect();
        let comments: Vec<Option<&str>> = reports.iter().map(|u| u.comments.as_deref()).collect();
        let payloads: Vec<&[u8]> = reports.iter().map(|u| u.payload.as_slice()).collect();
        let insert = prepared(
            cache,
            &tx,
            "INSERT INTO user_reports (project_id, event_id, name, email, comments, payload,
                                       received_at)
             SELECT p, e, n, em, c, pay, $7::bigint
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::bytea[]) WITH ORDINALITY AS t(p, e, n, em, c, pay, i)
             ORDER BY i",
        )
        .await?;
        tx.execute(
            &insert,
            &[
                &projects,
                &events,
                &names,
                &emails,
                &comments,
                &payloads,
                &b.received_at,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(written)
}

/// One error's share of a batch.
struct ErrorDelta<'a> {
    first: i64,
    last: i64,
    /// The newest event of the batch names and describes a new error, and is what alert
    /// rules' filters are checked against.
    newest: &'a EventRecord,
}

/// An error found stored.
#[derive(Clone, Copy)]
struct Found {
    id: i64,
    status: i64,
    first_seen_at: i64,
}

async fn find_errors(
    tx: &Transaction<'_>,
    cache: &mut Statements,
    keys: &[(i64, i64)],
) -> StoreResult<HashMap<(i64, i64), Found>> {
    let (projects, fingerprints): (Vec<i64>, Vec<i64>) = keys.iter().copied().unzip();
    let find = prepared(cache, tx, FIND_ERRORS).await?;
    Ok(tx
        .query(&find, &[&projects, &fingerprints])
        .await?
        .iter()
        .map(|r| {
            (
                (r.get(1), r.get(2)),
                Found {
                    id: r.get(0),
                    status: r.get(3),
                    first_seen_at: r.get(4),
                },
            )
        })
        .collect())
}

/// Finds or creates each error of the batch once, then inserts the users, the events and the
/// search tags. The events are counted into `w.counts`, not into their errors' rows.
async fn store_events(
    tx: &Transaction<'_>,
    cache: &mut Statements,
    events: &[&EventRecord],
    b: &Batch<'_>,
    node: i64,
    first_seq: i64,
    w: &mut Written,
) -> StoreResult<()> {
    let resolved = ErrorStatus::Resolved.code();
    let unresolved = ErrorStatus::Unresolved.code();
    let mut deltas: HashMap<(i64, i64), ErrorDelta> = HashMap::new();
    for e in events {
        deltas
            .entry((e.project_id, e.fingerprint))
            .and_modify(|d| {
                d.first = d.first.min(e.occurred_at);
                d.last = d.last.max(e.occurred_at);
                d.newest = e;
            })
            .or_insert(ErrorDelta {
                first: e.occurred_at,
                last: e.occurred_at,
                newest: e,
            });
    }
    let mut keys: Vec<(i64, i64)> = deltas.keys().copied().collect();
    keys.sort_unstable();
    let mut existing = find_errors(tx, cache, &keys).await?;
    let mut error_ids: HashMap<(i64, i64), i64> =
        existing.iter().map(|(k, f)| (*k, f.id)).collect();
    // (error, trigger) to queue alerts for, once the errors are settled.
    let mut to_alert: Vec<((i64, i64), i64, Trigger)> = Vec::new();
    let mut created: Vec<((i64, i64), i64)> = Vec::new();

    let mut missing: Vec<(i64, i64)> = keys
        .iter()
        .copied()
        .filter(|k| !existing.contains_key(k))
        .collect();
    if !missing.is_empty() {
        // Numbered in first-seen order, as on SQLite; each project's counter moves once, the
        // projects in ascending id.
        missing.sort_unstable_by_key(|k| (deltas[k].first, *k));
        let mut per_project: BTreeMap<i64, i64> = BTreeMap::new();
        for k in &missing {
            *per_project.entry(k.0).or_default() += 1;
        }
        let take = prepared(
            cache,
            tx,
            "UPDATE projects SET error_seq = error_seq + $2 WHERE id = $1 RETURNING error_seq",
        )
        .await?;
        let mut next: HashMap<i64, i64> = HashMap::new();
        for (&project, &n) in &per_project {
            let top: i64 = tx.query_one(&take, &[&project, &n]).await?.get(0);
            next.insert(project, top - n + 1);
        }
        let mut rows: Vec<((i64, i64), i64)> = Vec::with_capacity(missing.len());
        for k in &missing {
            let seq = next.get_mut(&k.0).ok_or(StoreError::Missing)?;
            rows.push((*k, *seq));
            *seq += 1;
        }
        rows.sort_unstable_by_key(|r| r.0);
        let newest = |k: &(i64, i64)| deltas[k].newest;
        let projects: Vec<i64> = rows.iter().map(|r| r.0 .0).collect();
        let fingerprints: Vec<i64> = rows.iter().map(|r| r.0 .1).collect();
        let names: Vec<&str> = rows.iter().map(|r| newest(&r.0).name.as_str()).collect();
        let descriptions: Vec<&str> = rows
            .iter()
            .map(|r| newest(&r.0).description.as_str())
            .collect();
        let actors: Vec<&str> = rows.iter().map(|r| newest(&r.0).actor.as_str()).collect();
        let platforms: Vec<Option<&str>> = rows
            .iter()
            .map(|r| newest(&r.0).platform.as_deref())
            .collect();
        let firsts: Vec<i64> = rows.iter().map(|r| deltas[&r.0].first).collect();
        let lasts: Vec<i64> = rows.iter().map(|r| deltas[&r.0].last).collect();
        let seqs: Vec<i64> = rows.iter().map(|r| r.1).collect();
        // A new error starts unresolved with a count of zero: its events are counted with the
        // others.
        let insert = prepared(
            cache,
            tx,
            "INSERT INTO errors (project_id, fingerprint, name, description, actor, platform,
                                 status, event_count, first_seen_at, last_seen_at, short_seq)
             SELECT p, f, n, d, a, pl, $10::bigint, 0, fs, ls, sq
             FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::bigint[], $8::bigint[], $9::bigint[])
                  AS t(p, f, n, d, a, pl, fs, ls, sq)
             ORDER BY p, f
             ON CONFLICT (project_id, fingerprint) DO NOTHING
             RETURNING id, project_id, fingerprint",
        )
        .await?;
        for r in tx
            .query(
                &insert,
                &[
                    &projects,
                    &fingerprints,
                    &names,
                    &descriptions,
                    &actors,
                    &platforms,
                    &firsts,
                    &lasts,
                    &seqs,
                    &unresolved,
                ],
            )
            .await?
        {
            let key = (r.get(1), r.get(2));
            let id: i64 = r.get(0);
            error_ids.insert(key, id);
            created.push((key, id));
            to_alert.push((key, id, Trigger::NewError));
        }
        // Created by another node since the lookup (their numbers stay unused).
        let mut raced: Vec<(i64, i64)> = missing
            .iter()
            .copied()
            .filter(|k| !error_ids.contains_key(k))
            .collect();
        if !raced.is_empty() {
            raced.sort_unstable();
            let found = find_errors(tx, cache, &raced).await?;
            for k in raced {
                let f = *found.get(&k).ok_or(StoreError::Missing)?;
                error_ids.insert(k, f.id);
                existing.insert(k, f);
            }
        }
    }
    let id_of = |e: &EventRecord| -> StoreResult<i64> {
        error_ids
            .get(&(e.project_id, e.fingerprint))
            .copied()
            .ok_or(StoreError::Missing)
    };

    // Users: each new (error, user) pair adds one to the error's user count.
    let mut pairs: Vec<(i64, i64)> = Vec::new();
    let mut seen: HashSet<(i64, i64)> = HashSet::new();
    for e in events {
        if let Some(user) = &e.user_identity {
            let user = user_hash(user);
            let error_id = id_of(e)?;
            if !b.known_users.contains(error_id, user) && seen.insert((error_id, user)) {
                pairs.push((error_id, user));
            }
        }
    }
    let mut new_users: HashMap<i64, i64> = HashMap::new();
    if !pairs.is_empty() {
        pairs.sort_unstable();
        let (ids, users): (Vec<i64>, Vec<i64>) = pairs.iter().copied().unzip();
        let add = prepared(
            cache,
            tx,
            "INSERT INTO error_users (error_id, user_hash)
             SELECT e, u FROM UNNEST($1::bigint[], $2::bigint[]) AS t(e, u) ORDER BY e, u
             ON CONFLICT DO NOTHING
             RETURNING error_id",
        )
        .await?;
        for r in tx.query(&add, &[&ids, &users]).await? {
            *new_users.entry(r.get(0)).or_default() += 1;
        }
        w.users = pairs;
    }

    // Changes to stored errors: a resolved one reopens (an ignored one stays ignored), an
    // earlier event moves its first-seen time, new users add up. Rare, so only the errors that
    // change are locked, in ascending id.
    let mut changed: Vec<(i64, (i64, i64))> = existing
        .iter()
        .filter(|(k, f)| {
            f.status == resolved
                || deltas[*k].first < f.first_seen_at
                || new_users.contains_key(&f.id)
        })
        .map(|(k, f)| (f.id, *k))
        .collect();
    changed.sort_unstable();
    let mut updates: Vec<(i64, i64, i64)> = Vec::new();
    if !changed.is_empty() {
        let ids: Vec<i64> = changed.iter().map(|c| c.0).collect();
        let lock = prepared(cache, tx, LOCK_ERRORS).await?;
        let now_resolved: HashSet<i64> = tx
            .query(&lock, &[&ids])
            .await?
            .iter()
            .filter(|r| r.get::<_, i64>(1) == resolved)
            .map(|r| r.get(0))
            .collect();
        for &(id, key) in &changed {
            if now_resolved.contains(&id) {
                to_alert.push((key, id, Trigger::Regression));
            }
            updates.push((
                id,
                deltas[&key].first,
                new_users.get(&id).copied().unwrap_or(0),
            ));
        }
    }
    for &(key, id) in &created {
        if let Some(&n) = new_users.get(&id) {
            updates.push((id, deltas[&key].first, n));
        }
    }
    if !updates.is_empty() {
        updates.sort_unstable();
        let ids: Vec<i64> = updates.iter().map(|u| u.0).collect();
        let firsts: Vec<i64> = updates.iter().map(|u| u.1).collect();
        let users: Vec<i64> = updates.iter().map(|u| u.2).collect();
        let update = prepared(
            cache,
            tx,
            "UPDATE errors e SET
                 status = CASE WHEN e.status = $4 THEN $5 ELSE e.status END,
                 first_seen_at = LEAST(e.first_seen_at, u.first),
                 approximated_user_count = e.approximated_user_count + u.users
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, first, users)
             WHERE e.id = u.id",
        )
        .await?;
        tx.execute(&update, &[&ids, &firsts, &users, &resolved, &unresolved])
            .await?;
    }

    // Alerts in the batch's transaction, so one exists exactly when its cause commits; in
    // first-seen order, as SQLite queues them.
    to_alert.sort_unstable_by_key(|(k, _, _)| (deltas[k].first, *k));
    for (key, error_id, trigger) in to_alert {
        let e = deltas[&key].newest;
        w.alerts += alerts::queue_for_error(
            tx,
            e.project_id,
            error_id,
            trigger,
            e.environment.as_deref(),
            e.level.as_deref().unwrap_or("error"),
            b.alert_now,
        )
        .await?;
    }

    // The events, numbered in arrival order.
    let mut error_of = Vec::with_capacity(events.len());
    for e in events {
        error_of.push(id_of(e)?);
    }
    let seqs: Vec<i64> = (0..events.len() as i64).map(|i| first_seq + i).collect();
    let projects: Vec<i64> = events.iter().map(|e| e.project_id).collect();
    let event_ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let occurred: Vec<i64> = events.iter().map(|e| e.occurred_at).collect();
    let levels: Vec<Option<&str>> = events.iter().map(|e| e.level.as_deref()).collect();
    let environments: Vec<Option<&str>> = events.iter().map(|e| e.environment.as_deref()).collect();
    let releases: Vec<Option<&str>> = events.iter().map(|e| e.release.as_deref()).collect();
    let platforms: Vec<Option<&str>> = events.iter().map(|e| e.platform.as_deref()).collect();
    let users: Vec<Option<&str>> = events.iter().map(|e| e.user_identity.as_deref()).collect();
    let messages: Vec<Option<&str>> = events.iter().map(|e| e.message.as_deref()).collect();
    let is_message: Vec<bool> = events.iter().map(|e| e.is_message).collect();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    let descriptions: Vec<&str> = events.iter().map(|e| e.description.as_str()).collect();
    let actors: Vec<&str> = events.iter().map(|e| e.actor.as_str()).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    let codecs: Vec<i64> = events.iter().map(|e| e.payload_codec.code()).collect();
    let insert = prepared(
        cache,
        tx,
        "INSERT INTO events (project_id, error_id, event_id, occurred_at, received_at, level,
                             environment, release, platform, user_identity, message,
                             is_message, name, description, actor, payload, payload_codec,
                             node, node_seq)
         SELECT p, er, ev, oc, $17::bigint, lv, env, rel, pl, ui, msg, im, n, d, a, pay, codec,
                $18::bigint, seq
         FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                     $11::boolean[], $12::text[], $13::text[], $14::text[], $15::bytea[],
                     $16::bigint[], $19::bigint[])
              AS t(p, er, ev, oc, lv, env, rel, pl, ui, msg, im, n, d, a, pay, codec, seq)
         ORDER BY seq",
    )
    .await?;
    tx.execute(
        &insert,
        &[
            &projects,
            &error_of,
            &event_ids,
            &occurred,
            &levels,
            &environments,
            &releases,
            &platforms,
            &users,
            &messages,
            &is_message,
            &names,
            &descriptions,
            &actors,
            &payloads,
            &codecs,
            &b.received_at,
            &node,
            &seqs,
        ],
    )
    .await?;
    for (i, e) in events.iter().enumerate() {
        w.counts.add(
            seqs[i],
            error_of[i],
            e.fingerprint,
            e.occurred_at,
            &e.description,
            &e.actor,
        );
    }
    w.stored = events.len() as i64;

    // Search tags, once per error.
    let mut tags: Vec<(i64, &str, &str)> = Vec::new();
    seen.clear();
    for (i, e) in events.iter().enumerate() {
        let error_id = error_of[i];
        // Sentry reads an event without a level as `error`.
        let own = [
            ("environment", e.environment.as_deref()),
            ("release", e.release.as_deref()),
            ("level", Some(e.level.as_deref().unwrap_or("error"))),
        ];
        let own = own
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)));
        let sent = e.search_tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        for (key, value) in own.chain(sent) {
            let tag = tag_hash(key, value);
            if !b.known_tags.contains(error_id, tag) && seen.insert((error_id, tag)) {
                tags.push((error_id, key, value));
                w.tags.push((error_id, tag));
            }
        }
    }
    if !tags.is_empty() {
        tags.sort_unstable();
        let ids: Vec<i64> = tags.iter().map(|t| t.0).collect();
        let keys: Vec<&str> = tags.iter().map(|t| t.1).collect();
        let values: Vec<&str> = tags.iter().map(|t| t.2).collect();
        let add = prepared(
            cache,
            tx,
            "INSERT INTO error_tags (error_id, key, value)
             SELECT e, k, v FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS t(e, k, v)
             ORDER BY e, k, v
             ON CONFLICT DO NOTHING",
        )
        .await?;
        tx.execute(&add, &[&ids, &keys, &values]).await?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::ingest::test_event;

    /// A fresh, migrated database on the test cluster with project 1, or `None` when no
    /// cluster is configured (which fails under CI).
    pub(crate) async fn fresh_store() -> Option<PgStore> {
        let Ok(cluster) = std::env::var("FAULTLINE_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the PostgreSQL tests: set FAULTLINE_TEST_POSTGRES"
            );
            return None;
        };
        let (client, connection) = tokio_postgres::connect(&cluster, tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(connection);
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        let mut url = url::Url::parse(&cluster).expect("FAULTLINE_TEST_POSTGRES is a URL");
        url.set_path(&format!("/{name}"));
        let store = PgStore::open(url.as_str()).await.expect("open and migrate");
        sql(
            &store,
            "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace, created_at)
             VALUES (1, 'p', 'p', 'g', 'g/p', 0)",
        )
        .await;
        Some(store)
    }

    pub(crate) async fn sql(store: &PgStore, sql: &str) {
        store
            .client()
            .await
            .expect("client")
            .batch_execute(sql)
            .await
            .expect("statement");
    }

    pub(crate) async fn count(store: &PgStore, sql: &str) -> i64 {
        store
            .client()
            .await
            .expect("client")
            .query_one(sql, &[])
            .await
            .expect("query")
            .get(0)
    }

    pub(crate) async fn open(store: &PgStore) -> PgSink {
        PgSink::open(store, SinkHooks::default())
            .await
            .expect("sink opens")
    }

    /// Runs `f` on a thread outside the runtime, as the writer does.
    pub(crate) async fn on_writer<T: Send + 'static>(
        mut sink: PgSink,
        f: impl FnOnce(&mut PgSink) -> T + Send + 'static,
    ) -> (PgSink, T) {
        tokio::task::spawn_blocking(move || {
            let out = f(&mut sink);
            (sink, out)
        })
        .await
        .expect("writer thread")
    }

    pub(crate) fn event(n: u64, fingerprint: i64, occurred_at: i64) -> Record {
        Record::Event(EventRecord {
            user_identity: Some(format!("id:{}", n % 3)),
            ..test_event(n, fingerprint, occurred_at)
        })
    }

    /// One job per record; the counts stay in memory.
    pub(crate) async fn write(
        sink: PgSink,
        records: Vec<Record>,
    ) -> (PgSink, StoreResult<Vec<EventOutcome>>) {
        on_writer(sink, move |sink| {
            let jobs: Vec<&[Record]> = records.iter().map(std::slice::from_ref).collect();
            sink.write_batch(&jobs)
                .map(|o| o.into_iter().flatten().collect())
        })
        .await
    }

    pub(crate) async fn flush(sink: PgSink) -> (PgSink, StoreResult<()>) {
        on_writer(sink, |sink| sink.flush_counts()).await
    }

    /// (events, sum of event counts, sum of hourly counts).
    pub(crate) async fn totals(store: &PgStore) -> (i64, i64, i64) {
        (
            count(store, "SELECT COUNT(*) FROM events").await,
            count(
                store,
                "SELECT COALESCE(SUM(event_count), 0)::bigint FROM errors",
            )
            .await,
            count(
                store,
                "SELECT COALESCE(SUM(count), 0)::bigint FROM error_hourly",
            )
            .await,
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn duplicates_are_skipped_and_counts_written_as_increments() {
        let Some(store) = fresh_store().await else {
            return;
        };
        let sink = open(&store).await;
        let flag = sink.pending_flag();
        let node = sink.node().expect("registered");
        let mut gone = test_event(9, 7, 1_000);
        gone.project_id = 2;
        let (sink, out) = write(
            sink,
            vec![
                event(1, 7, 2_000),
                event(1, 7, 2_000),
                event(2, 8, 1_000),
                Record::Event(gone),
            ],
        )
        .await;
        use EventOutcome::*;
        assert_eq!(
            out.expect("batch"),
            [Stored, Duplicate, Stored, ProjectGone]
        );
        assert!(flag.load(Ordering::Acquire), "counts wait in memory");
        assert_eq!(totals(&store).await, (2, 0, 0));
        let (sink, flushed) = flush(sink).await;
        flushed.expect("flush");
        assert!(!flag.load(Ordering::Acquire));
        assert_eq!(totals(&store).await, (2, 2, 2));
        let mark = format!("SELECT counted_through FROM ingest_nodes WHERE node = {node}");
        assert_eq!(count(&store, &mark).await, 2);
        // Numbered in first-seen order.
        assert_eq!(
            count(&store, "SELECT short_seq FROM errors WHERE fingerprint = 8").await,
            1
        );
        assert_eq!(
            count(&store, "SELECT short_seq FROM errors WHERE fingerprint = 7").await,
            2
        );

        // A duplicate of an earlier batch; a resolved error reopens; an earlier event moves
        // first seen back.
        sql(&store, "UPDATE errors SET status = 1 WHERE fingerprint = 7").await;
        let (sink, out) = write(sink, vec![event(1, 7, 2_000), event(3, 7, 500)]).await;
        assert_eq!(out.expect("batch"), [Duplicate, Stored]);
        let (sink, flushed) = flush(sink).await;
        flushed.expect("flush");
        assert_eq!(totals(&store).await, (3, 3, 3));
        let row = store
            .client()
            .await
            .expect("client")
            .query_one(
                "SELECT event_count, status, first_seen_at, last_seen_at, approximated_user_count
                 FROM errors WHERE fingerprint = 7",
                &[],
            )
            .await
            .expect("row");
        let row: (i64, i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        assert_eq!(row, (2, 0, 500, 2_000, 2), "users id:1 and id:0");
        assert_eq!(count(&store, &mark).await, 3);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_ids").await, 3);
        assert_eq!(
            count(&store, "SELECT MAX(node_seq) FROM events").await,
            3,
            "numbered per node from 1"
        );
        drop(sink);
    }

    /// Waits until `node`'s registration is gone, flushing (and so recovering) on `sink`.
    async fn recover_until_gone(store: &PgStore, mut sink: PgSink, node: i64) -> PgSink {
        let query = format!("SELECT COUNT(*) FROM ingest_nodes WHERE node = {node}");
        for _ in 0..200 {
            if count(store, &query).await == 0 {
                return sink;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            sink.next_recovery = Instant::now();
            let (s, _) = flush(sink).await;
            sink = s;
        }
        panic!("node {node} was not recovered");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_survivor_recounts_what_a_stopped_node_left_uncounted() {
        let Some(store) = fresh_store().await else {
            return;
        };
        let a = open(&store).await;
        let b = open(&store).await;
        let b_node = b.node().expect("registered");
        assert_ne!(a.node(), Some(b_node));
        let (b, out) = write(b, vec![event(1, 7, 1_000), event(2, 8, 7_200_000)]).await;
        out.expect("batch");
        let (a, out) = write(a, vec![event(3, 7, 2_000), event(1, 7, 1_000)]).await;
        assert_eq!(
            out.expect("batch"),
            [EventOutcome::Stored, EventOutcome::Duplicate],
            "ids are deduplicated across nodes"
        );
        let (a, flushed) = flush(a).await;
        flushed.expect("flush");
        assert_eq!(totals(&store).await, (3, 1, 1));
        // The node stops with two events counted only in its memory.
        drop(b);
        let a = recover_until_gone(&store, a, b_node).await;
        assert_eq!(totals(&store).await, (3, 3, 3));
        assert_eq!(
            count(
                &store,
                "SELECT event_count FROM errors WHERE fingerprint = 7"
            )
            .await,
            2
        );
        // A node starting now finds nothing left to count.
        let c = open(&store).await;
        assert_eq!(totals(&store).await, (3, 3, 3));
        assert_eq!(count(&store, "SELECT COUNT(*) FROM ingest_nodes").await, 2);
        drop((a, c));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_broken_connection_is_replaced_by_a_new_node() {
        let Some(store) = fresh_store().await else {
            return;
        };
        let sink = open(&store).await;
        let flag = sink.pending_flag();
        let old = sink.node().expect("registered");
        let (sink, out) = write(sink, vec![event(1, 7, 1_000)]).await;
        out.expect("batch");
        // The server ends the writer's session (a restart or fail-over looks the same).
        let key = locks::NODE_BASE + old;
        let terminated = count(
            &store,
            &format!(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_locks
                 WHERE locktype = 'advisory'
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND ((classid::bigint << 32) | objid::bigint) = {key}"
            ),
        )
        .await;
        assert_eq!(terminated, 1);
        // The batch that finds the connection broken fails as unavailable, or, if the driver
        // noticed first, runs on a new connection; either way the next one is stored.
        let mut sink = sink;
        let mut stored = false;
        for n in 2..5 {
            let (s, out) = write(sink, vec![event(n, 7, 1_000)]).await;
            sink = s;
            match out {
                Ok(o) => {
                    assert_eq!(o, [EventOutcome::Stored]);
                    stored = true;
                    break;
                }
                Err(e) => assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}"),
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
        assert!(stored, "the sink reconnected");
        let new = sink.node().expect("registered again");
        assert_ne!(new, old);
        assert!(flag.load(Ordering::Acquire));
        let sink = recover_until_gone(&store, sink, old).await;
        let (sink, flushed) = flush(sink).await;
        flushed.expect("flush");
        assert!(!flag.load(Ordering::Acquire));
        let (events, counted, hourly) = totals(&store).await;
        assert_eq!(
            (counted, hourly),
            (events, events),
            "each event counted once"
        );
        drop(sink);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn two_nodes_writing_the_same_errors_at_once_neither_fail_nor_miscount() {
        let Some(store) = fresh_store().await else {
            return;
        };
        let mut writers = Vec::new();
        for node in 0..2u64 {
            let sink = open(&store).await;
            writers.push(tokio::task::spawn_blocking(move || {
                let mut sink = sink;
                for round in 0..20u64 {
                    // The same 15 errors in opposite orders, new and old ones, and every third
                    // event id shared by both nodes.
                    let records: Vec<Record> = (0..30u64)
                        .map(|i| {
                            let fp = if node == 0 { i % 15 } else { 14 - i % 15 };
                            let n = if i % 3 == 0 {
                                round * 1_000 + i
                            } else {
                                1_000_000 * (node + 1) + round * 1_000 + i
                            };
                            event(n, fp as i64 + round as i64 / 5, 1_000 + i as i64)
                        })
                        .collect();
                    let jobs: Vec<&[Record]> = records.chunks(7).collect();
                    sink.write_batch(&jobs).expect("batch");
                    sink.flush_counts().expect("counts");
                }
                sink
            }));
        }
        let mut sinks = Vec::new();
        for w in writers {
            sinks.push(w.await.expect("writer"));
        }
        let (events, counted, hourly) = totals(&store).await;
        assert_eq!((counted, hourly), (events, events));
        assert_eq!(events, 2 * 20 * 20 + 20 * 10, "shared ids stored once");
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM (SELECT project_id, fingerprint FROM errors
                 GROUP BY 1, 2 HAVING COUNT(*) > 1) d"
            )
            .await,
            0
        );
        assert_eq!(
            count(&store, "SELECT COUNT(DISTINCT short_seq) FROM errors").await,
            count(&store, "SELECT COUNT(*) FROM errors").await
        );
        drop(sinks);
    }
}
