//! Envelope framing: splits a decoded envelope body into its header and items, borrowing the
//! payloads, and enforces per-item size limits. What each item means (storing events, counting
//! sessions) is left to the ingestion code.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A parsed envelope. Payloads borrow from the body they were parsed from.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub header: EnvelopeHeader,
    pub items: Vec<Item<'a>>,
}

/// The envelope header fields we use. SDKs put more there (`sdk`, `trace`); those are ignored,
/// and a known field of the wrong type reads as absent, because refusing a whole envelope over
/// a header field we only use as a hint would lose the event inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EnvelopeHeader {
    #[serde(default, deserialize_with = "lenient_string")]
    pub event_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub dsn: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub sent_at: Option<String>,
}

/// One item: its header fields and a payload borrowed from the envelope body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<'a> {
    pub ty: ItemType,
    /// The `type` exactly as sent, so unknown types can still be counted by name.
    pub raw_type: String,
    /// The `length` the item header declared, if any.
    pub length: Option<usize>,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub attachment_type: Option<String>,
    pub payload: &'a [u8],
}

/// Item types SDKs send today. Anything else parses as [`ItemType::Unknown`] and is kept, since
/// rejecting an envelope over a type we do not know breaks SDKs newer than the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemType {
    Event,
    Transaction,
    Attachment,
    Session,
    Sessions,
    ClientReport,
    UserReport,
    Feedback,
    CheckIn,
    Profile,
    ProfileChunk,
    ReplayEvent,
    ReplayRecording,
    ReplayVideo,
    Span,
    Log,
    Statsd,
    MetricBuckets,
    Security,
    Nel,
    Unknown,
}

/// Every known type with its wire name; the one table both directions of the mapping use.
const ITEM_TYPES: [(ItemType, &str); 20] = [
    (ItemType::Event, "event"),
    (ItemType::Transaction, "transaction"),
    (ItemType::Attachment, "attachment"),
    (ItemType::Session, "session"),
    (ItemType::Sessions, "sessions"),
    (ItemType::ClientReport, "client_report"),
    (ItemType::UserReport, "user_report"),
    (ItemType::Feedback, "feedback"),
    (ItemType::CheckIn, "check_in"),
    (ItemType::Profile, "profile"),
    (ItemType::ProfileChunk, "profile_chunk"),
    (ItemType::ReplayEvent, "replay_event"),
    (ItemType::ReplayRecording, "replay_recording"),
    (ItemType::ReplayVideo, "replay_video"),
    (ItemType::Span, "span"),
    (ItemType::Log, "log"),
    (ItemType::Statsd, "statsd"),
    (ItemType::MetricBuckets, "metric_buckets"),
    (ItemType::Security, "security"),
    (ItemType::Nel, "nel"),
];

impl ItemType {
    /// Maps a wire name to a type; names are case-sensitive, as SDKs write them in lower case.
    pub fn from_name(name: &str) -> Self {
        ITEM_TYPES
            .iter()
            .find(|(_, n)| *n == name)
            .map_or(Self::Unknown, |(ty, _)| *ty)
    }

    /// The wire name, or `"unknown"` for [`ItemType::Unknown`].
    pub fn as_str(&self) -> &'static str {
        ITEM_TYPES
            .iter()
            .find(|(ty, _)| ty == self)
            .map_or("unknown", |(_, n)| n)
    }
}

impl fmt::Display for ItemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Items per envelope. SDKs send a handful; the cap exists because a parsed item costs far more
/// memory than its smallest encoding (about a dozen bytes), so without it a 200 MiB envelope of
/// empty items would take gigabytes. A constant rather than a [`Limits`] field because no
/// deployment has a reason to tune it.
pub const MAX_ITEMS: usize = 1000;

