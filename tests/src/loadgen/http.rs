//! A minimal HTTP/1.1 client for relayd's control API: one request per connection
//! (`Connection: close`), `Content-Length` bodies, bounded header and body sizes, timeouts on
//! every step. Chunked responses are refused (relayd does not send them for JSON resources).
//!
//! ```text
//! request  = method SP path SP "HTTP/1.1" CRLF *(header CRLF) CRLF [body]
//! response = "HTTP/1." DIGIT SP 3DIGIT [SP reason] CRLF *(name ":" OWS value CRLF) CRLF [body]
//! ```

use std::{
    fmt::{self, Write as _},
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

/// Longest response head (status line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest response body.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Most response headers.
pub const MAX_HEADERS: usize = 64;

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The base URL is not `http://<ip or localhost>[:port][/prefix]`.
    #[error("invalid API URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Connecting, writing or reading failed (including timeouts).
    #[error("HTTP {step} {addr} failed: {source}")]
    Io {
        /// "connect", "write" or "read".
        step: &'static str,
        /// The server.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The response is not HTTP/1.x as this client reads it.
    #[error("malformed HTTP response: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// A size limit was exceeded.
    #[error("HTTP response {what} exceeds {limit} bytes")]
    TooLarge {
        /// "head" or "body".
        what: &'static str,
        /// The limit.
        limit: usize,
    },
}

/// A bearer token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(token: String) -> Self {
        Self(token)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A response: status, headers (names lowercased) and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP client for one server.
#[derive(Clone, Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    host: String,
    prefix: String,
    token: Option<Token>,
    timeout: Duration,
}

