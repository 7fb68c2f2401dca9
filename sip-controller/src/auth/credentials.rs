//! The `Authorization` / `Proxy-Authorization` header value for the Digest scheme
//! (RFC 3261 §25.1 `credentials`, RFC 7616 §3.4).
//!
//! ```text
//! credentials     = "Digest" LWS digest-response
//! digest-response = dig-resp *(COMMA dig-resp)
//! dig-resp        = username / realm / nonce / digest-uri / dresponse / algorithm /
//!                   cnonce / opaque / message-qop / nonce-count / auth-param
//! auth-param      = token EQUAL ( token / quoted-string )
//! quoted-string   = DQUOTE *(qdtext / quoted-pair ) DQUOTE
//! ```
//!
//! Hand-written rather than taken from an HTTP crate: SIP's grammar differs in small ways
//! (LWS around `=` and `,`, `qop`/`nc` tokens) and the parser must borrow, be bounded and
//! refuse duplicates, which the HTTP-oriented crates do not promise. Parameter names compare
//! case-insensitively and may come in any order; unrecognised parameters are skipped (RFC
//! 2617 §3.2.2, kept by RFC 7616); a parameter given twice is an error. For
//! interoperability `qop`, `nc` and `algorithm` are accepted quoted or not, and every value
//! may be a token or a quoted string. The whole value is limited to [`MAX_CREDENTIALS_LEN`]
//! bytes and [`MAX_PARAMETERS`] parameters; nothing after the last parameter is accepted.

use std::borrow::Cow;

use super::{digest::Algorithm, AuthError};

/// Longest header value accepted.
pub const MAX_CREDENTIALS_LEN: usize = 4096;
/// Most parameters accepted in one credentials value.
pub const MAX_PARAMETERS: usize = 32;
/// Longest parameter name accepted.
const MAX_NAME_LEN: usize = 64;

/// A nonce count (`nc`): its value, and its text as sent (which is what enters the hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonceCount<'a> {
    /// The count.
    pub value: u32,
    /// The eight hex digits as sent.
    pub raw: &'a str,
}

/// Parsed Digest credentials. Values borrow from the header value unless they contained
/// quoted-pair escapes. The `response` is not a secret (it travels in clear) but is a
/// one-way function of the password; it is kept out of `Debug` anyway.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestCredentials<'a> {
    /// `username`.
    pub username: Cow<'a, str>,
    /// `realm`.
    pub realm: Cow<'a, str>,
    /// `nonce`, as received.
    pub nonce: Cow<'a, str>,
    /// `uri` (the digest-uri), as received.
    pub uri: Cow<'a, str>,
    /// `response`: `algorithm.hash().hex_len()` hex digits, as received.
    pub response: Cow<'a, str>,
    /// `algorithm`, [`Algorithm::Md5`] when absent (RFC 7616 §3.3).
    pub algorithm: Algorithm,
    /// `cnonce`.
    pub cnonce: Option<Cow<'a, str>>,
    /// `opaque`.
    pub opaque: Option<Cow<'a, str>>,
    /// `qop` as sent; when present it is `auth` in some letter case.
    pub qop: Option<Cow<'a, str>>,
    /// `nc`; present exactly when `qop` is.
    pub nc: Option<NonceCount<'a>>,
}

impl core::fmt::Debug for DigestCredentials<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DigestCredentials")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .field("uri", &self.uri)
            .field("response", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("cnonce", &self.cnonce)
            .field("opaque", &self.opaque)
            .field("qop", &self.qop)
            .field("nc", &self.nc)
            .finish()
    }
}

struct Cursor<'a> {
    input: &'a str,
    pos: usize,
}

