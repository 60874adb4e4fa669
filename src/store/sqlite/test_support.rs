//! What the SQLite modules' unit tests share: a store with one project, a one-number query, and
//! the check that no row outlives its error.

use super::SqliteStore;

/// A fresh store in a temporary directory (kept alive by the first value) with project 1.
pub(crate) fn store_with_project() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), Default::default()).expect("store");
    store
        .run_blocking(|c| {
            c.execute_batch(
                "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace, created_at)
                 VALUES (1, 'p', 'p', 'g', 'g/p', 0)",
            )?;
            Ok(())
        })
        .expect("project");
    (dir, store)
}

/// The one integer `sql` selects.
pub(crate) fn count(store: &SqliteStore, sql: &str) -> i64 {
    store
        .run_blocking(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
        .expect("count")
}

/// No row of the tables an error owns is left without its error.
pub(crate) fn assert_no_orphans(store: &SqliteStore) {
    for table in [
        "error_hourly",
        "error_users",
        "error_tags",
        "event_by_error",
    ] {
        let orphans = format!(
            "SELECT COUNT(*) FROM {table} h LEFT JOIN errors e ON e.id = h.error_id
             WHERE e.id IS NULL"
        );
        assert_eq!(count(store, &orphans), 0, "{table}");
    }
}
