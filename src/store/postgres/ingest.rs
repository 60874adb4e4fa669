//! The writer's side on PostgreSQL ([`EventSink`]).
#![allow(unused_variables)] // filled in step by step; removed when complete

use crate::store::ingest::{EventSink, SinkHooks};
use crate::store::StoreResult;

use super::PgStore;

/// Opens the writer's own connection and registers this node (see the module docs).
pub async fn open_sink(store: &PgStore, hooks: SinkHooks) -> StoreResult<Box<dyn EventSink>> {
    todo!("open_sink")
}
