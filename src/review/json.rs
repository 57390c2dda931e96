//! A strict, borrowing JSON reader for the review types: serde's `Deserializer` for the subset of
//! JSON and of serde's data model they use, with a tight skip of the values no decision reads.
//!
//! It is a fast path, not a second source of truth: [`from_str`] either returns what
//! `serde_json::from_str` returns for the same text, or refuses ([`Rejected`]) and the caller
//! decodes again with serde_json, whose answer (value or error, with its message) stands. So it
//! only has to refuse everything serde_json refuses; refusing more (an array read as a struct,
//! a decoded float, nesting past [`MAX_DEPTH`], a lone surrogate) only costs the second decode.
//! serde_json spends most of a Pod review skipping `managedFields`, `env`, `status` and the like
//! byte by byte; this reader scans strings eight bytes at a time and never builds anything it
//! skips.

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Open arrays and objects at most, skipped ones included. serde_json refuses a 128th level of
/// the values it decodes (and skips without limit), so this is never more permissive.
const MAX_DEPTH: usize = 127;

/// serde_json's name for the newtype a `&RawValue` asks for (its `raw_value` feature).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// The text is outside what this reader takes: decode it with serde_json instead. Carries no
/// content (a TokenReview's body holds a bearer token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outside the strict reader's subset")
    }
}

impl std::error::Error for Rejected {}

impl de::Error for Rejected {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Rejected
    }
}

type Result<T> = std::result::Result<T, Rejected>;

/// Decodes `T` from the whole of `text` (whitespace around the value only), as
/// `serde_json::from_str` would, or refuses.
pub fn from_str<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let value = T::deserialize(&mut reader)?;
    reader.skip_whitespace();
    if reader.pos == reader.bytes.len() {
        Ok(value)
    } else {
        Err(Rejected)
    }
}

struct Reader<'de> {
    text: &'de str,
    bytes: &'de [u8],
    pos: usize,
    /// Arrays and objects open around `pos`.
    depth: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `word` that ends a plain run of string content: `"`, `\` or a
/// control character. The lowest set bit is exact (borrows only travel upwards).
#[inline]
fn specials(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    (zero(quote) | zero(backslash) | word.wrapping_sub(ONES * 0x20) & !word) & HIGHS
}

fn hex(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Where whitespace ends from `pos`.
#[inline(always)]
fn skip_whitespace(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// Where the plain content of a string from `pos` ends: the first `"`, `\` or control byte, or
/// the end of the text.
#[inline(always)]
fn plain_end(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let found = specials(u64::from_le_bytes(word));
        if found != 0 {
            return pos + (found.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while let Some(&b) = bytes.get(pos) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        pos += 1;
    }
    pos
}

/// The string whose content starts at `pos`: where its closing `"` is, and whether it has
/// escapes (each checked: a lone surrogate is refused).
#[inline(always)]
fn string_end(bytes: &[u8], mut pos: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        pos = plain_end(bytes, pos);
        match bytes.get(pos) {
            Some(b'"') => return Some((pos, escaped)),
            Some(b'\\') => {
                pos = escape(bytes, pos)?.1;
                escaped = true;
            }
            _ => return None,
        }
    }
}

/// The escape whose `\` is at `pos`: the character, and where it ends.
#[inline(never)]
fn escape(bytes: &[u8], pos: usize) -> Option<(char, usize)> {
    let simple = match *bytes.get(pos + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let first = hex4(bytes, pos + 2)?;
            return match first {
                0xD800..=0xDBFF => {
                    // Only a pair makes a character; a lone half is refused.
                    if bytes.get(pos + 6..pos + 8)? != b"\\u" {
                        return None;
                    }
                    let second = hex4(bytes, pos + 8)?;
                    if !(0xDC00..=0xDFFF).contains(&second) {
                        return None;
                    }
                    let code = 0x10000
                        + ((u32::from(first) - 0xD800) << 10)
                        + (u32::from(second) - 0xDC00);
                    Some((char::from_u32(code)?, pos + 12))
                }
                0xDC00..=0xDFFF => None,
                _ => Some((char::from_u32(u32::from(first))?, pos + 6)),
            };
        }
        _ => return None,
    };
    Some((simple, pos + 2))
}

