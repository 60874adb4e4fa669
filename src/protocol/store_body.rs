//! Legacy `/store/` bodies and event ids: turns a plain or base64+zlib JSON event into a JSON
//! object with a normalised `event_id`. Reading the event's other fields is left to the caller.

use std::borrow::Cow;
use std::io;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::decode::{decode_deflate, DecodeError};
use super::envelope::{from_json_object, lenient_string};

/// A `/store/` event ready to hand on: its id (32 lowercase hex) and a JSON object whose
/// `event_id` field holds that id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEvent {
    pub event_id: String,
    pub json: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreBodyError {
    #[error("empty body")]
    Empty,
    // Both say what the body had to be: a body that is base64 but not zlib inside is as likely
    // an unsupported client as a corrupt one.
    #[error("the body is neither JSON nor base64-encoded zlib")]
    Base64(#[source] base64::DecodeError),
    #[error("the body is neither JSON nor base64-encoded zlib")]
    Zlib(#[source] io::Error),
    #[error("decoded body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid JSON in body")]
    InvalidJson(#[source] serde_json::Error),
    #[error("body is not a JSON object")]
    NotAnObject,
}

/// Standard alphabet, as raven clients write it, but indifferent to padding and to stray bits
/// in the last character: a client that trimmed the `=` still meant the same event.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Only the field we may have to change; everything else is validated and skipped without
/// building a tree.
#[derive(Deserialize)]
struct Probe {
    #[serde(default, deserialize_with = "lenient_string")]
    event_id: Option<String>,
}

/// Decodes a legacy `/store/` body.
///
/// A body starting with `{` (after whitespace) is JSON; anything else is taken as base64 of
/// zlib-compressed JSON, which old raven clients send, decompressed under `limit`. Bare `NaN`,
/// `Infinity` and `-Infinity` (Python's `json` writes them) become `null`. The result always has
/// a valid `event_id`: one is generated when it is missing, empty or not an id. The JSON is
/// re-serialised only when something had to change; otherwise the bytes are passed on as sent.
pub fn decode_store_body(body: &[u8], limit: usize) -> Result<StoreEvent, StoreBodyError> {
    let body = body.trim_ascii();
    if body.is_empty() {
        return Err(StoreBodyError::Empty);
    }
    let json: Cow<'_, [u8]> = if body[0] == b'{' {
        if body.len() > limit {
            return Err(StoreBodyError::TooLarge { limit });
        }
        Cow::Borrowed(body)
    } else {
        match decode_legacy(body, limit) {
            Ok(json) => Cow::Owned(json),
            // A JSON array, number or string is not a raven body either (though `12` or `null`
            // happen to be base64); name the real problem.
            Err(StoreBodyError::Base64(_) | StoreBodyError::Zlib(_))
                if serde_json::from_slice::<IgnoredAny>(body).is_ok() =>
            {
                return Err(StoreBodyError::NotAnObject);
            }
            Err(e) => return Err(e),
        }
    };
    finish(json)
}

/// Base64, then zlib; a base64 body that already holds JSON is accepted without the zlib step,
/// since that costs one byte comparison and some clients skipped the compression.
fn decode_legacy(body: &[u8], limit: usize) -> Result<Vec<u8>, StoreBodyError> {
    // MIME-style base64 wraps lines; whitespace carries no data.
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = LENIENT_BASE64
        .decode(&compact)
        .map_err(StoreBodyError::Base64)?;
    if raw.trim_ascii_start().first() == Some(&b'{') {
        if raw.len() > limit {
            return Err(StoreBodyError::TooLarge { limit });
        }
        return Ok(raw);
    }
    decode_deflate(&raw, limit).map_err(|e| match e {
        DecodeError::TooLarge { limit } => StoreBodyError::TooLarge { limit },
        DecodeError::Corrupt(e) => StoreBodyError::Zlib(e),
        // decode_deflate never chooses an encoding, so this arm is not reached; mapping it
        // keeps the request path free of panics all the same.
        other @ DecodeError::UnsupportedEncoding(_) => {
            StoreBodyError::Zlib(io::Error::other(other))
        }
    })
}

fn finish(json: Cow<'_, [u8]>) -> Result<StoreEvent, StoreBodyError> {
    let first_error = match from_json_object::<Probe>(&json) {
        Ok(probe) => return with_event_id(json, probe),
        Err(e) => e,
    };
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(match serde_json::from_slice::<IgnoredAny>(&json) {
            Ok(_) => StoreBodyError::NotAnObject,
            Err(_) => StoreBodyError::InvalidJson(first_error),
        });
    }
    // Only now look for Python's non-finite numbers, so the common path stays a single parse.
    if let Some(rewritten) = replace_non_finite(&json) {
        if let Ok(probe) = from_json_object::<Probe>(&rewritten) {
            return with_event_id(Cow::Owned(rewritten), probe);
        }
    }
    // The first error points at the body as the client sent it, which is what they can fix.
    Err(StoreBodyError::InvalidJson(first_error))
}

fn with_event_id(json: Cow<'_, [u8]>, probe: Probe) -> Result<StoreEvent, StoreBodyError> {
    let sent = probe.event_id.as_deref();
    let normalized = sent.and_then(normalize_event_id);
    if let Some(id) = normalized.as_deref() {
        if sent == Some(id) {
            return Ok(StoreEvent {
                event_id: id.to_owned(),
                json: json.into_owned(),
            });
        }
    }
    // A missing or unusable id is replaced rather than refused: the client generated it only
    // to identify the event, and losing the event over that would be worse.
    let event_id = normalized.unwrap_or_else(generate_event_id);
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(StoreBodyError::InvalidJson)?;
    object.insert("event_id".into(), event_id.clone().into());
    let json = serde_json::to_vec(&object).map_err(StoreBodyError::InvalidJson)?;
    Ok(StoreEvent { event_id, json })
}

fn generate_event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Rewrites `NaN`, `Infinity` and `-Infinity` outside JSON strings to `null`. Returns `None`
/// when there was nothing to rewrite, so the caller keeps the original parse error.
fn replace_non_finite(json: &[u8]) -> Option<Vec<u8>> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out = Vec::with_capacity(json.len());
    let mut changed = false;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if let Some(token) = TOKENS.iter().find(|t| json[i..].starts_with(t)) {
            out.extend_from_slice(b"null");
            i += token.len();
            changed = true;
            continue;
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

/// Normalises an event id to 32 lowercase hex digits. Accepts the simple form and the dashed
/// UUID form in any case; anything else, and the nil id (all zeros, which identifies nothing),
/// gives `None`.
pub fn normalize_event_id(s: &str) -> Option<String> {
    let s = s.trim();
    let hex: String = match s.len() {
        32 => s.to_owned(),
        36 => {
            let dashes_in_place = [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-');
            if !dashes_in_place {
                return None;
            }
            s.chars().filter(|&c| c != '-').collect()
        }
        _ => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if hex.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MIB: usize = 1024 * 1024;
    const ID: &str = "9ec79c33ec9942ab8353589fcb2e04dc";

    fn decode(body: &[u8]) -> StoreEvent {
        match decode_store_body(body, MIB) {
            Ok(event) => event,
            Err(e) => panic!("{:?}: {e:?}", String::from_utf8_lossy(body)),
        }
    }

    fn value(event: &StoreEvent) -> serde_json::Value {
        serde_json::from_slice(&event.json).unwrap()
    }

    fn zlib_base64(json: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(json).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(enc.finish().unwrap())
            .into_bytes()
    }

    #[test]
    fn plain_json_passed_through_unchanged() {
        let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"message\":\"hi\"}";
        let event = decode(body);
        assert_eq!(event.event_id, ID);
        assert_eq!(event.json, body);
    }

    #[test]
    fn surrounding_whitespace_trimmed() {
        let event = decode(b"\r\n {\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}\n");
        assert_eq!(
            event.json,
            b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}"
        );
    }

    #[test]
    fn raven_python_base64_zlib_with_non_finite() {
        // Produced by Python 3: base64.b64encode(zlib.compress(json.dumps(event).encode())),
        // where the event holds nan, inf and -inf and a dashed upper-case id.
        let body = b"eJyrVkotS80ric9MUbJSULJ0dTa3dDY21nV1trTUNTFydNK1MDY11jW1sHRzdjJyNTBxcVbSUVDKTS0uTkxPBWnJyFTwS/QDCaZWlBQlAoWqlSqAJFAQKFYJZHnmpWXmZZZUArlVQK4ujF9bCwAxjyLi";
        let event = decode(body);
        assert_eq!(event.event_id, ID);
        assert_eq!(
            value(&event),
            serde_json::json!({
                "event_id": ID,
                "message": "hi NaN",
                "extra": {"x": null, "y": null, "z": null},
            })
        );
    }

    #[test]
    fn base64_with_line_breaks() {
        // The same body as Python's base64.encodebytes writes it: 76-character lines.
        let body =
            b"eJyrVkotS80ric9MUbJSULJ0dTa3dDY21nV1trTUNTFydNK1MDY11jW1sHRzdjJyNTBxcVbSUVDK\n\
TS0uTkxPBWnJyFTwS/QDCaZWlBQlAoWqlSqAJFAQKFYJZHnmpWXmZZZUArlVQK4ujF9bCwAxjyLi\n";
        assert_eq!(decode(body).event_id, ID);
    }

    #[test]
    fn base64_without_padding() {
        let mut body = zlib_base64(b"{\"message\":\"padding test!\"}");
        while body.last() == Some(&b'=') {
            body.pop();
        }
        assert_eq!(value(&decode(&body))["message"], "padding test!");
    }

    #[test]
    fn base64_of_uncompressed_json() {
        let body = base64::engine::general_purpose::STANDARD.encode(b"{\"message\":\"m\"}");
        assert_eq!(value(&decode(body.as_bytes()))["message"], "m");
    }

    #[test]
    fn non_finite_outside_strings_rewritten() {
        let event = decode(b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"a\":NaN,\"b\":[Infinity,-Infinity]}");
        assert_eq!(
            event.json,
            b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"a\":null,\"b\":[null,null]}"
        );
    }

    #[test]
    fn non_finite_inside_strings_untouched() {
        let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"a\":NaN,\"s\":\"NaN Infinity \\\"-Infinity\\\\\",\"NaN\":1}";
        let event = decode(body);
        assert_eq!(
            event.json,
            b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"a\":null,\"s\":\"NaN Infinity \\\"-Infinity\\\\\",\"NaN\":1}"
        );
    }

    #[test]
    fn non_finite_rewrite_still_invalid() {
        let err = decode_store_body(b"{\"a\":NaN,}", MIB).unwrap_err();
        assert!(matches!(err, StoreBodyError::InvalidJson(_)));
    }

    #[test]
    fn missing_event_id_generated() {
        let event = decode(b"{\"message\":\"hi\"}");
        assert_eq!(event.event_id.len(), 32);
        assert!(normalize_event_id(&event.event_id).as_deref() == Some(event.event_id.as_str()));
        assert_eq!(value(&event)["event_id"], event.event_id.as_str());
        assert_eq!(value(&event)["message"], "hi");
    }

    #[test]
    fn empty_event_id_generated() {
        let event = decode(b"{\"event_id\":\"\"}");
        assert_eq!(event.event_id.len(), 32);
        assert_eq!(value(&event)["event_id"], event.event_id.as_str());
    }

    #[test]
    fn invalid_event_id_replaced() {
        let event = decode(b"{\"event_id\":\"not-an-id\"}");
        assert_ne!(event.event_id, "not-an-id");
        assert_eq!(value(&event)["event_id"], event.event_id.as_str());
    }

    #[test]
    fn non_string_event_id_replaced() {
        let event = decode(b"{\"event_id\":42}");
        assert_eq!(value(&event)["event_id"], event.event_id.as_str());
    }

    #[test]
    fn dashed_uuid_normalised() {
        let event = decode(b"{\"event_id\":\"9EC79C33-EC99-42AB-8353-589FCB2E04DC\"}");
        assert_eq!(event.event_id, ID);
        assert_eq!(
            event.json,
            b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}"
        );
    }

    #[test]
    fn empty_body() {
        assert!(matches!(
            decode_store_body(b"", MIB),
            Err(StoreBodyError::Empty)
        ));
    }

    #[test]
    fn whitespace_body_is_empty() {
        assert!(matches!(
            decode_store_body(b" \r\n\t", MIB),
            Err(StoreBodyError::Empty)
        ));
    }

    #[test]
    fn json_array_not_an_object() {
        assert!(matches!(
            decode_store_body(b"[1,2]", MIB),
            Err(StoreBodyError::NotAnObject)
        ));
    }

    #[test]
    fn json_number_not_an_object() {
        // "12" is valid base64 too, but decodes to no zlib stream; as valid JSON it is
        // reported as what it is.
        assert!(matches!(
            decode_store_body(b"12", MIB),
            Err(StoreBodyError::NotAnObject)
        ));
    }

    #[test]
    fn base64_of_json_array_not_an_object() {
        let body = zlib_base64(b"[{\"a\":1}]");
        assert!(matches!(
            decode_store_body(&body, MIB),
            Err(StoreBodyError::NotAnObject)
        ));
    }

    #[test]
    fn invalid_json_object() {
        assert!(matches!(
            decode_store_body(b"{\"a\":", MIB),
            Err(StoreBodyError::InvalidJson(_))
        ));
    }

    #[test]
    fn trailing_garbage_after_object() {
        assert!(matches!(
            decode_store_body(b"{} {}", MIB),
            Err(StoreBodyError::InvalidJson(_))
        ));
    }

    #[test]
    fn invalid_base64() {
        assert!(matches!(
            decode_store_body(b"not base64 at all!", MIB),
            Err(StoreBodyError::Base64(_))
        ));
    }

    #[test]
    fn base64_of_garbage_is_zlib_error() {
        let body = base64::engine::general_purpose::STANDARD.encode(b"\x78\x9cgarbage");
        assert!(matches!(
            decode_store_body(body.as_bytes(), MIB),
            Err(StoreBodyError::Zlib(_))
        ));
    }

    #[test]
    fn plain_json_over_limit() {
        let err = decode_store_body(b"{\"message\":\"0123456789\"}", 10).unwrap_err();
        assert!(matches!(err, StoreBodyError::TooLarge { limit: 10 }));
    }

    #[test]
    fn compressed_over_limit() {
        let json = format!("{{\"message\":\"{}\"}}", "a".repeat(5000));
        let body = zlib_base64(json.as_bytes());
        assert!(body.len() < 1000);
        let err = decode_store_body(&body, 1000).unwrap_err();
        assert!(matches!(err, StoreBodyError::TooLarge { limit: 1000 }));
    }

    #[test]
    fn duplicate_event_id_field_invalid() {
        assert!(matches!(
            decode_store_body(b"{\"event_id\":\"a\",\"event_id\":\"b\"}", MIB),
            Err(StoreBodyError::InvalidJson(_))
        ));
    }

    #[test]
    fn normalize_simple_lowercase() {
        assert_eq!(normalize_event_id(ID).as_deref(), Some(ID));
    }

    #[test]
    fn normalize_uppercase() {
        assert_eq!(
            normalize_event_id("9EC79C33EC9942AB8353589FCB2E04DC").as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn normalize_dashed() {
        assert_eq!(
            normalize_event_id("9ec79c33-ec99-42ab-8353-589fcb2e04dc").as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn normalize_rejects_misplaced_dashes() {
        assert_eq!(
            normalize_event_id("9ec79c33e-c99-42ab-8353-589fcb2e04dc"),
            None
        );
    }

    #[test]
    fn normalize_rejects_non_hex_and_wrong_length() {
        assert_eq!(normalize_event_id("9ec79c33ec9942ab8353589fcb2e04dg"), None);
        assert_eq!(normalize_event_id("9ec79c33ec9942ab8353589fcb2e04d"), None);
        assert_eq!(normalize_event_id(""), None);
    }

    #[test]
    fn normalize_rejects_nil() {
        assert_eq!(
            normalize_event_id("00000000-0000-0000-0000-000000000000"),
            None
        );
    }

    #[test]
    fn normalize_rejects_multibyte_of_right_length() {
        // 36 bytes whose dash positions fall inside multi-byte characters must not panic.
        assert_eq!(normalize_event_id(&"é".repeat(18)), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode_store_body(&body, 4096);
            }

            #[test]
            fn never_panics_on_json_like_text(body in "[{}\\[\\]\":, a-zA-Z0-9\\\\-]{0,80}") {
                let _ = decode_store_body(body.as_bytes(), 4096);
            }

            #[test]
            fn result_always_carries_its_event_id(message in "\\PC{0,40}") {
                let body = serde_json::json!({"message": message}).to_string();
                let event = decode_store_body(body.as_bytes(), 4096).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&event.json).unwrap();
                prop_assert_eq!(&v["event_id"], event.event_id.as_str());
                prop_assert_eq!(&v["message"], message.as_str());
            }

            #[test]
            fn normalize_never_panics(s in "\\PC{0,40}") {
                if let Some(id) = normalize_event_id(&s) {
                    prop_assert_eq!(id.len(), 32);
                }
            }
        }
    }
}
