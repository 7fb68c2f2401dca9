//! RTP and RTCP header parsing: just what SRTP needs (RFC 3550 §5.1, §6.4).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                             SSRC                              |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |                       CSRC list (CC x 32 bits)                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   extension profile (X=1)     |   extension length (words)    |
//! |                    extension (length x 32 bits)               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! An RTCP packet (compound or not) starts with `V=2|P|count|PT|length|SSRC`: SRTCP leaves those
//! first 8 bytes in the clear.

use crate::Error;

/// Fixed RTP header length.
pub(crate) const RTP_HEADER_LEN: usize = 12;
/// The part of an RTCP packet SRTCP never encrypts.
pub(crate) const RTCP_HEADER_LEN: usize = 8;

/// What SRTP needs from an RTP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RtpHeader {
    pub(crate) seq: u16,
    pub(crate) ssrc: u32,
    /// Fixed header + CSRCs + extension: the start of the payload.
    pub(crate) len: usize,
}

/// Parses the RTP header of `packet` (which must not include SRTP trailers).
pub(crate) fn parse_rtp(packet: &[u8]) -> Result<RtpHeader, Error> {
    if packet.len() < RTP_HEADER_LEN {
        return Err(Error::Truncated {
            len: packet.len(),
            needed: RTP_HEADER_LEN,
        });
    }
    let version = packet[0] >> 6;
    if version != 2 {
        return Err(Error::BadVersion { version });
    }
    let csrc_count = usize::from(packet[0] & 0x0f);
    let mut len = RTP_HEADER_LEN + 4 * csrc_count;
    if packet[0] & 0x10 != 0 {
        // Header extension: 16-bit profile, 16-bit length in 32-bit words (RFC 3550 §5.3.1).
        if packet.len() < len + 4 {
            return Err(Error::Truncated {
                len: packet.len(),
                needed: len + 4,
            });
        }
        let words = usize::from(u16::from_be_bytes([packet[len + 2], packet[len + 3]]));
        len += 4 + 4 * words;
    }
    if packet.len() < len {
        return Err(Error::Truncated {
            len: packet.len(),
            needed: len,
        });
    }
    Ok(RtpHeader {
        seq: u16::from_be_bytes([packet[2], packet[3]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        len,
    })
}

/// Parses the first RTCP header of `packet`: its version and the sender SSRC.
pub(crate) fn parse_rtcp(packet: &[u8]) -> Result<u32, Error> {
    if packet.len() < RTCP_HEADER_LEN {
        return Err(Error::Truncated {
            len: packet.len(),
            needed: RTCP_HEADER_LEN,
        });
    }
    let version = packet[0] >> 6;
    if version != 2 {
        return Err(Error::BadVersion { version });
    }
    Ok(u32::from_be_bytes([
        packet[4], packet[5], packet[6], packet[7],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_header() {
        let p = [
            0x80, 0x0f, 0x12, 0x34, 0xde, 0xca, 0xfb, 0xad, 0xca, 0xfe, 0xba, 0xbe, 0xab,
        ];
        assert_eq!(
            parse_rtp(&p),
            Ok(RtpHeader {
                seq: 0x1234,
                ssrc: 0xcafe_babe,
                len: 12
            })
        );
    }

    #[test]
    fn csrcs_and_extension_extend_the_header() {
        // CC=1, X=1, one CSRC, extension of 1 word.
        let mut p = vec![0x91, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        p.extend_from_slice(&[1, 2, 3, 4]); // CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // one-byte extension
        p.extend_from_slice(&[0x55; 4]);
        assert_eq!(parse_rtp(&p).unwrap().len, 12 + 4 + 8);
        // Truncated inside the extension.
        assert_eq!(
            parse_rtp(&p[..20]),
            Err(Error::Truncated {
                len: 20,
                needed: 24
            })
        );
    }

    #[test]
    fn bad_version_and_short_packets_are_errors() {
        assert_eq!(
            parse_rtp(&[0x40; 12]),
            Err(Error::BadVersion { version: 1 })
        );
        assert_eq!(
            parse_rtp(&[0x80; 11]),
            Err(Error::Truncated {
                len: 11,
                needed: 12
            })
        );
        assert_eq!(
            parse_rtcp(&[0x80; 7]),
            Err(Error::Truncated { len: 7, needed: 8 })
        );
        assert_eq!(parse_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 7]), Ok(7));
    }
}
