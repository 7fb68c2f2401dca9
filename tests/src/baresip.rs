//! baresip as an independent SIP user agent for interop tests: a headless instance with its own
//! configuration directory, one account, SDES-SRTP through its `srtp` module, a WAV file as the
//! microphone, and the `ctrl_tcp` JSON interface to drive calls and watch their events.
//!
//! Written against the Debian package (baresip 1.0.0 on libre 1.1.0); newer releases keep the
//! same configuration keys and control protocol. What that version does and does not do shapes
//! the configuration:
//!
//! - SIP over TLS is built into libre (no module). libre 1.1's TLS client never verifies the
//!   server certificate and baresip 1.0 has no `sip_verify_server` switch, so the peer's
//!   certificate is only handed over as `sip_cafile` (used by releases that verify).
//! - `sip_listen` takes port 0: libre binds UDP/TCP and TLS to free ports and puts the real TLS
//!   port in the Contact it registers. `net_interface` must be an address (`127.0.0.1`): the
//!   interface name `lo` does not resolve in that version.
//! - There is no null audio player: `aubridge` (an in-process bridge nobody reads) stands in for
//!   the speaker, `aufile` plays an 8 kHz mono S16LE WAV ([`write_tone_wav`]) as the microphone.
//!   When the file ends, baresip hangs the call up, so the file must outlast the call.
//! - `dial`, `hangup`, `reginfo` are commands of the `menu` module; `ctrl_tcp` only carries them.
//!   Its frames are netstrings (`<length>:<JSON>,`): commands `{"command","params","token"}`,
//!   responses `{"response":true,"ok","data","token"}`, events
//!   `{"event":true,"type","class","id","param",...}`.
//!
//! The process is killed when the [`Baresip`] value drops; its log (with the SIP trace, `-s`) is
//! kept in the configuration directory for failure reports.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    fs,
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

/// The executable looked up on `PATH`.
pub const BINARY: &str = "baresip";

/// Where distributions install the modules, in the order tried.
pub const MODULE_DIRS: [&str; 3] = [
    "/usr/lib/baresip/modules",
    "/usr/local/lib/baresip/modules",
    "/usr/lib/x86_64-linux-gnu/baresip/modules",
];

/// Modules every instance loads: codecs, audio in/out without a sound card, SDES-SRTP, the
/// account file, the command set and its TCP transport.
pub const REQUIRED_MODULES: [&str; 8] = [
    "g711.so",
    "aufile.so",
    "aubridge.so",
    "srtp.so",
    "uuid.so",
    "account.so",
    "menu.so",
    "ctrl_tcp.so",
];

/// Largest `ctrl_tcp` frame accepted (baresip's own limit is far lower).
pub const MAX_FRAME: usize = 1 << 20;

/// Sample rate of [`write_tone_wav`] files: PCMU/PCMA's clock, so `aufile` needs no resampler.
pub const WAV_SAMPLE_RATE: u32 = 8000;

/// What went wrong with a baresip instance.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaresipError {
    /// The executable could not be run.
    #[error("`{binary}` cannot be run (is the baresip package installed?): {source}")]
    NotInstalled {
        /// What was run.
        binary: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// No module directory, or modules missing from it.
    #[error("baresip modules missing: {missing:?} (looked in {searched:?})")]
    MissingModules {
        /// The module files not found.
        missing: Vec<&'static str>,
        /// The directories searched.
        searched: Vec<&'static str>,
    },
    /// A file of the configuration directory could not be written or read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The process could not be started.
    #[error("starting baresip: {source}")]
    Spawn {
        /// The OS error.
        source: io::Error,
    },
    /// The process ended on its own.
    #[error("baresip exited ({status})")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// The control connection failed.
    #[error("ctrl_tcp {addr}: {source}")]
    Control {
        /// The control address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A control frame was not a netstring carrying a JSON object.
    #[error("ctrl_tcp sent a malformed frame: {reason}")]
    Frame {
        /// What was wrong.
        reason: String,
    },
    /// A command was refused.
    #[error("command `{command} {params}` failed: {data}")]
    CommandFailed {
        /// The command.
        command: String,
        /// Its parameters.
        params: String,
        /// baresip's explanation.
        data: String,
    },
    /// Something did not happen in time.
    #[error("no {what} within {waited:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
}

/// Media encryption of the account (`;mediaenc=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaEncryption {
    /// Plain RTP.
    None,
    /// SDES-SRTP offered and required: `RTP/SAVP` with `a=crypto` (`srtp-mand`).
    SrtpMandatory,
}

