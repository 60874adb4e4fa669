//! The read API's queries on SQLite ([`ReadStore`]): keyset pages walking one index from the
//! cursor, no OFFSET; the 24h stats come from `error_hourly`, never from scanning events.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::{by_error, SqliteStore};
use crate::store::payload;
use crate::store::read::*;
use crate::store::StoreResult;

#[async_trait]
impl ReadStore for SqliteStore {
    async fn list_errors(&self, query: ErrorQuery) -> StoreResult<KeysetPage<TrackedError>> {
        self.run(move |c| list_errors(c, &query, Utc::now().timestamp()))
            .await
    }

    async fn error(&self, project_id: i64, fingerprint: i64) -> StoreResult<Option<TrackedError>> {
        self.run(move |c| error_by_fingerprint(c, project_id, fingerprint, Utc::now().timestamp()))
            .await
    }

    async fn set_error_status(
        &self,
        project_id: i64,
        fingerprint: i64,
        status: ErrorStatus,
    ) -> StoreResult<Option<TrackedError>> {
        self.run(move |c| {
            let n = c.execute(
                "UPDATE errors SET status = ?3 WHERE project_id = ?1 AND fingerprint = ?2",
                params![project_id, fingerprint, status.code()],
            )?;
            if n == 0 {
                return Ok(None);
            }
            error_by_fingerprint(c, project_id, fingerprint, Utc::now().timestamp())
        })
        .await
    }

    async fn list_error_events(
        &self,
        query: EventQuery,
    ) -> StoreResult<Option<KeysetPage<StoredEvent>>> {
        self.run(move |c| list_error_events(c, &query)).await
    }

    async fn list_messages(&self, query: MessageQuery) -> StoreResult<KeysetPage<StoredMessage>> {
        self.run(move |c| list_messages(c, &query)).await
    }

    async fn error_by_id(&self, id: i64) -> StoreResult<Option<TrackedError>> {
        self.run(move |c| {
            let found = c
                .prepare_cached(&format!("SELECT {ERROR_COLS} FROM errors WHERE id = ?1"))?
                .query_row([id], error_row)
                .optional()?;
            let Some(error) = found else {
                return Ok(None);
            };
            let mut items = vec![error];
            attach_frequency(c, &mut items, Utc::now().timestamp())?;
            Ok(items.pop())
        })
        .await
    }

    async fn issue_extras(&self, error_ids: Vec<i64>) -> StoreResult<HashMap<i64, IssueExtras>> {
        self.run(move |c| issue_extras(c, &error_ids)).await
    }

    async fn latest_event(&self, error_id: i64) -> StoreResult<Option<LatestEvent>> {
        self.run(move |c| latest_event(c, error_id)).await
    }

    async fn event_counts(&self, query: EventCountQuery) -> StoreResult<Vec<(i64, i64)>> {
        self.run(move |c| event_counts(c, &query)).await
    }

