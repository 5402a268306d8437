//! The redactor every log line, status message, history record and stored remote output
//! passes through: each registered value, and the forms a shell or a script commonly makes
//! of it (escapes interpreted by `echo`, trailing newlines stripped, quoted for a shell,
//! escaped for JSON, base64-, URL- or hex-encoded), becomes `[REDACTED]`. A streaming variant catches a
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
/// Caught forms of a value `v` (see [`encodings`]): `v` itself, and `v` as dash's `echo`
/// or `printf %b` prints it (backslash escapes interpreted, output cut at `\c`); each of
/// these also with trailing newlines stripped; and each of those shell single-quoted (`'`
/// as `'\''`, as chom's stdin preamble writes it), JSON-escaped (serde_json), standard
/// base64 (without padding, and without the last character when it also encodes what
/// follows), percent-encoded (upper- or lower-case hex, `+` or `%20` for a space) and
/// hex-encoded (lower or upper case). Not caught: anything else a remote program makes of
/// a value (hashing, encryption, other encodings or escapes, bash's `echo -e` `\x`
/// escapes), a part of a value printed on its own, a value printed in pieces or
/// interleaved with other text, base64 of a value that starts inside a longer text at an
/// offset not divisible by 3, and values shorter than [`MIN_REDACTED_LEN`] characters.
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

/// The forms a value takes in output, deduplicated by the caller's set: the value, and
/// what `echo` or `printf %b` in dash makes of it (backslash escapes interpreted), each
/// also without trailing newlines (as `$(…)` strips them); then each of those as it is
/// once shell-quoted, JSON-escaped, base64-encoded, URL-encoded or hex-encoded. Forms
/// shorter than [`MIN_REDACTED_LEN`] characters are skipped.
fn encodings(value: &str) -> Vec<String> {
    let mut bases = vec![value.to_owned(), echo_interpreted(value)];
    for i in 0..bases.len() {
        let trimmed = bases[i].trim_end_matches('\n').to_owned();
        bases.push(trimmed);
    }
    bases.sort();
    bases.dedup();
    let mut forms = Vec::new();
    for base in bases.iter().filter(|b| b.chars().count() >= MIN_REDACTED_LEN) {
        forms.push(base.clone());
        forms.push(base.replace('\'', r"'\''"));
        if let Ok(json) = serde_json::to_string(base)
            && let Some(body) = json.strip_prefix('"').and_then(|j| j.strip_suffix('"'))
        {
            forms.push(body.to_owned());
        }
        let base64 = base64_unpadded(base.as_bytes());
        // The characters that depend on the value alone: the last one of a value whose
        // length is not a multiple of 3 also holds bits of whatever follows it (`echo "$V"
        // | base64` encodes a newline there).
        let determined = base.len() * 8 / 6;
        forms.push(base64[..determined].to_owned());
        forms.push(base64);
        forms.extend(url_encoded(base.as_bytes()));
        let hex: String = base.bytes().map(|b| format!("{b:02x}")).collect();
        forms.push(hex.to_uppercase());
        forms.push(hex);
    }
    forms.retain(|f| f.chars().count() >= MIN_REDACTED_LEN);
    forms
}

