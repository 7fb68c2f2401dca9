//! The digest computation itself (RFC 7616 §3.4.1–§3.4.3, RFC 2617 §3.2.2, RFC 2069 §2.1.2):
//! the algorithms, `H(A1)`, `H(A2)` and the `response` value, as lowercase hex.
//!
//! ```text
//! A1       = username ":" realm ":" password                      ; MD5, SHA-256
//! A1-sess  = H(username ":" realm ":" password) ":" nonce ":" cnonce   ; -sess variants
//! A2       = Method ":" digest-uri                                 ; qop=auth or no qop
//! response = H( H(A1) ":" nonce ":" nc ":" cnonce ":" qop ":" H(A2) )  ; qop=auth
//! response = H( H(A1) ":" nonce ":" H(A2) )                            ; RFC 2069, no qop
//! ```
//!
//! Every value that is password-equivalent (`H(A1)`) lives in a [`Zeroizing`] buffer.

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The hash function behind a digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashFunction {
    /// MD5 (RFC 1321): the only algorithm most SIP phones know.
    Md5,
    /// SHA-256 (RFC 7616 §3.2, RFC 8760 for SIP).
    Sha256,
}

impl HashFunction {
    /// Length of the hash output in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha256 => 32,
        }
    }

    /// Length of the hash output as lowercase hex (the `response` and `H(A1)` form).
    pub const fn hex_len(self) -> usize {
        self.output_len() * 2
    }

    /// The `algorithm` token of the non-session variant.
    pub const fn token(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// `H(part0 ":" part1 ":" ...)` as lowercase hex.
    pub(crate) fn hex_digest(self, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        match self {
            Self::Md5 => hex_digest_with::<Md5>(parts),
            Self::Sha256 => hex_digest_with::<Sha256>(parts),
        }
    }
}

fn hex_digest_with<D: Digest>(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let mut hasher = D::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hasher.update(b":");
        }
        hasher.update(part);
    }
    let output = Zeroizing::new(hasher.finalize().to_vec());
    Zeroizing::new(hex_lower(&output).into_bytes())
}

/// A digest algorithm as named by the `algorithm` parameter (RFC 7616 §3.3, §6.1 registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Algorithm {
    /// `MD5`, the default when `algorithm` is absent (RFC 7616 §3.3).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    /// Parses an `algorithm` token, case-insensitively (RFC 7616 §3.3: tokens compare
    /// case-insensitively). `None` for algorithms this server does not implement
    /// (`SHA-512-256` and private ones).
    pub fn parse(token: &str) -> Option<Self> {
        [Self::Md5, Self::Md5Sess, Self::Sha256, Self::Sha256Sess]
            .into_iter()
            .find(|algorithm| algorithm.token().eq_ignore_ascii_case(token))
    }

    /// The token as written in a challenge.
    pub const fn token(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    /// The hash function.
    pub const fn hash(self) -> HashFunction {
        match self {
            Self::Md5 | Self::Md5Sess => HashFunction::Md5,
            Self::Sha256 | Self::Sha256Sess => HashFunction::Sha256,
        }
    }

    /// Whether this is a `-sess` variant, whose `A1` also covers nonce and cnonce.
    pub const fn is_session(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }
}

/// `H(A1)` for a password (RFC 7616 §3.4.2): `H(username ":" realm ":" password)`, lowercase
/// hex. This is what a credential store keeps instead of the password.
pub fn ha1_from_password(
    hash: HashFunction,
    username: &str,
    realm: &str,
    password: &str,
) -> Zeroizing<Vec<u8>> {
    hash.hex_digest(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// The `response` value a client computes, and the server recomputes to compare.
///
/// `ha1_hex` is the plain `H(username:realm:password)`; the `-sess` derivation happens here.
#[derive(Clone, Copy)]
pub(crate) struct ResponseInput<'a> {
    pub algorithm: Algorithm,
    pub ha1_hex: &'a [u8],
    pub method: &'a str,
    pub digest_uri: &'a str,
    pub nonce: &'a str,
    /// `(nc, cnonce, qop)` exactly as sent, when `qop` is present (RFC 7616 §3.4.1).
    pub qop: Option<QopInput<'a>>,
    /// The cnonce for `-sess` algorithms (also required there without qop).
    pub cnonce: Option<&'a str>,
}

/// The qop-related values that enter the response, byte-for-byte as the client sent them.
#[derive(Clone, Copy)]
pub(crate) struct QopInput<'a> {
    pub nc: &'a str,
    pub cnonce: &'a str,
    pub qop: &'a str,
}

