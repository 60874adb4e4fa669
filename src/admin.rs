//! Offline operator commands (`faultline admin ...`): the identity operations of the API, run
//! directly against the database and printed as JSON, and `set-password` for the web UI.

use anyhow::{bail, Context};
use chrono::NaiveDate;
use clap::Subcommand;
use serde_json::json;

use crate::app::open_store;
use crate::config::Config;
use crate::domain::{passwords, tokens};
use crate::http::identity::{path_from_name, valid_segment};
use crate::store::{AccessLevel, NewProject, NewToken, NewUser};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user.
    CreateUser {
        #[arg(long)]
        username: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Make the user an instance administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Create a project owned by a user.
    CreateProject {
        #[arg(long)]
        name: String,
        #[arg(long)]
        path: Option<String>,
        /// Namespace (group path); defaults to the owner's username.
        #[arg(long)]
        namespace: Option<String>,
        /// Username of the owner.
        #[arg(long)]
        owner: String,
    },
    /// Add a user to a project with a GitLab access level (10, 20, 30, 40, 50).
    AddMember {
        /// Project id or full path.
        #[arg(long)]
        project: String,
        #[arg(long)]
        username: String,
        #[arg(long)]
        access_level: i64,
    },
    /// Create a personal access token; the secret is printed once.
    CreateToken {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "admin-cli")]
        name: String,
        /// Comma-separated: api, read_api.
        #[arg(long, default_value = "api")]
        scopes: String,
        /// YYYY-MM-DD
        #[arg(long)]
        expires_at: Option<NaiveDate>,
    },
    /// List tokens (without secrets), optionally of one user.
    ListTokens {
        #[arg(long)]
        username: Option<String>,
    },
    /// Revoke a token by id.
    RevokeToken {
        #[arg(long)]
        id: i64,
    },
    /// Set a user's web UI password (Argon2id); ends the user's web sessions. Without
    /// --stdin a random password is generated and printed once.
    SetPassword {
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input instead (it never appears
        /// in the process list or the shell history).
        #[arg(long)]
        stdin: bool,
    },
    /// Copy this data directory's SQLite database into an empty PostgreSQL database: how an
    /// installation moves to PostgreSQL with its whole history. Stop the server first (the
    /// command takes the data directory's lock); prints each table's row count on both sides.
    CopyDatabase {
        /// The PostgreSQL database to fill, e.g. postgres://user:pass@host:5432/faultline; it
        /// must be empty (migrations are applied first).
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

/// Runs one command. Without `create_database`, a data directory with no database is an error:
/// run from the wrong directory, a command would otherwise make an empty database there and
/// answer as if nothing existed.
///
/// The commands touch users, projects, members and tokens only. A running server reads tokens
/// and memberships from the database on every request, so what these commands change takes
/// effect there at once; client keys and settings, which a server keeps in memory, are managed
/// only through the API.
pub async fn run(config: &Config, cmd: AdminCommand, create_database: bool) -> anyhow::Result<()> {
    let cmd = match cmd {
        AdminCommand::CopyDatabase { to } => return copy_database(config, &to).await,
        cmd => cmd,
    };
    if !create_database
        && !crate::store::database_exists(&config.database, &config.data_dir).await?
    {
        bail!(
            "no database at {}: point --data-dir (or FAULTLINE_DATA_DIR) at the server's data \
             directory (or database.url at its database), or pass --create-database to create \
             a new one",
            crate::store::database_location(&config.database, &config.data_dir)
        );
    }
    let store = open_store(config).await?;
    let out = match cmd {
        AdminCommand::CreateUser {
            username,
            name,
            email,
            admin,
        } => {
            if !valid_segment(&username) {
                bail!("username {username:?} is not valid: use letters, digits, '_', '-' and '.'");
            }
            let u = store
                .create_user(NewUser {
                    name: name.unwrap_or_else(|| username.clone()),
                    username,
                    email,
                    is_admin: admin,
                })
                .await?;
            crate::http::identity::user_json(&u)
        }
        AdminCommand::CreateProject {
            name,
            path,
            namespace,
            owner,
        } => {
            let owner = store
                .user_by_username(&owner)
                .await?
                .context("no such owner")?;
            // The same derivation and checks as `POST /api/v4/projects`, so that a project made
            // here can be addressed by the API (an invalid path could never be URL-matched).
            let path = path.unwrap_or_else(|| path_from_name(&name));
            if !valid_segment(&path) {
                bail!("path {path:?} is not valid: use letters, digits, '_', '-' and '.', not starting or ending with '-' or '.'");
            }
            let namespace = namespace
                .map(|n| n.trim_matches('/').to_owned())
                .unwrap_or_else(|| owner.username.clone());
            if !namespace.split('/').all(valid_segment) {
                bail!("namespace {namespace:?} is not valid");
            }
            let p = store
                .create_project(NewProject {
                    name,
                    path,
                    namespace_path: namespace,
                    owner_id: owner.id,
                })
                .await?;
            json!({"id": p.id, "name": p.name, "path": p.path, "path_with_namespace": p.path_with_namespace})
        }
        AdminCommand::AddMember {
            project,
            username,
            access_level,
        } => {
            if !AccessLevel::is_valid(access_level) {
                bail!("access level must be one of 10, 20, 30, 40, 50");
            }
            let p = match project.parse::<i64>() {
                Ok(id) => store.project_by_id(id).await?,
                Err(_) => store.project_by_path(&project).await?,
            }
            .context("no such project")?;
            let u = store
                .user_by_username(&username)
                .await?
                .context("no such user")?;
            let m = store.add_member(p.id, u.id, access_level).await?;
            json!({"project_id": p.id, "user_id": m.user_id, "username": m.username, "access_level": m.access_level})
        }
        AdminCommand::CreateToken {
            username,
            name,
            scopes,
            expires_at,
        } => {
            let u = store
                .user_by_username(&username)
                .await?
                .context("no such user")?;
            let scopes: Vec<String> = scopes
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if scopes.is_empty() || !scopes.iter().all(|s| tokens::SCOPES.contains(&s.as_str())) {
                bail!("scopes must be api and/or read_api");
            }
            if let Some(date) = expires_at {
                tokens::check_expiry(date)?;
            }
            let secret = tokens::generate_token();
            let t = store
                .create_token(NewToken {
                    user_id: u.id,
                    name,
                    scopes,
                    expires_at,
                    digest: tokens::digest(&secret),
                })
                .await?;
            crate::http::identity::token_json(&t, Some(&secret))
        }
        AdminCommand::ListTokens { username } => {
            let uid = match username {
                Some(n) => Some(
                    store
                        .user_by_username(&n)
                        .await?
                        .context("no such user")?
                        .id,
                ),
                None => None,
            };
            let list = store.list_tokens(uid).await?;
            serde_json::Value::Array(
                list.iter()
                    .map(|t| crate::http::identity::token_json(t, None))
                    .collect(),
            )
        }
        AdminCommand::SetPassword { username, stdin } => {
            let u = store
                .user_by_username(&username)
                .await?
                .context("no such user")?;
            let (password, generated) = if stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (passwords::generate(), true)
            };
            passwords::check_new(&password)?;
            let hash = passwords::hash(&password)?;
            store.set_password(u.id, hash).await?;
            if generated {
                json!({"username": u.username, "password": password})
            } else {
                json!({"username": u.username, "password_set": true})
            }
        }
        // Handled above: its source is always the data directory's SQLite database.
        AdminCommand::CopyDatabase { .. } => bail!("copy-database runs before a store is opened"),
        AdminCommand::RevokeToken { id } => {
            if !store.revoke_token(id).await? {
                bail!("no token with id {id}");
            }
            json!({"id": id, "revoked": true})
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `copy-database`: the source is the SQLite database of the data directory, whatever
/// `database.url` says, and it must exist (`--create-database` does not apply: an empty source
/// would copy nothing). The directory's lock is held throughout, so no server writes to it
/// while it is copied.
async fn copy_database(config: &Config, to: &str) -> anyhow::Result<()> {
    let path = crate::store::sqlite_path(&config.data_dir);
    if !path.is_file() {
        bail!(
            "no SQLite database at {}: point --data-dir (or FAULTLINE_DATA_DIR) at the data \
             directory to copy",
            path.display()
        );
    }
    let _lock = crate::app::lock_data_dir(&config.data_dir)?;
    let source = crate::store::sqlite::SqliteOptions {
        path,
        synchronous: config.database.synchronous,
        max_page_count: config.database.max_page_count,
    };
    let report = crate::store::postgres::copy::copy_sqlite_to_postgres(source, to).await?;
    let out = json!({
        "copied_to": crate::store::postgres::redacted_url(to),
        "counts_match": true,
        "tables": report.tables,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
