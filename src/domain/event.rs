//! Reads the few fields that grouping and listing need out of a Sentry event payload.
//!
//! Parsing streams over the bytes and borrows where it can: breadcrumbs, contexts, request data and
//! everything else we do not list are skipped without being built, and a field of an unexpected
//! type reads as absent instead of failing the event. Storing the payload and grouping are left to
//! others (`grouping` reads the [`EventSummary`] made here).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::Value;

/// What an event says about itself, as far as grouping and the read API care.
///
/// Every text field is `None` when the SDK sent nothing, an empty string, or a value of the wrong
/// type. Text borrows from the payload when the JSON string had no escapes, which is nearly
/// always; frames alone would otherwise cost a few allocations each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventSummary<'a> {
    pub event_id: Option<Cow<'a, str>>,
    /// Unix seconds.
    pub timestamp: Option<f64>,
    /// One of `debug`, `info`, `warning`, `error`, `fatal` (aliases such as `warn` and Python's
    /// numeric logging levels are mapped; anything else reads as absent).
    pub level: Option<Cow<'a, str>>,
    pub platform: Option<Cow<'a, str>>,
    pub environment: Option<Cow<'a, str>>,
    pub release: Option<Cow<'a, str>>,
    pub transaction: Option<Cow<'a, str>>,
    /// The SDK's own name for where it happened (`culprit`, a deprecated field some JavaScript
    /// and Python SDKs still send), used for the actor only when no transaction or frame names it.
    pub culprit: Option<Cow<'a, str>>,
    /// The formatted message, with the parameters substituted when the SDK sent only a template and
    /// its parameters.
    pub message: Option<Cow<'a, str>>,
    /// The message without its parameters: `message.message` when an object carries one, else the
    /// formatted text.
    pub message_template: Option<Cow<'a, str>>,
    /// Oldest to newest, as sent: the last one is the exception that surfaced.
    pub exceptions: Vec<ExceptionSummary<'a>>,
    /// The top-level stacktrace; when there is none, the stacktrace of the crashed (else the
    /// current, else the only) thread.
    pub stack_frames: Vec<FrameSummary<'a>>,
    /// `Some` whenever the SDK sent an array, even one whose entries were all skipped.
    pub fingerprint: Option<Vec<Cow<'a, str>>>,
    /// Who was affected, for counting users: `id:`, `email:`, `username:` or `ip:` followed by the
    /// first of those the SDK sent. The prefix keeps a user id from matching someone's username.
    pub user_identity: Option<Cow<'a, str>>,
    /// Every way a search may name the user: `id:`, `email:` and `username:` followed by what
    /// the SDK sent for each (the read API's `user:` search term matches any of them).
    pub user_search: Vec<String>,
    /// The SDK's `tags`, an object or an array of `[key, value]` pairs, in the order sent: at
    /// most [`MAX_TAGS`], keys of at most [`MAX_TAG_KEY`] characters and values of at most
    /// [`MAX_TAG_VALUE`] (longer ones are skipped, as Sentry does); numbers and booleans read as
    /// text.
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub logger: Option<Cow<'a, str>>,
}

/// Most SDK tags of one event kept for search; the rest are still in the payload.
pub const MAX_TAGS: usize = 64;
/// Longest tag key kept for search, in characters (Sentry's limit).
pub const MAX_TAG_KEY: usize = 32;
/// Longest tag value kept for search, in characters (Sentry's limit).
pub const MAX_TAG_VALUE: usize = 200;

impl EventSummary<'_> {
    /// A message event is one with no exception; the read API lists those separately.
    pub fn is_message_event(&self) -> bool {
        self.exceptions.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExceptionSummary<'a> {
    pub ty: Option<Cow<'a, str>>,
    pub value: Option<Cow<'a, str>>,
    pub module: Option<Cow<'a, str>>,
    /// Caller to callee: the last frame is where the exception was raised.
    pub frames: Vec<FrameSummary<'a>>,
}

