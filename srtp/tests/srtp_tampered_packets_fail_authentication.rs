//! Any modified byte of a protected packet makes it fail (authentication, or a parse error for
//! header bits that change its shape), and a failed packet changes no state.

mod common;

use common::{pair, payload, rtcp, rtp};
use srtp::{Error, Suite};

#[test]
fn flipping_any_bit_of_an_srtp_packet_is_detected() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite, 11);
        let (mut p, len) = rtp(0x1234_5678, 1000, &payload(1, 160), 32);
        let plain = p[..len].to_vec();
        let n = tx.protect_rtp(&mut p, len).unwrap();
        let genuine = p[..n].to_vec();
        for byte in 0..n {
            for bit in [0x01u8, 0x80] {
                let mut forged = genuine.clone();
                forged[byte] ^= bit;
                let result = rx.unprotect_rtp(&mut forged, n);
                assert!(
                    matches!(
                        result,
                        Err(Error::AuthenticationFailed
                            | Error::BadVersion { .. }
                            | Error::Truncated { .. })
                    ),
                    "{suite}: byte {byte} bit {bit:#x} gave {result:?}"
                );
            }
        }
        // None of the forgeries moved the replay window or the ROC.
        let mut b = genuine.clone();
        assert_eq!(rx.unprotect_rtp(&mut b, n), Ok(len), "{suite}");
        assert_eq!(&b[..len], &plain[..], "{suite}");
    }
}

#[test]
fn flipping_any_bit_of_an_srtcp_packet_is_detected() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(suite, 12);
        let (mut p, len) = rtcp(0xdead_beef, 40, 64);
        let plain = p[..len].to_vec();
        let n = tx.protect_rtcp(&mut p, len).unwrap();
        let genuine = p[..n].to_vec();
        for byte in 0..n {
            let mut forged = genuine.clone();
            forged[byte] ^= 0x04;
            let result = rx.unprotect_rtcp(&mut forged, n);
            assert!(
                matches!(
                    result,
                    Err(Error::AuthenticationFailed | Error::BadVersion { .. })
                ),
                "{suite}: byte {byte} gave {result:?}"
            );
        }
        let mut b = genuine.clone();
        assert_eq!(rx.unprotect_rtcp(&mut b, n), Ok(len));
        assert_eq!(&b[..len], &plain[..]);
    }
}

#[test]
fn a_packet_protected_with_another_key_fails() {
    for suite in Suite::ALL {
        let (mut tx, _) = pair(suite, 13);
        let (_, mut rx) = pair(suite, 14);
        let (mut p, len) = rtp(1, 1, &payload(1, 50), 32);
        let n = tx.protect_rtp(&mut p, len).unwrap();
        assert_eq!(
            rx.unprotect_rtp(&mut p, n),
            Err(Error::AuthenticationFailed),
            "{suite}"
        );
    }
}
