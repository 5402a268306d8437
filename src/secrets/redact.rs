//! The redactor every log line, status message, history record and stored remote output
//! passes through: each registered value, and the forms it takes once quoted for a shell,
//! escaped for JSON or base64-encoded, becomes `[REDACTED]`. A streaming variant catches a
//! value split across output chunks. It must never log, print or expose what it holds.

mod matcher;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use matcher::Matcher;

/// What a registered value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Values shorter than this many characters are not registered: a 1–3 character value
/// (`1`, `yes`, `80`) occurs everywhere, and replacing every occurrence would redact
/// unrelated text until logs are useless. Such values are not secret in practice; `chom
/// secrets set` warns when it stores one.
pub const MIN_REDACTED_LEN: usize = 4;

/// Replaces registered secret values in text. Cheap to clone (one `Arc`); every clone sees
/// values registered through any other, so one redactor can be handed to every worker,
/// logger and writer.
///
/// Caught forms of a value `v`: `v` itself; the body of its shell single-quoting (`'` as
/// `'\''`, as chom's stdin preamble writes it); its JSON string escaping (serde_json:
/// `"`, `\`, control characters); its standard base64 encoding without padding. Not caught:
/// a value that a remote program transforms otherwise (URL-encoding, hashing, other
/// escapes), or that appears inside a longer base64 text at an offset not divisible by 3.
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    patterns: BTreeSet<String>,
    /// Rebuilt on registration (rare) so redaction (every line) only reads it.
    matcher: Arc<Matcher>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let patterns = self.inner.read().unwrap_or_else(PoisonError::into_inner).patterns.len();
        f.debug_struct("Redactor").field("patterns", &patterns).finish()
    }
}

impl Redactor {
    /// A redactor with nothing registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers one value and its encoded forms. Returns false when the value is shorter
    /// than [`MIN_REDACTED_LEN`] characters and was therefore not registered.
    pub fn register(&self, value: &str) -> bool {
        if value.chars().count() < MIN_REDACTED_LEN {
            return false;
        }
        self.register_all([value]);
        true
    }

    /// Registers many values at once, rebuilding the matcher once. Values shorter than
    /// [`MIN_REDACTED_LEN`] characters are skipped.
    pub fn register_all<'a>(&self, values: impl IntoIterator<Item = &'a str>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let mut changed = false;
        for value in values {
            if value.chars().count() < MIN_REDACTED_LEN {
                continue;
            }
            for form in encodings(value) {
                changed |= inner.patterns.insert(form);
            }
        }
        if changed {
            let matcher = Matcher::new(inner.patterns.iter().map(String::as_bytes));
            inner.matcher = Arc::new(matcher);
        }
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }

    /// `text` with every registered value (in any caught form) replaced by `[REDACTED]`.
    /// Overlapping occurrences become one `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        replace(text, &self.snapshot().spans(text.as_bytes()), text.len())
    }

    /// A redactor for output that arrives in chunks.
    pub fn stream(&self) -> RedactingStream {
        RedactingStream {
            redactor: self.clone(),
            pending: String::new(),
        }
    }

    fn snapshot(&self) -> Arc<Matcher> {
        Arc::clone(&self.inner.read().unwrap_or_else(PoisonError::into_inner).matcher)
    }
}

/// The forms a value takes in output, deduplicated by the caller's set.
fn encodings(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned(), value.replace('\'', r"'\''")];
    if let Ok(json) = serde_json::to_string(value)
        && let Some(body) = json.strip_prefix('"').and_then(|j| j.strip_suffix('"'))
    {
        forms.push(body.to_owned());
    }
    forms.push(base64_unpadded(value.as_bytes()));
    forms
}