/// What the account does with incoming calls (`;answermode=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerMode {
    /// Ring until an `accept` command.
    Manual,
    /// Answer at once.
    Auto,
}

/// One baresip instance's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// User part of the address of record, e.g. `alice`.
    pub user: String,
    /// The registrar's TLS address; the AOR is `sip:<user>@<registrar>` and every request goes
    /// there over TLS.
    pub registrar: SocketAddr,
    /// Media encryption.
    pub media_encryption: MediaEncryption,
    /// Incoming calls.
    pub answer_mode: AnswerMode,
    /// Local RTP ports (even RTP, RTCP = RTP + 1).
    pub rtp_ports: RangeInclusive<u16>,
    /// The microphone: an 8 kHz mono S16LE WAV ([`write_tone_wav`]).
    pub audio_source: PathBuf,
    /// PEM file with the registrar's certificate, passed as `sip_cafile`.
    pub ca_file: Option<PathBuf>,
}

impl Options {
    /// The address of record, `sip:<user>@<registrar>`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.registrar)
    }

    /// The `accounts` line.
    pub fn account_line(&self) -> String {
        let mut line = format!("<{};transport=tls>;regint=600", self.aor());
        if self.media_encryption == MediaEncryption::SrtpMandatory {
            line.push_str(";mediaenc=srtp-mand");
        }
        line.push_str(match self.answer_mode {
            AnswerMode::Manual => ";answermode=manual",
            AnswerMode::Auto => ";answermode=auto",
        });
        line
    }

    /// The `config` file for `module_dir` and the control address.
    pub fn config_file(&self, module_dir: &str, control: SocketAddr) -> String {
        let mut text = String::new();
        let mut line = |key: &str, value: &str| {
            let _ = writeln!(text, "{key:<24}{value}");
        };
        line("poll_method", "epoll");
        line("sip_listen", "127.0.0.1:0");
        if let Some(ca) = &self.ca_file {
            line("sip_cafile", &ca.display().to_string());
        }
        line("net_interface", "127.0.0.1");
        line("call_local_timeout", "120");
        line("call_max_calls", "4");
        line(
            "audio_source",
            &format!("aufile,{}", self.audio_source.display()),
        );
        line("audio_player", "aubridge,speaker");
        line("audio_alert", "aubridge,alert");
        line("ausrc_srate", &WAV_SAMPLE_RATE.to_string());
        line("auplay_srate", &WAV_SAMPLE_RATE.to_string());
        line("ausrc_channels", "1");
        line("auplay_channels", "1");
        line(
            "rtp_ports",
            &format!("{}-{}", self.rtp_ports.start(), self.rtp_ports.end()),
        );
        line("rtcp_mux", "no");
        line("statmode_default", "off");
        line("ringback_disabled", "yes");
        line("module_path", module_dir);
        for module in ["g711.so", "aufile.so", "aubridge.so", "srtp.so"] {
            line("module", module);
        }
        line("module_tmp", "uuid.so");
        line("module_tmp", "account.so");
        line("module_app", "menu.so");
        line("module_app", "ctrl_tcp.so");
        line("ctrl_tcp_listen", &control.to_string());
        text
    }
}

