//! The management queries on PostgreSQL ([`Store`]): users, tokens, projects, members, settings
//! and client keys. Each method answers as the SQLite backend's does; where SQLite relies on
//! its single write lock (`BEGIN IMMEDIATE`) to serialize two writers, the statements here take
//! the row or table lock that gives the same outcome.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use tokio_postgres::{GenericClient, Row};

use super::{is_unique_violation, now_millis, PgStore};
use crate::store::*;

/// How many keys [`Store::for_each_key`] fetches per round trip: enough to keep the round trips
/// few, small enough that a million keys are never held as rows at once.
const KEY_CHUNK: i32 = 10_000;

/// How long `ensure_gitlab_project` waits for the `projects` table lock before it gives up, so
/// that a request never hangs behind a long transaction.
const TABLE_LOCK_WAIT: &str = "5s";

pub(crate) fn millis_to_dt(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(crate) const USER_COLS: &str = "id, username, name, email, is_admin, created_at";

/// A user from [`USER_COLS`] starting at column `at`.
pub(crate) fn user_at(r: &Row, at: usize) -> Result<User, tokio_postgres::Error> {
    Ok(User {
        id: r.try_get(at)?,
        username: r.try_get(at + 1)?,
        name: r.try_get(at + 2)?,
        email: r.try_get(at + 3)?,
        is_admin: r.try_get(at + 4)?,
        created_at: millis_to_dt(r.try_get(at + 5)?),
    })
}

fn user_row(r: &Row) -> Result<User, tokio_postgres::Error> {
    user_at(r, 0)
}

const PROJECT_COLS: &str = "id, name, path, namespace_path, path_with_namespace, created_at";

fn project_row(r: &Row) -> Result<Project, tokio_postgres::Error> {
    Ok(Project {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        path: r.try_get(2)?,
        namespace_path: r.try_get(3)?,
        path_with_namespace: r.try_get(4)?,
        created_at: millis_to_dt(r.try_get(5)?),
    })
}

const TOKEN_COLS: &str = "id, user_id, name, scopes, expires_at, revoked, created_at";

fn token_row(r: &Row) -> Result<PersonalAccessToken, tokio_postgres::Error> {
    let scopes: String = r.try_get(3)?;
    let expires: Option<String> = r.try_get(4)?;
    Ok(PersonalAccessToken {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        name: r.try_get(2)?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        expires_at: expires.and_then(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok()),
        revoked: r.try_get(5)?,
        created_at: millis_to_dt(r.try_get(6)?),
    })
}

const KEY_COLS: &str = "id, project_id, active, public_key";

fn key_row(r: &Row) -> Result<ClientKey, tokio_postgres::Error> {
    Ok(ClientKey {
        id: r.try_get(0)?,
        project_id: r.try_get(1)?,
        active: r.try_get(2)?,
        public_key: r.try_get(3)?,
    })
}

const SETTING_COLS: &str =
    "project_id, active, integrated, project_name, sentry_external_url, api_url";

fn setting_row(r: &Row) -> Result<SettingRow, tokio_postgres::Error> {
    Ok(SettingRow {
        setting: Setting {
            project_id: r.try_get(0)?,
            active: r.try_get(1)?,
            integrated: r.try_get(2)?,
        },
        external: ExternalSentry {
            project_name: r.try_get(3)?,
            sentry_external_url: r.try_get(4)?,
            api_url: r.try_get(5)?,
        },
    })
}

fn rows<T>(
    rows: Vec<Row>,
    map: impl Fn(&Row) -> Result<T, tokio_postgres::Error>,
) -> StoreResult<Vec<T>> {
    Ok(rows.iter().map(map).collect::<Result<Vec<_>, _>>()?)
}

/// A unique violation as the management API's "`what` has already been taken", anything else
/// as it is.
fn taken(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(what)
        } else {
            e.into()
        }
    }
}

// INSERT_UNLESS: a username or project path that is taken is found by `WHERE NOT EXISTS`
// before the row is made, not by the unique index after. An insert the index refuses has
// already drawn its id from the identity sequence, and ids would then skip where SQLite's
// AUTOINCREMENT (which a failed insert leaves alone) hands out the next one. The index still
// decides between two concurrent inserts of one name; the loser's id is skipped then.

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

async fn get_setting(c: &impl GenericClient, project_id: i64) -> StoreResult<Option<SettingRow>> {
    let row = c
        .query_opt(
            &format!("SELECT {SETTING_COLS} FROM error_tracking_settings WHERE project_id = $1"),
            &[&project_id],
        )
        .await?;
    Ok(row.as_ref().map(setting_row).transpose()?)
}

