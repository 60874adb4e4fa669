//! The read API's queries on PostgreSQL ([`ReadStore`]): the SQLite backend's keyset pages
//! (`store::sqlite::read`) statement for statement, walking one index from the cursor, no
//! OFFSET; the 24h stats come from `error_hourly`, never from scanning events.
//!
//! `events` is partitioned by the day received, and every partition has its own
//! `events_by_error` and `events_messages`: an ordered walk of an error's (or a project's
//! message) events is a merge of one index range per partition, which PostgreSQL stops after
//! `LIMIT` rows like SQLite's single range.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::PgStore;
use crate::store::payload;
use crate::store::read::*;
use crate::store::StoreResult;

/// A statement's parameters, built alongside its SQL; `$n` is the n-th entry.
type Args = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Appends a parameter and returns its placeholder number.
fn push(args: &mut Args, value: impl ToSql + Sync + Send + 'static) -> usize {
    args.push(Box::new(value));
    args.len()
}

#[async_trait]
impl ReadStore for PgStore {
    async fn list_errors(&self, query: ErrorQuery) -> StoreResult<KeysetPage<TrackedError>> {
        let c = self.client().await?;
        list_errors(&c, &query, Utc::now().timestamp()).await
    }

    async fn error(&self, project_id: i64, fingerprint: i64) -> StoreResult<Option<TrackedError>> {
        let c = self.client().await?;
        error_by_fingerprint(&c, project_id, fingerprint, Utc::now().timestamp()).await
    }

    async fn set_error_status(
        &self,
        project_id: i64,
        fingerprint: i64,
        status: ErrorStatus,
    ) -> StoreResult<Option<TrackedError>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE errors SET status = $3 WHERE project_id = $1 AND fingerprint = $2
                 RETURNING {ERROR_COLS}"
            ))
            .await?;
        let Some(row) = c
            .query_opt(&st, &[&project_id, &fingerprint, &status.code()])
            .await?
        else {
            return Ok(None);
        };
        let mut items = vec![error_row(&row)?];
        attach_frequency(&c, &mut items, Utc::now().timestamp()).await?;
        Ok(items.pop())
    }

    async fn list_error_events(
        &self,
        query: EventQuery,
    ) -> StoreResult<Option<KeysetPage<StoredEvent>>> {
        let c = self.client().await?;
        list_error_events(&c, &query).await
    }

    async fn list_messages(&self, query: MessageQuery) -> StoreResult<KeysetPage<StoredMessage>> {
        let c = self.client().await?;
        list_messages(&c, &query).await
    }

    async fn error_by_id(&self, id: i64) -> StoreResult<Option<TrackedError>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("SELECT {ERROR_COLS} FROM errors WHERE id = $1"))
            .await?;
        let Some(row) = c.query_opt(&st, &[&id]).await? else {
            return Ok(None);
        };
        let mut items = vec![error_row(&row)?];
        attach_frequency(&c, &mut items, Utc::now().timestamp()).await?;
        Ok(items.pop())
    }

    async fn issue_extras(&self, error_ids: Vec<i64>) -> StoreResult<HashMap<i64, IssueExtras>> {
        let c = self.client().await?;
        issue_extras(&c, &error_ids).await
    }

    async fn latest_event(&self, error_id: i64) -> StoreResult<Option<LatestEvent>> {
        let c = self.client().await?;
        latest_event(&c, error_id).await
    }

    async fn event_counts(&self, query: EventCountQuery) -> StoreResult<Vec<(i64, i64)>> {
        let c = self.client().await?;
        event_counts(&c, &query).await
    }

    async fn project_environments(&self, project_id: i64) -> StoreResult<Vec<String>> {
        let c = self.client().await?;
        // The recent errors come from the project's own rows of an errors index, and each
        // one's environments from a range of the `error_tags` primary key: the events are
        // never read. `COLLATE "C"` sorts by code point as SQLite's BINARY does, whatever
        // the database's collation; the id breaks ties at the cut the way the index does.
        let st = c
            .prepare_cached(
                "SELECT DISTINCT t.value COLLATE \"C\" AS value FROM error_tags AS t
                 WHERE t.key = 'environment' AND t.error_id IN (
                     SELECT id FROM errors WHERE project_id = $1
                     ORDER BY last_seen_at DESC, id DESC LIMIT $2)
                 ORDER BY value",
            )
            .await?;
        let rows = c.query(&st, &[&project_id, &ENVIRONMENT_ERRORS]).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<_, String>(0)?))
            .collect()
    }
}

/// One statement for the whole page: per error, a probe of `events_by_error` from each end
/// (its newest and its oldest event), so a page of issues costs a few hundred index lookups
/// and never a scan, in one round trip.
async fn issue_extras(c: &Object, error_ids: &[i64]) -> StoreResult<HashMap<i64, IssueExtras>> {
    if error_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let st = c
        .prepare_cached(
            "SELECT e.id, n.is_message, n.level, n.release, o.release
             FROM unnest($1::bigint[]) AS e(id)
             CROSS JOIN LATERAL (
                 SELECT is_message, level, release FROM events WHERE error_id = e.id
                 ORDER BY occurred_at DESC, id DESC LIMIT 1) AS n
             LEFT JOIN LATERAL (
                 SELECT release FROM events WHERE error_id = e.id
                 ORDER BY occurred_at, id LIMIT 1) AS o ON TRUE",
        )
        .await?;
    let rows = c.query(&st, &[&error_ids]).await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        out.insert(
            r.try_get::<_, i64>(0)?,
            IssueExtras {
                is_message: r.try_get(1)?,
                level: r.try_get(2)?,
                last_release: r.try_get(3)?,
                first_release: r.try_get(4)?,
            },
        );
    }
    Ok(out)
}

async fn latest_event(c: &Object, error_id: i64) -> StoreResult<Option<LatestEvent>> {
    let st = c
        .prepare_cached(
            "SELECT event_id, occurred_at, received_at, payload, payload_codec FROM events
             WHERE error_id = $1 ORDER BY occurred_at DESC, id DESC LIMIT 1",
        )
        .await?;
    let Some(r) = c.query_opt(&st, &[&error_id]).await? else {
        return Ok(None);
    };
    let occurred: i64 = r.try_get(1)?;
    let received: i64 = r.try_get(2)?;
    let stored: Vec<u8> = r.try_get(3)?;
    let codec: i64 = r.try_get(4)?;
    Ok(Some(LatestEvent {
        event_id: r.try_get(0)?,
        occurred_at: ms_to_dt(occurred),
        received_at: ms_to_dt(received),
        payload: payload::event_json(codec, stored)?,
    }))
}

