//! Domain rules that are neither HTTP nor SQL: client keys and DSNs, personal access tokens,
//! the in-memory key cache, (for ingestion) event extraction and grouping, and the read API's
//! search syntax, and the web UI's passwords and sign-in throttle.

pub mod event;
pub mod grouping;
pub mod keycache;
pub mod keys;
pub mod passwords;
pub mod ratelimit;
pub mod search;
pub mod tokens;
