//! NG message framing: `<cookie> <dictionary>`, the dictionary in bencode or JSON, and the
//! reply in the request's encoding with the request's cookie.
//!
//! ```text
//! 5323_1 d7:command4:pinge            request  (bencode)
//! 5323_1 d6:result4:ponge             reply
//! 0.417 {"command":"ping"}            request  (JSON)
//! 0.417 {"result":"pong"}             reply
//! ```
//!
//! The cookie is 1 to [`MAX_COOKIE_LEN`] visible ASCII bytes (Kamailio sends `<pid>_<n>`,
//! rtpengine-ng-client a random decimal); one space separates it from the body. Over TCP the
//! same framing is used per message (rtpengine's tcp-ng): the body delimits itself, so
//! [`frame_len`] finds where a message ends. JSON bodies become the same [`Value`] tree as
//! bencode (strings as byte strings, integers as integers, booleans as 0/1).

use std::borrow::Cow;

use super::bencode::{BencodeError, Value, MAX_DEPTH, MAX_ITEMS};

/// Longest cookie accepted (Kamailio's cookie buffer is 128 bytes).
pub const MAX_COOKIE_LEN: usize = 128;

/// The body encoding of a request, used again for its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// A bencoded dictionary.
    Bencode,
    /// A JSON object.
    Json,
}

/// A request as received: cookie, encoding and the decoded dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The cookie, echoed in the reply.
    pub cookie: &'a [u8],
    /// The body's encoding.
    pub encoding: Encoding,
    /// The decoded body (a dictionary).
    pub body: Value<'a>,
}

/// Why a datagram or stream message is not an NG message. Without a cookie no reply can be
/// matched, so these are dropped (UDP) or close the connection (TCP), except
/// [`Self::Body`], which gets an error reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Larger than the configured maximum.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Bytes received (so far).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No space-separated cookie, or a cookie with invisible bytes or over
    /// [`MAX_COOKIE_LEN`].
    #[error("no valid cookie: {reason}")]
    Cookie {
        /// What is wrong.
        reason: &'static str,
    },
    /// The body is neither a bencoded dictionary nor a JSON object.
    #[error("undecodable body: {reason}")]
    Body {
        /// What is wrong (never contains message bytes).
        reason: String,
    },
}

/// Splits `input` into cookie and body (RFC-less: rtpengine's framing is "cookie, one space,
/// dictionary").
fn split_cookie(input: &[u8]) -> Result<(&[u8], &[u8]), MessageError> {
    let space = input
        .iter()
        .take(MAX_COOKIE_LEN + 1)
        .position(|&b| b == b' ')
        .ok_or(MessageError::Cookie {
            reason: "no space within the first 129 bytes",
        })?;
    let (cookie, rest) = input.split_at(space);
    if cookie.is_empty() {
        return Err(MessageError::Cookie {
            reason: "empty cookie",
        });
    }
    if !cookie.iter().all(u8::is_ascii_graphic) {
        return Err(MessageError::Cookie {
            reason: "cookie has bytes that are not visible ASCII",
        });
    }
    Ok((cookie, rest.get(1..).unwrap_or_default()))
}

/// Parses one complete message (a UDP datagram, or a frame cut by [`frame_len`]).
pub fn parse_message(input: &[u8], max_len: usize) -> Result<Message<'_>, MessageError> {
    if input.len() > max_len {
        return Err(MessageError::TooLarge {
            len: input.len(),
            max: max_len,
        });
    }
    let (cookie, body) = split_cookie(input)?;
    let (encoding, body) = match body.first() {
        Some(b'd') => (
            Encoding::Bencode,
            Value::decode(body).map_err(|e| MessageError::Body {
                reason: e.to_string(),
            })?,
        ),
        Some(b'{') => (Encoding::Json, decode_json(body)?),
        _ => {
            return Err(MessageError::Body {
                reason: "the body is neither a bencode dictionary nor a JSON object".to_owned(),
            })
        }
    };
    Ok(Message {
        cookie,
        encoding,
        body,
    })
}

/// The cookie of `input`, if it has one (to answer an undecodable body with an error).
pub fn cookie_of(input: &[u8]) -> Option<&[u8]> {
    split_cookie(input).ok().map(|(cookie, _)| cookie)
}

/// Writes a reply: `<cookie> <body>` with the body in `encoding`.
pub fn encode_reply(cookie: &[u8], encoding: Encoding, body: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(cookie.len() + 256);
    out.extend_from_slice(cookie);
    out.push(b' ');
    match encoding {
        Encoding::Bencode => body.encode(&mut out),
        Encoding::Json => {
            // Serialising a serde_json::Value into a Vec cannot fail.
            let json = to_json(body);
            let _ = serde_json::to_writer(&mut out, &json);
        }
    }
    out
}