/// A stack frame, as far as grouping and naming go by it, and its line. Source context, the
/// package and the rest stay in the stored payload: nothing here reads them, and every field
/// read makes each frame larger to move about while parsing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameSummary<'a> {
    pub function: Option<Cow<'a, str>>,
    pub module: Option<Cow<'a, str>>,
    pub filename: Option<Cow<'a, str>>,
    pub abs_path: Option<Cow<'a, str>>,
    pub lineno: Option<u64>,
    pub in_app: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event payload is not valid json")]
    Json(#[source] serde_json::Error),
    #[error("event payload is not a json object")]
    NotAnObject,
    #[error("event payload nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Deepest nesting of arrays and objects an event may have. Real SDK events stay far below this
/// (serde_json's own limit is 128); parts we skip while extracting would otherwise be stored
/// unchecked, and every later reader of the payload would trip over them.
pub const MAX_DEPTH: usize = 128;

/// Whether arrays and objects nest deeper than `max` anywhere in the raw bytes.
///
/// Depth only grows at a `[` or `{`, so a payload holding no more than `max` of them in all,
/// strings included, cannot nest deeper than `max`. Counting them is a branch-free pass some
/// twenty times faster than the scan, and settles most events (a 20-frame exception has a few
/// dozen); only payloads with more openers than that pay for both.
fn nesting_exceeds(payload: &[u8], max: usize) -> bool {
    more_openers_than(payload, max) && scan_nesting_exceeds(payload, max)
}

/// Scans the raw bytes once, outside strings, for the deepest nesting. Event JSON is mostly
/// string content, so strings are skipped with `memchr` (a vectorised search for the closing
/// quote or a backslash) instead of byte by byte.
fn scan_nesting_exceeds(payload: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < payload.len() {
        match payload[i] {
            b'"' => {
                // Skip to the end of the string, stepping over escapes.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &payload[i.min(payload.len())..]) {
                        None => return false,
                        Some(off) if payload[i + off] == b'\\' => i += off + 2,
                        Some(off) => {
                            i += off;
                            break;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Whether `payload` holds more than `max` bytes that are `[` or `{`, wherever they are.
fn more_openers_than(payload: &[u8], max: usize) -> bool {
    // Counted in blocks with a byte-wide sum, which the compiler turns into wide vector adds
    // (a `usize` count would leave it only two lanes per register). A block holds at most 128
    // openers, so its sum cannot wrap.
    const BLOCK: usize = 128;
    // `[` and `{` differ only in bit 0x20, and no other byte maps to `{` with that bit set.
    let is_opener = |b: &u8| u8::from(b | 0x20 == b'{');
    let mut blocks = payload.chunks_exact(BLOCK);
    let mut count = 0usize;
    for block in blocks.by_ref() {
        count += usize::from(block.iter().map(is_opener).fold(0u8, u8::wrapping_add));
        // Large payloads go on to the full scan; no need to count all of them first.
        if count > max {
            return true;
        }
    }
    count += blocks
        .remainder()
        .iter()
        .map(|b| usize::from(is_opener(b)))
        .sum::<usize>();
    count > max
}

/// Largest payload whose UTF-8 is checked in one pass before parsing (see `extract`).
const VALIDATE_WHOLE_LIMIT: usize = 64 * 1024;

/// Reads an event payload (one JSON object) into its summary.
pub fn extract(payload: &[u8]) -> Result<EventSummary<'_>, EventError> {
    if nesting_exceeds(payload, MAX_DEPTH) {
        return Err(EventError::TooDeep);
    }
    // Reading from bytes, serde_json checks each string it hands over for UTF-8 on its own, and on
    // short strings (keys, frame fields) the calls cost more than the checking. One pass over a
    // small payload is cheaper, and lets it read from `&str` without checking again. Large
    // payloads are mostly local variables and breadcrumbs that are skipped unchecked, so there
    // the pass would cost more than it saves. Bytes that are not UTF-8 take the byte path as
    // before, so what is accepted and refused does not change.
    let text = (payload.len() <= VALIDATE_WHOLE_LIMIT)
        .then(|| std::str::from_utf8(payload).ok())
        .flatten();
    let parsed = match text {
        Some(text) => serde_json::from_str::<Obj<RawEvent<'_>>>(text),
        None => serde_json::from_slice::<Obj<RawEvent<'_>>>(payload),
    };
    match parsed {
        Ok(event) => event
            .0
            .map(RawEvent::into_summary)
            .ok_or(EventError::NotAnObject),
        // Every field we read accepts any JSON type, so the only data error left is a key that
        // appears twice in one object, which derived structs refuse. Sentry keeps the last value
        // in that case; building a `Value` does the same, and this path is rare enough that its
        // cost does not matter.
        Err(err) if err.classify() == Category::Data => {
            let value: Value = serde_json::from_slice(payload).map_err(EventError::Json)?;
            // Read by value, so the text is moved out of the `Value` (which is dropped here)
            // rather than borrowed from it.
            let event = Obj::<RawEvent<'_>>::deserialize(value).map_err(EventError::Json)?;
            event
                .0
                .map(RawEvent::into_summary)
                .ok_or(EventError::NotAnObject)
        }
        Err(err) => Err(EventError::Json(err)),
    }
}

// ---------------------------------------------------------------------------------------------
// Lenient field types.
//
// Each one accepts any JSON value: the shapes it understands become data, everything else is
// consumed and read as absent. That is what keeps one odd field (`"level": 5`) from costing us the
// whole event, without buffering fields into a `Value` to try them twice.
// ---------------------------------------------------------------------------------------------

/// Builds a field from whichever JSON type arrived. Each default reads the value as absent.
trait Lenient<'de>: Sized + Default {
    fn from_text(_text: Cow<'de, str>) -> Self {
        Self::default()
    }
    fn from_u64(_number: u64) -> Self {
        Self::default()
    }
    fn from_i64(_number: i64) -> Self {
        Self::default()
    }
    fn from_f64(_number: f64) -> Self {
        Self::default()
    }
    fn from_bool(_flag: bool) -> Self {
        Self::default()
    }
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
}

struct LenientVisitor<T>(PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<T, E> {
        Ok(T::from_bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        Ok(T::from_i64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok(T::from_u64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<T, E> {
        Ok(T::from_f64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<T, E> {
        Ok(T::from_text(Cow::Borrowed(v)))
    }
    // Strings with escapes cannot be borrowed from the input; serde_json hands them over here.
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::from_text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<T, E> {
        Ok(T::from_text(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::from_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

fn lenient<'de, D: Deserializer<'de>, T: Lenient<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(LenientVisitor(PhantomData))
}

/// Implements `Deserialize` through `Lenient` (a blanket impl would break the orphan rule).
macro_rules! deserialize_leniently {
    ($($ty:ty),* $(,)?) => {$(
        impl<'de: 'a, 'a> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                lenient(d)
            }
        }
    )*};
}

/// A string; anything else is absent.
#[derive(Default)]
struct Str<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Lenient<'de> for Str<'a> {
    fn from_text(text: Cow<'de, str>) -> Self {
        Str(Some(text))
    }
}

/// A string, or a number written as text: SDKs send user ids, releases, exception values and
/// fingerprint entries as numbers often enough that refusing them would lose real data.
#[derive(Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Lenient<'de> for Text<'a> {
    fn from_text(text: Cow<'de, str>) -> Self {
        Text(Some(text))
    }
    fn from_u64(number: u64) -> Self {
        Text(Some(Cow::Owned(number.to_string())))
    }
    fn from_i64(number: i64) -> Self {
        Text(Some(Cow::Owned(number.to_string())))
    }
    fn from_f64(number: f64) -> Self {
        Text(Some(Cow::Owned(number.to_string())))
    }
}

/// The event level, mapped onto Sentry's five names.
#[derive(Default)]
struct Level(Option<&'static str>);

impl<'de> Lenient<'de> for Level {
    fn from_text(text: Cow<'de, str>) -> Self {
        let text = text.trim();
        let known = ["debug", "info", "warning", "error", "fatal"];
        let level = known
            .into_iter()
            .find(|name| text.eq_ignore_ascii_case(name))
            .or_else(|| match text.to_ascii_lowercase().as_str() {
                "warn" => Some("warning"),
                "critical" => Some("fatal"),
                "log" => Some("info"),
                _ => None,
            });
        Level(level)
    }
    // Old Python clients send the logging module's numeric levels.
    fn from_u64(number: u64) -> Self {
        Level(match number {
            10 => Some("debug"),
            20 => Some("info"),
            30 => Some("warning"),
            40 => Some("error"),
            50 => Some("fatal"),
            _ => None,
        })
    }
}

/// A line number: a non-negative integer, or a float with nothing after the point.
#[derive(Default)]
struct Uint(Option<u64>);

impl<'de> Lenient<'de> for Uint {
    fn from_u64(number: u64) -> Self {
        Uint(Some(number))
    }
    fn from_i64(number: i64) -> Self {
        Uint(u64::try_from(number).ok())
    }
    fn from_f64(number: f64) -> Self {
        // `u64::MAX as f64` rounds up to 2^64, so the comparison must be strict.
        let whole = number.is_finite() && number >= 0.0 && number.fract() == 0.0;
        Uint((whole && number < u64::MAX as f64).then_some(number as u64))
    }
}

#[derive(Default)]
struct Flag(Option<bool>);

impl<'de> Lenient<'de> for Flag {
    fn from_bool(flag: bool) -> Self {
        Flag(Some(flag))
    }
}

/// Unix seconds, from a number or an RFC 3339 string (or a number written as a string).
#[derive(Default)]
struct Timestamp(Option<f64>);

impl<'de> Lenient<'de> for Timestamp {
    fn from_text(text: Cow<'de, str>) -> Self {
        let text = text.trim();
        let seconds = match text.parse::<f64>() {
            Ok(seconds) => Some(seconds),
            Err(_) => parse_rfc3339(text),
        };
        Timestamp(seconds.filter(|s| s.is_finite()))
    }
    fn from_u64(number: u64) -> Self {
        Timestamp(Some(number as f64))
    }
    fn from_i64(number: i64) -> Self {
        Timestamp(Some(number as f64))
    }
    fn from_f64(number: f64) -> Self {
        Timestamp(Some(number).filter(|s| s.is_finite()))
    }
}

/// An object of the given shape; anything else is absent.
struct Obj<T>(Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Deserialize<'de>> Lenient<'de> for Obj<T> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d)
    }
}

/// An array of objects, each read as `T`; entries that are not objects are skipped, and anything
/// but an array is empty.
struct Objects<T>(Vec<T>);

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Objects(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Lenient<'de> for Objects<T> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        // Entries are dropped as they are read rather than filtered out afterwards: a frame is a
        // large value, and every pass over the list would move each one again.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<Obj<T>>()? {
            items.extend(item.0);
        }
        Ok(Objects(items))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Objects<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d)
    }
}

/// Sentry's "values" container: `{"values": [...]}` or, from older SDKs, a bare array.
struct Values<T>(Vec<T>);

impl<T> Default for Values<T> {
    fn default() -> Self {
        Values(Vec::new())
    }
}

#[derive(Deserialize)]
#[serde(default, bound = "T: Deserialize<'de>")]
struct ValuesObject<T> {
    values: Objects<T>,
}

impl<T> Default for ValuesObject<T> {
    fn default() -> Self {
        ValuesObject {
            values: Objects::default(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Lenient<'de> for Values<T> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let object = ValuesObject::<T>::deserialize(MapAccessDeserializer::new(map))?;
        Ok(Values(object.values.0))
    }
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        Objects::<T>::from_seq(seq).map(|items| Values(items.0))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Values<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d)
    }
}

/// The `fingerprint` array: strings, and numbers written as text; other entries are skipped.
#[derive(Default)]
struct Fingerprint<'a>(Option<Vec<Cow<'a, str>>>);

impl<'de: 'a, 'a> Lenient<'de> for Fingerprint<'a> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element::<Text<'a>>()? {
            entries.extend(entry.0);
        }
        Ok(Fingerprint(Some(entries)))
    }
}

/// `tags`: `{"key": "value", ...}` or `[["key", "value"], ...]`; entries that are not text (or
/// a number or boolean) or that are over the limits are skipped.
#[derive(Default)]
struct Tags<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Tags<'a> {
    fn push(&mut self, key: Option<Cow<'a, str>>, value: Option<Cow<'a, str>>) {
        let (Some(key), Some(value)) = (text(key), text(value)) else {
            return;
        };
        if self.0.len() < MAX_TAGS
            && key.chars().count() <= MAX_TAG_KEY
            && value.chars().count() <= MAX_TAG_VALUE
        {
            self.0.push((key, value));
        }
    }
}

/// One `[key, value]` pair of the array form; anything else reads as empty.
#[derive(Default)]
struct TagPair<'a>(Option<Cow<'a, str>>, Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Lenient<'de> for TagPair<'a> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let key = seq.next_element::<TagValue<'a>>()?.and_then(|k| k.0);
        let value = seq.next_element::<TagValue<'a>>()?.and_then(|v| v.0);
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TagPair(key, value))
    }
}