/// The module directory holding every [`REQUIRED_MODULES`] entry.
pub fn module_dir() -> Result<&'static str, BaresipError> {
    let mut best: Option<(&'static str, Vec<&'static str>)> = None;
    for dir in MODULE_DIRS {
        if !Path::new(dir).is_dir() {
            continue;
        }
        let missing: Vec<_> = REQUIRED_MODULES
            .iter()
            .copied()
            .filter(|m| !Path::new(dir).join(m).is_file())
            .collect();
        if missing.is_empty() {
            return Ok(dir);
        }
        if best.as_ref().is_none_or(|(_, m)| missing.len() < m.len()) {
            best = Some((dir, missing));
        }
    }
    Err(BaresipError::MissingModules {
        missing: best.map_or_else(|| REQUIRED_MODULES.to_vec(), |(_, m)| m),
        searched: MODULE_DIRS.to_vec(),
    })
}

/// The version banner (`baresip v1.0.0 Copyright ...`), which also proves the binary runs.
pub fn version() -> Result<String, BaresipError> {
    let output = Command::new(BINARY)
        .arg("-h")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BaresipError::NotInstalled {
            binary: BINARY,
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(text
        .lines()
        .find(|l| l.starts_with("baresip v"))
        .unwrap_or("baresip (unknown version)")
        .to_owned())
}

/// Writes `seconds` of a sine tone as an 8 kHz mono 16-bit PCM WAV (RIFF, little endian).
pub fn write_tone_wav(path: &Path, seconds: u32, hz: u32) -> Result<(), BaresipError> {
    let samples = WAV_SAMPLE_RATE * seconds;
    let data_len = samples * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&WAV_SAMPLE_RATE.to_le_bytes());
    wav.extend_from_slice(&(WAV_SAMPLE_RATE * 2).to_le_bytes()); // byte rate
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let phase = f64::from(i) * f64::from(hz) / f64::from(WAV_SAMPLE_RATE);
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the amplitude keeps the value well inside i16"
        )]
        let sample = (8000.0 * (phase * std::f64::consts::TAU).sin()) as i16;
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    fs::write(path, wav).map_err(|source| BaresipError::File {
        path: path.to_owned(),
        source,
    })
}

/// An event `ctrl_tcp` reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `type`, e.g. `CALL_ESTABLISHED`, `CALL_CLOSED`, `CALL_MENC`, `REGISTER_OK`.
    pub kind: String,
    /// baresip's call id (its Call-ID), for call events.
    pub call: Option<String>,
    /// `param`: the close reason, the SRTP suite (`0,audio,AES_CM_128_HMAC_SHA1_80`), ...
    pub param: Option<String>,
    /// The whole object.
    pub raw: Value,
}

impl Event {
    fn from_json(raw: Value) -> Self {
        let text = |key: &str| raw.get(key).and_then(Value::as_str).map(str::to_owned);
        Self {
            kind: text("type").unwrap_or_default(),
            call: text("id"),
            param: text("param"),
            raw,
        }
    }
}

/// Splits netstrings (`<decimal length>:<payload>,`) off a byte stream.
#[derive(Debug, Default)]
pub struct NetstringReader {
    buffer: Vec<u8>,
}

impl NetstringReader {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete payload, `None` until one is complete.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, BaresipError> {
        let malformed = |reason: String| BaresipError::Frame { reason };
        let Some(colon) = self.buffer.iter().position(|&b| b == b':') else {
            if self.buffer.len() > 7 || !self.buffer.iter().all(u8::is_ascii_digit) {
                return Err(malformed(format!(
                    "no length prefix in {:?}",
                    String::from_utf8_lossy(&self.buffer)
                )));
            }
            return Ok(None);
        };
        let digits = &self.buffer[..colon];
        if digits.is_empty() || digits.len() > 7 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(malformed(format!(
                "bad length {:?}",
                String::from_utf8_lossy(digits)
            )));
        }
        let length: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| malformed("bad length".to_owned()))?;
        if length > MAX_FRAME {
            return Err(malformed(format!("{length} bytes exceed {MAX_FRAME}")));
        }
        let end = colon + 1 + length;
        if self.buffer.len() <= end {
            return Ok(None);
        }
        if self.buffer[end] != b',' {
            return Err(malformed(format!(
                "frame of {length} bytes not closed by ','"
            )));
        }
        let payload = self.buffer[colon + 1..end].to_vec();
        self.buffer.drain(..=end);
        Ok(Some(payload))
    }
}

