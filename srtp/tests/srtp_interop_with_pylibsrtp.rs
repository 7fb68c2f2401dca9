//! Interop with an independent peer: pylibsrtp 1.0.0 (the Python binding, with its own libsrtp
//! build), driven through `tests/py/pylibsrtp_peer.py` with the workspace's `.venv` Python. For
//! every profile pylibsrtp exposes: 200 of our SRTP packets (random sizes, two SSRCs, crossing
//! the 65535 -> 0 wrap) decrypt in pylibsrtp to the plaintext, pylibsrtp's SRTP packets of the
//! same plaintexts are byte-identical to ours and decrypt with us, the same for 200 SRTCP
//! packets, and pylibsrtp refuses a tampered packet of ours with an authentication failure.
//!
//! Without `.venv/bin/python` (run `cargo xtask setup`) the tests print `SKIPPED` and pass,
//! except under `CI=true`, where they fail.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test data generators truncate on purpose"
)]

mod common;

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use base64::Engine as _;
use common::material;
use srtp::{Context, MasterKey, Policy, Suite};

/// Profiles pylibsrtp 1.0.0 exposes (`dir(pylibsrtp.Policy)`); the peer may list more.
const PYLIBSRTP_PROFILES: [Suite; 4] = [
    Suite::AesCm128HmacSha1_80,
    Suite::AesCm128HmacSha1_32,
    Suite::AeadAes128Gcm,
    Suite::AeadAes256Gcm,
];
const PACKETS: usize = 200;
const SSRCS: [u32; 2] = [0x00c0_ffee, 0x7e57_0001];

/// The pylibsrtp peer: the venv's Python and the script.
struct Peer {
    python: PathBuf,
    script: PathBuf,
}

/// The peer, or `None` (after a visible `SKIPPED` line) when the venv is missing outside CI.
fn peer(test: &str) -> Option<Peer> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = workspace.join(".venv/bin/python");
    let script = workspace.join("tests/py/pylibsrtp_peer.py");
    assert!(script.is_file(), "{} is missing", script.display());
    if python.is_file() {
        return Some(Peer { python, script });
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {} is missing and CI=true forbids skipping; run `cargo xtask setup`",
        python.display()
    );
    // Straight to the process's stderr, past libtest's output capture, so the skip is seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {} is missing; run `cargo xtask setup` to include it",
        python.display()
    );
    None
}

impl Peer {
    /// Runs the script with `args` and `stdin`, returning its parsed JSON output.
    fn call(&self, args: &[&str], stdin: &str) -> Json {
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.python.display()));
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(stdin.as_bytes())
            .expect("writing the job");
        let output = child.wait_with_output().expect("the peer ran");
        assert!(
            output.status.success(),
            "pylibsrtp_peer.py failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
        Json::parse(&stdout).unwrap_or_else(|e| panic!("peer output {stdout:?}: {e}"))
    }

    /// The SDES names of the profiles this pylibsrtp supports.
    fn profiles(&self) -> Vec<Suite> {
        let listed = self.call(&["--list-profiles"], "");
        let names = listed.get("profiles").array();
        names
            .iter()
            .map(|name| {
                let name = name.string();
                Suite::from_sdes_name(name)
                    .unwrap_or_else(|| panic!("pylibsrtp lists {name}, which we do not know"))
            })
            .collect()
    }

    /// Runs one job (one pylibsrtp session, packets in order) and returns each packet's
    /// result: the output bytes, or pylibsrtp's error text.
    fn run(&self, suite: Suite, mode: &str, packets: &[Vec<u8>]) -> Vec<Result<Vec<u8>, String>> {
        let key = base64::engine::general_purpose::STANDARD.encode(key_material(suite));
        let packets: Vec<String> = packets.iter().map(|p| json_string(&hex(p))).collect();
        let job = format!(
            r#"{{"profile": {}, "key_b64": {}, "mode": {}, "packets_hex": [{}]}}"#,
            json_string(suite.sdes_name()),
            json_string(&key),
            json_string(mode),
            packets.join(", ")
        );
        let output = self.call(&[], &job);
        let results: Vec<_> = output
            .get("results")
            .array()
            .iter()
            .map(|r| match r.get("ok") {
                Json::Bool(true) => Ok(unhex(r.get("hex").string())),
                Json::Bool(false) => Err(r.get("error").string().to_owned()),
                other => panic!("result without ok: {other:?}"),
            })
            .collect();
        assert_eq!(
            results.len(),
            packets.len(),
            "{suite} {mode}: one result per packet"
        );
        results
    }
}

fn key_material(suite: Suite) -> Vec<u8> {
    material(suite, 0x99)
}

fn context(suite: Suite) -> Context {
    Context::new(&Policy::new(
        MasterKey::from_material(suite, &key_material(suite)).unwrap(),
    ))
    .unwrap()
}

