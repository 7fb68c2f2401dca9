//! `cargo xtask bench ng`: NG call handling per second — one `offer`, one `answer` and one
//! `delete` per call, the way Kamailio's `rtpengine_manage()` sends them — against
//! sip-controller's NG server (programming relayd over HTTP) and against sipwise rtpengine 10.5
//! (userspace, no kernel module), in the same run, with the same client.
//!
//! Placement on the two cores: the server under test gets `--server-cpu` — for us
//! sip-controller *and* relayd (so both sides of the comparison get one core's budget; relayd
//! can be moved with `--relayd-cpu`), for rtpengine the whole daemon (`--num-threads=1`); the
//! client runs on `--client-cpu`. The server CPU time per call is read from `/proc/<pid>/stat`
//! (per process: where our time goes between sip-controller and relayd).
//!
//! The client is closed-loop: `N` calls in flight, each a strict offer → answer → delete
//! sequence over UDP (a new call starts as soon as one is deleted), every request with a fresh
//! cookie. `N` ramps over `--concurrency` for `--step-secs` each; a step is clean when every
//! request got `result: ok` (offers and answers with an `sdp`) within `--timeout-ms`, and the
//! max clean rate is the best clean step's completed calls per second. The ramp stops at the
//! first step with an error. Two series: plain RTP both sides, and an SDES-SRTP offer
//! presented plain (`transport-protocol=RTP/AVP`, transcrypting), which adds key generation
//! and the crypto negotiation.
//!
//! Both servers run with `delete-delay` 0 and logging at warnings; relayd's port quarantine is
//! 0 (rtpengine has none), so neither runs out of ports at thousands of calls per second.

// Rates and counts far below 2^52: float conversions are exact enough.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::{
    fmt::Write as _,
    io,
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{run_step, workspace_root};

/// Options of `bench ng`.
#[derive(Debug, Args)]
pub struct NgBench {
    /// CPU for the server under test (sip-controller and relayd, or rtpengine).
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// CPU for relayd (default: `--server-cpu`, so ours gets one core, as rtpengine does).
    #[arg(long)]
    relayd_cpu: Option<usize>,
    /// CPU for the client.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// Seconds per ramp step.
    #[arg(long, default_value_t = 4)]
    step_secs: u64,
    /// Calls in flight per step, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64,128")]
    concurrency: Vec<usize>,
    /// A request unanswered this long is an error.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Only this series (`plain` or `srtp`).
    #[arg(long)]
    only: Option<String>,
    /// Skip rtpengine (ours alone).
    #[arg(long)]
    skip_rtpengine: bool,
    /// Skip sip-controller with a separate relayd (the embedded relay and rtpengine only).
    #[arg(long)]
    skip_http: bool,
}

const RELAYD_API: &str = "127.0.0.1:9792";
const OUR_NG: &str = "127.0.0.1:9223";
const RTPENGINE_NG: &str = "127.0.0.1:9224";
const TOKEN: &str = "bench-token-0123456789abcdef";
/// Media ports of both relays: below the ephemeral range (32768+), where the client lives, and
/// above the control ports. 5000 pairs: far more than the calls in flight (at most 2 x 128),
/// and within what relayd keeps bound between calls under this machine's open-file limit
/// (20 000 here; relay-userspace `socket_pool`: twice the pairs plus headroom).
const PORT_MIN: u16 = 10_000;
const PORT_MAX: u16 = 20_000;
/// The SDES key of the SRTP series' offers (30 bytes of key and salt, base64).
const OFFER_KEY: &str = "CzBVep/E6Q4zWH2ix+wRNluApcrvFDleg6jN8hc8";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// sip-controller programming a separate relayd over HTTP.
    Ours,
    /// sip-controller with the relay in its process (`[relay] mode = "embedded"`).
    OursEmbedded,
    Rtpengine,
}

