//! The Sentry wire protocol as pure functions over bytes: auth headers, content decoding with
//! limits, envelope framing and legacy `/store/` bodies. Nothing here does I/O or knows HTTP
//! status codes; the HTTP layer maps these errors to responses.

pub mod auth;
pub mod decode;
pub mod envelope;
pub mod store_body;

pub use auth::{
    key_from_dsn, parse_auth_header, parse_auth_query, resolve_auth, AuthError, SentryAuth,
};
pub use decode::{decode_body, ContentEncoding, DecodeError};
pub use envelope::{Envelope, EnvelopeError, EnvelopeHeader, Item, ItemType, Limits};
pub use store_body::{decode_store_body, normalize_event_id, StoreBodyError, StoreEvent};
