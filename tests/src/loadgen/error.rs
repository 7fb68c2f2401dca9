//! The generator's error type, and the address policy of the test bed.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use super::{bencode::BencodeError, http::HttpError, ng::NgError, sdp::SdpError};

/// Why a load run could not be set up or completed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// A parameter out of its bounds, or an inconsistent combination.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// An address outside 127.0.0.0/8 and 198.18.0.0/15 (the only ones traffic may go to).
    #[error(
        "{what} {addr} is not in 127.0.0.0/8 or 198.18.0.0/15; the test bed only sends traffic \
         there"
    )]
    AddressNotAllowed {
        /// Which address ("relay A-leg address", "NG server", ...).
        what: &'static str,
        /// The address.
        addr: IpAddr,
    },
    /// A socket or thread operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// The relayd HTTP exchange failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// relayd answered with an unexpected status or body.
    #[error("relayd {method} {path}: {reason}")]
    Api {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// Status and (a bounded excerpt of) the body, or the JSON error.
        reason: String,
    },
    /// The NG exchange failed.
    #[error(transparent)]
    Ng(#[from] NgError),
    /// A relay's SDP could not be used.
    #[error("call {call}: {source}")]
    Sdp {
        /// The call id.
        call: String,
        /// Why.
        source: SdpError,
    },
    /// The relay's SDP lacks what the generator needs (e.g. no `a=crypto` for an SRTP leg).
    #[error("call {call}: {reason}")]
    Negotiation {
        /// The call id.
        call: String,
        /// What is missing.
        reason: String,
    },
    /// Key material or an SRTP policy was refused by the SRTP engine.
    #[error("SRTP setup: {0}")]
    Srtp(#[from] srtp::Error),
    /// A bencode document could not be read.
    #[error(transparent)]
    Bencode(#[from] BencodeError),
    /// The operating system's random number generator failed (keys, SSRCs, tags).
    #[error("the OS random number generator failed: {0}")]
    Random(#[from] getrandom::Error),
    /// A worker thread panicked or could not be started.
    #[error("{0} thread failed")]
    Thread(&'static str),
}

impl LoadgenError {
    /// An [`LoadgenError::Io`] with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// A [`LoadgenError::Config`].
    pub fn config(reason: impl Into<String>) -> Self {
        Self::Config {
            reason: reason.into(),
        }
    }
}

/// Whether traffic may be sent to `addr`: 127.0.0.0/8 (loopback) or 198.18.0.0/15 (RFC 2544
/// benchmarking, used inside the test's own network namespaces). IPv4-mapped IPv6 forms of those
/// count too; nothing else does.
pub fn address_allowed(addr: IpAddr) -> bool {
    let v4 = match addr {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return false,
        },
    };
    let [a, b, ..] = v4.octets();
    a == 127 || (a == 198 && (b & 0xfe) == 18)
}

/// Refuses `addr` unless [`address_allowed`].
pub fn check_address(what: &'static str, addr: IpAddr) -> Result<(), LoadgenError> {
    if address_allowed(addr) {
        Ok(())
    } else {
        Err(LoadgenError::AddressNotAllowed { what, addr })
    }
}

/// Refuses a socket address unless its IP is allowed (and its port is not 0).
pub fn check_socket_addr(what: &'static str, addr: SocketAddr) -> Result<(), LoadgenError> {
    check_address(what, addr.ip())?;
    if addr.port() == 0 {
        return Err(LoadgenError::config(format!("{what} {addr} has port 0")));
    }
    Ok(())
}

/// The default bind address of both endpoints.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_the_benchmarking_range_are_allowed() {
        for ok in [
            "127.0.0.1",
            "127.255.0.9",
            "198.18.0.1",
            "198.19.255.254",
            "::ffff:127.0.0.1",
        ] {
            assert!(address_allowed(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "0.0.0.0",
            "8.8.8.8",
            "::1",
            "::",
            "fe80::1",
        ] {
            assert!(!address_allowed(bad.parse().unwrap()), "{bad}");
        }
        let err = check_address("NG server", "192.0.2.1".parse().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "NG server 192.0.2.1 is not in 127.0.0.0/8 or 198.18.0.0/15; the test bed only sends \
             traffic there"
        );
        assert!(check_socket_addr("relay", "127.0.0.1:0".parse().unwrap()).is_err());
    }
}
