//! rtpengine's NG control protocol over UDP: `<cookie> <bencoded dict>` both ways; the reply
//! echoes the cookie. A request is retransmitted with the same cookie when no reply came
//! ([`RETRANSMIT_AFTER`], at most [`RETRANSMITS`] times), so a server that caches replies by
//! cookie answers a retransmission without running the command twice.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use super::bencode::{BencodeError, Value};

/// Wait this long for a reply before sending the request again.
pub const RETRANSMIT_AFTER: Duration = Duration::from_millis(500);
/// Retransmissions after the first send.
pub const RETRANSMITS: u32 = 3;
/// Largest datagram read (an rtpengine `delete` reply with statistics is a few KiB).
pub const MAX_REPLY: usize = 65_535;

/// Why an NG exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NgError {
    /// A socket call failed.
    #[error("NG {step} to {server} failed: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The server.
        server: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// No reply after every retransmission.
    #[error("NG {command} to {server}: no reply after {attempts} attempts")]
    Timeout {
        /// The command.
        command: String,
        /// The server.
        server: SocketAddr,
        /// Sends made.
        attempts: u32,
    },
    /// The reply is not `<cookie> <bencode dict>`.
    #[error("NG reply to {command} is malformed: {reason}")]
    Malformed {
        /// The command.
        command: String,
        /// What is wrong.
        reason: String,
    },
    /// The server answered `result: error` (or anything but `ok`/`pong`).
    #[error("NG {command} refused: {result}: {reason}")]
    Refused {
        /// The command.
        command: String,
        /// The `result` value.
        result: String,
        /// The `error-reason` (or `warning`) value, if any.
        reason: String,
    },
}

/// An NG client bound to one server.
#[derive(Debug)]
pub struct NgClient {
    socket: UdpSocket,
    server: SocketAddr,
    cookie_prefix: String,
    next_cookie: u64,
    buf: Vec<u8>,
}

impl NgClient {
    /// A client on an ephemeral local port (same family as `server`); `tag` seeds the cookies.
    pub fn connect(server: SocketAddr, tag: u64) -> Result<Self, NgError> {
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let io = |step| {
            move |source| NgError::Io {
                step,
                server,
                source,
            }
        };
        let socket = UdpSocket::bind(local).map_err(io("bind"))?;
        socket.connect(server).map_err(io("connect"))?;
        Ok(Self {
            socket,
            server,
            cookie_prefix: format!("{tag:x}"),
            next_cookie: 0,
            buf: vec![0; MAX_REPLY],
        })
    }