/// Size limits applied while framing. Sizes are of the decoded payload, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Items parsed as JSON documents we store or read: `event`, `transaction`, `user_report`,
    /// `feedback`, `replay_event`, `security`, `nel`. Default 1 MiB, Sentry's event limit.
    pub max_event_item: usize,
    /// Opaque blobs: `attachment`, `replay_recording`, `replay_video`, `profile`,
    /// `profile_chunk`, and unknown types. Default 100 MiB, Sentry's attachment limit.
    pub max_attachment_item: usize,
    /// Everything else (`session`, `sessions`, `client_report`, `check_in`, `span`, `log`,
    /// `statsd`, `metric_buckets`). Default 1 MiB: these are small records SDKs batch well
    /// below that, and the gateway only counts them, so a larger bound would only admit abuse.
    pub max_other_item: usize,
}

impl Default for Limits {
    fn default() -> Self {
        const MIB: usize = 1024 * 1024;
        Self {
            max_event_item: MIB,
            max_attachment_item: 100 * MIB,
            max_other_item: MIB,
        }
    }
}

impl Limits {
    /// The payload limit for an item of type `ty`.
    pub fn for_type(&self, ty: ItemType) -> usize {
        use ItemType::*;
        match ty {
            Event | Transaction | UserReport | Feedback | ReplayEvent | Security | Nel => {
                self.max_event_item
            }
            // Unknown types sit with the blobs: a future type may well be large, we only count
            // it, and refusing it would lose the events travelling in the same envelope.
            Attachment | ReplayRecording | ReplayVideo | Profile | ProfileChunk | Unknown => {
                self.max_attachment_item
            }
            Session | Sessions | ClientReport | CheckIn | Span | Log | Statsd | MetricBuckets => {
                self.max_other_item
            }
        }
    }
}

/// Why an envelope could not be framed. `index` is the zero-based position of the item.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("empty envelope")]
    Empty,
    #[error("malformed envelope header")]
    MalformedHeader(#[source] serde_json::Error),
    #[error("malformed header of item {index}")]
    MalformedItemHeader {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("payload of item {index} is not followed by a newline")]
    MissingNewline { index: usize },
    #[error("length of item {index} runs past the end of the envelope")]
    LengthOutOfBounds { index: usize },
    #[error("item {index} ({ty}) is larger than {limit} bytes")]
    ItemTooLarge {
        index: usize,
        ty: &'static str,
        limit: usize,
    },
    #[error("envelope has more than {limit} items")]
    TooManyItems { limit: usize },
}

impl Envelope<'_> {
    /// The header's `event_id` as sent (not normalised), if present and non-empty. Use
    /// `store_body::normalize_event_id` to turn it into the stored form.
    pub fn event_id(&self) -> Option<&str> {
        self.header.event_id.as_deref().filter(|id| !id.is_empty())
    }
}

impl Item<'_> {
    /// A header line for this item with an explicit `length`, so the item can be written back
    /// out with [`serialize`] whatever its payload contains.
    pub fn header_json(&self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        header.insert("type".into(), self.raw_type.clone().into());
        header.insert("length".into(), self.payload.len().into());
        let optional = [
            ("filename", &self.filename),
            ("content_type", &self.content_type),
            ("attachment_type", &self.attachment_type),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                header.insert(name.into(), value.clone().into());
            }
        }
        serde_json::Value::Object(header).to_string().into_bytes()
    }
}

#[derive(Deserialize)]
struct RawItemHeader {
    #[serde(rename = "type")]
    ty: String,
    // `null` reads as absent; a negative, fractional or string length is malformed, since the
    // framing of everything after this item depends on it.
    #[serde(default)]
    length: Option<u64>,
    #[serde(default, deserialize_with = "lenient_string")]
    filename: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    content_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    attachment_type: Option<String>,
}

/// A string field that reads as `None` when it holds any other JSON type.
pub(super) fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// Parses `bytes` as a JSON object into `T`.
///
/// A derived `Deserialize` for a struct also accepts a JSON array, filling fields by position;
/// `[]` would then pass as an empty header. Going through `deserialize_map` refuses anything
/// but an object with a proper serde error.
pub(super) fn from_json_object<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
) -> serde_json::Result<T> {
    struct ObjectOnly<T>(T);
    struct ObjectVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(ObjectVisitor(PhantomData))
                .map(ObjectOnly)
        }
    }

    serde_json::from_slice::<ObjectOnly<T>>(bytes).map(|o| o.0)
}

