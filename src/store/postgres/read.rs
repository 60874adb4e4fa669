//! The read API's queries on PostgreSQL ([`ReadStore`]).
#![allow(unused_variables)] // filled in method by method; removed when complete

use std::collections::HashMap;

use async_trait::async_trait;

use super::PgStore;
use crate::store::read::*;
use crate::store::StoreResult;

#[async_trait]
impl ReadStore for PgStore {
    async fn list_errors(&self, query: ErrorQuery) -> StoreResult<KeysetPage<TrackedError>> {
        todo!("list_errors")
    }
    async fn error(&self, project_id: i64, fingerprint: i64) -> StoreResult<Option<TrackedError>> {
        todo!("error")
    }
    async fn set_error_status(
        &self,
        project_id: i64,
        fingerprint: i64,
        status: ErrorStatus,
    ) -> StoreResult<Option<TrackedError>> {
        todo!("set_error_status")
    }
    async fn list_error_events(
        &self,
        query: EventQuery,
    ) -> StoreResult<Option<KeysetPage<StoredEvent>>> {
        todo!("list_error_events")
    }
    async fn list_messages(&self, query: MessageQuery) -> StoreResult<KeysetPage<StoredMessage>> {
        todo!("list_messages")
    }
    async fn error_by_id(&self, id: i64) -> StoreResult<Option<TrackedError>> {
        todo!("error_by_id")
    }
    async fn issue_extras(&self, error_ids: Vec<i64>) -> StoreResult<HashMap<i64, IssueExtras>> {
        todo!("issue_extras")
    }
    async fn latest_event(&self, error_id: i64) -> StoreResult<Option<LatestEvent>> {
        todo!("latest_event")
    }
    async fn event_counts(&self, query: EventCountQuery) -> StoreResult<Vec<(i64, i64)>> {
        todo!("event_counts")
    }
    async fn project_environments(&self, project_id: i64) -> StoreResult<Vec<String>> {
        todo!("project_environments")
    }
}
