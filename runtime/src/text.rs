//! [`Str`]: text that is cheap to clone, slice and compare, without copying what it was cut
//! from.
//!
//! The text sources hand out their lines as `Str`s: a line of a received block is a view of
//! that block's bytes, and the words of a line ([`Str::words`]) are cut from it. Text of at
//! most [`INLINE_MAX`] bytes — most words — is held inline, in the `Str` itself: cloning it
//! copies those bytes and touches nothing shared, comparing it reads no other memory (a hash
//! table of words stays in its own cache lines), and it keeps no buffer alive. Longer text is
//! a view of the shared buffer (`Bytes`): cloning or slicing it bumps that buffer's count and
//! copies nothing. So the textbook word count — split lines into words, pair each with 1,
//! `reduce_by_key` — allocates per distinct word at most, never per word.
//!
//! A long `Str` keeps the whole buffer it views alive. Per-batch results release it with the
//! batch; a long `Str` kept longer (as a key of checkpointed state, in a cache of your own)
//! should be [`detach`](Str::detach)ed first. State restored from a checkpoint is always
//! detached.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Text of at most this many bytes is held inline in a [`Str`].
pub const INLINE_MAX: usize = 23;

/// Immutable UTF-8 text: short text inline, longer text a view of a shared buffer (`Bytes`).
/// Cheap to clone and to slice; hashed, compared and ordered exactly as the `str` it holds (so
/// a `HashMap<Str, _>` can be looked up with a `&str`).
#[derive(Clone)]
pub struct Str(Repr);

#[derive(Clone)]
enum Repr {
    /// At most [`INLINE_MAX`] bytes, held in place.
    Inline(Inline),
    /// More than [`INLINE_MAX`] bytes: a view of a shared buffer.
    Shared(ByteString),
}

/// Text of at most [`INLINE_MAX`] bytes, in place: the text in `bytes[..len]`, zeros after
/// it, and its length in the last byte. Built and compared as three aligned 8-byte words (so
/// two are equal exactly when their words are, and a word just cut from a line is read back
/// with the same 8-byte accesses it was written with, not reassembled from narrower stores).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Inline {
    bytes: [u8; INLINE_MAX + 1],
}

/// `KEEP[16 - n..][..16]` is a mask of `n` (at most 16) bytes `0xff` then zeros.
static KEEP: [u8; 32] = {
    let mut keep = [0; 32];
    let mut i = 0;
    while i < 16 {
        keep[i] = 0xff;
        i += 1;
    }
    keep
};

/// The low `n` bytes (`n <= 8`) of a `u64` set.
#[inline]
fn low_bytes(n: usize) -> u64 {
    u64::MAX.checked_shr(64 - 8 * n as u32).unwrap_or(0)
}

/// The little-endian `u64` at `bytes[at..at + 8]`.
#[inline]
fn le_u64(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map_or(0, |chunk| u64::from_le_bytes(*chunk))
}

impl Inline {
    /// `text`, which is at most [`INLINE_MAX`] bytes long (callers never pass longer text;
    /// it would be cut, at a character boundary, so the invariant below still holds).
    #[inline]
    fn new(text: &str) -> Inline {
        let mut len = text.len().min(INLINE_MAX);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        Inline::from_short(&text[..len])
    }