/// Returns the line starting at `start` (without its `\n`) and the position after the `\n`, or
/// the rest of the body and its end when there is no further newline.
fn split_line(body: &[u8], start: usize) -> (&[u8], usize) {
    let rest = &body[start..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(nl) => (&rest[..nl], start + nl + 1),
        None => (rest, body.len()),
    }
}

/// Splits an envelope into its header and items.
///
/// Framing follows the Sentry envelope format: a JSON header line, then for each item a JSON
/// header line and a payload that is either `length` bytes followed by `\n` or the end, or,
/// without `length`, everything up to the next `\n`. Nothing is stripped from payloads, so a
/// `\r` before a newline stays in the payload it belongs to.
pub fn parse<'a>(body: &'a [u8], limits: &Limits) -> Result<Envelope<'a>, EnvelopeError> {
    if body.is_empty() {
        return Err(EnvelopeError::Empty);
    }
    let (header_line, mut pos) = split_line(body, 0);
    // JSON allows surrounding whitespace, so a header line ending in `\r` parses as it is.
    let header: EnvelopeHeader =
        from_json_object(header_line).map_err(EnvelopeError::MalformedHeader)?;

    let mut items = Vec::new();
    while pos < body.len() {
        let (line, after_header) = split_line(body, pos);
        // A blank line cannot be an item header, so skipping it loses nothing. Hand-written
        // envelopes (curl tests, proxies that re-join lines) often carry an extra newline
        // between items or at the end, and refusing those would drop real events.
        if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            pos = after_header;
            continue;
        }
        let index = items.len();
        if index >= MAX_ITEMS {
            return Err(EnvelopeError::TooManyItems { limit: MAX_ITEMS });
        }
        let raw: RawItemHeader = from_json_object(line)
            .map_err(|source| EnvelopeError::MalformedItemHeader { index, source })?;
        let ty = ItemType::from_name(&raw.ty);

        let (payload, length, next) = match raw.length {
            Some(declared) => {
                let out_of_bounds = EnvelopeError::LengthOutOfBounds { index };
                // Checked arithmetic: a length near u64::MAX must be an error, not an overflow
                // or an allocation; the payload is only ever a slice of the body.
                let len = usize::try_from(declared).map_err(|_| out_of_bounds)?;
                let end = after_header
                    .checked_add(len)
                    .filter(|&end| end <= body.len())
                    .ok_or(EnvelopeError::LengthOutOfBounds { index })?;
                let next = match body.get(end) {
                    None => end,
                    Some(b'\n') => end + 1,
                    Some(_) => return Err(EnvelopeError::MissingNewline { index }),
                };
                (&body[after_header..end], Some(len), next)
            }
            None => {
                let (payload, next) = split_line(body, after_header);
                (payload, None, next)
            }
        };

        let limit = limits.for_type(ty);
        if payload.len() > limit {
            return Err(EnvelopeError::ItemTooLarge {
                index,
                ty: ty.as_str(),
                limit,
            });
        }

        items.push(Item {
            ty,
            raw_type: raw.ty,
            length,
            filename: raw.filename,
            content_type: raw.content_type,
            attachment_type: raw.attachment_type,
            payload,
        });
        pos = next;
    }
    Ok(Envelope { header, items })
}