    async fn project_environments(&self, project_id: i64) -> StoreResult<Vec<String>> {
        self.run(move |c| {
            // The recent errors come from the project's own rows of an errors index, and each
            // one's environments from a range of the `error_tags` primary key: the events are
            // never read.
            let rows = c
                .prepare_cached(
                    "SELECT DISTINCT t.value FROM error_tags AS t
                     WHERE t.key = 'environment' AND t.error_id IN (
                         SELECT id FROM errors WHERE project_id = ?1
                         ORDER BY last_seen_at DESC LIMIT ?2)
                     ORDER BY t.value",
                )?
                .query_map(params![project_id, ENVIRONMENT_ERRORS], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(rows)
        })
        .await
    }
}

/// Two probes of `event_by_error` per error (its newest and its oldest event), so a page of
/// issues costs a few hundred index lookups and never a scan.
fn issue_extras(conn: &Connection, error_ids: &[i64]) -> StoreResult<HashMap<i64, IssueExtras>> {
    let mut newest = conn.prepare_cached(&by_error::events_of_error(
        "is_message, level, release",
        "?1",
        "",
        "DESC",
        "1",
    ))?;
    let mut oldest =
        conn.prepare_cached(&by_error::events_of_error("release", "?1", "", "ASC", "1"))?;
    let mut out = HashMap::with_capacity(error_ids.len());
    for &id in error_ids {
        let latest: Option<(bool, Option<String>, Option<String>)> = newest
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((is_message, level, last_release)) = latest else {
            continue;
        };
        let first_release: Option<String> =
            oldest.query_row([id], |r| r.get(0)).optional()?.flatten();
        out.insert(
            id,
            IssueExtras {
                is_message,
                level,
                first_release,
                last_release,
            },
        );
    }
    Ok(out)
}

fn latest_event(conn: &Connection, error_id: i64) -> StoreResult<Option<LatestEvent>> {
    let row = conn
        .prepare_cached(&by_error::events_of_error(
            "event_id, occurred_at, received_at, payload, payload_codec",
            "?1",
            "",
            "DESC",
            "1",
        ))?
        .query_row([error_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .optional()?;
    let Some((event_id, occurred, received, payload, codec)) = row else {
        return Ok(None);
    };
    Ok(Some(LatestEvent {
        event_id,
        occurred_at: ms_to_dt(occurred),
        received_at: ms_to_dt(received),
        payload: payload::event_json(codec, payload)?,
    }))
}

/// The SQL and parameters of [`event_counts`]; public within the crate for its plan test.
pub(crate) fn event_counts_sql(q: &EventCountQuery) -> (String, Vec<SqlValue>) {
    let mut args = vec![
        SqlValue::Integer(q.from),
        SqlValue::Integer(q.bucket_ms.max(1)),
        SqlValue::Integer(q.until),
    ];
    let placeholders: Vec<String> = q
        .projects
        .iter()
        .map(|p| {
            args.push(SqlValue::Integer(*p));
            format!("?{}", args.len())
        })
        .collect();
    // Walks each selected error's events through event_by_error(error_id, occurred_at), within
    // the time range only, so the cost follows the events counted, not the project's history;
    // the tail (see `by_error`) is walked by row id, each event looking up its error.
    let mut filters = String::new();
    if let Some(status) = q.status {
        args.push(SqlValue::Integer(status.code()));
        filters.push_str(&format!(" AND errors.status = ?{}", args.len()));
    }
    if let Some(text) = q.text.as_deref().filter(|t| !t.is_empty()) {
        args.push(SqlValue::Text(like_contains(text)));
        let n = args.len();
        filters.push_str(&format!(
            " AND (errors.name LIKE ?{n} ESCAPE '\\' OR errors.description LIKE ?{n} ESCAPE '\\')"
        ));
    }
    push_tag_filters(&mut filters, &mut args, &q.tags);
    // The environment is the event's, so the table's part reads the event rows only for it.
    let mut event_join = "";
    if let Some(env) = q.environment.as_deref() {
        args.push(SqlValue::Text(env.to_owned()));
        filters.push_str(&format!(" AND ev.environment = ?{}", args.len()));
        event_join = "JOIN events AS ev ON ev.id = x.id";
    }
    let projects = placeholders.join(", ");
    let tail = by_error::tail("ev.id");
    let sql = format!(
        "SELECT bucket, SUM(n) FROM (
             SELECT (x.occurred_at - ?1) / ?2 AS bucket, COUNT(*) AS n
             FROM errors JOIN event_by_error AS x ON x.error_id = errors.id {event_join}
             WHERE errors.project_id IN ({projects}) AND x.occurred_at >= ?1
               AND x.occurred_at < ?3 {filters}
             GROUP BY bucket
             UNION ALL
             SELECT (ev.occurred_at - ?1) / ?2 AS bucket, COUNT(*) AS n
             FROM events AS ev CROSS JOIN errors ON errors.id = ev.error_id
             WHERE {tail} AND errors.project_id IN ({projects}) AND ev.occurred_at >= ?1
               AND ev.occurred_at < ?3 {filters}
             GROUP BY bucket)
         GROUP BY bucket ORDER BY bucket"
    );
    (sql, args)
}

fn event_counts(conn: &Connection, q: &EventCountQuery) -> StoreResult<Vec<(i64, i64)>> {
    if q.projects.is_empty() || q.until <= q.from {
        return Ok(Vec::new());
    }
    let (sql, args) = event_counts_sql(q);
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn ms_to_dt(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

const ERROR_COLS: &str = "id, project_id, fingerprint, name, description, actor, event_count,
    approximated_user_count, first_seen_at, last_seen_at, status, COALESCE(short_seq, id),
    platform";

fn error_row(r: &Row) -> rusqlite::Result<TrackedError> {
    let first_seen_ms: i64 = r.get(8)?;
    let last_seen_ms: i64 = r.get(9)?;
    Ok(TrackedError {
        id: r.get(0)?,
        project_id: r.get(1)?,
        fingerprint: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        actor: r.get(5)?,
        event_count: r.get(6)?,
        approximated_user_count: r.get(7)?,
        first_seen_at: ms_to_dt(first_seen_ms),
        last_seen_at: ms_to_dt(last_seen_ms),
        status: ErrorStatus::from_code(r.get(10)?),
        short_seq: r.get(11)?,
        platform: r.get(12)?,
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

/// The SQL and parameters of one error-list page (`limit + 1` rows, so the caller can tell
/// whether a next page exists). Public within the crate so the query-plan test checks the very
/// statement the API runs.
pub(crate) fn list_errors_sql(q: &ErrorQuery) -> (String, Vec<SqlValue>) {
    let col = q.sort.column();
    let mut args = vec![SqlValue::Integer(q.project_id)];
    let mut sql = if q.other_projects.is_empty() {
        format!("SELECT {ERROR_COLS} FROM errors WHERE project_id = ?1")
    } else {
        // Several projects cannot be one index range in sort order; SQLite sorts their rows.
        // Only organization-wide lists (Grafana) ask for this.
        let mut placeholders = String::from("?1");
        for p in &q.other_projects {
            args.push(SqlValue::Integer(*p));
            placeholders.push_str(&format!(", ?{}", args.len()));
        }
        format!("SELECT {ERROR_COLS} FROM errors WHERE project_id IN ({placeholders})")
    };
    if let Some(status) = q.status {
        args.push(SqlValue::Integer(status.code()));
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some(after) = q.after {
        // A row value comparison: SQLite turns it into one range on the index
        // (project_id, status, <col> DESC, id DESC), so a deep page costs what the first does.
        let cmp = if q.backward { ">" } else { "<" };
        sql.push_str(&format!(
            " AND ({col}, id) {cmp} (?{}, ?{})",
            args.len() + 1,
            args.len() + 2
        ));
        args.push(SqlValue::Integer(after.key));
        args.push(SqlValue::Integer(after.id));
    }
    if let Some(text) = q.text.as_deref().filter(|t| !t.is_empty()) {
        // A substring match cannot use an index, but it runs while walking this project's rows
        // of the status index in sort order and stops after `limit + 1` matches: it reads the
        // project's errors rows, never the events.
        let n = args.len() + 1;
        sql.push_str(&format!(
            " AND (name LIKE ?{n} ESCAPE '\\' OR description LIKE ?{n} ESCAPE '\\')"
        ));
        args.push(SqlValue::Text(like_contains(text)));
    }
    push_tag_filters(&mut sql, &mut args, &q.tags);
    if let Some((from, until)) = q.seen_between {
        let n = args.len() + 1;
        sql.push_str(&format!(
            " AND last_seen_at >= ?{n} AND first_seen_at <= ?{}",
            n + 1
        ));
        args.push(SqlValue::Integer(from));
        args.push(SqlValue::Integer(until));
    }
    let dir = if q.backward { "ASC" } else { "DESC" };
    sql.push_str(&format!(
        " ORDER BY {col} {dir}, id {dir} LIMIT ?{}",
        args.len() + 1
    ));
    args.push(SqlValue::Integer(i64::from(q.limit) + 1));
    (sql, args)
}

/// `AND EXISTS (...)` on `error_tags` for each filter, appending their parameters; the
/// statement must name the `errors` table as `errors`.
fn push_tag_filters(sql: &mut String, args: &mut Vec<SqlValue>, tags: &[TagFilter]) {
    for tag in tags.iter().filter(|t| !t.values.is_empty()) {
        // One primary-key probe of `error_tags` per error walked, within the statement's own
        // walk: a filter that few errors pass reads more errors rows, never the events.
        let key = args.len() + 1;
        args.push(SqlValue::Text(tag.key.clone()));
        let values: Vec<String> = tag
            .values
            .iter()
            .map(|v| {
                args.push(SqlValue::Text(v.clone()));
                format!("?{}", args.len())
            })
            .collect();
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM error_tags t WHERE t.error_id = errors.id \
             AND t.key = ?{key} AND t.value IN ({}))",
            values.join(", ")
        ));
    }
}

fn list_errors(
    conn: &Connection,
    q: &ErrorQuery,
    now_secs: i64,
) -> StoreResult<KeysetPage<TrackedError>> {
    let (sql, args) = list_errors_sql(q);
    let mut page = keyset_page(conn, &sql, args, q.limit, error_row, |e| e.keyset(q.sort))?;
    if q.backward {
        // Fetched walking up the list; shown in list order like every other page.
        page.items.reverse();
    }
    attach_frequency(conn, &mut page.items, now_secs)?;
    Ok(page)
}

/// Runs a keyset list query, which asks for `limit + 1` rows, and keeps `limit` of them. The
/// extra row only tells whether a next page exists; the cursor is the last kept row's keyset.
fn keyset_page<T>(
    conn: &Connection,
    sql: &str,
    args: Vec<SqlValue>,
    limit: u32,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    keyset: impl Fn(&T) -> Keyset,
) -> StoreResult<KeysetPage<T>> {
    let mut items = conn
        .prepare_cached(sql)?
        .query_map(params_from_iter(args), row)?
        .collect::<Result<Vec<_>, _>>()?;
    let limit = limit as usize;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(keyset)
    } else {
        None
    };
    Ok(KeysetPage { items, next })
}

fn error_by_fingerprint(
    conn: &Connection,
    project_id: i64,
    fingerprint: i64,
    now_secs: i64,
) -> StoreResult<Option<TrackedError>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {ERROR_COLS} FROM errors WHERE project_id = ?1 AND fingerprint = ?2"
        ))?
        .query_row(params![project_id, fingerprint], error_row)
        .optional()?;
    let Some(error) = found else {
        return Ok(None);
    };
    let mut items = vec![error];
    attach_frequency(conn, &mut items, now_secs)?;
    Ok(items.pop())
}

/// The start of the hour `now_secs` falls in, as `error_hourly.hour` stores it.
fn hour_start(now_secs: i64) -> i64 {
    now_secs.div_euclid(3600) * 3600
}

/// Fills `frequency_24h` for every error of a page with a single query on `error_hourly` (at
/// most 24 rows per error through its primary key), never touching the events.
fn attach_frequency(
    conn: &Connection,
    errors: &mut [TrackedError],
    now_secs: i64,
) -> StoreResult<()> {
    let current = hour_start(now_secs);
    let first = current - (FREQUENCY_HOURS - 1) * 3600;
    let mut counts: HashMap<(i64, i64), i64> = HashMap::new();
    if !errors.is_empty() {
        // At most 10 000 ids (the Sentry API's organization-wide page), below SQLite's limit of
        // 32 766 parameters.
        let placeholders = vec!["?"; errors.len()].join(", ");
        let sql = format!(
            "SELECT error_id, hour, count FROM error_hourly
             WHERE error_id IN ({placeholders}) AND hour >= ? AND hour <= ?"
        );
        let args = errors
            .iter()
            .map(|e| e.id)
            .chain([first, current])
            .map(SqlValue::Integer);
        let mut st = conn.prepare_cached(&sql)?;
        let mut rows = st.query(params_from_iter(args))?;
        while let Some(r) = rows.next()? {
            counts.insert((r.get(0)?, r.get(1)?), r.get(2)?);
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

/// `AND (occurred_at, id) <cmp> (?n, ?m)` after the given position, appending its two
/// parameters; empty on the first page.
fn keyset_range(after: Option<Keyset>, cmp: &str, args: &mut Vec<SqlValue>) -> String {
    let Some(after) = after else {
        return String::new();
    };
    let n = args.len() + 1;
    args.push(SqlValue::Integer(after.key));
    args.push(SqlValue::Integer(after.id));
    format!("AND (occurred_at, id) {cmp} (?{n}, ?{})", n + 1)
}

const EVENT_COLS: &str = "id, event_id, occurred_at, payload, name, description, actor,
    environment, platform, payload_codec";

/// An event row of [`EVENT_COLS`] with its payload codec, the payload not yet decoded.
fn event_row(
    r: &Row<'_>,
    project_id: i64,
    fingerprint: i64,
) -> rusqlite::Result<(i64, StoredEvent)> {
    let occurred_ms: i64 = r.get(2)?;
    let codec: i64 = r.get(9)?;
    Ok((
        codec,
        StoredEvent {
            id: r.get(0)?,
            project_id,
            fingerprint,
            event_id: r.get(1)?,
            occurred_at: ms_to_dt(occurred_ms),
            payload: r.get(3)?,
            name: r.get(4)?,
            description: r.get(5)?,
            actor: r.get(6)?,
            environment: r.get(7)?,
            platform: r.get(8)?,
            occurred_ms,
        },
    ))
}

/// One event of the error `fingerprint` by row id, its payload decoded (the web UI's event
/// view).
pub(crate) fn error_event(
    conn: &Connection,
    project_id: i64,
    fingerprint: i64,
    event_row_id: i64,
) -> StoreResult<Option<StoredEvent>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLS} FROM events WHERE id = ?3 AND error_id =
                 (SELECT id FROM errors WHERE project_id = ?1 AND fingerprint = ?2)"
        ))?
        .query_row(params![project_id, fingerprint, event_row_id], |r| {
            event_row(r, project_id, fingerprint)
        })
        .optional()?;
    match found {
        None => Ok(None),
        Some((codec, mut event)) => {
            event.payload = payload::event_json(codec, std::mem::take(&mut event.payload))?;
            Ok(Some(event))
        }
    }
}

