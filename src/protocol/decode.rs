//! `Content-Encoding` handling for ingestion bodies: maps the header to a codec and decompresses
//! under a byte limit that is enforced while decoding. Choosing the limit is left to the caller.

use std::borrow::Cow;
use std::io::{self, Read};

/// A body encoding an SDK may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
    /// zlib-wrapped deflate, which is what Sentry means by `deflate`; raw deflate is accepted too.
    Deflate,
    Brotli,
    Zstd,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content encoding {0:?}")]
    UnsupportedEncoding(String),
    #[error("corrupt compressed body")]
    Corrupt(#[source] io::Error),
    #[error("decoded body is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

impl ContentEncoding {
    /// Maps a `Content-Encoding` header value to an encoding.
    ///
    /// No header, an empty value, `identity` and `UTF-8` (which some old SDKs put there by
    /// mistake) all mean the body is not compressed. A comma list is accepted as long as at most
    /// one element is a real encoding, because we decode one layer only.
    pub fn from_header(value: Option<&str>) -> Result<Self, DecodeError> {
        let Some(value) = value else {
            return Ok(Self::Identity);
        };
        let mut found = Self::Identity;
        for part in value.split(',') {
            let enc = match part.trim().to_ascii_lowercase().as_str() {
                "" | "identity" | "utf-8" => continue,
                "gzip" | "x-gzip" => Self::Gzip,
                "deflate" => Self::Deflate,
                "br" => Self::Brotli,
                "zstd" => Self::Zstd,
                _ => return Err(DecodeError::UnsupportedEncoding(value.trim().to_owned())),
            };
            if found != Self::Identity {
                // Two stacked encodings: legal HTTP, but no SDK does it, and supporting it would
                // mean decoding twice under the same limit for no real client.
                return Err(DecodeError::UnsupportedEncoding(value.trim().to_owned()));
            }
            found = enc;
        }
        Ok(found)
    }
}

/// Decompresses `body` into at most `limit` bytes.
///
/// The limit is checked as output is produced, so a small bomb stops after roughly `limit`
/// bytes instead of expanding fully. Identity bodies are borrowed, not copied.
pub fn decode_body(
    encoding: ContentEncoding,
    body: &[u8],
    limit: usize,
) -> Result<Cow<'_, [u8]>, DecodeError> {
    let decoded = match encoding {
        ContentEncoding::Identity => {
            if body.len() > limit {
                return Err(DecodeError::TooLarge { limit });
            }
            return Ok(Cow::Borrowed(body));
        }
        ContentEncoding::Gzip => {
            // Multi-member gzip is what `cat a.gz b.gz` produces; a single-member decoder would
            // silently drop everything after the first member.
            read_limited(flate2::read::MultiGzDecoder::new(body), limit)?
        }
        ContentEncoding::Deflate => decode_deflate(body, limit)?,
        ContentEncoding::Brotli => {
            // The decoder allocates a ring buffer of the stream's declared window before any
            // output exists. Standard brotli caps that at 16 MiB, but the decoder also accepts
            // the non-standard "large window" variant, which may declare 1 GiB. No SDK sends it,
            // so it is refused up front.
            if is_large_window_brotli(body) {
                return Err(DecodeError::Corrupt(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "large-window brotli streams are not accepted",
                )));
            }
            read_limited(brotli::Decompressor::new(body, BROTLI_BUFFER), limit)?
        }
        ContentEncoding::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(body).map_err(DecodeError::Corrupt)?;
            decoder
                .window_log_max(zstd_window_log_max(limit))
                .map_err(DecodeError::Corrupt)?;
            read_limited(decoder, limit)?
        }
    };
    Ok(Cow::Owned(decoded))
}

/// Internal buffer of the brotli decoder; 4 KiB is its customary size and large enough that
/// the per-read overhead does not show.
const BROTLI_BUFFER: usize = 4096;

/// How much output to pull from a decoder per read. 16 KiB keeps the loop cheap while letting a
/// bomb overshoot the limit by at most one chunk before it is stopped.
const CHUNK: usize = 16 * 1024;

/// A zstd frame declares the window its decoder must allocate, up to 2 GiB for hostile input, and
/// that allocation happens before any output exists. Capping the window bounds that memory.
/// The cap is the limit rounded up to a power of two, but never below 8 MiB (2^23), because
/// streaming compressors that do not know the input size pick windows of 2–8 MiB even for small
/// bodies, and refusing those would lose real events. 2^27 is zstd's own default ceiling.
fn zstd_window_log_max(limit: usize) -> u32 {
    let needed = usize::BITS - limit.saturating_sub(1).leading_zeros();
    needed.clamp(23, 27)
}

