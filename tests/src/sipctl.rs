//! sip-controller end to end on loopback: the binary as a child process with a generated
//! configuration, an in-process relayd it programs, and the SIP peers the tests play (UDP and
//! TCP by hand, TLS through sip-controller's own transport layer as a client, `SIPp` as a
//! process).
//!
//! Everything started here stops on drop (processes are killed, the relay's runtime is shut
//! down), and every wait is bounded. The SIP text helpers are deliberately independent of
//! sip-controller's parser: a test must not accept what the controller writes only because
//! both sides share a bug.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use relay_userspace::{
    api::{self, ApiState},
    config::Config as RelayConfig,
    datapath::{DatapathOptions, SocketDatapath},
    relay::Relay,
};
use serde_json::Value;
use sip_controller::transport::{
    tls::TlsSettings, ConnectionId, Inbound, Outbound, Sent, Transport, TransportConfig,
    TransportEvent, TransportLayer,
};

use crate::{
    loadgen::http::{HttpClient, Token},
    relayd::TOKEN,
    workspace_bin,
};

/// How long a test waits for any single thing before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A scratch directory under the system temp dir, removed on drop unless the test failed.
#[derive(Debug)]
pub struct Scratch {
    /// The directory.
    pub path: PathBuf,
}

impl Scratch {
    /// A fresh, empty directory named after the test.
    ///
    /// # Panics
    /// When it cannot be created.
    pub fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("sipctl-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the scratch directory");
        Self { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ----- relayd ---------------------------------------------------------------------------------

/// relayd in process on a chosen (or ephemeral) API address. Unlike [`crate::relayd::TestRelay`]
/// it stops hard: its runtime is shut down with every connection (the controller keeps an
/// event stream open that a graceful shutdown would wait for), which is also what a relayd
/// crash looks like to the controller.
pub struct InProcessRelay {
    /// The control API's address.
    pub addr: SocketAddr,
    /// A client with the test token.
    pub client: HttpClient,
    /// The relay (sessions, direct inspection).
    pub relay: Arc<Relay>,
    /// The boot id the API reports.
    pub boot_id: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for InProcessRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessRelay")
            .field("addr", &self.addr)
            .field("boot_id", &self.boot_id)
            .finish_non_exhaustive()
    }
}

impl InProcessRelay {
    /// Starts a relay with `config` on `api` (port 0: ephemeral).
    ///
    /// # Panics
    /// When the configuration is invalid or the address cannot be bound within [`WAIT`].
    pub fn start(config: RelayConfig, api: SocketAddr) -> Self {
        config.validate().expect("test relay configuration");
        let datapath = SocketDatapath::start(&DatapathOptions {
            workers: config.datapath.workers.max(1),
            cpus: Vec::new(),
            batch: config.datapath.batch,
        })
        .expect("datapath");
        let max_body = config.http.max_body_bytes;
        let relay = Arc::new(Relay::new(config, datapath));
        // The same port right after the previous relay let go of it: retry briefly.
        let started = Instant::now();
        let listener = loop {
            match TcpListener::bind(api) {
                Ok(listener) => break listener,
                Err(e) if started.elapsed() < WAIT => {
                    eprintln!("relay API {api} not bindable yet ({e}); retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("bind the relay API on {api}: {e}"),
            }
        };
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local addr");
        let state = ApiState::new(Arc::clone(&relay), TOKEN.to_owned(), None);
        let boot_id = state.boot_id().to_owned();
        let (stop, stopped) = mpsc::channel::<()>();
        let timeouts = Arc::clone(&relay);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tick.tick().await;
                    let relay = Arc::clone(&timeouts);
                    let _ = tokio::task::spawn_blocking(move || relay.check_media_timeouts()).await;
                }
            });
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, api::router(state, max_body)).await;
            });
            let _ = stopped.recv();
            // Drops every task: the listener and all open connections close now.
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        let client = HttpClient::new(
            &format!("http://{addr}"),
            Some(Token::new(TOKEN.to_owned())),
            Duration::from_secs(5),
        )
        .expect("client");
        Self {
            addr,
            client,
            relay,
            boot_id,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `GET`/`PUT`/... `path`, body parsed as JSON (`Null` when empty).
    ///
    /// # Panics
    /// When the request fails or the body is not JSON.
    pub fn json(&self, method: &str, path: &str) -> (u16, Value) {
        let response = self
            .client
            .request(method, path, None)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (response.status, body_json(&response.body))
    }

    /// The ids of the relay's sessions.
    pub fn session_ids(&self) -> Vec<String> {
        relay_session_ids(self.addr)
    }

    /// Stops the relay (the same as dropping it).
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for InProcessRelay {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn body_json(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

// ----- the controller -------------------------------------------------------------------------

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// The `[relay]` table body for a separate relayd whose API is at `api` (token [`TOKEN`]).
pub fn http_relay_section(api: SocketAddr) -> String {
    format!("url = \"http://{api}\"\npoll_interval_ms = 200\n")
}

/// Writes `config` to `dir/sip-controller.toml`, starts sip-controller on it (stderr to
/// `log`, [`TOKEN`] as relayd's token) and returns it with the first stdout line `ready`
/// accepts. Its stdout keeps being read afterwards, so the controller never sees EPIPE.
///
/// # Panics
/// When no such line comes within [`WAIT`] (the log's tail is in the message).
fn spawn_sip_controller(
    dir: &Path,
    config: &str,
    log: &Path,
    ready: impl Fn(&str) -> bool,
) -> (Child, String) {
    let config_path = dir.join("sip-controller.toml");
    std::fs::write(&config_path, config).expect("write the controller configuration");
    let mut child = Command::new(workspace_bin("sip-controller"))
        .arg("--config")
        .arg(&config_path)
        .env("RELAYD_TOKEN", TOKEN)
        .env("RUST_LOG", "info,sip_controller=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn sip-controller");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    let found = std::iter::from_fn(|| {
        let left = deadline.checked_duration_since(Instant::now())?;
        lines.recv_timeout(left).ok()
    })
    .find(|line| ready(line));
    if let Some(line) = found {
        return (child, line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "sip-controller did not report ready:\n{}",
        log_tail(log, 100)
    );
}

/// sip-controller as an NG server alone (SIP on an ephemeral UDP port only), its NG port on a
/// free loopback port, no delete-delay, programming the relay its `[relay]` table body
/// (`relay_section`: [`http_relay_section`] or [`embedded_relay_section`]) names. Killed on
/// drop; its log is printed when the test failed.
#[derive(Debug)]
pub struct NgController {
    /// The NG port (UDP).
    pub ng: SocketAddr,
    log: PathBuf,
    child: Child,
}

impl NgController {
    /// Starts it in `dir`.
    ///
    /// # Panics
    /// When it does not report its NG port within [`WAIT`] (its log is in the message).
    pub fn start(dir: &Path, relay_section: &str) -> Self {
        let ng = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join("sip-controller.log");
        let config = format!(
            "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\ntls = []\n\n\
             [tls]\nstate_dir = \"{state}\"\n\n\
             [relay]\n{relay_section}\n\
             [api]\nlisten = \"127.0.0.1:0\"\n\n\
             [ng]\nudp = [\"{ng}\"]\ndelete_delay_secs = 0\n",
            state = dir.join("tls").display(),
        );
        let expected = format!("sip-controller: NG (rtpengine protocol) udp [{ng}]");
        let (child, _) =
            spawn_sip_controller(dir, &config, &log, |line| line.starts_with(&expected));
        Self { ng, log, child }
    }
}

impl Drop for NgController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sip-controller log ----\n{}", log_tail(&self.log, 150));
        }
    }
}

/// The body of a controller's `[relay]` table for an embedded relay (relayd's configuration
/// written to `dir/relayd.toml`): media ports `ports` on 127.0.0.1, no quarantine, relayd's
/// API on `api` with [`TOKEN`] (the controller must get `RELAYD_TOKEN`).
///
/// # Panics
/// When the file cannot be written.
pub fn embedded_relay_section(dir: &Path, api: SocketAddr, ports: (u16, u16)) -> String {
    let relayd = dir.join("relayd.toml");
    std::fs::write(
        &relayd,
        format!(
            "[http]\nlisten = \"{api}\"\n\n\
             [media]\nport_quarantine_secs = 0\nlatch_window_secs = 0\n\n\
             [[interface]]\nname = \"default\"\naddress = \"127.0.0.1\"\n\
             port_min = {}\nport_max = {}\n\n[datapath]\nworkers = 2\n",
            ports.0, ports.1,
        ),
    )
    .expect("write the relayd configuration");
    format!(
        "mode = \"embedded\"\nrelayd_config = \"{}\"\npoll_interval_ms = 200\n",
        relayd.display()
    )
}

/// The ids of the sessions of the relay whose API (with [`TOKEN`]) is at `api`.
///
/// # Panics
/// When the API does not answer a session list.
pub fn relay_session_ids(api: SocketAddr) -> Vec<String> {
    let client = HttpClient::new(
        &format!("http://{api}"),
        Some(Token::new(TOKEN.to_owned())),
        Duration::from_secs(5),
    )
    .expect("client");
    let response = client
        .request("GET", "/v1/sessions", None)
        .unwrap_or_else(|e| panic!("GET /v1/sessions: {e}"));
    let list = body_json(&response.body);
    assert_eq!(response.status, 200, "{list}");
    list.as_array()
        .expect("a session list")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect()
}

/// A running `sip-controller` process, killed on drop (its log is printed when the test
/// failed).
#[derive(Debug)]
pub struct Controller {
    /// SIP over UDP.
    pub udp: SocketAddr,
    /// SIP over TCP.
    pub tcp: SocketAddr,
    /// SIP over TLS.
    pub tls: SocketAddr,
    /// The HTTP API.
    pub api: SocketAddr,
    /// The CDR file.
    pub cdr: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Controller {
    /// Starts the controller in `dir` with its SIP listeners on ephemeral loopback ports,
    /// programming the relay at `relay`, plus `extra` TOML (trunks, routes, registrar, ...).
    ///
    /// # Panics
    /// When it does not report ready within [`WAIT`] (its log is in the message).
    pub fn start(dir: &Path, relay: SocketAddr, extra: &str) -> Self {
        Self::launch(
            dir,
            &format!("url = \"http://{relay}\"\npoll_interval_ms = 200\n"),
            extra,
        )
    }

    /// Starts the controller like [`Controller::start`], with the relay in its own process
    /// (`[relay] mode = "embedded"`): media ports `ports` on 127.0.0.1, relayd's API (with
    /// [`TOKEN`]) on `api`.
    ///
    /// # Panics
    /// As [`Controller::start`].
    pub fn start_embedded(dir: &Path, api: SocketAddr, ports: (u16, u16), extra: &str) -> Self {
        Self::launch(dir, &embedded_relay_section(dir, api, ports), extra)
    }

    fn launch(dir: &Path, relay: &str, extra: &str) -> Self {
        let cdr = dir.join("cdr.jsonl");
        let log = dir.join("sip-controller.log");
        let config = format!(
            "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = [\"127.0.0.1:0\"]\ntls = [\"127.0.0.1:0\"]\n\
             ring_timeout_secs = 20\n\n\
             [relay]\n{relay}\n\
             [tls]\nstate_dir = \"{state}\"\nverify_server = false\n\n\
             [api]\nlisten = \"127.0.0.1:0\"\n\n\
             [cdr]\npath = \"{cdr}\"\n\n\
             [ng]\nudp = [\"127.0.0.1:0\"]\n\n{extra}",
            state = dir.join("tls").display(),
            cdr = cdr.display(),
        );
        let (child, ready) = spawn_sip_controller(dir, &config, &log, |line| {
            line.starts_with("sip-controller: SIP ")
        });
        let (udp, tcp, tls, api) =
            parse_ready(&ready).unwrap_or_else(|| panic!("unexpected ready line {ready:?}"));
        Self {
            udp,
            tcp,
            tls,
            api,
            cdr,
            log,
            child,
        }
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET path` on the HTTP API: status and JSON body.
    ///
    /// # Panics
    /// When the request fails.
    pub fn api_get(&self, path: &str) -> (u16, Value) {
        let client = HttpClient::new(&format!("http://{}", self.api), None, WAIT).expect("client");
        let response = client
            .request("GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (response.status, body_json(&response.body))
    }

    /// The CDR lines written so far.
    ///
    /// # Panics
    /// When a line is not JSON.
    pub fn cdrs(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.cdr)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a CDR line is JSON"))
            .collect()
    }

    /// Waits (up to [`WAIT`]) until the CDR file has `count` lines.
    ///
    /// # Panics
    /// When it does not.
    pub fn wait_for_cdrs(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let cdrs = self.cdrs();
            if cdrs.len() >= count {
                return cdrs;
            }
            assert!(
                Instant::now() < deadline,
                "{} CDR lines after {WAIT:?}, expected {count}",
                cdrs.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(150).collect();
            eprintln!("---- sip-controller log (last {} lines) ----", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// `sip-controller: SIP udp A tcp B tls C; HTTP API http://X/v1/calls`.
fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr, SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("sip-controller: SIP udp ")?;
    let (udp, rest) = rest.split_once(" tcp ")?;
    let (tcp, rest) = rest.split_once(" tls ")?;
    let (tls, rest) = rest.split_once("; HTTP API http://")?;
    let api = rest.strip_suffix("/v1/calls")?;
    Some((
        udp.parse().ok()?,
        tcp.parse().ok()?,
        tls.parse().ok()?,
        api.parse().ok()?,
    ))
}

/// A loopback port free for both UDP and TCP right now (for peers such as `SIPp` that need a
/// port number up front).
///
/// # Panics
/// When no port could be found in 50 attempts.
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(tcp) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = tcp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port")
}

/// Waits up to `within` for `condition`, polling every 50 ms.
pub fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ----- SIP text -------------------------------------------------------------------------------

/// A SIP message as text: start line, headers in order, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipMessage {
    /// `INVITE sip:... SIP/2.0` or `SIP/2.0 200 OK`.
    pub start: String,
    /// Headers in order (names as written).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// RFC 3261 §7.3.3 compact forms.
fn full_name(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "v" => "Via",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        _ => name,
    }
}

impl SipMessage {
    /// Parses one whole message (header section and `Content-Length` bytes of body).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let end = find(bytes, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&bytes[..end]).ok()?;
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_owned();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut()?;
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((full_name(name.trim()).to_owned(), value.trim().to_owned()));
        }
        let mut message = Self {
            start,
            headers,
            body: Vec::new(),
        };
        let length: usize = message
            .header("Content-Length")
            .map_or(Some(0), |l| l.parse().ok())?;
        let body = bytes.get(end + 4..end + 4 + length)?;
        message.body = body.to_vec();
        Some(message)
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.start.strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// The reason phrase of a response.
    pub fn reason(&self) -> &str {
        self.start.get(12..).unwrap_or("").trim()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.start.starts_with("SIP/2.0") {
            return None;
        }
        self.start.split(' ').next()
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&str> {
        self.method()?;
        self.start.split(' ').nth(1)
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, comma-separated values split (for Via).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| split_commas(v))
            .collect()
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The URI inside the first Contact (`<...>` stripped).
    pub fn contact_uri(&self) -> Option<String> {
        self.header("Contact").map(uri_of)
    }
}

impl std::fmt::Display for SipMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.start)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        writeln!(f)?;
        f.write_str(&self.body_text())
    }
}