impl Server {
    const fn name(self) -> &'static str {
        match self {
            Self::Ours => "sip-controller NG + relayd",
            Self::OursEmbedded => "sip-controller NG, relay embedded",
            Self::Rtpengine => "sipwise rtpengine 10.5 (userspace)",
        }
    }

    /// The server's processes, in the order [`start_server`] starts them.
    const fn processes(self) -> &'static [&'static str] {
        match self {
            Self::Ours => &["relayd", "sip-controller"],
            Self::OursEmbedded => &["sip-controller"],
            Self::Rtpengine => &["rtpengine"],
        }
    }

    fn ng(self) -> SocketAddr {
        match self {
            Self::Ours | Self::OursEmbedded => OUR_NG,
            Self::Rtpengine => RTPENGINE_NG,
        }
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 2223)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Series {
    Plain,
    Srtp,
}

impl Series {
    const fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain RTP",
            Self::Srtp => "SDES-SRTP offer -> RTP",
        }
    }
}

#[derive(Clone, Debug)]
struct Step {
    concurrency: usize,
    calls: u64,
    errors: u64,
    first_error: Option<String>,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Server CPU seconds per second of the step (1.0 = one core busy).
    server_busy: f64,
    /// Server CPU microseconds per completed call.
    cpu_us_per_call: f64,
    /// The same, per server process (sip-controller and relayd; rtpengine).
    cpu_us_per_call_by_process: Vec<f64>,
}

impl Step {
    fn clean(&self) -> bool {
        self.errors == 0 && self.calls > 0
    }

    /// `sip-controller 200 + relayd 70`.
    fn split(&self, server: Server) -> String {
        server
            .processes()
            .iter()
            .zip(&self.cpu_us_per_call_by_process)
            .rev()
            .map(|(name, us)| format!("{name} {us:.0}"))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

pub fn run(bench: &NgBench) -> Result<()> {
    let root = workspace_root();
    run_step(
        "cargo build --release (sip-controller, relayd)",
        Command::new("cargo").current_dir(&root).args([
            "build",
            "--release",
            "--locked",
            "-p",
            "sip-controller",
            "--bin",
            "sip-controller",
            "-p",
            "relay-userspace",
            "--bin",
            "relayd",
        ]),
    )?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    pin_self(bench.client_cpu)?;
    let series: Vec<Series> = match bench.only.as_deref() {
        None => vec![Series::Plain, Series::Srtp],
        Some("plain") => vec![Series::Plain],
        Some("srtp") => vec![Series::Srtp],
        Some(other) => bail!("--only {other}: expected plain or srtp"),
    };
    let mut servers = Vec::new();
    if !bench.skip_http {
        servers.push(Server::Ours);
    }
    servers.push(Server::OursEmbedded);
    if !bench.skip_rtpengine {
        servers.push(Server::Rtpengine);
    }
    let mut results: Vec<(Server, Series, Vec<Step>)> = Vec::new();
    for &server in &servers {
        println!("==> {}", server.name());
        let guards = start_server(server, bench, &root.join("target/release"), &out_dir)?;
        let pids: Vec<u32> = guards.iter().map(|g| g.0.id()).collect();
        for &s in &series {
            let steps = ramp(server, s, bench, &pids)?;
            results.push((server, s, steps));
        }
        drop(guards);
    }
    print_tables(bench, &results);
    std::fs::write(out_dir.join("ng.json"), json(&results))?;
    println!("\nresults: {}", out_dir.join("ng.json").display());
    Ok(())
}

/// Pins this process (the client) to `cpu`.
fn pin_self(cpu: usize) -> Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("--client-cpu {cpu} is out of range");
    }
    // SAFETY: cpu_set_t is plain data and zeroed is its empty set; CPU_SET writes inside it (cpu
    // is below CPU_SETSIZE); sched_setaffinity reads it for this thread.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if result != 0 {
        bail!(
            "pinning the client to CPU {cpu}: {}",
            io::Error::last_os_error()
        );
    }
    Ok(())
}

