//! Auth parsing on arbitrary text: the header, query and DSN parsers, and their combination
//! with the input split into the three request sources.
#![no_main]

use faultline::protocol::auth::{key_from_dsn, parse_auth_header, parse_auth_query, resolve_auth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Header values reach us as text; non-UTF-8 is rejected before this module.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_auth_header(text);
    let _ = parse_auth_query(text);
    let _ = key_from_dsn(text);
    let mut sources = text.splitn(3, '\n');
    let _ = resolve_auth(sources.next(), sources.next(), sources.next());
});