/// A tag value: text, a number or a boolean, as text.
#[derive(Default)]
struct TagValue<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Lenient<'de> for TagValue<'a> {
    fn from_text(text: Cow<'de, str>) -> Self {
        TagValue(Some(text))
    }
    fn from_u64(number: u64) -> Self {
        TagValue(Some(Cow::Owned(number.to_string())))
    }
    fn from_i64(number: i64) -> Self {
        TagValue(Some(Cow::Owned(number.to_string())))
    }
    fn from_f64(number: f64) -> Self {
        TagValue(Some(Cow::Owned(number.to_string())))
    }
    fn from_bool(flag: bool) -> Self {
        TagValue(Some(Cow::Borrowed(if flag { "true" } else { "false" })))
    }
}

impl<'de: 'a, 'a> Lenient<'de> for Tags<'a> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut tags = Tags::default();
        while let Some((key, value)) = map.next_entry::<Str<'a>, TagValue<'a>>()? {
            tags.push(key.0, value.0);
        }
        Ok(tags)
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut tags = Tags::default();
        while let Some(pair) = seq.next_element::<TagPair<'a>>()? {
            tags.push(pair.0, pair.1);
        }
        Ok(tags)
    }
}

/// `message` / `logentry`: a plain string, or an object with `formatted`, `message` and `params`.
#[derive(Default)]
struct MessageField<'a>(Option<RawMessage<'a>>);

impl<'de: 'a, 'a> Lenient<'de> for MessageField<'a> {
    fn from_text(text: Cow<'de, str>) -> Self {
        MessageField(Some(RawMessage {
            formatted: Text(Some(text)),
            ..RawMessage::default()
        }))
    }
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        RawMessage::deserialize(MapAccessDeserializer::new(map)).map(|m| MessageField(Some(m)))
    }
}

/// `exception`: `{"values": [...]}`, a bare array, or (oldest SDKs) a single exception object.
#[derive(Default)]
struct ExceptionField<'a>(Vec<RawException<'a>>);

impl<'de: 'a, 'a> Lenient<'de> for ExceptionField<'a> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        // One struct reads both object shapes: `values` tells a container from a single exception.
        let mut object = RawException::deserialize(MapAccessDeserializer::new(map))?;
        Ok(ExceptionField(match object.values.take() {
            Some(values) => values.0,
            None => vec![object],
        }))
    }
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        Objects::<RawException<'a>>::from_seq(seq).map(|items| ExceptionField(items.0))
    }
}

deserialize_leniently!(
    Str<'a>,
    Text<'a>,
    Tags<'a>,
    TagPair<'a>,
    TagValue<'a>,
    Fingerprint<'a>,
    MessageField<'a>,
    ExceptionField<'a>,
);

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d)
    }
}

impl<'de> Deserialize<'de> for Uint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d)
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d)
    }
}