/// The first bits of a brotli stream encode its window size; the seven-bit pattern `0010001`
/// (RFC 7932 reserves it) is what large-window encoders write there.
fn is_large_window_brotli(body: &[u8]) -> bool {
    body.first().is_some_and(|b| b & 0x7f == 0x11)
}

/// Sentry's `deflate` is zlib-wrapped, but some hand-written clients send raw deflate. A valid
/// zlib header is two bytes whose big-endian value is a multiple of 31 with method 8, which raw
/// deflate matches only by accident; if the zlib attempt fails as corrupt we still try raw.
pub(super) fn decode_deflate(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    if looks_like_zlib(body) {
        match read_limited(flate2::read::ZlibDecoder::new(body), limit) {
            Err(DecodeError::Corrupt(zlib_err)) => {
                // Report the zlib error: if raw deflate fails too, the body was most likely
                // meant as zlib and the zlib message is the useful one.
                read_limited(flate2::read::DeflateDecoder::new(body), limit).map_err(|raw_err| {
                    match raw_err {
                        DecodeError::Corrupt(_) => DecodeError::Corrupt(zlib_err),
                        other => other,
                    }
                })
            }
            other => other,
        }
    } else {
        read_limited(flate2::read::DeflateDecoder::new(body), limit)
    }
}

fn looks_like_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => {
            let method_is_deflate = cmf & 0x0f == 8;
            let window_ok = cmf >> 4 <= 7;
            let check_ok = (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0;
            method_is_deflate && window_ok && check_ok
        }
        _ => false,
    }
}

