//! Event field extraction and grouping on arbitrary bytes: must never panic, and what it makes
//! of any event must respect the stored fields' length bounds.
#![no_main]

use faultline::domain::{event, grouping};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(summary) = event::extract(data) {
        let g = grouping::group(&summary);
        assert!(g.fingerprint >= 0);
        assert!(g.name.chars().count() <= 255);
        assert!(g.description.chars().count() <= 1024);
        assert!(g.actor.chars().count() <= 255);
    }
});
