//! Bencode, the dictionary encoding of rtpengine's NG protocol: a borrowing decoder with hard
//! limits and an encoder that writes dictionary keys in sorted (canonical) order.
//!
//! ```text
//! value   = integer / string / list / dict
//! integer = "i" ["-"] 1*DIGIT "e"        ; no leading zeros, no "-0", fits i64
//! string  = length ":" <length bytes>    ; length = 1*DIGIT, no leading zeros
//! list    = "l" *value "e"
//! dict    = "d" *(string value) "e"      ; keys are strings, each at most once
//! ```
//!
//! Hand-written rather than a crate: the NG server needs a decoder that borrows from the UDP
//! datagram, refuses duplicate keys and trailing bytes, bounds nesting and item counts, and can
//! tell "incomplete" from "invalid" so the TCP reader knows where a message ends (rtpengine's
//! TCP NG framing is the self-delimiting bencode value itself). The decoder never panics.
//!
//! Peers do not have to send sorted keys (rtpengine does not honour the ordering rule either),
//! so the decoder keeps input order; [`Value::canonical`] sorts.

use std::{borrow::Cow, fmt};

/// Deepest nesting of lists and dictionaries accepted. NG requests nest three levels at most
/// (`codec` → `strip` → names); replies four.
pub const MAX_DEPTH: usize = 16;

/// Most values (of any kind, counted together) in one decoded document.
pub const MAX_ITEMS: usize = 4096;

/// A bencode value. Strings and keys borrow from the input when decoded and own their bytes
/// when built for a reply. `Debug` redacts strings that may hold SRTP keys (`inline:`).
#[derive(Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// `i<n>e`.
    Int(i64),
    /// `<len>:<bytes>`.
    Bytes(Cow<'a, [u8]>),
    /// `l...e`.
    List(Vec<Value<'a>>),
    /// `d...e`, in input (or insertion) order.
    Dict(Vec<(Cow<'a, [u8]>, Value<'a>)>),
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Bytes(b) if b.windows(7).any(|w| w == b"inline:") => {
                write!(f, "<{} bytes with keys, redacted>", b.len())
            }
            Self::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Self::List(items) => f.debug_list().entries(items).finish(),
            Self::Dict(entries) => f
                .debug_map()
                .entries(entries.iter().map(|(k, v)| (String::from_utf8_lossy(k), v)))
                .finish(),
        }
    }
}

/// Why a document is not bencode, or exceeds a limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BencodeError {
    /// The input ended inside a value (on TCP: wait for more bytes).
    #[error("bencode ends early at byte {offset}")]
    UnexpectedEnd {
        /// Where the input ended.
        offset: usize,
    },
    /// A byte that starts no value, a malformed number, or a duplicate key.
    #[error("invalid bencode at byte {offset}: {reason}")]
    Invalid {
        /// Where.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Bytes after the top-level value.
    #[error("{count} bytes of trailing garbage after the bencode value")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("bencode nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_ITEMS`] values.
    #[error("bencode has more than {max} values")]
    TooManyItems {
        /// The limit.
        max: usize,
    },
}

impl<'a> Value<'a> {
    /// A string value borrowing `s`.
    pub fn str(s: &'a str) -> Self {
        Self::Bytes(Cow::Borrowed(s.as_bytes()))
    }

    /// A string value owning `s`.
    pub fn string(s: impl Into<String>) -> Value<'static> {
        Value::Bytes(Cow::Owned(s.into().into_bytes()))
    }

    /// An integer value from any unsigned counter (saturating at `i64::MAX`).
    pub fn count(n: u64) -> Value<'static> {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// A dictionary with owned keys, in the given order.
    pub fn dict<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value<'a>)>) -> Self {
        Self::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into().into_bytes()), v))
                .collect(),
        )
    }

    /// Looks `key` up in a dictionary (`None` for other values or a missing key).
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Self::Dict(entries) => entries
                .iter()
                .find(|(k, _)| k.as_ref() == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The bytes, if this is a string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The string, if this is a UTF-8 string.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Decodes exactly one value from `input`; trailing bytes are an error.
    pub fn decode(input: &'a [u8]) -> Result<Self, BencodeError> {
        let (value, used) = Self::decode_prefix(input)?;
        if used != input.len() {
            return Err(BencodeError::TrailingBytes {
                count: input.len() - used,
            });
        }
        Ok(value)
    }

    /// Decodes the value at the start of `input` and returns it with the number of bytes it
    /// took. [`BencodeError::UnexpectedEnd`] means the value is incomplete.
    pub fn decode_prefix(input: &'a [u8]) -> Result<(Self, usize), BencodeError> {
        let mut decoder = Decoder {
            input,
            pos: 0,
            items: 0,
        };
        let value = decoder.value(0)?;
        Ok((value, decoder.pos))
    }

    /// Appends the encoding to `out`; dictionary keys are written in sorted order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Int(n) => {
                out.push(b'i');
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'e');
            }
            Self::Bytes(bytes) => encode_bytes(bytes, out),
            Self::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode(out);
                }
                out.push(b'e');
            }
            Self::Dict(entries) => {
                let mut sorted: Vec<&(Cow<'a, [u8]>, Value<'a>)> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'd');
                for (key, value) in sorted {
                    encode_bytes(key, out);
                    value.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The encoding as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// The same value with every dictionary's keys sorted, as [`Self::encode`] writes them:
    /// `decode(encode(v)) == v.canonical()`.
    #[must_use]
    pub fn canonical(&self) -> Self {
        match self {
            Self::Int(n) => Self::Int(*n),
            Self::Bytes(b) => Self::Bytes(b.clone()),
            Self::List(items) => Self::List(items.iter().map(Self::canonical).collect()),
            Self::Dict(entries) => {
                let mut sorted: Vec<_> = entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.canonical()))
                    .collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                Self::Dict(sorted)
            }
        }
    }

    /// A copy that owns all its bytes.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Self::Int(n) => Value::Int(n),
            Self::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
            Self::List(items) => Value::List(items.into_iter().map(Self::into_owned).collect()),
            Self::Dict(entries) => Value::Dict(
                entries
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }
}

fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    items: usize,
}

impl<'a> Decoder<'a> {
    fn peek(&self) -> Result<u8, BencodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(BencodeError::UnexpectedEnd { offset: self.pos })
    }

    fn invalid(&self, reason: &'static str) -> BencodeError {
        BencodeError::Invalid {
            offset: self.pos,
            reason,
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, BencodeError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(BencodeError::TooManyItems { max: MAX_ITEMS });
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let start = self.pos;
                let digits = self.digits_until(b'e')?;
                parse_int(digits).ok_or(BencodeError::Invalid {
                    offset: start,
                    reason: "malformed or out-of-range integer",
                })
            }
            b'0'..=b'9' => self.bytes().map(|b| Value::Bytes(Cow::Borrowed(b))),
            b'l' => {
                let depth = self.enter(depth)?;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                let depth = self.enter(depth)?;
                let mut entries: Vec<(Cow<'a, [u8]>, Value<'a>)> = Vec::new();
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return Err(self.invalid("dictionary key is not a string"));
                    }
                    let key_at = self.pos;
                    let key = self.bytes()?;
                    if entries.iter().any(|(k, _)| k.as_ref() == key) {
                        return Err(BencodeError::Invalid {
                            offset: key_at,
                            reason: "duplicate dictionary key",
                        });
                    }
                    self.items += 1;
                    let value = self.value(depth)?;
                    entries.push((Cow::Borrowed(key), value));
                }
                self.pos += 1;
                Ok(Value::Dict(entries))
            }
            _ => Err(self.invalid("no value starts with this byte")),
        }
    }

    fn enter(&mut self, depth: usize) -> Result<usize, BencodeError> {
        if depth >= MAX_DEPTH {
            return Err(BencodeError::TooDeep { max: MAX_DEPTH });
        }
        self.pos += 1;
        Ok(depth + 1)
    }

    /// The bytes from the current position up to (not including) `end`, which is consumed.
    /// At most 20 bytes are scanned: no valid length or i64 is longer.
    fn digits_until(&mut self, end: u8) -> Result<&'a [u8], BencodeError> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        let Some(len) = rest.iter().take(21).position(|&b| b == end) else {
            return Err(if rest.len() <= 20 {
                BencodeError::UnexpectedEnd {
                    offset: self.input.len(),
                }
            } else {
                self.invalid("number too long")
            });
        };
        let digits = rest.get(..len).unwrap_or_default();
        self.pos += len + 1;
        Ok(digits)
    }

    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let start = self.pos;
        let digits = self.digits_until(b':')?;
        let len = parse_length(digits).ok_or(BencodeError::Invalid {
            offset: start,
            reason: "malformed string length",
        })?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or(BencodeError::UnexpectedEnd {
                offset: self.input.len(),
            })?;
        let bytes = self.input.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(bytes)
    }
}

/// `["-"] 1*DIGIT` without leading zeros or `-0`, within i64.
fn parse_int(text: &[u8]) -> Option<Value<'static>> {
    let magnitude = text.strip_prefix(b"-").unwrap_or(text);
    let negative = magnitude.len() != text.len();
    if magnitude.is_empty() || !magnitude.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if (magnitude.len() > 1 && magnitude[0] == b'0') || (negative && magnitude == b"0") {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok().map(Value::Int)
}