fn hex4(bytes: &[u8], pos: usize) -> Option<u16> {
    let mut n = 0;
    for &d in bytes.get(pos..pos + 4)? {
        n = n * 16 + hex(d)?;
    }
    Some(n)
}

/// Where the digits from `pos` end.
#[inline(always)]
fn digits(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b'0'..=b'9') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// Where at least one digit from `pos` ends.
#[inline(always)]
fn some_digits(bytes: &[u8], pos: usize) -> Option<usize> {
    let end = digits(bytes, pos);
    (end > pos).then_some(end)
}

/// Where the number at `pos` ends (JSON's grammar: no leading zeros, `+`, `.5`, `1.` or bare
/// `e`).
fn number_end(bytes: &[u8], mut pos: usize) -> Option<usize> {
    if bytes.get(pos) == Some(&b'-') {
        pos += 1;
    }
    pos = match bytes.get(pos)? {
        b'0' => pos + 1,
        b'1'..=b'9' => digits(bytes, pos + 1),
        _ => return None,
    };
    if bytes.get(pos) == Some(&b'.') {
        pos = some_digits(bytes, pos + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = bytes.get(pos) {
            pos += 1;
        }
        pos = some_digits(bytes, pos)?;
    }
    Some(pos)
}

/// Where `word` (a literal) at `pos` ends.
#[inline(always)]
fn literal_end(bytes: &[u8], pos: usize, word: &[u8]) -> Option<usize> {
    let end = pos + word.len();
    (bytes.get(pos..end)? == word).then_some(end)
}

/// Where `"key" :` inside an object, from `pos`, ends.
#[inline(always)]
fn key_end(bytes: &[u8], pos: usize) -> Option<usize> {
    let pos = skip_whitespace(bytes, pos);
    if bytes.get(pos) != Some(&b'"') {
        return None;
    }
    let pos = skip_whitespace(bytes, string_end(bytes, pos + 1)?.0 + 1);
    (bytes.get(pos) == Some(&b':')).then_some(pos + 1)
}

/// Nesting inside one skipped value at most: its open containers are the bits of a word. Deeper
/// values (no Kubernetes object has them) are refused, and serde_json decides.
const SKIP_DEPTH: usize = 64;

/// Where the value from `pos` ends, its grammar checked, without recursion: the open containers
/// are bits of a word (set: object), at most [`SKIP_DEPTH`], and at most [`MAX_DEPTH`] with the
/// `outer` already around it.
fn value_end(bytes: &[u8], mut pos: usize, outer: usize) -> Option<usize> {
    let limit = MAX_DEPTH.saturating_sub(outer).min(SKIP_DEPTH);
    let mut objects: u64 = 0;
    let mut depth = 0;
    'value: loop {
        pos = skip_whitespace(bytes, pos);
        match *bytes.get(pos)? {
            b'"' => pos = string_end(bytes, pos + 1)?.0 + 1,
            b'{' => {
                let inner = skip_whitespace(bytes, pos + 1);
                if bytes.get(inner) == Some(&b'}') {
                    pos = inner + 1;
                } else {
                    depth += 1;
                    if depth > limit {
                        return None;
                    }
                    objects = objects << 1 | 1;
                    pos = key_end(bytes, inner)?;
                    continue 'value;
                }
            }
            b'[' => {
                let inner = skip_whitespace(bytes, pos + 1);
                if bytes.get(inner) == Some(&b']') {
                    pos = inner + 1;
                } else {
                    depth += 1;
                    if depth > limit {
                        return None;
                    }
                    objects <<= 1;
                    pos = inner;
                    continue 'value;
                }
            }
            b't' => pos = literal_end(bytes, pos, b"true")?,
            b'f' => pos = literal_end(bytes, pos, b"false")?,
            b'n' => pos = literal_end(bytes, pos, b"null")?,
            b'-' | b'0'..=b'9' => pos = number_end(bytes, pos)?,
            _ => return None,
        }
        // After a value: close containers until one continues with a comma.
        while depth > 0 {
            pos = skip_whitespace(bytes, pos);
            let in_object = objects & 1 == 1;
            match *bytes.get(pos)? {
                b',' => {
                    pos = if in_object {
                        key_end(bytes, pos + 1)?
                    } else {
                        pos + 1
                    };
                    continue 'value;
                }
                b'}' if in_object => {}
                b']' if !in_object => {}
                _ => return None,
            }
            pos += 1;
            objects >>= 1;
            depth -= 1;
        }
        return Some(pos);
    }
}