/// RFC 3261 §25.1 `token` characters.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// Skips linear white space (SP / HTAB; the message parser has already unfolded lines).
    /// Returns whether any was skipped.
    fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(is_token_byte) {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), AuthError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax(expected))
        }
    }

    fn syntax(&self, expected: &'static str) -> AuthError {
        if self.at_end() {
            AuthError::UnexpectedEnd { expected }
        } else {
            AuthError::Syntax {
                offset: self.pos,
                expected,
            }
        }
    }

    /// `quoted-string`, the cursor on the opening quote. Unescapes quoted-pairs.
    fn quoted_string(&mut self) -> Result<Cow<'a, str>, AuthError> {
        let open = self.pos;
        self.pos += 1;
        let bytes = self.input.as_bytes();
        let content_start = self.pos;
        let mut escaped = false;
        loop {
            match bytes.get(self.pos) {
                None => return Err(AuthError::UnterminatedQuotedString { offset: open }),
                Some(b'"') => break,
                Some(b'\\') => {
                    // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F); control characters are
                    // refused here as everywhere else in the value.
                    match bytes.get(self.pos + 1) {
                        None => return Err(AuthError::UnterminatedQuotedString { offset: open }),
                        Some(&next) if next.is_ascii() && !is_forbidden_control(next) => {
                            escaped = true;
                            self.pos += 2;
                        }
                        Some(_) => {
                            return Err(AuthError::Syntax {
                                offset: self.pos + 1,
                                expected: "an escapable ASCII character",
                            })
                        }
                    }
                }
                Some(&byte) if is_forbidden_control(byte) => {
                    return Err(AuthError::Syntax {
                        offset: self.pos,
                        expected: "a quoted-string character",
                    })
                }
                Some(_) => self.pos += 1,
            }
        }
        let content = &self.input[content_start..self.pos];
        self.pos += 1; // closing quote
        if !escaped {
            return Ok(Cow::Borrowed(content));
        }
        let mut unescaped = String::with_capacity(content.len());
        let mut chars = content.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    unescaped.push(next);
                }
            } else {
                unescaped.push(c);
            }
        }
        Ok(Cow::Owned(unescaped))
    }

    /// A parameter value: `token / quoted-string`.
    fn value(&mut self) -> Result<Cow<'a, str>, AuthError> {
        if self.peek() == Some(b'"') {
            return self.quoted_string();
        }
        let token = self.token();
        if token.is_empty() {
            return Err(self.syntax("a token or quoted-string value"));
        }
        Ok(Cow::Borrowed(token))
    }
}

/// Control characters other than HTAB, and DEL.
fn is_forbidden_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// The parameters this module understands, in the order their slots are kept.
const KNOWN: [&str; 11] = [
    "username",
    "realm",
    "nonce",
    "uri",
    "response",
    "algorithm",
    "cnonce",
    "opaque",
    "qop",
    "nc",
    "userhash",
];

impl<'a> DigestCredentials<'a> {
    /// Parses one `Authorization` / `Proxy-Authorization` header value.
    ///
    /// Fails with [`AuthError::UnsupportedScheme`] for a scheme other than Digest (the caller
    /// skips such credentials), and with another [`AuthError`] for malformed Digest
    /// credentials (answered with 400).
    pub fn parse(input: &'a str) -> Result<Self, AuthError> {
        if input.len() > MAX_CREDENTIALS_LEN {
            return Err(AuthError::CredentialsTooLong {
                len: input.len(),
                max: MAX_CREDENTIALS_LEN,
            });
        }
        let mut cursor = Cursor { input, pos: 0 };
        cursor.skip_lws();
        let scheme = cursor.token();
        if scheme.is_empty() {
            return Err(cursor.syntax("an authentication scheme"));
        }
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::UnsupportedScheme);
        }
        // RFC 3261 §25.1: "Digest" LWS digest-response.
        if !cursor.skip_lws() {
            return Err(cursor.syntax("white space after \"Digest\""));
        }
        Self::from_slots(cursor.parameters()?)
    }
}

