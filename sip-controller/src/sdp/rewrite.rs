//! The line-preserving rewrites a media relay makes (house style habit 4): the `o=` version
//! and identity, `c=`, the `m=` port and proto, `a=crypto`, `a=rtcp`/`a=rtcp-mux`, and
//! removing ICE and foreign keying lines. Every other line is left exactly as it was.
//!
//! Placement rules for lines that did not exist before:
//! - `a=crypto` lines replace the old ones at the position of the first old `a=crypto` line;
//!   without one they go where the section's attributes start (before its first `a=` line,
//!   that is after the `m=`, `i=`, `c=`, `b=` and `k=` lines of RFC 8866 §5), or at the end
//!   of a section without attributes.
//! - `a=rtcp` replaces the first old `a=rtcp` line in place (later duplicates are removed);
//!   `a=rtcp-mux` is kept where it is (removing it removes `a=rtcp-mux-only` too). When new,
//!   either goes where the attributes start.
//! - A media-level `c=` goes right after the `m=` line and any `i=` line (RFC 8866 §5 order).
//! - New lines take the line ending of the section's first line (the `v=` or `m=` line).

use std::net::IpAddr;

use srtp::sdes::CryptoAttribute;

use super::{
    Connection, Line, LineEnding, MediaSection, Rtcp, Sdp, SdpError, TransportProtocol,
    ICE_ATTRIBUTES,
};

/// The ending for new lines in a section whose first line is `first`: the same. When that
/// is [`LineEnding::None`] (the `m=` line was the input's last), serialisation writes the
/// SDP's usual ending for every such line that is not last.
fn ending_after(first: Option<&Line<'_>>) -> LineEnding {
    first.map_or(LineEnding::None, Line::ending)
}

/// Where new attribute lines go: before the first `a=` line after the section's first line,
/// or at the end.
fn attribute_start(lines: &[Line<'_>]) -> usize {
    lines
        .iter()
        .skip(1)
        .position(|l| l.kind() == b'a')
        .map_or(lines.len(), |i| i + 1)
}

/// Increments a string of decimal digits by one (sess-version may exceed 64 bits).
fn increment_decimal(digits: &str) -> String {
    let mut bytes = digits.as_bytes().to_vec();
    for b in bytes.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return String::from_utf8(bytes).unwrap_or_default();
        }
    }
    let mut out = String::with_capacity(bytes.len() + 1);
    out.push('1');
    out.push_str(&String::from_utf8(bytes).unwrap_or_default());
    out
}

/// Whether `s` is 1 or more visible ASCII characters (an `o=` username).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

impl<'a> Sdp<'a> {
    /// Sets the `o=` sess-version (RFC 3264 §8: a B2BUA keeps its own counter per leg).
    pub fn set_origin_version(&mut self, version: u64) {
        self.origin.session_version = version.to_string();
        self.write_origin();
    }

    /// Increments the `o=` sess-version by one (RFC 3264 §8), however many digits it has.
    pub fn bump_origin_version(&mut self) {
        self.origin.session_version = increment_decimal(&self.origin.session_version);
        self.write_origin();
    }

    /// Replaces the `o=` username, sess-id and unicast address (topology hiding; NG
    /// `replace-origin`). The username must be visible ASCII without spaces.
    pub fn set_origin_identity(
        &mut self,
        username: &str,
        session_id: u64,
        address: IpAddr,
    ) -> Result<(), SdpError> {
        if !is_token(username) {
            return Err(SdpError::InvalidPlan {
                reason: "the o= username must be visible ASCII without spaces",
            });
        }
        username.clone_into(&mut self.origin.username);
        self.origin.session_id = session_id.to_string();
        self.origin.addr_type = super::AddrType::of(address);
        self.origin.address = address.to_string();
        self.write_origin();
        Ok(())
    }

    fn write_origin(&mut self) {
        let text = self.origin.sdp_line();
        if let Some(line) = self.session.iter_mut().find(|l| l.kind() == b'o') {
            *line = Line::new(text, line.ending);
        }
    }