/// What dash's `echo` and `printf %b` print for `value` (without the trailing newline):
/// `\\`, `\a`, `\b`, `\f`, `\n`, `\r`, `\t`, `\v`, octal `\0NNN` and `\NNN`, and `\c`,
/// which ends the output; any other backslash is printed as it is. Bytes that are not
/// UTF-8 become U+FFFD, as remote output does when it is read.
fn echo_interpreted(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let octal = |b: u8| (b'0'..=b'7').contains(&b);
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = bytes[i + 1];
        i += 2;
        let simple = match next {
            b'\\' => Some(b'\\'),
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
        } else if next == b'c' {
            break;
        } else if octal(next) {
            // `\0` followed by up to three octal digits, or `\NNN` (one to three).
            let mut start = i - 1;
            if next == b'0' && bytes.get(i).copied().is_some_and(octal) {
                start = i;
            }
            let mut n: u32 = 0;
            let mut j = start;
            while j < bytes.len() && j < start + 3 && octal(bytes[j]) {
                n = n * 8 + u32::from(bytes[j] - b'0');
                j += 1;
            }
            out.push((n & 0xff) as u8);
            i = j;
        } else {
            // Unknown: the backslash stays and the character is read as usual.
            out.push(b'\\');
            i -= 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodings (RFC 3986) of `bytes` as common encoders write them: upper- and
/// lower-case hex digits; `/` escaped or not (Python's `quote`); `!'()*` escaped or not
/// (JavaScript's `encodeURIComponent`); a space as `%20` or, in form encoding, `+`.
fn url_encoded(bytes: &[u8]) -> Vec<String> {
    let mut forms = Vec::new();
    for safe in [&b""[..], b"/", b"!'()*"] {
        for plus in [false, true] {
            let mut upper = String::with_capacity(bytes.len() * 3);
            for &b in bytes {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || safe.contains(&b) {
                    upper.push(char::from(b));
                } else if plus && b == b' ' {
                    upper.push('+');
                } else {
                    upper.push_str(&format!("%{b:02X}"));
                }
            }
            // Only the hex digits after `%` change case; the rest is copied.
            let mut lower = String::with_capacity(upper.len());
            let mut after_percent = 0;
            for c in upper.chars() {
                if after_percent > 0 {
                    lower.push(c.to_ascii_lowercase());
                    after_percent -= 1;
                } else {
                    after_percent = if c == '%' { 2 } else { 0 };
                    lower.push(c);
                }
            }
            forms.push(upper);
            forms.push(lower);
        }
    }
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

    /// A canary with a space, `@`, `/`, `+`, `~` and backslash escapes (`\t`, `\\`, `\0101`
    /// and the unknown `\q`), and the forms a shell makes of it. The expected texts were
    /// produced by dash (`echo "$V"`, `printf %b "$V"`), Python's `urllib.parse` and `xxd`,
    /// not by the code under test.
    const CANARY: &str = r"c4n4ry p@ss/w\t0rd\\x\0101\q+~";

    fn canary_forms() -> Vec<(&'static str, String)> {
        vec![
            ("exact", CANARY.to_owned()),
            ("dash echo / printf %b", "c4n4ry p@ss/w\t0rd\\xA\\q+~".to_owned()),
            (
                "percent-encoded",
                "c4n4ry%20p%40ss%2Fw%5Ct0rd%5C%5Cx%5C0101%5Cq%2B~".to_owned(),
            ),
            (
                "percent-encoded, lower case",
                "c4n4ry%20p%40ss%2fw%5ct0rd%5c%5cx%5c0101%5cq%2b~".to_owned(),
            ),
            (
                "percent-encoded, / kept",
                "c4n4ry%20p%40ss/w%5Ct0rd%5C%5Cx%5C0101%5Cq%2B~".to_owned(),
            ),
            (
                "form-encoded",
                "c4n4ry+p%40ss%2Fw%5Ct0rd%5C%5Cx%5C0101%5Cq%2B~".to_owned(),
            ),
            (
                "hex",
                "63346e34727920704073732f775c743072645c5c785c303130315c712b7e".to_owned(),
            ),
            (
                "HEX",
                "63346E34727920704073732F775C743072645C5C785C303130315C712B7E".to_owned(),
            ),
            ("base64", "YzRuNHJ5IHBAc3Mvd1x0MHJkXFx4XDAxMDFccSt+".to_owned()),
            ("JSON", r"c4n4ry p@ss/w\\t0rd\\\\x\\0101\\q+~".to_owned()),
        ]
    }

    #[test]
    fn every_transform_of_a_canary_is_caught_whole_and_split_at_every_point() {
        let r = redactor(&[CANARY]);
        for (what, form) in canary_forms() {
            let text = format!("before {form} after");
            let expected = "before [REDACTED] after";
            assert_eq!(r.redact(&text), expected, "{what}: {form:?}");
            for i in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                let (a, b) = text.split_at(i);
                assert_eq!(streamed(&r, &[a, b]), expected, "{what} split at {i}");
            }
        }
    }

    #[test]
    fn trailing_newlines_stripped_by_command_substitution_are_caught() {
        // A value stored with its newline, printed after `$(…)` removed it, and its hex
        // and base64 forms then.
        let r = redactor(&["c4n4ry-n3wline\n"]);
        for form in ["c4n4ry-n3wline", "63346e3472792d6e33776c696e65", "YzRuNHJ5LW4zd2xpbmU"] {
            let text = format!("x={form}.");
            assert_eq!(r.redact(&text), "x=[REDACTED].", "{form}");
            for i in 0..=text.len() {
                let (a, b) = text.split_at(i);
                assert_eq!(streamed(&r, &[a, b]), "x=[REDACTED].", "{form} split at {i}");
            }
        }
    }

    #[test]
    fn base64_of_the_value_followed_by_a_newline_is_caught() {
        // `echo "$V" | base64`: the last character also encodes the newline.
        let r = redactor(&[CANARY]);
        let encoded = "YzRuNHJ5IHBAc3Mvd1x0MHJkXFx4XDAxMDFccSt+Cg==";
        assert_eq!(r.redact(encoded), "[REDACTED]Cg==");
        // base64("hunter22\n") and base64("hunter22x"): only the second has another 11th
        // character than base64("hunter22"), but both are caught.
        let r = redactor(&["hunter22"]);
        assert_eq!(r.redact("aHVudGVyMjIK"), "[REDACTED]K");
        assert_eq!(r.redact("aHVudGVyMjJ4"), "[REDACTED]J4");
    }

    #[test]
    fn echo_escapes_are_interpreted_as_dash_does() {
        assert_eq!(
            echo_interpreted(r"a\nb\tc\\d\ae\bf\fg\rh\vi"),
            "a\nb\tc\\d\x07e\x08f\x0cg\rh\x0bi"
        );
        assert_eq!(echo_interpreted(r"\0101\101\0\08x"), "AA\0\08x");
        assert_eq!(echo_interpreted(r"\01011"), "A1", "at most three digits after \\0");
        assert_eq!(echo_interpreted(r"keep\q\ and\"), r"keep\q\ and\");
        assert_eq!(echo_interpreted(r"c4n4ry-pr3fix\cgone"), "c4n4ry-pr3fix");
        assert_eq!(
            echo_interpreted(r"\0377"),
            "\u{fffd}",
            "not UTF-8: as remote output is read"
        );
        // `\c` cuts the output: the prefix is caught when it is long enough.
        let r = redactor(&[r"c4n4ry-pr3fix\cgone"]);
        assert_eq!(r.redact("c4n4ry-pr3fix"), "[REDACTED]");
        let r = redactor(&[r"abc\cdefgh"]);
        assert_eq!(r.redact("abc"), "abc", "a prefix shorter than 4 is not registered");
    }

    #[test]
    fn a_value_with_a_newline_escape_printed_by_echo_is_caught_across_lines() {
        let value = r"first-half\nsecond-half";
        let r = redactor(&[value]);
        let printed = "out: first-half\nsecond-half\n";
        assert_eq!(r.redact(printed), "out: [REDACTED]\n");
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
        // The longest registered form is hex("abcdefgh"), 16 bytes: 15 are held back.
        let r = redactor(&["abcdefgh"]);
        let mut stream = r.stream();
        assert_eq!(stream.push("0123456789ABCDE abc"), "0123");
        // The value is complete but straddles the cut, so it waits for the next round whole.
        assert_eq!(stream.push("defgh, a tail"), "456789ABCDE ");
        assert_eq!(stream.finish(), "[REDACTED], a tail");
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