    /// `text` (at most [`INLINE_MAX`] bytes: a longer one goes to [`new`](Self::new), which
    /// cuts it at a character boundary — never inside a character), read with loads that
    /// stay within it — at most three 8-byte ones, overlapping for lengths between — and
    /// assembled in registers, then written as [`from_window`](Self::from_window) writes
    /// (a 16-byte and an 8-byte store). A copy byte by byte (`memcpy` of a few bytes) into the
    /// array, read back a moment later by wider loads, stalled each such load until the narrow
    /// stores retired: on classic text, most words of a line are within its last
    /// [`INLINE_MAX`] bytes, where `from_window` cannot read.
    #[inline]
    fn from_short(text: &str) -> Inline {
        if text.len() > INLINE_MAX {
            return Inline::new(text);
        }
        let text = text.as_bytes();
        let len = text.len();
        let word = |at: usize| le_u64(text, at);
        // `u32` at `at` (within `text`), widened.
        let half = |at: usize| {
            text.get(at..)
                .and_then(<[u8]>::first_chunk::<4>)
                .map_or(0, |c| u64::from(u32::from_le_bytes(*c)))
        };
        let byte = |at: usize| text.get(at).map_or(0, |&b| u64::from(b));
        // Bytes `from..len` of `text`, at the bottom of a word: read as the 8 ending at `len`
        // (`len >= 8`), shifted down.
        let rest = |from: usize| {
            word(len - 8)
                .checked_shr(8 * (from + 8 - len) as u32)
                .unwrap_or(0)
        };
        let (w0, w1, w2) = match len {
            0 => (0, 0, 0),
            1..=3 => (
                byte(0) | byte(len / 2) << (8 * (len / 2)) | byte(len - 1) << (8 * (len - 1)),
                0,
                0,
            ),
            4..=7 => (half(0) | half(len - 4) << (8 * (len - 4)), 0, 0),
            8..=15 => (word(0), rest(8), 0),
            _ => (word(0), word(8), rest(16)),
        };
        let head = (u128::from(w1) << 64 | u128::from(w0)).to_le_bytes();
        let tail = w2 | (len as u64) << 56;
        let mut bytes = [0; INLINE_MAX + 1];
        bytes[..16].copy_from_slice(&head);
        bytes[16..].copy_from_slice(&tail.to_le_bytes());
        Inline { bytes }
    }

    /// Bytes `start..start + len` of `window` (`len <= INLINE_MAX`, and `window` holds at
    /// least `start + INLINE_MAX` bytes), read as one 16-byte and one 8-byte piece, masked.
    /// Written with the same two stores (a vector and a word), so that copying the `Inline`
    /// (16 + 8 bytes) reads each back whole.
    #[inline]
    fn from_window(window: &[u8], start: usize, len: usize) -> Inline {
        let mut bytes = [0; INLINE_MAX + 1];
        if let Some(head) = window.get(start..).and_then(<[u8]>::first_chunk::<16>) {
            let keep = &KEEP[16 - len.min(16)..][..16];
            for ((byte, from), keep) in bytes.iter_mut().zip(head).zip(keep) {
                *byte = from & keep;
            }
        }
        // Bytes 16..23 of the text, from the 8 at 15 (so that no read passes byte 23), and
        // the length.
        let tail = (le_u64(window, start + 15) >> 8) & low_bytes(len.saturating_sub(16).min(7))
            | (len as u64) << 56;
        bytes[16..].copy_from_slice(&tail.to_le_bytes());
        Inline { bytes }
    }

    /// The `i`th 8-byte word (`i < 3`), little-endian (any fixed order does: it is only compared).
    #[inline]
    fn word(&self, i: usize) -> u64 {
        self.bytes
            .get(8 * i..)
            .and_then(<[u8]>::first_chunk::<8>)
            .map_or(0, |chunk| u64::from_le_bytes(*chunk))
    }

    #[inline]
    fn as_str(&self) -> &str {
        let len = usize::from(self.bytes[INLINE_MAX]).min(INLINE_MAX);
        let bytes = &self.bytes[..len];
        // SAFETY: `bytes[..len]` is valid UTF-8: `Inline::new` copies a prefix of a `&str`
        // that ends at a character boundary, `Inline::from_window` (called by `Str::cut`) the
        // bytes between two character boundaries of a `&str`, and `Str::new` makes the empty
        // text; nothing else builds or changes an `Inline`.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

impl PartialEq for Inline {
    /// Zeros past the text, its length in the last byte: equal text, equal words.
    #[inline]
    fn eq(&self, other: &Inline) -> bool {
        (self.word(0) ^ other.word(0))
            | (self.word(1) ^ other.word(1))
            | (self.word(2) ^ other.word(2))
            == 0
    }
}

/// `text` (at most [`INLINE_MAX`] bytes) held inline.
#[inline]
fn inline(text: &str) -> Repr {
    debug_assert!(text.len() <= INLINE_MAX);
    Repr::Inline(Inline::new(text))
}

impl Str {
    /// The empty text.
    pub const fn new() -> Self {
        Str(Repr::Inline(Inline {
            bytes: [0; INLINE_MAX + 1],
        }))
    }

    /// Text of a `'static` string, without copying it (or inline, if short).
    pub fn from_static(text: &'static str) -> Self {
        if text.len() <= INLINE_MAX {
            Str(inline(text))
        } else {
            Str(Repr::Shared(ByteString::from_static(text)))
        }
    }

    /// `bytes` as text: copied inline if short, else sharing them.
    ///
    /// # Errors
    ///
    /// The bytes are not valid UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        if bytes.len() <= INLINE_MAX {
            let text = std::str::from_utf8(&bytes)?;
            return Ok(Str(inline(text)));
        }
        ByteString::try_from(bytes).map(|text| Str(Repr::Shared(text)))
    }

