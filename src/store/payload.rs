//! How an event's payload is kept in `events.payload`, and how the read side gets the event JSON
//! back from it.
//!
//! Most events arrive as a gzip-compressed envelope holding the event alone (the Python SDK sends
//! nothing else). Such a body is a third of the size of the event it carries, so it is stored as
//! it came: the row fits in its table page instead of spilling into two overflow pages, no CPU is
//! spent compressing anything, and payloads take a third of the disk. Everything else stores the
//! event JSON. Reading an event back decodes the body again; reads are rare next to writes.

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
}

impl PayloadCodec {
    pub fn code(self) -> i64 {
        match self {
            PayloadCodec::Json => 0,
            PayloadCodec::GzipEnvelope => 1,
        }
    }

    pub fn from_code(code: i64) -> Option<PayloadCodec> {
        match code {
            0 => Some(PayloadCodec::Json),
            1 => Some(PayloadCodec::GzipEnvelope),
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
}

/// The event JSON of a stored payload.
///
/// The stored body passed ingestion's limits when it was accepted, so it is decoded here without
/// them: a limit lowered since must not make stored events unreadable.
pub fn event_json(code: i64, stored: Vec<u8>) -> Result<Vec<u8>, PayloadError> {
    match PayloadCodec::from_code(code) {
        Some(PayloadCodec::Json) => Ok(stored),
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
        for codec in [PayloadCodec::Json, PayloadCodec::GzipEnvelope] {
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