    /// Sets the session-level `c=` (if there is one) and every media-level `c=` to `address`.
    /// Sections without a `c=` keep relying on the session's.
    pub fn set_connection_address(&mut self, address: IpAddr) {
        self.set_session_connection(address);
        for section in &mut self.media {
            if section.connection.is_some() {
                section.set_connection(address);
            }
        }
    }

    /// Sets the session-level `c=` line to `address`; does nothing if there is none.
    pub fn set_session_connection(&mut self, address: IpAddr) {
        if self.connection.is_none() {
            return;
        }
        let connection = Connection::from_ip(address);
        let text = connection.sdp_line();
        if let Some(line) = self.session.iter_mut().find(|l| l.kind() == b'c') {
            *line = Line::new(text, line.ending);
        }
        self.connection = Some(connection);
    }

    /// Removes every ICE attribute ([`ICE_ATTRIBUTES`]) at session and media level.
    pub fn remove_ice(&mut self) {
        self.session.retain(|l| !is_ice_line(l));
        for section in &mut self.media {
            section.remove_ice();
        }
    }

    /// Removes keying material meant for the peer of the other leg: session-level
    /// `a=crypto`, `a=key-mgmt` (RFC 4567) and `k=` lines everywhere. Media-level `a=crypto`
    /// is replaced per section with [`MediaSection::replace_crypto`].
    pub fn remove_foreign_keying(&mut self) {
        self.session.retain(|l| !is_foreign_keying_line(l));
        for section in &mut self.media {
            section
                .lines
                .retain(|l| l.kind() != b'k' && !l.is_attribute("key-mgmt"));
        }
    }

    /// The media sections, for per-section rewrites.
    pub fn media_mut(&mut self) -> &mut [MediaSection<'a>] {
        &mut self.media
    }
}

fn is_ice_line(line: &Line<'_>) -> bool {
    line.attribute()
        .is_some_and(|a| ICE_ATTRIBUTES.contains(&a.name))
}

fn is_foreign_keying_line(line: &Line<'_>) -> bool {
    line.kind() == b'k' || line.is_attribute("crypto") || line.is_attribute("key-mgmt")
}