/// `1*DIGIT` without leading zeros.
fn parse_length(text: &[u8]) -> Option<usize> {
    let well_formed = !text.is_empty()
        && text.iter().all(u8::is_ascii_digit)
        && !(text.len() > 1 && text[0] == b'0');
    if !well_formed {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> Value<'_> {
        match Value::decode(input) {
            Ok(v) => v,
            Err(e) => panic!("{e}: {:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn decodes_an_offer_and_keeps_key_order() {
        let input = b"d7:command5:offer3:sdp5:v=0\r\n5:flagsl13:trust-addresse1:ni-42ee";
        let value = decode(input);
        assert_eq!(value.get("command").and_then(Value::as_str), Some("offer"));
        assert_eq!(value.get("sdp").and_then(Value::as_str), Some("v=0\r\n"));
        assert_eq!(
            value.get("flags"),
            Some(&Value::List(vec![Value::str("trust-address")]))
        );
        assert_eq!(value.get("n"), Some(&Value::Int(-42)));
        assert_eq!(value.get("missing"), None);
        let Value::Dict(entries) = &value else {
            panic!("not a dict")
        };
        let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, [&b"command"[..], b"sdp", b"flags", b"n"]);
    }

    #[test]
    fn encodes_sorted_and_round_trips() {
        let value = Value::dict([
            ("sdp", Value::str("v=0")),
            ("result", Value::str("ok")),
            ("list", Value::List(vec![Value::Int(0), Value::Int(-7)])),
            ("empty", Value::Dict(Vec::new())),
        ]);
        let bytes = value.to_bytes();
        assert_eq!(
            bytes,
            b"d5:emptyde4:listli0ei-7ee6:result2:ok3:sdp3:v=0e".to_vec()
        );
        let back = decode(&bytes);
        assert_eq!(back, value.canonical());
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.clone().into_owned(), back);
    }

    #[test]
    fn debug_output_redacts_keys() {
        let value = Value::dict([
            ("command", Value::str("offer")),
            (
                "sdp",
                Value::str("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:SECRETKEY\r\n"),
            ),
        ]);
        let printed = format!("{value:?}");
        assert!(!printed.contains("SECRETKEY"), "{printed}");
        assert!(printed.contains("\"command\": \"offer\""), "{printed}");
        assert!(
            printed.contains("<53 bytes with keys, redacted>"),
            "{printed}"
        );
    }

    #[test]
    fn binary_strings_and_extreme_integers_round_trip() {
        let value = Value::List(vec![
            Value::Bytes(Cow::Borrowed(&[0, 0xff, b' ', b'e'])),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::str(""),
        ]);
        let bytes = value.to_bytes();
        assert_eq!(decode(&bytes), value);
        assert_eq!(Value::count(u64::MAX), Value::Int(i64::MAX));
    }

    #[test]
    fn malformed_input_is_refused_without_panicking() {
        let cases: &[&[u8]] = &[
            b"",
            b"i",
            b"i12",
            b"ie",
            b"i-e",
            b"i-0e",
            b"i03e",
            b"i1x2e",
            b"i9223372036854775808e",
            b"i1234567890123456789012345e",
            b"5:abc",
            b"05:abcde",
            b"-1:a",
            b"99999999999999999999999:a",
            b"l",
            b"li1e",
            b"d",
            b"di1ei2ee",
            b"d1:a",
            b"d1:ai1e1:ai2ee",
            b"x",
            b":",
            b"1",
        ];
        for case in cases {
            assert!(
                Value::decode(case).is_err(),
                "{:?} should be refused",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn trailing_garbage_is_refused_but_a_prefix_reports_its_length() {
        assert_eq!(
            Value::decode(b"d1:ai1ee d"),
            Err(BencodeError::TrailingBytes { count: 2 })
        );
        assert_eq!(
            Value::decode(b"i1ei2e"),
            Err(BencodeError::TrailingBytes { count: 3 })
        );
        let (value, used) = Value::decode_prefix(b"d1:ai1eeXYZ").expect("prefix");
        assert_eq!((value.get("a"), used), (Some(&Value::Int(1)), 8));
    }

    #[test]
    fn incomplete_input_is_distinguished_from_invalid_input() {
        let message = b"d7:command4:pinge";
        for end in 0..message.len() {
            assert!(
                matches!(
                    Value::decode_prefix(&message[..end]),
                    Err(BencodeError::UnexpectedEnd { .. })
                ),
                "prefix of {end} bytes"
            );
        }
        assert!(matches!(
            Value::decode_prefix(b"d7:command4:pingX"),
            Err(BencodeError::Invalid { .. })
        ));
    }

    #[test]
    fn depth_and_item_limits_are_enforced() {
        let deep = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
        assert_eq!(
            Value::decode(&deep),
            Err(BencodeError::TooDeep { max: MAX_DEPTH })
        );
        let ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(Value::decode(&ok).is_ok());
        let many = [b"l".as_slice(), &b"i0e".repeat(MAX_ITEMS), b"e"].concat();
        assert_eq!(
            Value::decode(&many),
            Err(BencodeError::TooManyItems { max: MAX_ITEMS })
        );
    }

    #[test]
    fn every_prefix_and_byte_flip_is_handled() {
        let reply = b"d3:sdp19:v=0\r\nm=audio 4000 x6:result2:ok5:flagsl1:ai7eee";
        assert!(Value::decode(reply).is_ok());
        for end in 0..reply.len() {
            assert!(Value::decode(&reply[..end]).is_err());
        }
        for i in 0..reply.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut bytes = reply.to_vec();
                bytes[i] ^= flip;
                if let Ok(value) = Value::decode(&bytes) {
                    assert_eq!(decode(&value.to_bytes()), value.canonical());
                }
            }
        }
    }
}
