//! How an event's payload is kept in `events.payload`, and how the read side gets the event JSON
//! back from it.
//!
//! Most events arrive as a gzip-compressed envelope holding the event alone (the Python SDK sends
//! nothing else). Such a body is a third of the size of the event it carries, so it is stored as
//! it came: the row fits in its table page instead of spilling into two overflow pages, no CPU is
//! spent compressing anything, and payloads take a third of the disk. Everything else (browser
//! SDKs send uncompressed envelopes) stores the event JSON compressed with LZ4, the cheapest
//! compressor that still brings a 4.7 KB event under a page: it costs a few microseconds per
//! event where zstd's and deflate's fastest levels cost three to four times as much (`cargo bench
//! --bench micro -- payload`), and a row without overflow pages saves the writer about as much.
//! Reading an event back decodes the body again; reads are rare next to writes.

use crate::protocol::decode::{decode_body, ContentEncoding};
use crate::protocol::envelope::{self, ItemType, Limits};

/// How `events.payload` is encoded; `events.payload_codec` holds [`PayloadCodec::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadCodec {
    /// The event JSON exactly as sent (after decompression).
    #[default]
    Json,
    /// The request body exactly as received: a gzip-compressed envelope whose one item is the
    /// event.
    GzipEnvelope,
    /// The event JSON as one LZ4 block, after its size as four little-endian bytes.
    Lz4Json,
}

/// The most an LZ4 block can expand: a match of up to 255 bytes per byte of input, and a little
/// framing. A stored size beyond this is damage, and never sizes a buffer.
const LZ4_MAX_RATIO: usize = 255;

/// How an event JSON that did not come as a gzip envelope is stored: as an LZ4 block when that is
/// smaller, else as it is (a tiny or incompressible event).
pub fn compact_json(json: &[u8]) -> (Vec<u8>, PayloadCodec) {
    let compressed = lz4_flex::block::compress_prepend_size(json);
    if compressed.len() < json.len() {
        (compressed, PayloadCodec::Lz4Json)
    } else {
        (json.to_vec(), PayloadCodec::Json)
    }
}

fn lz4_json(stored: &[u8]) -> Result<Vec<u8>, PayloadError> {
    let damaged = || PayloadError::Lz4("size out of range".into());
    let (size, block) = stored.split_first_chunk::<4>().ok_or_else(damaged)?;
    let size = usize::try_from(u32::from_le_bytes(*size)).map_err(|_| damaged())?;
    if size > block.len().saturating_mul(LZ4_MAX_RATIO).saturating_add(16) {
        return Err(damaged());
    }
    let json =
        lz4_flex::block::decompress(block, size).map_err(|e| PayloadError::Lz4(e.to_string()))?;
    if json.len() != size {
        return Err(damaged());
    }
    Ok(json)
}