/// Standard base64 (RFC 4648 §4) without `=` padding: the padded encoding starts with it,
/// so the unpadded form catches both.
fn base64_unpadded(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// `text[..upto]` with the given spans replaced. Spans come from UTF-8 patterns matched
/// in UTF-8 text, so they fall on character boundaries; the lossy conversion only keeps
/// this function total.
fn replace(text: &str, spans: &[(usize, usize)], upto: usize) -> String {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(upto);
    let mut at = 0;
    for &(start, end) in spans.iter().take_while(|(_, end)| *end <= upto) {
        out.extend_from_slice(&bytes[at..start]);
        out.extend_from_slice(REDACTED.as_bytes());
        at = end;
    }
    out.extend_from_slice(&bytes[at..upto]);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Redacts output that arrives in chunks (remote stdout, a log pipe). It holds back the
/// last (longest value − 1) bytes of what it was given, because they may be the start of
/// a value that the next chunk completes; everything before that is emitted redacted.
/// Call [`RedactingStream::finish`] at the end, or the held-back tail is lost.
pub struct RedactingStream {
    redactor: Redactor,
    pending: String,
}

impl fmt::Debug for RedactingStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactingStream")
            .field("pending_bytes", &self.pending.len())
            .finish()
    }
}

impl RedactingStream {
    /// Takes the next chunk and returns the redacted text that is now safe to emit (possibly
    /// empty).
    pub fn push(&mut self, chunk: &str) -> String {
        self.pending.push_str(chunk);
        let matcher = self.redactor.snapshot();
        let hold = matcher.longest().saturating_sub(1);
        let Some(mut cut) = self.pending.len().checked_sub(hold) else {
            return String::new();
        };
        while !self.pending.is_char_boundary(cut) {
            cut -= 1;
        }
        // Any occurrence that ends after the pending text starts at or after `cut`, so the
        // text before `cut` is final; an occurrence already complete but straddling `cut` is
        // kept whole for the next round, where it is found again.
        let spans = matcher.spans(self.pending.as_bytes());
        if let Some(&(start, _)) = spans.iter().find(|(start, end)| *start < cut && *end > cut) {
            cut = start;
        }
        let out = replace(&self.pending, &spans, cut);
        self.pending.drain(..cut);
        out
    }