/// Splits a header value at commas outside quotes and angle brackets.
fn split_commas(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut quoted, mut angle, mut current) = (false, false, String::new());
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_owned());
    }
    parts
}

/// The URI of a name-addr (`"x" <sip:a@b>;tag=1` → `sip:a@b`) or addr-spec.
pub fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => value[open + 1..close].to_owned(),
        _ => value.split(';').next().unwrap_or(value).trim().to_owned(),
    }
}

/// The `tag` parameter of a From/To value.
pub fn tag_of(value: &str) -> Option<String> {
    let params = match value.rfind('>') {
        Some(close) => &value[close + 1..],
        None => value,
    };
    params
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(name, _)| name.eq_ignore_ascii_case("tag"))
        .map(|(_, v)| v.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A request with `headers` in order, `Content-Length` added, and an optional body with its
/// content type.
pub fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, String)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    message(&format!("{method} {uri} SIP/2.0"), headers, body)
}

/// A response to `request` (Via, From, To, Call-ID, `CSeq` copied; `to_tag` added to To when it
/// has none), with `extra` headers and an optional SDP body.
pub fn response(
    request: &SipMessage,
    status: u16,
    reason: &str,
    to_tag: &str,
    extra: &[(&str, String)],
    sdp: Option<&str>,
) -> Vec<u8> {
    let mut headers: Vec<(&str, String)> = Vec::new();
    for via in request.header_values("Via") {
        headers.push(("Via", via));
    }
    headers.push((
        "From",
        request.header("From").unwrap_or_default().to_owned(),
    ));
    let to = request.header("To").unwrap_or_default();
    let to = if tag_of(to).is_some() || status == 100 {
        to.to_owned()
    } else {
        format!("{to};tag={to_tag}")
    };
    headers.push(("To", to));
    headers.push((
        "Call-ID",
        request.header("Call-ID").unwrap_or_default().to_owned(),
    ));
    headers.push((
        "CSeq",
        request.header("CSeq").unwrap_or_default().to_owned(),
    ));
    headers.extend(extra.iter().cloned());
    message(
        &format!("SIP/2.0 {status} {reason}"),
        &headers,
        sdp.map(|s| ("application/sdp", s.as_bytes())),
    )
}

