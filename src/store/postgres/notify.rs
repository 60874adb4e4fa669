//! Key-cache coherence between nodes. Each node keeps every client key and setting in memory
//! ([`KeyCache`]) so that an event is authenticated without a database read. A change made
//! through one node updates that node's cache before it answers (as on SQLite); this task brings
//! every other node's cache along, within a second:
//!
//! - migration 2's trigger announces each change to `client_keys` and
//!   `error_tracking_settings` on the `faultline_cache` channel, as
//!   `<revision>:key:<public key>` or `<revision>:setting:<project id>`; the task `LISTEN`s on a
//!   connection of its own and reads the named row again (a key or setting that is gone is
//!   refused from then on, as a deleted one);
//! - notifications sent while a node was disconnected are lost, so after every (re)connect the
//!   task reloads the whole cache before it listens on;
//! - as a backstop it compares the stored revision with the newest it has seen every few
//!   seconds, and reloads everything when the database is ahead twice in a row (once can be a
//!   notification still on its way).
//!
//! Event authentication itself still reads nothing from the database.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use super::PgStore;
use crate::domain::keycache::KeyCache;
use crate::store::{ClientKey, Setting, StoreResult};

/// The channel migration 2's trigger notifies.
pub const CHANNEL: &str = "faultline_cache";

/// How often the stored revision is compared with the newest one seen.
const REVISION_CHECK: Duration = Duration::from_secs(3);

/// Pause before connecting again after the listening connection failed.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Starts the task; it stops when `stop` turns true.
pub fn spawn(
    store: PgStore,
    cache: Arc<KeyCache>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let session = listen(&store, &cache, &mut stop);
            match session.await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, cause = ?std::error::Error::source(&e),
                        "key cache notifications interrupted; reconnecting");
                }
            }
            tokio::select! {
                _ = stopped(&mut stop) => break,
                _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
            }
        }
    })
}

/// One connection's life: listen, reload, then apply notifications until the connection
/// fails (an error) or the server stops (`Ok`).
async fn listen(
    store: &PgStore,
    cache: &KeyCache,
    stop: &mut watch::Receiver<bool>,
) -> StoreResult<()> {
    let (client, mut connection) = store.config.connect(NoTls).await?;
    // The connection's messages, notifications among them, as a stream; polling it also drives
    // the client's queries.
    let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(Ok(n.payload().to_owned())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        }
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        // Listening first, then reading: a change committed in between is both read and
        // announced, never neither.
        let mut newest = reload(store, cache).await?;
        let mut behind = false;
        let mut ticks = tokio::time::interval(REVISION_CHECK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped(stop) => return Ok(()),
                note = notes.recv() => match note {
                    Some(Ok(payload)) => {
                        if let Some(rev) = apply(store, cache, &payload).await? {
                            newest = newest.max(rev);
                        }
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(crate::store::StoreError::Unavailable(
                        "the notification connection closed".into(),
                    )),
                },
                _ = ticks.tick() => {
                    let stored = revision(store).await?;
                    if stored > newest {
                        if behind {
                            tracing::info!(stored, seen = newest, "key cache behind the database; reloading");
                            newest = reload(store, cache).await?;
                            behind = false;
                        } else {
                            behind = true;
                        }
                    } else {
                        behind = false;
                    }
                }
            }
        }
    }
    .await;
    drop(client);
    driver.abort();
    result
}

/// Resolves once `stop` turns true (or its sender is gone), holding no borrow of it after.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// The stored revision.
async fn revision(store: &PgStore) -> StoreResult<i64> {
    let client = store.client().await?;
    Ok(client
        .query_one("SELECT rev FROM cache_revision WHERE id = 1", &[])
        .await?
        .get(0))
}

/// Reads every key and setting into the cache; returns the revision read with them (in one
/// snapshot, so nothing announced after it is missed).
async fn reload(store: &PgStore, cache: &KeyCache) -> StoreResult<i64> {
    let mut client = store.client().await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let rev: i64 = tx
        .query_one("SELECT rev FROM cache_revision WHERE id = 1", &[])
        .await?
        .get(0);
    let keys = tx
        .query(
            "SELECT id, project_id, active, public_key FROM client_keys",
            &[],
        )
        .await?
        .iter()
        .map(|r| ClientKey {
            id: r.get(0),
            project_id: r.get(1),
            active: r.get(2),
            public_key: r.get(3),
        })
        .collect();
    let settings = tx
        .query(
            "SELECT project_id, active, integrated FROM error_tracking_settings",
            &[],
        )
        .await?
        .iter()
        .map(|r| Setting {
            project_id: r.get(0),
            active: r.get(1),
            integrated: r.get(2),
        })
        .collect();
    tx.commit().await?;
    cache.reload(keys, settings);
    Ok(rev)
}

/// Applies one notification; returns its revision. A payload this build does not understand is
/// logged and answered with a full reload at the next revision check.
async fn apply(store: &PgStore, cache: &KeyCache, payload: &str) -> StoreResult<Option<i64>> {
    let mut parts = payload.splitn(3, ':');
    let (Some(rev), Some(kind), Some(what)) = (parts.next(), parts.next(), parts.next()) else {
        tracing::warn!(payload, "unexpected key cache notification");
        return Ok(None);
    };
    let Ok(rev) = rev.parse::<i64>() else {
        tracing::warn!(payload, "unexpected key cache notification");
        return Ok(None);
    };
    let client = store.client().await?;
    match kind {
        "key" => {
            let row = client
                .query_opt(
                    "SELECT id, project_id, active, public_key FROM client_keys
                     WHERE public_key = $1",
                    &[&what],
                )
                .await?;
            match row {
                Some(r) => cache.upsert_key(&ClientKey {
                    id: r.get(0),
                    project_id: r.get(1),
                    active: r.get(2),
                    public_key: r.get(3),
                }),
                None => cache.remove_key(what),
            }
        }
        "setting" => {
            let Ok(project_id) = what.parse::<i64>() else {
                return Ok(None);
            };
            let row = client
                .query_opt(
                    "SELECT project_id, active, integrated FROM error_tracking_settings
                     WHERE project_id = $1",
                    &[&project_id],
                )
                .await?;
            match row {
                Some(r) => cache.set_setting(Setting {
                    project_id: r.get(0),
                    active: r.get(1),
                    integrated: r.get(2),
                }),
                None => cache.remove_setting(project_id),
            }
        }
        _ => {
            tracing::warn!(payload, "unexpected key cache notification");
            return Ok(None);
        }
    }
    Ok(Some(rev))
}
