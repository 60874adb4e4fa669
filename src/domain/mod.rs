//! Domain rules that are neither HTTP nor SQL: client keys and DSNs, personal access tokens,
//! the in-memory key cache, and (for ingestion) event extraction and grouping.

pub mod event;
pub mod grouping;
pub mod keycache;
pub mod keys;
pub mod ratelimit;
pub mod tokens;