fn message(start: &str, headers: &[(&str, String)], body: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut text = format!("{start}\r\n");
    for (name, value) in headers {
        let _ = write!(text, "{name}: {value}\r\n");
    }
    if let Some((content_type, _)) = body {
        let _ = write!(text, "Content-Type: {content_type}\r\n");
    }
    let _ = write!(
        text,
        "Content-Length: {}\r\n\r\n",
        body.map_or(0, |(_, b)| b.len())
    );
    let mut bytes = text.into_bytes();
    if let Some((_, body)) = body {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// A fresh random token (branches, tags, Call-IDs).
pub fn token() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("randomness");
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ----- SDP ------------------------------------------------------------------------------------

/// The first audio section of an SDP body, as a test checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioSection {
    /// `c=` address (media level, else session level).
    pub address: IpAddr,
    /// `m=` port.
    pub port: u16,
    /// `m=` proto.
    pub proto: String,
    /// `m=` formats.
    pub formats: Vec<String>,
    /// `a=crypto:` values of the section.
    pub cryptos: Vec<String>,
    /// Every line of the section, `m=` included.
    pub lines: Vec<String>,
}

impl AudioSection {
    /// Parses `body`.
    ///
    /// # Panics
    /// When there is no `m=audio` section or no connection address (a test expectation).
    pub fn parse(body: &str) -> Self {
        let mut session_c = None;
        let mut section: Option<Self> = None;
        let mut media_c = None;
        for line in body.lines() {
            let line = line.trim_end();
            if let Some(m) = line.strip_prefix("m=") {
                if section.is_some() {
                    break;
                }
                let fields: Vec<&str> = m.split(' ').collect();
                assert!(
                    fields.len() >= 4 && fields[0] == "audio",
                    "m= line {line:?}"
                );
                section = Some(Self {
                    address: IpAddr::from([0, 0, 0, 0]),
                    port: fields[1].parse().expect("m= port"),
                    proto: fields[2].to_owned(),
                    formats: fields[3..].iter().map(|f| (*f).to_owned()).collect(),
                    cryptos: Vec::new(),
                    lines: vec![line.to_owned()],
                });
                continue;
            }
            let c = line
                .strip_prefix("c=IN IP4 ")
                .or_else(|| line.strip_prefix("c=IN IP6 "))
                .map(|a| a.parse::<IpAddr>().expect("c= address"));
            match section.as_mut() {
                None => session_c = c.or(session_c),
                Some(s) => {
                    s.lines.push(line.to_owned());
                    media_c = c.or(media_c);
                    if let Some(crypto) = line.strip_prefix("a=crypto:") {
                        s.cryptos.push(crypto.to_owned());
                    }
                }
            }
        }
        let mut section = section.unwrap_or_else(|| panic!("no m=audio in {body}"));
        section.address = media_c
            .or(session_c)
            .unwrap_or_else(|| panic!("no c= in {body}"));
        section
    }

    /// Where to send this section's RTP.
    pub fn rtp(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// The key material (master key || salt) of the first `a=crypto` with `suite`.
    pub fn key_for(&self, suite: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        self.cryptos.iter().find_map(|c| {
            let mut fields = c.split(' ');
            let _tag = fields.next()?;
            (fields.next()? == suite).then_some(())?;
            let inline = fields.next()?.strip_prefix("inline:")?;
            let key = inline.split(['|', ';']).next()?;
            base64::engine::general_purpose::STANDARD.decode(key).ok()
        })
    }

    /// Whether the section has the attribute line `a=<name>` (with or without a value).
    pub fn has_attribute(&self, name: &str) -> bool {
        self.lines.iter().any(|l| {
            l.strip_prefix("a=")
                .is_some_and(|a| a == name || a.starts_with(&format!("{name}:")))
        })
    }
}

/// An SDP body: one audio section at `rtp`, `proto`, PCMU, and the given `a=crypto` lines.
pub fn audio_sdp(rtp: SocketAddr, proto: &str, cryptos: &[String]) -> String {
    let ip = rtp.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut sdp = format!(
        "v=0\r\no=test 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {} {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
        rtp.port()
    );
    for crypto in cryptos {
        let _ = write!(sdp, "a=crypto:{crypto}\r\n");
    }
    sdp
}

/// `tag SUITE inline:<key>` for 30 bytes of key material.
pub fn crypto_line(tag: u8, suite: &str, key: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "{tag} {suite} inline:{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// An RTP packet: version 2, payload type `pt`, `seq`, timestamp `seq * 160`, `ssrc`.
pub fn rtp_packet(pt: u8, ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt & 0x7f];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A UDP socket on `ip` (port 0) with a 300 ms read timeout.
///
/// # Panics
/// When it cannot be bound.
pub fn media_socket(ip: [u8; 4]) -> UdpSocket {
    let s = UdpSocket::bind((IpAddr::from(ip), 0)).expect("bind a media socket");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    s
}

/// Receives until `count` datagrams arrived or none came for 300 ms.
pub fn receive(s: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < count {
        match s.recv_from(&mut buf) {
            Ok((n, _)) => got.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    got
}

// ----- SIP peers --------------------------------------------------------------------------------

/// A SIP peer over UDP.
#[derive(Debug)]
pub struct UdpPeer {
    /// The socket.
    pub socket: UdpSocket,
}

impl UdpPeer {
    /// Binds `ip`:0.
    ///
    /// # Panics
    /// When it cannot bind.
    pub fn bind(ip: [u8; 4]) -> Self {
        let socket = UdpSocket::bind((IpAddr::from(ip), 0)).expect("bind SIP UDP");
        Self { socket }
    }

    /// Our address.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    /// Sends `bytes` to `to`.
    pub fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).expect("send SIP over UDP");
    }

    /// The next message within `within`, with its source.
    pub fn recv(&self, within: Duration) -> Option<(SipMessage, SocketAddr)> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(m) = SipMessage::parse(&buf[..n]) {
                        return Some((m, from));
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// The next message that `matches` within `within`, skipping others (retransmissions,
    /// provisional responses).
    pub fn recv_where(
        &self,
        within: Duration,
        mut matches: impl FnMut(&SipMessage) -> bool,
    ) -> Option<(SipMessage, SocketAddr)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (m, from) = self.recv(left)?;
            if matches(&m) {
                return Some((m, from));
            }
        }
    }
}

/// A SIP peer over one TCP connection (messages framed by Content-Length).
#[derive(Debug)]
pub struct TcpPeer {
    /// The connection.
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl TcpPeer {
    /// Connects to `to`.
    ///
    /// # Panics
    /// When it cannot connect.
    pub fn connect(to: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&to, WAIT).expect("connect SIP over TCP");
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Our address.
    pub fn addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// Writes `bytes`; `false` when the connection is gone.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// The next message within `within`; `None` on timeout or close.
    pub fn recv(&mut self, within: Duration) -> Option<SipMessage> {
        let deadline = Instant::now() + within;
        loop {
            // Keepalive CRLFs between messages (RFC 5626 §4.4.1).
            while self.buffer.starts_with(b"\r\n") {
                self.buffer.drain(..2);
            }
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                let length = head
                    .split("\r\n")
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| {
                        let n = n.trim();
                        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l")
                    })
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if self.buffer.len() >= end + 4 + length {
                    let bytes: Vec<u8> = self.buffer.drain(..end + 4 + length).collect();
                    return SipMessage::parse(&bytes);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let mut chunk = [0u8; 16_384];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the peer closed the connection within `within` (reads until EOF or reset).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 16_384];
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            if self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                return true;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// A SIP peer over TLS: sip-controller's transport layer used as a client (and a listener on
/// `ip`, so that connections leave from `ip` and the Contact it advertises is reachable).
pub struct TlsPeer {
    runtime: tokio::runtime::Runtime,
    layer: Option<TransportLayer>,
    events: tokio::sync::mpsc::Receiver<TransportEvent>,
    /// Our TLS listener (the address in our Via and Contact).
    pub listen: SocketAddr,
}

impl std::fmt::Debug for TlsPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPeer")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl TlsPeer {
    /// A TLS peer on `ip` with a self-signed certificate in `state_dir`; it accepts any server
    /// certificate (the controller's is self-signed).
    ///
    /// # Panics
    /// When the transport layer cannot start.
    pub fn start(ip: [u8; 4], state_dir: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut settings = TlsSettings::self_signed(state_dir);
        settings.tls_verify_server = false;
        let config = TransportConfig {
            tls: vec![SocketAddr::from((ip, 0))],
            tls_settings: Some(settings),
            ..TransportConfig::default()
        };
        let (layer, events) = runtime
            .block_on(TransportLayer::start(config))
            .expect("start the TLS peer");
        let listen = layer.local_addrs(Transport::Tls)[0];
        Self {
            runtime,
            layer: Some(layer),
            events,
            listen,
        }
    }

    fn layer(&self) -> &TransportLayer {
        self.layer.as_ref().expect("running")
    }

    /// Sends a request to `to` (opening or reusing a connection).
    ///
    /// # Panics
    /// When it cannot be sent.
    pub fn send(&self, to: SocketAddr, bytes: &[u8]) -> Sent {
        let mut out = Outbound::request(Transport::Tls, to, bytes.to_vec());
        out.tls_verify_server = Some(false);
        self.runtime
            .block_on(async { tokio::time::timeout(WAIT, self.layer().send(out)).await })
            .expect("TLS send in time")
            .expect("TLS send")
    }

    /// Answers `request` (over the connection it came on).
    ///
    /// # Panics
    /// When it cannot be sent.
    pub fn reply(&self, request: &Inbound, bytes: &[u8]) -> Sent {
        let out = Outbound::response_to(request, bytes.to_vec());
        self.runtime
            .block_on(async { tokio::time::timeout(WAIT, self.layer().send(out)).await })
            .expect("TLS reply in time")
            .expect("TLS reply")
    }

    /// The next message within `within` (closed-connection events and unparseable messages
    /// are skipped).
    pub fn recv(&mut self, within: Duration) -> Option<(SipMessage, Inbound)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let event = self
                .runtime
                .block_on(async { tokio::time::timeout(left, self.events.recv()).await })
                .ok()??;
            if let TransportEvent::Message(inbound) = event {
                if let Some(message) = SipMessage::parse(&inbound.bytes) {
                    return Some((message, inbound));
                }
            }
        }
    }

    /// The next message that `matches` within `within`, skipping others.
    pub fn recv_where(
        &mut self,
        within: Duration,
        mut matches: impl FnMut(&SipMessage) -> bool,
    ) -> Option<(SipMessage, Inbound)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (m, inbound) = self.recv(left)?;
            if matches(&m) {
                return Some((m, inbound));
            }
        }
    }

    /// Whether `connection` is still open.
    pub fn is_open(&self, connection: ConnectionId) -> bool {
        self.layer().is_open(connection)
    }
}