    /// The server.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends `request` (a dictionary with a `command`) and returns the raw reply dictionary
    /// after checking `result` is `ok` or `pong`. `on_reply` reads what it needs out of the
    /// reply (which borrows the client's buffer).
    pub fn request<T>(
        &mut self,
        request: &Value<'_>,
        on_reply: impl FnOnce(&Value<'_>) -> Result<T, String>,
    ) -> Result<T, NgError> {
        let command = request
            .get("command")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        self.next_cookie += 1;
        let cookie = format!("{}_{}", self.cookie_prefix, self.next_cookie);
        let mut datagram = Vec::with_capacity(1024);
        datagram.extend_from_slice(cookie.as_bytes());
        datagram.push(b' ');
        request.encode(&mut datagram);

        let server = self.server;
        let io = |step| {
            move |source| NgError::Io {
                step,
                server,
                source,
            }
        };
        let mut attempts = 0;
        let len = 'attempts: loop {
            if attempts > RETRANSMITS {
                return Err(NgError::Timeout {
                    command,
                    server,
                    attempts,
                });
            }
            attempts += 1;
            self.socket.send(&datagram).map_err(io("send"))?;
            let deadline = Instant::now() + RETRANSMIT_AFTER;
            loop {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    continue 'attempts;
                };
                if left.is_zero() {
                    continue 'attempts;
                }
                self.socket
                    .set_read_timeout(Some(left))
                    .map_err(io("set timeout"))?;
                match self.socket.recv(&mut self.buf) {
                    Ok(len) => {
                        // A late reply to an earlier request carries another cookie: skip it.
                        let reply = &self.buf[..len];
                        if reply.len() > cookie.len()
                            && reply.starts_with(cookie.as_bytes())
                            && reply[cookie.len()] == b' '
                        {
                            break 'attempts len;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                                // ICMP port unreachable before the server is up: retry.
                                | io::ErrorKind::ConnectionRefused
                        ) => {}
                    Err(e) => return Err(io("recv")(e)),
                }
            }
        };
        let body = &self.buf[cookie.len() + 1..len];
        let malformed = |reason: String| NgError::Malformed {
            command: command.clone(),
            reason,
        };
        let reply = Value::decode(body).map_err(|e: BencodeError| malformed(e.to_string()))?;
        let result = reply
            .get("result")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("no result".to_owned()))?;
        if result != "ok" && result != "pong" {
            let reason = reply
                .get("error-reason")
                .or_else(|| reply.get("warning"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            return Err(NgError::Refused {
                command,
                result: result.to_owned(),
                reason,
            });
        }
        on_reply(&reply).map_err(malformed)
    }

    /// `ping`: succeeds on `pong`.
    pub fn ping(&mut self) -> Result<(), NgError> {
        self.request(&Value::Dict(vec![(b"command", Value::str("ping"))]), |_| {
            Ok(())
        })
    }
}

/// The `offer` for a call: A's SDP, asking the relay to present plain RTP (or SRTP, with
/// `b_proto`) toward B.
pub fn offer<'a>(call_id: &'a str, from_tag: &'a str, sdp: &'a str, b_proto: &'a str) -> Value<'a> {
    Value::Dict(vec![
        (b"command", Value::str("offer")),
        (b"call-id", Value::str(call_id)),
        (b"from-tag", Value::str(from_tag)),
        (b"sdp", Value::str(sdp)),
        (b"transport-protocol", Value::str(b_proto)),
        (b"ICE", Value::str("remove")),
        (
            b"replace",
            Value::str_list(&["origin", "session-connection"]),
        ),
        (b"flags", Value::str_list(&["trust-address"])),
    ])
}

/// The `answer` for a call: B's SDP, asking the relay to present `a_proto` toward A.
pub fn answer<'a>(
    call_id: &'a str,
    from_tag: &'a str,
    to_tag: &'a str,
    sdp: &'a str,
    a_proto: &'a str,
) -> Value<'a> {
    Value::Dict(vec![
        (b"command", Value::str("answer")),
        (b"call-id", Value::str(call_id)),
        (b"from-tag", Value::str(from_tag)),
        (b"to-tag", Value::str(to_tag)),
        (b"sdp", Value::str(sdp)),
        (b"transport-protocol", Value::str(a_proto)),
        (b"ICE", Value::str("remove")),
        (b"flags", Value::str_list(&["trust-address"])),
    ])
}

/// The `delete` for a call.
pub fn delete<'a>(call_id: &'a str, from_tag: &'a str) -> Value<'a> {
    Value::Dict(vec![
        (b"command", Value::str("delete")),
        (b"call-id", Value::str(call_id)),
        (b"from-tag", Value::str(from_tag)),
    ])
}