/// One netstring.
pub fn netstring(payload: &[u8]) -> Vec<u8> {
    let mut frame = format!("{}:", payload.len()).into_bytes();
    frame.extend_from_slice(payload);
    frame.push(b',');
    frame
}

/// A running baresip with its control connection.
#[derive(Debug)]
pub struct Baresip {
    options: Options,
    dir: PathBuf,
    log_path: PathBuf,
    control_addr: SocketAddr,
    child: Child,
    control: TcpStream,
    frames: Receiver<Result<Value, BaresipError>>,
    backlog: VecDeque<Event>,
    seen: Vec<String>,
    next_token: u64,
}

impl Baresip {
    /// Writes the configuration into `dir` (created), starts baresip there and connects to its
    /// control port (within `timeout`).
    pub fn start(dir: &Path, options: Options, timeout: Duration) -> Result<Self, BaresipError> {
        let module_dir = module_dir()?;
        let file_error = |path: &Path| {
            let path = path.to_owned();
            move |source| BaresipError::File { path, source }
        };
        fs::create_dir_all(dir).map_err(file_error(dir))?;
        let control_addr = free_tcp_port()?;
        let config = dir.join("config");
        fs::write(&config, options.config_file(module_dir, control_addr))
            .map_err(file_error(&config))?;
        let accounts = dir.join("accounts");
        fs::write(&accounts, format!("{}\n", options.account_line()))
            .map_err(file_error(&accounts))?;
        let log_path = dir.join("baresip.log");
        let log = fs::File::create(&log_path).map_err(file_error(&log_path))?;
        let log_err = log.try_clone().map_err(file_error(&log_path))?;
        let mut child = Command::new(BINARY)
            .arg("-f")
            .arg(dir)
            .arg("-s") // SIP trace into the log
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| BaresipError::Spawn { source })?;
        let control = match connect_control(&mut child, control_addr, timeout) {
            Ok(stream) => stream,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let frames = spawn_reader(&control, control_addr)?;
        Ok(Self {
            options,
            dir: dir.to_owned(),
            log_path,
            control_addr,
            child,
            control,
            frames,
            backlog: VecDeque::new(),
            seen: Vec::new(),
            next_token: 1,
        })
    }