impl<'de> Reader<'de> {
    #[inline]
    fn skip_whitespace(&mut self) {
        self.pos = skip_whitespace(self.bytes, self.pos);
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline]
    fn peek_token(&mut self) -> Result<u8> {
        self.skip_whitespace();
        self.bytes.get(self.pos).copied().ok_or(Rejected)
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Result<()> {
        if self.peek_token()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(Rejected)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        self.pos = literal_end(self.bytes, self.pos, word).ok_or(Rejected)?;
        Ok(())
    }

    fn open(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Rejected)
        } else {
            Ok(())
        }
    }

    /// Reads a string whose opening `"` is at `pos`: borrowed when it has no escapes.
    fn string(&mut self) -> Result<Text<'de>> {
        let start = self.pos + 1;
        let (end, escaped) = string_end(self.bytes, start).ok_or(Rejected)?;
        self.pos = end + 1;
        let raw = self.text.get(start..end).ok_or(Rejected)?;
        if !escaped {
            return Ok(Text::Borrowed(raw));
        }
        // Escapes were checked by `string_end`: decode them.
        let bytes = raw.as_bytes();
        let mut owned = String::with_capacity(raw.len());
        let mut run = 0;
        loop {
            let at = plain_end(bytes, run);
            owned.push_str(raw.get(run..at).ok_or(Rejected)?);
            if at == bytes.len() {
                return Ok(Text::Owned(owned));
            }
            let (c, next) = escape(bytes, at).ok_or(Rejected)?;
            owned.push(c);
            run = next;
        }
    }

    /// Reads an integer to be decoded: `0` or `-?[1-9][0-9]{0,17}` (fits an i64). Fractions,
    /// exponents, `-0` and longer numbers are refused: serde_json reads them as floats, or as
    /// integers out of range, which no review field takes.
    fn integer(&mut self) -> Result<Integer> {
        let bytes = self.bytes;
        let negative = bytes.get(self.pos) == Some(&b'-');
        let start = self.pos + usize::from(negative);
        let end = match bytes.get(start) {
            Some(b'0') if !negative => start + 1,
            Some(b'1'..=b'9') => digits(bytes, start + 1),
            _ => return Err(Rejected),
        };
        if end - start > 18 || matches!(bytes.get(end), Some(b'.' | b'e' | b'E' | b'0'..=b'9')) {
            return Err(Rejected);
        }
        self.pos = end;
        let mut n: i64 = 0;
        for &d in &bytes[start..end] {
            n = n * 10 + i64::from(d - b'0');
        }
        Ok(if negative {
            Integer::Negative(-n)
        } else {
            Integer::Positive(n.unsigned_abs())
        })
    }

    /// Skips one value, checking it.
    fn skip_value(&mut self) -> Result<()> {
        self.pos = value_end(self.bytes, self.pos, self.depth).ok_or(Rejected)?;
        Ok(())
    }

    fn visit_string<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        if self.peek_token()? != b'"' {
            return Err(Rejected);
        }
        match self.string()? {
            Text::Borrowed(s) => visitor.visit_borrowed_str(s),
            Text::Owned(s) => visitor.visit_string(s),
        }
    }

    fn visit_integer<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.skip_whitespace();
        match self.integer()? {
            Integer::Positive(n) => visitor.visit_u64(n),
            Integer::Negative(n) => visitor.visit_i64(n),
        }
    }
}

enum Text<'de> {
    Borrowed(&'de str),
    Owned(String),
}

enum Integer {
    Positive(u64),
    Negative(i64),
}