fn start_server(
    server: Server,
    bench: &NgBench,
    release: &Path,
    out_dir: &Path,
) -> Result<Vec<Guard>> {
    let cpu = bench.server_cpu.to_string();
    let mut guards = Vec::new();
    match server {
        Server::Ours => {
            let relayd_cpu = bench.relayd_cpu.unwrap_or(bench.server_cpu).to_string();
            let relayd_config = write_relayd_config(out_dir, "ng-relayd.toml", &relayd_cpu)?;
            let relayd = Command::new("taskset")
                .args(["-c", &relayd_cpu])
                .arg(release.join("relayd"))
                .arg("--config")
                .arg(&relayd_config)
                .env("RELAYD_TOKEN", TOKEN)
                .env("RELAYD_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .context("starting relayd")?;
            guards.push(Guard(relayd));
            wait_for("relayd", || {
                std::net::TcpStream::connect(RELAYD_API).is_ok()
            })?;
            let relay = format!("url = \"http://{RELAYD_API}\"\ntoken_file = \"/dev/null\"\n");
            guards.push(start_controller(
                &cpu,
                release,
                out_dir,
                "ng-sip-controller.toml",
                &relay,
            )?);
        }
        Server::OursEmbedded => {
            // The same relay settings as the separate relayd, its datapath worker on the
            // server's core.
            let relayd_config = write_relayd_config(out_dir, "ng-embedded-relayd.toml", &cpu)?;
            let relay = format!(
                "mode = \"embedded\"\nrelayd_config = \"{}\"\n",
                relayd_config.display()
            );
            guards.push(start_controller(
                &cpu,
                release,
                out_dir,
                "ng-sip-controller-embedded.toml",
                &relay,
            )?);
        }
        Server::Rtpengine => {
            let rtpengine = Command::new("taskset")
                .args(["-c", &cpu, "rtpengine"])
                .args([
                    "--config-file=none",
                    "--foreground",
                    "--table=-1",
                    "--interface=127.0.0.1",
                    &format!("--listen-ng={RTPENGINE_NG}"),
                    &format!("--port-min={PORT_MIN}"),
                    &format!("--port-max={PORT_MAX}"),
                    "--delete-delay=0",
                    "--num-threads=1",
                    "--log-level=3",
                    "--log-stderr",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context(
                    "starting rtpengine (Debian rtpengine-daemon; `cargo xtask setup` installs it)",
                )?;
            guards.push(Guard(rtpengine));
        }
    }
    let ng = server.ng();
    wait_for(server.name(), || ping(ng))?;
    Ok(guards)
}

/// Writes relayd's configuration for both of our servers (loopback API, no quarantine, the
/// bench's media range, one datapath worker on `cpu`) to `out_dir/name`.
fn write_relayd_config(out_dir: &Path, name: &str, cpu: &str) -> Result<std::path::PathBuf> {
    let path = out_dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[http]\nlisten = \"{RELAYD_API}\"\ntoken_file = \"/dev/null\"\n\n\
             [media]\nport_quarantine_secs = 0\n\n\
             [[interface]]\nname = \"default\"\naddress = \"127.0.0.1\"\n\
             port_min = {PORT_MIN}\nport_max = {PORT_MAX}\n\n\
             [datapath]\nworkers = 1\ncpus = [{cpu}]\n"
        ),
    )?;
    Ok(path)
}

/// Starts sip-controller on `cpu` with its NG server on [`OUR_NG`] and `relay` as its
/// `[relay]` table (configuration written to `out_dir/name`).
fn start_controller(
    cpu: &str,
    release: &Path,
    out_dir: &Path,
    name: &str,
    relay: &str,
) -> Result<Guard> {
    let config = out_dir.join(name);
    std::fs::write(
        &config,
        format!(
            "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\ntls = []\n\n\
             [tls]\nstate_dir = \"{state}\"\n\n\
             [relay]\n{relay}\n\
             [api]\nlisten = \"127.0.0.1:0\"\n\n\
             [ng]\nudp = [\"{OUR_NG}\"]\ndelete_delay_secs = 0\n",
            state = out_dir.join("ng-tls").display(),
        ),
    )?;
    let controller = Command::new("taskset")
        .args(["-c", cpu])
        .arg(release.join("sip-controller"))
        .arg("--config")
        .arg(&config)
        .env("RELAYD_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .env("RELAYD_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting sip-controller")?;
    Ok(Guard(controller))
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what} did not come up within 15 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Whether `ng` answers an NG `ping` with `pong`.
fn ping(ng: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let cookie = format!("ping{}", std::process::id());
    let mut request = cookie.clone().into_bytes();
    request.extend_from_slice(b" d7:command4:pinge");
    if socket.send_to(&request, ng).is_err() {
        return false;
    }
    let mut buf = [0u8; 256];
    socket.recv(&mut buf).is_ok_and(|n| {
        buf[..n].starts_with(cookie.as_bytes()) && buf[..n].windows(4).any(|w| w == b"pong")
    })
}

// ----- the NG messages --------------------------------------------------------------------

/// A bencode item of a request.
enum Item<'a> {
    Str(&'a str),
    List(&'a [&'a str]),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let _ = write!(Bytes(out), "{}:", s.len());
    out.extend_from_slice(s.as_bytes());
}

/// `fmt::Write` into a byte vector.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `<cookie> d...e` with the keys sorted (bencode dictionaries are ordered by key).
fn message(cookie: &str, entries: &mut [(&str, Item<'_>)]) -> Vec<u8> {
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(cookie.as_bytes());
    out.extend_from_slice(b" d");
    for (key, item) in entries.iter() {
        put_str(&mut out, key);
        match item {
            Item::Str(s) => put_str(&mut out, s),
            Item::List(items) => {
                out.push(b'l');
                for s in *items {
                    put_str(&mut out, s);
                }
                out.push(b'e');
            }
        }
    }
    out.push(b'e');
    out
}

fn sdp(port: u32, proto: &str, crypto: bool) -> String {
    let mut sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} {proto} 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    );
    if crypto {
        let _ = write!(
            sdp,
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{OFFER_KEY}\r\n"
        );
    }
    sdp
}

/// What Kamailio's `rtpengine_manage("replace-origin replace-session-connection ICE=remove")`
/// sends for the three steps of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Offer,
    Answer,
    Delete,
}