    /// Returns the redacted remainder.
    pub fn finish(mut self) -> String {
        let matcher = self.redactor.snapshot();
        let pending = std::mem::take(&mut self.pending);
        replace(&pending, &matcher.spans(pending.as_bytes()), pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(values: &[&str]) -> Redactor {
        let r = Redactor::new();
        r.register_all(values.iter().copied());
        r
    }

    /// What the stdin preamble writes: `'…'` with `'` as `'\''`.
    fn shell_quote(value: &str) -> String {
        format!("'{}'", value.replace('\'', r"'\''"))
    }

    #[test]
    fn plain_values_are_replaced_everywhere() {
        let r = redactor(&["hunter22"]);
        assert_eq!(
            r.redact("pw=hunter22 again hunter22."),
            "pw=[REDACTED] again [REDACTED]."
        );
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn shell_quoted_values_are_caught() {
        let value = "it's a s3cret";
        let r = redactor(&[value]);
        let line = format!("export DB_PASSWORD={}", shell_quote(value));
        assert_eq!(line, r"export DB_PASSWORD='it'\''s a s3cret'");
        assert_eq!(r.redact(&line), "export DB_PASSWORD='[REDACTED]'");
    }

    #[test]
    fn json_escaped_values_are_caught() {
        let value = "quote\" back\\slash\nnewline\ttab";
        let r = redactor(&[value]);
        let json = serde_json::json!({ "password": value }).to_string();
        assert_eq!(r.redact(&json), r#"{"password":"[REDACTED]"}"#);
    }

    #[test]
    fn base64_encoded_values_are_caught() {
        let r = redactor(&["hunter22"]);
        let encoded = "aHVudGVyMjI="; // base64("hunter22")
        assert_eq!(base64_unpadded(b"hunter22"), "aHVudGVyMjI");
        assert_eq!(
            r.redact(&format!("Authorization: Basic {encoded}")),
            "Authorization: Basic [REDACTED]="
        );
        assert_eq!(base64_unpadded(b"a"), "YQ");
        assert_eq!(base64_unpadded(b"ab"), "YWI");
        assert_eq!(base64_unpadded(b"abc"), "YWJj");
    }

    #[test]
    fn short_values_are_not_registered() {
        let r = Redactor::new();
        assert!(!r.register("abc"));
        assert!(!r.register("é€ü"));
        assert!(r.is_empty());
        assert_eq!(r.redact("abc abc"), "abc abc");
        assert!(r.register("abcd"));
        assert_eq!(r.redact("abc abcd"), "abc [REDACTED]");
    }

    #[test]
    fn clones_share_registrations_across_threads() {
        let r = Redactor::new();
        let clone = r.clone();
        std::thread::spawn(move || clone.register("from-another-thread"))
            .join()
            .unwrap();
        assert_eq!(r.redact("x from-another-thread y"), "x [REDACTED] y");
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Redactor>();
        assert!(!format!("{r:?}").contains("another"));
    }

    #[test]
    fn overlapping_values_are_redacted_as_one() {
        let r = redactor(&["abcdef", "defghi"]);
        assert_eq!(r.redact("xabcdefghix"), "x[REDACTED]x");
    }

    #[test]
    fn many_values_are_all_caught() {
        let values: Vec<String> = (0..500).map(|i| format!("secret-{i:04}-value")).collect();
        let r = redactor(&values.iter().map(String::as_str).collect::<Vec<_>>());
        let text: String = values.iter().map(|v| format!("<{v}>")).collect();
        assert_eq!(r.redact(&text), "<[REDACTED]>".repeat(500));
    }

    #[test]
    fn unicode_values_and_text_stay_valid() {
        let r = redactor(&["pässwörd€"]);
        assert_eq!(r.redact("ünïcödé pässwörd€ ✓"), "ünïcödé [REDACTED] ✓");
    }

    fn streamed(r: &Redactor, chunks: &[&str]) -> String {
        let mut stream = r.stream();
        let mut out: String = chunks.iter().map(|c| stream.push(c)).collect();
        out.push_str(&stream.finish());
        out
    }

    #[test]
    fn a_value_split_across_two_chunks_is_caught_at_every_split_point() {
        let value = "correct-horse-battery";
        let r = redactor(&[value, "other-secret-longer-than-the-first-one"]);
        let text = format!("before {value} after {value}");
        let expected = r.redact(&text);
        assert_eq!(expected, "before [REDACTED] after [REDACTED]");
        for i in 0..=text.len() {
            let (a, b) = text.split_at(i);
            assert_eq!(streamed(&r, &[a, b]), expected, "split at {i}");
        }
    }

    #[test]
    fn a_value_split_across_three_chunks_is_caught_at_every_pair_of_split_points() {
        let value = "it's-a-s3cret";
        let r = redactor(&[value]);
        let text = format!("x={} y={value}", shell_quote(value));
        let expected = r.redact(&text);
        assert_eq!(expected, "x='[REDACTED]' y=[REDACTED]");
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let chunks = [&text[..i], &text[i..j], &text[j..]];
                assert_eq!(streamed(&r, &chunks), expected, "splits at {i},{j}");
            }
        }
    }

    #[test]
    fn streaming_emits_early_and_holds_back_only_a_tail() {
        // The longest registered form is base64("abcdefgh"), 11 bytes: 10 are held back.
        let r = redactor(&["abcdefgh"]);
        let mut stream = r.stream();
        assert_eq!(stream.push("0123456789 abc"), "0123");
        // The value is complete but straddles the cut, so it waits for the next round whole.
        assert_eq!(stream.push("defgh tail"), "456789 ");
        assert_eq!(stream.finish(), "[REDACTED] tail");
        let mut empty = Redactor::new().stream();
        assert_eq!(empty.push("no values: emitted at once"), "no values: emitted at once");
    }

    #[test]
    fn streaming_splits_inside_multibyte_characters_are_safe() {
        let r = redactor(&["ääää"]);
        let text = "€€ ääää €€";
        let expected = "€€ [REDACTED] €€";
        for i in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let (a, b) = text.split_at(i);
            assert_eq!(streamed(&r, &[a, b]), expected);
        }
    }
}
