//! Legacy `/store/` decoding on arbitrary bytes: must never panic, and every accepted body
//! carries a normalised event id.
#![no_main]

use faultline::protocol::store_body::{decode_store_body, normalize_event_id};
use libfuzzer_sys::fuzz_target;

/// Small enough that compressed inputs hit the limit often.
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode_store_body(data, LIMIT) {
        assert_eq!(
            normalize_event_id(&event.event_id).as_deref(),
            Some(event.event_id.as_str())
        );
    }
});
