//! Decompression on arbitrary bytes for every encoding: must never panic and never return more
//! than the limit. The first byte picks the encoding.
#![no_main]

use faultline::protocol::decode::{decode_body, ContentEncoding};
use libfuzzer_sys::fuzz_target;

/// Small enough that compressed inputs hit the limit often.
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let encoding = match selector % 5 {
        0 => ContentEncoding::Identity,
        1 => ContentEncoding::Gzip,
        2 => ContentEncoding::Deflate,
        3 => ContentEncoding::Brotli,
        _ => ContentEncoding::Zstd,
    };
    if let Ok(decoded) = decode_body(encoding, body, LIMIT) {
        assert!(decoded.len() <= LIMIT);
    }
});
