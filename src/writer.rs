//! The batching writer: a cloneable [`WriterHandle`] that ingestion handlers submit jobs to, and
//! a private loop on its own OS thread that owns the database connection and commits one
//! transaction per batch. A batch closes when it holds `batch_size` jobs or when the first job
//! in it has waited `batch_interval`, whichever comes first; each job's submitter is told the
//! outcome only after the commit (group commit).
//!
//! The loop also writes the error counts the sink keeps in memory (`store::counts`): when they
//! have waited `store::counts::FLUSH_INTERVAL`, when the queue is idle, and whenever a reader asks
//! through [`WriterHandle::settle_counts`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::store::ingest::{EventOutcome, EventSink, Record};
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The queue is full; the client should retry later.
    #[error("the write queue is full")]
    QueueFull,
    /// The writer is stopping or stopped.
    #[error("the writer is shut down")]
    Closed,
    /// The database could not grow.
    #[error("the database is full")]
    StorageFull,
    /// The database cannot be reached; the backend reconnects by itself.
    #[error("the database is unavailable")]
    Unavailable,
    /// Any other database failure; the cause went to the log.
    #[error("the database write failed")]
    Failed,
}

pub type Reply = oneshot::Sender<Result<Vec<EventOutcome>, WriteError>>;

enum Message {
    Job {
        records: Vec<Record>,
        reply: Option<Reply>,
    },
    /// Write the error counts of every batch committed so far, then answer.
    SettleCounts(oneshot::Sender<Result<(), WriteError>>),
    /// Everything queued before this is written, then the loop ends.
    Shutdown,
}

/// Room in the channel beyond the job capacity, for [`Message::SettleCounts`] requests: jobs
/// are bounded by `depth`, so readers find a place even when the job queue is full.
const SETTLE_SLOTS: usize = 256;

/// Handle used by request handlers. Sending never blocks: a full queue is reported at once.
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Message>,
    /// Jobs submitted and not yet committed: those in the channel plus the batch the writer is
    /// filling or committing.
    depth: Arc<AtomicUsize>,
    /// Most jobs `depth` may reach; see [`WriterHandle::submit`].
    capacity: usize,
    closed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// The sink's "counts wait in memory" flag.
    counts_pending: Arc<AtomicBool>,
}

/// Owns the writer thread; [`Writer::shutdown`] drains the queue and joins it.
pub struct Writer {
    handle: WriterHandle,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub batch_interval: Duration,
}

impl Writer {
    pub fn start(
        sink: Box<dyn EventSink>,
        config: WriterConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Writer> {
        // A bounded std channel: `try_send` never blocks a handler, and the writer thread can
        // wait on it with a timeout, which the interval trigger needs.
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity + SETTLE_SLOTS);
        let depth = Arc::new(AtomicUsize::new(0));
        let handle = WriterHandle {
            tx,
            depth: depth.clone(),
            capacity: config.queue_capacity,
            closed: Arc::new(AtomicBool::new(false)),
            metrics: metrics.clone(),
            counts_pending: sink.pending_flag(),
        };
        let thread = std::thread::Builder::new()
            .name("faultline-writer".into())
            .spawn(move || run_loop(sink, rx, config, depth, metrics))?;
        Ok(Writer {
            handle,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Stops accepting jobs, writes everything already queued, and waits for the thread.
    pub fn shutdown(mut self) {
        self.handle.closed.store(true, Ordering::SeqCst);
        // A blocking send: it waits for room, so the shutdown marker lands behind every job.
        let _ = self.handle.tx.send(Message::Shutdown);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("writer thread panicked");
            }
        }
    }
}

impl WriterHandle {
    /// Queues a job. With `reply`, the outcome is sent after the batch commits.
    pub fn submit(&self, records: Vec<Record>, reply: Option<Reply>) -> Result<(), WriteError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(WriteError::Closed);
        }
        // Counted before sending so the writer's decrement can never run first.
        let depth = self.depth.fetch_add(1, Ordering::SeqCst) + 1;
        // The capacity bounds every job not yet committed, not only those still in the channel:
        // the writer empties the channel into its batch as jobs arrive, so the channel alone
        // would let `capacity + batch_size` jobs pile up in memory and would almost never
        // report a full queue while a slow commit holds everything back.
        if depth > self.capacity {
            self.depth.fetch_sub(1, Ordering::SeqCst);
            return Err(WriteError::QueueFull);
        }
        match self.tx.try_send(Message::Job { records, reply }) {
            Ok(()) => {
                self.metrics.queue_depth.set(depth as i64);
                Ok(())
            }
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => Err(WriteError::QueueFull),
                    TrySendError::Disconnected(_) => Err(WriteError::Closed),
                }
            }
        }
    }

    /// Queues a job and waits until it is committed.
    pub async fn write(&self, records: Vec<Record>) -> Result<Vec<EventOutcome>, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.submit(records, Some(tx))?;
        rx.await.map_err(|_| WriteError::Closed)?
    }

    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }

    /// Waits until the error counts of every event acknowledged so far are in the database.
    /// Read requests call this first, so a count never lags behind a 200 the client has seen.
    /// Returns at once when nothing waits, which is the common case for reads.
    pub async fn settle_counts(&self) -> Result<(), WriteError> {
        // Set by the writer before it answers a batch's jobs, cleared only after the counts
        // are committed; see `EventSink`.
        if !self.counts_pending.load(Ordering::Acquire) {
            return Ok(());
        }
        self.settle_counts_now().await
    }

    /// Like [`WriterHandle::settle_counts`], but always asks the writer, so that it also covers
    /// a batch whose commit the caller has just seen in the database and whose counts the
    /// writer may not have marked as waiting yet (alert delivery reads such rows).
    pub async fn settle_counts_now(&self) -> Result<(), WriteError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Message::SettleCounts(tx))
            .map_err(|e| match e {
                TrySendError::Full(_) => WriteError::QueueFull,
                TrySendError::Disconnected(_) => WriteError::Closed,
            })?;
        rx.await.map_err(|_| WriteError::Closed)?
    }
}