/// xorshift64*: deterministic, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// 200 RTP packets alternating irregularly between two SSRCs whose sequence numbers start at
/// 65 480 and 65 500 (both wrap), with CSRCs and header extensions now and then, payloads of
/// 0..1000 bytes (pylibsrtp's buffer is 1500 bytes, trailer room included).
fn rtp_plaintexts(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    let mut seqs = [65_480u16, 65_500];
    (0..PACKETS)
        .map(|_| {
            let which = rng.below(2) as usize;
            let seq = seqs[which];
            seqs[which] = seq.wrapping_add(1);
            let csrcs = if rng.below(8) == 0 {
                rng.below(3) as u8
            } else {
                0
            };
            let extension = rng.below(8) == 0;
            let mut p = vec![
                0x80 | csrcs | if extension { 0x10 } else { 0 },
                rng.below(128) as u8,
            ];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(rng.next() as u32).to_be_bytes());
            p.extend_from_slice(&SSRCS[which].to_be_bytes());
            for _ in 0..csrcs {
                p.extend_from_slice(&(rng.next() as u32).to_be_bytes());
            }
            if extension {
                let words = rng.below(3) as usize;
                p.extend_from_slice(&[0xbe, 0xde, 0x00, words as u8]);
                p.extend_from_slice(&rng.bytes(4 * words));
            }
            let len = rng.below(1000) as usize;
            p.extend_from_slice(&rng.bytes(len));
            p
        })
        .collect()
}