/// The `sdp` of a reply.
pub fn reply_sdp(reply: &Value<'_>) -> Result<String, String> {
    reply
        .get("sdp")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "reply has no sdp string".to_owned())
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    #[test]
    fn offer_is_the_documented_dictionary() {
        let bytes = offer("c1", "ft", "v=0\r\n", "RTP/AVP").to_bytes();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "d3:ICE6:remove7:call-id2:c17:command5:offer5:flagsl13:trust-addresse\
             8:from-tag2:ft7:replacel6:origin18:session-connectione3:sdp5:v=0\r\n\
             18:transport-protocol7:RTP/AVPe"
        );
        let answer = answer("c1", "ft", "tt", "v=0\r\n", "RTP/SAVP");
        assert_eq!(answer.get("to-tag").and_then(Value::as_str), Some("tt"));
        assert_eq!(
            answer.get("transport-protocol").and_then(Value::as_str),
            Some("RTP/SAVP")
        );
        assert_eq!(
            delete("c1", "ft").to_bytes(),
            b"d7:call-id2:c17:command6:delete8:from-tag2:fte".to_vec()
        );
    }

    /// A fake NG server: drops the first `drop_first` datagrams, then answers each with the
    /// given reply body after a stale reply with another cookie.
    fn fake_server(
        drop_first: usize,
        replies: Vec<&'static str>,
    ) -> (SocketAddr, thread::JoinHandle<Vec<String>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let handle = thread::spawn(move || {
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut seen = Vec::new();
            let mut buf = [0_u8; 4096];
            let mut dropped = 0;
            for reply in replies {
                loop {
                    let (len, peer) = socket.recv_from(&mut buf).unwrap();
                    let text = String::from_utf8(buf[..len].to_vec()).unwrap();
                    seen.push(text.clone());
                    if dropped < drop_first {
                        dropped += 1;
                        continue;
                    }
                    let cookie = text.split(' ').next().unwrap();
                    socket.send_to(b"stale_1 d6:result2:oke", peer).unwrap();
                    socket
                        .send_to(format!("{cookie} {reply}").as_bytes(), peer)
                        .unwrap();
                    break;
                }
            }
            seen
        });
        (addr, handle)
    }

    #[test]
    fn retransmits_with_the_same_cookie_and_skips_stale_replies() {
        let (addr, server) = fake_server(2, vec!["d6:result4:ponge", "d3:sdp3:v=06:result2:oke"]);
        let mut client = NgClient::connect(addr, 0xabc).unwrap();
        client.ping().unwrap();
        let sdp = client
            .request(&offer("c", "f", "v=0", "RTP/AVP"), reply_sdp)
            .unwrap();
        assert_eq!(sdp, "v=0");
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 4, "two dropped pings, one answered, one offer");
        assert!(seen[..3].iter().all(|s| s == "abc_1 d7:command4:pinge"));
        assert!(seen[3].starts_with("abc_2 d3:ICE"));
    }

    #[test]
    fn errors_name_the_refusal_or_the_malformation() {
        let (addr, server) = fake_server(
            0,
            vec![
                "d6:result5:error12:error-reason12:Unknown calle",
                "not bencode",
                "d3:sdpi1e6:result2:oke",
            ],
        );
        let mut client = NgClient::connect(addr, 1).unwrap();
        match client.request(&delete("c", "f"), |_| Ok(())) {
            Err(NgError::Refused {
                command,
                result,
                reason,
            }) => {
                assert_eq!(
                    (command.as_str(), result.as_str(), reason.as_str()),
                    ("delete", "error", "Unknown call")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            client.request(&delete("c", "f"), |_| Ok(())),
            Err(NgError::Malformed { .. })
        ));
        assert!(matches!(
            client.request(&offer("c", "f", "", "RTP/AVP"), reply_sdp),
            Err(NgError::Malformed { .. })
        ));
        server.join().unwrap();
    }

    #[test]
    fn gives_up_after_the_retransmissions() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut client = NgClient::connect(silent.local_addr().unwrap(), 2).unwrap();
        let started = Instant::now();
        assert!(matches!(
            client.ping(),
            Err(NgError::Timeout { attempts: 4, .. })
        ));
        let waited = started.elapsed();
        assert!(waited >= RETRANSMIT_AFTER * 4, "{waited:?}");
        assert!(waited < RETRANSMIT_AFTER * 8, "{waited:?}");
    }
}