struct Pending {
    records: Vec<Record>,
    reply: Option<Reply>,
}

fn run_loop(
    mut sink: Box<dyn EventSink>,
    rx: Receiver<Message>,
    config: WriterConfig,
    depth: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
) {
    let mut stopping = false;
    let mut batch: Vec<Pending> = Vec::with_capacity(config.batch_size);
    let mut settle: Vec<oneshot::Sender<Result<(), WriteError>>> = Vec::new();
    while !stopping {
        // Wait for the first job of the next batch; counts waiting in memory are written when
        // they fall due with nothing else to do.
        let first = match sink.counts_due_in() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(wait) => rx.recv_timeout(wait),
        };
        match first {
            Ok(Message::Job { records, reply }) => batch.push(Pending { records, reply }),
            // No batch is open: answer the reader now rather than wait to fill one.
            Ok(Message::SettleCounts(reply)) => {
                settle.push(reply);
                settle_counts(sink.as_mut(), &mut settle);
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {
                settle_counts(sink.as_mut(), &mut settle);
                continue;
            }
            Ok(Message::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
        }
        let deadline = Instant::now() + config.batch_interval;
        while batch.len() < config.batch_size {
            // Take what is already queued without waiting; wait only while the interval lasts.
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            stopping = true;
                            break;
                        }
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    stopping = true;
                    break;
                }
            };
            match msg {
                Message::Job { records, reply } => batch.push(Pending { records, reply }),
                // A reader waits: commit what is here now rather than fill the batch.
                Message::SettleCounts(reply) => {
                    settle.push(reply);
                    break;
                }
                Message::Shutdown => {
                    stopping = true;
                    break;
                }
            }
        }
        commit(sink.as_mut(), &mut batch, &depth, &metrics);
        if !settle.is_empty() {
            settle_counts(sink.as_mut(), &mut settle);
        }
    }
    // Drain whatever is still queued (jobs submitted before `closed` was set).
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Message::Job { records, reply } => {
                batch.push(Pending { records, reply });
                if batch.len() >= config.batch_size {
                    commit(sink.as_mut(), &mut batch, &depth, &metrics);
                }
            }
            Message::SettleCounts(reply) => settle.push(reply),
            Message::Shutdown => {}
        }
    }
    if !batch.is_empty() {
        commit(sink.as_mut(), &mut batch, &depth, &metrics);
    }
    // The last counts; whatever cannot be written now is recounted at the next start.
    settle_counts(sink.as_mut(), &mut settle);
    tracing::debug!("writer stopped");
}