impl<'a> Cursor<'a> {
    /// `dig-resp *(COMMA dig-resp)` up to the end of the value: the known parameters by
    /// [`KNOWN`] position; unknown ones checked for duplicates and dropped.
    fn parameters(&mut self) -> Result<[Option<Cow<'a, str>>; KNOWN.len()], AuthError> {
        let mut slots: [Option<Cow<'a, str>>; KNOWN.len()] = Default::default();
        let mut seen: Vec<&'a str> = Vec::new();
        loop {
            self.skip_lws();
            let name_offset = self.pos;
            let name = self.token();
            if name.is_empty() {
                return Err(self.syntax("a parameter name"));
            }
            if name.len() > MAX_NAME_LEN {
                return Err(AuthError::Syntax {
                    offset: name_offset,
                    expected: "a parameter name of at most 64 characters",
                });
            }
            if seen.len() == MAX_PARAMETERS {
                return Err(AuthError::TooManyParameters {
                    max: MAX_PARAMETERS,
                });
            }
            if seen.iter().any(|other| other.eq_ignore_ascii_case(name)) {
                return Err(AuthError::DuplicateParameter {
                    name: name.to_ascii_lowercase(),
                });
            }
            seen.push(name);
            self.skip_lws();
            self.expect(b'=', "'=' after the parameter name")?;
            self.skip_lws();
            let value = self.value()?;
            if let Some(slot) = KNOWN
                .iter()
                .position(|known| known.eq_ignore_ascii_case(name))
            {
                slots[slot] = Some(value);
            }
            self.skip_lws();
            if self.at_end() {
                break;
            }
            self.expect(b',', "',' between parameters")?;
        }
        Ok(slots)
    }
}

impl<'a> DigestCredentials<'a> {
    /// Checks the parameters against each other (RFC 7616 §3.4) and builds the credentials.
    fn from_slots(slots: [Option<Cow<'a, str>>; KNOWN.len()]) -> Result<Self, AuthError> {
        let [username, realm, nonce, uri, response, algorithm, cnonce, opaque, qop, nc, userhash] =
            slots;
        let required = |value: Option<Cow<'a, str>>, name: &'static str| {
            value.ok_or(AuthError::MissingParameter { name })
        };
        let username = required(username, "username")?;
        let realm = required(realm, "realm")?;
        let nonce = required(nonce, "nonce")?;
        let uri = required(uri, "uri")?;
        let response = required(response, "response")?;

        // RFC 7616 §3.4.4: userhash changes what `username` means; never offered here.
        if userhash.is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            return Err(AuthError::InvalidParameter {
                name: "userhash",
                reason: "hashed user names are not offered",
            });
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(token) => Algorithm::parse(&token).ok_or(AuthError::UnsupportedAlgorithm)?,
        };
        let hex_len = algorithm.hash().hex_len();
        if response.len() != hex_len || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::InvalidParameter {
                name: "response",
                reason: "not as many hex digits as the algorithm's hash",
            });
        }

        let nc = match (&qop, nc) {
            (Some(qop), nc) => {
                // RFC 7616 §3.4: qop must be one the server offered; only "auth" is.
                if !qop.eq_ignore_ascii_case("auth") {
                    return Err(AuthError::UnsupportedQop);
                }
                if cnonce.is_none() {
                    return Err(AuthError::MissingParameter { name: "cnonce" });
                }
                let nc = nc.ok_or(AuthError::MissingParameter { name: "nc" })?;
                Some(parse_nonce_count(&nc)?)
            }
            (None, Some(_)) => {
                return Err(AuthError::InvalidParameter {
                    name: "nc",
                    reason: "sent without qop",
                })
            }
            (None, None) => None,
        };
        // RFC 7616 §3.4.2: the -sess A1 includes the cnonce.
        if algorithm.is_session() && cnonce.is_none() {
            return Err(AuthError::MissingParameter { name: "cnonce" });
        }

        Ok(Self {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            cnonce,
            opaque,
            qop,
            nc,
        })
    }
}