fn request(series: Series, phase: Phase, cookie: &str, call: u64, slot: usize) -> Vec<u8> {
    let call_id = format!("bench-{call}@ng");
    let from_tag = format!("f{call}");
    let to_tag = format!("t{call}");
    let replace: &[&str] = &["origin", "session-connection"];
    let received: &[&str] = &["IP4", "127.0.0.1"];
    let base = 10_000 + 4 * slot as u32;
    match phase {
        Phase::Offer => {
            let (proto, crypto) = match series {
                Series::Plain => ("RTP/AVP", false),
                Series::Srtp => ("RTP/SAVP", true),
            };
            let body = sdp(base, proto, crypto);
            let mut entries = vec![
                ("command", Item::Str("offer")),
                ("call-id", Item::Str(&call_id)),
                ("from-tag", Item::Str(&from_tag)),
                ("sdp", Item::Str(&body)),
                ("replace", Item::List(replace)),
                ("ICE", Item::Str("remove")),
                ("received-from", Item::List(received)),
            ];
            if series == Series::Srtp {
                entries.push(("transport-protocol", Item::Str("RTP/AVP")));
            }
            message(cookie, &mut entries)
        }
        Phase::Answer => {
            let body = sdp(base + 2, "RTP/AVP", false);
            message(
                cookie,
                &mut [
                    ("command", Item::Str("answer")),
                    ("call-id", Item::Str(&call_id)),
                    ("from-tag", Item::Str(&from_tag)),
                    ("to-tag", Item::Str(&to_tag)),
                    ("sdp", Item::Str(&body)),
                    ("replace", Item::List(replace)),
                    ("ICE", Item::Str("remove")),
                    ("received-from", Item::List(received)),
                ],
            )
        }
        Phase::Delete => message(
            cookie,
            &mut [
                ("command", Item::Str("delete")),
                ("call-id", Item::Str(&call_id)),
                ("from-tag", Item::Str(&from_tag)),
                ("to-tag", Item::Str(&to_tag)),
            ],
        ),
    }
}