/// Writes an envelope: the header line, then each item's header line and payload, every part
/// followed by `\n`. Item headers are written as given; they need a `length` whenever the
/// payload contains a `\n` (see [`Item::header_json`]).
pub fn serialize(header_json: &[u8], items: &[(&[u8], &[u8])]) -> Vec<u8> {
    let size = header_json.len()
        + 1
        + items
            .iter()
            .map(|(h, p)| h.len() + p.len() + 2)
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(header_json);
    out.push(b'\n');
    for (item_header, payload) in items {
        out.extend_from_slice(item_header);
        out.push(b'\n');
        out.extend_from_slice(payload);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(body: &[u8]) -> Envelope<'_> {
        match parse(body, &Limits::default()) {
            Ok(env) => env,
            Err(e) => panic!("{:?}: {e:?}", String::from_utf8_lossy(body)),
        }
    }

    fn parse_err(body: &[u8]) -> EnvelopeError {
        match parse(body, &Limits::default()) {
            Ok(env) => panic!("{:?} parsed: {env:?}", String::from_utf8_lossy(body)),
            Err(e) => e,
        }
    }

    /// Types and payloads of every item, for compact assertions.
    fn items(body: &[u8]) -> Vec<(String, Vec<u8>)> {
        parse_ok(body)
            .items
            .iter()
            .map(|i| (i.raw_type.clone(), i.payload.to_vec()))
            .collect()
    }

    fn item(ty: &str, payload: &[u8]) -> (String, Vec<u8>) {
        (ty.to_owned(), payload.to_vec())
    }

    #[test]
    fn empty_body() {
        assert!(matches!(parse_err(b""), EnvelopeError::Empty));
    }

    #[test]
    fn header_only_empty_object() {
        let env = parse_ok(b"{}");
        assert_eq!(env.header, EnvelopeHeader::default());
        assert!(env.items.is_empty());
    }

    #[test]
    fn header_only_with_newline() {
        assert!(parse_ok(b"{}\n").items.is_empty());
    }

    #[test]
    fn header_fields() {
        let env = parse_ok(
            b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"dsn\":\"https://k@h/1\",\"sent_at\":\"2024-01-01T00:00:00Z\",\"sdk\":{\"name\":\"x\"}}\n",
        );
        assert_eq!(env.event_id(), Some("9ec79c33ec9942ab8353589fcb2e04dc"));
        assert_eq!(env.header.dsn.as_deref(), Some("https://k@h/1"));
        assert_eq!(env.header.sent_at.as_deref(), Some("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn header_wrong_type_fields_read_as_absent() {
        let env = parse_ok(b"{\"event_id\":12,\"dsn\":null,\"sent_at\":{\"a\":[1]}}\n");
        assert_eq!(env.header, EnvelopeHeader::default());
    }

    #[test]
    fn header_empty_event_id_is_none() {
        assert_eq!(parse_ok(b"{\"event_id\":\"\"}").event_id(), None);
    }

    #[test]
    fn header_with_crlf() {
        let env = parse_ok(b"{}\r\n{\"type\":\"event\",\"length\":2}\r\n{}\n");
        assert_eq!(env.items[0].payload, b"{}");
    }

    #[test]
    fn header_not_json() {
        assert!(matches!(
            parse_err(b"hello\n"),
            EnvelopeError::MalformedHeader(_)
        ));
    }

    #[test]
    fn header_array_rejected() {
        assert!(matches!(
            parse_err(b"[]\n"),
            EnvelopeError::MalformedHeader(_)
        ));
    }

    #[test]
    fn header_empty_line() {
        assert!(matches!(
            parse_err(b"\n{}\n"),
            EnvelopeError::MalformedHeader(_)
        ));
    }

    #[test]
    fn header_trailing_garbage() {
        assert!(matches!(
            parse_err(b"{} x\n"),
            EnvelopeError::MalformedHeader(_)
        ));
    }

    #[test]
    fn item_with_length() {
        let env = parse_ok(b"{}\n{\"type\":\"event\",\"length\":13}\n{\"message\":1}\n");
        assert_eq!(env.items[0].ty, ItemType::Event);
        assert_eq!(env.items[0].length, Some(13));
        assert_eq!(env.items[0].payload, b"{\"message\":1}");
    }

    #[test]
    fn item_without_length() {
        let env = parse_ok(b"{}\n{\"type\":\"event\"}\n{\"message\":1}\n");
        assert_eq!(env.items[0].length, None);
        assert_eq!(env.items[0].payload, b"{\"message\":1}");
    }

    #[test]
    fn item_length_null_reads_as_absent() {
        let env = parse_ok(b"{}\n{\"type\":\"event\",\"length\":null}\nab\n");
        assert_eq!(env.items[0].payload, b"ab");
    }

    #[test]
    fn no_final_newline_with_length() {
        assert_eq!(
            items(b"{}\n{\"type\":\"event\",\"length\":2}\nab"),
            [item("event", b"ab")]
        );
    }

    #[test]
    fn no_final_newline_without_length() {
        assert_eq!(
            items(b"{}\n{\"type\":\"event\"}\nab"),
            [item("event", b"ab")]
        );
    }

    #[test]
    fn length_payload_keeps_newlines_and_cr() {
        assert_eq!(
            items(b"{}\n{\"type\":\"attachment\",\"length\":6}\na\r\nb\nc\n"),
            [item("attachment", b"a\r\nb\nc")]
        );
    }

    #[test]
    fn line_payload_keeps_trailing_cr() {
        assert_eq!(
            items(b"{}\n{\"type\":\"event\"}\n{}\r\n"),
            [item("event", b"{}\r")]
        );
    }

    #[test]
    fn empty_item_length_zero() {
        assert_eq!(
            items(b"{}\n{\"type\":\"attachment\",\"length\":0}\n\n{\"type\":\"event\"}\nx\n"),
            [item("attachment", b""), item("event", b"x")]
        );
    }

    #[test]
    fn empty_item_length_zero_at_end_without_newline() {
        assert_eq!(
            items(b"{}\n{\"type\":\"attachment\",\"length\":0}"),
            [item("attachment", b"")]
        );
    }

    #[test]
    fn empty_item_empty_line() {
        assert_eq!(
            items(b"{}\n{\"type\":\"session\"}\n\n{\"type\":\"event\"}\nx\n"),
            [item("session", b""), item("event", b"x")]
        );
    }

    #[test]
    fn item_header_at_end_without_payload() {
        assert_eq!(items(b"{}\n{\"type\":\"event\"}"), [item("event", b"")]);
    }

    #[test]
    fn unknown_type_kept() {
        let env = parse_ok(b"{}\n{\"type\":\"hologram\",\"length\":1}\nx\n");
        assert_eq!(env.items[0].ty, ItemType::Unknown);
        assert_eq!(env.items[0].raw_type, "hologram");
        assert_eq!(env.items[0].ty.as_str(), "unknown");
    }

    #[test]
    fn type_names_are_case_sensitive() {
        assert_eq!(ItemType::from_name("Event"), ItemType::Unknown);
    }

    #[test]
    fn every_known_type_round_trips_its_name() {
        for (ty, name) in ITEM_TYPES {
            assert_eq!(ItemType::from_name(name), ty);
            assert_eq!(ty.as_str(), name);
        }
    }

    #[test]
    fn several_items_all_returned() {
        let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}\n\
            {\"type\":\"event\",\"length\":2}\n{}\n\
            {\"type\":\"attachment\",\"length\":3,\"filename\":\"a.txt\"}\nabc\n\
            {\"type\":\"client_report\"}\n{\"discarded_events\":[]}\n\
            {\"type\":\"session\"}\n{\"sid\":\"x\"}\n";
        assert_eq!(
            items(body),
            [
                item("event", b"{}"),
                item("attachment", b"abc"),
                item("client_report", b"{\"discarded_events\":[]}"),
                item("session", b"{\"sid\":\"x\"}"),
            ]
        );
    }

    #[test]
    fn blank_lines_between_items_skipped() {
        assert_eq!(
            items(b"{}\n{\"type\":\"event\",\"length\":1}\na\n\n\r\n{\"type\":\"event\"}\nb\n\n\n"),
            [item("event", b"a"), item("event", b"b")]
        );
    }

    #[test]
    fn length_past_end() {
        let err = parse_err(b"{}\n{\"type\":\"event\",\"length\":10}\nabc\n");
        assert!(matches!(err, EnvelopeError::LengthOutOfBounds { index: 0 }));
    }

    #[test]
    fn length_past_end_by_one() {
        let err = parse_err(b"{}\n{\"type\":\"event\",\"length\":4}\nabc");
        assert!(matches!(err, EnvelopeError::LengthOutOfBounds { index: 0 }));
    }

    #[test]
    fn length_without_payload_line() {
        let err = parse_err(b"{}\n{\"type\":\"event\",\"length\":1}");
        assert!(matches!(err, EnvelopeError::LengthOutOfBounds { index: 0 }));
    }

    #[test]
    fn huge_length_is_error_not_panic() {
        let err = parse_err(b"{}\n{\"type\":\"event\",\"length\":18446744073709551615}\nabc\n");
        assert!(matches!(err, EnvelopeError::LengthOutOfBounds { index: 0 }));
    }

    #[test]
    fn length_beyond_u64_malformed() {
        let err = parse_err(b"{}\n{\"type\":\"event\",\"length\":18446744073709551616}\nabc\n");
        assert!(matches!(
            err,
            EnvelopeError::MalformedItemHeader { index: 0, .. }
        ));
    }

    #[test]
    fn length_followed_by_garbage() {
        let err = parse_err(b"{}\n{\"type\":\"event\",\"length\":2}\nabc\n");
        assert!(matches!(err, EnvelopeError::MissingNewline { index: 0 }));
    }

    #[test]
    fn length_followed_by_cr_is_garbage() {
        let err = parse_err(b"{}\n{\"type\":\"event\",\"length\":2}\nab\r\n");
        assert!(matches!(err, EnvelopeError::MissingNewline { index: 0 }));
    }

    #[test]
    fn negative_length_malformed() {
        let err = parse_err(b"{}\n{\"type\":\"event\",\"length\":-1}\nabc\n");
        assert!(matches!(
            err,
            EnvelopeError::MalformedItemHeader { index: 0, .. }
        ));
    }

    #[test]
    fn string_length_malformed() {
        let err = parse_err(b"{}\n{\"type\":\"event\",\"length\":\"3\"}\nabc\n");
        assert!(matches!(
            err,
            EnvelopeError::MalformedItemHeader { index: 0, .. }
        ));
    }

    #[test]
    fn item_header_not_json() {
        let err = parse_err(b"{}\n{\"type\":\"event\"}\n{}\nnot json\n");
        assert!(matches!(
            err,
            EnvelopeError::MalformedItemHeader { index: 1, .. }
        ));
    }

    #[test]
    fn item_header_not_object() {
        let err = parse_err(b"{}\n[\"event\"]\n{}\n");
        assert!(matches!(
            err,
            EnvelopeError::MalformedItemHeader { index: 0, .. }
        ));
    }

    #[test]
    fn item_header_without_type() {
        let err = parse_err(b"{}\n{\"length\":2}\n{}\n");
        assert!(matches!(
            err,
            EnvelopeError::MalformedItemHeader { index: 0, .. }
        ));
    }

    #[test]
    fn item_header_type_not_string() {
        let err = parse_err(b"{}\n{\"type\":7}\n{}\n");
        assert!(matches!(
            err,
            EnvelopeError::MalformedItemHeader { index: 0, .. }
        ));
    }

    #[test]
    fn item_header_wrong_type_optional_fields_ignored() {
        let env =
            parse_ok(b"{}\n{\"type\":\"attachment\",\"filename\":5,\"content_type\":[]}\nx\n");
        assert_eq!(env.items[0].filename, None);
        assert_eq!(env.items[0].content_type, None);
    }

    #[test]
    fn js_sdk_style() {
        // Browser SDK shape: no `length` on JSON items and no final newline.
        let body = b"{\"event_id\":\"d2132d31b39445f1938d7e21b6bf0ec4\",\"sent_at\":\"2024-05-01T10:00:00.000Z\",\"sdk\":{\"name\":\"sentry.javascript.browser\",\"version\":\"8.0.0\"}}\n\
            {\"type\":\"event\"}\n{\"exception\":{\"values\":[{\"type\":\"Error\",\"value\":\"boom\"}]},\"platform\":\"javascript\"}";
        let env = parse_ok(body);
        assert_eq!(env.event_id(), Some("d2132d31b39445f1938d7e21b6bf0ec4"));
        assert_eq!(env.items.len(), 1);
        assert_eq!(env.items[0].ty, ItemType::Event);
        assert!(env.items[0]
            .payload
            .ends_with(b"\"platform\":\"javascript\"}"));
    }

    #[test]
    fn python_sdk_style() {
        // Python SDK shape: `length` on every item and a final newline.
        let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"sent_at\":\"2024-05-01T10:00:00.000000Z\"}\n\
            {\"type\":\"event\",\"content_type\":\"application/json\",\"length\":28}\n{\"level\":\"error\",\"x\":\"a\\nb\"}\n\
            {\"type\":\"attachment\",\"length\":5,\"filename\":\"log.txt\",\"content_type\":\"text/plain\",\"attachment_type\":\"event.attachment\"}\nl1\nl2\n";
        let env = parse_ok(body);
        assert_eq!(env.items.len(), 2);
        assert_eq!(
            env.items[0].payload,
            b"{\"level\":\"error\",\"x\":\"a\\nb\"}"
        );
        assert_eq!(
            env.items[0].content_type.as_deref(),
            Some("application/json")
        );
        assert_eq!(env.items[1].payload, b"l1\nl2");
    }

    #[test]
    fn attachment_headers() {
        let env = parse_ok(
            b"{}\n{\"type\":\"attachment\",\"length\":4,\"filename\":\"dump.dmp\",\"content_type\":\"application/octet-stream\",\"attachment_type\":\"event.minidump\"}\n\x00\x01\n\xff\n",
        );
        let a = &env.items[0];
        assert_eq!(a.ty, ItemType::Attachment);
        assert_eq!(a.filename.as_deref(), Some("dump.dmp"));
        assert_eq!(a.content_type.as_deref(), Some("application/octet-stream"));
        assert_eq!(a.attachment_type.as_deref(), Some("event.minidump"));
        assert_eq!(a.payload, b"\x00\x01\n\xff");
    }

    #[test]
    fn event_over_limit() {
        let limits = Limits {
            max_event_item: 4,
            ..Limits::default()
        };
        let err = parse(
            b"{}\n{\"type\":\"session\"}\nabcde\n{\"type\":\"event\"}\nabcde\n",
            &limits,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::ItemTooLarge {
                index: 1,
                ty: "event",
                limit: 4
            }
        ));
    }

    #[test]
    fn event_at_limit_ok() {
        let limits = Limits {
            max_event_item: 5,
            ..Limits::default()
        };
        assert!(parse(b"{}\n{\"type\":\"event\",\"length\":5}\nabcde\n", &limits).is_ok());
    }

    #[test]
    fn attachment_over_limit_with_length() {
        let limits = Limits {
            max_attachment_item: 2,
            ..Limits::default()
        };
        let err = parse(
            b"{}\n{\"type\":\"attachment\",\"length\":3}\nabc\n",
            &limits,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::ItemTooLarge {
                index: 0,
                ty: "attachment",
                limit: 2
            }
        ));
    }

    #[test]
    fn other_item_over_limit() {
        let limits = Limits {
            max_other_item: 2,
            ..Limits::default()
        };
        let err = parse(b"{}\n{\"type\":\"client_report\"}\nabc\n", &limits).unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::ItemTooLarge {
                index: 0,
                ty: "client_report",
                limit: 2
            }
        ));
    }

    #[test]
    fn unknown_item_uses_attachment_limit() {
        let limits = Limits {
            max_other_item: 1,
            max_event_item: 1,
            ..Limits::default()
        };
        assert!(parse(b"{}\n{\"type\":\"hologram\"}\nabc\n", &limits).is_ok());
    }

    #[test]
    fn too_many_items() {
        let mut body = b"{}\n".to_vec();
        body.extend(b"{\"type\":\"session\"}\n\n".repeat(MAX_ITEMS));
        assert_eq!(parse_ok(&body).items.len(), MAX_ITEMS);
        body.extend(b"{\"type\":\"session\"}\n\n");
        assert!(matches!(
            parse_err(&body),
            EnvelopeError::TooManyItems { limit: MAX_ITEMS }
        ));
    }

    #[test]
    fn serialize_then_parse() {
        let body = serialize(
            b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}",
            &[
                (b"{\"type\":\"event\",\"length\":4}", b"a\nb\r"),
                (b"{\"type\":\"log\"}", b"xyz"),
            ],
        );
        assert_eq!(
            items(&body),
            [item("event", b"a\nb\r"), item("log", b"xyz")]
        );
    }

    #[test]
    fn header_json_reparses_to_same_item() {
        let body = b"{}\n{\"type\":\"attachment\",\"filename\":\"f\",\"attachment_type\":\"event.view_hierarchy\"}\nab\n";
        let env = parse_ok(body);
        let header = env.items[0].header_json();
        let again = serialize(b"{}", &[(&header, env.items[0].payload)]);
        let reparsed = parse_ok(&again);
        assert_eq!(reparsed.items[0].length, Some(2));
        assert_eq!(
            Item {
                length: None,
                ..reparsed.items[0].clone()
            },
            env.items[0]
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn item_type() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(ITEM_TYPES.map(|(_, n)| n).to_vec())
                    .prop_map(String::from),
                "[a-z_]{1,12}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse(&body, &Limits::default());
            }

            #[test]
            fn never_panics_on_mutated_envelopes(
                payload in proptest::collection::vec(any::<u8>(), 0..64),
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            ) {
                let header = format!("{{\"type\":\"attachment\",\"length\":{}}}", payload.len());
                let mut body = serialize(b"{}", &[(header.as_bytes(), &payload), (b"{\"type\":\"event\"}", b"{}")]);
                for (at, byte) in flips {
                    let i = at.index(body.len());
                    body[i] = byte;
                }
                let _ = parse(&body, &Limits::default());
            }

            #[test]
            fn round_trips_payloads_with_length(
                parts in proptest::collection::vec(
                    (item_type(), proptest::collection::vec(any::<u8>(), 0..64)),
                    0..6,
                ),
            ) {
                let headers: Vec<String> = parts
                    .iter()
                    .map(|(ty, p)| format!("{{\"type\":\"{ty}\",\"length\":{}}}", p.len()))
                    .collect();
                let pairs: Vec<(&[u8], &[u8])> = headers
                    .iter()
                    .zip(&parts)
                    .map(|(h, (_, p))| (h.as_bytes(), p.as_slice()))
                    .collect();
                let body = serialize(b"{}", &pairs);
                let env = parse(&body, &Limits::default()).unwrap();
                prop_assert_eq!(env.items.len(), parts.len());
                for (got, (ty, payload)) in env.items.iter().zip(&parts) {
                    prop_assert_eq!(&got.raw_type, ty);
                    prop_assert_eq!(got.payload, payload.as_slice());
                }
                // Dropping the final newline must not change anything.
                if body.len() > 3 {
                    let trimmed = &body[..body.len() - 1];
                    let env2 = parse(trimmed, &Limits::default()).unwrap();
                    prop_assert_eq!(env2.items, env.items);
                }
            }

            #[test]
            fn round_trips_line_payloads_without_length(
                payloads in proptest::collection::vec("[^\n]{1,40}", 0..6),
            ) {
                let pairs: Vec<(&[u8], &[u8])> = payloads
                    .iter()
                    .map(|p| (&b"{\"type\":\"event\"}"[..], p.as_bytes()))
                    .collect();
                let body = serialize(b"{}", &pairs);
                let env = parse(&body, &Limits::default()).unwrap();
                let got: Vec<&[u8]> = env.items.iter().map(|i| i.payload).collect();
                let want: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