// ---------------------------------------------------------------------------------------------
// The wire shapes. Unknown keys are skipped by serde without being built.
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEvent<'a> {
    #[serde(borrow)]
    event_id: Str<'a>,
    timestamp: Timestamp,
    level: Level,
    #[serde(borrow)]
    platform: Str<'a>,
    #[serde(borrow)]
    environment: Str<'a>,
    #[serde(borrow)]
    release: Text<'a>,
    #[serde(borrow)]
    transaction: Str<'a>,
    #[serde(borrow)]
    culprit: Str<'a>,
    #[serde(borrow)]
    logger: Str<'a>,
    #[serde(borrow)]
    message: MessageField<'a>,
    #[serde(borrow)]
    logentry: MessageField<'a>,
    #[serde(borrow, rename = "sentry.interfaces.Message")]
    legacy_message: MessageField<'a>,
    #[serde(borrow)]
    exception: ExceptionField<'a>,
    #[serde(borrow, rename = "sentry.interfaces.Exception")]
    legacy_exception: ExceptionField<'a>,
    #[serde(borrow)]
    stacktrace: Obj<RawStacktrace<'a>>,
    #[serde(borrow, rename = "sentry.interfaces.Stacktrace")]
    legacy_stacktrace: Obj<RawStacktrace<'a>>,
    #[serde(borrow)]
    threads: Values<RawThread<'a>>,
    #[serde(borrow)]
    fingerprint: Fingerprint<'a>,
    #[serde(borrow)]
    user: Obj<RawUser<'a>>,
    #[serde(borrow, rename = "sentry.interfaces.User")]
    legacy_user: Obj<RawUser<'a>>,
    #[serde(borrow)]
    tags: Tags<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMessage<'a> {
    #[serde(borrow)]
    formatted: Text<'a>,
    #[serde(borrow)]
    message: Text<'a>,
    /// Parameters are few and small, and may be any JSON value that has to be written back as
    /// text, so this one field is read as a `Value`.
    params: Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawException<'a> {
    /// Only meaningful on the top-level `exception` object, where it marks the container shape.
    #[serde(borrow)]
    values: Option<Objects<RawException<'a>>>,
    #[serde(borrow, rename = "type")]
    ty: Str<'a>,
    #[serde(borrow)]
    value: Text<'a>,
    #[serde(borrow)]
    module: Str<'a>,
    #[serde(borrow)]
    stacktrace: Obj<RawStacktrace<'a>>,
    mechanism: Obj<RawMechanism>,
}

/// Only `synthetic` matters: it marks an exception an SDK made up to carry a stack trace.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMechanism {
    synthetic: Flag,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawStacktrace<'a> {
    #[serde(borrow)]
    frames: Objects<RawFrame<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawFrame<'a> {
    #[serde(borrow)]
    function: Str<'a>,
    #[serde(borrow)]
    module: Str<'a>,
    #[serde(borrow)]
    filename: Str<'a>,
    #[serde(borrow)]
    abs_path: Str<'a>,
    lineno: Uint,
    in_app: Flag,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawThread<'a> {
    crashed: Flag,
    current: Flag,
    #[serde(borrow)]
    stacktrace: Obj<RawStacktrace<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawUser<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    email: Str<'a>,
    #[serde(borrow)]
    username: Str<'a>,
    #[serde(borrow)]
    ip_address: Str<'a>,
}

// ---------------------------------------------------------------------------------------------
// From wire shapes to the summary.
// ---------------------------------------------------------------------------------------------

/// Reads blank text as absent.
fn text(field: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    field.filter(|s| !s.trim().is_empty())
}

impl<'a> RawEvent<'a> {
    fn into_summary(self) -> EventSummary<'a> {
        // `logentry` is the current name; `message` as an object is what older SDKs send and as a
        // string what many send today, so the more specific interfaces are asked first.
        let (message, message_template) = [self.logentry, self.legacy_message, self.message]
            .into_iter()
            .find_map(|field| field.0.and_then(RawMessage::resolve))
            .unzip();

        let (mut exceptions, mut all_synthetic) = summarize_exceptions(self.exception);
        if exceptions.is_empty() {
            (exceptions, all_synthetic) = summarize_exceptions(self.legacy_exception);
        }

        let mut stack_frames = [self.stacktrace, self.legacy_stacktrace]
            .into_iter()
            .filter_map(|stack| stack.0)
            .map(RawStacktrace::into_frames)
            .find(|frames| !frames.is_empty())
            .unwrap_or_else(|| thread_frames(self.threads.0));

        // SDKs that attach stack traces to messages (Node's does by default) wrap the message in
        // an exception marked `mechanism.synthetic`, with no type. That is still a message event:
        // it groups by its message and its frames stand for its stack.
        if all_synthetic && message.is_some() && !exceptions.is_empty() {
            if stack_frames.is_empty() {
                stack_frames = exceptions.pop().map(|e| e.frames).unwrap_or_default();
            }
            exceptions.clear();
        }

        let user = self.user.0.or(self.legacy_user.0);
        let user_search = user.as_ref().map(RawUser::search).unwrap_or_default();

        EventSummary {
            event_id: text(self.event_id.0),
            timestamp: self.timestamp.0,
            level: self.level.0.map(Cow::Borrowed),
            platform: text(self.platform.0),
            environment: text(self.environment.0),
            release: text(self.release.0),
            transaction: text(self.transaction.0),
            culprit: text(self.culprit.0),
            message,
            message_template,
            exceptions,
            stack_frames,
            fingerprint: self.fingerprint.0,
            user_identity: user.and_then(RawUser::identity),
            user_search,
            tags: self.tags.0,
            logger: text(self.logger.0),
        }
    }
}

impl<'a> RawMessage<'a> {
    /// Returns the formatted message and its template, or `None` when neither text is present.
    fn resolve(self) -> Option<(Cow<'a, str>, Cow<'a, str>)> {
        let template = text(self.message.0);
        let formatted = text(self.formatted.0).or_else(|| {
            Some(Cow::Owned(substitute_params(
                template.as_deref()?,
                &self.params,
            )))
        })?;
        let template = template.unwrap_or_else(|| formatted.clone());
        Some((formatted, template))
    }
}

/// The exceptions worth keeping, and whether every one of them is synthetic.
fn summarize_exceptions(field: ExceptionField<'_>) -> (Vec<ExceptionSummary<'_>>, bool) {
    let mut all_synthetic = true;
    let kept = field
        .0
        .into_iter()
        .map(|raw| {
            let synthetic = raw.mechanism.0.and_then(|m| m.synthetic.0).unwrap_or(false);
            let summary = ExceptionSummary {
                ty: text(raw.ty.0),
                value: text(raw.value.0),
                module: text(raw.module.0),
                frames: raw
                    .stacktrace
                    .0
                    .map(RawStacktrace::into_frames)
                    .unwrap_or_default(),
            };
            (summary, synthetic)
        })
        // An exception with nothing in it (`{}`) says nothing to group or show, and keeping it
        // would turn a message event into an error.
        .filter(|(e, _)| {
            e.ty.is_some() || e.value.is_some() || e.module.is_some() || !e.frames.is_empty()
        })
        .map(|(e, synthetic)| {
            all_synthetic &= synthetic;
            e
        })
        .collect();
    (kept, all_synthetic)
}

impl<'a> RawStacktrace<'a> {
    fn into_frames(self) -> Vec<FrameSummary<'a>> {
        self.frames
            .0
            .into_iter()
            .map(|raw| FrameSummary {
                function: text(raw.function.0),
                module: text(raw.module.0),
                filename: text(raw.filename.0),
                abs_path: text(raw.abs_path.0),
                lineno: raw.lineno.0,
                in_app: raw.in_app.0,
            })
            .collect()
    }
}