/// On a stream: the length of the first complete message in `buffer`, `Ok(None)` if more
/// bytes are needed, or an error if the buffer cannot start a valid message.
pub fn frame_len(buffer: &[u8], max_len: usize) -> Result<Option<usize>, MessageError> {
    let space = match buffer
        .iter()
        .take(MAX_COOKIE_LEN + 1)
        .position(|&b| b == b' ')
    {
        Some(space) => space,
        None if buffer.len() <= MAX_COOKIE_LEN => return Ok(None),
        None => {
            return Err(MessageError::Cookie {
                reason: "no space within the first 129 bytes",
            })
        }
    };
    let body = buffer.get(space + 1..).unwrap_or_default();
    let body_len = match body.first() {
        None => None,
        Some(b'd') => match Value::decode_prefix(body) {
            Ok((_, used)) => Some(used),
            Err(BencodeError::UnexpectedEnd { .. }) => None,
            Err(e) => {
                return Err(MessageError::Body {
                    reason: e.to_string(),
                })
            }
        },
        Some(b'{') => json_object_len(body),
        Some(_) => {
            return Err(MessageError::Body {
                reason: "the body is neither a bencode dictionary nor a JSON object".to_owned(),
            })
        }
    };
    match body_len {
        Some(len) if space + 1 + len <= max_len => Ok(Some(space + 1 + len)),
        Some(len) => Err(MessageError::TooLarge {
            len: space + 1 + len,
            max: max_len,
        }),
        None if buffer.len() >= max_len => Err(MessageError::TooLarge {
            len: buffer.len(),
            max: max_len,
        }),
        None => Ok(None),
    }
}

/// The length of the JSON object at the start of `input` (brace matching outside strings),
/// or `None` if it is not complete yet. Validity is checked when it is parsed.
fn json_object_len(input: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in input.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Decodes a JSON object body into the bencode value model.
fn decode_json(body: &[u8]) -> Result<Value<'static>, MessageError> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| MessageError::Body {
        reason: format!("invalid JSON: {e}"),
    })?;
    if !json.is_object() {
        return Err(MessageError::Body {
            reason: "the JSON body is not an object".to_owned(),
        });
    }
    let mut items = 0;
    from_json(json, 0, &mut items)
}

fn from_json(
    json: serde_json::Value,
    depth: usize,
    items: &mut usize,
) -> Result<Value<'static>, MessageError> {
    let fail = |reason: &str| MessageError::Body {
        reason: reason.to_owned(),
    };
    *items += 1;
    if *items > MAX_ITEMS {
        return Err(fail("the JSON body has too many values"));
    }
    if depth > MAX_DEPTH {
        return Err(fail("the JSON body nests too deeply"));
    }
    Ok(match json {
        serde_json::Value::Null => return Err(fail("null is not an NG value")),
        serde_json::Value::Bool(b) => Value::Int(i64::from(b)),
        serde_json::Value::Number(n) => Value::Int(
            n.as_i64()
                .ok_or_else(|| fail("numbers must be integers within 64 bits"))?,
        ),
        serde_json::Value::String(s) => Value::Bytes(Cow::Owned(s.into_bytes())),
        serde_json::Value::Array(list) => Value::List(
            list.into_iter()
                .map(|v| from_json(v, depth + 1, items))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => Value::Dict(
            map.into_iter()
                .map(|(k, v)| Ok((Cow::Owned(k.into_bytes()), from_json(v, depth + 1, items)?)))
                .collect::<Result<_, MessageError>>()?,
        ),
    })
}