impl MediaSection<'_> {
    fn new_line_ending(&self) -> LineEnding {
        ending_after(self.lines.first())
    }

    fn write_description(&mut self) {
        let text = self.description.sdp_line();
        if let Some(line) = self.lines.first_mut() {
            *line = Line::new(text, line.ending);
        }
    }

    /// Sets the `m=` port, keeping any `/<number of ports>`. Port 0 disables the stream
    /// (RFC 3264 §8.2).
    pub fn set_port(&mut self, port: u16) {
        if self.description.port != port {
            self.description.port = port;
            self.write_description();
        }
    }

    /// Sets the `m=` proto to an RTP profile.
    pub fn set_transport(&mut self, proto: TransportProtocol) {
        if self.description.proto != proto.as_str() {
            proto.as_str().clone_into(&mut self.description.proto);
            self.write_description();
        }
    }

    /// Sets the media-level `c=` to `address`, inserting one after the `m=` and `i=` lines if
    /// the section has none.
    pub fn set_connection(&mut self, address: IpAddr) {
        let connection = Connection::from_ip(address);
        let text = connection.sdp_line();
        if let Some(line) = self.lines.iter_mut().skip(1).find(|l| l.kind() == b'c') {
            *line = Line::new(text, line.ending);
        } else {
            let at = 1 + self
                .lines
                .iter()
                .skip(1)
                .take_while(|l| l.kind() == b'i')
                .count();
            let ending = self.new_line_ending();
            self.lines.insert(at, Line::new(text, ending));
        }
        self.connection = Some(connection);
    }

    /// Replaces every `a=crypto` line with `crypto`, in order (see the module doc for where
    /// they go). An empty slice removes them.
    pub fn replace_crypto(&mut self, crypto: &[CryptoAttribute]) {
        let at = self
            .lines
            .iter()
            .position(|l| l.is_attribute("crypto"))
            .unwrap_or_else(|| attribute_start(&self.lines));
        self.lines.retain(|l| !l.is_attribute("crypto"));
        let ending = self.new_line_ending();
        let at = at.min(self.lines.len());
        self.lines.splice(
            at..at,
            crypto.iter().map(|c| Line::new(c.sdp_line(), ending)),
        );
    }

    /// Sets (`Some`) or removes (`None`) the `a=rtcp` attribute (RFC 3605).
    pub fn set_rtcp(&mut self, rtcp: Option<&Rtcp>) {
        let first = self.lines.iter().position(|l| l.is_attribute("rtcp"));
        match (rtcp, first) {
            (None, _) => self.lines.retain(|l| !l.is_attribute("rtcp")),
            (Some(rtcp), Some(first)) => {
                let ending = self.lines[first].ending;
                self.lines[first] = Line::new(rtcp.sdp_line(), ending);
                let mut index = 0;
                self.lines.retain(|l| {
                    let keep = index <= first || !l.is_attribute("rtcp");
                    index += 1;
                    keep
                });
            }
            (Some(rtcp), None) => {
                let at = attribute_start(&self.lines);
                let ending = self.new_line_ending();
                self.lines.insert(at, Line::new(rtcp.sdp_line(), ending));
            }
        }
    }

    /// Adds (`true`, if absent) or removes (`false`) `a=rtcp-mux` (RFC 5761 §5.1.1);
    /// removing also removes `a=rtcp-mux-only` (RFC 8858), which requires it.
    pub fn set_rtcp_mux(&mut self, mux: bool) {
        if !mux {
            self.lines
                .retain(|l| !l.is_attribute("rtcp-mux") && !l.is_attribute("rtcp-mux-only"));
        } else if !self.rtcp_mux() {
            let at = attribute_start(&self.lines);
            let ending = self.new_line_ending();
            self.lines
                .insert(at, Line::new("a=rtcp-mux".to_owned(), ending));
        }
    }

    /// Removes every ICE attribute ([`ICE_ATTRIBUTES`]) from this section.
    pub fn remove_ice(&mut self) {
        self.lines.retain(|l| !is_ice_line(l));
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use srtp::Suite;

    use super::{
        super::tests::{
            ASTERISK_PLAIN, BARESIP_SRTP, HELD_AND_REJECTED, IPV6_BEST_EFFORT, WEBRTC_DTLS,
        },
        *,
    };

    fn parse(input: &str) -> Sdp<'_> {
        match Sdp::parse(input.as_bytes()) {
            Ok(sdp) => sdp,
            Err(e) => panic!("{e}"),
        }
    }

    fn text(sdp: &Sdp<'_>) -> String {
        String::from_utf8(sdp.to_bytes()).expect("UTF-8")
    }

    /// A line diff: (lines only in `before`, lines only in `after`), in order. Lines present
    /// in both are matched by a longest common subsequence, so a moved line shows as both.
    fn diff(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
        let a: Vec<&str> = before.split_inclusive('\n').collect();
        let b: Vec<&str> = after.split_inclusive('\n').collect();
        let mut lcs = vec![vec![0_usize; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                lcs[i][j] = if a[i] == b[j] {
                    lcs[i + 1][j + 1] + 1
                } else {
                    lcs[i + 1][j].max(lcs[i][j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] {
                i += 1;
                j += 1;
            } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
                added.push(b[j].to_owned());
                j += 1;
            } else {
                removed.push(a[i].to_owned());
                i += 1;
            }
        }
        (removed, added)
    }

    fn lines(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    fn reparses(sdp: &Sdp<'_>) {
        let bytes = sdp.to_bytes();
        let again = Sdp::parse(&bytes).expect("rewritten SDP parses");
        assert_eq!(again.to_bytes(), bytes);
    }

    #[test]
    fn origin_version_changes_only_the_o_line() {
        let mut sdp = parse(BARESIP_SRTP);
        sdp.bump_origin_version();
        assert_eq!(sdp.origin().session_version(), "3217383368");
        assert_eq!(
            diff(BARESIP_SRTP, &text(&sdp)),
            (
                lines(&["o=- 1916440744 3217383367 IN IP4 192.0.2.10\r\n"]),
                lines(&["o=- 1916440744 3217383368 IN IP4 192.0.2.10\r\n"])
            )
        );
        sdp.set_origin_version(7);
        assert_eq!(sdp.origin().session_version_u64(), Some(7));
        reparses(&sdp);
    }

    #[test]
    fn origin_version_increments_past_64_bits() {
        assert_eq!(increment_decimal("0"), "1");
        assert_eq!(increment_decimal("199"), "200");
        assert_eq!(
            increment_decimal("18446744073709551615"),
            "18446744073709551616"
        );
        assert_eq!(increment_decimal("999"), "1000");
    }

    #[test]
    fn origin_identity_is_replaced_and_validated() {
        let mut sdp = parse(ASTERISK_PLAIN);
        sdp.set_origin_identity("relay", 42, IpAddr::V6(Ipv6Addr::LOCALHOST))
            .expect("valid");
        assert_eq!(
            diff(ASTERISK_PLAIN, &text(&sdp)).1,
            lines(&["o=relay 42 1681921427 IN IP6 ::1\r\n"])
        );
        assert!(matches!(
            sdp.set_origin_identity("a b", 1, IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Err(SdpError::InvalidPlan { .. })
        ));
    }

    #[test]
    fn connection_changes_only_c_lines() {
        let relay = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 200));
        let mut sdp = parse(BARESIP_SRTP);
        sdp.set_connection_address(relay);
        assert_eq!(
            diff(BARESIP_SRTP, &text(&sdp)),
            (
                lines(&["c=IN IP4 192.0.2.10\r\n"]),
                lines(&["c=IN IP4 198.51.100.200\r\n"])
            )
        );

        // IPv6 to IPv4: the addrtype follows the address.
        let mut v6 = parse(IPV6_BEST_EFFORT);
        v6.set_connection_address(relay);
        assert_eq!(
            diff(IPV6_BEST_EFFORT, &text(&v6)),
            (
                lines(&["c=IN IP6 2001:db8::5\r\n"]),
                lines(&["c=IN IP4 198.51.100.200\r\n"])
            )
        );

        // Media-level c= only (no session c=): it is the one rewritten.
        let mut webrtc = parse(WEBRTC_DTLS);
        webrtc.set_connection_address(IpAddr::V6("2001:db8::1".parse().expect("v6")));
        assert_eq!(
            diff(WEBRTC_DTLS, &text(&webrtc)),
            (
                lines(&["c=IN IP4 0.0.0.0\r\n"]),
                lines(&["c=IN IP6 2001:db8::1\r\n"])
            )
        );
        reparses(&webrtc);
    }

    #[test]
    fn media_connection_is_inserted_after_m_and_i_lines() {
        let input = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 0\r\ni=voice\r\nb=AS:64\r\na=sendrecv\r\n";
        let mut sdp = parse(input);
        sdp.media_mut()[0].set_connection(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
        assert_eq!(
            text(&sdp),
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\ni=voice\r\nc=IN IP4 192.0.2.9\r\nb=AS:64\r\na=sendrecv\r\n"
        );
        assert_eq!(
            sdp.media_connection(0).and_then(Connection::ip),
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)))
        );
    }

    #[test]
    fn port_and_proto_change_only_the_m_line() {
        let mut sdp = parse(BARESIP_SRTP);
        let audio = &mut sdp.media_mut()[0];
        audio.set_port(40000);
        audio.set_transport(TransportProtocol::RtpAvp);
        assert_eq!(
            diff(BARESIP_SRTP, &text(&sdp)),
            (
                lines(&["m=audio 10316 RTP/SAVP 96 0 8 101\r\n"]),
                lines(&["m=audio 40000 RTP/AVP 96 0 8 101\r\n"])
            )
        );

        // A port count is kept; port 0 stays 0 when set to 0.
        let input = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                     m=video 49170/2 RTP/AVP 31\r\n";
        let mut sdp = parse(input);
        sdp.media_mut()[0].set_port(50000);
        assert!(text(&sdp).contains("m=video 50000/2 RTP/AVP 31\r\n"));
        sdp.media_mut()[0].set_port(0);
        assert_eq!(sdp.media()[0].description().port(), 0);
        reparses(&sdp);
    }

    #[test]
    fn crypto_lines_are_replaced_in_place() {
        let mut sdp = parse(BARESIP_SRTP);
        let ours = CryptoAttribute::generate(1, Suite::AesCm128HmacSha1_80).expect("CSPRNG");
        sdp.media_mut()[0].replace_crypto(std::slice::from_ref(&ours));
        let out = text(&sdp);
        let (removed, added) = diff(BARESIP_SRTP, &out);
        assert_eq!(removed.len(), 2);
        assert!(removed.iter().all(|l| l.starts_with("a=crypto:")));
        assert_eq!(added, [format!("{}\r\n", ours.sdp_line())]);
        // Same position: right after the a=ssrc line, before a=ptime.
        assert!(out.contains(&format!(
            "e1a0a8a9-57b2-4d0c-a4e4-6c0c4e6f6a52\r\n{}\r\na=ptime:20\r\n",
            ours.sdp_line()
        )));
        reparses(&sdp);

        // An empty slice removes them and touches nothing else.
        let mut plain = parse(BARESIP_SRTP);
        plain.media_mut()[0].replace_crypto(&[]);
        let (removed, added) = diff(BARESIP_SRTP, &text(&plain));
        assert_eq!((removed.len(), added.len()), (2, 0));
    }

    #[test]
    fn new_crypto_lines_go_where_attributes_start() {
        let mut sdp = parse(ASTERISK_PLAIN);
        let a = CryptoAttribute::generate(1, Suite::AesCm128HmacSha1_80).expect("CSPRNG");
        let b = CryptoAttribute::generate(2, Suite::AeadAes128Gcm).expect("CSPRNG");
        sdp.media_mut()[0].replace_crypto(&[a.clone(), b.clone()]);
        let out = text(&sdp);
        assert!(out.contains(&format!(
            "m=audio 14068 RTP/AVP 8 0 101\r\n{}\r\n{}\r\na=rtpmap:8 PCMA/8000\r\n",
            a.sdp_line(),
            b.sdp_line()
        )));
        assert_eq!(diff(ASTERISK_PLAIN, &out).0, Vec::<String>::new());

        // LF stays LF; a section without attributes gets them at its end.
        let mut held = parse(HELD_AND_REJECTED);
        held.media_mut()[1].replace_crypto(std::slice::from_ref(&a));
        assert!(text(&held).ends_with(&format!(
            "m=video 0 RTP/AVP 31\n{}\na=rtpmap:31 H261/90000\n",
            a.sdp_line()
        )));
        let bare = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n\
                    m=audio 4000 RTP/AVP 0\nb=AS:64\n";
        let mut bare_sdp = parse(bare);
        bare_sdp.media_mut()[0].replace_crypto(std::slice::from_ref(&a));
        assert_eq!(text(&bare_sdp), format!("{bare}{}\n", a.sdp_line()));
    }

    #[test]
    fn rtcp_is_set_in_place_inserted_or_removed() {
        let mut sdp = parse(ASTERISK_PLAIN);
        sdp.media_mut()[0].set_rtcp(Some(&Rtcp {
            port: 30001,
            connection: None,
        }));
        assert_eq!(
            diff(ASTERISK_PLAIN, &text(&sdp)),
            (lines(&["a=rtcp:14069\r\n"]), lines(&["a=rtcp:30001\r\n"]))
        );
        sdp.media_mut()[0].set_rtcp(None);
        assert_eq!(
            diff(ASTERISK_PLAIN, &text(&sdp)),
            (lines(&["a=rtcp:14069\r\n"]), vec![])
        );

        let mut mux = parse(BARESIP_SRTP);
        mux.media_mut()[0].set_rtcp(Some(&Rtcp {
            port: 30001,
            connection: Some(Connection::from_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))),
        }));
        mux.media_mut()[0].set_rtcp_mux(false);
        assert_eq!(
            diff(BARESIP_SRTP, &text(&mux)),
            (
                lines(&["a=rtcp-mux\r\n"]),
                lines(&["a=rtcp:30001 IN IP4 192.0.2.1\r\n"])
            )
        );
        mux.media_mut()[0].set_rtcp_mux(true);
        mux.media_mut()[0].set_rtcp_mux(true);
        assert_eq!(
            mux.media()[0]
                .attributes()
                .filter(|a| a.name == "rtcp-mux")
                .count(),
            1
        );
        reparses(&mux);
    }

    #[test]
    fn removing_rtcp_mux_removes_rtcp_mux_only() {
        let input = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 0\r\na=rtcp-mux\r\na=rtcp-mux-only\r\na=ptime:20\r\n";
        let mut sdp = parse(input);
        sdp.media_mut()[0].set_rtcp_mux(false);
        assert_eq!(
            diff(input, &text(&sdp)),
            (lines(&["a=rtcp-mux\r\n", "a=rtcp-mux-only\r\n"]), vec![])
        );
    }

    #[test]
    fn duplicate_rtcp_lines_collapse_into_the_first() {
        let input = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 0\r\na=rtcp:4001\r\na=ptime:20\r\na=rtcp:4003\r\n";
        let mut sdp = parse(input);
        sdp.media_mut()[0].set_rtcp(Some(&Rtcp {
            port: 5001,
            connection: None,
        }));
        assert!(text(&sdp).ends_with("m=audio 4000 RTP/AVP 0\r\na=rtcp:5001\r\na=ptime:20\r\n"));
    }

    #[test]
    fn ice_removal_removes_only_ice_lines() {
        let mut sdp = parse(WEBRTC_DTLS);
        sdp.remove_ice();
        let (removed, added) = diff(WEBRTC_DTLS, &text(&sdp));
        assert!(added.is_empty());
        let names: Vec<&str> = removed
            .iter()
            .map(|l| {
                l.trim_start_matches("a=")
                    .split([':', '\r'])
                    .next()
                    .unwrap_or("")
            })
            .collect();
        assert_eq!(
            names,
            [
                "ice-lite",
                "candidate",
                "candidate",
                "end-of-candidates",
                "ice-ufrag",
                "ice-pwd",
                "ice-options"
            ]
        );
        assert!(sdp.media()[0].ice().is_empty());
        assert!(sdp.session_ice().is_empty());
        // DTLS attributes are not ICE.
        assert_eq!(sdp.media()[0].dtls().setup, Some("actpass"));
    }

    #[test]
    fn foreign_keying_is_removed() {
        let input = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                     k=clear:secret\r\na=key-mgmt:mikey AQAFgM\r\nm=audio 4000 RTP/AVP 0\r\n\
                     k=prompt\r\na=key-mgmt:mikey AQAFgM\r\na=sendrecv\r\n";
        let mut sdp = parse(input);
        sdp.remove_foreign_keying();
        assert_eq!(
            text(&sdp),
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"
        );
    }

    #[test]
    fn a_line_appended_after_an_ending_less_last_line_gets_an_ending() {
        let input = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n\
                     m=audio 4000 RTP/AVP 0";
        let mut sdp = parse(input);
        sdp.media_mut()[0].set_rtcp_mux(true);
        // The old last line gets the usual LF; the new last line keeps the input's style of
        // ending without a newline.
        assert_eq!(
            text(&sdp),
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n\
             m=audio 4000 RTP/AVP 0\na=rtcp-mux"
        );
        reparses(&sdp);
    }
}
