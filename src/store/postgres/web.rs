//! What only the web UI reads and writes, on PostgreSQL ([`WebStore`]).
#![allow(unused_variables)] // filled in method by method; removed when complete

use std::collections::HashMap;

use async_trait::async_trait;

use super::PgStore;
use crate::store::read::StoredEvent;
use crate::store::web::*;
use crate::store::{StoreResult, User};

#[async_trait]
impl WebStore for PgStore {
    async fn set_password(&self, user_id: i64, hash: String) -> StoreResult<bool> {
        todo!("set_password")
    }
    async fn password_of(&self, username: &str) -> StoreResult<Option<(User, Option<String>)>> {
        todo!("password_of")
    }
    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        todo!("create_session")
    }
    async fn session(&self, digest: [u8; 32]) -> StoreResult<Option<Session>> {
        todo!("session")
    }
    async fn delete_session(&self, digest: [u8; 32]) -> StoreResult<()> {
        todo!("delete_session")
    }
    async fn project_summaries(
        &self,
        project_ids: Vec<i64>,
    ) -> StoreResult<HashMap<i64, ProjectSummary>> {
        todo!("project_summaries")
    }
    async fn error_daily(&self, error_id: i64, days: i64) -> StoreResult<Vec<(i64, i64)>> {
        todo!("error_daily")
    }
    async fn error_tag_values(&self, error_id: i64) -> StoreResult<Vec<TagValue>> {
        todo!("error_tag_values")
    }
    async fn error_event(
        &self,
        project_id: i64,
        fingerprint: i64,
        event_row_id: i64,
    ) -> StoreResult<Option<StoredEvent>> {
        todo!("error_event")
    }
}
