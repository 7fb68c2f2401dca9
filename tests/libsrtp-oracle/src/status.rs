//! [`Status`]: a libsrtp `srtp_err_status_t` as returned by the oracle.

use std::fmt;

/// A non-ok `srtp_err_status_t` from libsrtp, kept as the raw C value so that a cross-check can
/// compare it with the engine's own error by [`Status::name`].
///
/// The oracle also reports configurations and buffers it refuses to hand to libsrtp (a master
/// key of the wrong length, a buffer without room for the trailer...) as [`Status::BAD_PARAM`],
/// the status libsrtp itself uses for unsupported parameters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub i32);

/// `srtp_err_status_t` names without the `srtp_err_status_` prefix, indexed by value
/// (/usr/include/srtp2/srtp.h, libsrtp 2.5).
const NAMES: [&str; 28] = [
    "ok",
    "fail",
    "bad_param",
    "alloc_fail",
    "dealloc_fail",
    "init_fail",
    "terminus",
    "auth_fail",
    "cipher_fail",
    "replay_fail",
    "replay_old",
    "algo_fail",
    "no_such_op",
    "no_ctx",
    "cant_check",
    "key_expired",
    "socket_err",
    "signal_err",
    "nonce_bad",
    "read_fail",
    "write_fail",
    "parse_err",
    "encode_err",
    "semaphore_err",
    "pfkey_err",
    "bad_mki",
    "pkt_idx_old",
    "pkt_idx_adv",
];

impl Status {
    /// `srtp_err_status_ok`. Never returned inside an `Err`.
    pub const OK: Self = Self(0);
    /// `srtp_err_status_fail`: unspecified failure.
    pub const FAIL: Self = Self(1);
    /// `srtp_err_status_bad_param`: unsupported parameter (also the oracle's own refusals).
    pub const BAD_PARAM: Self = Self(2);
    /// `srtp_err_status_auth_fail`: the authentication tag did not verify.
    pub const AUTH_FAIL: Self = Self(7);
    /// `srtp_err_status_replay_fail`: the packet index was already seen.
    pub const REPLAY_FAIL: Self = Self(9);
    /// `srtp_err_status_replay_old`: the packet index is behind the replay window.
    pub const REPLAY_OLD: Self = Self(10);
    /// `srtp_err_status_key_expired`: the master key reached its usage limit.
    pub const KEY_EXPIRED: Self = Self(15);
    /// `srtp_err_status_bad_mki`: no master key with the packet's MKI, or an MKI index out of
    /// range on protect.
    pub const BAD_MKI: Self = Self(25);

    /// The libsrtp name of the status without its `srtp_err_status_` prefix (`"auth_fail"`,
    /// `"replay_fail"`...), or `"unknown"` for a value srtp.h does not define.
    pub fn name(self) -> &'static str {
        usize::try_from(self.0)
            .ok()
            .and_then(|index| NAMES.get(index))
            .copied()
            .unwrap_or("unknown")
    }

    /// `Ok(())` for `srtp_err_status_ok`, the status as the error otherwise.
    pub(crate) fn check(raw: i32) -> Result<(), Self> {
        if raw == Self::OK.0 {
            Ok(())
        } else {
            Err(Self(raw))
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({} {})", self.0, self.name())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "libsrtp status {} ({})", self.name(), self.0)
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_header_numbering() {
        assert_eq!(Status::OK.name(), "ok");
        assert_eq!(Status::AUTH_FAIL.name(), "auth_fail");
        assert_eq!(Status::REPLAY_FAIL.name(), "replay_fail");
        assert_eq!(Status::REPLAY_OLD.name(), "replay_old");
        assert_eq!(Status::KEY_EXPIRED.name(), "key_expired");
        assert_eq!(Status::BAD_MKI.name(), "bad_mki");
        assert_eq!(Status(27).name(), "pkt_idx_adv");
        assert_eq!(Status(28).name(), "unknown");
        assert_eq!(Status(-1).name(), "unknown");
    }

    #[test]
    fn display_and_debug_carry_name_and_value() {
        assert_eq!(
            Status::AUTH_FAIL.to_string(),
            "libsrtp status auth_fail (7)"
        );
        assert_eq!(
            format!("{:?}", Status::REPLAY_FAIL),
            "Status(9 replay_fail)"
        );
    }
}
