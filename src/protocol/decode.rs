//! `Content-Encoding` handling for ingestion bodies: maps the header to a codec and decompresses
//! under a byte limit that is enforced while decoding. Choosing the limit is left to the caller.

use std::borrow::Cow;
use std::cell::Cell;
use std::io::{self, Read};

use flate2::{Decompress, FlushDecompress, Status};

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
            decode_gzip(body, limit)?
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

/// How much capacity to add, at least, when a body outgrows its first guess. Small enough that
/// an under-sized guess costs little memory, large enough that a long body is not regrown many
/// times.
const MIN_GROWTH: usize = 16 * 1024;

/// No deflate stream expands by more than about 1032 to 1: a length/distance pair of at most two
/// bits' worth of input yields at most 258 bytes. A size hint above this multiple of the input
/// is certainly a lie, so it is never used to size a buffer.
const MAX_DEFLATE_RATIO: usize = 1032;

/// What to reserve for a zlib or raw deflate body, which carries no size: JSON typically shrinks
/// three to five times, so four times the input is usually enough in one go.
const DEFLATE_GUESS_RATIO: usize = 4;

/// gzip member framing (RFC 1952): fixed header, then flag-selected optional fields.
const GZIP_HEADER_LEN: usize = 10;
const GZIP_TRAILER_LEN: usize = 8;
const GZIP_FHCRC: u8 = 1 << 1;
const GZIP_FEXTRA: u8 = 1 << 2;
const GZIP_FNAME: u8 = 1 << 3;
const GZIP_FCOMMENT: u8 = 1 << 4;
const GZIP_FRESERVED: u8 = 0xe0;

thread_local! {
    /// One inflate state per thread, reset for each body, because creating one allocates a
    /// 32 KiB window plus the decoder's tables, which is not small next to inflating a few-KB
    /// event. The state is taken out while in use, so a nested or panicking use can never share
    /// it: the slot is simply empty then and a fresh state is made.
    static INFLATER: Cell<Option<Decompress>> = const { Cell::new(None) };
}

/// Borrows this thread's inflate state, reset for a zlib (`zlib_header`) or raw deflate stream.
fn with_inflater<T>(zlib_header: bool, f: impl FnOnce(&mut Decompress) -> T) -> T {
    // `try_with` fails only while the thread is being torn down; a fresh state serves then.
    let cached = INFLATER.try_with(Cell::take).ok().flatten();
    let mut inflater = match cached {
        Some(mut inflater) => {
            inflater.reset(zlib_header);
            inflater
        }
        None => Decompress::new(zlib_header),
    };
    let result = f(&mut inflater);
    let _ = INFLATER.try_with(|slot| slot.set(Some(inflater)));
    result
}

thread_local! {
    /// This thread's libdeflate state for [`inflate_single_member`], kept for the same reason as
    /// [`INFLATER`] and taken out while in use in the same way.
    static ONE_SHOT: Cell<Option<libdeflater::Decompressor>> = const { Cell::new(None) };
}

/// Decodes a gzip body: in one call to libdeflate when it is certainly a single member that fits
/// the limit, else member by member with the streaming inflater.
fn decode_gzip(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    match inflate_single_member(body, limit) {
        Some(out) => Ok(out),
        None => decode_gzip_streaming(body, limit),
    }
}