/// The SQL and parameters of [`event_counts`]; public within the crate for its plan test.
pub(crate) fn event_counts_sql(q: &EventCountQuery) -> (String, Args) {
    let mut args: Args = Vec::new();
    push(&mut args, q.from);
    push(&mut args, q.bucket_ms.max(1));
    push(&mut args, q.until);
    push(&mut args, q.projects.clone());
    // Walks each selected error's events through events_by_error(error_id, occurred_at), within
    // the time range only, so the cost follows the events counted, not the project's history.
    let mut sql = String::from(
        "SELECT (ev.occurred_at - $1::bigint) / $2::bigint AS bucket, COUNT(*)
         FROM errors JOIN events AS ev ON ev.error_id = errors.id
         WHERE errors.project_id = ANY($4::bigint[])
           AND ev.occurred_at >= $1::bigint AND ev.occurred_at < $3::bigint",
    );
    if let Some(status) = q.status {
        let n = push(&mut args, status.code());
        sql.push_str(&format!(" AND errors.status = ${n}"));
    }
    if let Some(text) = q.text.as_deref().filter(|t| !t.is_empty()) {
        push_text_filter(&mut sql, &mut args, "errors.", text);
    }
    push_tag_filters(&mut sql, &mut args, &q.tags);
    if let Some(env) = q.environment.as_deref() {
        let n = push(&mut args, env.to_owned());
        sql.push_str(&format!(" AND ev.environment = ${n}"));
    }
    sql.push_str(" GROUP BY bucket ORDER BY bucket");
    (sql, args)
}

async fn event_counts(c: &Object, q: &EventCountQuery) -> StoreResult<Vec<(i64, i64)>> {
    if q.projects.is_empty()
        || q.until <= q.from
        || needs_nul(q.text.as_deref(), &q.tags, q.environment.as_deref())
    {
        return Ok(Vec::new());
    }
    let (sql, args) = event_counts_sql(q);
    let st = c.prepare_cached(&sql).await?;
    let rows = c.query(&st, &refs(&args)).await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

fn ms_to_dt(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

const ERROR_COLS: &str = "id, project_id, fingerprint, name, description, actor, event_count,
    approximated_user_count, first_seen_at, last_seen_at, status, COALESCE(short_seq, id),
    platform";

fn error_row(r: &Row) -> StoreResult<TrackedError> {
    let first_seen_ms: i64 = r.try_get(8)?;
    let last_seen_ms: i64 = r.try_get(9)?;
    Ok(TrackedError {
        id: r.try_get(0)?,
        project_id: r.try_get(1)?,
        fingerprint: r.try_get(2)?,
        name: r.try_get(3)?,
        description: r.try_get(4)?,
        actor: r.try_get(5)?,
        event_count: r.try_get(6)?,
        approximated_user_count: r.try_get(7)?,
        first_seen_at: ms_to_dt(first_seen_ms),
        last_seen_at: ms_to_dt(last_seen_ms),
        status: ErrorStatus::from_code(r.try_get(10)?),
        short_seq: r.try_get(11)?,
        platform: r.try_get(12)?,
        frequency_24h: Vec::new(),
        first_seen_ms,
        last_seen_ms,
    })
}

/// Escapes `%`, `_` and the escape character itself for a `LIKE ... ESCAPE '\'` pattern.
fn like_contains(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

/// SQLite's `LIKE` folds the case of ASCII letters only. `ILIKE` and `lower()` fold whatever
/// the database's locale folds (`É` and `é` too), so both sides are folded here by hand: the
/// pattern in Rust, the column with `translate` over the 26 letters.
const ASCII_FOLD: &str = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'";

/// `AND (name LIKE .. OR description LIKE ..)`, case-insensitive for ASCII as on SQLite, with
/// the columns prefixed by `table` (`errors.` or empty).
fn push_text_filter(sql: &mut String, args: &mut Args, table: &str, text: &str) {
    let n = push(args, like_contains(text).to_ascii_lowercase());
    sql.push_str(&format!(
        " AND (translate({table}name, {ASCII_FOLD}) LIKE ${n} ESCAPE '\\' \
         OR translate({table}description, {ASCII_FOLD}) LIKE ${n} ESCAPE '\\')"
    ));
}

/// The SQL and parameters of one error-list page (`limit + 1` rows, so the caller can tell
/// whether a next page exists). Public within the crate so a query-plan test can check the
/// very statement the API runs.
pub(crate) fn list_errors_sql(q: &ErrorQuery) -> (String, Args) {
    let col = q.sort.column();
    let mut args: Args = Vec::new();
    let mut sql = if q.other_projects.is_empty() {
        push(&mut args, q.project_id);
        format!("SELECT {ERROR_COLS} FROM errors WHERE project_id = $1")
    } else {
        // Several projects cannot be one index range in sort order; PostgreSQL sorts their
        // rows. Only organization-wide lists (Grafana) ask for this.
        let mut projects = Vec::with_capacity(q.other_projects.len() + 1);
        projects.push(q.project_id);
        projects.extend_from_slice(&q.other_projects);
        push(&mut args, projects);
        format!("SELECT {ERROR_COLS} FROM errors WHERE project_id = ANY($1::bigint[])")
    };
    if let Some(status) = q.status {
        let n = push(&mut args, status.code());
        sql.push_str(&format!(" AND status = ${n}"));
    }
    if let Some(after) = q.after {
        // A row value comparison: PostgreSQL turns it into one range on the index
        // (project_id, status, <col> DESC, id DESC), so a deep page costs what the first does.
        let cmp = if q.backward { ">" } else { "<" };
        let n = push(&mut args, after.key);
        push(&mut args, after.id);
        sql.push_str(&format!(" AND ({col}, id) {cmp} (${n}, ${})", n + 1));
    }
    if let Some(text) = q.text.as_deref().filter(|t| !t.is_empty()) {
        // A substring match cannot use an index, but it runs while walking this project's rows
        // of the status index in sort order and stops after `limit + 1` matches: it reads the
        // project's errors rows, never the events.
        push_text_filter(&mut sql, &mut args, "", text);
    }
    push_tag_filters(&mut sql, &mut args, &q.tags);
    if let Some((from, until)) = q.seen_between {
        let n = push(&mut args, from);
        push(&mut args, until);
        sql.push_str(&format!(
            " AND last_seen_at >= ${n} AND first_seen_at <= ${}",
            n + 1
        ));
    }
    let dir = if q.backward { "ASC" } else { "DESC" };
    let n = push(&mut args, i64::from(q.limit) + 1);
    sql.push_str(&format!(" ORDER BY {col} {dir}, id {dir} LIMIT ${n}"));
    (sql, args)
}

/// Whether a filter asks for a NUL character. PostgreSQL's TEXT cannot hold one (so no stored
/// name, description, tag or environment contains one) and refuses one in a parameter; such a
/// filter matches nothing, as it would on SQLite, instead of failing the statement. A tag
/// filter matches nothing when its key or every one of its values has one; the values that
/// have one are left out of its array.
fn needs_nul(text: Option<&str>, tags: &[TagFilter], environment: Option<&str>) -> bool {
    let nul = |s: &str| s.contains('\0');
    text.is_some_and(nul)
        || environment.is_some_and(nul)
        || tags
            .iter()
            .filter(|t| !t.values.is_empty())
            .any(|t| nul(&t.key) || t.values.iter().all(|v| nul(v)))
}

/// `AND EXISTS (...)` on `error_tags` for each filter, appending their parameters; the
/// statement must name the `errors` table as `errors`.
fn push_tag_filters(sql: &mut String, args: &mut Args, tags: &[TagFilter]) {
    for tag in tags.iter().filter(|t| !t.values.is_empty()) {
        // One primary-key probe of `error_tags` per error walked, within the statement's own
        // walk: a filter that few errors pass reads more errors rows, never the events. The
        // values are one array parameter, so the statement's text does not depend on how many.
        let key = push(args, tag.key.clone());
        let values: Vec<String> = tag
            .values
            .iter()
            .filter(|v| !v.contains('\0'))
            .cloned()
            .collect();
        let values = push(args, values);
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM error_tags t WHERE t.error_id = errors.id \
             AND t.key = ${key} AND t.value = ANY(${values}::text[]))"
        ));
    }
}

