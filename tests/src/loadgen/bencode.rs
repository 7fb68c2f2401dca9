//! Bencode (the encoding of rtpengine's NG protocol): a borrowing decoder with hard limits and an
//! encoder that writes dictionaries with sorted keys.
//!
//! ```text
//! value   = integer / string / list / dict
//! integer = "i" ["-"] 1*DIGIT "e"        ; no leading zeros, no "-0"
//! string  = length ":" <length bytes>    ; length = 1*DIGIT, no leading zeros
//! list    = "l" *value "e"
//! dict    = "d" *(string value) "e"      ; keys are strings, each at most once
//! ```
//!
//! The decoder never panics on any input: lengths, nesting and item counts are bounded, and
//! trailing bytes after the top-level value are refused.

/// Deepest nesting of lists and dictionaries accepted.
pub const MAX_DEPTH: usize = 32;
/// Most values (of any kind, counted together) in one decoded document.
pub const MAX_ITEMS: usize = 65_536;
/// Longest input accepted.
pub const MAX_INPUT: usize = 1 << 20;

/// A decoded (or to-be-encoded) bencode value that borrows its strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// `i<n>e`.
    Int(i64),
    /// `<len>:<bytes>`.
    Bytes(&'a [u8]),
    /// `l...e`.
    List(Vec<Value<'a>>),
    /// `d...e`, in input order (the encoder sorts).
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

/// Why a document is not bencode (or exceeds the limits).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BencodeError {
    /// The input ended inside a value.
    #[error("bencode ends early at byte {offset}")]
    UnexpectedEnd {
        /// Where.
        offset: usize,
    },
    /// A byte that starts no value, or a malformed number.
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
    /// A limit ([`MAX_DEPTH`], [`MAX_ITEMS`], [`MAX_INPUT`]) was exceeded.
    #[error("bencode exceeds the {what} limit")]
    TooLarge {
        /// Which limit.
        what: &'static str,
    },
}

impl<'a> Value<'a> {
    /// A string value.
    pub fn str(s: &'a str) -> Self {
        Self::Bytes(s.as_bytes())
    }

    /// A list of strings.
    pub fn str_list(items: &[&'a str]) -> Self {
        Self::List(items.iter().map(|s| Self::str(s)).collect())
    }

    /// Looks `key` up in a dictionary (`None` for other values or a missing key).
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Self::Dict(entries) => entries
                .iter()
                .find(|(k, _)| *k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is a UTF-8 string.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Self::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// Decodes exactly one value from `input`.
    pub fn decode(input: &'a [u8]) -> Result<Self, BencodeError> {
        if input.len() > MAX_INPUT {
            return Err(BencodeError::TooLarge { what: "input size" });
        }
        let mut decoder = Decoder {
            input,
            pos: 0,
            items: 0,
        };
        let value = decoder.value(0)?;
        if decoder.pos != input.len() {
            return Err(BencodeError::TrailingBytes {
                count: input.len() - decoder.pos,
            });
        }
        Ok(value)
    }

    /// Appends the encoding to `out`; dictionary keys are written in sorted order (duplicate keys
    /// are the caller's bug and are written as given).
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
                let mut sorted: Vec<&(&[u8], Value<'_>)> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
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
            return Err(BencodeError::TooLarge { what: "item count" });
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let digits = self.digits_until(b'e')?;
                Ok(Value::Int(self.parse_int(digits)?))
            }
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
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
                let mut entries: Vec<(&'a [u8], Value<'a>)> = Vec::new();
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return Err(self.invalid("dictionary key is not a string"));
                    }
                    let key_at = self.pos;
                    let key = self.bytes()?;
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(BencodeError::Invalid {
                            offset: key_at,
                            reason: "duplicate dictionary key",
                        });
                    }
                    let value = self.value(depth)?;
                    entries.push((key, value));
                }
                self.pos += 1;
                Ok(Value::Dict(entries))
            }
            _ => Err(self.invalid("no value starts with this byte")),
        }
    }

    fn enter(&mut self, depth: usize) -> Result<usize, BencodeError> {
        if depth >= MAX_DEPTH {
            return Err(BencodeError::TooLarge {
                what: "nesting depth",
            });
        }
        self.pos += 1;
        Ok(depth + 1)
    }

    /// The bytes from the current position up to (not including) `end`, which is consumed.
    fn digits_until(&mut self, end: u8) -> Result<&'a [u8], BencodeError> {
        let rest = &self.input[self.pos..];
        let len = rest
            .iter()
            .take(21)
            .position(|&b| b == end)
            .ok_or_else(|| {
                if rest.len() <= 20 {
                    BencodeError::UnexpectedEnd {
                        offset: self.input.len(),
                    }
                } else {
                    self.invalid("number too long")
                }
            })?;
        let digits = &rest[..len];
        self.pos += len + 1;
        Ok(digits)
    }

    fn parse_int(&self, text: &[u8]) -> Result<i64, BencodeError> {
        let (negative, magnitude) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let digits_only = !magnitude.is_empty() && magnitude.iter().all(u8::is_ascii_digit);
        let leading_zero = magnitude.len() > 1 && magnitude[0] == b'0';
        let negative_zero = negative && magnitude == b"0";
        if !digits_only || leading_zero || negative_zero {
            return Err(self.invalid("malformed integer"));
        }
        // All ASCII digits (and an optional sign): valid UTF-8.
        std::str::from_utf8(text)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| self.invalid("integer out of range"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let digits = self.digits_until(b':')?;
        if digits.is_empty()
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits.len() > 1 && digits[0] == b'0')
        {
            return Err(self.invalid("malformed string length"));
        }
        let len = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| self.invalid("string length out of range"))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or(BencodeError::UnexpectedEnd {
                offset: self.input.len(),
            })?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_ng_reply_and_keeps_key_order() {
        let input = b"d3:sdp5:v=0\r\n6:result2:ok4:listli1ei-2ee4:SSRCdee";
        let value = Value::decode(input).unwrap();
        assert_eq!(value.get("result").and_then(Value::as_str), Some("ok"));
        assert_eq!(value.get("sdp").and_then(Value::as_str), Some("v=0\r\n"));
        assert_eq!(
            value.get("list"),
            Some(&Value::List(vec![Value::Int(1), Value::Int(-2)]))
        );
        assert_eq!(value.get("SSRC"), Some(&Value::Dict(vec![])));
        assert_eq!(value.get("missing"), None);
    }

    #[test]
    fn encodes_with_sorted_keys_and_round_trips() {
        let value = Value::Dict(vec![
            (b"sdp", Value::str("v=0")),
            (b"command", Value::str("offer")),
            (b"flags", Value::str_list(&["trust-address"])),
            (b"n", Value::Int(-42)),
        ]);
        let bytes = value.to_bytes();
        assert_eq!(
            bytes,
            b"d7:command5:offer5:flagsl13:trust-addresse1:ni-42e3:sdp3:v=0e".to_vec()
        );
        let back = Value::decode(&bytes).unwrap();
        // Decoding keeps the (now sorted) input order.
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.get("n"), Some(&Value::Int(-42)));
    }

    #[test]
    fn refuses_malformed_input_without_panicking() {
        let cases: &[&[u8]] = &[
            b"",
            b"i",
            b"i12",
            b"ie",
            b"i-e",
            b"i-0e",
            b"i03e",
            b"i1x2e",
            b"i99999999999999999999e",
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
            b"i1ei2e",
            b"le ",
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
    fn limits_depth_and_item_count() {
        let deep = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
        assert_eq!(
            Value::decode(&deep),
            Err(BencodeError::TooLarge {
                what: "nesting depth"
            })
        );
        let ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(Value::decode(&ok).is_ok());
        let many = [b"l".as_slice(), &b"i0e".repeat(MAX_ITEMS), b"e"].concat();
        assert_eq!(
            Value::decode(&many),
            Err(BencodeError::TooLarge { what: "item count" })
        );
    }

    #[test]
    fn every_prefix_and_byte_flip_of_a_reply_is_handled() {
        let reply = b"d3:sdp19:v=0\r\nm=audio 4000 x6:result2:ok5:flagsl1:ai7eee";
        assert!(Value::decode(reply).is_ok());
        for end in 0..reply.len() {
            assert!(Value::decode(&reply[..end]).is_err());
        }
        for i in 0..reply.len() {
            for flip in [0x01, 0x10, 0x80, 0xff] {
                let mut bytes = reply.to_vec();
                bytes[i] ^= flip;
                let _ = Value::decode(&bytes);
            }
        }
    }

    #[test]
    fn extreme_integers_round_trip() {
        for n in [i64::MIN, -1, 0, 1, i64::MAX] {
            let bytes = Value::Int(n).to_bytes();
            assert_eq!(Value::decode(&bytes), Ok(Value::Int(n)));
        }
    }
}