impl ResponseInput<'_> {
    /// Computes the lowercase-hex `response`.
    pub(crate) fn response(&self) -> Zeroizing<Vec<u8>> {
        let hash = self.algorithm.hash();
        // RFC 7616 §3.4.2: for -sess, A1 = H(user:realm:pass) ":" nonce ":" cnonce.
        let session_ha1;
        let ha1: &[u8] = if self.algorithm.is_session() {
            session_ha1 = hash.hex_digest(&[
                self.ha1_hex,
                self.nonce.as_bytes(),
                self.cnonce.unwrap_or_default().as_bytes(),
            ]);
            &session_ha1
        } else {
            self.ha1_hex
        };
        // RFC 7616 §3.4.3: A2 = Method ":" request-uri for qop=auth (and for no qop).
        let ha2 = hash.hex_digest(&[self.method.as_bytes(), self.digest_uri.as_bytes()]);
        match self.qop {
            // RFC 7616 §3.4.1.
            Some(qop) => hash.hex_digest(&[
                ha1,
                self.nonce.as_bytes(),
                qop.nc.as_bytes(),
                qop.cnonce.as_bytes(),
                qop.qop.as_bytes(),
                &ha2,
            ]),
            // RFC 2069 §2.1.2 (kept by RFC 2617 §3.2.2.1 for compatibility).
            None => hash.hex_digest(&[ha1, self.nonce.as_bytes(), &ha2]),
        }
    }
}

/// What a client (this B2BUA toward a carrier, or a test) needs to answer a challenge with
/// `qop=auth`.
#[derive(Clone, Copy)]
pub struct ClientCredentials<'a> {
    /// The algorithm the challenge named.
    pub algorithm: Algorithm,
    /// The user name.
    pub username: &'a str,
    /// The challenge's realm.
    pub realm: &'a str,
    /// The password.
    pub password: &'a str,
    /// The request method (`REGISTER`, `INVITE`, ...).
    pub method: &'a str,
    /// The digest-uri (the Request-URI).
    pub digest_uri: &'a str,
    /// The challenge's nonce.
    pub nonce: &'a str,
    /// The nonce count as 8 lowercase hex digits, e.g. `00000001`.
    pub nc: &'a str,
    /// The client nonce.
    pub cnonce: &'a str,
}

impl core::fmt::Debug for ClientCredentials<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("algorithm", &self.algorithm)
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("password", &"<redacted>")
            .field("method", &self.method)
            .field("digest_uri", &self.digest_uri)
            .field("nonce", &self.nonce)
            .field("nc", &self.nc)
            .field("cnonce", &self.cnonce)
            .finish()
    }
}

