//! Decides which error an event belongs to, in Sentry's order: the SDK's fingerprint, the in-app
//! frames, the exception, the message, and a catch-all. Also names the error (name, description,
//! actor) the way GitLab shows it. Pure code over an [`EventSummary`]; storing errors is left to
//! the store, which scopes them by project (so the project is not part of the fingerprint).

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use super::event::{EventSummary, FrameSummary};

/// The largest fingerprint: 2^53 - 1, the largest integer a double holds exactly.
pub const MAX_FINGERPRINT: i64 = (1 << 53) - 1;

/// How an event is grouped and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// Positive 53-bit id of the group: the low 53 bits of the first 8 bytes (big-endian) of a
    /// SHA-256 over the grouping components. 53 bits because JSON readers that hold numbers as
    /// doubles (JavaScript, jq, GitLab's and Grafana's pages) round larger integers, and a
    /// rounded fingerprint no longer finds its error. The low bits of the older 63-bit value, so
    /// that migration 9 can move stored errors with a mask (`store::sqlite`).
    pub fingerprint: i64,
    /// The surfaced exception's type, else the message's first line; at most 255 characters.
    pub name: String,
    /// The surfaced exception's value, else the message; at most 1024 characters.
    pub description: String,
    /// Where it happened: the transaction, else `function(module)` of the raising frame; at most
    /// 255 characters.
    pub actor: String,
    pub basis: GroupingBasis,
}

/// Which rule decided the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupingBasis {
    /// The SDK's `fingerprint`, with at least one entry of its own besides `{{ default }}`.
    Fingerprint,
    /// The in-app frames of the exceptions (or, with neither exception nor message, of the stack).
    InAppFrames,
    /// Exception types with all their frames, or with their values where there are no frames.
    Exception,
    /// The message without its parameters.
    Message,
    /// Nothing to go by: every such event lands in one group.
    Fallback,
}

const NAME_LIMIT: usize = 255;
const DESCRIPTION_LIMIT: usize = 1024;
const ACTOR_LIMIT: usize = 255;

/// Groups an event and names its group.
pub fn group(event: &EventSummary) -> Grouping {
    let mut components = Components::default();
    let basis = match event.fingerprint.as_deref() {
        Some(entries) if !entries.is_empty() => {
            let mut own_entry = false;
            let mut default_basis = None;
            for entry in entries {
                if is_default_marker(entry) {
                    default_basis = Some(default_components(event, &mut components));
                } else {
                    components.literal(entry);
                    own_entry = true;
                }
            }
            match default_basis {
                // `["{{ default }}"]` alone is the default grouping, and says so.
                Some(basis) if !own_entry => basis,
                _ => GroupingBasis::Fingerprint,
            }
        }
        _ => default_components(event, &mut components),
    };
    Grouping {
        fingerprint: components.finish(),
        name: name(event),
        description: description(event),
        actor: actor(event),
        basis,
    }
}

/// `{{ default }}`, with any spacing inside the braces.
fn is_default_marker(entry: &str) -> bool {
    entry
        .trim()
        .strip_prefix("{{")
        .and_then(|rest| rest.strip_suffix("}}"))
        .is_some_and(|inner| inner.trim().eq_ignore_ascii_case("default"))
}

fn is_in_app(frame: &FrameSummary) -> bool {
    frame.in_app == Some(true)
}

/// Feeds Sentry's default rules (everything but the SDK fingerprint) into `out`.
fn default_components(event: &EventSummary, out: &mut Components) -> GroupingBasis {
    let exceptions = &event.exceptions;
    if !exceptions.is_empty() {
        let any_in_app = exceptions.iter().any(|e| e.frames.iter().any(is_in_app));
        if any_in_app {
            // The value is left out on purpose: it usually carries ids ("user 42 not found"),
            // and the raising site already tells one error from another.
            for exception in exceptions {
                out.exception_type(exception.ty.as_deref());
                for frame in exception.frames.iter().filter(|f| is_in_app(f)) {
                    out.frame(frame);
                }
            }
            return GroupingBasis::InAppFrames;
        }
        for exception in exceptions {
            out.exception_type(exception.ty.as_deref());
            if exception.frames.is_empty() {
                // With no stack to tell sites apart, the value is all there is; its ids are
                // masked so that they do not split one error into many.
                let value = exception.value.as_deref().unwrap_or_default();
                out.value(&normalize_message(value));
            } else {
                for frame in &exception.frames {
                    out.frame(frame);
                }
            }
        }
        return GroupingBasis::Exception;
    }
    // The template is normalised too: a template without parameters is just the formatted text,
    // and masking a real template (`Order %s failed`) changes nothing that matters.
    if let Some(message) = event
        .message_template
        .as_deref()
        .or(event.message.as_deref())
    {
        out.message(&normalize_message(message));
        return GroupingBasis::Message;
    }
    // A stack with no exception and no message (a thread dump) still tells where it came from.
    // Frames that are not in-app are left out here: without in-app frames to anchor it, a library
    // stack says little about which error this is.
    if event.stack_frames.iter().any(is_in_app) {
        for frame in event.stack_frames.iter().filter(|f| is_in_app(f)) {
            out.frame(frame);
        }
        return GroupingBasis::InAppFrames;
    }
    out.fallback();
    GroupingBasis::Fallback
}