/// The JSON form of a reply value (byte strings as UTF-8 text, lossily).
fn to_json(value: &Value<'_>) -> serde_json::Value {
    match value {
        Value::Int(n) => serde_json::Value::from(*n),
        Value::Bytes(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        Value::List(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Dict(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65_535;

    #[test]
    fn bencode_and_json_requests_decode_to_the_same_tree() {
        let b = parse_message(b"5323_1 d7:command4:pinge", MAX).expect("bencode");
        assert_eq!(b.cookie, b"5323_1");
        assert_eq!(b.encoding, Encoding::Bencode);
        let j = parse_message(br#"0.417 {"command":"ping"}"#, MAX).expect("json");
        assert_eq!(j.cookie, b"0.417");
        assert_eq!(j.encoding, Encoding::Json);
        assert_eq!(b.body, j.body);
        let j = parse_message(
            br#"c {"flags":["trust address"],"delete-delay":5,"x":true}"#,
            MAX,
        )
        .expect("json");
        assert_eq!(j.body.get("delete-delay"), Some(&Value::Int(5)));
        assert_eq!(j.body.get("x"), Some(&Value::Int(1)));
        assert_eq!(
            j.body.get("flags"),
            Some(&Value::List(vec![Value::str("trust address")]))
        );
    }

    #[test]
    fn replies_echo_the_cookie_in_the_request_encoding() {
        let body = Value::dict([("result", Value::str("pong"))]);
        assert_eq!(
            encode_reply(b"5323_1", Encoding::Bencode, &body),
            b"5323_1 d6:result4:ponge"
        );
        assert_eq!(
            encode_reply(b"0.417", Encoding::Json, &body),
            br#"0.417 {"result":"pong"}"#
        );
    }

    #[test]
    fn what_is_not_an_ng_message_is_refused() {
        let too_long = [vec![b'c'; MAX_COOKIE_LEN + 1], b" d4:ping4:ponge".to_vec()].concat();
        let cases: Vec<(&[u8], &str)> = vec![
            (b"", "Cookie"),
            (b"nocookie", "Cookie"),
            (b" d7:command4:pinge", "Cookie"),
            (b"a\x01b d7:command4:pinge", "Cookie"),
            (&too_long, "Cookie"),
            (b"c1 ", "Body"),
            (b"c1 l4:pinge", "Body"),
            (b"c1 d7:command4:pingeXX", "Body"),
            (b"c1 {\"command\":null}", "Body"),
            (b"c1 {\"n\":1.5}", "Body"),
            (b"c1 {\"command\":\"ping\"} trailing", "Body"),
            (b"c1 {broken", "Body"),
        ];
        for (input, kind) in cases {
            let error = parse_message(input, MAX).expect_err("refused");
            assert!(
                format!("{error:?}").starts_with(kind),
                "{:?}: {error:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            parse_message(&[b'x'; 100], 64),
            Err(MessageError::TooLarge { len: 100, max: 64 })
        );
        assert_eq!(cookie_of(b"c1 garbage"), Some(&b"c1"[..]));
    }

    /// The fuzz target's property (`fuzz/fuzz_targets/ng_decode.rs`) on seeds and every
    /// one-byte mutation of them.
    #[test]
    fn decoded_messages_re_encode_to_the_same_value() {
        let seeds: [&[u8]; 4] = [
            b"5323_1 d7:command5:offer7:call-id2:c13:sdp5:v=0\r\n5:flagsl13:trust-addresse1:ni-4ee",
            br#"0.417 {"command":"offer","flags":["trust address"],"n":-4,"b":true,"s":"}{\"x"}"#,
            b"k d1:ad1:bl1:ci0eeee",
            br#"j {"a":{"b":[1,[2,{"c":"d"}]]}}"#,
        ];
        let mut decoded = 0;
        for seed in seeds {
            for i in 0..=seed.len() {
                for flip in [0u8, 0x01, 0x20, 0x7f] {
                    let mut data = seed.to_vec();
                    if let Some(b) = data.get_mut(i) {
                        *b ^= flip;
                    }
                    let Ok(message) = parse_message(&data, MAX) else {
                        continue;
                    };
                    decoded += 1;
                    let encoded = encode_reply(message.cookie, message.encoding, &message.body);
                    let again = parse_message(&encoded, MAX).expect("re-encoded decodes");
                    assert_eq!(again.cookie, message.cookie);
                    assert_eq!(again.body, message.body.canonical());
                    let frame = frame_len(&data, MAX).expect("frames").expect("complete");
                    assert!(frame <= data.len());
                    assert!(parse_message(&data[..frame], MAX).is_ok());
                    let _ = super::super::options::parse_request(&message.body);
                }
            }
        }
        assert!(decoded > 100, "{decoded}");
    }

    #[test]
    fn stream_frames_are_cut_where_the_body_ends() {
        let two = b"a d7:command4:pinge{b} b {\"command\":\"ping\",\"s\":\"}{\"}";
        // First message: "a d7:command4:pinge".
        assert_eq!(frame_len(two, MAX), Ok(Some(19)));
        let rest = &two[19..];
        assert_eq!(
            frame_len(rest, MAX),
            Err(MessageError::Body {
                reason: "the body is neither a bencode dictionary nor a JSON object".to_owned()
            })
        );
        let json = b"b {\"command\":\"ping\",\"s\":\"}{\\\"\"}c";
        assert_eq!(frame_len(json, MAX), Ok(Some(json.len() - 1)));
        for end in 0..json.len() - 1 {
            assert_eq!(frame_len(&json[..end], MAX), Ok(None), "prefix {end}");
        }
        assert!(matches!(
            frame_len(b"a d7:command4:pinge", 10),
            Err(MessageError::TooLarge { .. })
        ));
        assert!(matches!(
            frame_len(b"a d7:comman", 10),
            Err(MessageError::TooLarge { .. })
        ));
    }
}