    /// [`from_utf8`](Self::from_utf8) of a clone of `bytes`, cloned only if the text is
    /// long: a short one is copied inline from `bytes` without touching its reference count.
    pub(crate) fn from_utf8_of(bytes: &Bytes) -> Result<Self, std::str::Utf8Error> {
        if bytes.len() <= INLINE_MAX {
            let text = std::str::from_utf8(bytes)?;
            return Ok(Str(inline(text)));
        }
        Self::from_utf8(bytes.clone())
    }

    /// The text as a `str`.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(text) => text.as_str(),
            Repr::Shared(text) => text,
        }
    }

    /// Whether the text is a view of a shared buffer (it is longer than [`INLINE_MAX`]), which
    /// it keeps alive.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared(_))
    }

    /// The part of this text that `part` is (a `&str` borrowed from it, e.g. found by
    /// `split`): inline if short, else sharing the bytes.
    ///
    /// # Panics
    ///
    /// If `part` is not within this text's bytes.
    pub fn slice_ref(&self, part: &str) -> Str {
        let start = (part.as_ptr() as usize).wrapping_sub(self.as_ptr() as usize);
        assert!(
            start <= self.len() && part.len() <= self.len() - start,
            "slice_ref: the part is not within the text"
        );
        // A `&str` within the text starts and ends at character boundaries.
        self.cut(start, start + part.len())
    }

    /// Bytes `start..end` of the text (character boundaries, `start <= end <= len`).
    #[inline]
    fn cut(&self, start: usize, end: usize) -> Str {
        let text = self.as_str();
        if end - start <= INLINE_MAX {
            let len = end - start;
            let bytes = text.as_bytes();
            // A fixed-size read of the word and what follows it, masked (a few loads and
            // stores, no call to memcpy), unless the word is too near the end.
            return Str(Repr::Inline(if start + INLINE_MAX <= bytes.len() {
                Inline::from_window(bytes, start, len)
            } else {
                // Sliced as text: a cut that is not at character boundaries panics here.
                Inline::from_short(&text[start..end])
            }));
        }
        match &self.0 {
            Repr::Shared(shared) => Str(Repr::Shared(shared.slice_ref(&text[start..end]))),
            // Inline text is short: so is any part of it.
            Repr::Inline(_) => Str::from(&text[start..end]),
        }
    }

    /// The words of the text — what `str::split_whitespace` finds — each cut from it (see
    /// [`slice_ref`](Self::slice_ref)). The iterator owns a clone of the text, so a closure
    /// may return it (`flat_map(|line: &Str| line.words())`).
    #[inline]
    pub fn words(&self) -> Words {
        Words {
            text: self.clone(),
            at: 0,
        }
    }

    /// The pieces of the text between occurrences of `separator` (as `str::split`), each cut
    /// from it.
    pub fn split_on(&self, separator: char) -> Vec<Str> {
        self.as_str()
            .split(separator)
            .map(|piece| self.slice_ref(piece))
            .collect()
    }

    /// The same text without a view of a shared buffer: a long text is copied into a buffer of
    /// its own (one allocation of its length), so that it no longer keeps the buffer it was
    /// cut from alive; a short one is already inline.
    pub fn detach(&self) -> Str {
        match &self.0 {
            Repr::Inline(_) => self.clone(),
            Repr::Shared(text) => Str(Repr::Shared(ByteString::from(&**text))),
        }
    }
}