async fn list_errors(
    c: &Object,
    q: &ErrorQuery,
    now_secs: i64,
) -> StoreResult<KeysetPage<TrackedError>> {
    if needs_nul(q.text.as_deref(), &q.tags, None) {
        return Ok(KeysetPage {
            items: Vec::new(),
            next: None,
        });
    }
    let (sql, args) = list_errors_sql(q);
    let rows = query_page(c, &sql, &args).await?;
    let items = rows
        .iter()
        .map(error_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let mut page = cut_page(items, q.limit, |e| e.keyset(q.sort));
    if q.backward {
        // Fetched walking up the list; shown in list order like every other page.
        page.items.reverse();
    }
    attach_frequency(c, &mut page.items, now_secs).await?;
    Ok(page)
}

async fn query_page(c: &Object, sql: &str, args: &Args) -> StoreResult<Vec<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, &refs(args)).await?)
}

/// Keeps `limit` of the `limit + 1` rows a keyset list query asks for. The extra row only
/// tells whether a next page exists; the cursor is the last kept row's keyset.
fn cut_page<T>(mut items: Vec<T>, limit: u32, keyset: impl Fn(&T) -> Keyset) -> KeysetPage<T> {
    let limit = limit as usize;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(keyset)
    } else {
        None
    };
    KeysetPage { items, next }
}

async fn error_by_fingerprint(
    c: &Object,
    project_id: i64,
    fingerprint: i64,
    now_secs: i64,
) -> StoreResult<Option<TrackedError>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {ERROR_COLS} FROM errors WHERE project_id = $1 AND fingerprint = $2"
        ))
        .await?;
    let Some(row) = c.query_opt(&st, &[&project_id, &fingerprint]).await? else {
        return Ok(None);
    };
    let mut items = vec![error_row(&row)?];
    attach_frequency(c, &mut items, now_secs).await?;
    Ok(items.pop())
}

/// The start of the hour `now_secs` falls in, as `error_hourly.hour` stores it.
fn hour_start(now_secs: i64) -> i64 {
    now_secs.div_euclid(3600) * 3600
}

/// Fills `frequency_24h` for every error of a page with a single query on `error_hourly` (at
/// most 24 rows per error through its primary key), never touching the events.
async fn attach_frequency(
    c: &Object,
    errors: &mut [TrackedError],
    now_secs: i64,
) -> StoreResult<()> {
    let current = hour_start(now_secs);
    let first = current - (FREQUENCY_HOURS - 1) * 3600;
    let mut counts: HashMap<(i64, i64), i64> = HashMap::new();
    if !errors.is_empty() {
        let ids: Vec<i64> = errors.iter().map(|e| e.id).collect();
        let st = c
            .prepare_cached(
                "SELECT error_id, hour, count FROM error_hourly
                 WHERE error_id = ANY($1::bigint[]) AND hour >= $2 AND hour <= $3",
            )
            .await?;
        for r in c.query(&st, &[&ids, &first, &current]).await? {
            counts.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
        }
    }
    for e in errors.iter_mut() {
        e.frequency_24h = (0..FREQUENCY_HOURS)
            .map(|i| {
                let hour = first + i * 3600;
                (hour, counts.get(&(e.id, hour)).copied().unwrap_or(0))
            })
            .collect();
    }
    Ok(())
}

/// `AND (occurred_at, id) <cmp> ($n, $m)` after the given position, appending its two
/// parameters; empty on the first page.
fn keyset_range(after: Option<Keyset>, cmp: &str, args: &mut Args) -> String {
    let Some(after) = after else {
        return String::new();
    };
    let n = push(args, after.key);
    push(args, after.id);
    format!("AND (occurred_at, id) {cmp} (${n}, ${})", n + 1)
}

const EVENT_COLS: &str = "id, event_id, occurred_at, payload, name, description, actor,
    environment, platform, payload_codec";