/// The hash input. Each component writes a tag byte, which fixes how many fields follow, and
/// then each field with its length in front, so two different component lists can never write
/// the same bytes (`["ab", "c"]` and `["a", "bc"]` differ).
struct Components {
    hasher: Sha256,
}

impl Default for Components {
    fn default() -> Self {
        Components {
            hasher: Sha256::new(),
        }
    }
}

impl Components {
    fn field(&mut self, text: &str) {
        self.hasher.update((text.len() as u64).to_le_bytes());
        self.hasher.update(text.as_bytes());
    }

    fn literal(&mut self, entry: &str) {
        self.hasher.update([b'L']);
        self.field(entry);
    }

    fn exception_type(&mut self, ty: Option<&str>) {
        self.hasher.update([b'T']);
        self.field(ty.unwrap_or_default());
    }

    /// A frame by where it is and which function it is in. Line and column numbers are left out:
    /// they move whenever unrelated code above is edited, and the same error would otherwise
    /// become a new one on every release.
    fn frame(&mut self, frame: &FrameSummary) {
        self.hasher.update([b'F']);
        self.field(&frame_location(frame));
        self.field(frame.function.as_deref().unwrap_or_default());
    }

    fn value(&mut self, normalized: &str) {
        self.hasher.update([b'V']);
        self.field(normalized);
    }

    fn message(&mut self, normalized: &str) {
        self.hasher.update([b'M']);
        self.field(normalized);
    }

    fn fallback(&mut self) {
        self.hasher.update([b'N']);
        self.field("<no exception or message>");
    }

    fn finish(self) -> i64 {
        let digest = self.hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let id = i64::from_be_bytes(first) & MAX_FINGERPRINT;
        // Zero is not positive; one hash in 2^53 lands there, and it borrows its neighbour.
        id.max(1)
    }
}

/// The module when the SDK names one (stable across deployments), else the file name, with what
/// changes between builds removed: a `:line:column` suffix, a query string or fragment on a URL,
/// and hashes and addresses (`main.3f2a1b9c.js`, Java's `$$Lambda/0x0000000800c4b440`).
fn frame_location<'f>(frame: &'f FrameSummary<'_>) -> Cow<'f, str> {
    if let Some(module) = frame.module.as_deref() {
        return scan(module, Mode::HashesOnly);
    }
    let Some(file) = frame.filename.as_deref().or(frame.abs_path.as_deref()) else {
        return Cow::Borrowed("");
    };
    let file = file.split(['?', '#']).next().unwrap_or(file);
    let file = strip_line_suffix(strip_line_suffix(file));
    scan(file, Mode::HashesOnly)
}

/// Removes one trailing `:digits`.
fn strip_line_suffix(file: &str) -> &str {
    match file.rsplit_once(':') {
        Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => file,
    }
}

fn name(event: &EventSummary) -> String {
    let surfaced = event.exceptions.last();
    let text = surfaced
        .and_then(|e| e.ty.as_deref())
        .or_else(|| event.message.as_deref().and_then(first_line))
        .or_else(|| {
            surfaced
                .and_then(|e| e.value.as_deref())
                .and_then(first_line)
        })
        .unwrap_or("<unknown>");
    truncate(text, NAME_LIMIT)
}

fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|line| !line.is_empty())
}

fn description(event: &EventSummary) -> String {
    let text = event
        .exceptions
        .last()
        .and_then(|e| e.value.as_deref())
        .or(event.message.as_deref())
        .unwrap_or_default();
    truncate(text, DESCRIPTION_LIMIT)
}

/// GitLab's actor: the transaction, else the raising frame as `function(module)`, else the
/// SDK's own `culprit`. The raising frame is the last in-app frame when there is one, since the
/// last frame of all is often deep inside a library and would give every error the same actor.
fn actor(event: &EventSummary) -> String {
    if let Some(transaction) = event.transaction.as_deref() {
        return truncate(transaction, ACTOR_LIMIT);
    }
    let frames = event
        .exceptions
        .last()
        .map(|e| e.frames.as_slice())
        .filter(|frames| !frames.is_empty())
        .unwrap_or(&event.stack_frames);
    let frame = frames.iter().rev().find(|f| is_in_app(f)).or(frames.last());
    let Some(frame) = frame else {
        return event
            .culprit
            .as_deref()
            .map(|c| truncate(c, ACTOR_LIMIT))
            .unwrap_or_default();
    };
    let text = match (frame.function.as_deref(), frame.module.as_deref()) {
        (Some(function), Some(module)) => format!("{function}({module})"),
        (Some(function), None) => function.to_owned(),
        (None, module) => frame
            .filename
            .as_deref()
            .or(module)
            .unwrap_or_default()
            .to_owned(),
    };
    truncate(&text, ACTOR_LIMIT)
}

/// At most `limit` characters, cut on a character boundary.
fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.to_owned(),
    }
}