impl Default for Str {
    fn default() -> Self {
        Str::new()
    }
}

/// The words of a [`Str`], from [`Str::words`].
#[derive(Clone, Debug)]
pub struct Words {
    text: Str,
    /// Where the search for the next word starts.
    at: usize,
}

impl Iterator for Words {
    type Item = Str;

    #[inline]
    fn next(&mut self) -> Option<Str> {
        let text = self.text.as_str();
        let start = word_start(text, self.at)?;
        let end = word_end(text, start);
        self.at = end;
        Some(self.text.cut(start, end))
    }
}

/// `char::is_whitespace` for an ASCII byte: `\t \n \x0B \x0C \r` and space.
#[inline]
fn is_ascii_space(byte: u8) -> bool {
    matches!(byte, b'\t'..=b'\r' | b' ')
}

/// From byte `at` (a character boundary) of `text`, the byte index of the first character
/// that is not whitespace (as `char::is_whitespace` says), or `None` at the end.
#[inline]
fn word_start(text: &str, mut at: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    while let Some(&byte) = bytes.get(at) {
        if byte.is_ascii() {
            if !is_ascii_space(byte) {
                return Some(at);
            }
            at += 1;
        } else {
            let c = text.get(at..).and_then(|rest| rest.chars().next())?;
            if !c.is_whitespace() {
                return Some(at);
            }
            at += c.len_utf8();
        }
    }
    None
}

/// The byte 1 in each of a `u64`'s eight lanes.
const LANES: u64 = u64::from_le_bytes([1; 8]);

/// The high bit of each lane of `x` that is zero — exact for the lowest such lane (a borrow
/// only carries upwards, from a zero lane); other bits set too.
#[inline]
fn zero_lanes(x: u64) -> u64 {
    x.wrapping_sub(LANES) & !x
}

/// From byte `at` (a character boundary, not whitespace) of `text`, the byte index of the
/// first whitespace character (as `char::is_whitespace` says), or the text's length.
///
/// Eight bytes at a time while none of them can start a whitespace character: the first
/// byte of eight that is at most a space, or the lead byte of a non-ASCII whitespace character
/// (`0xC2`: U+0085 and U+00A0; `0xE1`–`0xE3`: U+1680, U+2000–U+205F and U+3000), is found with
/// a few integer operations, and only that byte is then decided exactly. Other multi-byte
/// characters (Greek, Cyrillic, most CJK) do not stop the scan.
#[inline]
fn word_end(text: &str, mut at: usize) -> usize {
    let bytes = text.as_bytes();
    loop {
        while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
            let x = u64::from_le_bytes(*chunk);
            // Each term's lowest flagged lane is exact (a borrow only carries upwards), so the
            // lowest lane flagged by any is: ASCII below 0x21 (a byte of 0x80 or more never
            // borrows and is masked by `!x`), `0xC2`, or `0xE0`–`0xE3`.
            let stop = ((x.wrapping_sub(LANES * 0x21) & !x)
                | zero_lanes(x ^ (LANES * 0xC2))
                | zero_lanes((x & (LANES * 0xFC)) ^ (LANES * 0xE0)))
                & (LANES * 0x80);
            if stop == 0 {
                at += 8;
            } else {
                at += (stop.trailing_zeros() / 8) as usize;
                break;
            }
        }
        // Byte by byte: the byte the fast path stopped at, or the last few (which may begin
        // inside a character the fast path stepped into).
        let Some(&byte) = bytes.get(at) else {
            return bytes.len();
        };
        match byte {
            0..0x80 if is_ascii_space(byte) => return at,
            0xC2 | 0xE1..=0xE3 => {
                // A lead byte: a character boundary.
                let Some(c) = text.get(at..).and_then(|rest| rest.chars().next()) else {
                    return bytes.len();
                };
                if c.is_whitespace() {
                    return at;
                }
                at += c.len_utf8();
            }
            // Not whitespace, nor the start of any: ASCII, a continuation byte, or the lead
            // byte of a character that is not whitespace.
            _ => at += 1,
        }
    }
}