fn list_error_events(
    conn: &Connection,
    q: &EventQuery,
) -> StoreResult<Option<KeysetPage<StoredEvent>>> {
    let error_id: Option<i64> = conn
        .prepare_cached("SELECT id FROM errors WHERE project_id = ?1 AND fingerprint = ?2")?
        .query_row(params![q.project_id, q.fingerprint], |r| r.get(0))
        .optional()?;
    let Some(error_id) = error_id else {
        return Ok(None);
    };
    // A backward page reads the other way from its cursor.
    let ascending = (q.sort == EventSort::OccurredAtAsc) != q.backward;
    let (dir, cmp) = if ascending {
        ("ASC", ">")
    } else {
        ("DESC", "<")
    };
    // Both directions walk event_by_error(error_id, occurred_at, id), forwards or backwards,
    // and the tail beside it.
    let mut args = vec![SqlValue::Integer(error_id)];
    let range = keyset_range(q.after, cmp, &mut args);
    let limit = format!("?{}", args.len() + 1);
    let sql = by_error::events_of_error(EVENT_COLS, "?1", &range, dir, &limit);
    args.push(SqlValue::Integer(i64::from(q.limit) + 1));
    let row = |r: &Row<'_>| event_row(r, q.project_id, q.fingerprint);
    let page = keyset_page(conn, &sql, args, q.limit, row, |(_, e)| Keyset {
        key: e.occurred_ms,
        id: e.id,
    })?;
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

fn list_messages_sql(q: &MessageQuery) -> (String, Vec<SqlValue>) {
    let mut args = vec![SqlValue::Integer(q.project_id)];
    let (dir, cmp) = if q.backward {
        ("ASC", ">")
    } else {
        ("DESC", "<")
    };
    let range = keyset_range(q.after, cmp, &mut args);
    let sql = format!(
        "SELECT id, event_id, occurred_at, COALESCE(level, 'error'), message, release,
                environment, platform
         FROM events WHERE project_id = ?1 AND is_message = 1 {range}
         ORDER BY occurred_at {dir}, id {dir} LIMIT ?{}",
        args.len() + 1
    );
    args.push(SqlValue::Integer(i64::from(q.limit) + 1));
    (sql, args)
}

fn list_messages(conn: &Connection, q: &MessageQuery) -> StoreResult<KeysetPage<StoredMessage>> {
    // Newest first along the partial index events_messages(project_id, occurred_at DESC, id DESC)
    // WHERE is_message = 1; the query must name `is_message = 1` for SQLite to use it.
    // An event without a level is an error, as Sentry defines it (its SDKs leave the default out).
    let (sql, args) = list_messages_sql(q);
    let row = |r: &Row<'_>| {
        let occurred_ms: i64 = r.get(2)?;
        Ok(StoredMessage {
            id: r.get(0)?,
            project_id: q.project_id,
            event_id: r.get(1)?,
            occurred_at: ms_to_dt(occurred_ms),
            level: r.get(3)?,
            message: r.get(4)?,
            release: r.get(5)?,
            environment: r.get(6)?,
            platform: r.get(7)?,
            occurred_ms,
        })
    };
    let mut page = keyset_page(conn, &sql, args, q.limit, row, |m| Keyset {
        key: m.occurred_ms,
        id: m.id,
    })?;
    if q.backward {
        page.items.reverse();
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::migrate;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().expect("memory db");
        migrate(&mut c).expect("migrations");
        c.execute_batch(
            "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace, created_at)
             VALUES (1, 'p', 'p', 'g', 'g/p', 0), (2, 'q', 'q', 'g', 'g/q', 0);",
        )
        .expect("projects");
        c
    }

    /// Inserts an error with `id`, `fingerprint = id * 10`, and the given keys.
    fn error(c: &Connection, project: i64, id: i64, seen: (i64, i64), count: i64, status: i64) {
        c.execute(
            "INSERT INTO errors (id, project_id, fingerprint, name, description, actor, status,
                                 event_count, first_seen_at, last_seen_at)
             VALUES (?1, ?2, ?1 * 10, 'Name' || ?1, 'desc ' || ?1, 'a', ?3, ?4, ?5, ?6)",
            params![id, project, status, count, seen.0, seen.1],
        )
        .expect("error row");
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

    #[test]
    fn pages_walk_ties_by_id_and_stop_with_no_next() {
        let c = db();
        // Same last_seen for 1..=3: the id breaks the tie, descending.
        for id in 1..=3 {
            error(&c, 1, id, (0, 100), 1, 0);
        }
        error(&c, 1, 4, (0, 200), 1, 0);
        error(&c, 1, 5, (0, 50), 1, 1); // resolved: not in the unresolved list
        error(&c, 2, 6, (0, 300), 1, 0); // another project
        let p1 = list_errors(&c, &query(ErrorSort::LastSeenDesc, 2, None), 0).expect("p1");
        assert_eq!(ids(&p1), [4, 3]);
        let p2 = list_errors(&c, &query(ErrorSort::LastSeenDesc, 2, p1.next), 0).expect("p2");
        assert_eq!(ids(&p2), [2, 1]);
        assert_eq!(
            p2.next, None,
            "exactly `limit` rows left means no next page"
        );
    }

    #[test]
    fn backward_pages_are_the_rows_just_before_in_list_order() {
        let c = db();
        for id in 1..=5 {
            error(&c, 1, id, (0, id * 10), 1, 0);
        }
        // List order: 5 4 3 2 1. Before 2: the two rows just above it, 4 and 3, then 5.
        let mut q = query(ErrorSort::LastSeenDesc, 2, Some(Keyset { key: 20, id: 2 }));
        q.backward = true;
        let p = list_errors(&c, &q, 0).expect("page");
        assert_eq!(ids(&p), [4, 3]);
        assert_eq!(p.next, Some(Keyset { key: 40, id: 4 }), "more rows before");
        q.after = p.next;
        let p = list_errors(&c, &q, 0).expect("page");
        assert_eq!(ids(&p), [5]);
        assert_eq!(p.next, None);
    }

    #[test]
    fn filters_by_status_projects_and_time_and_counts_events_by_environment() {
        let c = db();
        error(&c, 1, 1, (100, 200), 1, 0);
        error(&c, 1, 2, (300, 400), 1, 1);
        error(&c, 2, 3, (100, 500), 1, 0);
        c.execute_batch(
            "INSERT INTO events (project_id, error_id, event_id, occurred_at, received_at,
                                 environment, is_message, name, description, actor, payload)
             VALUES (1, 1, 'e1', 150, 150, 'prod', 0, 'n', 'd', 'a', x''),
                    (2, 3, 'e3', 150, 150, 'dev', 0, 'n', 'd', 'a', x'');",
        )
        .expect("events");
        let mut q = query(ErrorSort::LastSeenDesc, 10, None);
        q.status = None;
        assert_eq!(ids(&list_errors(&c, &q, 0).expect("all")), [2, 1]);
        q.other_projects = vec![2];
        assert_eq!(ids(&list_errors(&c, &q, 0).expect("both")), [3, 2, 1]);
        q.seen_between = Some((250, 350));
        assert_eq!(ids(&list_errors(&c, &q, 0).expect("window")), [3, 2]);
        let counts = |environment: Option<&str>| {
            event_counts(
                &c,
                &EventCountQuery {
                    projects: vec![1, 2],
                    status: None,
                    text: None,
                    tags: Vec::new(),
                    environment: environment.map(str::to_owned),
                    from: 100,
                    until: 200,
                    bucket_ms: 25,
                },
            )
            .expect("counts")
        };
        assert_eq!(counts(None), [(2, 2)], "both events in the bucket 150..175");
        assert_eq!(counts(Some("dev")), [(2, 1)]);
    }

    #[test]
    fn event_counts_walk_each_errors_events_by_time() {
        let c = db();
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
        let p = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain")
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .expect("plan rows")
            .collect::<Result<Vec<_>, _>>()
            .expect("plan")
            .join("\n");
        assert!(p.contains("SEARCH x USING PRIMARY KEY"), "{p}");
        assert!(
            p.contains("occurred_at>?"),
            "a time range on the index: {p}"
        );
        assert!(
            p.contains("SEARCH ev USING INTEGER PRIMARY KEY (rowid>?)"),
            "the tail by row id: {p}"
        );
        assert!(
            p.contains("SEARCH t EXISTS USING PRIMARY KEY"),
            "tags by their primary key: {p}"
        );
    }

    #[test]
    fn each_sort_uses_its_own_key() {
        let c = db();
        error(&c, 1, 1, (10, 30), 5, 0);
        error(&c, 1, 2, (20, 20), 9, 0);
        error(&c, 1, 3, (30, 10), 1, 0);
        let order = |s| ids(&list_errors(&c, &query(s, 10, None), 0).expect("list"));
        assert_eq!(order(ErrorSort::LastSeenDesc), [1, 2, 3]);
        assert_eq!(order(ErrorSort::FirstSeenDesc), [3, 2, 1]);
        assert_eq!(order(ErrorSort::FrequencyDesc), [2, 1, 3]);
    }

    #[test]
    fn text_query_escapes_like_wildcards() {
        let c = db();
        error(&c, 1, 1, (0, 0), 1, 0);
        c.execute("UPDATE errors SET name = '100% done' WHERE id = 1", [])
            .expect("rename");
        error(&c, 1, 2, (0, 0), 1, 0);
        c.execute("UPDATE errors SET name = '1000 done' WHERE id = 2", [])
            .expect("rename");
        let mut q = query(ErrorSort::LastSeenDesc, 10, None);
        q.text = Some("0% d".into());
        assert_eq!(ids(&list_errors(&c, &q, 0).expect("list")), [1]);
        q.text = Some("DESC 2".into());
        assert_eq!(
            ids(&list_errors(&c, &q, 0).expect("list")),
            [2],
            "case-insensitive over the description"
        );
    }

    #[test]
    fn frequency_has_24_buckets_ending_with_the_current_hour() {
        let c = db();
        error(&c, 1, 1, (0, 0), 1, 0);
        let now = 1_700_000_000 + 1234; // not on an hour boundary
        let current = hour_start(now);
        c.execute_batch(&format!(
            "INSERT INTO error_hourly VALUES (1, {current}, 3), (1, {} , 2), (1, {}, 7), (1, {}, 9);",
            current - 23 * 3600,
            current - 24 * 3600, // one hour too old
            current + 3600,      // in the future
        ))
        .expect("hourly");
        let e = error_by_fingerprint(&c, 1, 10, now)
            .expect("query")
            .expect("found");
        assert_eq!(e.frequency_24h.len(), 24);
        assert_eq!(e.frequency_24h[0], (current - 23 * 3600, 2));
        assert_eq!(e.frequency_24h[23], (current, 3));
        assert_eq!(e.frequency_24h.iter().map(|b| b.1).sum::<i64>(), 5);
    }

    fn plan(c: &Connection, q: &ErrorQuery) -> String {
        let (sql, args) = list_errors_sql(q);
        let mut st = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let rows = st
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .expect("plan rows")
            .collect::<Result<Vec<_>, _>>()
            .expect("plan");
        rows.join("\n")
    }

    #[test]
    fn every_list_query_is_one_index_range_without_a_sort() {
        let c = db();
        for (sort, index) in [
            (ErrorSort::LastSeenDesc, "errors_by_last_seen"),
            (ErrorSort::FirstSeenDesc, "errors_by_first_seen"),
            (ErrorSort::FrequencyDesc, "errors_by_frequency"),
        ] {
            for after in [None, Some(Keyset { key: 5, id: 5 })] {
                for (text, tags) in [
                    (None, vec![]),
                    (Some("x".to_owned()), vec![]),
                    (
                        None,
                        vec![
                            TagFilter {
                                key: "environment".into(),
                                values: vec!["staging".into()],
                            },
                            TagFilter {
                                key: "user".into(),
                                values: vec!["id:1".into(), "email:1".into()],
                            },
                        ],
                    ),
                ] {
                    let mut q = query(sort, 20, after);
                    q.text = text;
                    let filtered = !tags.is_empty();
                    q.tags = tags;
                    let p = plan(&c, &q);
                    if filtered {
                        // Each filter is a probe of the tag table's primary key per error.
                        assert!(
                            p.contains("SEARCH t EXISTS USING PRIMARY KEY (error_id=? AND key=? AND value=?)"),
                            "tags by primary key: {p}"
                        );
                    }
                    assert!(p.contains(index), "{sort:?} uses {index}: {p}");
                    assert!(!p.contains("TEMP B-TREE"), "no sort step: {p}");
                    assert!(!p.contains("events"), "never reads events: {p}");
                    if after.is_some() {
                        // SQLite seeks on the sort column and checks the id among equal keys,
                        // so a deep page starts where the cursor points, not at the top.
                        let seek = format!("{}<?", sort.column());
                        assert!(p.contains(&seek), "keyset is an index range: {p}");
                    }
                }
            }
        }
    }

    #[test]
    fn message_list_is_one_range_of_the_partial_index() {
        let c = db();
        let at = Some(Keyset { key: 5, id: 5 });
        for (after, backward) in [(None, false), (at, false), (at, true)] {
            let q = MessageQuery {
                project_id: 1,
                limit: 20,
                after,
                backward,
            };
            let (sql, args) = list_messages_sql(&q);
            let mut st = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explain");
            let p = st
                .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
                .expect("plan rows")
                .collect::<Result<Vec<_>, _>>()
                .expect("plan")
                .join("\n");
            assert!(p.contains("events_messages"), "uses the partial index: {p}");
            assert!(!p.contains("TEMP B-TREE"), "no sort step: {p}");
        }
    }

    #[test]
    fn like_pattern_escaping() {
        assert_eq!(like_contains("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
    }
}
