//! Ethernet/IP/UDP frames as the AF_XDP workers see them: parse a received frame, and rewrite
//! its headers in place for the egress after the payload changed length (SRTP adds or removes
//! its tag). IO-free and allocation-free.
//!
//! ```text
//! | dst MAC | src MAC | type | IPv4 (20+ bytes) or IPv6 (40) | UDP (8) | payload ... |
//! ```
//!
//! The XDP program only redirects untagged IPv4/IPv6 UDP frames, so tagged frames and
//! extension headers are refused here rather than parsed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const ETH_HEADER_LEN: usize = 14;
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;
const IPPROTO_UDP: u8 = 17;
/// Hop limit of frames the relay sends: it originates them, like a socket would.
const HOP_LIMIT: u8 = 64;

/// Why a frame cannot be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than its headers say.
    #[error("frame truncated")]
    Truncated,
    /// Not untagged IPv4/IPv6 carrying UDP directly.
    #[error("not an untagged IP/UDP frame")]
    NotUdp,
    /// IPv4 fragment.
    #[error("IP fragment")]
    Fragment,
    /// The new payload does not fit the buffer, or the egress is of the other IP family.
    #[error("cannot rewrite the frame for this egress")]
    Rewrite,
}

/// Where the headers of a parsed frame are, and its transport addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the UDP header.
    pub l4: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Source address and port.
    pub source: SocketAddr,
    /// Destination address and port.
    pub destination: SocketAddr,
    /// Length of the UDP payload (from the UDP header, not the frame: Ethernet may pad).
    pub payload_len: usize,
}

impl Parsed {
    /// Offset of the UDP payload.
    pub const fn payload(&self) -> usize {
        self.l4 + UDP_HEADER_LEN
    }
}

/// Parses an untagged Ethernet frame carrying UDP over IPv4 (no fragment) or IPv6 (UDP as the
/// first next header).
pub fn parse(frame: &[u8]) -> Result<Parsed, FrameError> {
    let ethertype = u16::from_be_bytes(
        frame
            .get(12..14)
            .ok_or(FrameError::Truncated)?
            .try_into()
            .expect("two bytes"),
    );
    let l3 = ETH_HEADER_LEN;
    let (l4, v6, source_ip, destination_ip, ip_payload_end) = match ethertype {
        0x0800 => {
            let ip = frame
                .get(l3..l3 + IPV4_MIN_HEADER_LEN)
                .ok_or(FrameError::Truncated)?;
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            if ip[0] >> 4 != 4 || header_len < IPV4_MIN_HEADER_LEN || ip[9] != IPPROTO_UDP {
                return Err(FrameError::NotUdp);
            }
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return Err(FrameError::Fragment);
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
            (l3 + header_len, false, src, dst, l3 + total)
        }
        0x86dd => {
            let ip = frame
                .get(l3..l3 + IPV6_HEADER_LEN)
                .ok_or(FrameError::Truncated)?;
            if ip[0] >> 4 != 6 || ip[6] != IPPROTO_UDP {
                return Err(FrameError::NotUdp);
            }
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
            let dst: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
            (
                l3 + IPV6_HEADER_LEN,
                true,
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                l3 + IPV6_HEADER_LEN + payload,
            )
        }
        _ => return Err(FrameError::NotUdp),
    };
    let udp = frame
        .get(l4..l4 + UDP_HEADER_LEN)
        .ok_or(FrameError::Truncated)?;
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_HEADER_LEN || l4 + udp_len > frame.len() || l4 + udp_len > ip_payload_end {
        return Err(FrameError::Truncated);
    }
    Ok(Parsed {
        l3,
        l4,
        v6,
        source: SocketAddr::new(source_ip, u16::from_be_bytes([udp[0], udp[1]])),
        destination: SocketAddr::new(destination_ip, u16::from_be_bytes([udp[2], udp[3]])),
        payload_len: udp_len - UDP_HEADER_LEN,
    })
}

/// The one's-complement sum of `data` as 16-bit big-endian words (RFC 1071), not folded.
fn sum_words(data: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
        // Adding 64-bit words and folding later is the same one's-complement sum.
        sum += (word >> 48) + ((word >> 32) & 0xffff) + ((word >> 16) & 0xffff) + (word & 0xffff);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for pair in &mut rest {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = rest.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).expect("folded")
}

