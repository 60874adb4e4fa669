//! Retention and purge on PostgreSQL, each run by one node at a time.
#![allow(unused_variables)] // filled in step by step; removed when complete

use crate::store::{PurgeReport, RetentionReport, StoreResult};

use super::PgStore;

/// One retention pass (see [`crate::store::Store::retention_pass`]).
pub async fn retention_pass(
    store: &PgStore,
    now_millis: i64,
    days: u32,
) -> StoreResult<RetentionReport> {
    todo!("retention_pass")
}

/// Purges every project marked for deletion (see [`crate::store::Store::purge_marked`]).
pub async fn purge_marked(store: &PgStore) -> StoreResult<Vec<(i64, PurgeReport)>> {
    todo!("purge_marked")
}