impl std::iter::FusedIterator for Words {}

impl Deref for Str {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Str {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for Str {
    #[inline]
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for Str {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for Str {
    #[inline]
    fn eq(&self, other: &Str) -> bool {
        match (&self.0, &other.0) {
            // Zeros past the text (see `Inline`): equal text, equal fields.
            (Repr::Inline(a), Repr::Inline(b)) => a == b,
            // Longer text is never inline, so an inline and a shared text differ; compared as
            // text all the same.
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for Str {}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Str) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Str {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Str> for &str {
    fn eq(&self, other: &Str) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Str> for String {
    fn eq(&self, other: &Str) -> bool {
        self == other.as_str()
    }
}

impl From<String> for Str {
    /// Inline if short (the string is dropped), else takes the string's buffer (no copy).
    fn from(text: String) -> Self {
        if text.len() <= INLINE_MAX {
            Str(inline(&text))
        } else {
            Str(Repr::Shared(ByteString::from(text)))
        }
    }
}

impl From<&str> for Str {
    /// Copies the text.
    fn from(text: &str) -> Self {
        if text.len() <= INLINE_MAX {
            Str(inline(text))
        } else {
            Str(Repr::Shared(ByteString::from(text)))
        }
    }
}

impl From<Str> for String {
    fn from(text: Str) -> Self {
        text.as_str().to_owned()
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl Serialize for Str {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Str {
    /// Inline or into a buffer of its own (restored state never pins a block).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Str::from)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::{BuildHasher, RandomState};

    use proptest::prelude::*;

    use super::*;

    /// Whether `text` lies within `block`'s bytes.
    fn within(text: &str, block: &Bytes) -> bool {
        let (start, end) = (
            block.as_ptr() as usize,
            block.as_ptr() as usize + block.len(),
        );
        let at = text.as_ptr() as usize;
        start <= at && at + text.len() <= end
    }

    #[test]
    fn short_words_are_inline_and_long_ones_views_of_the_line() {
        let long = "abcdefghijklmnopqrstuvwxyz"; // 26 bytes: more than INLINE_MAX
        let block = Bytes::from(format!("  one\ttwo  {long}\u{3000}vier\n"));
        let line = Str::from_utf8(block.clone()).expect("utf-8");
        assert!(line.is_shared() && within(&line, &block));
        let words: Vec<Str> = line.words().collect();
        assert_eq!(words, ["one", "two", long, "vier"]);
        for word in &words {
            assert_eq!(word.is_shared(), word.len() > INLINE_MAX, "{word:?}");
            assert_eq!(within(word, &block), word.is_shared(), "{word:?}");
        }
        assert_eq!(Str::from_static(" \t ").words().count(), 0);
        assert_eq!(Str::new().words().next(), None);
        assert!(
            std::mem::size_of::<Str>() <= 40,
            "{}",
            std::mem::size_of::<Str>()
        );
    }

    #[test]
    fn inline_words_compare_by_their_text_not_what_followed_them() {
        let line = Str::from("ab cd ab ce abc ab\tab");
        let words: Vec<Str> = line.words().collect();
        assert_eq!(words[0], words[2]);
        assert_eq!(words[0], words[5]);
        assert_eq!(words[0], words[6]);
        assert_ne!(words[0], words[4]);
        assert_ne!(words[1], words[3]);
        let mut counts: HashMap<Str, u64> = HashMap::new();
        for word in line.words() {
            *counts.entry(word).or_default() += 1;
        }
        assert_eq!(counts.get("ab"), Some(&4));
        assert_eq!(counts.len(), 4);
        // Non-ASCII words and whitespace, and words ending at the line's end.
        let line = Str::from("grüße\u{3000}grüße\u{a0}grüßen x grüße");
        let words: Vec<Str> = line.words().collect();
        assert_eq!(words, ["grüße", "grüße", "grüßen", "x", "grüße"]);
        assert_eq!(words[0], words[4]);
    }

    #[test]
    #[should_panic(expected = "not within the text")]
    fn slice_ref_refuses_a_foreign_part() {
        let _ = Str::from("one two").slice_ref("one");
    }

    #[test]
    #[should_panic(expected = "not within the text")]
    fn slice_ref_refuses_a_long_foreign_part_of_short_text() {
        let _ = Str::from("one two").slice_ref("a part longer than the inline limit");
    }

    #[test]
    fn hashes_and_compares_as_str() {
        let state = RandomState::new();
        let word = Str::from("grüße");
        let long = Str::from("grüße aus einer sehr langen zeile");
        assert!(long.is_shared());
        assert_eq!(
            state.hash_one(&long),
            state.hash_one("grüße aus einer sehr langen zeile")
        );
        assert_eq!(state.hash_one(&word), state.hash_one("grüße"));
        let mut counts: HashMap<Str, u64> = HashMap::new();
        *counts.entry(word.clone()).or_default() += 2;
        assert_eq!(counts.get("grüße"), Some(&2));
        let long = "b".repeat(INLINE_MAX + 1);
        let mut sorted = vec![Str::from("b"), Str::from(long.as_str()), Str::from("a")];
        sorted.sort();
        assert_eq!(sorted, ["a", "b", long.as_str()]);
        assert_eq!(word, "grüße");
        assert_eq!(String::from(word.clone()), "grüße");
    }

    #[test]
    fn not_utf8_is_refused() {
        assert!(Str::from_utf8(Bytes::from_static(b"\xff\xfe")).is_err());
    }

    #[test]
    fn detach_copies_and_serde_round_trips() {
        let long = "a-word-longer-than-the-inline-limit";
        let block = Bytes::from(format!("alpha {long}"));
        let line = Str::from_utf8(block.clone()).expect("utf-8");
        let word = line.words().nth(1).expect("two words");
        assert!(word.is_shared() && within(&word, &block));
        let own = word.detach();
        assert_eq!(own, word);
        assert!(!within(&own, &block), "a detached text is a copy");
        let bytes = postcard::to_allocvec(&word).expect("encode");
        assert_eq!(bytes, postcard::to_allocvec(long).expect("encode"));
        let back: Str = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, long);
        assert!(!within(&back, &block));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Any text of at most `INLINE_MAX` bytes is held exactly, zeros after it, its length
        /// last, whichever way it is built: alone, or cut from a longer line anywhere.
        #[test]
        fn short_text_is_held_exactly(text in "\\PC{0,23}", before in "[a-z ]{0,30}", after in "[a-z ]{0,30}") {
            let mut n = text.len().min(INLINE_MAX);
            while !text.is_char_boundary(n) {
                n -= 1;
            }
            let text = text[..n].to_owned();
            let alone = Inline::new(&text);
            prop_assert_eq!(alone.as_str(), text.as_str());
            prop_assert!(alone.bytes[text.len()..INLINE_MAX].iter().all(|&b| b == 0));
            prop_assert_eq!(usize::from(alone.bytes[INLINE_MAX]), text.len());
            let line = Str::from(format!("{before}{text}{after}").as_str());
            let cut = line.cut(before.len(), before.len() + text.len());
            prop_assert!(!cut.is_shared());
            prop_assert_eq!(cut.as_str(), text.as_str());
            prop_assert!(cut == Str(Repr::Inline(alone)));
        }

        /// `words` finds exactly what `split_whitespace` finds, on any text.
        #[test]
        fn words_match_split_whitespace(
            text in "(\\PC|[ \t\n\r\u{0B}\u{0C}\u{1C}\u{85}\u{a0}\u{1680}\u{2000}-\u{200B}\u{2028}\u{2029}\u{202F}\u{205F}\u{3000}\u{3001}αжあ山])*",
        ) {
            let line = Str::from(text.as_str());
            let ours: Vec<Str> = line.words().collect();
            let std: Vec<&str> = text.split_whitespace().collect();
            // Each word equal to a copy of it (inline text cut from a line compares whole).
            for (word, copy) in ours.iter().zip(&std) {
                prop_assert_eq!(word, &Str::from(*copy));
            }
            prop_assert_eq!(ours, std);
        }
    }
}
