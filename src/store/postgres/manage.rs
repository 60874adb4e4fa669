//! The management queries on PostgreSQL ([`Store`]): users, tokens, projects, members, settings
#![allow(unused_variables)] // filled in method by method; removed when complete
//! and client keys.

use async_trait::async_trait;

use super::PgStore;
use crate::store::*;

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        todo!("ping")
    }
    fn schema_version(&self) -> usize {
        super::schema_version()
    }
    async fn user_count(&self) -> StoreResult<u64> {
        todo!("user_count")
    }
    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        todo!("create_user")
    }
    async fn user_by_id(&self, id: i64) -> StoreResult<Option<User>> {
        todo!("user_by_id")
    }
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        todo!("user_by_username")
    }
    async fn list_users(&self) -> StoreResult<Vec<User>> {
        todo!("list_users")
    }
    async fn create_token(&self, token: NewToken) -> StoreResult<PersonalAccessToken> {
        todo!("create_token")
    }
    async fn token_by_digest(&self, digest: [u8; 32]) -> StoreResult<Option<TokenOwner>> {
        todo!("token_by_digest")
    }
    async fn token_by_id(&self, id: i64) -> StoreResult<Option<PersonalAccessToken>> {
        todo!("token_by_id")
    }
    async fn list_tokens(&self, user_id: Option<i64>) -> StoreResult<Vec<PersonalAccessToken>> {
        todo!("list_tokens")
    }
    async fn revoke_token(&self, id: i64) -> StoreResult<bool> {
        todo!("revoke_token")
    }
    async fn create_project(&self, project: NewProject) -> StoreResult<Project> {
        todo!("create_project")
    }
    async fn ensure_gitlab_project(&self, id: i64) -> StoreResult<bool> {
        todo!("ensure_gitlab_project")
    }
    async fn project_by_id(&self, id: i64) -> StoreResult<Option<Project>> {
        todo!("project_by_id")
    }
    async fn project_by_path(&self, path_with_namespace: &str) -> StoreResult<Option<Project>> {
        todo!("project_by_path")
    }
    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        todo!("list_projects")
    }
    async fn member_projects(&self, user_id: i64, min_level: i64) -> StoreResult<Vec<Project>> {
        todo!("member_projects")
    }
    async fn delete_project(&self, id: i64) -> StoreResult<Vec<ClientKey>> {
        todo!("delete_project")
    }
    async fn member_level(&self, project_id: i64, user_id: i64) -> StoreResult<Option<i64>> {
        todo!("member_level")
    }
    async fn add_member(&self, project_id: i64, user_id: i64, level: i64) -> StoreResult<Member> {
        todo!("add_member")
    }
    async fn remove_member(&self, project_id: i64, user_id: i64) -> StoreResult<bool> {
        todo!("remove_member")
    }
    async fn list_members(&self, project_id: i64) -> StoreResult<Vec<Member>> {
        todo!("list_members")
    }
    async fn setting(&self, project_id: i64) -> StoreResult<Option<SettingRow>> {
        todo!("setting")
    }
    async fn put_setting(
        &self,
        setting: Setting,
        first_key: String,
    ) -> StoreResult<(SettingRow, Option<ClientKey>)> {
        todo!("put_setting")
    }
    async fn patch_setting(
        &self,
        project_id: i64,
        active: bool,
        integrated: Option<bool>,
        first_key: String,
    ) -> StoreResult<Option<(SettingRow, Option<ClientKey>)>> {
        todo!("patch_setting")
    }
    async fn all_settings(&self) -> StoreResult<Vec<Setting>> {
        todo!("all_settings")
    }
    async fn list_keys(
        &self,
        project_id: i64,
        page: u64,
        per_page: u64,
    ) -> StoreResult<Page<ClientKey>> {
        todo!("list_keys")
    }
    async fn create_key(&self, project_id: i64, public_key: String) -> StoreResult<ClientKey> {
        todo!("create_key")
    }
    async fn delete_key(&self, project_id: i64, key_id: i64) -> StoreResult<Option<ClientKey>> {
        todo!("delete_key")
    }
    async fn for_each_key(&self, each: Box<dyn FnMut(ClientKey) + Send>) -> StoreResult<()> {
        todo!("for_each_key")
    }
    async fn key_count(&self) -> StoreResult<u64> {
        todo!("key_count")
    }
    async fn open_sink(&self, hooks: SinkHooks) -> StoreResult<Box<dyn EventSink>> {
        super::ingest::open_sink(self, hooks).await
    }
    async fn retention_pass(&self, now_millis: i64, days: u32) -> StoreResult<RetentionReport> {
        super::upkeep::retention_pass(self, now_millis, days).await
    }
    async fn purge_marked(&self) -> StoreResult<Vec<(i64, PurgeReport)>> {
        super::upkeep::purge_marked(self).await
    }
}