/// Checks a reply body: `result` is `ok` (bencode dictionaries are key-ordered, so the
/// `result` key is followed by its value), and offers and answers carry an `sdp`.
fn check_reply(phase: Phase, body: &[u8]) -> Result<(), String> {
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    if !contains(b"6:result2:ok") {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(format!("{phase:?}: {text}"));
    }
    if phase != Phase::Delete && !contains(b"3:sdp") {
        return Err(format!("{phase:?}: ok without an sdp"));
    }
    Ok(())
}

// ----- the client -------------------------------------------------------------------------

/// One call in flight.
#[derive(Clone, Debug)]
struct Slot {
    call: u64,
    phase: Phase,
    cookie: u64,
    sent: Instant,
    busy: bool,
}

/// CPU time (user + system, every thread) of each of `pids`, in seconds.
fn cpu_seconds_each(pids: &[u32]) -> Vec<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = f64::from(u32::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100));
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the parenthesised name; utime and stime are fields 14 and 15.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (ticks(11) + ticks(12)) / hz.max(1.0)
        })
        .collect()
}

fn ramp(server: Server, series: Series, bench: &NgBench, pids: &[u32]) -> Result<Vec<Step>> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("client socket")?;
    socket.connect(server.ng()).context("client connect")?;
    socket.set_read_timeout(Some(Duration::from_millis(1)))?;
    large_receive_buffer(&socket);
    let mut next_call = match series {
        Series::Plain => 1_000_000_000,
        Series::Srtp => 2_000_000_000,
    };
    let mut next_cookie: u64 = u64::from(std::process::id()) << 32
        | match series {
            Series::Plain => 0,
            Series::Srtp => 1 << 31,
        };
    let mut steps = Vec::new();
    for &concurrency in &bench.concurrency {
        let step = run_load(
            &socket,
            series,
            concurrency.max(1),
            Duration::from_secs(bench.step_secs),
            Duration::from_millis(bench.timeout_ms),
            pids,
            (&mut next_call, &mut next_cookie),
        )?;
        println!(
            "    {:<24} N={:<4} {:>8.0} calls/s  p50 {:>6.2} ms  p99 {:>6.2} ms  server CPU {:>4.0}%  {:>6.0} us/call ({})  errors {}{}",
            series.name(),
            step.concurrency,
            step.rate,
            step.p50_ms,
            step.p99_ms,
            step.server_busy * 100.0,
            step.cpu_us_per_call,
            step.split(server),
            step.errors,
            step.first_error
                .as_deref()
                .map_or_else(String::new, |e| format!(" (first: {e})")),
        );
        let clean = step.clean();
        steps.push(step);
        if !clean {
            break;
        }
    }
    Ok(steps)
}

/// Room for every reply of the largest step at once (a `delete` reply with statistics is a
/// few KiB of kernel memory): replies dropped by the client's own socket would be counted
/// against the server.
fn large_receive_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd as _;
    let bytes: libc::c_int = 16 << 20;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: the fd is the open socket; the option value is a c_int of the given size.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const bytes).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result == 0 {
            return;
        }
    }
}