/// 200 RTCP packets (SR, RR, SDES, BYE, APP headers) from the two SSRCs, 0..1000 bytes of body.
fn rtcp_plaintexts(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    (0..PACKETS)
        .map(|_| {
            let words = rng.below(250) as usize;
            let mut p = vec![0x80, 200 + rng.below(5) as u8];
            p.extend_from_slice(&(words as u16 + 1).to_be_bytes());
            p.extend_from_slice(&SSRCS[rng.below(2) as usize].to_be_bytes());
            p.extend_from_slice(&rng.bytes(4 * words));
            p
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Rtp,
    Rtcp,
}

fn protect_all(ctx: &mut Context, kind: Kind, plains: &[Vec<u8>]) -> Vec<Vec<u8>> {
    plains
        .iter()
        .map(|plain| {
            let mut b = plain.clone();
            b.resize(plain.len() + 64, 0);
            let n = match kind {
                Kind::Rtp => ctx.protect_rtp(&mut b, plain.len()),
                Kind::Rtcp => ctx.protect_rtcp(&mut b, plain.len()),
            }
            .unwrap();
            b.truncate(n);
            b
        })
        .collect()
}

/// Each direction for one kind of packet, every profile.
fn both_directions(test: &str, kind: Kind) {
    let Some(peer) = peer(test) else { return };
    let profiles = peer.profiles();
    for suite in PYLIBSRTP_PROFILES {
        assert!(
            profiles.contains(&suite),
            "pylibsrtp no longer offers {suite}"
        );
    }
    let (mode, plains) = match kind {
        Kind::Rtp => ("rtp", rtp_plaintexts(0x1e57)),
        Kind::Rtcp => ("rtcp", rtcp_plaintexts(0x2e57)),
    };
    for suite in profiles {
        // Ours -> pylibsrtp.
        let ours = protect_all(&mut context(suite), kind, &plains);
        let decrypted = peer.run(suite, &format!("unprotect_{mode}"), &ours);
        for (i, (result, plain)) in decrypted.iter().zip(&plains).enumerate() {
            assert_eq!(
                result.as_ref(),
                Ok(plain),
                "{suite} {kind:?} {i}: pylibsrtp decrypting ours"
            );
        }

        // pylibsrtp -> ours: byte-identical to our output, and we decrypt it.
        let theirs = peer.run(suite, &format!("protect_{mode}"), &plains);
        let mut rx = context(suite);
        for (i, (result, plain)) in theirs.iter().zip(&plains).enumerate() {
            let srtp = result
                .as_ref()
                .unwrap_or_else(|e| panic!("{suite} {kind:?} {i}: pylibsrtp protect: {e}"));
            assert_eq!(
                srtp, &ours[i],
                "{suite} {kind:?} {i}: pylibsrtp's bytes differ from ours"
            );
            let mut b = srtp.clone();
            let n = match kind {
                Kind::Rtp => rx.unprotect_rtp(&mut b, srtp.len()),
                Kind::Rtcp => rx.unprotect_rtcp(&mut b, srtp.len()),
            }
            .unwrap_or_else(|e| panic!("{suite} {kind:?} {i}: decrypting pylibsrtp's: {e}"));
            assert_eq!(&b[..n], &plain[..], "{suite} {kind:?} {i}");
        }
        if let Kind::Rtp = kind {
            for ssrc in SSRCS {
                assert_eq!(rx.roc(ssrc), Some(1), "{suite}: {ssrc:#x} wrapped");
            }
        }
    }
}

#[test]
fn srtp_packets_interoperate_with_pylibsrtp_in_both_directions() {
    both_directions(
        "srtp_packets_interoperate_with_pylibsrtp_in_both_directions",
        Kind::Rtp,
    );
}

#[test]
fn srtcp_packets_interoperate_with_pylibsrtp_in_both_directions() {
    both_directions(
        "srtcp_packets_interoperate_with_pylibsrtp_in_both_directions",
        Kind::Rtcp,
    );
}

#[test]
fn pylibsrtp_refuses_our_tampered_packets_with_an_authentication_failure() {
    let Some(peer) = peer("pylibsrtp_refuses_our_tampered_packets_with_an_authentication_failure")
    else {
        return;
    };
    for suite in peer.profiles() {
        for (kind, mode, plains) in [
            (Kind::Rtp, "unprotect_rtp", rtp_plaintexts(0x3e57)),
            (Kind::Rtcp, "unprotect_rtcp", rtcp_plaintexts(0x4e57)),
        ] {
            let genuine = protect_all(&mut context(suite), kind, &plains[..1]).remove(0);
            // One bit of the first encrypted byte (after the 12- or 8-byte header).
            let mut tampered = genuine.clone();
            let at = match kind {
                Kind::Rtp => 12,
                Kind::Rtcp => 8,
            };
            tampered[at] ^= 0x01;
            let results = peer.run(suite, mode, &[tampered, genuine]);
            assert_eq!(
                results[0],
                Err("authentication failure".to_owned()),
                "{suite} {kind:?}: tampered"
            );
            assert_eq!(
                results[1].as_ref(),
                Ok(&plains[0]),
                "{suite} {kind:?}: then genuine"
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Just enough JSON to read the peer's answers (no new dependency for one test).
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Self, String> {
        let mut parser = JsonParser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value()?;
        parser.skip_whitespace();
        if parser.at != parser.bytes.len() {
            return Err(format!("trailing characters at {}", parser.at));
        }
        Ok(value)
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Self::Object(members) => members
                .iter()
                .find(|(k, _)| k == key)
                .map_or_else(|| panic!("no {key:?} in {self:?}"), |(_, v)| v),
            other => panic!("not an object: {other:?}"),
        }
    }

    fn array(&self) -> &[Json] {
        match self {
            Self::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn string(&self) -> &str {
        match self {
            Self::String(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
}

struct JsonParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn skip_whitespace(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn expect(&mut self, literal: &str) -> Result<(), String> {
        if self.bytes[self.at..].starts_with(literal.as_bytes()) {
            self.at += literal.len();
            Ok(())
        } else {
            Err(format!("expected {literal:?} at {}", self.at))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.skip_whitespace();
        match self.bytes.get(self.at) {
            Some(b'n') => self.expect("null").map(|()| Json::Null),
            Some(b't') => self.expect("true").map(|()| Json::Bool(true)),
            Some(b'f') => self.expect("false").map(|()| Json::Bool(false)),
            Some(b'"') => self.string().map(Json::String),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.skip_whitespace();
                if self.bytes.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    self.skip_whitespace();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(format!("expected , or ] at {}", self.at)),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                self.skip_whitespace();
                if self.bytes.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    self.skip_whitespace();
                    let key = self.string()?;
                    self.skip_whitespace();
                    self.expect(":")?;
                    members.push((key, self.value()?));
                    self.skip_whitespace();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(members));
                        }
                        _ => return Err(format!("expected , or }} at {}", self.at)),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| b"+-.eE0123456789".contains(b))
                {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.bytes[start..self.at]).expect("ASCII");
                text.parse()
                    .map(Json::Number)
                    .map_err(|e| format!("number {text:?}: {e}"))
            }
            _ => Err(format!("unexpected input at {}", self.at)),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect("\"")?;
        let mut out = String::new();
        loop {
            let rest = std::str::from_utf8(&self.bytes[self.at..]).map_err(|e| e.to_string())?;
            let mut chars = rest.chars();
            let c = chars.next().ok_or("unterminated string")?;
            self.at += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let escape = chars.next().ok_or("unterminated escape")?;
                    self.at += 1;
                    match escape {
                        '"' | '\\' | '/' => out.push(escape),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => {
                            let code = rest.get(2..6).ok_or("short \\u escape")?;
                            let code = u32::from_str_radix(code, 16).map_err(|e| e.to_string())?;
                            self.at += 4;
                            // Surrogate pairs do not occur in the peer's ASCII output.
                            out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                        }
                        other => return Err(format!("bad escape \\{other}")),
                    }
                }
                c => out.push(c),
            }
        }
    }
}