/// The fast path for the body nearly every SDK sends: one gzip member, its size in the trailer.
/// libdeflate inflates it in one call into a buffer of exactly that size, about a third faster
/// than the streaming inflater, but it needs the size up front and it ignores whatever follows
/// the first member. So this path only ever answers success, and only when it can prove the
/// streaming path would give the same bytes; `None` hands the body (several members, trailing
/// bytes, a trailer that lies, a size past the limit, any corruption) to
/// [`decode_gzip_streaming`], which decides it exactly as before, errors and limits included.
///
/// The proof that the body is one member and nothing else: libdeflate checks the CRC-32 and the
/// size stored right after the deflate stream's real end, and the size it found equals the
/// body's last four bytes. If the stream ended before the body's last eight bytes, those four
/// size bytes would also occur earlier in the body, right where that first trailer's size is;
/// they occur nowhere but at the end, so the stream ends exactly at the final trailer. (A chance
/// earlier occurrence only costs the streaming path.)
///
/// One disagreement remains, found by the property test below: libdeflate decodes the codes
/// RFC 1951 reserves (literal/length codes 286 and 287 as length 258, distance codes 30 and 31
/// as distance 24577 and up), where zlib refuses the stream as corrupt. No encoder writes them,
/// and the body must also carry the CRC of libdeflate's reading, so only a body made for it is
/// accepted here and refused by the streaming path; its output still fits the limit, and the
/// read side decodes the stored body through this same path.
fn inflate_single_member(body: &[u8], limit: usize) -> Option<Vec<u8>> {
    // libdeflate skips a header CRC without checking it; ours checks it, as the streaming path
    // does.
    let header_len = gzip_header_len(body).ok()?;
    let size_bytes = body.last_chunk::<4>()?;
    let size = usize::try_from(u32::from_le_bytes(*size_bytes)).ok()?;
    // A size past the limit is the streaming path's to refuse (it stops at the limit); one past
    // what the input could expand to is a lie and never sizes a buffer.
    if size > limit || size > body.len().saturating_mul(MAX_DEFLATE_RATIO) {
        return None;
    }
    let mut out = vec![0u8; size];
    let cached = ONE_SHOT.try_with(Cell::take).ok().flatten();
    let mut inflater = cached.unwrap_or_default();
    let inflated = inflater.gzip_decompress(body, &mut out);
    let _ = ONE_SHOT.try_with(|slot| slot.set(Some(inflater)));
    if inflated.ok()? != size {
        return None;
    }
    // Every place an earlier trailer's size field could start: after at least one byte of
    // deflate data and its CRC, and before the final one at `body.len() - 4`.
    let earlier = body.get(header_len + 5..body.len() - 1)?;
    if memchr::memmem::find(earlier, size_bytes).is_some() {
        return None;
    }
    Some(out)
}

/// Decodes a (possibly multi-member) gzip body with the deflate data of each member inflated
/// straight into the output buffer. Public so that the fuzz target can hold the one-shot path
/// against it; ingestion goes through [`decode_body`].
///
/// The last four bytes of a gzip stream hold the uncompressed size of its last member, which is
/// the whole body's size in the usual single-member case. It only sizes the first allocation:
/// it is capped by the limit and by the largest size the input could possibly expand to, and a
/// wrong value merely means the buffer grows (or was larger than needed). The limit itself is
/// enforced by never giving the inflater more room than the limit leaves.
pub fn decode_gzip_streaming(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let hint = match body.last_chunk::<4>() {
        Some(size) => usize::try_from(u32::from_le_bytes(*size)).unwrap_or(usize::MAX),
        None => 0,
    };
    let mut out = Vec::with_capacity(capped_hint(hint, body.len(), limit));
    with_inflater(false, |inflater| {
        let mut rest = body;
        let mut first = true;
        loop {
            let header_len = gzip_header_len(rest)?;
            let deflate = rest.get(header_len..).unwrap_or_default();
            let start = out.len();
            if !first {
                // Every member's deflate stream starts from an empty state. (Keyed on the
                // member, not on the output so far: after an empty first member the inflater
                // would otherwise still be at its end and skip the next member unread.)
                inflater.reset(false);
            }
            first = false;
            let used = inflate_into(inflater, deflate, &mut out, limit)?;
            let after = deflate.get(used..).unwrap_or_default();
            let Some((trailer, next)) = after.split_first_chunk::<GZIP_TRAILER_LEN>() else {
                return Err(corrupt("gzip member ends before its trailer"));
            };
            let member = &out[start..];
            let mut crc = flate2::Crc::new();
            crc.update(member);
            let [c0, c1, c2, c3, s0, s1, s2, s3] = *trailer;
            // ISIZE is the size modulo 2^32, so only the low 32 bits are compared.
            if crc.sum() != u32::from_le_bytes([c0, c1, c2, c3])
                || member.len() as u32 != u32::from_le_bytes([s0, s1, s2, s3])
            {
                return Err(corrupt("gzip member checksum or size mismatch"));
            }
            if next.is_empty() {
                return Ok(());
            }
            // Anything after a member must be another member; trailing garbage is refused by
            // the header check, as a streaming multi-member decoder would.
            rest = next;
        }
    })?;
    Ok(out)
}