impl HttpClient {
    /// A client for `base` (`http://127.0.0.1:8740`, optionally with a path prefix).
    pub fn new(base: &str, token: Option<Token>, timeout: Duration) -> Result<Self, HttpError> {
        let invalid = |reason| HttpError::InvalidUrl {
            url: base.to_owned(),
            reason,
        };
        let rest = base
            .strip_prefix("http://")
            .ok_or(invalid("only http:// is supported"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(invalid("user info is not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or(invalid("bad host or port"))?;
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .map_err(|_| invalid("the host must be an IP address or localhost"))?
        };
        if path.contains(['?', '#', ' ']) {
            return Err(invalid("no query, fragment or spaces in the prefix"));
        }
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            host: authority.to_owned(),
            prefix: path.trim_end_matches('/').to_owned(),
            token,
            timeout,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request; `body` is sent as `application/json`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, HttpError> {
        let io = |step| {
            let addr = self.addr;
            move |source| HttpError::Io { step, addr, source }
        };
        let mut stream =
            TcpStream::connect_timeout(&self.addr, self.timeout).map_err(io("connect"))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(io("connect"))?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(io("connect"))?;
        let _ = stream.set_nodelay(true);

        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.prefix, self.host
        );
        if let Some(Token(token)) = &self.token {
            head.push_str("Authorization: Bearer ");
            head.push_str(token);
            head.push_str("\r\n");
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
            head.push_str("Content-Type: application/json\r\n");
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).map_err(io("write"))?;
        stream.flush().map_err(io("write"))?;
        read_response(&mut stream).map_err(|e| match e {
            ReadError::Io(source) => HttpError::Io {
                step: "read",
                addr: self.addr,
                source,
            },
            ReadError::Http(e) => e,
        })
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host, port.parse().ok()?)),
        None if !authority.is_empty() => Some((authority, 80)),
        _ => None,
    }
}

enum ReadError {
    Io(io::Error),
    Http(HttpError),
}

impl From<HttpError> for ReadError {
    fn from(e: HttpError) -> Self {
        Self::Http(e)
    }
}

fn malformed(reason: &'static str) -> ReadError {
    ReadError::Http(HttpError::Malformed { reason })
}

/// Reads one response from `reader`: the head up to CRLF CRLF, then `Content-Length` bytes (or,
/// without it, everything up to end of stream).
fn read_response(reader: &mut impl Read) -> Result<Response, ReadError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(pos) = find_subslice(&buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::TooLarge {
                what: "head",
                limit: MAX_HEAD,
            }
            .into());
        }
        let n = read_some(reader, &mut chunk)?;
        if n == 0 {
            return Err(malformed("connection closed before the end of the head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEAD {
        return Err(HttpError::TooLarge {
            what: "head",
            limit: MAX_HEAD,
        }
        .into());
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| malformed("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() >= MAX_HEADERS {
            return Err(malformed("too many headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed("header line without ':'"))?;
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(malformed("invalid header name"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|v| !v.eq_ignore_ascii_case("identity")) {
        return Err(malformed("chunked or encoded bodies are not supported"));
    }
    let content_length = header("content-length")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| malformed("Content-Length is not a number"))
        })
        .transpose()?;
    let mut body = buf[head_end + 4..].to_vec();
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    match content_length {
        _ if no_body => body.clear(),
        Some(len) => {
            if len > MAX_BODY {
                return Err(HttpError::TooLarge {
                    what: "body",
                    limit: MAX_BODY,
                }
                .into());
            }
            while body.len() < len {
                let n = read_some(reader, &mut chunk)?;
                if n == 0 {
                    return Err(malformed("connection closed before the end of the body"));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => loop {
            if body.len() > MAX_BODY {
                return Err(HttpError::TooLarge {
                    what: "body",
                    limit: MAX_BODY,
                }
                .into());
            }
            let n = read_some(reader, &mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        },
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn read_some(reader: &mut impl Read, chunk: &mut [u8]) -> Result<usize, ReadError> {
    loop {
        match reader.read(chunk) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// `HTTP/1.x SP 3DIGIT [SP reason]`.
fn parse_status_line(line: &str) -> Result<u16, ReadError> {
    let rest = line
        .strip_prefix("HTTP/1.")
        .ok_or_else(|| malformed("status line is not HTTP/1.x"))?;
    let mut parts = rest.splitn(3, ' ');
    let minor = parts.next().unwrap_or_default();
    if minor.len() != 1 || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("bad HTTP minor version"));
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("status code is not three digits"));
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| malformed("status code out of range"))
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        net::TcpListener,
        sync::mpsc,
        thread::{self, JoinHandle},
    };

    use super::*;

    /// A one-shot-per-connection test server: for each accepted connection it reads one request
    /// (head and Content-Length body), hands it to the test, and writes the canned response.
    pub(crate) struct TestServer {
        pub(crate) addr: SocketAddr,
        pub(crate) requests: mpsc::Receiver<(String, Vec<u8>)>,
        handle: Option<JoinHandle<()>>,
    }

    impl TestServer {
        pub(crate) fn start(responses: Vec<Vec<u8>>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, requests) = mpsc::channel();
            let handle = thread::spawn(move || {
                for response in responses {
                    let (mut stream, _) = listener.accept().unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut buf = Vec::new();
                    let mut chunk = [0_u8; 1024];
                    let head_end = loop {
                        if let Some(pos) = find_subslice(&buf, b"\r\n\r\n") {
                            break pos;
                        }
                        let n = stream.read(&mut chunk).unwrap();
                        assert!(n > 0, "client closed early");
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    let mut body = buf[head_end + 4..].to_vec();
                    while body.len() < len {
                        let n = stream.read(&mut chunk).unwrap();
                        body.extend_from_slice(&chunk[..n]);
                    }
                    tx.send((head, body)).unwrap();
                    stream.write_all(&response).unwrap();
                }
            });
            Self {
                addr,
                requests,
                handle: Some(handle),
            }
        }

        pub(crate) fn url(&self) -> String {
            format!("http://{}", self.addr)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if let Some(handle) = self.handle.take() {
                if !thread::panicking() {
                    handle.join().unwrap();
                }
            }
        }
    }

    #[test]
    fn sends_json_with_bearer_token_and_reads_the_response() {
        let server = TestServer::start(vec![
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"id\":\"s\"}\n"
                .to_vec(),
        ]);
        let client = HttpClient::new(
            &format!("{}/", server.url()),
            Some(Token::new("s3cret".into())),
            Duration::from_secs(5),
        )
        .unwrap();
        let response = client
            .request("PUT", "/v1/sessions/s", Some(b"{\"legs\":[]}"))
            .unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.body, b"{\"id\":\"s\"}\n");
        let (head, body) = server.requests.recv().unwrap();
        assert!(
            head.starts_with("PUT /v1/sessions/s HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nAuthorization: Bearer s3cret"));
        assert!(head.contains("\r\nContent-Length: 11"));
        assert!(head.contains("\r\nConnection: close"));
        assert_eq!(body, b"{\"legs\":[]}");
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn reads_to_end_without_content_length_and_ignores_204_bodies() {
        let server = TestServer::start(vec![
            b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec(),
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        ]);
        let client = HttpClient::new(&server.url(), None, Duration::from_secs(5)).unwrap();
        let response = client.request("GET", "/v1/health", None).unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, b"until close".as_slice())
        );
        let response = client.request("DELETE", "/v1/sessions/x", None).unwrap();
        assert_eq!(response.status, 204);
        assert!(response.body.is_empty());
        let (head, _) = server.requests.recv().unwrap();
        assert!(!head.contains("Authorization"));
        assert!(!head.contains("Content-Length"));
    }

    #[test]
    fn refuses_malformed_and_oversized_responses() {
        let cases: Vec<&[u8]> = vec![
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 999 Huh\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
        ];
        for case in cases {
            let result = read_response(&mut &case[..]);
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(case));
        }
        let huge_head = [
            b"HTTP/1.1 200 OK\r\nX: ".as_slice(),
            &vec![b'a'; MAX_HEAD + 10],
        ]
        .concat();
        assert!(matches!(
            read_response(&mut &huge_head[..]),
            Err(ReadError::Http(HttpError::TooLarge { what: "head", .. }))
        ));
    }

    #[test]
    fn parses_base_urls() {
        let t = Duration::from_secs(1);
        let c = HttpClient::new("http://127.0.0.1:8740", None, t).unwrap();
        assert_eq!(c.addr(), "127.0.0.1:8740".parse().unwrap());
        let c = HttpClient::new("http://localhost/relay/", None, t).unwrap();
        assert_eq!(c.addr(), "127.0.0.1:80".parse().unwrap());
        assert_eq!(c.prefix, "/relay");
        let c = HttpClient::new("http://[::1]:9/", None, t).unwrap();
        assert_eq!(c.addr(), "[::1]:9".parse().unwrap());
        for bad in [
            "https://127.0.0.1",
            "http://example.com:80",
            "http://127.0.0.1:x",
            "http://:80",
            "http://u@127.0.0.1",
            "http://127.0.0.1/?q",
            "127.0.0.1:8740",
        ] {
            assert!(HttpClient::new(bad, None, t).is_err(), "{bad}");
        }
    }

    #[test]
    fn connection_refused_is_an_io_error_naming_the_step() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = HttpClient::new(
            &format!("http://127.0.0.1:{port}"),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(matches!(
            client.request("GET", "/", None),
            Err(HttpError::Io {
                step: "connect",
                ..
            })
        ));
    }
}
