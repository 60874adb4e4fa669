//! The gzip one-shot path (libdeflate, taken by `decode_body` for a body that is one member)
//! against the streaming path it falls back to: the same bytes, or the same kind of error.
//!
//! The first byte picks how the rest becomes a body, so that the fuzzer spends its time near
//! the one-member case the fast path is about rather than on bodies that fail the header check:
//! as it is; as a member around the rest taken as raw deflate data, with the trailer of what
//! libdeflate makes of it; or as a real member of the rest, repeated and followed by a copy of
//! its own trailer as the selector's bits say.
#![no_main]

use std::io::Write;

use faultline::protocol::decode::{decode_body, decode_gzip_streaming, ContentEncoding, DecodeError};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 * 1024;

fn member_around(deflate: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; LIMIT];
    let n = libdeflater::Decompressor::new()
        .deflate_decompress(deflate, &mut out)
        .unwrap_or(0);
    let mut body = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    body.extend_from_slice(deflate);
    body.extend_from_slice(&libdeflater::crc32(&out[..n]).to_le_bytes());
    body.extend_from_slice(&(n as u32).to_le_bytes());
    body
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("in-memory write");
    enc.finish().expect("in-memory finish")
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let body = match selector % 3 {
        0 => rest.to_vec(),
        1 => member_around(rest),
        _ => {
            let one = gzip(rest);
            let mut body = one.repeat(1 + usize::from(selector >> 7));
            if selector & 0x40 != 0 {
                body.extend_from_slice(&rest[..rest.len().min(3)]);
                body.extend_from_slice(&one[one.len() - 8..]);
            }
            body
        }
    };
    let limit = if selector & 0x20 != 0 { rest.len() } else { LIMIT };
    let fast = decode_body(ContentEncoding::Gzip, &body, limit).map(|d| d.into_owned());
    let streaming = decode_gzip_streaming(&body, limit);
    match (&fast, &streaming) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(DecodeError::Corrupt(_)), Err(DecodeError::Corrupt(_))) => {}
        (Err(DecodeError::TooLarge { .. }), Err(DecodeError::TooLarge { .. })) => {}
        // The one known disagreement: a member using the codes RFC 1951 reserves, which
        // libdeflate decodes and zlib refuses (see `decode::inflate_single_member`).
        (Ok(_), Err(DecodeError::Corrupt(_))) if selector % 3 == 1 => {}
        _ => panic!("one-shot {fast:?} vs streaming {streaming:?}"),
    }
    if let Ok(out) = &fast {
        assert!(out.len() <= limit);
    }
});
