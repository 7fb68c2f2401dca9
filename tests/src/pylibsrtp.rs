//! `pylibsrtp` (libsrtp from PyPI, in the workspace's `.venv`) as an independent SRTP peer, via
//! `tests/py/pylibsrtp_peer.py`: one session per call, packets in order.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use base64::Engine as _;
use serde_json::{json, Value};

/// What to do with the packets.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Protect RTP packets.
    ProtectRtp,
    /// Unprotect SRTP packets.
    UnprotectRtp,
    /// Protect RTCP packets.
    ProtectRtcp,
    /// Unprotect SRTCP packets.
    UnprotectRtcp,
}

impl Mode {
    const fn name(self) -> &'static str {
        match self {
            Self::ProtectRtp => "protect_rtp",
            Self::UnprotectRtp => "unprotect_rtp",
            Self::ProtectRtcp => "protect_rtcp",
            Self::UnprotectRtcp => "unprotect_rtcp",
        }
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The venv's Python, if `cargo xtask setup` made it. Under `CI=true` a missing one panics;
/// elsewhere the caller skips with a visible line.
pub fn python(test: &str) -> Option<PathBuf> {
    let python = workspace().join(".venv/bin/python");
    if python.is_file() {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {} is missing; `cargo xtask setup` creates it",
        python.display()
    );
    eprintln!("SKIPPED {test}: no .venv with pylibsrtp (run `cargo xtask setup`)");
    None
}

/// Runs `packets` through one pylibsrtp session with `suite` and key material `key` (master
/// key || salt); one result per packet: the output bytes, or libsrtp's error text.
///
/// # Panics
/// When the peer cannot run or answers something that is not its JSON.
pub fn run(
    python: &PathBuf,
    suite: &str,
    key: &[u8],
    mode: Mode,
    packets: &[Vec<u8>],
) -> Vec<Result<Vec<u8>, String>> {
    let job = json!({
        "profile": suite,
        "key_b64": base64::engine::general_purpose::STANDARD.encode(key),
        "mode": mode.name(),
        "packets_hex": packets.iter().map(|p| hex(p)).collect::<Vec<_>>(),
    });
    let mut child = Command::new(python)
        .arg(workspace().join("tests/py/pylibsrtp_peer.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the pylibsrtp peer");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(job.to_string().as_bytes())
        .expect("write the job");
    let output = child.wait_with_output().expect("pylibsrtp peer");
    assert!(
        output.status.success(),
        "pylibsrtp peer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: Value = serde_json::from_slice(&output.stdout).expect("peer JSON");
    reply["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            if r["ok"].as_bool() == Some(true) {
                Ok(unhex(r["hex"].as_str().expect("hex")))
            } else {
                Err(r["error"].as_str().unwrap_or("?").to_owned())
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex from the peer"))
        .collect()
}