impl<'de> Deserializer<'de> for &mut Reader<'de> {
    type Error = Rejected;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek_token()? {
            b'{' => self.deserialize_map(visitor),
            b'[' => self.deserialize_seq(visitor),
            b'"' => self.visit_string(visitor),
            b't' | b'f' => self.deserialize_bool(visitor),
            b'n' => self.deserialize_unit(visitor),
            _ => self.visit_integer(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek_token()? {
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            _ => Err(Rejected),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_integer(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_integer(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_integer(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_integer(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_integer(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_integer(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_integer(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_integer(visitor)
    }

    /// No review field decodes a float: refused, serde_json decides.
    fn deserialize_f32<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(Rejected)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(Rejected)
    }
    fn deserialize_char<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(Rejected)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(Rejected)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(Rejected)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_string(visitor)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_string(visitor)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_string(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek_token()? == b'n' {
            self.literal(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek_token()? != b'n' {
            return Err(Rejected);
        }
        self.literal(b"null")?;
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name != RAW_VALUE_TOKEN {
            return visitor.visit_newtype_struct(self);
        }
        // A `&RawValue`: the value's text without the whitespace around it, handed over the
        // way serde_json does (a one-entry map keyed by its token).
        self.skip_whitespace();
        let start = self.pos;
        self.skip_value()?;
        let raw = self.text.get(start..self.pos).ok_or(Rejected)?;
        visitor.visit_map(RawValueAccess { raw: Some(raw) })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek_token()? != b'[' {
            return Err(Rejected);
        }
        self.pos += 1;
        self.open()?;
        let mut access = Sequence {
            reader: self,
            first: true,
            done: false,
        };
        let value = visitor.visit_seq(&mut access)?;
        if !access.done {
            return Err(Rejected);
        }
        self.depth -= 1;
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value> {
        Err(Rejected)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value> {
        Err(Rejected)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek_token()? != b'{' {
            return Err(Rejected);
        }
        self.pos += 1;
        self.open()?;
        let mut access = Object {
            reader: self,
            first: true,
            done: false,
        };
        let value = visitor.visit_map(&mut access)?;
        if !access.done {
            return Err(Rejected);
        }
        self.depth -= 1;
        Ok(value)
    }

    /// Objects only: serde_json also reads a struct from an array, by position, which no
    /// apiserver sends; refused here, serde_json decides.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    /// Unit variants written as strings only (the apiVersion and kind enums).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        if self.peek_token()? != b'"' {
            return Err(Rejected);
        }
        match self.string()? {
            Text::Borrowed(s) => visitor.visit_enum(BorrowedStrDeserializer::<Rejected>::new(s)),
            Text::Owned(s) => {
                visitor.visit_enum(de::IntoDeserializer::<Rejected>::into_deserializer(s))
            }
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip_value()?;
        visitor.visit_unit()
    }
}

/// The entries of an object whose `{` was read.
struct Object<'r, 'de> {
    reader: &'r mut Reader<'de>,
    first: bool,
    done: bool,
}

impl<'de> MapAccess<'de> for &mut Object<'_, 'de> {
    type Error = Rejected;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.done {
            return Err(Rejected);
        }
        let reader = &mut *self.reader;
        match reader.peek_token()? {
            b'}' => {
                // `{}`, or the end after an entry; `{"a":1,}` never gets here (a key follows `,`).
                reader.pos += 1;
                self.done = true;
                return Ok(None);
            }
            b',' if !self.first => {
                reader.pos += 1;
                if reader.peek_token()? != b'"' {
                    return Err(Rejected);
                }
            }
            b'"' if self.first => {}
            _ => return Err(Rejected),
        }
        self.first = false;
        let key = seed.deserialize(Key(&mut *reader))?;
        reader.expect(b':')?;
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }
}

/// The elements of an array whose `[` was read.
struct Sequence<'r, 'de> {
    reader: &'r mut Reader<'de>,
    first: bool,
    done: bool,
}

impl<'de> SeqAccess<'de> for &mut Sequence<'_, 'de> {
    type Error = Rejected;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.done {
            return Err(Rejected);
        }
        let reader = &mut *self.reader;
        match reader.peek_token()? {
            b']' => {
                reader.pos += 1;
                self.done = true;
                return Ok(None);
            }
            b',' if !self.first => reader.pos += 1,
            _ if self.first => {}
            _ => return Err(Rejected),
        }
        self.first = false;
        seed.deserialize(&mut *reader).map(Some)
    }
}

/// An object key: always a string, whatever type asks for it.
struct Key<'r, 'de>(&'r mut Reader<'de>);

impl<'de> Deserializer<'de> for Key<'_, 'de> {
    type Error = Rejected;

    /// `next_key_seed` saw the opening `"`.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0.string()? {
            Text::Borrowed(s) => visitor.visit_borrowed_str(s),
            Text::Owned(s) => visitor.visit_string(s),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// serde_json's handover of a `&RawValue`: one entry, its token as key, the text as value.
struct RawValueAccess<'de> {
    raw: Option<&'de str>,
}

impl<'de> MapAccess<'de> for RawValueAccess<'de> {
    type Error = Rejected;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.raw.is_none() {
            return Ok(None);
        }
        seed.deserialize(BorrowedStrDeserializer::new(RAW_VALUE_TOKEN))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        let raw = self.raw.take().ok_or(Rejected)?;
        seed.deserialize(BorrowedStrDeserializer::new(raw))
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde::de::IgnoredAny;

    use super::*;
    use crate::review::admission::AdmissionReview;
    use crate::review::image::ImageReview;
    use crate::review::object::{MetaOnly, ObjectOnly, ObjectView};
    use crate::review::token::TokenReview;

    type Projected<'a> = AdmissionReview<'a, ObjectOnly<ObjectView<'a>>>;

    const POD: &str = include_str!("../../tests/data/pod-admission-review.json");
    const WIRE: [&str; 6] = [
        include_str!("../../tests/data/wire/admission.v1.pod-update.json"),
        include_str!("../../tests/data/wire/admission.v1beta1.pod-ephemeralcontainers.json"),
        include_str!("../../tests/data/wire/admission.v1.response-denied.json"),
        include_str!("../../tests/data/wire/imagepolicy.v1alpha1.request.json"),
        include_str!("../../tests/data/wire/authentication.v1.request.json"),
        include_str!("../../tests/data/wire/authentication.v1beta1.response-error.json"),
    ];

    /// Both readers on `text` as `T`: the strict one may refuse, but what it accepts serde_json
    /// accepts with the same value. Returns whether the strict reader accepted.
    fn agrees<'a, T: Deserialize<'a> + Debug>(text: &'a str) -> bool {
        let Ok(fast) = from_str::<T>(text) else {
            return false;
        };
        match serde_json::from_str::<T>(text) {
            Ok(slow) => assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "on {text}"),
            Err(e) => panic!("accepted what serde_json refuses ({e}): {text}"),
        }
        true
    }

    /// Every review type the handlers decode; true when the strict reader accepted any.
    fn agrees_as_every_review(text: &str) -> bool {
        let token = match (
            from_str::<TokenReview<'_>>(text),
            serde_json::from_str::<TokenReview<'_>>(text),
        ) {
            (Ok(fast), Ok(slow)) => {
                // Debug redacts the token: compare it on its own.
                let token = |r: &TokenReview<'_>| r.spec.as_ref().map(|s| s.token.0.to_string());
                assert_eq!(token(&fast), token(&slow), "on {text}");
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "on {text}");
                true
            }
            (Ok(_), Err(e)) => panic!("accepted a TokenReview serde_json refuses ({e}): {text}"),
            (Err(_), _) => false,
        };
        let results = [
            agrees::<Projected<'_>>(text),
            agrees::<AdmissionReview<'_, ObjectOnly<MetaOnly<'_>>>>(text),
            agrees::<AdmissionReview<'_, IgnoredAny>>(text),
            agrees::<ImageReview<'_>>(text),
            token,
        ];
        results.iter().any(|&accepted| accepted)
    }

    /// Refused by both readers as `T`.
    fn both_refuse<'a, T: Deserialize<'a> + Debug>(text: &'a str) {
        assert!(
            from_str::<T>(text).is_err(),
            "strict reader accepted {text}"
        );
        assert!(
            serde_json::from_str::<T>(text).is_err(),
            "serde_json accepted {text}"
        );
    }

    #[test]
    fn every_fixture_decodes_on_the_fast_path_as_serde_json_decodes_it() {
        assert!(
            agrees::<Projected<'_>>(POD),
            "the Pod review takes the fast path"
        );
        for text in WIRE {
            assert!(agrees_as_every_review(text), "no fast path for {text}");
        }
    }

    #[test]
    fn strings_borrow_unless_escaped_and_escapes_decode_as_serde_json_decodes_them() {
        let s: &str = from_str(r#" "plain" "#).expect("borrowed");
        assert_eq!(s, "plain");
        for text in [
            r#""\"\\\/\b\f\n\r\t""#,
            r#""a\u00e9b\u20ACc\uD83D\uDE00d""#,
            r#""\u0000""#,
            "\"z\u{f6}\u{1F600}\\n\"",
            r#""0123456789abcdef\n0123456789abcdef\"0123456789""#,
        ] {
            assert!(agrees::<String>(text), "{text}");
        }
        // Lone surrogates: serde_json refuses them in strings it decodes, so does this reader.
        for text in [r#""\uD83D""#, r#""\uDE00x""#, r#""\uD83D\u0041""#] {
            both_refuse::<String>(text);
        }
        // Bad escapes, control characters, unterminated strings.
        for text in [
            r#""\x""#,
            r#""\u12G4""#,
            r#""\u12""#,
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "\"new\nline\"",
            r#""open"#,
            r#""esc\"#,
        ] {
            both_refuse::<String>(text);
            both_refuse::<IgnoredAny>(text);
        }
        // The same in a field nothing reads is refused too.
        let skipped = POD.replacen(
            r#""managedFields":"#,
            "\"x\":\"a\u{1}b\",\"managedFields\":",
            1,
        );
        both_refuse::<Projected<'_>>(&skipped);
    }

    #[test]
    fn numbers_follow_json_grammar_where_skipped_and_only_integers_decode() {
        for good in [
            "0",
            "-0",
            "12",
            "-3.25e+10",
            "1E5",
            "0.5",
            "1e-0",
            "123456789012345678901234",
        ] {
            assert!(agrees::<IgnoredAny>(good), "{good}");
        }
        for bad in [
            "01", "-", "1.", ".5", "+1", "1e", "1e+", "--1", "0x10", "1.e5", "-01", "NaN",
        ] {
            both_refuse::<IgnoredAny>(bad);
        }
        assert_eq!(from_str::<i32>("-42"), Ok(-42));
        assert_eq!(from_str::<u8>("0"), Ok(0));
        // Floats, -0 and out-of-range integers go to serde_json, which decides.
        for deferred in ["1.0", "-0", "1e3", "4294967296", "1234567890123456789"] {
            assert!(from_str::<i32>(deferred).is_err(), "{deferred}");
        }
        both_refuse::<u8>("300");
        both_refuse::<Option<bool>>("1");
    }

    #[test]
    fn structure_errors_are_refused_as_serde_json_refuses_them() {
        for bad in [
            "",
            " ",
            "{",
            "[",
            "{]",
            "[}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{\"a\":}",
            "{1:2}",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "tru",
            "nul",
            "falsey",
            "[1]]",
            "{}}",
            "{} x",
            "{}{}",
            "\u{feff}{}",
        ] {
            both_refuse::<IgnoredAny>(bad);
        }
        // Trailing garbage after a whole review, and a truncated review.
        both_refuse::<Projected<'_>>(&format!("{POD}x"));
        both_refuse::<Projected<'_>>(&format!("{POD},{{}}"));
        both_refuse::<Projected<'_>>(&POD[..POD.len() - 2]);
        assert!(agrees::<Projected<'_>>(&format!(" \n\t{POD}\r\n ")));
    }

    #[test]
    fn shapes_the_review_types_refuse_are_refused() {
        let swap = |from: &str, to: &str| {
            assert!(POD.contains(from), "{from}");
            POD.replacen(from, to, 1)
        };
        // Duplicate fields: serde's derive refuses them, through either reader.
        both_refuse::<Projected<'_>>(&swap(r#""uid":"#, r#""uid":"dup","uid":"#));
        both_refuse::<Projected<'_>>(&swap(
            r#""containers":"#,
            r#""containers":[],"containers":"#,
        ));
        // null where a string or an object belongs.
        both_refuse::<Projected<'_>>(&swap(r#""uid":"#, r#""uid":null,"x":"#));
        both_refuse::<Projected<'_>>(&swap(r#""metadata":{"#, r#""metadata":null,"y":{"#));
        // A wrong apiVersion, a number where a string belongs.
        both_refuse::<Projected<'_>>(&swap("admission.k8s.io/v1", "admission.k8s.io/v2"));
        both_refuse::<Projected<'_>>(&swap(r#""operation":"CREATE""#, r#""operation":1"#));
        // An array where an object belongs: ObjectOnly refuses it; so does this reader.
        both_refuse::<Projected<'_>>(&swap(r#""metadata":{"#, r#""metadata":[],"z":{"#));
        // serde_json reads a struct from an array by position; this reader leaves that to it.
        let positional = swap(
            r#""kind":{"group":"","version":"v1","kind":"Pod"}"#,
            r#""kind":["","v1","Pod"]"#,
        );
        assert!(from_str::<Projected<'_>>(&positional).is_err());
        assert!(serde_json::from_str::<Projected<'_>>(&positional).is_ok());
        // Null for optional parts and unknown fields of any shape are fine.
        let nulls = swap(
            r#""labels":{"#,
            r#""labels":null,"unknown":[{"a":[1,{"b":null}]}],"q":{"#,
        );
        assert!(agrees::<Projected<'_>>(&nulls));
    }

    #[test]
    fn nesting_is_bounded_without_recursion_and_never_beyond_serde_json() {
        // A skipped value nested far deeper than the bound: refused here without recursing
        // (serde_json skips it without limit, and then decides).
        for depth in [63, 64, 65, 126, 127, 128, 5000, 1_000_000] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let text = format!(
                    r#"{{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","metadata":{}1{}}}"#,
                    open.repeat(depth),
                    close.repeat(depth)
                );
                let fast = from_str::<ImageReview<'_>>(&text);
                assert_eq!(fast.is_ok(), depth <= SKIP_DEPTH, "depth {depth}");
                agrees::<ImageReview<'_>>(&text);
            }
        }
        // Values decoded past serde_json's limit (a `Value` decodes every level): both refuse,
        // and at the limit the strict reader never accepts what serde_json refuses.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        both_refuse::<serde_json::Value>(&deep);
        for depth in [120, 126, 127, 128, 129] {
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                agrees::<serde_json::Value>(&nested),
                depth <= MAX_DEPTH,
                "{depth}"
            );
            agrees::<IgnoredAny>(&nested);
            // Unbalanced at the same depth.
            both_refuse::<IgnoredAny>(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth - 1)));
        }
    }

    #[test]
    fn raw_values_are_the_text_serde_json_keeps() {
        let text = r#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","metadata": {"a" : [1, "x"]} ,"spec":{"containers":[{"image":"a"}]}}"#;
        let fast: ImageReview<'_> = from_str(text).expect("fast path");
        let slow: ImageReview<'_> = serde_json::from_str(text).expect("serde_json");
        assert_eq!(fast.metadata.map(|m| m.get()), Some(r#"{"a" : [1, "x"]}"#));
        assert_eq!(
            fast.metadata.map(|m| m.get()),
            slow.metadata.map(|m| m.get())
        );
    }

    /// A small deterministic generator (xorshift), so the test is the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Bytes and snippets that change JSON's meaning where they land.
    const PIECES: [&str; 30] = [
        "\"",
        "\\",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "0",
        "-",
        ".",
        "e",
        " ",
        "n",
        "\u{1}",
        "u",
        "null",
        "true",
        "[]",
        "{}",
        "\\u",
        "\\uD800",
        "\\uDC00",
        "01",
        "1.",
        "\"\":",
        "\t",
        "é",
        ",\"uid\":\"x\"",
        "[[[[",
    ];

    fn mutate(rng: &mut Rng, text: &str) -> String {
        let mut out = text.as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(out.len() + 1);
            match rng.below(5) {
                0 => {
                    let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                    out.splice(at..at, piece.iter().copied());
                }
                1 if at < out.len() => {
                    out.remove(at);
                }
                2 if at < out.len() => {
                    out[at] = PIECES[rng.below(16)].as_bytes()[0];
                }
                3 => {
                    let end = (at + rng.below(64)).min(out.len());
                    let span = out[at..end].to_vec();
                    out.splice(at..at, span);
                }
                _ => out.truncate(at.max(1)),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn mutated_reviews_decode_as_serde_json_decodes_them_or_go_to_it() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        let mut total = 0;
        for seed in std::iter::once(POD).chain(WIRE) {
            for _ in 0..1500 {
                let text = mutate(&mut rng, seed);
                total += 1;
                if agrees_as_every_review(&text) {
                    accepted += 1;
                }
            }
        }
        // The mutations are not all fatal: the comparison saw decoded values, not only errors.
        assert!(accepted > total / 20, "{accepted} of {total} accepted");
    }
}
