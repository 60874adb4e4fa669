//! faultline: a Sentry-compatible error-tracking ingestion gateway with GitLab-compatible key
//! management. `ARCHITECTURE.md` at the repository root is the map; [`app::spawn`] is the entry
//! point that starts a server.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod clock;
pub mod config;
pub mod domain;
pub mod gitlab;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod purge;
pub mod retention;
pub mod store;
pub mod writer;