/// Reads `reader` to the end into a buffer that never grows past `limit` bytes of capacity.
///
/// `read_to_end` would double the buffer and could reserve up to twice the limit; growing by
/// hand keeps the worst case at the limit plus one chunk on the stack.
fn read_limited<R: Read>(mut reader: R, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = [0u8; CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecodeError::Corrupt(e)),
        };
        let new_len = out.len() + n;
        if new_len > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        if new_len > out.capacity() {
            let target = out.capacity().saturating_mul(2).max(new_len).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    const MIB: usize = 1024 * 1024;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 1, 22);
            enc.write_all(data).unwrap();
        }
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 1).unwrap()
    }

    fn encoder(encoding: ContentEncoding) -> fn(&[u8]) -> Vec<u8> {
        match encoding {
            ContentEncoding::Identity => |d| d.to_vec(),
            ContentEncoding::Gzip => gzip,
            ContentEncoding::Deflate => zlib,
            ContentEncoding::Brotli => brotli,
            ContentEncoding::Zstd => zstd,
        }
    }

    const SAMPLE: &[u8] =
        b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"message\":\"hi\"}\r\n";

    fn check_round_trip(encoding: ContentEncoding) {
        let compressed = encoder(encoding)(SAMPLE);
        let decoded = decode_body(encoding, &compressed, MIB).unwrap();
        assert_eq!(&*decoded, SAMPLE);
    }

    fn check_corrupt(encoding: ContentEncoding) {
        // Valid stream with its middle overwritten, so the container is recognised but the data
        // inside is wrong.
        let mut compressed = encoder(encoding)(&SAMPLE.repeat(20));
        let mid = compressed.len() / 2;
        for b in &mut compressed[mid..] {
            *b ^= 0x5a;
        }
        let err = decode_body(encoding, &compressed, MIB).unwrap_err();
        assert!(
            matches!(err, DecodeError::Corrupt(_)),
            "{encoding:?}: {err:?}"
        );
    }

    /// 50 MiB of zeros compressed, decoded with a 1 MiB limit: must fail fast without inflating.
    fn check_bomb(encoding: ContentEncoding, bomb: &[u8]) {
        let started = Instant::now();
        let err = decode_body(encoding, bomb, MIB).unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(err, DecodeError::TooLarge { limit } if limit == MIB),
            "{err:?}"
        );
        // Inflating 50 MiB in a debug build takes seconds; stopping at the limit takes
        // milliseconds. A generous bound keeps the test stable on a busy machine.
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    }

    fn zeros() -> Vec<u8> {
        vec![0u8; 50 * MIB]
    }

    #[test]
    fn header_absent_is_identity() {
        assert_eq!(
            ContentEncoding::from_header(None).unwrap(),
            ContentEncoding::Identity
        );
    }

    #[test]
    fn header_empty_and_identity() {
        for v in ["", "  ", "identity", "IDENTITY"] {
            assert_eq!(
                ContentEncoding::from_header(Some(v)).unwrap(),
                ContentEncoding::Identity,
                "{v:?}"
            );
        }
    }

    #[test]
    fn header_utf8_any_case_is_identity() {
        for v in ["UTF-8", "utf-8", "Utf-8"] {
            assert_eq!(
                ContentEncoding::from_header(Some(v)).unwrap(),
                ContentEncoding::Identity
            );
        }
    }

    #[test]
    fn header_known_encodings_trimmed_and_case_insensitive() {
        let cases = [
            (" gzip ", ContentEncoding::Gzip),
            ("x-gzip", ContentEncoding::Gzip),
            ("Deflate", ContentEncoding::Deflate),
            ("BR", ContentEncoding::Brotli),
            ("zstd", ContentEncoding::Zstd),
        ];
        for (v, want) in cases {
            assert_eq!(
                ContentEncoding::from_header(Some(v)).unwrap(),
                want,
                "{v:?}"
            );
        }
    }

    #[test]
    fn header_list_of_one_element() {
        assert_eq!(
            ContentEncoding::from_header(Some("gzip,")).unwrap(),
            ContentEncoding::Gzip
        );
        assert_eq!(
            ContentEncoding::from_header(Some("identity, br")).unwrap(),
            ContentEncoding::Brotli
        );
    }

    #[test]
    fn header_two_real_encodings_unsupported() {
        let err = ContentEncoding::from_header(Some("gzip, br")).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedEncoding(v) if v == "gzip, br"));
    }

    #[test]
    fn header_unknown_encoding_unsupported() {
        let err = ContentEncoding::from_header(Some("compress")).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedEncoding(v) if v == "compress"));
    }

    #[test]
    fn identity_is_borrowed() {
        let decoded = decode_body(ContentEncoding::Identity, SAMPLE, MIB).unwrap();
        assert!(matches!(decoded, Cow::Borrowed(b) if b == SAMPLE));
    }

    #[test]
    fn identity_at_limit_ok() {
        assert!(decode_body(ContentEncoding::Identity, b"abcd", 4).is_ok());
    }

    #[test]
    fn identity_over_limit() {
        let err = decode_body(ContentEncoding::Identity, b"abcde", 4).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { limit: 4 }));
    }

    #[test]
    fn gzip_round_trip() {
        check_round_trip(ContentEncoding::Gzip);
    }

    #[test]
    fn gzip_multi_member() {
        let mut body = gzip(b"first ");
        body.extend(gzip(b"second"));
        let decoded = decode_body(ContentEncoding::Gzip, &body, MIB).unwrap();
        assert_eq!(&*decoded, b"first second");
    }

    #[test]
    fn zlib_deflate_round_trip() {
        check_round_trip(ContentEncoding::Deflate);
    }

    #[test]
    fn raw_deflate_round_trip() {
        let compressed = raw_deflate(SAMPLE);
        assert!(!looks_like_zlib(&compressed));
        let decoded = decode_body(ContentEncoding::Deflate, &compressed, MIB).unwrap();
        assert_eq!(&*decoded, SAMPLE);
    }

    #[test]
    fn brotli_round_trip() {
        check_round_trip(ContentEncoding::Brotli);
    }

    #[test]
    fn brotli_large_window_refused() {
        let params = brotli::enc::BrotliEncoderParams {
            large_window: true,
            lgwin: 30,
            quality: 1,
            ..Default::default()
        };
        let mut compressed = Vec::new();
        brotli::BrotliCompress(&mut &SAMPLE[..], &mut compressed, &params).unwrap();
        assert!(is_large_window_brotli(&compressed));
        let err = decode_body(ContentEncoding::Brotli, &compressed, MIB).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn brotli_standard_windows_not_mistaken_for_large() {
        for lgwin in 10..=24 {
            let params = brotli::enc::BrotliEncoderParams {
                lgwin,
                quality: 1,
                ..Default::default()
            };
            let mut compressed = Vec::new();
            brotli::BrotliCompress(&mut &SAMPLE[..], &mut compressed, &params).unwrap();
            let decoded = decode_body(ContentEncoding::Brotli, &compressed, MIB).unwrap();
            assert_eq!(&*decoded, SAMPLE, "lgwin {lgwin}");
        }
    }

    #[test]
    fn zstd_round_trip() {
        check_round_trip(ContentEncoding::Zstd);
    }

    #[test]
    fn output_exactly_at_limit_ok() {
        let compressed = gzip(&[7u8; 1000]);
        let decoded = decode_body(ContentEncoding::Gzip, &compressed, 1000).unwrap();
        assert_eq!(decoded.len(), 1000);
    }

    #[test]
    fn output_one_past_limit_too_large() {
        let compressed = gzip(&[7u8; 1001]);
        let err = decode_body(ContentEncoding::Gzip, &compressed, 1000).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { limit: 1000 }));
    }

    #[test]
    fn gzip_corrupt() {
        check_corrupt(ContentEncoding::Gzip);
    }

    #[test]
    fn zlib_deflate_corrupt() {
        check_corrupt(ContentEncoding::Deflate);
    }

    #[test]
    fn raw_deflate_corrupt() {
        let err =
            decode_body(ContentEncoding::Deflate, b"\xff\xff\xff\xff garbage", MIB).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn brotli_corrupt() {
        check_corrupt(ContentEncoding::Brotli);
    }

    #[test]
    fn zstd_corrupt() {
        check_corrupt(ContentEncoding::Zstd);
    }

    #[test]
    fn plain_json_sent_as_gzip_corrupt() {
        let err = decode_body(ContentEncoding::Gzip, SAMPLE, MIB).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)));
    }

    #[test]
    fn truncated_gzip_corrupt() {
        let compressed = gzip(SAMPLE);
        let err = decode_body(
            ContentEncoding::Gzip,
            &compressed[..compressed.len() - 6],
            MIB,
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn gzip_bomb() {
        check_bomb(ContentEncoding::Gzip, &gzip(&zeros()));
    }

    #[test]
    fn zlib_deflate_bomb() {
        check_bomb(ContentEncoding::Deflate, &zlib(&zeros()));
    }

    #[test]
    fn raw_deflate_bomb() {
        check_bomb(ContentEncoding::Deflate, &raw_deflate(&zeros()));
    }

    #[test]
    fn brotli_bomb() {
        check_bomb(ContentEncoding::Brotli, &brotli(&zeros()));
    }

    #[test]
    fn zstd_bomb() {
        check_bomb(ContentEncoding::Zstd, &zstd(&zeros()));
    }

    #[test]
    fn zstd_window_cap_scales_with_limit() {
        assert_eq!(zstd_window_log_max(MIB), 23);
        assert_eq!(zstd_window_log_max(32 * MIB), 25);
        assert_eq!(zstd_window_log_max(200 * MIB), 27);
        assert_eq!(zstd_window_log_max(usize::MAX), 27);
        assert_eq!(zstd_window_log_max(0), 23);
    }

    #[test]
    fn zstd_streamed_without_size_decodes_under_small_limit() {
        // A streaming encoder does not write the content size, and at a high level it asks for
        // a large window; the window cap must still admit it.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
        enc.write_all(SAMPLE).unwrap();
        let compressed = enc.finish().unwrap();
        let decoded = decode_body(ContentEncoding::Zstd, &compressed, 1024).unwrap();
        assert_eq!(&*decoded, SAMPLE);
    }

    #[test]
    fn zstd_huge_window_refused_under_small_limit() {
        // A frame declaring a 128 MiB window would make the decoder allocate that much before
        // producing a byte; with a 1 MiB limit the cap is 8 MiB.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.window_log(27).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.write_all(SAMPLE).unwrap();
        let compressed = enc.finish().unwrap();
        let err = decode_body(ContentEncoding::Zstd, &compressed, MIB).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err:?}");
        // The same frame is fine where the limit is large enough to justify the window.
        let decoded = decode_body(ContentEncoding::Zstd, &compressed, 128 * MIB).unwrap();
        assert_eq!(&*decoded, SAMPLE);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const ALL: [ContentEncoding; 5] = [
            ContentEncoding::Identity,
            ContentEncoding::Gzip,
            ContentEncoding::Deflate,
            ContentEncoding::Brotli,
            ContentEncoding::Zstd,
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn never_panics_and_respects_limit(
                body in proptest::collection::vec(any::<u8>(), 0..2048),
                limit in 0usize..4096,
            ) {
                for enc in ALL {
                    if let Ok(out) = decode_body(enc, &body, limit) {
                        prop_assert!(out.len() <= limit);
                    }
                }
            }

            #[test]
            fn round_trips_under_limit(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
                for enc in ALL {
                    let compressed = encoder(enc)(&data);
                    let out = decode_body(enc, &compressed, data.len()).unwrap();
                    prop_assert_eq!(&*out, &data[..]);
                }
            }

            #[test]
            fn header_parser_never_panics(s in ".{0,40}") {
                let _ = ContentEncoding::from_header(Some(&s));
            }
        }
    }
}