/// Writes the counts waiting in memory and answers the readers waiting for them. A failure is
/// logged and reported; the counts stay in memory for the next attempt (and are recounted from
/// the events after a restart).
fn settle_counts(
    sink: &mut dyn EventSink,
    waiting: &mut Vec<oneshot::Sender<Result<(), WriteError>>>,
) {
    let result = sink.flush_counts().map_err(|e| {
        if e.is_full() {
            tracing::warn!("database full: error counts not written yet");
            WriteError::StorageFull
        } else if matches!(e, StoreError::Unavailable(_)) {
            tracing::warn!("database unavailable: error counts not written yet");
            WriteError::Unavailable
        } else {
            tracing::error!(error = %e, "writing error counts failed");
            WriteError::Failed
        }
    });
    for reply in waiting.drain(..) {
        let _ = reply.send(result);
    }
}

/// Writes one batch, answers its jobs, and releases their places in the queue (`depth`), so
/// the count stays right on every path, the shutdown drain included.
fn commit(
    sink: &mut dyn EventSink,
    batch: &mut Vec<Pending>,
    depth: &AtomicUsize,
    metrics: &Metrics,
) {
    let n = batch.len();
    if n == 0 {
        return;
    }
    let started = Instant::now();
    let jobs: Vec<&[Record]> = batch.iter().map(|p| p.records.as_slice()).collect();
    let result = sink.write_batch(&jobs);
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.batch_size.observe(batch.len() as f64);
    // Before any answer: a client that got its 200 and sends the next event at once must find
    // its job's place in the queue free again, not a spurious 503.
    let left = depth.fetch_sub(n, Ordering::SeqCst) - n;
    metrics.queue_depth.set(left as i64);
    match result {
        Ok(outcomes) => {
            for (pending, outcome) in batch.drain(..).zip(outcomes) {
                for o in &outcome {
                    let counter = match o {
                        EventOutcome::Stored => &metrics.events_accepted,
                        EventOutcome::Duplicate => &metrics.events_deduplicated,
                        EventOutcome::ProjectGone => continue,
                    };
                    counter.inc();
                }
                if let Some(reply) = pending.reply {
                    let _ = reply.send(Ok(outcome));
                }
            }
        }
        Err(e) => {
            let err = if e.is_full() {
                tracing::warn!("database full: batch of {} jobs refused", batch.len());
                WriteError::StorageFull
            } else if matches!(e, StoreError::Unavailable(_)) {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "database unavailable: batch of {} jobs refused", batch.len());
                WriteError::Unavailable
            } else {
                log_store_error(&e);
                WriteError::Failed
            };
            for pending in batch.drain(..) {
                if let Some(reply) = pending.reply {
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
}

fn log_store_error(e: &StoreError) {
    tracing::error!(error = %e, cause = ?std::error::Error::source(e), "batch write failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{SqliteOptions, SqliteSink};
    use crate::store::SqliteStore;

    /// A writer on a fresh database whose batches stay open for an hour, so that nothing
    /// commits before [`Writer::shutdown`] and the queue's fill level is known exactly.
    fn held_writer(dir: &tempfile::TempDir, queue_capacity: usize) -> Writer {
        let store = SqliteStore::open_with(SqliteOptions {
            path: dir.path().join("writer.db"),
            synchronous: Default::default(),
            max_page_count: None,
        })
        .expect("database opens and migrates");
        let sink: Box<dyn EventSink> =
            Box::new(SqliteSink::open(store.options(), Default::default()).expect("sink opens"));
        let config = WriterConfig {
            queue_capacity,
            batch_size: 1000,
            batch_interval: Duration::from_secs(3600),
        };
        Writer::start(sink, config, Arc::new(Metrics::new())).expect("writer starts")
    }

    #[test]
    fn full_queue_is_refused_at_once_and_queued_jobs_still_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let writer = held_writer(&dir, 2);
        let handle = writer.handle();
        let mut replies = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = oneshot::channel();
            handle
                .submit(Vec::new(), Some(tx))
                .expect("room in the queue");
            replies.push(rx);
        }
        // The writer has taken both jobs into its open batch; they still count against the
        // capacity until they are committed.
        let (tx, mut refused) = oneshot::channel();
        assert_eq!(
            handle.submit(Vec::new(), Some(tx)),
            Err(WriteError::QueueFull)
        );
        assert_eq!(handle.depth(), 2);
        assert!(refused.try_recv().is_err(), "a refused job gets no reply");

        writer.shutdown();
        for rx in replies {
            assert_eq!(rx.blocking_recv().expect("reply sent"), Ok(Vec::new()));
        }
        assert_eq!(handle.depth(), 0);
        assert_eq!(handle.submit(Vec::new(), None), Err(WriteError::Closed));
    }
}