    /// The settings.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The configuration directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs a command; its `data` on success.
    pub fn command(
        &mut self,
        command: &str,
        params: &str,
        timeout: Duration,
    ) -> Result<String, BaresipError> {
        let token = format!("t{}", self.next_token);
        self.next_token += 1;
        let body = json!({"command": command, "params": params, "token": token}).to_string();
        self.control
            .write_all(&netstring(body.as_bytes()))
            .map_err(|source| BaresipError::Control {
                addr: self.control_addr,
                source,
            })?;
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.next_frame(deadline, || format!("response to `{command}`"))?;
            // Events that arrive while waiting for the response are kept for `wait_event`
            // (the CALL_CLOSED of a hangup usually comes before the hangup's response).
            if frame.get("event").and_then(Value::as_bool) == Some(true) {
                self.backlog.push_back(Event::from_json(frame));
                continue;
            }
            if frame.get("response").and_then(Value::as_bool) == Some(true) {
                if frame.get("token").and_then(Value::as_str) != Some(token.as_str()) {
                    continue;
                }
                let data = frame
                    .get("data")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                return if frame.get("ok").and_then(Value::as_bool) == Some(true) {
                    Ok(data)
                } else {
                    Err(BaresipError::CommandFailed {
                        command: command.to_owned(),
                        params: params.to_owned(),
                        data,
                    })
                };
            }
        }
    }

    /// Waits until the account's registration is reported `OK` by `reginfo`.
    pub fn wait_registered(&mut self, timeout: Duration) -> Result<(), BaresipError> {
        let deadline = Instant::now() + timeout;
        let aor = self.options.aor();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let info = self.command("reginfo", "", left.max(Duration::from_millis(100)))?;
            if info.lines().any(|l| l.contains(&aor) && l.contains("OK")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BaresipError::Timeout {
                    what: format!("registration of {aor} (reginfo: {info:?})"),
                    waited: timeout,
                });
            }
            self.check_alive()?;
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Calls `uri`.
    pub fn dial(&mut self, uri: &str) -> Result<(), BaresipError> {
        self.command("dial", uri, Duration::from_secs(5)).map(drop)
    }

    /// Hangs up the current call.
    pub fn hangup(&mut self) -> Result<(), BaresipError> {
        self.command("hangup", "", Duration::from_secs(5)).map(drop)
    }

    /// The first event (earlier unclaimed ones included) whose type is one of `kinds`.
    pub fn wait_event(&mut self, kinds: &[&str], timeout: Duration) -> Result<Event, BaresipError> {
        if let Some(at) = self
            .backlog
            .iter()
            .position(|e| kinds.contains(&e.kind.as_str()))
        {
            if let Some(event) = self.backlog.remove(at) {
                return Ok(event);
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.next_frame(deadline, || format!("event {kinds:?}"))?;
            if frame.get("event").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let event = Event::from_json(frame);
            if kinds.contains(&event.kind.as_str()) {
                return Ok(event);
            }
            self.backlog.push_back(event);
        }
    }

    /// Every frame received so far, in order (for failure reports).
    pub fn control_transcript(&self) -> &[String] {
        &self.seen
    }

    /// The log so far (console output with the SIP trace).
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map_or_else(
            |e| format!("<cannot read {}: {e}>", self.log_path.display()),
            |bytes| String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn check_alive(&mut self) -> Result<(), BaresipError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(BaresipError::Exited { status }),
            Ok(None) => Ok(()),
            Err(source) => Err(BaresipError::Spawn { source }),
        }
    }

    fn next_frame(
        &mut self,
        deadline: Instant,
        what: impl Fn() -> String,
    ) -> Result<Value, BaresipError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.check_alive()?;
                return Err(BaresipError::Timeout {
                    what: what(),
                    waited: Duration::ZERO,
                });
            }
            match self
                .frames
                .recv_timeout(left.min(Duration::from_millis(250)))
            {
                Ok(frame) => {
                    let frame = frame?;
                    self.seen.push(frame.to_string());
                    return Ok(frame);
                }
                Err(RecvTimeoutError::Timeout) => self.check_alive()?,
                Err(RecvTimeoutError::Disconnected) => {
                    self.check_alive()?;
                    return Err(BaresipError::Control {
                        addr: self.control_addr,
                        source: io::ErrorKind::UnexpectedEof.into(),
                    });
                }
            }
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP port nobody listens on right now (bound, read, released).
fn free_tcp_port() -> Result<SocketAddr, BaresipError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .map_err(|source| BaresipError::Control { addr, source })
}