/// Frames of the thread that best stands for the event: SDKs that attach a stack to a message
/// (Python's `attach_stacktrace`, Java) put it on a thread rather than at the top level.
fn thread_frames(threads: Vec<RawThread<'_>>) -> Vec<FrameSummary<'_>> {
    let mut stacks: Vec<(bool, bool, Vec<FrameSummary<'_>>)> = threads
        .into_iter()
        .filter_map(|thread| {
            let frames = thread.stacktrace.0?.into_frames();
            let crashed = thread.crashed.0 == Some(true);
            let current = thread.current.0 == Some(true);
            (!frames.is_empty()).then_some((crashed, current, frames))
        })
        .collect();
    let chosen = stacks
        .iter()
        .position(|(crashed, _, _)| *crashed)
        .or_else(|| stacks.iter().position(|(_, current, _)| *current))
        .or_else(|| (stacks.len() == 1).then_some(0));
    match chosen {
        Some(index) => stacks.swap_remove(index).2,
        None => Vec::new(),
    }
}

impl RawUser<'_> {
    fn search(&self) -> Vec<String> {
        [
            ("id", &self.id.0),
            ("email", &self.email.0),
            ("username", &self.username.0),
        ]
        .into_iter()
        .filter_map(|(kind, value)| {
            let value = value.as_deref().filter(|v| !v.trim().is_empty())?;
            Some(format!("{kind}:{value}"))
        })
        .collect()
    }

    fn identity(self) -> Option<Cow<'static, str>> {
        // `{{auto}}` asks the server to fill in the client's address, which it cannot know from
        // the payload alone; it names no one.
        let ip = text(self.ip_address.0).filter(|ip| ip.trim() != "{{auto}}");
        let candidates = [
            ("id", text(self.id.0)),
            ("email", text(self.email.0)),
            ("username", text(self.username.0)),
            ("ip", ip),
        ];
        candidates
            .into_iter()
            .find_map(|(kind, value)| Some(Cow::Owned(format!("{kind}:{}", value?))))
    }
}

// ---------------------------------------------------------------------------------------------
// printf-style parameters and RFC 3339 timestamps.
// ---------------------------------------------------------------------------------------------

