//! Building blocks of the ingestion load benchmark: payloads, the load generator, the baseline
//! server, process and database helpers (SQLite's file, and a PostgreSQL cluster for the
//! scale-out comparison). Everything benchmark-only lives under `benches/`.

pub mod api;
pub mod baseline;
pub mod db;
pub mod loadgen;
pub mod payloads;
pub mod pg;
pub mod procs;