impl PayloadCodec {
    pub fn code(self) -> i64 {
        match self {
            PayloadCodec::Json => 0,
            PayloadCodec::GzipEnvelope => 1,
            PayloadCodec::Lz4Json => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<PayloadCodec> {
        match code {
            0 => Some(PayloadCodec::Json),
            1 => Some(PayloadCodec::GzipEnvelope),
            2 => Some(PayloadCodec::Lz4Json),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("unknown payload codec {0}")]
    UnknownCodec(i64),
    #[error("stored envelope does not decode: {0}")]
    Envelope(String),
    #[error("stored envelope holds no event item")]
    NoEvent,
    #[error("stored LZ4 payload does not decode: {0}")]
    Lz4(String),
}

/// The event JSON of a stored payload.
///
/// The stored body passed ingestion's limits when it was accepted, so it is decoded here without
/// them: a limit lowered since must not make stored events unreadable.
pub fn event_json(code: i64, stored: Vec<u8>) -> Result<Vec<u8>, PayloadError> {
    match PayloadCodec::from_code(code) {
        Some(PayloadCodec::Json) => Ok(stored),
        Some(PayloadCodec::Lz4Json) => lz4_json(&stored),
        Some(PayloadCodec::GzipEnvelope) => {
            let body = decode_body(ContentEncoding::Gzip, &stored, usize::MAX)
                .map_err(|e| PayloadError::Envelope(e.to_string()))?;
            let unlimited = Limits {
                max_event_item: usize::MAX,
                max_attachment_item: usize::MAX,
                max_other_item: usize::MAX,
            };
            let env = envelope::parse(&body, &unlimited)
                .map_err(|e| PayloadError::Envelope(e.to_string()))?;
            env.items
                .iter()
                .find(|item| item.ty == ItemType::Event)
                .map(|item| item.payload.to_vec())
                .ok_or(PayloadError::NoEvent)
        }
        None => Err(PayloadError::UnknownCodec(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("in-memory write");
        enc.finish().expect("in-memory finish")
    }

    #[test]
    fn codes_round_trip() {
        for codec in [
            PayloadCodec::Json,
            PayloadCodec::GzipEnvelope,
            PayloadCodec::Lz4Json,
        ] {
            assert_eq!(PayloadCodec::from_code(codec.code()), Some(codec));
        }
        assert_eq!(PayloadCodec::from_code(7), None);
    }

    #[test]
    fn json_is_returned_as_stored() {
        let json = br#"{"message":"hi"}"#.to_vec();
        assert_eq!(event_json(0, json.clone()).expect("json"), json);
    }

    #[test]
    fn a_stored_envelope_gives_back_its_event_bytes_exactly() {
        let event = br#"{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc", "message" : "hi"}"#;
        let envelope = [
            &br#"{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}"#[..],
            b"\n",
            format!(r#"{{"type":"event","length":{}}}"#, event.len()).as_bytes(),
            b"\n",
            event,
            b"\n",
        ]
        .concat();
        assert_eq!(event_json(1, gzip(&envelope)).expect("decodes"), event);
    }

    #[test]
    fn compacted_json_gives_back_its_bytes_exactly() {
        let event =
            br#"{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc", "message" : "hi"}"#.repeat(40);
        let (stored, codec) = compact_json(&event);
        assert_eq!(codec, PayloadCodec::Lz4Json);
        assert!(stored.len() < event.len() / 4, "{} bytes", stored.len());
        assert_eq!(event_json(codec.code(), stored).expect("decodes"), event);
        // Nothing to gain: kept as it is.
        let tiny = br#"{"a":1}"#;
        assert_eq!(compact_json(tiny), (tiny.to_vec(), PayloadCodec::Json));
    }

    #[test]
    fn damaged_lz4_payloads_are_errors() {
        let (stored, _) = compact_json(&b"0123456789".repeat(100));
        for bad in [
            Vec::new(),
            stored[..3].to_vec(),
            stored[..stored.len() - 1].to_vec(),
            // A size far past what the block could hold never sizes a buffer.
            [&u32::MAX.to_le_bytes()[..], &stored[4..]].concat(),
            [&999u32.to_le_bytes()[..], &stored[4..]].concat(),
        ] {
            assert!(matches!(event_json(2, bad), Err(PayloadError::Lz4(_))));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_json_round_trips(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            let (stored, codec) = compact_json(&data);
            proptest::prop_assert_eq!(event_json(codec.code(), stored).expect("decodes"), data);
        }
    }

    #[test]
    fn damaged_or_unknown_payloads_are_errors() {
        assert!(matches!(
            event_json(1, b"not gzip".to_vec()),
            Err(PayloadError::Envelope(_))
        ));
        assert!(matches!(
            event_json(1, gzip(b"{}\n{\"type\":\"session\"}\n{}\n")),
            Err(PayloadError::NoEvent)
        ));
        assert!(matches!(
            event_json(9, Vec::new()),
            Err(PayloadError::UnknownCodec(9))
        ));
    }
}