/// An event row of [`EVENT_COLS`] with its payload codec, the payload not yet decoded.
fn event_row(r: &Row, project_id: i64, fingerprint: i64) -> StoreResult<(i64, StoredEvent)> {
    let occurred_ms: i64 = r.try_get(2)?;
    let codec: i64 = r.try_get(9)?;
    Ok((
        codec,
        StoredEvent {
            id: r.try_get(0)?,
            project_id,
            fingerprint,
            event_id: r.try_get(1)?,
            occurred_at: ms_to_dt(occurred_ms),
            payload: r.try_get(3)?,
            name: r.try_get(4)?,
            description: r.try_get(5)?,
            actor: r.try_get(6)?,
            environment: r.try_get(7)?,
            platform: r.try_get(8)?,
            occurred_ms,
        },
    ))
}

/// One event of the error `fingerprint` by row id, its payload decoded (the web UI's event
/// view, as `store::sqlite::read::error_event`).
pub(crate) async fn error_event(
    c: &Object,
    project_id: i64,
    fingerprint: i64,
    event_row_id: i64,
) -> StoreResult<Option<StoredEvent>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLS} FROM events WHERE id = $3 AND error_id =
                 (SELECT id FROM errors WHERE project_id = $1 AND fingerprint = $2)"
        ))
        .await?;
    let Some(row) = c
        .query_opt(&st, &[&project_id, &fingerprint, &event_row_id])
        .await?
    else {
        return Ok(None);
    };
    let (codec, mut event) = event_row(&row, project_id, fingerprint)?;
    event.payload = payload::event_json(codec, std::mem::take(&mut event.payload))?;
    Ok(Some(event))
}

fn error_events_sql(error_id: i64, q: &EventQuery) -> (String, Args) {
    // A backward page reads the other way from its cursor.
    let ascending = (q.sort == EventSort::OccurredAtAsc) != q.backward;
    let (dir, cmp) = if ascending {
        ("ASC", ">")
    } else {
        ("DESC", "<")
    };
    // Both directions walk each partition's events_by_error(error_id, occurred_at, id),
    // forwards or backwards, merged in order.
    let mut args: Args = Vec::new();
    push(&mut args, error_id);
    let range = keyset_range(q.after, cmp, &mut args);
    let n = push(&mut args, i64::from(q.limit) + 1);
    let sql = format!(
        "SELECT {EVENT_COLS}
         FROM events WHERE error_id = $1 {range}
         ORDER BY occurred_at {dir}, id {dir} LIMIT ${n}"
    );
    (sql, args)
}