impl Drop for TlsPeer {
    fn drop(&mut self) {
        if let Some(layer) = self.layer.take() {
            layer.shutdown();
            drop(layer);
        }
    }
}

// ----- SIPp -----------------------------------------------------------------------------------

/// A `SIPp` process, killed on drop.
#[derive(Debug)]
pub struct Sipp {
    child: Child,
    /// Its working directory (statistics and logs land there).
    pub dir: PathBuf,
    name: String,
}

impl Sipp {
    /// Starts `sipp` with `args` in `dir` (`name` labels its output files).
    ///
    /// # Panics
    /// When sipp cannot be started (it is the Debian package `sip-tester`).
    pub fn start(dir: &Path, name: &str, args: &[String]) -> Self {
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).expect("sipp output");
        let err = out.try_clone().expect("clone");
        let child = Command::new("sipp")
            .args(args)
            .args(["-nostdin", "-trace_err", "-error_file"])
            .arg(dir.join(format!("{name}.errors.log")))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn sipp (apt-get install sip-tester)");
        Self {
            child,
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Waits up to `within` for `SIPp` to exit.
    ///
    /// # Panics
    /// When it is still running then (it is killed first).
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "sipp {} still running after {within:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What `SIPp` printed (its final screen has the call counters).
    pub fn output(&self) -> String {
        let mut text = std::fs::read_to_string(self.dir.join(format!("{}.out", self.name)))
            .unwrap_or_default();
        if let Ok(errors) =
            std::fs::read_to_string(self.dir.join(format!("{}.errors.log", self.name)))
        {
            text.push_str("\n---- errors ----\n");
            text.push_str(&errors);
        }
        text
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sipp {} ----\n{}", self.name, self.output());
        }
    }
}

