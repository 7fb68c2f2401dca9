//! The little SDP the generator speaks over NG: it writes one-audio-stream offers/answers for its
//! endpoints and reads back, from the relay's rewritten SDP, where to send and (for SRTP) the
//! relay's `a=crypto` key.
//!
//! ```text
//! v=0
//! o=- <sess-id> 1 IN IP4 <addr>
//! s=relay-loadgen
//! c=IN IP4 <addr>
//! t=0 0
//! m=audio <port> RTP/SAVP 0          ; RTP/AVP for plain
//! a=rtpmap:0 PCMU/8000
//! a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<key||salt>   ; SRTP only
//! a=rtcp:<port+1>
//! a=sendrecv
//! ```

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use srtp::sdes::{CryptoAttribute, SdesError};

/// Longest SDP read.
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// Why a relay's SDP cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// Longer than [`MAX_SDP_LEN`].
    #[error("SDP of {len} bytes exceeds {MAX_SDP_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// No `m=audio` line.
    #[error("SDP has no m=audio line")]
    NoAudio,
    /// A malformed line the generator needs.
    #[error("malformed SDP line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// No `c=` line applies to the audio stream.
    #[error("SDP has no connection address for the audio stream")]
    NoConnection,
    /// An `a=crypto` line that does not parse.
    #[error("SDP line {line}: bad a=crypto: {source}")]
    Crypto {
        /// 1-based line number.
        line: usize,
        /// The SDES parser's reason.
        source: SdesError,
    },
}

/// The first audio stream of an SDP body, as far as the generator needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioStream {
    /// Where RTP goes: connection address (media level, else session level) and the m= port.
    pub rtp: SocketAddr,
    /// The transport protocol of the m= line (`RTP/AVP`, `RTP/SAVP`, ...).
    pub proto: String,
    /// The audio stream's `a=crypto` attributes, in order.
    pub crypto: Vec<CryptoAttribute>,
}

/// Writes the generator's SDP for one endpoint: SRTP (`RTP/SAVP` with `crypto`) or plain.
pub fn endpoint_sdp(session_id: u64, rtp: SocketAddr, crypto: Option<&CryptoAttribute>) -> String {
    let ip = rtp.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let proto = if crypto.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let port = rtp.port();
    let mut sdp = format!(
        "v=0\r\no=- {session_id} 1 IN {family} {ip}\r\ns=relay-loadgen\r\nc=IN {family} {ip}\r\n\
         t=0 0\r\nm=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    if let Some(crypto) = crypto {
        sdp.push_str(&crypto.sdp_line());
        sdp.push_str("\r\n");
    }
    let _ = write!(sdp, "a=rtcp:{}\r\na=sendrecv\r\n", port.saturating_add(1));
    sdp
}

/// Reads the first `m=audio` stream of `sdp` (CRLF or LF line ends).
pub fn parse_audio(sdp: &str) -> Result<AudioStream, SdpError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLong { len: sdp.len() });
    }
    let mut session_addr: Option<IpAddr> = None;
    // (port, proto, media-level address, crypto) of the first audio stream once seen.
    let mut audio: Option<(u16, String, Option<IpAddr>, Vec<CryptoAttribute>)> = None;
    // Inside a media section that is not the first audio stream: its lines are not ours.
    let mut in_other_media = false;
    for (index, raw) in sdp.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim_end_matches('\r');
        let malformed = |reason| SdpError::Malformed {
            line: line_no,
            reason,
        };
        if let Some(rest) = line.strip_prefix("m=") {
            if audio.is_some() {
                // Only the first audio stream matters; anything after it belongs to others.
                break;
            }
            let mut fields = rest.split(' ');
            in_other_media = fields.next() != Some("audio");
            if in_other_media {
                continue;
            }
            let port = fields
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or(malformed("m= port is not a number"))?;
            let proto = fields.next().ok_or(malformed("m= line has no protocol"))?;
            audio = Some((port, proto.to_owned(), None, Vec::new()));
        } else if in_other_media {
            // Lines of another media section.
        } else if let Some(rest) = line.strip_prefix("c=") {
            let addr = parse_connection(rest).ok_or(malformed("c= is not IN IP4/IP6 <address>"))?;
            match &mut audio {
                Some((_, _, media_addr, _)) => *media_addr = Some(addr),
                None => session_addr = Some(addr),
            }
        } else if let Some(value) = line.strip_prefix("a=crypto:") {
            if let Some((_, _, _, crypto)) = &mut audio {
                let attribute =
                    CryptoAttribute::parse(value).map_err(|source| SdpError::Crypto {
                        line: line_no,
                        source,
                    })?;
                crypto.push(attribute);
            }
        }
    }
    let (port, proto, media_addr, crypto) = audio.ok_or(SdpError::NoAudio)?;
    let addr = media_addr.or(session_addr).ok_or(SdpError::NoConnection)?;
    Ok(AudioStream {
        rtp: SocketAddr::new(addr, port),
        proto,
        crypto,
    })
}

