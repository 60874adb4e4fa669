//! The state-changing operations the REST API and the web UI share, each written once with its
//! side effects: the store's write, then the in-memory key cache, before the caller answers, so
//! that the next event already sees the change whichever surface made it. The alert rules'
//! operations are in [`alerts`].

pub mod alerts;

use super::AppState;
use crate::domain::keys::generate_public_key;
use crate::store::read::{ErrorStatus, TrackedError};
use crate::store::{ClientKey, Setting, SettingRow, StoreResult};

/// Creates a client key for the project and lets ingestion accept it at once.
pub async fn create_key(state: &AppState, project_id: i64) -> StoreResult<ClientKey> {
    let key = state
        .store
        .create_key(project_id, generate_public_key())
        .await?;
    state.keys.upsert_key(&key);
    Ok(key)
}

/// Deletes the project's key `key_id`; `None` when the project has no such key. Ingestion
/// refuses the key from the moment this returns.
pub async fn delete_key(
    state: &AppState,
    project_id: i64,
    key_id: i64,
) -> StoreResult<Option<ClientKey>> {
    let key = state.store.delete_key(project_id, key_id).await?;
    if let Some(key) = &key {
        state.keys.remove_key(&key.public_key);
    }
    Ok(key)
}

/// Makes sure the error counts a request shows include every event acknowledged before it
/// (the writer keeps them in memory for a moment; see `store::counts`). If they cannot be
/// written now (a full disk, say) the request goes on with what is stored: the events are safe,
/// and their counts are written later or recounted at the next start.
pub async fn settle_counts(state: &AppState) {
    if let Err(e) = state.writer.settle_counts().await {
        tracing::warn!(error = %e, "error counts not settled before a read");
    }
}

/// Sets an error's status (resolve, ignore, reopen); `None` when there is no such error.
pub async fn set_error_status(
    state: &AppState,
    project_id: i64,
    fingerprint: i64,
    status: ErrorStatus,
) -> StoreResult<Option<TrackedError>> {
    settle_counts(state).await;
    state
        .store
        .set_error_status(project_id, fingerprint, status)
        .await
}

/// Creates or overwrites the project's error-tracking setting. Switching integrated tracking on
/// for a project without an active key creates its first key, as GitLab does.
pub async fn put_setting(state: &AppState, setting: Setting) -> StoreResult<SettingRow> {
    let (row, key) = state
        .store
        .put_setting(setting, generate_public_key())
        .await?;
    apply_setting(state, &row, key);
    Ok(row)
}

/// The key-cache half of a settings write.
pub fn apply_setting(state: &AppState, row: &SettingRow, first_key: Option<ClientKey>) {
    if let Some(k) = first_key {
        state.keys.upsert_key(&k);
    }
    state.keys.set_setting(row.setting);
}