/// Length of the gzip member header at the start of `data`, checked as RFC 1952 asks:
/// magic, method 8, no reserved flag bits, and the header CRC-16 when one is present.
fn gzip_header_len(data: &[u8]) -> Result<usize, DecodeError> {
    let bad = || corrupt("invalid gzip header");
    let fixed = data.get(..GZIP_HEADER_LEN).ok_or_else(bad)?;
    if fixed[..3] != [0x1f, 0x8b, 8] || fixed[3] & GZIP_FRESERVED != 0 {
        return Err(bad());
    }
    let flags = fixed[3];
    let mut len = GZIP_HEADER_LEN;
    if flags & GZIP_FEXTRA != 0 {
        let xlen = data.get(len..len + 2).ok_or_else(bad)?;
        len += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for field in [GZIP_FNAME, GZIP_FCOMMENT] {
        if flags & field != 0 {
            // Zero-terminated; the terminator belongs to the header.
            let tail = data.get(len..).ok_or_else(bad)?;
            len += memchr::memchr(0, tail).ok_or_else(bad)? + 1;
        }
    }
    if flags & GZIP_FHCRC != 0 {
        let covered = data.get(..len).ok_or_else(bad)?;
        let stored = data.get(len..len + 2).ok_or_else(bad)?;
        let mut crc = flate2::Crc::new();
        crc.update(covered);
        // The header CRC is the low 16 bits of the CRC-32 of the bytes before it.
        if crc.sum() as u16 != u16::from_le_bytes([stored[0], stored[1]]) {
            return Err(bad());
        }
        len += 2;
    }
    if len > data.len() {
        return Err(bad());
    }
    Ok(len)
}

/// The first capacity to reserve for output: the hint, but never past the limit nor past what
/// `input_len` bytes of deflate data could expand to.
fn capped_hint(hint: usize, input_len: usize, limit: usize) -> usize {
    hint.min(limit)
        .min(input_len.saturating_mul(MAX_DEFLATE_RATIO))
}

/// Inflates the deflate stream at the start of `input` (with `inflater` freshly reset), appending
/// its output to `out`, and returns how many input bytes the stream took.
///
/// `out` never holds more than `limit` bytes: the inflater only ever writes into its spare
/// capacity, and that capacity is grown by hand up to the limit and no further. When the
/// output fills the limit exactly, a one-byte probe tells a stream that is finished (only its
/// end-of-block code remains) from one that would go on.
fn inflate_into(
    inflater: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, DecodeError> {
    loop {
        let (in_before, out_before, len_before) =
            (inflater.total_in(), inflater.total_out(), out.len());
        // The inflater never reports more input taken than it was given, so this is in bounds
        // and the cast (of a count of bytes of a slice) is lossless.
        let rest = input.get(in_before as usize..).unwrap_or_default();
        let status = if out.len() < out.capacity().min(limit) {
            // The whole input is here, so `Finish` lets the inflater skip keeping a copy of its
            // window when the output fits in this one call.
            inflater.decompress_vec(rest, out, FlushDecompress::Finish)
        } else if out.len() < limit {
            grow(out, limit);
            continue;
        } else {
            let mut probe = [0u8; 1];
            inflater.decompress(rest, &mut probe, FlushDecompress::Finish)
        }
        .map_err(|e| DecodeError::Corrupt(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        let produced = inflater.total_out() - out_before;
        // More output than landed in `out` means the probe found a byte past the limit.
        if out.len() > limit || produced > (out.len() - len_before) as u64 {
            return Err(DecodeError::TooLarge { limit });
        }
        if status == Status::StreamEnd {
            return Ok(inflater.total_in() as usize);
        }
        if inflater.total_in() == in_before && produced == 0 {
            // Room to write, yet no progress: the input ended before the stream did.
            return Err(DecodeError::Corrupt(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "deflate stream ends early",
            )));
        }
    }
}

/// Adds capacity for more output: doubling keeps the number of regrowths logarithmic, the
/// minimum step keeps a tiny first guess from regrowing in small steps, and the limit caps it.
fn grow(out: &mut Vec<u8>, limit: usize) {
    let target = out
        .capacity()
        .saturating_mul(2)
        .max(out.len() + MIN_GROWTH)
        .min(limit);
    out.reserve_exact(target.saturating_sub(out.len()));
}

fn corrupt(message: &'static str) -> DecodeError {
    DecodeError::Corrupt(io::Error::new(io::ErrorKind::InvalidData, message))
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
        match inflate_whole(true, body, limit) {
            Err(DecodeError::Corrupt(zlib_err)) => {
                // Report the zlib error: if raw deflate fails too, the body was most likely
                // meant as zlib and the zlib message is the useful one.
                inflate_whole(false, body, limit).map_err(|raw_err| match raw_err {
                    DecodeError::Corrupt(_) => DecodeError::Corrupt(zlib_err),
                    other => other,
                })
            }
            other => other,
        }
    } else {
        inflate_whole(false, body, limit)
    }
}

/// Inflates a whole zlib (`zlib_header`) or raw deflate body. These carry no size, so the first
/// buffer is a guess from the input size. Bytes after the end of the stream are ignored, as the
/// streaming reader used before did.
fn inflate_whole(zlib_header: bool, body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let guess = body.len().saturating_mul(DEFLATE_GUESS_RATIO);
    let mut out = Vec::with_capacity(capped_hint(guess, body.len(), limit));
    with_inflater(zlib_header, |inflater| {
        inflate_into(inflater, body, &mut out, limit)
    })?;
    Ok(out)
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

    /// The streaming decoders the one-shot paths replaced, kept as the reference they must agree
    /// with.
    fn reference_gzip(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        read_limited(flate2::read::MultiGzDecoder::new(body), limit)
    }

    fn reference_deflate(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        if looks_like_zlib(body) {
            match read_limited(flate2::read::ZlibDecoder::new(body), limit) {
                Err(DecodeError::Corrupt(_)) => {
                    read_limited(flate2::read::DeflateDecoder::new(body), limit)
                }
                other => other,
            }
        } else {
            read_limited(flate2::read::DeflateDecoder::new(body), limit)
        }
    }

    /// Same output, or the same kind of error.
    fn same_outcome(
        got: &Result<Vec<u8>, DecodeError>,
        want: &Result<Vec<u8>, DecodeError>,
    ) -> bool {
        match (got, want) {
            (Ok(a), Ok(b)) => a == b,
            (Err(DecodeError::Corrupt(_)), Err(DecodeError::Corrupt(_))) => true,
            (Err(DecodeError::TooLarge { limit: a }), Err(DecodeError::TooLarge { limit: b })) => {
                a == b
            }
            _ => false,
        }
    }

    fn gzip_owned(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        decode_body(ContentEncoding::Gzip, body, limit).map(Cow::into_owned)
    }

    /// A gzip member with a header CRC and every optional field, written by hand because the
    /// encoder here never sets FHCRC.
    fn gzip_with_all_header_fields(data: &[u8]) -> Vec<u8> {
        let mut member = vec![
            0x1f,
            0x8b,
            8,
            GZIP_FHCRC | GZIP_FEXTRA | GZIP_FNAME | GZIP_FCOMMENT,
            0,
            0,
            0,
            0,
            0,
            255,
        ];
        member.extend_from_slice(&3u16.to_le_bytes());
        member.extend_from_slice(b"abc");
        member.extend_from_slice(b"name.json\0");
        member.extend_from_slice(b"a comment\0");
        let mut crc = flate2::Crc::new();
        crc.update(&member);
        member.extend_from_slice(&(crc.sum() as u16).to_le_bytes());
        member.extend(raw_deflate(data));
        let mut crc = flate2::Crc::new();
        crc.update(data);
        member.extend_from_slice(&crc.sum().to_le_bytes());
        member.extend_from_slice(&(data.len() as u32).to_le_bytes());
        member
    }

    #[test]
    fn gzip_header_fields_skipped_and_header_crc_checked() {
        let body = gzip_with_all_header_fields(SAMPLE);
        assert_eq!(gzip_owned(&body, MIB).unwrap(), SAMPLE);
        assert_eq!(reference_gzip(&body, MIB).unwrap(), SAMPLE);
        // A wrong header CRC (it sits just before the deflate data) is corruption.
        let crc_at = 10 + 2 + 3 + 10 + 10;
        let mut bad = body.clone();
        bad[crc_at] ^= 1;
        assert!(matches!(
            gzip_owned(&bad, MIB),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn gzip_reserved_flag_corrupt() {
        let mut body = gzip(SAMPLE);
        body[3] |= 0x20;
        assert!(matches!(
            gzip_owned(&body, MIB),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn gzip_size_hint_too_small_grows() {
        // The trailer at the end belongs to the last, tiny member, so the first buffer is far
        // too small for the 200 KB before it.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut body = gzip(&big);
        body.extend(gzip(b"!"));
        let mut want = big.clone();
        want.push(b'!');
        assert_eq!(gzip_owned(&body, MIB).unwrap(), want);
    }

    #[test]
    fn gzip_size_hint_too_large_still_exact() {
        // Here the last member is the large one, so the hint overstates the first member.
        let big = SAMPLE.repeat(500);
        let mut body = gzip(b"head ");
        body.extend(gzip(&big));
        let mut want = b"head ".to_vec();
        want.extend(&big);
        assert_eq!(gzip_owned(&body, MIB).unwrap(), want);
    }

    #[test]
    fn gzip_wrong_size_in_trailer_corrupt() {
        let mut body = gzip(SAMPLE);
        let at = body.len() - 4;
        body[at..].copy_from_slice(&(SAMPLE.len() as u32 + 1).to_le_bytes());
        assert!(matches!(
            gzip_owned(&body, MIB),
            Err(DecodeError::Corrupt(_))
        ));
        // The same with a size claiming 4 GiB: refused, and never a 4 GiB buffer (the cap
        // below is what keeps it small).
        body[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            gzip_owned(&body, usize::MAX),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn size_hint_capped_by_limit_and_expansion() {
        assert_eq!(capped_hint(5000, 1700, MIB), 5000);
        assert_eq!(capped_hint(5000, 1700, 4096), 4096);
        assert_eq!(
            capped_hint(usize::MAX, 20, usize::MAX),
            20 * MAX_DEFLATE_RATIO
        );
        assert_eq!(capped_hint(usize::MAX, usize::MAX, 10), 10);
        assert_eq!(capped_hint(0, 1700, MIB), 0);
    }

    #[test]
    fn gzip_buffer_never_exceeds_limit() {
        // A hint (the true size) beyond the limit must not size the buffer past the limit.
        let compressed = gzip(&[7u8; 1000]);
        let decoded = decode_body(ContentEncoding::Gzip, &compressed, 1000).unwrap();
        assert!(matches!(&decoded, Cow::Owned(v) if v.capacity() <= 1000));
    }

    #[test]
    fn gzip_every_truncation_corrupt() {
        let body = gzip(&SAMPLE.repeat(20));
        for cut in 0..body.len() {
            let got = gzip_owned(&body[..cut], MIB);
            assert!(
                matches!(got, Err(DecodeError::Corrupt(_))),
                "cut {cut}: {got:?}"
            );
        }
    }

    #[test]
    fn gzip_multi_member_truncations() {
        let first = gzip(b"first ");
        let mut body = first.clone();
        body.extend(gzip(&SAMPLE.repeat(5)));
        for cut in 0..body.len() {
            let got = gzip_owned(&body[..cut], MIB);
            if cut == first.len() {
                // A cut right after a member leaves a complete, shorter body.
                assert_eq!(got.unwrap(), b"first ");
            } else {
                assert!(
                    matches!(got, Err(DecodeError::Corrupt(_))),
                    "cut {cut}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn gzip_trailing_garbage_corrupt() {
        let mut body = gzip(SAMPLE);
        body.extend_from_slice(b"\0\0\0\0");
        assert!(matches!(
            gzip_owned(&body, MIB),
            Err(DecodeError::Corrupt(_))
        ));
        assert!(matches!(
            reference_gzip(&body, MIB),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn gzip_multi_member_limit_counts_all_members() {
        let mut body = gzip(&[1u8; 600]);
        body.extend(gzip(&[2u8; 400]));
        assert_eq!(gzip_owned(&body, 1000).unwrap().len(), 1000);
        let err = gzip_owned(&body, 999).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { limit: 999 }));
    }

    #[test]
    fn gzip_empty_member_and_empty_limit() {
        let body = gzip(b"");
        assert_eq!(gzip_owned(&body, 0).unwrap(), b"");
        let err = gzip_owned(&gzip(b"x"), 0).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { limit: 0 }));
    }

    #[test]
    fn zlib_and_raw_limits_exact() {
        for compress in [zlib, raw_deflate] {
            let body = compress(&[7u8; 1000]);
            let ok = decode_deflate(&body, 1000).unwrap();
            assert_eq!(ok.len(), 1000);
            assert!(ok.capacity() <= 1000);
            let err = decode_deflate(&body, 999).unwrap_err();
            assert!(matches!(err, DecodeError::TooLarge { limit: 999 }));
        }
    }

    #[test]
    fn zlib_and_raw_truncated_as_before() {
        // Every cut must give what the streaming reader gave: mostly corrupt, but a cut raw
        // deflate stream can happen to parse as something else.
        for compress in [zlib, raw_deflate] {
            let body = compress(&SAMPLE.repeat(20));
            for cut in 0..body.len() {
                let got = decode_deflate(&body[..cut], MIB);
                let want = reference_deflate(&body[..cut], MIB);
                assert!(same_outcome(&got, &want), "cut {cut}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn deflate_output_larger_than_first_guess() {
        // Zeros compress far more than four to one, so the first buffer must grow many times.
        let data = vec![0u8; 300_000];
        for compress in [zlib, raw_deflate] {
            assert_eq!(decode_deflate(&compress(&data), MIB).unwrap(), data);
        }
    }

    #[test]
    fn reused_state_clean_after_failures() {
        // The per-thread inflater is left mid-stream by each failure; the next body must not
        // notice.
        let good = gzip(SAMPLE);
        let mut corrupt_body = gzip(&SAMPLE.repeat(20));
        let mid = corrupt_body.len() / 2;
        corrupt_body[mid] ^= 0xff;
        let big = gzip(&[0u8; 100_000]);
        for _ in 0..3 {
            assert!(gzip_owned(&corrupt_body, MIB).is_err());
            assert_eq!(gzip_owned(&good, MIB).unwrap(), SAMPLE);
            assert!(gzip_owned(&big, 1000).is_err());
            assert_eq!(decode_deflate(&zlib(SAMPLE), MIB).unwrap(), SAMPLE);
            assert!(decode_deflate(&zlib(&[0u8; 100_000]), 10).is_err());
            assert_eq!(decode_deflate(&raw_deflate(SAMPLE), MIB).unwrap(), SAMPLE);
        }
    }

    #[test]
    fn a_corrupt_member_after_an_empty_one_is_corrupt() {
        let mut body = gzip(b"");
        let second = body.len();
        body.extend(gzip(b""));
        // The second member's deflate data: a non-final block that runs into the trailer.
        body[second + 10] ^= 1;
        assert!(matches!(
            decode_body(ContentEncoding::Gzip, &body, MIB),
            Err(DecodeError::Corrupt(_))
        ));
        let mut fine = gzip(b"");
        fine.extend(gzip(b"after an empty member"));
        assert_eq!(gzip_owned(&fine, MIB).unwrap(), b"after an empty member");
    }

    /// A gzip member around arbitrary deflate data, its trailer from what libdeflate makes of
    /// the data (an empty output when it makes nothing of it).
    fn gzip_around_raw_deflate(deflate: &[u8]) -> Vec<u8> {
        let mut inflater = libdeflater::Decompressor::new();
        let mut out = vec![0u8; 64 * 1024];
        let n = inflater.deflate_decompress(deflate, &mut out).unwrap_or(0);
        // libdeflate ignores what follows the stream; cut the data where it ends (the shortest
        // prefix it still accepts: any longer one is accepted too), so that the member is
        // exactly the stream and its trailer.
        let mut scratch = vec![0u8; 64 * 1024];
        let (mut lo, mut hi) = (0, deflate.len());
        while n > 0 && lo < hi {
            let mid = (lo + hi) / 2;
            if inflater
                .deflate_decompress(&deflate[..mid], &mut scratch)
                .is_ok()
            {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let deflate = if n > 0 { &deflate[..hi] } else { deflate };
        let mut body = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        body.extend_from_slice(deflate);
        body.extend_from_slice(&libdeflater::crc32(&out[..n]).to_le_bytes());
        body.extend_from_slice(&(n as u32).to_le_bytes());
        body
    }

    #[test]
    fn one_member_takes_the_one_shot_path() {
        // (An empty member is not among them: its CRC and size are both zero, so its size
        // bytes also occur in its CRC and it goes the streaming way, which costs nothing.)
        for data in [&b"x"[..], SAMPLE, &SAMPLE.repeat(300)] {
            let body = gzip(data);
            assert_eq!(inflate_single_member(&body, MIB).as_deref(), Some(data));
            let fields = gzip_with_all_header_fields(data);
            assert_eq!(inflate_single_member(&fields, MIB).as_deref(), Some(data));
        }
    }

    #[test]
    fn reserved_codes_are_the_one_disagreement() {
        // The property test's smallest case: a fixed-Huffman block that uses literal/length
        // code 286. libdeflate reads it as a length of 258, zlib refuses it.
        let deflate = [107, 88, 48, 14, 118, 16, 35, 48, 99, 193, 128, 96, 192];
        let body = gzip_around_raw_deflate(&deflate);
        assert_eq!(
            inflate_single_member(&body, MIB).map(|v| v.len()),
            Some(416)
        );
        assert!(matches!(
            decode_gzip_streaming(&body, MIB),
            Err(DecodeError::Corrupt(_))
        ));
        // Under a limit below its size it is refused by the streaming path as before.
        assert!(matches!(
            gzip_owned(&body, 415),
            Err(DecodeError::Corrupt(_) | DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn one_shot_path_declines_what_it_cannot_prove() {
        let one = gzip(SAMPLE);
        // `cat x.gz x.gz`: the first member alone passes libdeflate's checks, and the final
        // trailer describes it too; only the earlier copy of its size shows the second member.
        let twice = [one.clone(), one.clone()].concat();
        assert_eq!(inflate_single_member(&twice, MIB), None);
        assert_eq!(gzip_owned(&twice, MIB).unwrap(), SAMPLE.repeat(2));
        // Bytes after the member that end in a copy of its trailer: the streaming path refuses
        // them, so the one-shot path must not accept them.
        let trailer = &one[one.len() - 8..];
        let padded = [&one[..], b"junk", trailer].concat();
        assert_eq!(inflate_single_member(&padded, MIB), None);
        assert!(matches!(
            gzip_owned(&padded, MIB),
            Err(DecodeError::Corrupt(_))
        ));
        // A size past the limit, and a size that lies.
        assert_eq!(inflate_single_member(&one, SAMPLE.len() - 1), None);
        let mut lying = one.clone();
        let at = lying.len() - 4;
        lying[at..].copy_from_slice(&(SAMPLE.len() as u32 - 1).to_le_bytes());
        assert_eq!(inflate_single_member(&lying, MIB), None);
        // A header CRC libdeflate would skip unchecked.
        let mut bad_hcrc = gzip_with_all_header_fields(SAMPLE);
        bad_hcrc[10 + 2 + 3 + 10 + 10] ^= 1;
        assert_eq!(inflate_single_member(&bad_hcrc, MIB), None);
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
            fn gzip_and_deflate_agree_with_streaming_reference(
                data in proptest::collection::vec(any::<u8>(), 0..4096),
                members in 1usize..3,
                flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 0..3),
                cut in proptest::option::of(any::<proptest::sample::Index>()),
                limit in proptest::option::of(0usize..8192),
            ) {
                let limit = limit.unwrap_or(MIB);
                let mut gz = Vec::new();
                for _ in 0..members {
                    gz.extend(gzip(&data));
                }
                for body in [gz, zlib(&data), raw_deflate(&data)] {
                    let mut body = body;
                    for (at, x) in &flips {
                        let i = at.index(body.len());
                        body[i] ^= x;
                    }
                    if let Some(cut) = cut {
                        body.truncate(cut.index(body.len() + 1));
                    }
                    let got_gz = gzip_owned(&body, limit);
                    let want_gz = reference_gzip(&body, limit);
                    let got_def = decode_deflate(&body, limit);
                    let want_def = reference_deflate(&body, limit);
                    if limit == MIB || (flips.is_empty() && limit >= data.len() * members) {
                        // Under a limit that admits all the output, outcomes must match
                        // exactly.
                        prop_assert!(same_outcome(&got_gz, &want_gz), "gzip {:?} vs {:?}", got_gz, want_gz);
                        prop_assert!(same_outcome(&got_def, &want_def), "deflate {:?} vs {:?}", got_def, want_def);
                    } else {
                        // Near the limit, which of "too large" and "corrupt" is seen first may
                        // differ with how much output each reads at once; success must not.
                        prop_assert_eq!(got_gz.as_ref().ok(), want_gz.as_ref().ok());
                        prop_assert_eq!(got_def.as_ref().ok(), want_def.as_ref().ok());
                    }
                    for out in [got_gz, got_def].into_iter().flatten() {
                        prop_assert!(out.capacity() <= limit);
                    }
                }
            }

            /// The one-shot path answers only what the streaming path answers, on bodies built
            /// to look like one member: copies of a member, bytes after it that end in its own
            /// trailer, flipped bits, cuts, and limits around the size.
            #[test]
            fn one_shot_path_agrees_with_streaming_path(
                data in proptest::collection::vec(any::<u8>(), 0..3000),
                copies in 1usize..3,
                junk in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
                flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 0..2),
                cut in proptest::option::of(any::<proptest::sample::Index>()),
                slack in -2isize..2,
            ) {
                let one = gzip(&data);
                let mut body = one.repeat(copies);
                if let Some(junk) = junk {
                    body.extend(junk);
                    body.extend_from_slice(&one[one.len() - 8..]);
                }
                for (at, x) in &flips {
                    let i = at.index(body.len());
                    body[i] ^= x;
                }
                if let Some(cut) = cut {
                    body.truncate(cut.index(body.len() + 1));
                }
                let limit = (data.len() as isize + slack).max(0) as usize;
                for limit in [limit, MIB] {
                    let streaming = decode_gzip_streaming(&body, limit);
                    if let Some(fast) = inflate_single_member(&body, limit) {
                        prop_assert_eq!(streaming.as_ref().ok(), Some(&fast));
                    }
                    prop_assert!(same_outcome(&gzip_owned(&body, limit), &streaming));
                }
            }

            /// Where the two inflaters could disagree: any deflate stream libdeflate accepts,
            /// wrapped as a member with the right trailer, must give the streaming path the same
            /// bytes. (Random bytes often start a fixed-Huffman block that decodes for a while.)
            #[test]
            fn inflaters_agree_on_what_libdeflate_accepts(
                deflate in proptest::collection::vec(any::<u8>(), 1..600),
            ) {
                let body = gzip_around_raw_deflate(&deflate);
                if let Some(fast) = inflate_single_member(&body, MIB) {
                    match decode_gzip_streaming(&body, MIB) {
                        Ok(streamed) => prop_assert_eq!(streamed, fast),
                        // The known disagreement: reserved codes (see `inflate_single_member`).
                        Err(e) => prop_assert!(matches!(e, DecodeError::Corrupt(_)), "{}", e),
                    }
                }
            }

            #[test]
            fn header_parser_never_panics(s in ".{0,40}") {
                let _ = ContentEncoding::from_header(Some(&s));
            }
        }
    }
}