/// `IN IP4 <addr>` / `IN IP6 <addr>` (a multicast `/ttl` suffix is ignored).
fn parse_connection(rest: &str) -> Option<IpAddr> {
    let mut fields = rest.split(' ');
    if fields.next()? != "IN" {
        return None;
    }
    let family = fields.next()?;
    let addr = fields.next()?.split('/').next()?;
    let ip: IpAddr = addr.parse().ok()?;
    match (family, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use srtp::Suite;

    use super::*;

    /// The answer rtpengine 10.5 sent in a probe run, verbatim.
    const RTPENGINE_ANSWER: &str =
        "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
        t=0 0\r\nm=audio 40008 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n\
        a=rtcp:40009\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:CZt8w1vibIsB5epqx8IYLWHWMIkV1bv6WU6mrkfT\r\n";

    #[test]
    fn reads_rtpengines_answer() {
        let audio = parse_audio(RTPENGINE_ANSWER).unwrap();
        assert_eq!(audio.rtp, "127.0.0.1:40008".parse().unwrap());
        assert_eq!(audio.proto, "RTP/SAVP");
        assert_eq!(audio.crypto.len(), 1);
        assert_eq!(audio.crypto[0].suite, Suite::AesCm128HmacSha1_80);
        assert_eq!(audio.crypto[0].keys[0].material.len(), 30);
    }

    #[test]
    fn media_level_connection_wins_and_later_streams_are_ignored() {
        let sdp = "v=0\nc=IN IP4 127.0.0.1\nm=video 5000 RTP/AVP 96\nc=IN IP4 127.0.0.9\n\
                   m=audio 6000/2 RTP/AVP 0\nc=IN IP4 127.0.0.2\n\
                   m=audio 7000 RTP/AVP 0\nc=IN IP4 127.0.0.3\n";
        let audio = parse_audio(sdp).unwrap();
        assert_eq!(audio.rtp, "127.0.0.2:6000".parse().unwrap());
        assert!(audio.crypto.is_empty());
    }

    #[test]
    fn writes_what_it_reads() {
        let key = CryptoAttribute::generate(1, Suite::AesCm128HmacSha1_80).unwrap();
        let addr: SocketAddr = "127.0.0.1:41234".parse().unwrap();
        let sdp = endpoint_sdp(7, addr, Some(&key));
        assert!(sdp.contains("m=audio 41234 RTP/SAVP 0\r\n"));
        assert!(sdp.contains("a=rtcp:41235\r\n"));
        let audio = parse_audio(&sdp).unwrap();
        assert_eq!(audio.rtp, addr);
        assert_eq!(audio.crypto, vec![key]);
        let plain = parse_audio(&endpoint_sdp(7, addr, None)).unwrap();
        assert_eq!(plain.proto, "RTP/AVP");
        assert!(plain.crypto.is_empty());
    }

    #[test]
    fn names_what_is_missing_or_malformed() {
        assert_eq!(parse_audio("v=0\r\n"), Err(SdpError::NoAudio));
        assert_eq!(
            parse_audio("m=audio 4000 RTP/AVP 0\r\n"),
            Err(SdpError::NoConnection)
        );
        assert!(matches!(
            parse_audio("c=IN IP4 127.0.0.1\r\nm=audio x RTP/AVP 0\r\n"),
            Err(SdpError::Malformed { line: 2, .. })
        ));
        assert!(matches!(
            parse_audio("c=IN IP4 nonsense\r\nm=audio 1 RTP/AVP 0\r\n"),
            Err(SdpError::Malformed { line: 1, .. })
        ));
        assert!(matches!(
            parse_audio("c=IN IP4 127.0.0.1\r\nm=audio 1 RTP/SAVP 0\r\na=crypto:1 X inline:a\r\n"),
            Err(SdpError::Crypto { line: 3, .. })
        ));
        let long = "a".repeat(MAX_SDP_LEN + 1);
        assert!(matches!(parse_audio(&long), Err(SdpError::TooLong { .. })));
    }
}