/// Masks the parts of a message that vary between occurrences of one error: quoted strings,
/// UUIDs, dates and times, IP addresses, e-mail addresses, hex ids and numbers.
///
/// `"Order 123 failed for ann@example.com"` becomes `"Order <num> failed for <email>"`. A token is
/// only masked where it starts a word, so `utf8` and `sha256` keep their digits, while `500ms`
/// becomes `<num>ms`. The scanner is written by hand rather than with regular expressions: it
/// makes one pass, every match is bounded in length (a pathological message cannot make it
/// quadratic), and it keeps a regex engine out of the crate for a dozen small patterns.
pub fn normalize_message(s: &str) -> String {
    scan(s, Mode::Parameters).into_owned()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Everything `normalize_message` masks.
    Parameters,
    /// Only UUIDs and hex: the parts of a file or module name that change from build to build.
    HashesOnly,
}

/// Longest quoted string that is masked; longer quotes are more likely prose than a parameter.
const QUOTE_LIMIT: usize = 1024;
/// RFC 5321's limits on an address: 64 for the local part, 255 for the domain.
const EMAIL_LOCAL_LIMIT: usize = 64;
const EMAIL_DOMAIN_LIMIT: usize = 255;

fn scan(s: &str, mode: Mode) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    let mut out: Option<String> = None;
    // Bytes of `s` before `copied` are already in `out` (when `out` exists).
    let mut copied = 0;
    let mut i = 0;
    let mut after_word = false;
    let mut quote_ends = QuoteEnds::default();
    while i < bytes.len() {
        if !after_word {
            if let Some((len, mask)) = match_token(bytes, i, mode, &mut quote_ends) {
                let out = out.get_or_insert_with(|| String::with_capacity(s.len()));
                out.push_str(&s[copied..i]);
                // Matches are ASCII, so `i + len` stays on a character boundary.
                match mask {
                    Mask::Quoted(quote) => {
                        out.push(char::from(quote));
                        out.push_str("<str>");
                        out.push(char::from(quote));
                    }
                    Mask::Text(text) => out.push_str(text),
                }
                i += len;
                copied = i;
                // Whatever follows is read as it would be after the mask's closing `>` or quote,
                // so that masking an already masked text changes nothing.
                after_word = false;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or_default();
        after_word = ch.is_alphanumeric();
        i += ch.len_utf8().max(1);
    }
    match out {
        Some(mut out) => {
            out.push_str(&s[copied..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(s),
    }
}

enum Mask {
    Quoted(u8),
    Text(&'static str),
}

/// Tries each token at `i`, which starts a word; the most specific shapes are tried first.
fn match_token(
    b: &[u8],
    i: usize,
    mode: Mode,
    quote_ends: &mut QuoteEnds,
) -> Option<(usize, Mask)> {
    if mode == Mode::HashesOnly {
        return match_uuid(b, i)
            .map(|len| (len, Mask::Text("<uuid>")))
            .or_else(|| match_prefixed_hex(b, i).map(|len| (len, Mask::Text("<hex>"))))
            .or_else(|| match_hex_run(b, i).map(|len| (len, Mask::Text("<hex>"))));
    }
    if let Some(len) = match_quoted(b, i, quote_ends) {
        return Some((len, Mask::Quoted(b[i])));
    }
    MATCHERS
        .iter()
        .find_map(|(matcher, mask)| matcher(b, i).map(|len| (len, Mask::Text(mask))))
}

/// Finds a token at a position and returns its length in bytes.
type Matcher = fn(&[u8], usize) -> Option<usize>;

/// The masks after quoted strings, most specific first: a UUID or a date also reads as numbers.
const MATCHERS: [(Matcher, &str); 8] = [
    (match_uuid, "<uuid>"),
    (match_datetime, "<datetime>"),
    (match_ipv4, "<ip>"),
    (match_ipv6, "<ip>"),
    (match_email, "<email>"),
    (match_prefixed_hex, "<hex>"),
    (match_hex_run, "<hex>"),
    (match_number, "<num>"),
];

fn is_word_byte(byte: u8) -> bool {
    // Bytes of multi-byte characters count as word bytes: most are letters, and the cost of
    // being wrong is only a token left unmasked.
    byte.is_ascii_alphanumeric() || byte >= 0x80
}

/// A token must not run on into a word (`deadbeef12x` is not a hex id).
fn ends_word(b: &[u8], end: usize) -> bool {
    b.get(end).is_none_or(|&byte| !is_word_byte(byte))
}

fn count(b: &[u8], start: usize, max: usize, pred: impl Fn(u8) -> bool) -> usize {
    b[start.min(b.len())..]
        .iter()
        .take(max)
        .take_while(|&&byte| pred(byte))
        .count()
}

/// `'...'`, `"..."` or `` `...` `` on one line, closed by a quote that ends a word. Quotes inside
/// words (`can't`) never open one, because tokens are only tried at the start of a word.
fn match_quoted(b: &[u8], i: usize, quote_ends: &mut QuoteEnds) -> Option<usize> {
    let quote = b[i];
    let end = quote_ends.find(b, i + 1, quote)?;
    (b[end] == quote && end - i <= QUOTE_LIMIT).then_some(end + 1 - i)
}

/// The last search for a closing quote, per quote character. Where a closer is depends only on
/// the text after it, so a search that found the first closer (or line end) at `end` answers every
/// later search that starts at or before `end`; a line full of unclosed quotes is then read once
/// instead of once per quote.
#[derive(Default)]
struct QuoteEnds {
    searches: [Option<QuoteSearch>; 3],
}

#[derive(Clone, Copy)]
struct QuoteSearch {
    from: usize,
    /// First closing quote or newline at or after `from`; `None` when there is neither.
    end: Option<usize>,
}

impl QuoteEnds {
    fn find(&mut self, b: &[u8], from: usize, quote: u8) -> Option<usize> {
        let slot = match quote {
            b'\'' => 0,
            b'"' => 1,
            b'`' => 2,
            _ => return None,
        };
        if let Some(last) = self.searches[slot] {
            if last.from <= from && last.end.is_none_or(|end| from <= end) {
                return last.end;
            }
        }
        let end =
            (from..b.len()).find(|&j| b[j] == b'\n' || (b[j] == quote && ends_word(b, j + 1)));
        self.searches[slot] = Some(QuoteSearch { from, end });
        end
    }
}

/// 8-4-4-4-12 hex digits.
fn match_uuid(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for (n, group) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if n > 0 {
            (b.get(j) == Some(&b'-')).then_some(())?;
            j += 1;
        }
        (count(b, j, group, |c| c.is_ascii_hexdigit()) == group).then_some(())?;
        j += group;
    }
    ends_word(b, j).then_some(j - i)
}

/// `2024-01-31`, optionally followed by a time `T10:20[:30[.123]]` and an offset.
fn match_datetime(b: &[u8], i: usize) -> Option<usize> {
    let digits = |at: usize, n: usize| count(b, at, n, |c| c.is_ascii_digit()) == n;
    let at = |pos: usize, byte: u8| b.get(pos) == Some(&byte);
    if !(digits(i, 4) && at(i + 4, b'-') && digits(i + 5, 2) && at(i + 7, b'-') && digits(i + 8, 2))
    {
        return None;
    }
    let mut j = i + 10;
    let has_time = matches!(b.get(j), Some(b'T' | b't' | b' '))
        && digits(j + 1, 2)
        && at(j + 3, b':')
        && digits(j + 4, 2);
    if has_time {
        j += 6;
        if at(j, b':') && digits(j + 1, 2) {
            j += 3;
            if at(j, b'.') {
                let fraction = count(b, j + 1, 9, |c| c.is_ascii_digit());
                if fraction > 0 {
                    j += 1 + fraction;
                }
            }
        }
        if matches!(b.get(j), Some(b'Z' | b'z')) {
            j += 1;
        } else if matches!(b.get(j), Some(b'+' | b'-')) && digits(j + 1, 2) {
            j += 3;
            if at(j, b':') && digits(j + 1, 2) {
                j += 3;
            } else if digits(j, 2) {
                j += 2;
            }
        }
    }
    ends_word(b, j).then_some(j - i)
}

/// Four numbers of 0 to 255 joined by dots.
fn match_ipv4(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for n in 0..4 {
        if n > 0 {
            (b.get(j) == Some(&b'.')).then_some(())?;
            j += 1;
        }
        let len = count(b, j, 4, |c| c.is_ascii_digit());
        if len == 0 || len > 3 {
            return None;
        }
        let value = b[j..j + len]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
        if value > 255 {
            return None;
        }
        j += len;
    }
    // `1.2.3.4.5` is a version, not an address.
    let continues = b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit);
    (ends_word(b, j) && !continues).then_some(j - i)
}

/// Hex groups joined by colons, either all eight or shortened with `::`. At least one decimal
/// digit is required, so that C++ and Rust paths made of hex letters (`abc::def`) stay as they
/// are; times (`10:20:30`) have neither `::` nor seven colons.
fn match_ipv6(b: &[u8], i: usize) -> Option<usize> {
    let len = count(b, i, 45, |c| c.is_ascii_hexdigit() || c == b':');
    let token = &b[i..i + len];
    let colons = token.iter().filter(|&&c| c == b':').count();
    let shortened = token.windows(2).any(|w| w == b"::");
    let has_digit = token.iter().any(u8::is_ascii_digit);
    let groups_ok = token.split(|&c| c == b':').all(|group| group.len() <= 4);
    let shaped = (shortened && (2..=7).contains(&colons)) || colons == 7;
    (shaped && has_digit && groups_ok && ends_word(b, i + len)).then_some(len)
}

/// `local@domain.tld`, within the lengths an address may have.
fn match_email(b: &[u8], i: usize) -> Option<usize> {
    let local_byte = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let local = count(b, i, EMAIL_LOCAL_LIMIT + 1, local_byte);
    if local == 0 || local > EMAIL_LOCAL_LIMIT || b.get(i + local) != Some(&b'@') {
        return None;
    }
    let domain_start = i + local + 1;
    let label_byte = |c: u8| c.is_ascii_alphanumeric() || c == b'-';
    let mut j = domain_start;
    let mut labels = 0;
    let mut last_label_alphabetic = false;
    loop {
        let label = count(b, j, 63, label_byte);
        if label == 0 {
            break;
        }
        last_label_alphabetic = b[j..j + label].iter().all(u8::is_ascii_alphabetic);
        j += label;
        labels += 1;
        // A dot belongs to the domain only when another label follows (not a full stop).
        let more = b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(|&c| label_byte(c));
        if !more || j - domain_start > EMAIL_DOMAIN_LIMIT {
            break;
        }
        j += 1;
    }
    let ok = labels >= 2 && last_label_alphabetic && j - domain_start <= EMAIL_DOMAIN_LIMIT;
    (ok && ends_word(b, j)).then_some(j - i)
}

/// `0x` followed by hex digits, of any length.
fn match_prefixed_hex(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'0') || !matches!(b.get(i + 1), Some(b'x' | b'X')) {
        return None;
    }
    let digits = count(b, i + 2, usize::MAX, |c| c.is_ascii_hexdigit());
    (digits > 0 && ends_word(b, i + 2 + digits)).then_some(2 + digits)
}

/// A run of at least eight hex digits with both a digit and a letter in it: an id or a hash.
/// All-digit runs are left to `match_number`, and all-letter runs are words (`acceded`).
fn match_hex_run(b: &[u8], i: usize) -> Option<usize> {
    let len = count(b, i, usize::MAX, |c| c.is_ascii_hexdigit());
    let run = &b[i..i + len];
    let mixed = run.iter().any(u8::is_ascii_digit) && run.iter().any(u8::is_ascii_alphabetic);
    (len >= 8 && mixed && ends_word(b, i + len)).then_some(len)
}

/// Digits, with any `.digits` parts (`3`, `2.5`, `1.2.3`). Letters may follow (`500ms`).
fn match_number(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + count(b, i, usize::MAX, |c| c.is_ascii_digit());
    if j == i {
        return None;
    }
    while b.get(j) == Some(&b'.') {
        let more = count(b, j + 1, usize::MAX, |c| c.is_ascii_digit());
        if more == 0 {
            break;
        }
        j += 1 + more;
    }
    Some(j - i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::extract;

    fn grouping(payload: &[u8]) -> Grouping {
        let event = extract(payload).expect("test payload should parse");
        group(&event)
    }

    fn check_same(a: &[u8], b: &[u8]) {
        assert_eq!(grouping(a).fingerprint, grouping(b).fingerprint);
    }

    fn check_different(a: &[u8], b: &[u8]) {
        assert_ne!(grouping(a).fingerprint, grouping(b).fingerprint);
    }

    fn check_shown(payload: &[u8], name: &str, description: &str, actor: &str) {
        let g = grouping(payload);
        assert_eq!(
            (g.name.as_str(), g.description.as_str(), g.actor.as_str()),
            (name, description, actor)
        );
    }

    fn check_basis(payload: &[u8], basis: GroupingBasis) {
        assert_eq!(grouping(payload).basis, basis);
    }

    fn check_normalized(input: &str, expected: &str) {
        assert_eq!(normalize_message(input), expected);
    }

    /// A Python-style error raised at `function` (line `line`) with `value`.
    fn raised_at(ty: &str, value: &str, function: &str, line: u32) -> Vec<u8> {
        format!(
            r#"{{"exception": {{"values": [{{"type": "{ty}", "value": "{value}",
                "stacktrace": {{"frames": [
                    {{"function": "handle", "module": "django.core", "lineno": 3, "in_app": false}},
                    {{"function": "{function}", "module": "shop.users", "lineno": {line}, "in_app": true}}
                ]}}}}]}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn same_site_with_different_ids_in_value_is_one_group() {
        check_same(
            &raised_at("LookupError", "user 42 not found", "load_user", 10),
            &raised_at("LookupError", "user 43 not found", "load_user", 10),
        );
    }

    #[test]
    fn same_type_at_two_in_app_sites_is_two_groups() {
        check_different(
            &raised_at("LookupError", "user 42 not found", "load_user", 10),
            &raised_at("LookupError", "user 42 not found", "load_order", 10),
        );
    }

    #[test]
    fn line_number_change_at_same_site_is_one_group() {
        check_same(
            &raised_at("LookupError", "x", "load_user", 10),
            &raised_at("LookupError", "x", "load_user", 57),
        );
    }

    #[test]
    fn different_types_at_same_site_are_two_groups() {
        check_different(
            &raised_at("LookupError", "x", "load_user", 10),
            &raised_at("KeyError", "x", "load_user", 10),
        );
    }

    #[test]
    fn in_app_frames_decide_the_basis() {
        check_basis(&raised_at("E", "x", "f", 1), GroupingBasis::InAppFrames);
    }

    #[test]
    fn library_frames_are_ignored_when_in_app_frames_exist() {
        check_same(
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [
                {"function": "run", "module": "gunicorn", "in_app": false},
                {"function": "f", "module": "app", "in_app": true}]}}]}"#,
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [
                {"function": "serve", "module": "uvicorn", "in_app": false},
                {"function": "f", "module": "app", "in_app": true}]}}]}"#,
        );
    }

    #[test]
    fn without_in_app_frames_all_frames_count() {
        check_different(
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [{"function": "a", "module": "lib"}]}}]}"#,
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [{"function": "b", "module": "lib"}]}}]}"#,
        );
    }

    #[test]
    fn without_in_app_frames_the_value_is_ignored() {
        check_same(
            br#"{"exception": [{"type": "E", "value": "a", "stacktrace": {"frames": [{"function": "f", "filename": "app.js"}]}}]}"#,
            br#"{"exception": [{"type": "E", "value": "b", "stacktrace": {"frames": [{"function": "f", "filename": "app.js"}]}}]}"#,
        );
    }

    #[test]
    fn file_names_lose_line_numbers_query_strings_and_content_hashes() {
        check_same(
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [
                {"function": "f", "filename": "https://x.example/main.3f2a1b9c.js?v=1:10:4"}]}}]}"#,
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [
                {"function": "f", "filename": "https://x.example/main.90ab12cd.js?v=2:88:1"}]}}]}"#,
        );
    }

    #[test]
    fn module_names_lose_addresses() {
        check_same(
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [
                {"function": "apply", "module": "shop.Cart$$Lambda/0x0000000800c4b440"}]}}]}"#,
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [
                {"function": "apply", "module": "shop.Cart$$Lambda/0x0000000801a0c000"}]}}]}"#,
        );
    }

    #[test]
    fn exception_without_frames_groups_by_type_and_masked_value() {
        check_same(
            br#"{"exception": [{"type": "NotFound", "value": "order 9f1c2d3e4b5a6978 for ann@example.com"}]}"#,
            br#"{"exception": [{"type": "NotFound", "value": "order 0a1b2c3d4e5f6071 for bob@example.org"}]}"#,
        );
    }

    #[test]
    fn exception_without_frames_and_different_values_is_two_groups() {
        check_different(
            br#"{"exception": [{"type": "NotFound", "value": "no such order"}]}"#,
            br#"{"exception": [{"type": "NotFound", "value": "no such user"}]}"#,
        );
    }

    #[test]
    fn exception_without_frames_basis() {
        check_basis(
            br#"{"exception": [{"type": "E"}]}"#,
            GroupingBasis::Exception,
        );
    }

    #[test]
    fn chained_exceptions_all_count() {
        check_different(
            br#"{"exception": [{"type": "IOError"}, {"type": "E"}]}"#,
            br#"{"exception": [{"type": "KeyError"}, {"type": "E"}]}"#,
        );
    }

    #[test]
    fn messages_with_different_numbers_are_one_group() {
        check_same(
            br#"{"message": "Order 123 failed"}"#,
            br#"{"message": "Order 456 failed"}"#,
        );
    }

    #[test]
    fn different_messages_are_two_groups() {
        check_different(
            br#"{"message": "Order 123 failed"}"#,
            br#"{"message": "Payment 123 failed"}"#,
        );
    }

    #[test]
    fn message_groups_by_template_not_params() {
        check_same(
            br#"{"logentry": {"message": "user %s logged in", "params": ["ann"]}}"#,
            br#"{"logentry": {"message": "user %s logged in", "params": ["bob"]}}"#,
        );
    }

    #[test]
    fn message_basis() {
        check_basis(br#"{"message": "m"}"#, GroupingBasis::Message);
    }

    #[test]
    fn message_is_not_confused_with_an_exception_value() {
        check_different(
            br#"{"message": "boom"}"#,
            br#"{"exception": [{"value": "boom"}]}"#,
        );
    }

    #[test]
    fn stack_without_exception_or_message_groups_by_in_app_frames() {
        check_basis(
            br#"{"stacktrace": {"frames": [{"function": "f", "module": "app", "in_app": true}]}}"#,
            GroupingBasis::InAppFrames,
        );
    }

    #[test]
    fn events_with_nothing_share_the_fallback_group() {
        check_same(
            br#"{"level": "error"}"#,
            br#"{"platform": "python", "release": "1"}"#,
        );
    }

    #[test]
    fn fallback_basis() {
        check_basis(br#"{}"#, GroupingBasis::Fallback);
    }

    #[test]
    fn custom_fingerprint_groups_unrelated_events() {
        check_same(
            br#"{"fingerprint": ["a"], "message": "one thing"}"#,
            br#"{"fingerprint": ["a"], "exception": [{"type": "Other"}]}"#,
        );
    }

    #[test]
    fn custom_fingerprint_basis() {
        check_basis(br#"{"fingerprint": ["a"]}"#, GroupingBasis::Fingerprint);
    }

    #[test]
    fn fingerprint_entries_are_not_concatenated() {
        check_different(
            br#"{"fingerprint": ["ab", "c"]}"#,
            br#"{"fingerprint": ["a", "bc"]}"#,
        );
    }

    #[test]
    fn fingerprint_entry_is_not_confused_with_a_message() {
        check_different(br#"{"fingerprint": ["m"]}"#, br#"{"message": "m"}"#);
    }

    #[test]
    fn default_marker_alone_is_the_default_grouping() {
        check_same(
            br#"{"fingerprint": ["{{ default }}"], "message": "m"}"#,
            br#"{"message": "m"}"#,
        );
    }

    #[test]
    fn default_marker_alone_keeps_the_default_basis() {
        check_basis(
            br#"{"fingerprint": ["{{default}}"], "message": "m"}"#,
            GroupingBasis::Message,
        );
    }

    #[test]
    fn default_marker_tolerates_spacing() {
        check_same(
            br#"{"fingerprint": ["{{default}}", "x"], "message": "m"}"#,
            br#"{"fingerprint": ["{{   default }}", "x"], "message": "m"}"#,
        );
    }

    #[test]
    fn default_marker_with_extra_entry_differs_from_default() {
        check_different(
            br#"{"fingerprint": ["{{ default }}", "tenant-a"], "message": "m"}"#,
            br#"{"message": "m"}"#,
        );
    }

    #[test]
    fn default_marker_with_extra_entry_still_follows_the_default() {
        check_different(
            br#"{"fingerprint": ["{{ default }}", "x"], "message": "m"}"#,
            br#"{"fingerprint": ["{{ default }}", "x"], "message": "other"}"#,
        );
    }

    #[test]
    fn empty_fingerprint_means_default_grouping() {
        check_same(
            br#"{"fingerprint": [], "message": "m"}"#,
            br#"{"message": "m"}"#,
        );
    }

    #[test]
    fn fingerprint_is_positive() {
        for payload in [
            &br#"{}"#[..],
            br#"{"message": "m"}"#,
            br#"{"fingerprint": ["a"]}"#,
        ] {
            assert!(grouping(payload).fingerprint > 0);
        }
    }

    #[test]
    fn fingerprint_is_stable_across_releases_of_this_code() {
        // Stored errors are keyed by this number: a change here splits every existing group.
        // It is the low 53 bits of the 63-bit value earlier releases stored (8665177863305011665),
        // which is what migration 9 relies on.
        assert_eq!(
            grouping(br#"{"fingerprint": ["a"]}"#).fingerprint,
            252_180_244_177_361
        );
        assert_eq!(
            8_665_177_863_305_011_665 & MAX_FINGERPRINT,
            252_180_244_177_361
        );
    }

    #[test]
    fn shown_for_exception_with_in_app_frame() {
        check_shown(
            &raised_at("LookupError", "user 42 not found", "load_user", 10),
            "LookupError",
            "user 42 not found",
            "load_user(shop.users)",
        );
    }

    #[test]
    fn actor_is_the_transaction_when_set() {
        check_shown(
            br#"{"transaction": "/users/{id}", "exception": [{"type": "E", "value": "v",
                "stacktrace": {"frames": [{"function": "f", "module": "m", "in_app": true}]}}]}"#,
            "E",
            "v",
            "/users/{id}",
        );
    }

    #[test]
    fn actor_is_the_last_in_app_frame() {
        check_shown(
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [
                {"function": "view", "module": "app.views", "in_app": true},
                {"function": "get", "module": "requests.api", "in_app": false}]}}]}"#,
            "E",
            "",
            "view(app.views)",
        );
    }

    #[test]
    fn actor_is_the_sdks_culprit_when_no_frame_names_one() {
        // As the JavaScript SDK sends it: a message fallback, a culprit, no frames.
        check_shown(
            br#"{"culprit": "onScriptComplete(webpack/bootstrap)",
                 "exception": [{"type": "ChunkLoadError", "value": "Loading chunk 7 failed."}]}"#,
            "ChunkLoadError",
            "Loading chunk 7 failed.",
            "onScriptComplete(webpack/bootstrap)",
        );
        check_shown(
            br#"{"culprit": "app.tasks in run", "message": "job failed"}"#,
            "job failed",
            "job failed",
            "app.tasks in run",
        );
    }

    #[test]
    fn a_frame_or_transaction_wins_over_the_culprit() {
        check_shown(
            br#"{"culprit": "sdk guess", "exception": [{"type": "E", "stacktrace": {"frames": [
                {"function": "view", "module": "app.views", "in_app": true}]}}]}"#,
            "E",
            "",
            "view(app.views)",
        );
        check_shown(
            br#"{"culprit": "sdk guess", "transaction": "/cart", "message": "m"}"#,
            "m",
            "m",
            "/cart",
        );
    }

    #[test]
    fn actor_without_module_is_the_function() {
        check_shown(
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [{"function": "f", "filename": "a.js"}]}}]}"#,
            "E",
            "",
            "f",
        );
    }

    #[test]
    fn actor_without_function_is_the_file() {
        check_shown(
            br#"{"exception": [{"type": "E", "stacktrace": {"frames": [{"filename": "a.js", "lineno": 3}]}}]}"#,
            "E",
            "",
            "a.js",
        );
    }

    #[test]
    fn shown_for_message_event() {
        check_shown(
            br#"{"message": "\nDisk full\nsecond line"}"#,
            "Disk full",
            "\nDisk full\nsecond line",
            "",
        );
    }

    #[test]
    fn shown_for_empty_event() {
        check_shown(br#"{}"#, "<unknown>", "", "");
    }

    #[test]
    fn name_is_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        let g = grouping(format!(r#"{{"message": "{long}"}}"#).as_bytes());
        assert_eq!(g.name, "é".repeat(255));
        assert_eq!(g.description.chars().count(), 300);
    }

    #[test]
    fn description_is_cut_at_1024_characters() {
        let long = "x".repeat(2000);
        let g = grouping(
            format!(r#"{{"exception": [{{"type": "E", "value": "{long}"}}]}}"#).as_bytes(),
        );
        assert_eq!(g.description.len(), 1024);
    }

    #[test]
    fn normalize_numbers() {
        check_normalized(
            "Order 123 failed after 2.5s and 500ms",
            "Order <num> failed after <num>s and <num>ms",
        );
    }

    #[test]
    fn normalize_keeps_digits_inside_words() {
        check_normalized("utf8 sha256 ipv4 not valid", "utf8 sha256 ipv4 not valid");
    }

    #[test]
    fn normalize_uuid() {
        check_normalized(
            "job 123e4567-e89b-12d3-a456-426614174000 died",
            "job <uuid> died",
        );
    }

    #[test]
    fn normalize_hex_ids() {
        check_normalized(
            "object 5f3a9b2c7d1e at 0x7ffee4b2 deadbeef",
            "object <hex> at <hex> deadbeef",
        );
    }

    #[test]
    fn normalize_email() {
        check_normalized(
            "mail to ann.lee+x@mail.example.com. bounced",
            "mail to <email>. bounced",
        );
    }

    #[test]
    fn normalize_ip_addresses() {
        check_normalized(
            "connect 10.0.0.12:5432 and [fe80::1] refused",
            "connect <ip>:<num> and [<ip>] refused",
        );
    }

    #[test]
    fn normalize_leaves_paths_and_times_alone_where_not_ips() {
        check_normalized(
            "std::io::Error at 10:20:30",
            "std::io::Error at <num>:<num>:<num>",
        );
    }

    #[test]
    fn normalize_datetime() {
        check_normalized(
            "expired 2024-01-31T10:20:30.123Z, renewed 2024-02-01",
            "expired <datetime>, renewed <datetime>",
        );
    }

    #[test]
    fn normalize_quoted_strings() {
        check_normalized(
            r#"can't find 'sku-1' in "cart 7" or `x`"#,
            r#"can't find '<str>' in "<str>" or `<str>`"#,
        );
    }

    #[test]
    fn normalize_unclosed_quote_is_left_as_is() {
        check_normalized("it's 'open 5", "it's 'open <num>");
    }

    #[test]
    fn normalize_keeps_non_ascii_text() {
        check_normalized(
            "Bestellung 12 für Müller fehlgeschlagen",
            "Bestellung <num> für Müller fehlgeschlagen",
        );
    }

    #[test]
    fn normalize_is_linear_on_pathological_input() {
        // Every dot starts a word, and each start could scan far ahead if matches were unbounded.
        let input = "a.".repeat(200_000) + "'" + &" 'a".repeat(100_000);
        let started = std::time::Instant::now();
        let _ = normalize_message(&input);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    mod properties {
        use super::*;
        use crate::domain::event::{ExceptionSummary, FrameSummary};
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = Option<Cow<'static, str>>> {
            prop::option::of("[ -~é]{0,16}").prop_map(|t| t.map(Cow::Owned))
        }

        fn frame() -> impl Strategy<Value = FrameSummary<'static>> {
            (
                text(),
                text(),
                text(),
                prop::option::of(any::<bool>()),
                prop::option::of(0u64..1000),
            )
                .prop_map(|(function, module, filename, in_app, lineno)| {
                    FrameSummary {
                        function,
                        module,
                        filename,
                        in_app,
                        lineno,
                        ..FrameSummary::default()
                    }
                })
        }

        fn exception() -> impl Strategy<Value = ExceptionSummary<'static>> {
            (text(), text(), prop::collection::vec(frame(), 0..4)).prop_map(
                |(ty, value, frames)| ExceptionSummary {
                    ty,
                    value,
                    frames,
                    ..ExceptionSummary::default()
                },
            )
        }

        fn event() -> impl Strategy<Value = EventSummary<'static>> {
            (
                text(),
                text(),
                text(),
                prop::collection::vec(exception(), 0..3),
                prop::collection::vec(frame(), 0..3),
                prop::option::of(prop::collection::vec(
                    prop_oneof![Just("{{ default }}".to_owned()), "[a-z]{0,4}"]
                        .prop_map(Cow::Owned),
                    0..3,
                )),
            )
                .prop_map(
                    |(message, template, transaction, exceptions, stack_frames, fingerprint)| {
                        EventSummary {
                            message,
                            message_template: template,
                            transaction,
                            exceptions,
                            stack_frames,
                            fingerprint,
                            ..EventSummary::default()
                        }
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn group_is_deterministic_and_positive(event in event()) {
                let first = group(&event);
                prop_assert!(first.fingerprint > 0);
                prop_assert!(first.fingerprint <= MAX_FINGERPRINT);
                prop_assert_eq!(first, group(&event.clone()));
            }

            #[test]
            fn normalize_leaves_no_number_at_a_word_start(s in "[ -~é€\n]{0,64}") {
                let normalized = normalize_message(&s);
                let mut previous: Option<char> = None;
                for ch in normalized.chars() {
                    let at_word_start = !previous.is_some_and(char::is_alphanumeric);
                    prop_assert!(!(ch.is_ascii_digit() && at_word_start), "{:?}", normalized);
                    previous = Some(ch);
                }
            }
        }
    }
}