/// The Internet checksum of `data` (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data))
}

/// Rewrites `frame` (parsed as `parsed`, whose UDP payload is now `payload_len` bytes) to go from
/// `source` to `destination` through next hop `dst_mac` out of an interface with `src_mac`:
/// MACs, IP addresses, lengths and hop limit, UDP ports, length and checksum (always computed,
/// IPv4 too), IPv4 header checksum. Returns the new frame length.
pub fn rewrite(
    frame: &mut [u8],
    parsed: &Parsed,
    payload_len: usize,
    (dst_mac, src_mac): ([u8; 6], [u8; 6]),
    source: SocketAddr,
    destination: SocketAddr,
) -> Result<usize, FrameError> {
    let udp_len = UDP_HEADER_LEN + payload_len;
    let end = parsed.l4 + udp_len;
    let udp_len16 = u16::try_from(udp_len).map_err(|_| FrameError::Rewrite)?;
    if end > frame.len() {
        return Err(FrameError::Rewrite);
    }
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    let l3 = parsed.l3;
    // The pseudo-header sum (RFC 768, RFC 8200 section 8.1).
    let pseudo = match (parsed.v6, source.ip(), destination.ip()) {
        (false, IpAddr::V4(src), IpAddr::V4(dst)) => {
            let header_len = parsed.l4 - l3;
            let total = u16::try_from(header_len + udp_len).map_err(|_| FrameError::Rewrite)?;
            let ip = &mut frame[l3..parsed.l4];
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[8] = HOP_LIMIT;
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let check = checksum(ip);
            ip[10..12].copy_from_slice(&check.to_be_bytes());
            sum_words(&src.octets())
                + sum_words(&dst.octets())
                + u64::from(IPPROTO_UDP)
                + u64::from(udp_len16)
        }
        (true, IpAddr::V6(src), IpAddr::V6(dst)) => {
            let ip = &mut frame[l3..l3 + IPV6_HEADER_LEN];
            ip[4..6].copy_from_slice(&udp_len16.to_be_bytes());
            ip[7] = HOP_LIMIT;
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            sum_words(&src.octets())
                + sum_words(&dst.octets())
                + u64::from(udp_len16)
                + u64::from(IPPROTO_UDP)
        }
        _ => return Err(FrameError::Rewrite),
    };
    let udp = &mut frame[parsed.l4..end];
    udp[0..2].copy_from_slice(&source.port().to_be_bytes());
    udp[2..4].copy_from_slice(&destination.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len16.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    let check = match !fold(pseudo + sum_words(udp)) {
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&check.to_be_bytes());
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv4/UDP 198.18.0.2:40000 -> 198.18.0.1:30000, payload "abc", checksums valid.
    const V4: &str = "0a0000000000 020000000002 0800 \
                      4500001f 12344000 40110000 c6120002 c6120001 \
                      9c407530 000b0000 616263";

    fn hex(s: &str) -> Vec<u8> {
        // Layout spaces are not digits.
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn v4_frame() -> Vec<u8> {
        let mut f = hex(V4);
        let ip_check = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&ip_check.to_be_bytes());
        f
    }

    fn udp_checksum_ok(frame: &[u8], parsed: &Parsed) -> bool {
        let udp = &frame[parsed.l4..parsed.l4 + 8 + parsed.payload_len];
        let mut pseudo = Vec::new();
        match (parsed.source.ip(), parsed.destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, 17]);
                pseudo.extend_from_slice(&u16::try_from(udp.len()).unwrap().to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&u32::try_from(udp.len()).unwrap().to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 17]);
            }
            _ => unreachable!(),
        }
        pseudo.extend_from_slice(udp);
        checksum(&pseudo) == 0
    }

    #[test]
    fn parses_ipv4_udp() {
        let f = v4_frame();
        let p = parse(&f).unwrap();
        assert_eq!(p.source, "198.18.0.2:40000".parse().unwrap());
        assert_eq!(p.destination, "198.18.0.1:30000".parse().unwrap());
        assert_eq!(p.payload_len, 3);
        assert_eq!(&f[p.payload()..p.payload() + 3], b"abc");
        assert!(!p.v6);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut f = v4_frame();
        f.extend_from_slice(&[0; 20]);
        assert_eq!(parse(&f).unwrap().payload_len, 3);
    }

    #[test]
    fn refuses_what_xdp_never_redirects() {
        let f = v4_frame();
        assert_eq!(parse(&f[..20]), Err(FrameError::Truncated));
        assert_eq!(
            parse(&f[..40]),
            Err(FrameError::Truncated),
            "UDP length beyond the frame"
        );
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0, 0, 5]);
        tagged.extend_from_slice(&f[12..]);
        assert_eq!(parse(&tagged), Err(FrameError::NotUdp));
        let mut tcp = f.clone();
        tcp[23] = 6;
        assert_eq!(parse(&tcp), Err(FrameError::NotUdp));
        let mut fragment = f;
        fragment[20] = 0x20;
        assert_eq!(parse(&fragment), Err(FrameError::Fragment));
    }

    #[test]
    fn rewrite_grows_the_payload_and_recomputes_every_checksum() {
        let mut buf = v4_frame();
        buf.resize(128, 0);
        let p = parse(&buf).unwrap();
        // The payload grew by a 10-byte tag (as SRTP protect does in place).
        buf[p.payload() + 3..p.payload() + 13].copy_from_slice(&[7; 10]);
        let len = rewrite(
            &mut buf,
            &p,
            13,
            ([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 0, 0x0b]),
            "198.18.1.1:30002".parse().unwrap(),
            "198.18.1.2:50000".parse().unwrap(),
        )
        .unwrap();
        let out = &buf[..len];
        assert_eq!(len, 14 + 20 + 8 + 13);
        assert_eq!(&out[0..12], &[2, 0, 0, 0, 1, 2, 2, 0, 0, 0, 0, 0x0b]);
        assert_eq!(checksum(&out[14..34]), 0, "IPv4 header checksum");
        let q = parse(out).unwrap();
        assert_eq!(q.source, "198.18.1.1:30002".parse().unwrap());
        assert_eq!(q.destination, "198.18.1.2:50000".parse().unwrap());
        assert_eq!(q.payload_len, 13);
        assert!(udp_checksum_ok(out, &q));
        assert_eq!(out[22], 64, "TTL of an originated packet");
    }

    #[test]
    fn rewrite_ipv6_shrinks_the_payload() {
        let src: Ipv6Addr = "2001:2:0:a::2".parse().unwrap();
        let dst: Ipv6Addr = "2001:2:0:a::1".parse().unwrap();
        let mut f = hex("0a0000000000020000000002 86dd 6000000000131140");
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&hex("9c40 7530 0013 0000"));
        f.extend_from_slice(b"0123456789a");
        let p = parse(&f).unwrap();
        assert!(p.v6);
        assert_eq!(p.payload_len, 11);
        let len = rewrite(
            &mut f,
            &p,
            1,
            ([2; 6], [3; 6]),
            "[2001:2:0:b::1]:30002".parse().unwrap(),
            "[2001:2:0:b::2]:50000".parse().unwrap(),
        )
        .unwrap();
        let q = parse(&f[..len]).unwrap();
        assert_eq!(q.payload_len, 1);
        assert_eq!(q.destination, "[2001:2:0:b::2]:50000".parse().unwrap());
        assert!(udp_checksum_ok(&f[..len], &q));
    }

    #[test]
    fn rewrite_refuses_a_family_change_or_no_room() {
        let mut f = v4_frame();
        let p = parse(&f).unwrap();
        let v6: SocketAddr = "[2001:2::1]:1".parse().unwrap();
        let v4: SocketAddr = "198.18.0.9:1".parse().unwrap();
        assert_eq!(
            rewrite(&mut f, &p, 3, ([0; 6], [0; 6]), v4, v6),
            Err(FrameError::Rewrite)
        );
        assert_eq!(
            rewrite(&mut f, &p, 100, ([0; 6], [0; 6]), v4, v4),
            Err(FrameError::Rewrite)
        );
    }

    #[test]
    fn checksum_matches_rfc_1071_example() {
        // RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (checksum 220d).
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(checksum(&[0x00, 0x01, 0xf2]), !fold(0x0001 + 0xf200));
    }
}