/// Fills Python-style placeholders (`%s`, `%d`, `%(name)s`, `%%`) from `params`.
///
/// SDKs that send a template with parameters come from Python's `logging`, so that is the syntax
/// understood. A placeholder is replaced by its parameter's text as is: width and precision are
/// not applied, since the result is only shown and grouped, never parsed. A placeholder without a
/// parameter stays as written.
fn substitute_params(template: &str, params: &Value) -> String {
    let positional: &[Value] = match params {
        Value::Array(items) => items,
        _ => &[],
    };
    let named = params.as_object();
    // Python's logging leaves the template alone when there are no arguments, `%%` included.
    if positional.is_empty() && named.is_none_or(|map| map.is_empty()) {
        return template.to_owned();
    }
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    let mut next_positional = positional.iter();
    while let Some(percent) = rest.find('%') {
        out.push_str(&rest[..percent]);
        let after = &rest[percent + 1..];
        let Some((placeholder, len)) = parse_placeholder(after) else {
            out.push('%');
            rest = after;
            continue;
        };
        let param = match placeholder {
            Placeholder::Percent => {
                out.push('%');
                rest = &after[len..];
                continue;
            }
            Placeholder::Positional => next_positional.next(),
            Placeholder::Named(name) => named.and_then(|map| map.get(name)),
        };
        match param {
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => out.push_str(&rest[percent..percent + 1 + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

enum Placeholder<'s> {
    Percent,
    Positional,
    Named(&'s str),
}

/// Reads a placeholder from the text just after a `%`; returns it and its length in bytes.
fn parse_placeholder(after: &str) -> Option<(Placeholder<'_>, usize)> {
    let bytes = after.as_bytes();
    if bytes.first() == Some(&b'%') {
        return Some((Placeholder::Percent, 1));
    }
    let mut i = 0;
    let mut name = None;
    if bytes.first() == Some(&b'(') {
        let close = after.find(')')?;
        name = Some(&after[1..close]);
        i = close + 1;
    }
    while i < bytes.len() && b"-+ #0123456789.".contains(&bytes[i]) {
        i += 1;
    }
    let conversion = *bytes.get(i)?;
    if !b"diouxXeEfFgGcrsa".contains(&conversion) {
        return None;
    }
    let placeholder = match name {
        Some(name) => Placeholder::Named(name),
        None => Placeholder::Positional,
    };
    Some((placeholder, i + 1))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]` into unix seconds. A missing offset means UTC,
/// as Sentry reads it; `t`, `z` and a space in place of `T` are accepted.
fn parse_rfc3339(s: &str) -> Option<f64> {
    let mut cur = Cursor {
        bytes: s.as_bytes(),
        pos: 0,
    };
    let year = cur.number(4)?;
    cur.expect(b'-')?;
    let month = cur.number(2)?;
    cur.expect(b'-')?;
    let day = cur.number(2)?;
    if !matches!(cur.next()?, b'T' | b't' | b' ') {
        return None;
    }
    let hour = cur.number(2)?;
    cur.expect(b':')?;
    let minute = cur.number(2)?;
    cur.expect(b':')?;
    let second = cur.number(2)?;
    let mut fraction = 0.0;
    if cur.peek() == Some(b'.') {
        cur.pos += 1;
        let mut scale = 0.1;
        let start = cur.pos;
        while let Some(digit @ b'0'..=b'9') = cur.peek() {
            // Digits past nanoseconds cannot change an f64 of this size.
            if cur.pos - start < 9 {
                fraction += f64::from(digit - b'0') * scale;
                scale /= 10.0;
            }
            cur.pos += 1;
        }
        if cur.pos == start {
            return None;
        }
    }
    let offset_seconds = match cur.next() {
        None => 0,
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let hours = cur.number(2)?;
            if cur.peek() == Some(b':') {
                cur.pos += 1;
            }
            let minutes = cur.number(2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        Some(_) => return None,
    };
    // Trailing text means this was not a timestamp.
    if cur.peek().is_some() {
        return None;
    }
    let valid_day = (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
    // 60 is a leap second.
    if !valid_day || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let seconds = days_since_epoch(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_seconds;
    Some(seconds as f64 + fraction)
}

struct Cursor<'s> {
    bytes: &'s [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }
    fn expect(&mut self, wanted: u8) -> Option<()> {
        (self.next()? == wanted).then_some(())
    }
    /// Exactly `digits` ASCII digits.
    fn number(&mut self, digits: usize) -> Option<i64> {
        let mut value = 0i64;
        for _ in 0..digits {
            let byte = self.next()?;
            if !byte.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(byte - b'0');
        }
        Some(value)
    }
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar.
fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    // Counting from March makes the leap day the last day of the year, so the month lengths
    // before any date follow a fixed pattern (153 days every five months).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let leap_days = y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400);
    let days_before_month = (153 * m + 2) / 5;
    // 719_468 is the count of days from 0000-03-01 to 1970-01-01 by the same reckoning.
    y * 365 + leap_days + days_before_month + day - 1 - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Option<Cow<'static, str>> {
        Some(Cow::Owned(text.to_owned()))
    }

    fn frame(function: &str, module: &str, lineno: u64, in_app: bool) -> FrameSummary<'static> {
        FrameSummary {
            function: s(function),
            module: s(module),
            lineno: Some(lineno),
            in_app: Some(in_app),
            ..FrameSummary::default()
        }
    }

    #[test]
    fn tags_as_an_object_or_as_pairs_within_the_limits() {
        let tags = |payload: &[u8]| -> Vec<(String, String)> {
            extract(payload)
                .expect("parses")
                .tags
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            tags(br#"{"tags": {"browser": "Chrome 120", "retries": 3, "beta": true, "x": null, "": "v"}}"#),
            vec![pair("browser", "Chrome 120"), pair("retries", "3"), pair("beta", "true")]
        );
        assert_eq!(
            tags(br#"{"tags": [["os", "Linux"], ["bad"], "junk", ["server_name", "web-1", "extra"]]}"#),
            vec![pair("os", "Linux"), pair("server_name", "web-1")]
        );
        let long_key = "k".repeat(MAX_TAG_KEY + 1);
        let long_value = "v".repeat(MAX_TAG_VALUE + 1);
        let payload =
            format!(r#"{{"tags": {{"{long_key}": "v", "k": "{long_value}", "ok": "yes"}}}}"#);
        assert_eq!(tags(payload.as_bytes()), vec![pair("ok", "yes")]);
        let many: Vec<String> = (0..MAX_TAGS + 5)
            .map(|i| format!(r#""t{i}": "v""#))
            .collect();
        let payload = format!(r#"{{"tags": {{{}}}}}"#, many.join(","));
        assert_eq!(tags(payload.as_bytes()).len(), MAX_TAGS);
        assert!(tags(br#"{"tags": "not tags"}"#).is_empty());
    }

    fn check(payload: &[u8], expected: EventSummary<'_>) {
        let actual = extract(payload).expect("payload should parse");
        assert_eq!(actual, expected);
    }

    fn check_message(payload: &[u8], message: &str, template: &str) {
        let actual = extract(payload).expect("payload should parse");
        assert_eq!(actual.message.as_deref(), Some(message), "message");
        assert_eq!(
            actual.message_template.as_deref(),
            Some(template),
            "template"
        );
    }

    fn check_timestamp(payload: &[u8], expected: Option<f64>) {
        let actual = extract(payload).expect("payload should parse");
        assert_eq!(actual.timestamp, expected);
    }

    #[test]
    fn python_sdk_exception_event() {
        check(
            br#"{
                "event_id": "9ec79c33ec9942ab8353589fcb2e04dc",
                "timestamp": "2011-05-02T17:41:36Z",
                "level": "error",
                "platform": "python",
                "environment": "production",
                "release": "shop@1.2.3",
                "transaction": "/orders/{id}",
                "logger": "shop.orders",
                "server_name": "web-1",
                "breadcrumbs": {"values": [{"message": "ignored", "data": {"a": [1, 2, {}]}}]},
                "contexts": {"runtime": {"name": "CPython", "version": "3.12.1"}},
                "user": {"id": 42, "email": "ann@example.com"},
                "exception": {"values": [
                    {"type": "KeyError", "value": "'sku'", "module": null,
                     "mechanism": {"type": "generic", "handled": true},
                     "stacktrace": {"frames": [
                        {"function": "get", "module": "shop.catalog", "filename": "shop/catalog.py",
                         "abs_path": "/srv/shop/catalog.py", "lineno": 10, "in_app": true,
                         "context_line": "    return self.items[key]", "vars": {"key": "'sku'"}}
                     ]}},
                    {"type": "ValueError", "value": "order 17 has no items", "module": "builtins",
                     "stacktrace": {"frames": [
                        {"function": "dispatch", "module": "django.core.handlers", "lineno": 5,
                         "in_app": false},
                        {"function": "place_order", "module": "shop.orders", "lineno": 88,
                         "in_app": true}
                     ]}}
                ]}
            }"#,
            EventSummary {
                event_id: s("9ec79c33ec9942ab8353589fcb2e04dc"),
                timestamp: Some(1_304_358_096.0),
                level: s("error"),
                platform: s("python"),
                environment: s("production"),
                release: s("shop@1.2.3"),
                transaction: s("/orders/{id}"),
                logger: s("shop.orders"),
                user_identity: s("id:42"),
                user_search: vec!["id:42".into(), "email:ann@example.com".into()],
                exceptions: vec![
                    ExceptionSummary {
                        ty: s("KeyError"),
                        value: s("'sku'"),
                        module: None,
                        frames: vec![FrameSummary {
                            filename: s("shop/catalog.py"),
                            abs_path: s("/srv/shop/catalog.py"),
                            ..frame("get", "shop.catalog", 10, true)
                        }],
                    },
                    ExceptionSummary {
                        ty: s("ValueError"),
                        value: s("order 17 has no items"),
                        module: s("builtins"),
                        frames: vec![
                            frame("dispatch", "django.core.handlers", 5, false),
                            frame("place_order", "shop.orders", 88, true),
                        ],
                    },
                ],
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn javascript_sdk_exception_event() {
        check(
            br#"{
                "event_id": "b5b1c1d0e6a54d0f8d1f2a9c3e4d5f60",
                "timestamp": 1712345678.123,
                "platform": "javascript",
                "level": "error",
                "request": {"url": "https://shop.example/cart", "headers": {"User-Agent": "x"}},
                "user": {"ip_address": "{{auto}}", "username": "ann"},
                "exception": {"values": [{
                    "type": "TypeError",
                    "value": "Cannot read properties of undefined (reading 'id')",
                    "mechanism": {"type": "onerror", "handled": false},
                    "stacktrace": {"frames": [
                        {"filename": "https://shop.example/static/main.3f2a1b9c.js",
                         "function": "onClick", "lineno": 1, "colno": 4821, "in_app": true}
                    ]}
                }]}
            }"#,
            EventSummary {
                event_id: s("b5b1c1d0e6a54d0f8d1f2a9c3e4d5f60"),
                timestamp: Some(1_712_345_678.123),
                platform: s("javascript"),
                level: s("error"),
                user_identity: s("username:ann"),
                user_search: vec!["username:ann".into()],
                exceptions: vec![ExceptionSummary {
                    ty: s("TypeError"),
                    value: s("Cannot read properties of undefined (reading 'id')"),
                    module: None,
                    frames: vec![FrameSummary {
                        function: s("onClick"),
                        filename: s("https://shop.example/static/main.3f2a1b9c.js"),
                        lineno: Some(1),
                        in_app: Some(true),
                        ..FrameSummary::default()
                    }],
                }],
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn message_as_string() {
        check(
            br#"{"message": "Order 123 failed", "level": "warning"}"#,
            EventSummary {
                message: s("Order 123 failed"),
                message_template: s("Order 123 failed"),
                level: s("warning"),
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn message_object_with_formatted_text() {
        check_message(
            br#"{"message": {"formatted": "Order 123 failed", "message": "Order %s failed", "params": [123]}}"#,
            "Order 123 failed",
            "Order %s failed",
        );
    }

    #[test]
    fn message_object_with_only_template_and_params_is_formatted() {
        check_message(
            br#"{"message": {"message": "%s of %d items (%.1f%%) from %r", "params": ["3", 10, 30.0, {"a": 1}]}}"#,
            r#"3 of 10 items (30.0%) from {"a":1}"#,
            "%s of %d items (%.1f%%) from %r",
        );
    }

    #[test]
    fn message_object_with_named_params() {
        check_message(
            br#"{"logentry": {"message": "user %(user)s missing %(what)s", "params": {"user": 7}}}"#,
            "user 7 missing %(what)s",
            "user %(user)s missing %(what)s",
        );
    }

    #[test]
    fn message_template_without_params_is_left_alone() {
        check_message(
            br#"{"logentry": {"message": "100%% sure, 50% done"}}"#,
            "100%% sure, 50% done",
            "100%% sure, 50% done",
        );
    }

    #[test]
    fn logentry_wins_over_message_string() {
        check_message(
            br#"{"message": "legacy", "logentry": {"formatted": "Disk 91% full", "message": "Disk %s%% full"}}"#,
            "Disk 91% full",
            "Disk %s%% full",
        );
    }

    #[test]
    fn legacy_message_interface() {
        check_message(
            br#"{"sentry.interfaces.Message": {"message": "hello %s", "params": ["world"]}}"#,
            "hello world",
            "hello %s",
        );
    }

    #[test]
    fn blank_message_is_absent() {
        check(
            br#"{"message": "  ", "logentry": {"formatted": ""}}"#,
            EventSummary::default(),
        );
    }

    #[test]
    fn bare_exception_array() {
        check(
            br#"{"exception": [{"type": "ZeroDivisionError", "value": "division by zero"}]}"#,
            EventSummary {
                exceptions: vec![ExceptionSummary {
                    ty: s("ZeroDivisionError"),
                    value: s("division by zero"),
                    ..ExceptionSummary::default()
                }],
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn single_exception_object() {
        check(
            br#"{"exception": {"type": "RuntimeError", "value": 404}}"#,
            EventSummary {
                exceptions: vec![ExceptionSummary {
                    ty: s("RuntimeError"),
                    value: s("404"),
                    ..ExceptionSummary::default()
                }],
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn legacy_exception_interface() {
        check(
            br#"{"sentry.interfaces.Exception": {"values": [{"type": "IOError"}]}}"#,
            EventSummary {
                exceptions: vec![ExceptionSummary {
                    ty: s("IOError"),
                    ..ExceptionSummary::default()
                }],
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn empty_exception_entries_are_dropped() {
        let summary = extract(br#"{"exception": {"values": [{}, null, 3, {"mechanism": {}}]}}"#)
            .expect("payload should parse");
        assert!(summary.is_message_event());
    }

    #[test]
    fn exception_event_is_not_a_message_event() {
        let summary = extract(br#"{"exception": {"values": [{"type": "E"}]}, "message": "m"}"#)
            .expect("payload should parse");
        assert!(!summary.is_message_event());
    }

    #[test]
    fn top_level_stacktrace() {
        check(
            br#"{"message": "m", "stacktrace": {"frames": [{"function": "main", "module": "app", "lineno": 3, "in_app": true}]}}"#,
            EventSummary {
                message: s("m"),
                message_template: s("m"),
                stack_frames: vec![frame("main", "app", 3, true)],
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn crashed_thread_stands_in_for_missing_stacktrace() {
        check(
            br#"{"threads": {"values": [
                {"id": 1, "current": true, "stacktrace": {"frames": [{"function": "idle", "module": "pool", "lineno": 1, "in_app": false}]}},
                {"id": 2, "crashed": true, "stacktrace": {"frames": [{"function": "work", "module": "app", "lineno": 2, "in_app": true}]}}
            ]}}"#,
            EventSummary {
                stack_frames: vec![frame("work", "app", 2, true)],
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn timestamp_as_float_seconds() {
        check_timestamp(br#"{"timestamp": 1304358096.5}"#, Some(1_304_358_096.5));
    }

    #[test]
    fn timestamp_as_integer_seconds() {
        check_timestamp(br#"{"timestamp": 1304358096}"#, Some(1_304_358_096.0));
    }

    #[test]
    fn timestamp_as_rfc3339_with_fraction_and_offset() {
        check_timestamp(
            br#"{"timestamp": "2024-02-29T23:59:59.25+02:00"}"#,
            Some(1_709_243_999.25),
        );
    }

    #[test]
    fn timestamp_without_offset_is_utc() {
        check_timestamp(
            br#"{"timestamp": "2011-05-02T17:41:36"}"#,
            Some(1_304_358_096.0),
        );
    }

    #[test]
    fn timestamp_before_epoch() {
        check_timestamp(br#"{"timestamp": "1969-12-31T23:00:00Z"}"#, Some(-3600.0));
    }

    #[test]
    fn timestamp_as_numeric_string() {
        check_timestamp(br#"{"timestamp": "1304358096.5"}"#, Some(1_304_358_096.5));
    }

    #[test]
    fn timestamp_with_impossible_date_is_absent() {
        check_timestamp(br#"{"timestamp": "2023-02-29T00:00:00Z"}"#, None);
    }

    #[test]
    fn timestamp_that_is_not_a_time_is_absent() {
        check_timestamp(br#"{"timestamp": "yesterday"}"#, None);
    }

    #[test]
    fn wrong_typed_fields_read_as_absent() {
        check(
            br#"{
                "event_id": 12, "level": 5, "platform": ["python"], "environment": {},
                "transaction": true, "fingerprint": "x", "timestamp": {"a": 1},
                "message": 7, "exception": "boom", "stacktrace": [], "threads": 1, "user": "ann",
                "logentry": [1, 2]
            }"#,
            EventSummary::default(),
        );
    }

    #[test]
    fn wrong_typed_frame_fields_keep_the_frame() {
        check(
            br#"{"exception": {"values": [{"type": "E", "stacktrace": {"frames": [
                {"function": 1, "module": "m", "lineno": "12", "in_app": "yes"},
                {"function": "f", "lineno": 7.0},
                {"function": "g", "lineno": -1},
                "not a frame"
            ]}}]}}"#,
            EventSummary {
                exceptions: vec![ExceptionSummary {
                    ty: s("E"),
                    frames: vec![
                        FrameSummary {
                            module: s("m"),
                            ..FrameSummary::default()
                        },
                        FrameSummary {
                            function: s("f"),
                            lineno: Some(7),
                            ..FrameSummary::default()
                        },
                        FrameSummary {
                            function: s("g"),
                            ..FrameSummary::default()
                        },
                    ],
                    ..ExceptionSummary::default()
                }],
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn fingerprint_stringifies_numbers_and_skips_others() {
        check(
            br#"{"fingerprint": ["{{ default }}", 42, -1, 1.5, true, null, {"a": 1}, "x"]}"#,
            EventSummary {
                fingerprint: Some(vec![
                    "{{ default }}".into(),
                    "42".into(),
                    "-1".into(),
                    "1.5".into(),
                    "x".into(),
                ]),
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn level_aliases_are_mapped() {
        let level = |payload: &'static [u8]| extract(payload).expect("payload should parse").level;
        assert_eq!(level(br#"{"level": "WARN"}"#), s("warning"));
        assert_eq!(level(br#"{"level": "critical"}"#), s("fatal"));
        assert_eq!(level(br#"{"level": 40}"#), s("error"));
        assert_eq!(level(br#"{"level": "loud"}"#), None);
    }

    #[test]
    fn user_identity_prefers_id_then_email_then_username_then_ip() {
        let identity = |payload: &'static [u8]| {
            extract(payload)
                .expect("payload should parse")
                .user_identity
        };
        assert_eq!(
            identity(br#"{"user": {"id": "u1", "email": "a@b.c"}}"#),
            s("id:u1")
        );
        assert_eq!(
            identity(br#"{"user": {"email": "a@b.c", "username": "ann"}}"#),
            s("email:a@b.c")
        );
        assert_eq!(
            identity(br#"{"user": {"ip_address": "10.0.0.1"}}"#),
            s("ip:10.0.0.1")
        );
        assert_eq!(identity(br#"{"user": {"ip_address": "{{auto}}"}}"#), None);
        assert_eq!(
            identity(br#"{"sentry.interfaces.User": {"id": 9}}"#),
            s("id:9")
        );
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        check_message(
            br#"{"message": "tab\there \u00e9 \"quoted\""}"#,
            "tab\there \u{e9} \"quoted\"",
            "tab\there \u{e9} \"quoted\"",
        );
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        check(
            br#"{"level": "info", "frames": 1, "level": "error"}"#,
            EventSummary {
                level: s("error"),
                ..EventSummary::default()
            },
        );
    }

    #[test]
    fn invalid_utf8_is_refused_only_where_a_field_is_read() {
        // Skipped parts are stored as sent, so bytes that are not UTF-8 there do not matter.
        let skipped = extract(b"{\"extra\": \"caf\xe9\", \"level\": \"error\"}")
            .expect("payload should parse");
        assert_eq!(skipped.level, s("error"));
        assert!(matches!(
            extract(b"{\"message\": \"caf\xe9\"}"),
            Err(EventError::Json(_))
        ));
    }

    #[test]
    fn not_an_object_is_refused() {
        for payload in [&b"[1, 2]"[..], b"\"event\"", b"42", b"null"] {
            assert!(
                matches!(extract(payload), Err(EventError::NotAnObject)),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn invalid_json_is_refused() {
        for payload in [&b""[..], b"{", b"{\"level\": }", b"{} {}", b"[1,"] {
            assert!(
                matches!(extract(payload), Err(EventError::Json(_))),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Keys of the event protocol, so that generated objects reach the interesting shapes
        /// instead of being skipped as unknown.
        const KEYS: &[&str] = &[
            "event_id",
            "timestamp",
            "level",
            "message",
            "logentry",
            "formatted",
            "params",
            "exception",
            "values",
            "type",
            "value",
            "module",
            "stacktrace",
            "frames",
            "function",
            "filename",
            "lineno",
            "in_app",
            "threads",
            "crashed",
            "fingerprint",
            "user",
            "id",
            "ip_address",
            "sentry.interfaces.Exception",
            "other",
        ];

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                "[ -~%é]{0,12}".prop_map(Value::from),
                Just(Value::from("2024-01-01T00:00:00Z")),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(
                        |entries| {
                            Value::Object(
                                entries
                                    .into_iter()
                                    .map(|(k, v)| (k.to_owned(), v))
                                    .collect(),
                            )
                        }
                    ),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn counting_openers_never_changes_the_nesting_verdict(
                bytes in prop::collection::vec(
                    prop::sample::select(&b"[]{}\"\\ a"[..]),
                    0..400,
                ),
                max in 0usize..12,
            ) {
                let naive = bytes.iter().filter(|b| matches!(b, b'[' | b'{')).count();
                prop_assert_eq!(more_openers_than(&bytes, max), naive > max);
                prop_assert_eq!(
                    nesting_exceeds(&bytes, max),
                    scan_nesting_exceeds(&bytes, max)
                );
            }

            #[test]
            fn extract_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = extract(&bytes);
            }

            #[test]
            fn extract_accepts_every_json_object(value in json_value()) {
                let bytes = serde_json::to_vec(&value).expect("values serialize");
                let result = extract(&bytes);
                if value.is_object() {
                    prop_assert!(result.is_ok(), "{:?}", result.err());
                } else {
                    prop_assert!(matches!(result, Err(EventError::NotAnObject)));
                }
            }
        }
    }

    #[test]
    fn nesting_limit_is_exact_whichever_check_decides() {
        // `depth` levels counting the event object, and `quoted` more openers inside a string.
        let nested = |depth: usize, quoted: usize| {
            format!(
                "{{\"extra\":{}{},\"message\":\"{}\"}}",
                "[".repeat(depth - 1),
                "]".repeat(depth - 1),
                "{".repeat(quoted)
            )
        };
        // Decided by the count of openers alone.
        assert!(extract(nested(MAX_DEPTH, 0).as_bytes()).is_ok());
        assert!(matches!(
            extract(nested(MAX_DEPTH + 1, 0).as_bytes()),
            Err(EventError::TooDeep)
        ));
        // Openers inside a string push the count over the limit, so the scan decides.
        assert!(extract(nested(MAX_DEPTH, 300).as_bytes()).is_ok());
        assert!(matches!(
            extract(nested(MAX_DEPTH + 1, 300).as_bytes()),
            Err(EventError::TooDeep)
        ));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{{\"extra\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(extract(deep.as_bytes()), Err(EventError::TooDeep)));
        // Brackets inside strings do not count.
        let quoted = format!("{{\"message\":\"{}\"}}", "[".repeat(500));
        assert!(extract(quoted.as_bytes()).is_ok());
        let escaped = format!("{{\"message\":\"\\\"{}\"}}", "{".repeat(500));
        assert!(extract(escaped.as_bytes()).is_ok());
    }

    #[test]
    fn synthetic_exception_around_a_message_is_a_message_event() {
        let e = extract(
            br#"{"message":"cache miss 42","exception":{"values":[{"value":"cache miss 42",
            "mechanism":{"type":"generic","handled":true,"synthetic":true},
            "stacktrace":{"frames":[{"function":"run","filename":"app.js","in_app":true}]}}]}}"#,
        )
        .expect("event parses");
        assert!(e.is_message_event());
        assert!(e.exceptions.is_empty());
        assert_eq!(
            e.stack_frames.len(),
            1,
            "the frames are kept as the event's stack"
        );
        // A real exception next to a message stays an error.
        let e = extract(br#"{"message":"m","exception":{"values":[{"type":"E","value":"v"}]}}"#)
            .expect("event parses");
        assert!(!e.is_message_event());
    }
}
