//! Test-bed helpers shared by the cross-crate integration tests in `tests/tests/`.
//!
//! - [`require_root`]: root-only tests print a visible skip outside CI and fail under
//!   `CI=true` when they cannot run.
//! - [`netns`]: network namespaces and veth pairs with 198.18.0.0/15 addresses that a test
//!   creates itself and that are removed when the guard drops, on failure too.
//! - [`hex`]: packets written as hex literals.
//! - [`workspace_bin`]: the path of a workspace binary (`cargo xtask test` builds them first).
//! - [`relayd`]: an in-process relayd on an ephemeral port; [`pylibsrtp`]: libsrtp from PyPI as
//!   an independent SRTP peer.
//! - [`sipctl`]: sip-controller as a process with an in-process relayd, and the SIP peers
//!   (UDP, TCP, TLS, `SIPp`) its end-to-end tests play.
//! - [`topology`]: the caller/relay/callee namespaces of the kernel-datapath tests, with relayd
//!   as a process in the relay namespace.
//! - [`loadgen`]: the RTP/SRTP load generator behind the `relay-loadgen` binary (relayd's HTTP
//!   API or the NG protocol for call setup, paced RTP both ways, verification, loss and
//!   latency reports, a search for the highest clean rate, an overload-then-recovery run that
//!   counts the streams still alive).
//!
//! Traffic from these helpers only ever goes to 127.0.0.0/8 or inside the test's own namespaces.

pub mod baresip;
pub mod loadgen;
pub mod netns;
pub mod pylibsrtp;
pub mod relayd;
pub mod sipctl;
pub mod topology;
pub mod xdpbench;

use std::path::PathBuf;

/// Whether a root-only test can run. Outside CI a missing privilege prints a visible skip and
/// returns `false`; under `CI=true` it panics, because CI must run every test.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root (CAP_BPF, CAP_NET_ADMIN) and CI=true forbids skipping it"
    );
    eprintln!("SKIPPED {test}: needs root (CAP_BPF, CAP_NET_ADMIN); run as root to include it");
    false
}

/// Decodes a hex literal, ignoring ASCII white space (so packets can be laid out by header).
///
/// # Panics
/// On an odd number of digits or a non-hex character: the literal is a test bug.
pub fn hex(literal: &str) -> Vec<u8> {
    let digits: Vec<u8> = literal
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits in {literal:?}"
    );
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ASCII");
            u8::from_str_radix(text, 16).unwrap_or_else(|_| panic!("bad hex byte {text:?}"))
        })
        .collect()
}

/// Path of a binary of this workspace in the same target profile as the running test.
///
/// # Panics
/// When the binary has not been built (`cargo xtask test` builds every binary first; by hand,
/// run `cargo build --bins`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>, or target/<profile>/<binary> for this crate's own
    // binaries (the benchmarks).
    let parent = exe.parent().expect("an executable lives in a directory");
    let profile_dir = if parent.ends_with("deps") {
        parent.parent().expect("deps lives in target/<profile>")
    } else {
        parent
    };
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace binaries first (`cargo build --bins`)",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::hex;

    #[test]
    fn hex_ignores_layout_whitespace() {
        assert_eq!(hex("de ad\n be\tef"), vec![0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    #[should_panic(expected = "odd number")]
    fn hex_rejects_odd_digit_counts() {
        let _ = hex("abc");
    }
}