impl ClientCredentials<'_> {
    /// The lowercase-hex `response` for `qop=auth` (RFC 7616 §3.4.1).
    pub fn response(&self) -> String {
        let ha1 = ha1_from_password(
            self.algorithm.hash(),
            self.username,
            self.realm,
            self.password,
        );
        let response = ResponseInput {
            algorithm: self.algorithm,
            ha1_hex: &ha1,
            method: self.method,
            digest_uri: self.digest_uri,
            nonce: self.nonce,
            qop: Some(QopInput {
                nc: self.nc,
                cnonce: self.cnonce,
                qop: "auth",
            }),
            cnonce: Some(self.cnonce),
        }
        .response();
        String::from_utf8_lossy(&response).into_owned()
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Decodes hex (either case) of exactly `N` bytes.
pub(crate) fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_hex(input: &ResponseInput<'_>) -> String {
        String::from_utf8(input.response().to_vec()).unwrap()
    }

    /// RFC 7616 §3.9.1 (HTTP, but the computation is the one SIP uses).
    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc7616(algorithm: Algorithm) -> String {
        ClientCredentials {
            algorithm,
            username: "Mufasa",
            realm: "http-auth@example.org",
            password: "Circle of Life",
            method: "GET",
            digest_uri: "/dir/index.html",
            nonce: RFC7616_NONCE,
            nc: "00000001",
            cnonce: RFC7616_CNONCE,
        }
        .response()
    }

    #[test]
    fn rfc7616_md5_example() {
        assert_eq!(rfc7616(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn rfc7616_sha256_example() {
        assert_eq!(
            rfc7616(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc2617_md5_example() {
        let ha1 = ha1_from_password(
            HashFunction::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let input = ResponseInput {
            algorithm: Algorithm::Md5,
            ha1_hex: &ha1,
            method: "GET",
            digest_uri: "/dir/index.html",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop: Some(QopInput {
                nc: "00000001",
                cnonce: "0a4f113b",
                qop: "auth",
            }),
            cnonce: Some("0a4f113b"),
        };
        assert_eq!(response_hex(&input), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc2069_response_without_qop() {
        // RFC 2069 §2.1.2: without qop the response is H(H(A1):nonce:H(A2)).
        let ha1 = ha1_from_password(
            HashFunction::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let ha2 = HashFunction::Md5.hex_digest(&[b"GET", b"/dir/index.html"]);
        let nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093";
        let expected = HashFunction::Md5.hex_digest(&[&ha1, nonce.as_bytes(), &ha2]);
        let input = ResponseInput {
            algorithm: Algorithm::Md5,
            ha1_hex: &ha1,
            method: "GET",
            digest_uri: "/dir/index.html",
            nonce,
            qop: None,
            cnonce: None,
        };
        assert_eq!(input.response(), expected);
    }

    #[test]
    fn session_variant_rehashes_ha1_with_nonce_and_cnonce() {
        let ha1 = ha1_from_password(HashFunction::Sha256, "u", "r", "p");
        let sess_ha1 = HashFunction::Sha256.hex_digest(&[&ha1, b"n", b"c"]);
        let ha2 = HashFunction::Sha256.hex_digest(&[b"REGISTER", b"sip:r"]);
        let expected =
            HashFunction::Sha256.hex_digest(&[&sess_ha1, b"n", b"00000001", b"c", b"auth", &ha2]);
        let input = ResponseInput {
            algorithm: Algorithm::Sha256Sess,
            ha1_hex: &ha1,
            method: "REGISTER",
            digest_uri: "sip:r",
            nonce: "n",
            qop: Some(QopInput {
                nc: "00000001",
                cnonce: "c",
                qop: "auth",
            }),
            cnonce: Some("c"),
        };
        assert_eq!(input.response(), expected);
    }

    #[test]
    fn algorithm_tokens_are_case_insensitive() {
        assert_eq!(Algorithm::parse("md5"), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse("sha-256"), Some(Algorithm::Sha256));
        assert_eq!(
            Algorithm::parse("SHA-256-SESS"),
            Some(Algorithm::Sha256Sess)
        );
        assert_eq!(Algorithm::parse("MD5-sess"), Some(Algorithm::Md5Sess));
        assert_eq!(Algorithm::parse("SHA-512-256"), None);
        assert_eq!(Algorithm::parse(""), None);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex_lower(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(decode_hex::<3>("00ABff"), Some([0x00, 0xab, 0xff]));
        assert_eq!(decode_hex::<3>("00abf"), None);
        assert_eq!(decode_hex::<2>("0g00"), None);
    }
}