fn connect_control(
    child: &mut Child,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, BaresipError> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => return Ok(stream),
            Err(source) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(BaresipError::Exited { status });
                }
                if Instant::now() >= deadline {
                    return Err(BaresipError::Control { addr, source });
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Reads frames on a thread, as JSON objects, until the connection closes.
fn spawn_reader(
    control: &TcpStream,
    addr: SocketAddr,
) -> Result<Receiver<Result<Value, BaresipError>>, BaresipError> {
    let mut stream = control
        .try_clone()
        .map_err(|source| BaresipError::Control { addr, source })?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = NetstringReader::default();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            reader.push(&chunk[..n]);
            loop {
                let parsed = match reader.next_frame() {
                    Ok(None) => break,
                    Ok(Some(payload)) => {
                        serde_json::from_slice::<Value>(&payload).map_err(|e| BaresipError::Frame {
                            reason: format!("{e}: {}", String::from_utf8_lossy(&payload)),
                        })
                    }
                    Err(e) => Err(e),
                };
                let fatal = parsed.is_err();
                if tx.send(parsed).is_err() || fatal {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            user: "alice".to_owned(),
            registrar: SocketAddr::from(([127, 0, 0, 1], 5061)),
            media_encryption: MediaEncryption::SrtpMandatory,
            answer_mode: AnswerMode::Auto,
            rtp_ports: 33_200..=33_299,
            audio_source: PathBuf::from("/tmp/tone.wav"),
            ca_file: Some(PathBuf::from("/tmp/ca.pem")),
        }
    }

    #[test]
    fn account_line_registers_over_tls_with_mandatory_srtp() {
        assert_eq!(
            options().account_line(),
            "<sip:alice@127.0.0.1:5061;transport=tls>;regint=600;mediaenc=srtp-mand;\
             answermode=auto"
        );
    }

    #[test]
    fn config_names_every_module_and_the_control_port() {
        let text = options().config_file(
            "/usr/lib/baresip/modules",
            SocketAddr::from(([127, 0, 0, 1], 4444)),
        );
        for expected in [
            "sip_listen              127.0.0.1:0\n",
            "sip_cafile              /tmp/ca.pem\n",
            "audio_source            aufile,/tmp/tone.wav\n",
            "rtp_ports               33200-33299\n",
            "module                  srtp.so\n",
            "module_app              ctrl_tcp.so\n",
            "ctrl_tcp_listen         127.0.0.1:4444\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        for module in REQUIRED_MODULES {
            assert!(text.contains(module), "{module} not loaded");
        }
    }

    #[test]
    fn netstrings_split_across_reads_and_back_to_back() {
        let mut reader = NetstringReader::default();
        reader.push(b"11:{\"ok\":tr");
        assert_eq!(reader.next_frame().unwrap(), None);
        reader.push(b"ue},2:{},");
        assert_eq!(reader.next_frame().unwrap().unwrap(), b"{\"ok\":true}");
        assert_eq!(reader.next_frame().unwrap().unwrap(), b"{}");
        assert_eq!(reader.next_frame().unwrap(), None);
    }

    #[test]
    fn netstrings_round_trip() {
        let mut reader = NetstringReader::default();
        reader.push(&netstring(b"{\"event\":true}"));
        reader.push(&netstring(b""));
        assert_eq!(reader.next_frame().unwrap().unwrap(), b"{\"event\":true}");
        assert_eq!(reader.next_frame().unwrap().unwrap(), b"");
        assert_eq!(reader.next_frame().unwrap(), None);
    }

    #[test]
    fn malformed_netstrings_are_refused() {
        for bad in [
            &b"x:{},"[..],
            b"3:abc;",
            b":abc,",
            b"99999999:",
            b"12345678",
        ] {
            let mut reader = NetstringReader::default();
            reader.push(bad);
            assert!(
                matches!(reader.next_frame(), Err(BaresipError::Frame { .. })),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tone_wav_has_a_pcm_header_and_the_right_length() {
        let path = std::env::temp_dir().join(format!("baresip-tone-{}.wav", std::process::id()));
        write_tone_wav(&path, 1, 440).unwrap();
        let wav = fs::read(&path).unwrap();
        let _ = fs::remove_file(&path);
        assert_eq!(
            wav[..44],
            crate::hex(
                "52494646 a43e0000 57415645 666d7420 10000000 0100 0100 401f0000 803e0000
                 0200 1000 64617461 803e0000"
            )[..]
        );
        assert_eq!(wav.len(), 44 + 16_000);
        // The first samples rise from zero: a tone, not silence.
        assert_eq!(&wav[44..46], &[0, 0]);
        assert!(i16::from_le_bytes([wav[46], wav[47]]) > 0);
    }
}