/// `nc-value = 8LHEX` (RFC 3261 §25.1), not zero: the first use of a nonce is 00000001.
fn parse_nonce_count<'a>(raw: &Cow<'a, str>) -> Result<NonceCount<'a>, AuthError> {
    const INVALID: AuthError = AuthError::InvalidParameter {
        name: "nc",
        reason: "not 8 hex digits counting from 00000001",
    };
    // The count only borrows: an escaped nc would be absurd and is refused.
    let Cow::Borrowed(raw) = *raw else {
        return Err(INVALID);
    };
    if raw.len() != 8 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(INVALID);
    }
    match u32::from_str_radix(raw, 16) {
        Ok(value) if value > 0 => Ok(NonceCount { value, raw }),
        _ => Err(INVALID),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1, SHA-256 response, folded onto one line.
    const RFC7616_SHA256: &str = "Digest username=\"Mufasa\", \
        realm=\"http-auth@example.org\", uri=\"/dir/index.html\", algorithm=SHA-256, \
        nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, \
        cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, \
        response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
        opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";

    /// RFC 2617 §3.5.
    const RFC2617: &str = "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
        nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, \
        nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", \
        opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";

    const MD5_RESPONSE: &str = "6629fae49393a05397450978507c4ef1";

    fn minimal(extra: &str) -> String {
        format!(
            "Digest username=\"alice\", realm=\"example.com\", nonce=\"n\", \
             uri=\"sip:example.com\", response=\"{MD5_RESPONSE}\"{extra}"
        )
    }

    #[test]
    fn parses_rfc7616_sha256_example() {
        let c = DigestCredentials::parse(RFC7616_SHA256).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.realm, "http-auth@example.org");
        assert_eq!(c.uri, "/dir/index.html");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.nonce, "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v");
        assert_eq!(
            c.nc,
            Some(NonceCount {
                value: 1,
                raw: "00000001"
            })
        );
        assert_eq!(
            c.cnonce.as_deref(),
            Some("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
        );
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(
            c.opaque.as_deref(),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
        assert!(matches!(c.username, Cow::Borrowed(_)));
    }

    #[test]
    fn parses_rfc2617_example_with_default_md5() {
        let c = DigestCredentials::parse(RFC2617).unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.response, MD5_RESPONSE);
        assert_eq!(c.cnonce.as_deref(), Some("0a4f113b"));
    }

    #[test]
    fn scheme_and_names_are_case_insensitive_and_white_space_is_lws() {
        let value = format!(
            "  dIgEsT\tUserName = \"bob\" ,REALM=\"r\",Nonce=\"n\",URI=\"sip:r\",\
             Response=\"{MD5_RESPONSE}\", ALGORITHM=md5 ,QOP=\"auth\", NC=0000000A, \
             CNonce=\"c\"  "
        );
        let c = DigestCredentials::parse(&value).unwrap();
        assert_eq!(c.username, "bob");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.nc.unwrap().value, 10);
    }

    #[test]
    fn quoted_pairs_are_unescaped() {
        let value = format!(
            "Digest username=\"al\\\"ice\\\\\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", \
             response=\"{MD5_RESPONSE}\""
        );
        let c = DigestCredentials::parse(&value).unwrap();
        assert_eq!(c.username, "al\"ice\\");
        assert!(matches!(c.username, Cow::Owned(_)));
    }

    #[test]
    fn commas_and_equals_inside_quotes_are_content() {
        let value = format!(
            "Digest username=\"a,b=c\", realm=\"r\", nonce=\"n\", uri=\"sip:a@r;x=1,y\", \
             response=\"{MD5_RESPONSE}\""
        );
        let c = DigestCredentials::parse(&value).unwrap();
        assert_eq!(c.username, "a,b=c");
        assert_eq!(c.uri, "sip:a@r;x=1,y");
    }

    #[test]
    fn unknown_parameters_are_ignored() {
        let value = minimal(", x-vendor=\"1\", foo=bar");
        let c = DigestCredentials::parse(&value).unwrap();
        assert_eq!(c.username, "alice");
    }

    #[test]
    fn duplicates_are_refused_in_any_case() {
        assert_eq!(
            DigestCredentials::parse(&minimal(", Realm=\"other\"")),
            Err(AuthError::DuplicateParameter {
                name: "realm".into()
            })
        );
        assert_eq!(
            DigestCredentials::parse(&minimal(", foo=1, FOO=2")),
            Err(AuthError::DuplicateParameter { name: "foo".into() })
        );
    }

    #[test]
    fn missing_parameters_are_named() {
        assert_eq!(
            DigestCredentials::parse(&format!(
                "Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"{MD5_RESPONSE}\""
            )),
            Err(AuthError::MissingParameter { name: "username" })
        );
        assert_eq!(
            DigestCredentials::parse(&minimal(", qop=auth, nc=00000001")),
            Err(AuthError::MissingParameter { name: "cnonce" })
        );
        assert_eq!(
            DigestCredentials::parse(&minimal(", qop=auth, cnonce=\"c\"")),
            Err(AuthError::MissingParameter { name: "nc" })
        );
        assert_eq!(
            DigestCredentials::parse(&minimal(", algorithm=MD5-sess")),
            Err(AuthError::MissingParameter { name: "cnonce" })
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        // Response of the wrong length for the algorithm.
        assert!(matches!(
            DigestCredentials::parse(&minimal(", algorithm=SHA-256")),
            Err(AuthError::InvalidParameter {
                name: "response",
                ..
            })
        ));
        for nc in [
            "0000001",
            "000000001",
            "0000000g",
            "00000000",
            "\"0000\\0001\"",
        ] {
            assert!(
                matches!(
                    DigestCredentials::parse(&minimal(&format!(
                        ", qop=auth, cnonce=\"c\", nc={nc}"
                    ))),
                    Err(AuthError::InvalidParameter { name: "nc", .. })
                ),
                "nc={nc}"
            );
        }
        assert_eq!(
            DigestCredentials::parse(&minimal(", qop=auth-int, cnonce=\"c\", nc=00000001")),
            Err(AuthError::UnsupportedQop)
        );
        assert_eq!(
            DigestCredentials::parse(&minimal(", algorithm=SHA-512-256")),
            Err(AuthError::UnsupportedAlgorithm)
        );
        assert!(matches!(
            DigestCredentials::parse(&minimal(", nc=00000001")),
            Err(AuthError::InvalidParameter { name: "nc", .. })
        ));
        assert!(matches!(
            DigestCredentials::parse(&minimal(", userhash=true")),
            Err(AuthError::InvalidParameter {
                name: "userhash",
                ..
            })
        ));
    }

    #[test]
    fn syntax_errors_and_trailing_garbage() {
        assert_eq!(
            DigestCredentials::parse(&minimal(",")),
            Err(AuthError::UnexpectedEnd {
                expected: "a parameter name"
            })
        );
        assert!(matches!(
            DigestCredentials::parse(&minimal(" garbage")),
            Err(AuthError::Syntax {
                expected: "',' between parameters",
                ..
            })
        ));
        assert!(matches!(
            DigestCredentials::parse(&minimal(",, a=b")),
            Err(AuthError::Syntax {
                expected: "a parameter name",
                ..
            })
        ));
        assert!(matches!(
            DigestCredentials::parse("Digest username"),
            Err(AuthError::UnexpectedEnd { .. })
        ));
        assert!(matches!(
            DigestCredentials::parse("Digest username=\"unterminated"),
            Err(AuthError::UnterminatedQuotedString { offset: 16 })
        ));
        assert!(matches!(
            DigestCredentials::parse("Digest username=\"a\\"),
            Err(AuthError::UnterminatedQuotedString { .. })
        ));
        assert!(matches!(
            DigestCredentials::parse("Digest username=\"a\r\nb\""),
            Err(AuthError::Syntax { offset: 18, .. })
        ));
        assert!(matches!(
            DigestCredentials::parse("Digest username="),
            Err(AuthError::UnexpectedEnd { .. })
        ));
        assert!(matches!(
            DigestCredentials::parse("Digest"),
            Err(AuthError::UnexpectedEnd { .. })
        ));
        assert!(matches!(
            DigestCredentials::parse(""),
            Err(AuthError::UnexpectedEnd { .. })
        ));
        assert_eq!(
            DigestCredentials::parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Err(AuthError::UnsupportedScheme)
        );
    }

    #[test]
    fn limits_are_enforced() {
        let long = minimal(&format!(", pad=\"{}\"", "x".repeat(MAX_CREDENTIALS_LEN)));
        assert_eq!(
            DigestCredentials::parse(&long),
            Err(AuthError::CredentialsTooLong {
                len: long.len(),
                max: MAX_CREDENTIALS_LEN
            })
        );
        let many = (0..MAX_PARAMETERS).fold(String::new(), |mut many, i| {
            use core::fmt::Write as _;
            let _ = write!(many, ", p{i}=1");
            many
        });
        assert_eq!(
            DigestCredentials::parse(&minimal(&many)),
            Err(AuthError::TooManyParameters {
                max: MAX_PARAMETERS
            })
        );
    }

    #[test]
    fn debug_hides_the_response() {
        let c = DigestCredentials::parse(RFC2617).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains(MD5_RESPONSE));
        assert!(debug.contains("Mufasa"));
    }
}