/// One step: `concurrency` calls in flight for `duration`, then the calls in flight are
/// finished (not counted) so the next step starts with no call left behind.
#[allow(
    clippy::too_many_lines,
    reason = "one closed loop: send, time out, receive, advance"
)]
fn run_load(
    socket: &UdpSocket,
    series: Series,
    concurrency: usize,
    duration: Duration,
    timeout: Duration,
    pids: &[u32],
    (next_call, next_cookie): (&mut u64, &mut u64),
) -> Result<Step> {
    let mut slots: Vec<Slot> = Vec::with_capacity(concurrency);
    let mut latencies: Vec<u32> = Vec::new();
    let (mut calls, mut errors) = (0u64, 0u64);
    let mut first_error: Option<String> = None;
    let mut buf = vec![0u8; 65_536];
    let cpu_before = cpu_seconds_each(pids);
    let started = Instant::now();
    let end = started + duration;
    let send = |slot: &mut Slot, next_cookie: &mut u64| -> Result<()> {
        *next_cookie += 1;
        slot.cookie = *next_cookie;
        slot.sent = Instant::now();
        let cookie = format!("{:x}", slot.cookie);
        let index = slot.call as usize % 4096;
        socket
            .send(&request(series, slot.phase, &cookie, slot.call, index))
            .context("client send")?;
        Ok(())
    };
    for _ in 0..concurrency {
        *next_call += 1;
        let mut slot = Slot {
            call: *next_call,
            phase: Phase::Offer,
            cookie: 0,
            sent: started,
            busy: true,
        };
        send(&mut slot, next_cookie)?;
        slots.push(slot);
    }
    let mut measured_until = None;
    let mut cpu_in_window: Vec<f64> = vec![0.0; pids.len()];
    let used = |before: &[f64]| -> Vec<f64> {
        cpu_seconds_each(pids)
            .iter()
            .zip(before)
            .map(|(after, before)| after - before)
            .collect()
    };
    let drain_deadline = end + timeout + Duration::from_millis(100);
    while slots.iter().any(|s| s.busy) {
        let now = Instant::now();
        if measured_until.is_none() && now >= end {
            measured_until = Some(now);
            cpu_in_window = used(&cpu_before);
        }
        if now > drain_deadline {
            break;
        }
        // Requests unanswered too long: an error; that call is abandoned.
        for slot in slots.iter_mut().filter(|s| s.busy) {
            if now.duration_since(slot.sent) > timeout {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{:?}: no reply", slot.phase));
                if now < end {
                    *next_call += 1;
                    slot.call = *next_call;
                    slot.phase = Phase::Offer;
                    send(slot, next_cookie)?;
                } else {
                    slot.busy = false;
                }
            }
        }
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e).context("client receive"),
        };
        let reply = &buf[..len];
        let Some(space) = reply.iter().position(|&b| b == b' ') else {
            continue;
        };
        let Some(cookie) = std::str::from_utf8(&reply[..space])
            .ok()
            .and_then(|c| u64::from_str_radix(c, 16).ok())
        else {
            continue;
        };
        let Some(slot) = slots.iter_mut().find(|s| s.busy && s.cookie == cookie) else {
            continue; // a late reply to an abandoned request
        };
        let rtt = slot.sent.elapsed();
        latencies.push(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
        let in_window = measured_until.is_none();
        match check_reply(slot.phase, &reply[space + 1..]) {
            Ok(()) => {}
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
        // An error still moves the call on (a failed offer is deleted like a real proxy would).
        slot.phase = match slot.phase {
            Phase::Offer => Phase::Answer,
            Phase::Answer => Phase::Delete,
            Phase::Delete if in_window => {
                calls += 1;
                *next_call += 1;
                slot.call = *next_call;
                Phase::Offer
            }
            Phase::Delete => {
                // After the window: the call is finished, no new one starts.
                slot.busy = false;
                continue;
            }
        };
        send(slot, next_cookie)?;
    }
    let measured = measured_until
        .unwrap_or_else(Instant::now)
        .duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    if measured_until.is_none() {
        cpu_in_window = used(&cpu_before);
    }
    let cpu: f64 = cpu_in_window.iter().sum();
    let per_call = |seconds: f64| {
        if calls > 0 {
            seconds * 1e6 / calls as f64
        } else {
            f64::NAN
        }
    };
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |&us| f64::from(us) / 1000.0)
    };
    Ok(Step {
        concurrency,
        calls,
        errors,
        first_error,
        rate: calls as f64 / measured,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        server_busy: cpu / measured,
        cpu_us_per_call: per_call(cpu),
        cpu_us_per_call_by_process: cpu_in_window.iter().map(|&s| per_call(s)).collect(),
    })
}