/// GitLab's side effect: an active, integrated setting gets a first client key when the project
/// has no active one. Runs inside the caller's transaction, after the setting's row was written
/// (and so locked): two callers for one project take turns, and the second sees the first's key.
async fn ensure_first_key(
    tx: &impl GenericClient,
    row: &SettingRow,
    first_key: String,
) -> StoreResult<Option<ClientKey>> {
    if !(row.setting.active && row.setting.integrated) {
        return Ok(None);
    }
    let has_active: bool = tx
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM client_keys WHERE project_id = $1 AND active)",
            &[&row.setting.project_id],
        )
        .await?
        .try_get(0)?;
    if has_active {
        return Ok(None);
    }
    Ok(Some(
        insert_key(tx, row.setting.project_id, first_key).await?,
    ))
}

async fn insert_key(
    c: &impl GenericClient,
    project_id: i64,
    public_key: String,
) -> StoreResult<ClientKey> {
    let id: i64 = c
        .query_one(
            "INSERT INTO client_keys (project_id, public_key, active, created_at)
             VALUES ($1, $2, TRUE, $3) RETURNING id",
            &[&project_id, &public_key, &now_millis()],
        )
        .await?
        .try_get(0)?;
    Ok(ClientKey {
        id,
        project_id,
        active: true,
        public_key,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        self.client().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    fn schema_version(&self) -> usize {
        super::schema_version()
    }

    async fn user_count(&self) -> StoreResult<u64> {
        let n: i64 = self
            .client()
            .await?
            .query_one("SELECT COUNT(*) FROM users", &[])
            .await?
            .try_get(0)?;
        Ok(count(n))
    }

    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        let now = now_millis();
        // Not inserted when the name is taken: see `INSERT_UNLESS`.
        let id: i64 = self
            .client()
            .await?
            .query_opt(
                "INSERT INTO users (username, name, email, is_admin, created_at)
                 SELECT $1::text, $2::text, $3::text, $4::boolean, $5::bigint
                 WHERE NOT EXISTS (SELECT 1 FROM users WHERE username = $1)
                 RETURNING id",
                &[
                    &user.username,
                    &user.name,
                    &user.email,
                    &user.is_admin,
                    &now,
                ],
            )
            .await
            .map_err(taken("username"))?
            .ok_or(StoreError::Conflict("username"))?
            .try_get(0)?;
        Ok(User {
            id,
            username: user.username,
            name: user.name,
            email: user.email,
            is_admin: user.is_admin,
            created_at: millis_to_dt(now),
        })
    }

    async fn user_by_id(&self, id: i64) -> StoreResult<Option<User>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
            .await?;
        let row = c.query_opt(&st, &[&id]).await?;
        Ok(row.as_ref().map(user_row).transpose()?)
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {USER_COLS} FROM users WHERE username = $1"),
                &[&username],
            )
            .await?;
        Ok(row.as_ref().map(user_row).transpose()?)
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let found = self
            .client()
            .await?
            .query(&format!("SELECT {USER_COLS} FROM users ORDER BY id"), &[])
            .await?;
        rows(found, user_row)
    }

    async fn create_token(&self, token: NewToken) -> StoreResult<PersonalAccessToken> {
        let now = now_millis();
        let expires = token.expires_at.map(|d| d.format("%Y-%m-%d").to_string());
        let id: i64 = self
            .client()
            .await?
            .query_one(
                "INSERT INTO personal_access_tokens
                     (user_id, name, digest, scopes, expires_at, revoked, created_at)
                 VALUES ($1, $2, $3, $4, $5, FALSE, $6) RETURNING id",
                &[
                    &token.user_id,
                    &token.name,
                    &&token.digest[..],
                    &token.scopes.join(","),
                    &expires,
                    &now,
                ],
            )
            .await
            .map_err(taken("token"))?
            .try_get(0)?;
        Ok(PersonalAccessToken {
            id,
            user_id: token.user_id,
            name: token.name,
            scopes: token.scopes,
            expires_at: token.expires_at,
            revoked: false,
            created_at: millis_to_dt(now),
        })
    }

    async fn token_by_digest(&self, digest: [u8; 32]) -> StoreResult<Option<TokenOwner>> {
        let c = self.client().await?;
        // Every authenticated API request runs this.
        let st = c
            .prepare_cached(
                "SELECT t.id, t.user_id, t.name, t.scopes, t.expires_at, t.revoked, t.created_at,
                        u.id, u.username, u.name, u.email, u.is_admin, u.created_at, t.digest
                 FROM personal_access_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.digest = $1",
            )
            .await?;
        let Some(r) = c.query_opt(&st, &[&&digest[..]]).await? else {
            return Ok(None);
        };
        Ok(Some(TokenOwner {
            token: token_row(&r)?,
            user: user_at(&r, 7)?,
            digest: r.try_get(13)?,
        }))
    }

    async fn token_by_id(&self, id: i64) -> StoreResult<Option<PersonalAccessToken>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {TOKEN_COLS} FROM personal_access_tokens WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(token_row).transpose()?)
    }

    async fn list_tokens(&self, user_id: Option<i64>) -> StoreResult<Vec<PersonalAccessToken>> {
        let found = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {TOKEN_COLS} FROM personal_access_tokens
                     WHERE $1::bigint IS NULL OR user_id = $1 ORDER BY id"
                ),
                &[&user_id],
            )
            .await?;
        rows(found, token_row)
    }

    async fn revoke_token(&self, id: i64) -> StoreResult<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE personal_access_tokens SET revoked = TRUE WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(n > 0)
    }

    async fn create_project(&self, project: NewProject) -> StoreResult<Project> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now = now_millis();
        let full = format!("{}/{}", project.namespace_path, project.path);
        // Not inserted when the path is taken: see `INSERT_UNLESS`.
        let id: i64 = tx
            .query_opt(
                "INSERT INTO projects (name, path, namespace_path, path_with_namespace, created_at)
                 SELECT $1::text, $2::text, $3::text, $4::text, $5::bigint
                 WHERE NOT EXISTS (
                     SELECT 1 FROM projects WHERE lower(path_with_namespace) = lower($4))
                 RETURNING id",
                &[
                    &project.name,
                    &project.path,
                    &project.namespace_path,
                    &full,
                    &now,
                ],
            )
            .await
            .map_err(taken("path"))?
            .ok_or(StoreError::Conflict("path"))?
            .try_get(0)?;
        tx.execute(
            "INSERT INTO project_members (project_id, user_id, access_level) VALUES ($1, $2, $3)",
            &[&id, &project.owner_id, &AccessLevel::OWNER.0],
        )
        .await?;
        tx.commit().await?;
        Ok(Project {
            id,
            name: project.name,
            path: project.path,
            namespace_path: project.namespace_path,
            path_with_namespace: full,
            created_at: millis_to_dt(now),
        })
    }

    async fn ensure_gitlab_project(&self, id: i64) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let live = |row: Option<Row>| -> StoreResult<Option<bool>> {
            Ok(row.map(|r| r.try_get::<_, bool>(0)).transpose()?)
        };
        let existing = c
            .query_opt(
                "SELECT deleting_since IS NULL FROM projects WHERE id = $1",
                &[&id],
            )
            .await?;
        // Every event GitLab allows asks this; only the first for a project writes.
        if let Some(found) = live(existing)? {
            return Ok(found);
        }
        let tx = c.transaction().await?;
        // The id is GitLab's, not the identity sequence's, so the sequence must end up past it
        // or a later `create_project` would be handed the same id. Reading the sequence and
        // moving it is two steps; the table lock keeps every other insert (each of which
        // draws from the sequence) out between them. It is taken before the insert, because
        // an insert that waited for ours while holding its own lock would deadlock with it.
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{TABLE_LOCK_WAIT}';
             LOCK TABLE projects IN SHARE ROW EXCLUSIVE MODE"
        ))
        .await?;
        // A path no local project is given by default (`gitlab/project-<id>`); a project that
        // already has this id is kept as it is, setting included.
        let inserted = tx
            .execute(
                "INSERT INTO projects (id, name, path, namespace_path, path_with_namespace, created_at)
                 VALUES ($1, $2, $3, 'gitlab', $4, $5)
                 ON CONFLICT DO NOTHING",
                &[
                    &id,
                    &format!("GitLab project {id}"),
                    &format!("project-{id}"),
                    &format!("gitlab/project-{id}"),
                    &now_millis(),
                ],
            )
            .await?;
        if inserted > 0 {
            tx.execute(
                "SELECT setval(s, $1)
                 FROM (SELECT pg_get_serial_sequence('projects', 'id')::regclass AS s) AS q
                 WHERE COALESCE(pg_sequence_last_value(s), 0) < $1",
                &[&id],
            )
            .await?;
            tx.execute(
                "INSERT INTO error_tracking_settings (project_id, active, integrated)
                 VALUES ($1, TRUE, TRUE) ON CONFLICT (project_id) DO NOTHING",
                &[&id],
            )
            .await?;
        }
        let found = tx
            .query_opt(
                "SELECT deleting_since IS NULL FROM projects WHERE id = $1",
                &[&id],
            )
            .await?;
        tx.commit().await?;
        Ok(live(found)? == Some(true))
    }

    async fn project_by_id(&self, id: i64) -> StoreResult<Option<Project>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {PROJECT_COLS} FROM projects WHERE id = $1 AND deleting_since IS NULL"
            ))
            .await?;
        let row = c.query_opt(&st, &[&id]).await?;
        Ok(row.as_ref().map(project_row).transpose()?)
    }

    async fn project_by_path(&self, path_with_namespace: &str) -> StoreResult<Option<Project>> {
        let c = self.client().await?;
        // lower() on both sides is what the unique index `projects_path` is built on.
        let st = c
            .prepare_cached(&format!(
                "SELECT {PROJECT_COLS} FROM projects
                 WHERE lower(path_with_namespace) = lower($1) AND deleting_since IS NULL"
            ))
            .await?;
        let row = c.query_opt(&st, &[&path_with_namespace]).await?;
        Ok(row.as_ref().map(project_row).transpose()?)
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let found = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {PROJECT_COLS} FROM projects WHERE deleting_since IS NULL ORDER BY id"
                ),
                &[],
            )
            .await?;
        rows(found, project_row)
    }

    async fn member_projects(&self, user_id: i64, min_level: i64) -> StoreResult<Vec<Project>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT p.id, p.name, p.path, p.namespace_path, p.path_with_namespace, p.created_at
                 FROM project_members AS m JOIN projects AS p ON p.id = m.project_id
                 WHERE m.user_id = $1 AND m.access_level >= $2 AND p.deleting_since IS NULL
                 ORDER BY p.id",
            )
            .await?;
        let found = c.query(&st, &[&user_id, &min_level]).await?;
        rows(found, project_row)
    }

    async fn delete_project(&self, id: i64) -> StoreResult<Vec<ClientKey>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Only marked here: the rows go in small transactions (`purge`), so that a project
        // with millions of events never holds its locks for long. Marking first locks the
        // project's row, so two deletions of one project take turns and the second reads the
        // keys as the first left them, as under SQLite's write lock.
        tx.execute(
            "UPDATE projects SET deleting_since = $2 WHERE id = $1 AND deleting_since IS NULL",
            &[&id, &now_millis()],
        )
        .await?;
        let found = tx
            .query(
                &format!("SELECT {KEY_COLS} FROM client_keys WHERE project_id = $1 ORDER BY id"),
                &[&id],
            )
            .await?;
        let keys = rows(found, key_row)?;
        tx.execute(
            "UPDATE client_keys SET active = FALSE WHERE project_id = $1",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        Ok(keys)
    }

    async fn member_level(&self, project_id: i64, user_id: i64) -> StoreResult<Option<i64>> {
        let c = self.client().await?;
        // Every authorized request runs this.
        let st = c
            .prepare_cached(
                "SELECT access_level FROM project_members WHERE project_id = $1 AND user_id = $2",
            )
            .await?;
        let row = c.query_opt(&st, &[&project_id, &user_id]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn add_member(&self, project_id: i64, user_id: i64, level: i64) -> StoreResult<Member> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO project_members (project_id, user_id, access_level) VALUES ($1, $2, $3)",
            &[&project_id, &user_id, &level],
        )
        .await
        .map_err(taken("member"))?;
        let r = c
            .query_one(
                "SELECT username, name FROM users WHERE id = $1",
                &[&user_id],
            )
            .await?;
        Ok(Member {
            user_id,
            username: r.try_get(0)?,
            name: r.try_get(1)?,
            access_level: level,
        })
    }

    async fn remove_member(&self, project_id: i64, user_id: i64) -> StoreResult<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM project_members WHERE project_id = $1 AND user_id = $2",
                &[&project_id, &user_id],
            )
            .await?;
        Ok(n > 0)
    }

    async fn list_members(&self, project_id: i64) -> StoreResult<Vec<Member>> {
        let found = self
            .client()
            .await?
            .query(
                "SELECT m.user_id, u.username, u.name, m.access_level
                 FROM project_members m JOIN users u ON u.id = m.user_id
                 WHERE m.project_id = $1 ORDER BY m.user_id",
                &[&project_id],
            )
            .await?;
        rows(found, |r| {
            Ok(Member {
                user_id: r.try_get(0)?,
                username: r.try_get(1)?,
                name: r.try_get(2)?,
                access_level: r.try_get(3)?,
            })
        })
    }

    async fn setting(&self, project_id: i64) -> StoreResult<Option<SettingRow>> {
        get_setting(&**self.client().await?, project_id).await
    }

    async fn put_setting(
        &self,
        setting: Setting,
        first_key: String,
    ) -> StoreResult<(SettingRow, Option<ClientKey>)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO error_tracking_settings (project_id, active, integrated)
             VALUES ($1, $2, $3)
             ON CONFLICT (project_id) DO UPDATE
                 SET active = excluded.active, integrated = excluded.integrated",
            &[&setting.project_id, &setting.active, &setting.integrated],
        )
        .await?;
        let row = get_setting(&*tx, setting.project_id)
            .await?
            .ok_or(StoreError::Missing)?;
        let key = ensure_first_key(&*tx, &row, first_key).await?;
        tx.commit().await?;
        Ok((row, key))
    }

    async fn patch_setting(
        &self,
        project_id: i64,
        active: bool,
        integrated: Option<bool>,
        first_key: String,
    ) -> StoreResult<Option<(SettingRow, Option<ClientKey>)>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE error_tracking_settings
                 SET active = $2, integrated = COALESCE($3::boolean, integrated)
                 WHERE project_id = $1",
                &[&project_id, &active, &integrated],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        let row = get_setting(&*tx, project_id)
            .await?
            .ok_or(StoreError::Missing)?;
        let key = ensure_first_key(&*tx, &row, first_key).await?;
        tx.commit().await?;
        Ok(Some((row, key)))
    }

    async fn all_settings(&self) -> StoreResult<Vec<Setting>> {
        let found = self
            .client()
            .await?
            .query(
                &format!("SELECT {SETTING_COLS} FROM error_tracking_settings"),
                &[],
            )
            .await?;
        Ok(rows(found, setting_row)?
            .into_iter()
            .map(|s| s.setting)
            .collect())
    }

    async fn list_keys(
        &self,
        project_id: i64,
        page: u64,
        per_page: u64,
    ) -> StoreResult<Page<ClientKey>> {
        let c = self.client().await?;
        let total: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM client_keys WHERE project_id = $1 AND deleted_at IS NULL",
                &[&project_id],
            )
            .await?
            .try_get(0)?;
        let offset = page.saturating_sub(1).saturating_mul(per_page);
        let limit = i64::try_from(per_page).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let found = c
            .query(
                &format!(
                    "SELECT {KEY_COLS} FROM client_keys
                     WHERE project_id = $1 AND deleted_at IS NULL
                     ORDER BY id LIMIT $2 OFFSET $3"
                ),
                &[&project_id, &limit, &offset],
            )
            .await?;
        Ok(Page {
            items: rows(found, key_row)?,
            total: count(total),
        })
    }

    async fn create_key(&self, project_id: i64, public_key: String) -> StoreResult<ClientKey> {
        insert_key(&**self.client().await?, project_id, public_key).await
    }

    async fn delete_key(&self, project_id: i64, key_id: i64) -> StoreResult<Option<ClientKey>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // FOR UPDATE: of two deletions of one key, the second waits and then finds it gone.
        let found = tx
            .query_opt(
                &format!(
                    "SELECT {KEY_COLS} FROM client_keys
                     WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL
                     FOR UPDATE"
                ),
                &[&key_id, &project_id],
            )
            .await?;
        let key = found.as_ref().map(key_row).transpose()?;
        if key.is_some() {
            tx.execute(
                "UPDATE client_keys SET active = FALSE, deleted_at = $2 WHERE id = $1",
                &[&key_id, &now_millis()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(key)
    }

    async fn for_each_key(&self, mut each: Box<dyn FnMut(ClientKey) + Send>) -> StoreResult<()> {
        let mut c = self.client().await?;
        // A portal reads the rows of one snapshot in chunks, so every key is seen once even
        // while keys are created or deleted meanwhile, and only a chunk is held at a time.
        let tx = c.transaction().await?;
        let st = tx
            .prepare(&format!("SELECT {KEY_COLS} FROM client_keys"))
            .await?;
        let portal = tx.bind(&st, &[]).await?;
        loop {
            let chunk = tx.query_portal(&portal, KEY_CHUNK).await?;
            let done = chunk.len() < KEY_CHUNK as usize;
            for r in &chunk {
                each(key_row(r)?);
            }
            if done {
                break;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn key_count(&self) -> StoreResult<u64> {
        let n: i64 = self
            .client()
            .await?
            .query_one("SELECT COUNT(*) FROM client_keys", &[])
            .await?
            .try_get(0)?;
        Ok(count(n))
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

    fn watch_key_cache(
        &self,
        cache: std::sync::Arc<crate::domain::keycache::KeyCache>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        // Runs until `stop`; its handle is not needed, since it ends with the server.
        drop(super::notify::spawn(self.clone(), cache, stop));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::web::{NewSession, WebStore};

    /// A database of its own on the test cluster, dropped by [`Scratch::finish`].
    struct Scratch {
        store: PgStore,
        admin: tokio_postgres::Client,
        name: String,
    }

    impl Scratch {
        /// `None` (the test is skipped) when no cluster is configured, except in CI.
        async fn new() -> Option<Scratch> {
            let Ok(admin_url) = std::env::var("FAULTLINE_TEST_POSTGRES") else {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "FAULTLINE_TEST_POSTGRES must be set in CI"
                );
                eprintln!("skipped: FAULTLINE_TEST_POSTGRES is not set");
                return None;
            };
            let (admin, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                .await
                .expect("superuser connection");
            tokio::spawn(conn);
            let name = format!("fl_manage_{}", uuid::Uuid::new_v4().simple());
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("scratch database");
            let mut url = url::Url::parse(&admin_url).expect("superuser URL");
            url.set_path(&format!("/{name}"));
            let store = PgStore::open(url.as_str()).await.expect("store opens");
            Some(Scratch { store, admin, name })
        }

        async fn finish(self) {
            drop(self.store);
            self.admin
                .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
                .await
                .expect("scratch database dropped");
        }
    }

    fn new_user(username: &str) -> NewUser {
        NewUser {
            username: username.into(),
            name: format!("{username}'s name"),
            email: Some(format!("{username}@example.com")),
            is_admin: false,
        }
    }

    fn new_project(path: &str, owner_id: i64) -> NewProject {
        NewProject {
            name: path.into(),
            path: path.into(),
            namespace_path: "acme".into(),
            owner_id,
        }
    }

    #[tokio::test]
    async fn users_and_tokens() {
        let Some(db) = Scratch::new().await else {
            return;
        };
        let s = &db.store;
        s.ping().await.expect("ping");
        assert_eq!(s.user_count().await.expect("count"), 0);
        let alice = s.create_user(new_user("alice")).await.expect("alice");
        let bob = s.create_user(new_user("bob")).await.expect("bob");
        assert!(bob.id > alice.id);
        assert!(matches!(
            s.create_user(new_user("alice")).await,
            Err(StoreError::Conflict("username"))
        ));
        let carol = s.create_user(new_user("carol")).await.expect("carol");
        assert_eq!(carol.id, bob.id + 1, "a refused name draws no id");
        assert_eq!(s.user_count().await.expect("count"), 3);
        let found = s.user_by_id(alice.id).await.expect("by id").expect("alice");
        assert_eq!(found.username, "alice");
        assert_eq!(found.email.as_deref(), Some("alice@example.com"));
        assert_eq!(
            found.created_at.timestamp_millis(),
            alice.created_at.timestamp_millis()
        );
        assert!(s.user_by_username("ALICE").await.expect("lookup").is_none());
        assert_eq!(
            s.user_by_username("bob")
                .await
                .expect("lookup")
                .map(|u| u.id),
            Some(bob.id)
        );
        let names: Vec<String> = s
            .list_users()
            .await
            .expect("list")
            .into_iter()
            .map(|u| u.username)
            .collect();
        assert_eq!(names, ["alice", "bob", "carol"]);

        let expires = NaiveDate::from_ymd_opt(2031, 2, 3);
        let token = s
            .create_token(NewToken {
                user_id: alice.id,
                name: "ci".into(),
                scopes: vec!["api".into(), "read_api".into()],
                expires_at: expires,
                digest: [7; 32],
            })
            .await
            .expect("token");
        assert!(matches!(
            s.create_token(NewToken {
                user_id: bob.id,
                name: "same secret".into(),
                scopes: vec![],
                expires_at: None,
                digest: [7; 32],
            })
            .await,
            Err(StoreError::Conflict("token"))
        ));
        let other = s
            .create_token(NewToken {
                user_id: bob.id,
                name: "bob's".into(),
                scopes: vec![],
                expires_at: None,
                digest: [8; 32],
            })
            .await
            .expect("bob's token");
        let owner = s
            .token_by_digest([7; 32])
            .await
            .expect("lookup")
            .expect("found");
        assert_eq!(owner.user.id, alice.id);
        assert_eq!(owner.token.scopes, ["api", "read_api"]);
        assert_eq!(owner.token.expires_at, expires);
        assert_eq!(owner.digest, vec![7; 32]);
        assert!(s.token_by_digest([9; 32]).await.expect("lookup").is_none());
        let all: Vec<i64> = s
            .list_tokens(None)
            .await
            .expect("all")
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(all, [token.id, other.id]);
        let bobs = s.list_tokens(Some(bob.id)).await.expect("bob's");
        assert_eq!(bobs.len(), 1);
        assert!(bobs[0].scopes.is_empty() && bobs[0].expires_at.is_none());
        assert!(s.revoke_token(token.id).await.expect("revoke"));
        assert!(!s.revoke_token(i64::MAX).await.expect("revoke nothing"));
        assert!(
            s.token_by_id(token.id)
                .await
                .expect("by id")
                .expect("token")
                .revoked
        );
        db.finish().await;
    }

    #[tokio::test]
    async fn projects_and_members() {
        let Some(db) = Scratch::new().await else {
            return;
        };
        let s = &db.store;
        let owner = s.create_user(new_user("owner")).await.expect("owner");
        let dev = s.create_user(new_user("dev")).await.expect("dev");
        let shop = s
            .create_project(new_project("Shop", owner.id))
            .await
            .expect("shop");
        assert_eq!(shop.path_with_namespace, "acme/Shop");
        assert!(matches!(
            s.create_project(new_project("shop", owner.id)).await,
            Err(StoreError::Conflict("path"))
        ));
        let web = s
            .create_project(new_project("web", owner.id))
            .await
            .expect("web");
        assert_eq!(web.id, shop.id + 1, "a refused path draws no id");
        assert_eq!(
            s.project_by_path("ACME/shop")
                .await
                .expect("path")
                .map(|p| p.id),
            Some(shop.id)
        );
        assert_eq!(
            s.member_level(shop.id, owner.id).await.expect("level"),
            Some(AccessLevel::OWNER.0)
        );
        let m = s.add_member(shop.id, dev.id, 30).await.expect("member");
        assert_eq!((m.username.as_str(), m.access_level), ("dev", 30));
        assert!(matches!(
            s.add_member(shop.id, dev.id, 40).await,
            Err(StoreError::Conflict("member"))
        ));
        let members: Vec<(i64, i64)> = s
            .list_members(shop.id)
            .await
            .expect("members")
            .iter()
            .map(|m| (m.user_id, m.access_level))
            .collect();
        assert_eq!(members, [(owner.id, 50), (dev.id, 30)]);
        let ids = |ps: Vec<Project>| ps.iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.member_projects(owner.id, 0).await.expect("all")),
            [shop.id, web.id]
        );
        assert_eq!(
            ids(s.member_projects(dev.id, 30).await.expect("dev")),
            [shop.id]
        );
        assert!(s
            .member_projects(dev.id, 40)
            .await
            .expect("none")
            .is_empty());
        assert!(s.remove_member(shop.id, dev.id).await.expect("removed"));
        assert!(!s.remove_member(shop.id, dev.id).await.expect("gone"));

        let key = s.create_key(shop.id, "a".repeat(32)).await.expect("key");
        let gone = s.delete_project(shop.id).await.expect("deleted");
        assert_eq!(gone, [key], "the keys as they were");
        assert!(s.project_by_id(shop.id).await.expect("by id").is_none());
        assert!(s
            .project_by_path("acme/shop")
            .await
            .expect("by path")
            .is_none());
        assert_eq!(ids(s.list_projects().await.expect("list")), [web.id]);
        let mut seen = Vec::new();
        let (tx, rx) = std::sync::mpsc::channel();
        s.for_each_key(Box::new(move |k| {
            let _ = tx.send(k);
        }))
        .await
        .expect("keys");
        seen.extend(rx.try_iter());
        assert_eq!(seen.len(), 1);
        assert!(!seen[0].active, "a deleted project's keys are disabled");
        db.finish().await;
    }

    #[tokio::test]
    async fn gitlab_projects_move_the_identity_past_their_ids() {
        let Some(db) = Scratch::new().await else {
            return;
        };
        let s = &db.store;
        let owner = s.create_user(new_user("owner")).await.expect("owner");
        let local = s
            .create_project(new_project("local", owner.id))
            .await
            .expect("local");
        assert!(s.ensure_gitlab_project(1000).await.expect("created"));
        assert!(s.ensure_gitlab_project(1000).await.expect("kept"));
        let p = s.project_by_id(1000).await.expect("by id").expect("there");
        assert_eq!(p.path_with_namespace, "gitlab/project-1000");
        assert_eq!(p.name, "GitLab project 1000");
        let row = s.setting(1000).await.expect("setting").expect("created");
        assert!(row.setting.active && row.setting.integrated);
        let next = s
            .create_project(new_project("next", owner.id))
            .await
            .expect("next");
        assert_eq!(next.id, 1001, "the sequence was moved past GitLab's id");
        // A lower id never moves the sequence back.
        assert!(s.ensure_gitlab_project(500).await.expect("created"));
        let after = s
            .create_project(new_project("after", owner.id))
            .await
            .expect("after");
        assert_eq!(after.id, 1002);
        // An id that is a local project's keeps that project as it is.
        assert!(s.ensure_gitlab_project(local.id).await.expect("local"));
        assert_eq!(
            s.project_by_id(local.id)
                .await
                .expect("by id")
                .map(|p| p.name),
            Some("local".to_owned())
        );
        assert!(s.setting(local.id).await.expect("setting").is_none());
        s.delete_project(1000).await.expect("deleted");
        assert!(!s.ensure_gitlab_project(1000).await.expect("being deleted"));
        db.finish().await;
    }

    #[tokio::test]
    async fn settings_and_keys() {
        let Some(db) = Scratch::new().await else {
            return;
        };
        let s = &db.store;
        let owner = s.create_user(new_user("owner")).await.expect("owner");
        let p = s
            .create_project(new_project("p", owner.id))
            .await
            .expect("project");
        assert!(s.setting(p.id).await.expect("setting").is_none());
        assert!(s
            .patch_setting(p.id, true, None, "k0".repeat(16))
            .await
            .expect("patch")
            .is_none());
        let off = Setting {
            project_id: p.id,
            active: false,
            integrated: true,
        };
        let (row, key) = s.put_setting(off, "k1".repeat(16)).await.expect("put");
        assert_eq!(row.setting, off);
        assert!(key.is_none(), "inactive: no key");
        let (row, key) = s
            .patch_setting(p.id, true, None, "k2".repeat(16))
            .await
            .expect("patch")
            .expect("exists");
        assert!(row.setting.active && row.setting.integrated);
        let first = key.expect("the first key");
        assert_eq!(first.public_key, "k2".repeat(16));
        let (_, key) = s
            .put_setting(
                Setting {
                    active: true,
                    ..off
                },
                "k3".repeat(16),
            )
            .await
            .expect("put");
        assert!(key.is_none(), "an active key exists");
        assert_eq!(s.all_settings().await.expect("all").len(), 1);

        let mut made = vec![first.id];
        for i in 0..4 {
            made.push(
                s.create_key(p.id, format!("{i:032}"))
                    .await
                    .expect("key")
                    .id,
            );
        }
        let page = s.list_keys(p.id, 2, 2).await.expect("page 2");
        assert_eq!(page.total, 5);
        assert_eq!(
            page.items.iter().map(|k| k.id).collect::<Vec<_>>(),
            made[2..4]
        );
        assert!(s
            .list_keys(p.id, 9, 2)
            .await
            .expect("past the end")
            .items
            .is_empty());
        assert_eq!(
            s.list_keys(p.id, 1, u64::MAX)
                .await
                .expect("all")
                .items
                .len(),
            5
        );
        let deleted = s.delete_key(p.id, made[1]).await.expect("delete");
        assert_eq!(deleted.map(|k| k.id), Some(made[1]));
        assert!(s.delete_key(p.id, made[1]).await.expect("again").is_none());
        assert!(s
            .delete_key(p.id + 1, made[2])
            .await
            .expect("other")
            .is_none());
        assert_eq!(s.list_keys(p.id, 1, 20).await.expect("page").total, 4);

        // More keys than one chunk, streamed in full.
        let client = s.client().await.expect("client");
        client
            .execute(
                "INSERT INTO client_keys (project_id, public_key, active, created_at)
                 SELECT $1, 'bulk' || n, TRUE, 0 FROM generate_series(1, 25000) AS n",
                &[&p.id],
            )
            .await
            .expect("bulk keys");
        drop(client);
        assert_eq!(s.key_count().await.expect("count"), 25_005);
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = seen.clone();
        s.for_each_key(Box::new(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }))
        .await
        .expect("stream");
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 25_005);
        db.finish().await;
    }

    #[tokio::test]
    async fn passwords_and_sessions() {
        let Some(db) = Scratch::new().await else {
            return;
        };
        let s = &db.store;
        let u = s.create_user(new_user("u")).await.expect("user");
        let (found, hash) = s.password_of("u").await.expect("lookup").expect("user");
        assert_eq!((found.id, hash), (u.id, None));
        assert!(s
            .set_password(u.id, "$argon2id$x".into())
            .await
            .expect("set"));
        assert!(!s.set_password(i64::MAX, "h".into()).await.expect("nobody"));
        assert_eq!(
            s.password_of("u")
                .await
                .expect("lookup")
                .and_then(|(_, h)| h),
            Some("$argon2id$x".to_owned())
        );
        let later = Utc::now() + chrono::Duration::hours(1);
        let past = Utc::now() - chrono::Duration::hours(1);
        for (digest, expires_at) in [([1; 32], later), ([2; 32], past)] {
            s.create_session(NewSession {
                digest,
                user_id: u.id,
                csrf: "c".into(),
                expires_at,
            })
            .await
            .expect("session");
        }
        let live = s.session([1; 32]).await.expect("lookup").expect("live");
        assert_eq!((live.user.id, live.csrf.as_str()), (u.id, "c"));
        assert!(
            s.session([2; 32]).await.expect("lookup").is_none(),
            "expired"
        );
        s.delete_session([1; 32]).await.expect("signed out");
        assert!(s.session([1; 32]).await.expect("lookup").is_none());
        s.create_session(NewSession {
            digest: [3; 32],
            user_id: u.id,
            csrf: "d".into(),
            expires_at: later,
        })
        .await
        .expect("session");
        assert!(s.set_password(u.id, "new".into()).await.expect("set"));
        assert!(
            s.session([3; 32]).await.expect("lookup").is_none(),
            "a new password ends the sessions"
        );
        let summaries = s.project_summaries(vec![42]).await.expect("summaries");
        assert_eq!(summaries[&42].unresolved, 0);
        assert_eq!(summaries[&42].hourly.len(), 24);
        let daily = s.error_daily(1, 30).await.expect("daily");
        assert_eq!(daily.len(), 30);
        assert!(daily.iter().all(|&(_, n)| n == 0));
        assert!(s.error_tag_values(1).await.expect("tags").is_empty());
        db.finish().await;
    }
}