/// Whether `sipp` is installed; otherwise the test prints a visible skip (and fails under
/// `CI=true`).
pub fn have_sipp(test: &str) -> bool {
    let found = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: sipp (sip-tester) is missing and CI=true forbids skipping"
        );
        eprintln!("SKIPPED {test}: sipp is not installed (apt-get install sip-tester)");
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let parsed = parse_ready(
            "sip-controller: SIP udp 127.0.0.1:5060 tcp 127.0.0.1:5060 tls 127.0.0.1:5061; \
             HTTP API http://127.0.0.1:8090/v1/calls",
        );
        assert_eq!(
            parsed,
            Some((
                "127.0.0.1:5060".parse().unwrap(),
                "127.0.0.1:5060".parse().unwrap(),
                "127.0.0.1:5061".parse().unwrap(),
                "127.0.0.1:8090".parse().unwrap()
            ))
        );
    }

    #[test]
    fn messages_parse_with_compact_headers_and_bodies() {
        let m = SipMessage::parse(
            b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n\
              t: <sip:b@x>;tag=abc\r\nl: 3\r\n\r\nv=0",
        )
        .unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.reason(), "OK");
        assert_eq!(m.header_values("Via").len(), 2);
        assert_eq!(tag_of(m.header("To").unwrap()).as_deref(), Some("abc"));
        assert_eq!(m.body, b"v=0");
    }

    #[test]
    fn audio_sections_yield_address_port_and_keys() {
        let key: Vec<u8> = (0..30).collect();
        let sdp = audio_sdp(
            "127.0.0.1:4000".parse().unwrap(),
            "RTP/SAVP",
            &[crypto_line(1, "AES_CM_128_HMAC_SHA1_80", &key)],
        );
        let audio = AudioSection::parse(&sdp);
        assert_eq!(audio.rtp(), "127.0.0.1:4000".parse().unwrap());
        assert_eq!(audio.proto, "RTP/SAVP");
        assert_eq!(audio.key_for("AES_CM_128_HMAC_SHA1_80"), Some(key));
    }
}