// ----- report -----------------------------------------------------------------------------

fn best(steps: &[Step]) -> Option<&Step> {
    steps
        .iter()
        .filter(|s| s.clean())
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
}

fn print_tables(bench: &NgBench, results: &[(Server, Series, Vec<Step>)]) {
    println!();
    let relayd = match bench.relayd_cpu {
        Some(cpu) if cpu != bench.server_cpu => format!("relayd on CPU {cpu}"),
        _ => "relayd with it".to_owned(),
    };
    println!(
        "offer + answer + delete per call over NG/UDP on loopback; server on CPU {} \
         (sip-controller, {relayd}; rtpengine --num-threads=1), closed-loop client on CPU {}, \
         {} s per step, N calls in flight = {:?}; max = best step with zero errors",
        bench.server_cpu, bench.client_cpu, bench.step_secs, bench.concurrency
    );
    println!();
    println!(
        "| server | series | max clean calls/s | at N | p50 ms | p99 ms | server CPU at max | server CPU us/call | by process |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    for (server, series, steps) in results {
        match best(steps) {
            Some(s) => println!(
                "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.0} % | {:.0} | {} |",
                server.name(),
                series.name(),
                s.rate,
                s.concurrency,
                s.p50_ms,
                s.p99_ms,
                s.server_busy * 100.0,
                s.cpu_us_per_call,
                s.split(*server)
            ),
            None => println!(
                "| {} | {} | no clean step | - | - | - | - | - | - |",
                server.name(),
                series.name()
            ),
        }
    }
    println!();
    for series in [Series::Plain, Series::Srtp] {
        let rate = |server: Server| {
            results
                .iter()
                .find(|(sv, se, _)| *sv == server && *se == series)
                .and_then(|(_, _, steps)| best(steps))
                .map(|s| (s.rate, s.cpu_us_per_call))
        };
        for ours_server in [Server::Ours, Server::OursEmbedded] {
            if let (Some(ours), Some(theirs)) = (rate(ours_server), rate(Server::Rtpengine)) {
                println!(
                    "{} / rtpengine, {}: {:.2}x the max clean rate; server CPU per call {:.0} \
                     vs {:.0} us ({:.2}x rtpengine's)",
                    ours_server.name(),
                    series.name(),
                    ours.0 / theirs.0,
                    ours.1,
                    theirs.1,
                    ours.1 / theirs.1
                );
            }
        }
    }
}

fn json(results: &[(Server, Series, Vec<Step>)]) -> String {
    let runs: Vec<serde_json::Value> = results
        .iter()
        .map(|(server, series, steps)| {
            serde_json::json!({
                "server": server.name(),
                "series": series.name(),
                "max_clean_calls_per_sec": best(steps).map(|s| s.rate),
                "steps": steps.iter().map(|s| serde_json::json!({
                    "concurrency": s.concurrency,
                    "calls": s.calls,
                    "errors": s.errors,
                    "first_error": s.first_error,
                    "calls_per_sec": s.rate,
                    "p50_ms": s.p50_ms,
                    "p99_ms": s.p99_ms,
                    "server_cpu_busy": s.server_busy,
                    "server_cpu_us_per_call": s.cpu_us_per_call,
                    "server_cpu_us_per_call_by_process": s.cpu_us_per_call_by_process,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "runs": runs })).unwrap_or_default()
}
