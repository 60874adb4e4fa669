//! Envelope framing on arbitrary bytes: must never panic, and whatever parses must respect the
//! per-item limits.
#![no_main]

use faultline::protocol::envelope::{parse, Limits, MAX_ITEMS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(envelope) = parse(data, &limits) {
        assert!(envelope.items.len() <= MAX_ITEMS);
        for item in &envelope.items {
            assert!(item.payload.len() <= limits.for_type(item.ty));
            if let Some(length) = item.length {
                assert_eq!(item.payload.len(), length);
            }
        }
    }
});