async fn list_error_events(
    c: &Object,
    q: &EventQuery,
) -> StoreResult<Option<KeysetPage<StoredEvent>>> {
    let st = c
        .prepare_cached("SELECT id FROM errors WHERE project_id = $1 AND fingerprint = $2")
        .await?;
    let Some(found) = c.query_opt(&st, &[&q.project_id, &q.fingerprint]).await? else {
        return Ok(None);
    };
    let error_id: i64 = found.try_get(0)?;
    let (sql, args) = error_events_sql(error_id, q);
    let rows = query_page(c, &sql, &args).await?;
    let items = rows
        .iter()
        .map(|r| event_row(r, q.project_id, q.fingerprint))
        .collect::<StoreResult<Vec<_>>>()?;
    let page = cut_page(items, q.limit, |(_, e)| e.keyset());
    // Payloads are decoded once the page is cut, so the extra row is never decoded.
    let mut items = page.items;
    if q.backward {
        items.reverse();
    }
    let items = items
        .into_iter()
        .map(|(codec, mut event)| {
            event.payload = payload::event_json(codec, std::mem::take(&mut event.payload))?;
            Ok(event)
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some(KeysetPage {
        items,
        next: page.next,
    }))
}

fn list_messages_sql(q: &MessageQuery) -> (String, Args) {
    let mut args: Args = Vec::new();
    push(&mut args, q.project_id);
    let (dir, cmp) = if q.backward {
        ("ASC", ">")
    } else {
        ("DESC", "<")
    };
    let range = keyset_range(q.after, cmp, &mut args);
    let n = push(&mut args, i64::from(q.limit) + 1);
    let sql = format!(
        "SELECT id, event_id, occurred_at, COALESCE(level, 'error'), message, release,
                environment, platform
         FROM events WHERE project_id = $1 AND is_message {range}
         ORDER BY occurred_at {dir}, id {dir} LIMIT ${n}"
    );
    (sql, args)
}

async fn list_messages(c: &Object, q: &MessageQuery) -> StoreResult<KeysetPage<StoredMessage>> {
    // Newest first along each partition's partial index events_messages(project_id,
    // occurred_at DESC, id DESC) WHERE is_message; the query must name `is_message` for
    // PostgreSQL to use it. An event without a level is an error, as Sentry defines it (its
    // SDKs leave the default out).
    let (sql, args) = list_messages_sql(q);
    let rows = query_page(c, &sql, &args).await?;
    let items = rows
        .iter()
        .map(|r| {
            let occurred_ms: i64 = r.try_get(2)?;
            Ok(StoredMessage {
                id: r.try_get(0)?,
                project_id: q.project_id,
                event_id: r.try_get(1)?,
                occurred_at: ms_to_dt(occurred_ms),
                level: r.try_get(3)?,
                message: r.try_get(4)?,
                release: r.try_get(5)?,
                environment: r.try_get(6)?,
                platform: r.try_get(7)?,
                occurred_ms,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let mut page = cut_page(items, q.limit, StoredMessage::keyset);
    if q.backward {
        page.items.reverse();
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::schema::{create_partition_sql, DAY_MS};

    /// A store on a fresh database of the test cluster; `None` (the test passes without
    /// running) only when no cluster is configured outside CI.
    async fn store() -> Option<PgStore> {
        let Ok(cluster) = std::env::var("FAULTLINE_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set FAULTLINE_TEST_POSTGRES for the PostgreSQL tests"
            );
            return None;
        };
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&cluster, tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        drop(client);
        let _ = driver.await;
        let mut url = url::Url::parse(&cluster).expect("FAULTLINE_TEST_POSTGRES is a URL");
        url.set_path(&format!("/{name}"));
        let store = PgStore::open(url.as_str()).await.expect("open and migrate");
        store
            .client()
            .await
            .expect("client")
            .batch_execute(&format!(
                "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace,
                                       created_at)
                 VALUES (1, 'p', 'p', 'g', 'g/p', 0), (2, 'q', 'q', 'g', 'g/q', 0);
                 {}; {};",
                create_partition_sql(0),
                create_partition_sql(1)
            ))
            .await
            .expect("projects and partitions");
        Some(store)
    }

    async fn exec(s: &PgStore, sql: &str) {
        s.client()
            .await
            .expect("client")
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Inserts an error with `id`, `fingerprint = id * 10`, and the given keys.
    async fn error(s: &PgStore, project: i64, id: i64, seen: (i64, i64), count: i64, status: i64) {
        exec(
            s,
            &format!(
                "INSERT INTO errors (id, project_id, fingerprint, name, description, actor,
                                     status, event_count, first_seen_at, last_seen_at)
                 VALUES ({id}, {project}, {id} * 10, 'Name' || {id}, 'desc ' || {id}, 'a',
                         {status}, {count}, {}, {})",
                seen.0, seen.1
            ),
        )
        .await;
    }

    /// Inserts an event of `error` with row `id`, occurred at `at`, received `received`
    /// (which picks the partition), the payload stored as JSON.
    async fn event(s: &PgStore, error: i64, id: i64, at: i64, received: i64, extra: &str) {
        exec(
            s,
            &format!(
                "INSERT INTO events (id, project_id, error_id, event_id, occurred_at, received_at,
                                     is_message, name, description, actor, payload, node,
                                     node_seq, level, release, environment, message)
                 SELECT {id}, project_id, {error}, 'e{id}', {at}, {received}, FALSE, 'n', 'd',
                        'a', convert_to('{{\"n\":{id}}}', 'UTF8'), 1, {id}, NULL, NULL, NULL,
                        NULL
                 FROM errors WHERE id = {error};
                 UPDATE events SET {extra} WHERE id = {id}"
            ),
        )
        .await;
    }

    fn query(sort: ErrorSort, limit: u32, after: Option<Keyset>) -> ErrorQuery {
        ErrorQuery {
            limit,
            after,
            ..ErrorQuery::new(1, Some(ErrorStatus::Unresolved), sort)
        }
    }

    fn ids(page: &KeysetPage<TrackedError>) -> Vec<i64> {
        page.items.iter().map(|e| e.id).collect()
    }

    async fn list(s: &PgStore, q: &ErrorQuery) -> KeysetPage<TrackedError> {
        s.list_errors(q.clone()).await.expect("list errors")
    }

    #[tokio::test]
    async fn pages_walk_ties_by_id_and_stop_with_no_next() {
        let Some(s) = store().await else { return };
        // Same last_seen for 1..=3: the id breaks the tie, descending.
        for id in 1..=3 {
            error(&s, 1, id, (0, 100), 1, 0).await;
        }
        error(&s, 1, 4, (0, 200), 1, 0).await;
        error(&s, 1, 5, (0, 50), 1, 1).await; // resolved: not in the unresolved list
        error(&s, 2, 6, (0, 300), 1, 0).await; // another project
        let p1 = list(&s, &query(ErrorSort::LastSeenDesc, 2, None)).await;
        assert_eq!(ids(&p1), [4, 3]);
        assert_eq!(p1.next, Some(Keyset { key: 100, id: 3 }));
        let p2 = list(&s, &query(ErrorSort::LastSeenDesc, 2, p1.next)).await;
        assert_eq!(ids(&p2), [2, 1]);
        assert_eq!(
            p2.next, None,
            "exactly `limit` rows left means no next page"
        );
    }

    #[tokio::test]
    async fn backward_pages_are_the_rows_just_before_in_list_order() {
        let Some(s) = store().await else { return };
        for id in 1..=5 {
            error(&s, 1, id, (0, id * 10), 1, 0).await;
        }
        // List order: 5 4 3 2 1. Before 2: the two rows just above it, 4 and 3, then 5.
        let mut q = query(ErrorSort::LastSeenDesc, 2, Some(Keyset { key: 20, id: 2 }));
        q.backward = true;
        let p = list(&s, &q).await;
        assert_eq!(ids(&p), [4, 3]);
        assert_eq!(p.next, Some(Keyset { key: 40, id: 4 }), "more rows before");
        q.after = p.next;
        let p = list(&s, &q).await;
        assert_eq!(ids(&p), [5]);
        assert_eq!(p.next, None);
    }

    #[tokio::test]
    async fn filters_by_status_projects_time_and_tags_and_counts_events_by_environment() {
        let Some(s) = store().await else { return };
        error(&s, 1, 1, (100, 200), 1, 0).await;
        error(&s, 1, 2, (300, 400), 1, 1).await;
        error(&s, 2, 3, (100, 500), 1, 0).await;
        event(&s, 1, 1, 150, 150, "environment = 'prod'").await;
        event(&s, 3, 2, 150, DAY_MS + 5, "environment = 'dev'").await;
        exec(
            &s,
            "INSERT INTO error_tags VALUES (1, 'release', '1.0'), (2, 'release', '2.0'),
                                           (3, 'release', '1.0'), (3, 'browser', 'Chrome')",
        )
        .await;
        let mut q = query(ErrorSort::LastSeenDesc, 10, None);
        q.status = None;
        assert_eq!(ids(&list(&s, &q).await), [2, 1]);
        q.other_projects = vec![2];
        assert_eq!(ids(&list(&s, &q).await), [3, 2, 1]);
        q.tags = vec![TagFilter {
            key: "release".into(),
            values: vec!["1.0".into(), "3.0".into()],
        }];
        assert_eq!(ids(&list(&s, &q).await), [3, 1]);
        q.tags.push(TagFilter {
            key: "browser".into(),
            values: vec!["chrome".into()],
        });
        assert_eq!(ids(&list(&s, &q).await), [0; 0], "tag values match exactly");
        q.tags[1].values = vec!["Chrome".into()];
        assert_eq!(ids(&list(&s, &q).await), [3]);
        q.tags.clear();
        q.seen_between = Some((250, 350));
        assert_eq!(ids(&list(&s, &q).await), [3, 2]);
        let counts = |environment: Option<&str>, tags: Vec<TagFilter>, text: Option<&str>| {
            let s = s.clone();
            let q = EventCountQuery {
                projects: vec![1, 2],
                status: None,
                text: text.map(str::to_owned),
                tags,
                environment: environment.map(str::to_owned),
                from: 100,
                until: 200,
                bucket_ms: 25,
            };
            async move { s.event_counts(q).await.expect("counts") }
        };
        assert_eq!(
            counts(None, vec![], None).await,
            [(2, 2)],
            "both events in the bucket 150..175, whatever their partition"
        );
        assert_eq!(counts(Some("dev"), vec![], None).await, [(2, 1)]);
        let chrome = vec![TagFilter {
            key: "browser".into(),
            values: vec!["Chrome".into()],
        }];
        assert_eq!(counts(None, chrome, None).await, [(2, 1)]);
        assert_eq!(counts(None, vec![], Some("NAME1")).await, [(2, 1)]);
        let empty = EventCountQuery {
            projects: vec![],
            status: None,
            text: None,
            tags: vec![],
            environment: None,
            from: 100,
            until: 200,
            bucket_ms: 25,
        };
        assert!(s.event_counts(empty).await.expect("no projects").is_empty());
    }

    #[tokio::test]
    async fn each_sort_uses_its_own_key() {
        let Some(s) = store().await else { return };
        error(&s, 1, 1, (10, 30), 5, 0).await;
        error(&s, 1, 2, (20, 20), 9, 0).await;
        error(&s, 1, 3, (30, 10), 1, 0).await;
        for (sort, want) in [
            (ErrorSort::LastSeenDesc, [1, 2, 3]),
            (ErrorSort::FirstSeenDesc, [3, 2, 1]),
            (ErrorSort::FrequencyDesc, [2, 1, 3]),
        ] {
            assert_eq!(ids(&list(&s, &query(sort, 10, None)).await), want);
            // The second page from the first row's cursor, in both directions.
            let first = list(&s, &query(sort, 1, None)).await;
            let rest = list(&s, &query(sort, 10, first.next)).await;
            assert_eq!(ids(&rest), want[1..]);
            let mut back = query(sort, 10, Some(rest.items[1].keyset(sort)));
            back.backward = true;
            assert_eq!(ids(&list(&s, &back).await), want[..2]);
        }
    }

    #[tokio::test]
    async fn text_query_escapes_like_wildcards_and_folds_ascii_only() {
        let Some(s) = store().await else { return };
        error(&s, 1, 1, (0, 0), 1, 0).await;
        error(&s, 1, 2, (0, 0), 1, 0).await;
        error(&s, 1, 3, (0, 0), 1, 0).await;
        exec(
            &s,
            "UPDATE errors SET name = '100% done' WHERE id = 1;
             UPDATE errors SET name = '1000 done' WHERE id = 2;
             UPDATE errors SET name = 'Élan a\\b' WHERE id = 3;",
        )
        .await;
        let mut q = query(ErrorSort::LastSeenDesc, 10, None);
        q.text = Some("0% d".into());
        assert_eq!(ids(&list(&s, &q).await), [1]);
        q.text = Some("0_ d".into());
        assert_eq!(ids(&list(&s, &q).await), [0; 0]);
        q.text = Some("DESC 2".into());
        assert_eq!(
            ids(&list(&s, &q).await),
            [2],
            "case-insensitive over the description"
        );
        q.text = Some("ÉLAN".into());
        assert_eq!(ids(&list(&s, &q).await), [3]);
        q.text = Some("élan".into());
        assert_eq!(
            ids(&list(&s, &q).await),
            [0; 0],
            "SQLite's LIKE folds ASCII letters only"
        );
        q.text = Some("A\\B".into());
        assert_eq!(ids(&list(&s, &q).await), [3], "a backslash is literal");
        q.text = Some("a\0b".into());
        assert_eq!(
            ids(&list(&s, &q).await),
            [0; 0],
            "no stored text holds a NUL"
        );
        q.text = None;
        exec(&s, "INSERT INTO error_tags VALUES (3, 'k', 'v')").await;
        q.tags = vec![TagFilter {
            key: "k".into(),
            values: vec!["v".into(), "\0".into()],
        }];
        assert_eq!(ids(&list(&s, &q).await), [3]);
        q.tags[0].values.remove(0);
        assert_eq!(ids(&list(&s, &q).await), [0; 0]);
        let counts = EventCountQuery {
            projects: vec![1],
            status: None,
            text: None,
            tags: Vec::new(),
            environment: Some("\0".into()),
            from: 0,
            until: 10,
            bucket_ms: 1,
        };
        assert!(s.event_counts(counts).await.expect("counts").is_empty());
    }

    #[tokio::test]
    async fn frequency_has_24_buckets_ending_with_the_current_hour() {
        let Some(s) = store().await else { return };
        error(&s, 1, 1, (0, 0), 1, 0).await;
        let now = Utc::now().timestamp();
        let current = hour_start(now);
        exec(
            &s,
            &format!(
                "INSERT INTO error_hourly VALUES (1, {current}, 3), (1, {}, 2), (1, {}, 7),
                                                 (1, {}, 9);",
                current - 23 * 3600,
                current - 24 * 3600, // one hour too old
                current + 3600,      // in the future
            ),
        )
        .await;
        let c = s.client().await.expect("client");
        let e = error_by_fingerprint(&c, 1, 10, now)
            .await
            .expect("query")
            .expect("found");
        assert_eq!(e.frequency_24h.len(), 24);
        assert_eq!(e.frequency_24h[0], (current - 23 * 3600, 2));
        assert_eq!(e.frequency_24h[23], (current, 3));
        assert_eq!(e.frequency_24h.iter().map(|b| b.1).sum::<i64>(), 5);
        // The trait's own entry points attach it too (unless the hour turned meanwhile).
        for e in [
            s.error(1, 10).await.expect("error").expect("found"),
            s.error_by_id(1).await.expect("by id").expect("found"),
            s.set_error_status(1, 10, ErrorStatus::Ignored)
                .await
                .expect("status")
                .expect("found"),
        ] {
            assert_eq!(e.frequency_24h.len(), 24);
            assert_eq!(e.short_seq, 1, "no short_seq: the row id");
        }
        assert!(s.error(1, 20).await.expect("error").is_none());
        assert!(s.error_by_id(2).await.expect("by id").is_none());
        assert!(s
            .set_error_status(1, 20, ErrorStatus::Resolved)
            .await
            .expect("status")
            .is_none());
        let e = s.error(1, 10).await.expect("error").expect("found");
        assert_eq!(e.status, ErrorStatus::Ignored);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("in-memory write");
        enc.finish().expect("in-memory finish")
    }

    #[tokio::test]
    async fn events_page_both_ways_across_partitions_and_decode_payloads() {
        let Some(s) = store().await else { return };
        error(&s, 1, 1, (0, 0), 5, 0).await;
        error(&s, 1, 2, (0, 0), 0, 0).await;
        // Occurred 10, 20, 20, 30, 40; received on two days, not in occurrence order.
        event(&s, 1, 1, 20, DAY_MS + 1, "release = 'r1'").await;
        event(&s, 1, 2, 10, 5, "release = 'r0'").await;
        event(&s, 1, 3, 20, 6, "level = 'warning'").await;
        event(
            &s,
            1,
            4,
            40,
            7,
            "is_message = TRUE, level = 'info', release = 'r9'",
        )
        .await;
        event(&s, 1, 5, 30, DAY_MS + 2, "release = 'r3'").await;
        let body = br#"{"event_id":"x","message":"gz"}"#;
        let envelope = [
            &br#"{"event_id":"x"}"#[..],
            b"\n",
            format!(r#"{{"type":"event","length":{}}}"#, body.len()).as_bytes(),
            b"\n",
            body,
            b"\n",
        ]
        .concat();
        {
            let c = s.client().await.expect("client");
            c.execute(
                "UPDATE events SET payload = $1, payload_codec = 1 WHERE id = 4",
                &[&gzip(&envelope)],
            )
            .await
            .expect("gzip payload");
        }
        let page = |sort, after, backward, limit| {
            let s = s.clone();
            async move {
                s.list_error_events(EventQuery {
                    project_id: 1,
                    fingerprint: 10,
                    sort,
                    limit,
                    after,
                    backward,
                })
                .await
                .expect("events")
                .expect("the error exists")
            }
        };
        let ev_ids = |p: &KeysetPage<StoredEvent>| p.items.iter().map(|e| e.id).collect::<Vec<_>>();
        let p = page(EventSort::OccurredAtDesc, None, false, 2).await;
        assert_eq!(ev_ids(&p), [4, 5]);
        assert_eq!(p.items[0].payload, body, "the envelope's event, decoded");
        assert_eq!(p.items[1].payload, br#"{"n":5}"#);
        let p = page(EventSort::OccurredAtDesc, p.next, false, 2).await;
        assert_eq!(ev_ids(&p), [3, 1], "equal times by id, descending");
        assert_eq!(p.next, Some(Keyset { key: 20, id: 1 }));
        let p = page(EventSort::OccurredAtDesc, p.next, false, 2).await;
        assert_eq!(ev_ids(&p), [2]);
        assert_eq!(p.next, None);
        let p = page(EventSort::OccurredAtAsc, None, false, 10).await;
        assert_eq!(ev_ids(&p), [2, 1, 3, 5, 4]);
        // Before event 5 in ascending order: 1 and 3, in list order, with more before them.
        let p = page(
            EventSort::OccurredAtAsc,
            Some(Keyset { key: 30, id: 5 }),
            true,
            2,
        )
        .await;
        assert_eq!(ev_ids(&p), [1, 3]);
        assert_eq!(p.next, Some(Keyset { key: 20, id: 1 }));
        let p = page(
            EventSort::OccurredAtDesc,
            Some(Keyset { key: 20, id: 1 }),
            true,
            10,
        )
        .await;
        assert_eq!(ev_ids(&p), [4, 5, 3]);
        assert_eq!(p.next, None);
        let none = s
            .list_error_events(EventQuery {
                project_id: 1,
                fingerprint: 99,
                sort: EventSort::OccurredAtDesc,
                limit: 10,
                after: None,
                backward: false,
            })
            .await
            .expect("events");
        assert!(none.is_none(), "no such error");
        let empty = s
            .list_error_events(EventQuery {
                project_id: 1,
                fingerprint: 20,
                sort: EventSort::OccurredAtDesc,
                limit: 10,
                after: None,
                backward: false,
            })
            .await
            .expect("events")
            .expect("the error exists");
        assert!(empty.items.is_empty() && empty.next.is_none());

        let latest = s.latest_event(1).await.expect("latest").expect("found");
        assert_eq!(latest.event_id, "e4");
        assert_eq!(latest.payload, body);
        assert_eq!(latest.received_at.timestamp_millis(), 7);
        assert!(s.latest_event(2).await.expect("latest").is_none());

        let extras = s.issue_extras(vec![1, 2, 1, 77]).await.expect("extras");
        assert_eq!(extras.len(), 1, "errors without events are left out");
        assert_eq!(
            extras[&1],
            IssueExtras {
                is_message: true,
                level: Some("info".into()),
                first_release: Some("r0".into()),
                last_release: Some("r9".into()),
            }
        );
        assert!(s.issue_extras(vec![]).await.expect("extras").is_empty());

        let c = s.client().await.expect("client");
        let one = error_event(&c, 1, 10, 5)
            .await
            .expect("event")
            .expect("found");
        assert_eq!((one.event_id.as_str(), one.occurred_ms), ("e5", 30));
        assert!(error_event(&c, 1, 20, 5).await.expect("event").is_none());
    }

    #[tokio::test]
    async fn messages_page_newest_first_in_both_directions() {
        let Some(s) = store().await else { return };
        error(&s, 1, 1, (0, 0), 5, 0).await;
        error(&s, 2, 2, (0, 0), 5, 0).await;
        event(&s, 1, 1, 10, 1, "is_message = TRUE, message = 'm1'").await;
        event(&s, 1, 2, 20, DAY_MS, "is_message = TRUE, level = 'info'").await;
        event(&s, 1, 3, 20, 2, "is_message = TRUE").await;
        event(&s, 1, 4, 30, 3, "message = 'not a message event'").await;
        event(&s, 2, 5, 40, 3, "is_message = TRUE").await;
        let page = |after, backward, limit| {
            let s = s.clone();
            async move {
                s.list_messages(MessageQuery {
                    project_id: 1,
                    limit,
                    after,
                    backward,
                })
                .await
                .expect("messages")
            }
        };
        let m_ids =
            |p: &KeysetPage<StoredMessage>| p.items.iter().map(|m| m.id).collect::<Vec<_>>();
        let p = page(None, false, 2).await;
        assert_eq!(m_ids(&p), [3, 2]);
        assert_eq!(p.items[0].level, "error", "no level is an error");
        assert_eq!(p.items[1].level, "info");
        let p2 = page(p.next, false, 2).await;
        assert_eq!(m_ids(&p2), [1]);
        assert_eq!(p2.items[0].message.as_deref(), Some("m1"));
        assert_eq!(p2.next, None);
        let back = page(Some(p2.items[0].keyset()), true, 1).await;
        assert_eq!(m_ids(&back), [2]);
        assert_eq!(back.next, Some(Keyset { key: 20, id: 2 }));
        let back = page(back.next, true, 1).await;
        assert_eq!(m_ids(&back), [3]);
        assert_eq!(back.next, None);
    }

    #[tokio::test]
    async fn environments_of_recent_errors_in_code_point_order() {
        let Some(s) = store().await else { return };
        for id in 1..=3 {
            error(&s, 1, id, (0, id), 1, 0).await;
        }
        error(&s, 2, 4, (0, 9), 1, 0).await;
        exec(
            &s,
            "INSERT INTO error_tags VALUES
                 (1, 'environment', 'alpha'), (2, 'environment', 'Zed'),
                 (3, 'environment', 'alpha'), (3, 'environment', 'beta'),
                 (3, 'release', 'x'), (4, 'environment', 'other')",
        )
        .await;
        assert_eq!(
            s.project_environments(1).await.expect("environments"),
            ["Zed", "alpha", "beta"]
        );
        assert!(s.project_environments(9).await.expect("none").is_empty());
    }

    /// The plan of a statement, with sequential and bitmap scans made unattractive, so that
    /// tables of a few rows are planned as large ones would be.
    async fn plan(s: &PgStore, sql: &str, args: &Args) -> String {
        let c = s.client().await.expect("client");
        c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            .await
            .expect("planner settings");
        let rows = c
            .query(&format!("EXPLAIN {sql}"), &refs(args))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")
            .await
            .expect("planner settings");
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A plan node that sorts (a Merge Append's "Sort Key" only merges ordered inputs).
    fn has_sort_step(plan: &str) -> bool {
        plan.lines().any(|l| {
            let node = l.trim_start().trim_start_matches("->").trim_start();
            node.starts_with("Sort  (") || node.starts_with("Incremental Sort  (")
        })
    }

    #[tokio::test]
    async fn every_list_query_is_one_index_range_without_a_sort() {
        let Some(s) = store().await else { return };
        for (sort, index) in [
            (ErrorSort::LastSeenDesc, "errors_by_last_seen"),
            (ErrorSort::FirstSeenDesc, "errors_by_first_seen"),
            (ErrorSort::FrequencyDesc, "errors_by_frequency"),
        ] {
            for after in [None, Some(Keyset { key: 5, id: 5 })] {
                for backward in [false, true] {
                    for (text, tags) in [
                        (None, vec![]),
                        (Some("x".to_owned()), vec![]),
                        (
                            None,
                            vec![TagFilter {
                                key: "user".into(),
                                values: vec!["id:1".into(), "email:1".into()],
                            }],
                        ),
                    ] {
                        let mut q = query(sort, 20, after);
                        q.backward = backward;
                        q.text = text;
                        let filtered = !tags.is_empty();
                        q.tags = tags;
                        let (sql, args) = list_errors_sql(&q);
                        let p = plan(&s, &sql, &args).await;
                        if filtered {
                            assert!(p.contains("error_tags_pkey"), "tags by primary key: {p}");
                        }
                        assert!(p.contains(index), "{sort:?} uses {index}: {p}");
                        assert!(!has_sort_step(&p), "no sort step: {p}");
                        assert!(!p.contains("events"), "never reads events: {p}");
                        if after.is_some() {
                            let seek = format!("(ROW({}, id) ", sort.column());
                            assert!(p.contains(&seek), "keyset is an index range: {p}");
                        }
                    }
                }
            }
        }
        let at = Some(Keyset { key: 5, id: 5 });
        for (after, backward) in [(None, false), (at, false), (at, true)] {
            let (sql, args) = list_messages_sql(&MessageQuery {
                project_id: 1,
                limit: 20,
                after,
                backward,
            });
            let p = plan(&s, &sql, &args).await;
            // One range of each partition's partial index, merged in order.
            assert!(p.contains("events_d0_project_id_occurred_at_id_idx"), "{p}");
            assert!(p.contains("events_d1_project_id_occurred_at_id_idx"), "{p}");
            assert!(!has_sort_step(&p), "no sort step: {p}");
            if after.is_some() {
                assert!(
                    p.contains("(ROW(occurred_at, id) "),
                    "keyset in the index: {p}"
                );
            }
        }
        for sort in [EventSort::OccurredAtAsc, EventSort::OccurredAtDesc] {
            for (after, backward) in [(None, false), (at, false), (at, true)] {
                let (sql, args) = error_events_sql(
                    1,
                    &EventQuery {
                        project_id: 1,
                        fingerprint: 10,
                        sort,
                        limit: 20,
                        after,
                        backward,
                    },
                );
                let p = plan(&s, &sql, &args).await;
                assert!(p.contains("events_d0_error_id_occurred_at_id_idx"), "{p}");
                assert!(p.contains("events_d1_error_id_occurred_at_id_idx"), "{p}");
                assert!(!has_sort_step(&p), "no sort step: {p}");
                if after.is_some() {
                    assert!(
                        p.contains("(ROW(occurred_at, id) "),
                        "keyset in the index: {p}"
                    );
                }
            }
        }
        let (sql, args) = event_counts_sql(&EventCountQuery {
            projects: vec![1],
            status: Some(ErrorStatus::Unresolved),
            text: None,
            tags: vec![TagFilter {
                key: "release".into(),
                values: vec!["1.0".into()],
            }],
            environment: Some("prod".into()),
            from: 0,
            until: 1000,
            bucket_ms: 10,
        });
        let p = plan(&s, &sql, &args).await;
        assert!(p.contains("events_d0_error_id_occurred_at_id_idx"), "{p}");
        assert!(p.contains("error_tags_pkey"), "{p}");
    }
}
