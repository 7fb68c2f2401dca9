//! `cargo xtask bench xdp`: every relay on the same veth topology, measured in one run.
//!
//! For each scenario the bench builds a fresh caller/relay/callee bed (`crate::topology`, one
//! queue per veth end), starts the relay under test in the relay namespace pinned to the relay
//! CPU, sets up `streams` calls, and drives one direction (caller -> relay -> callee) with the
//! AF_XDP generator ([`generator`]) pinned to the generator CPU:
//!
//! - the highest rate with at most 0.1 % loss (doubling, then bisecting; a step whose
//!   transmitted rate falls short of the offered one marks the generator's own limit);
//! - one-way latency p50/p99 at half that rate;
//! - CPU per packet at a fixed rate every relay carries: busy time of the relay CPU
//!   (`/proc/stat`) over packets delivered.
//!
//! The relay's veth ends run threaded NAPI with their NAPI threads pinned to the relay CPU, so
//! everything the relay costs (XDP, the kernel stack, AF_XDP workers, relay processes) lands on
//! that CPU; the callee's end runs its NAPI thread on the generator CPU. NAPI threads run
//! `SCHED_FIFO`, as softirqs effectively do. XDP scenarios are also
//! driven by the in-kernel generator (`BPF_PROG_RUN` live frames of
//! [`relay_common::BENCH_TX_PROGRAM_NAME`]), which outruns AF_XDP TX: that is how the `XDP_DROP`
//! ceiling of the relay's veth and XDP plain forwarding are compared.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "rates, fractions and ratios of a benchmark report"
)]

pub mod generator;
mod null_forwarder;

use std::{
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use relay_common::{
    BENCH_DROP_PROGRAM_NAME, BENCH_REDIRECT_PROGRAM_NAME, BENCH_TO_XSK_PROGRAM_NAME,
    BENCH_TX_PROGRAM_NAME,
};
use relay_userspace::{
    afxdp::xsk::XskSocket,
    xdp::{AttachMode, RelayXdp},
};
use serde::Serialize;
use srtp::{Context, Suite};

use self::generator::{Ends, Generator, StepReport, StreamSpec};
use crate::{
    loadgen::{
        self,
        control::{ApiController, CallPlan, Controller, NgController},
        http::Token,
    },
    netns::{run_ok, Netns},
    topology::{Topology, CALLEE, CALLER, RELAY_CALLER_SIDE, TOKEN},
};

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    // (serde names match `Scenario::name`)
    /// The relay's veth with a program that drops everything: the ceiling.
    XdpDrop,
    /// One thread, one UDP socket: `recv_from`, `send_to`.
    KernelUdpRelay,
    /// relayd's socket datapath, plain RTP.
    SocketPlain,
    /// relayd's socket datapath, SRTP in (decrypted to plain RTP).
    SocketSrtp,
    /// relayd's socket datapath, plain RTP in, SRTP out (the other direction of a
    /// transcrypted call).
    SocketRtpToSrtp,
    /// relayd's XDP datapath, plain RTP forwarded in XDP.
    XdpForward,
    /// The XDP forwarding floor: frames redirected, untouched, to the callee's side by a
    /// program with no work in it (`relay_bench_redirect`).
    XdpNullRedirect,
    /// relayd's XDP datapath, SRTP -> RTP through the AF_XDP workers.
    #[serde(rename = "afxdp_srtp")]
    AfXdpSrtp,
    /// relayd's XDP datapath, RTP -> SRTP through the AF_XDP workers.
    #[serde(rename = "afxdp_rtp_to_srtp")]
    AfXdpRtpToSrtp,
    /// The AF_XDP floor: frames from the caller's side go out to the callee's side untouched,
    /// through the AF_XDP worker loop with no work in it ([`null_forwarder`]).
    #[serde(rename = "afxdp_null_forward")]
    AfXdpNullForward,
    /// sipwise rtpengine userspace, plain RTP.
    RtpenginePlain,
    /// sipwise rtpengine userspace, SRTP in (decrypted to plain RTP).
    RtpengineSrtp,
    /// sipwise rtpengine userspace, plain RTP in, SRTP out.
    RtpengineRtpToSrtp,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Self; 13] = [
        Self::XdpDrop,
        Self::KernelUdpRelay,
        Self::SocketPlain,
        Self::SocketSrtp,
        Self::SocketRtpToSrtp,
        Self::XdpForward,
        Self::XdpNullRedirect,
        Self::AfXdpSrtp,
        Self::AfXdpRtpToSrtp,
        Self::AfXdpNullForward,
        Self::RtpenginePlain,
        Self::RtpengineSrtp,
        Self::RtpengineRtpToSrtp,
    ];

    /// Command-line and JSON name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::XdpDrop => "xdp_drop",
            Self::KernelUdpRelay => "kernel_udp_relay",
            Self::SocketPlain => "socket_plain",
            Self::SocketSrtp => "socket_srtp",
            Self::SocketRtpToSrtp => "socket_rtp_to_srtp",
            Self::XdpForward => "xdp_forward",
            Self::XdpNullRedirect => "xdp_null_redirect",
            Self::AfXdpSrtp => "afxdp_srtp",
            Self::AfXdpRtpToSrtp => "afxdp_rtp_to_srtp",
            Self::AfXdpNullForward => "afxdp_null_forward",
            Self::RtpenginePlain => "rtpengine_plain",
            Self::RtpengineSrtp => "rtpengine_srtp",
            Self::RtpengineRtpToSrtp => "rtpengine_rtp_to_srtp",
        }
    }

    /// One leg of each call is SRTP.
    const fn srtp(self) -> bool {
        self.encrypts()
            || matches!(
                self,
                Self::SocketSrtp | Self::AfXdpSrtp | Self::RtpengineSrtp
            )
    }

    /// The relay encrypts what it forwards (the SRTP leg is the callee's).
    const fn encrypts(self) -> bool {
        matches!(
            self,
            Self::SocketRtpToSrtp | Self::AfXdpRtpToSrtp | Self::RtpengineRtpToSrtp
        )
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown scenario {s:?}"))
    }
}

/// Bench settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Calls (one stream each, caller -> callee).
    pub streams: u32,
    /// CPU of the relay under test (and its NAPI threads).
    pub relay_cpu: usize,
    /// CPU of the generator.
    pub generator_cpu: usize,
    /// Length of one rate step.
    pub step: Duration,
    /// Rate at which CPU per packet is compared.
    pub cpu_rate: u64,
    /// Highest loss a clean step may have.
    pub max_loss: f64,
    /// Scenarios to run.
    pub scenarios: Vec<Scenario>,
    /// relayd's `datapath.xdp_ring_size` in the XDP scenarios.
    pub xdp_ring_size: u32,
    /// relayd's AF_XDP scenario in preferred-busy-polling mode: relayd's
    /// `datapath.xdp_busy_poll`, and the relay's veths get `napi_defer_hard_irqs` and a
    /// `gro_flush_timeout` of [`NAPI_DEFER_NS`].
    pub afxdp_busy_poll: bool,
}

/// One scenario's results.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    /// Which.
    pub scenario: Scenario,
    /// Highest clean rate (packets/s delivered, one direction).
    pub max_clean_pps: f64,
    /// The generator could not offer more: the relay's true maximum is at least this.
    pub generator_limited: bool,
    /// One-way latency at half the max rate, microseconds.
    pub p50_us: f64,
    /// The 99th percentile.
    pub p99_us: f64,
    /// CPU time of the relay CPU per delivered packet at `cpu_rate`, nanoseconds.
    pub cpu_ns_per_packet: f64,
    /// The rate CPU per packet was taken at.
    pub cpu_rate: u64,
    /// Fraction of the relay CPU busy at the max clean rate.
    pub relay_cpu_busy_at_max: f64,
    /// The max clean rate over that fraction: what one relay CPU would carry, assuming cost
    /// per packet stays flat (it falls with batching, so this is conservative when the
    /// generator was the limit).
    pub projected_pps: f64,
    /// With the in-kernel generator (`xdp_drop`): packets/s the relay's veth dropped.
    pub live_frames_pps: Option<f64>,
    /// Every step: offered, sent and received rates, loss.
    pub steps: Vec<StepSummary>,
}

/// One rate step, for the record.
#[derive(Clone, Debug, Serialize)]
pub struct StepSummary {
    /// Offered rate.
    pub offered_pps: u64,
    /// Transmitted rate.
    pub sent_pps: f64,
    /// Delivered rate.
    pub received_pps: f64,
    /// Loss.
    pub loss: f64,
    /// Fraction of the relay CPU busy during the step (and its drain).
    pub relay_cpu_busy: f64,
}

fn summary(r: &StepReport) -> StepSummary {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    StepSummary {
        offered_pps: r.offered_pps,
        sent_pps: r.sent_pps(),
        received_pps: r.received as f64 / secs,
        loss: r.loss(),
        relay_cpu_busy: 0.0,
    }
}

/// Busy jiffies of one CPU (`/proc/stat`: user nice system idle iowait irq softirq steal).
fn cpu_busy_jiffies(cpu: usize) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let prefix = format!("cpu{cpu} ");
    let line = stat
        .lines()
        .find(|l| l.starts_with(&prefix))
        .with_context(|| format!("no {prefix}line in /proc/stat"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    Ok(busy)
}

fn jiffy_ns() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1e9 / hz.max(1) as f64
}

fn pin_self(cpu: usize) -> anyhow::Result<()> {
    relay_userspace::datapath::sys::pin_to_cpu(cpu).context("pinning the generator thread")
}

fn ifindex(ns: &Netns, name: &str) -> u32 {
    ns.run(|| {
        let c = std::ffi::CString::new(name).expect("name");
        // SAFETY: a valid NUL-terminated name.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    })
}

fn mac(ns: &Netns, name: &str) -> anyhow::Result<[u8; 6]> {
    let out = ns.ip(&["-j", "link", "show", "dev", name]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let text = json[0]["address"]
        .as_str()
        .context("no MAC in `ip -j link`")?;
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

/// Runs `sysctl`-like writes and pins NAPI threads: the relay's ends on `relay_cpu`, the
/// callee's on `generator_cpu`.
fn threaded_napi(bed: &Topology, options: &Options, busy_poll: bool) -> anyhow::Result<()> {
    for (ns, dev) in [
        (&bed.relay, &bed.r0),
        (&bed.relay, &bed.r1),
        (&bed.callee, &bed.e1),
    ] {
        // GRO gives veth a NAPI context even without XDP (socket relays), threaded runs it
        // on its own kernel thread.
        run_ok(ns.command("ethtool").args(["-K", dev, "gro", "on"]));
        // A NIC segments UDP GSO sends on the wire; veth would hand the super-packet to the
        // callee whole (one frame to count for many datagrams). Segment in the relay's stack.
        run_ok(
            ns.command("ethtool")
                .args(["-K", dev, "tx-udp-segmentation", "off", "gso", "off"]),
        );
        run_ok(
            ns.command("sh")
                .args(["-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")]),
        );
        if busy_poll && ns.name() == bed.relay.name() {
            // While the AF_XDP worker keeps polling, the NAPI is neither completed nor its
            // thread woken; once the worker stops, a timer hands it back after NAPI_DEFER_NS
            // (the interrupt coalescing of a NIC).
            crate::topology::defer_napi(ns, dev, NAPI_DEFER_NS);
        }
    }
    pin_napi_threads(bed, options)
}

fn pin_napi_threads(bed: &Topology, options: &Options) -> anyhow::Result<()> {
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        let comm = comm.trim();
        let cpu = if comm.starts_with(&format!("napi/{}-", bed.r0))
            || comm.starts_with(&format!("napi/{}-", bed.r1))
        {
            options.relay_cpu
        } else if comm.starts_with(&format!("napi/{}-", bed.e1)) {
            options.generator_cpu
        } else {
            continue;
        };
        run_ok(Command::new("taskset").args(["-cp", &cpu.to_string(), &pid.to_string()]));
        // Real-time, as softirqs effectively are: a NAPI thread preempts the relay's (or the
        // generator's) threads on its CPU at once, instead of waiting out a CFS slice while
        // veth's 256-slot ring overflows.
        run_ok(Command::new("chrt").args(["-f", "-p", "50", &pid.to_string()]));
    }
    Ok(())
}

/// The relay under test, stopped on drop.
enum RelayUnderTest<'a> {
    Relayd(crate::topology::RelaydProcess<'a>),
    Rtpengine(Child),
    KernelUdp {
        stop: Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    Program(Box<RelayXdp>),
    /// The AF_XDP null forwarder and the program feeding it.
    NullForwarder {
        stop: Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
        /// Attached (on the caller's side) until dropped, after the thread stopped.
        _program: Box<RelayXdp>,
    },
}

impl Drop for RelayUnderTest<'_> {
    fn drop(&mut self) {
        match self {
            Self::Rtpengine(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Self::KernelUdp { stop, thread } | Self::NullForwarder { stop, thread, .. } => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            _ => {}
        }
    }
}

const API_PORT: u16 = 18_799;
/// AF_XDP ring size of the XDP scenarios: the largest relayd accepts. The rings absorb the
/// bursts that build up while the relay's NAPI thread (real-time, like a softirq) holds the
/// worker off the CPU; measured on this bed: 2048 -> 125-137 kpps clean, 4096 -> 144-175,
/// 8192 -> 231-237, 16384 -> 300.
pub const XDP_RING_SIZE: u32 = 16_384;
/// `gro_flush_timeout` of the relay's veths in busy-polling mode: how long the kernel leaves
/// receive processing to the AF_XDP worker before taking it back (a NIC's interrupt
/// coalescing time).
pub const NAPI_DEFER_NS: u32 = 50_000;
const NG_PORT: u16 = 2223;
const KERNEL_RELAY_PORT: u16 = 20_000;

fn relayd_config(kind: &str, options: &Options, bed: &Topology, busy_poll: bool) -> String {
    let cpu = options.relay_cpu;
    let datapath = match kind {
        "xdp" => format!(
            "kind = \"xdp\"\nworkers = 1\ncpus = [{cpu}]\nxdp_workers = 1\nxdp_cpus = [{cpu}]\n\
             xdp_bind = \"copy\"\nxdp_pin_dir = \"\"\nxdp_interfaces = [\"{}\", \"{}\"]\n\
             xdp_ring_size = {}\nxdp_busy_poll = {}",
            bed.r0, bed.r1, options.xdp_ring_size, busy_poll
        ),
        _ => format!("kind = \"socket\"\nworkers = 1\ncpus = [{cpu}]"),
    };
    format!(
        "[http]\nlisten = \"127.0.0.1:{API_PORT}\"\ntoken_file = \"/dev/null\"\n\
         [media]\nmax_sessions = 100000\n[datapath]\n{datapath}\n\
         [[interface]]\nname = \"default\"\naddress = \"{RELAY_CALLER_SIDE}\"\nport_min = 30000\nport_max = 39999\n"
    )
}

fn start_rtpengine(bed: &Topology, options: &Options) -> anyhow::Result<Child> {
    let child = bed
        .relay
        .command("taskset")
        .args(["-c", &options.relay_cpu.to_string(), "rtpengine"])
        .args([
            "--config-file=none",
            "--foreground",
            "--table=-1",
            &format!("--interface={RELAY_CALLER_SIDE}"),
            &format!("--listen-ng=127.0.0.1:{NG_PORT}"),
            "--port-min=30000",
            "--port-max=39999",
            "--delete-delay=0",
            "--num-threads=1",
            "--log-level=3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context(
            "starting rtpengine (Debian rtpengine-daemon, installed by `cargo xtask setup`)",
        )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pong = bed.relay.run(|| {
            let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
                return false;
            };
            let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = socket.send_to(b"bench1 d7:command4:pinge", ("127.0.0.1", NG_PORT));
            let mut buf = [0u8; 128];
            socket
                .recv(&mut buf)
                .is_ok_and(|n| buf[..n].windows(4).any(|w| w == b"pong"))
        });
        if pong {
            return Ok(child);
        }
        if Instant::now() > deadline {
            bail!("rtpengine did not answer NG within 10 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kernel UDP relay baseline: one thread, one socket, `recv_from` then `send_to` to the
/// callee port of the sender's stream.
fn start_kernel_relay(
    bed: &Topology,
    options: &Options,
) -> anyhow::Result<RelayUnderTest<'static>> {
    let socket = bed
        .relay
        .run(|| UdpSocket::bind((RELAY_CALLER_SIDE, KERNEL_RELAY_PORT)))?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let cpu = options.relay_cpu;
    let callee: std::net::Ipv4Addr = CALLEE.parse()?;
    let thread = std::thread::spawn(move || {
        let _ = relay_userspace::datapath::sys::pin_to_cpu(cpu);
        let mut buf = [0u8; 2048];
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let stream = from.port().saturating_sub(40_000) / 2;
            let to = SocketAddrV4::new(callee, 50_000 + 2 * stream);
            let _ = socket.send_to(&buf[..n], to);
        }
    });
    Ok(RelayUnderTest::KernelUdp {
        stop,
        thread: Some(thread),
    })
}

/// The AF_XDP null forwarder on the relay's veths, fed by `relay_bench_to_xsk` on the
/// caller's side, pinned to the relay CPU, with relayd's ring size of the XDP scenarios.
fn start_null_forwarder(
    bed: &Topology,
    options: &Options,
) -> anyhow::Result<RelayUnderTest<'static>> {
    let (r0, r1) = (ifindex(&bed.relay, &bed.r0), ifindex(&bed.relay, &bed.r1));
    let (program, forwarder) = bed.relay.run(|| -> anyhow::Result<_> {
        let mut program = RelayXdp::load_bench(BENCH_TO_XSK_PROGRAM_NAME)?;
        program.attach(&bed.r0, AttachMode::Native)?;
        program.set_xsk_base(r0, 0)?;
        let forwarder = null_forwarder::NullForwarder::bind(r0, r1, options.xdp_ring_size)
            .context("binding the null forwarder's AF_XDP sockets")?;
        program.set_xsk(0, std::os::fd::AsRawFd::as_raw_fd(forwarder.rx_socket()))?;
        Ok((program, forwarder))
    })?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = forwarder.spawn(options.relay_cpu, Arc::clone(&stop));
    Ok(RelayUnderTest::NullForwarder {
        stop,
        thread: Some(thread),
        _program: Box::new(program),
    })
}

/// Sets the calls up through `controller` (run in the relay namespace); one stream each,
/// from the caller. With `srtp` the call's A leg is SRTP: at the caller, which sends SRTP
/// that the relay decrypts; or, `encrypt`, at the callee, so that the caller's plain RTP
/// reaches the callee encrypted by the relay (the stream then unprotects what it receives).
fn calls(
    bed: &Topology,
    options: &Options,
    (srtp, encrypt): (bool, bool),
    controller: &mut (dyn Controller + Send),
) -> anyhow::Result<Vec<StreamSpec>> {
    let caller: std::net::Ipv4Addr = CALLER.parse()?;
    let callee: std::net::Ipv4Addr = CALLEE.parse()?;
    let mut streams = Vec::new();
    for i in 0..options.streams {
        let port = |base: u32| u16::try_from(base + 2 * i).unwrap_or(u16::MAX);
        let (a, b) = (
            SocketAddrV4::new(caller, port(40_000)),
            SocketAddrV4::new(callee, port(50_000)),
        );
        // The SRTP leg is A; for `encrypt` it is the callee's.
        let (a, b) = if encrypt { (b, a) } else { (a, b) };
        let a_key = if srtp {
            Some(srtp::sdes::CryptoAttribute::generate(
                1,
                Suite::AesCm128HmacSha1_80,
            )?)
        } else {
            None
        };
        let plan = CallPlan {
            index: i,
            id: format!("bench-{i}"),
            a: SocketAddr::V4(a),
            b: SocketAddr::V4(b),
            a_key: a_key.clone(),
        };
        let relay = bed
            .relay
            .run(|| controller.create(&plan))
            .with_context(|| format!("setting up call {i} on the {}", controller.name()))?;
        let context = |key: Option<&srtp::sdes::CryptoAttribute>, window: Option<usize>| {
            key.map(|key| -> anyhow::Result<_> {
                Ok(Arc::new(Mutex::new(Context::new(&loadgen::policy(
                    key, window,
                )?)?)))
            })
            .transpose()
        };
        let stream = if encrypt {
            let SocketAddr::V4(destination) = relay.b_to_relay else {
                bail!("the relay answered an IPv6 address");
            };
            StreamSpec {
                source: b,
                destination,
                srtp: None,
                rx_srtp: context(relay.relay_key.as_ref(), Some(loadgen::RX_REPLAY_WINDOW))?,
            }
        } else {
            let SocketAddr::V4(destination) = relay.a_to_relay else {
                bail!("the relay answered an IPv6 address");
            };
            StreamSpec {
                source: a,
                destination,
                srtp: context(a_key.as_ref(), None)?,
                rx_srtp: None,
            }
        };
        streams.push(stream);
    }
    Ok(streams)
}

/// Runs the bench; one result per scenario.
pub fn run(options: &Options) -> anyhow::Result<Vec<ScenarioResult>> {
    let mut results = Vec::new();
    for &scenario in &options.scenarios {
        eprintln!("== {} ==", scenario.name());
        let mut result = run_scenario(scenario, options, None)
            .with_context(|| format!("scenario {}", scenario.name()))?;
        let measured = run_scenario(scenario, options, Some(result.max_clean_pps))
            .with_context(|| format!("scenario {} (latency, CPU)", scenario.name()))?;
        result.p50_us = measured.p50_us;
        result.p99_us = measured.p99_us;
        result.cpu_ns_per_packet = measured.cpu_ns_per_packet;
        result.cpu_rate = measured.cpu_rate;
        result.steps.extend(measured.steps);
        eprintln!(
            "   max clean {:.0} pps{} (relay CPU {:.0} % busy, {:.0} pps projected), p50 {:.0} us, \
             p99 {:.0} us, {:.0} ns/packet at {} pps{}",
            result.max_clean_pps,
            if result.generator_limited {
                " (generator-limited)"
            } else {
                ""
            },
            result.relay_cpu_busy_at_max * 100.0,
            result.projected_pps,
            result.p50_us,
            result.p99_us,
            result.cpu_ns_per_packet,
            result.cpu_rate,
            result
                .live_frames_pps
                .map_or_else(String::new, |l| format!(", live frames {l:.0} pps"))
        );
        results.push(result);
    }
    Ok(results)
}

#[allow(clippy::too_many_lines, reason = "one scenario's setup, in order")]
fn run_scenario(
    scenario: Scenario,
    options: &Options,
    measure_at: Option<f64>,
) -> anyhow::Result<ScenarioResult> {
    let bed = Topology::build(1, false);
    // Only relayd's AF_XDP path: the null forwarder runs in interrupt (NAPI thread) mode, its
    // faster one on this bed, so that it stays the floor.
    let busy_poll = options.afxdp_busy_poll
        && matches!(scenario, Scenario::AfXdpSrtp | Scenario::AfXdpRtpToSrtp);
    threaded_napi(&bed, options, busy_poll)?;
    // Static neighbours: the callee's end only counts while searching, it answers no ARP.
    for (ip, ns, dev, relay_dev) in [
        (CALLER, &bed.caller, &bed.c0, &bed.r0),
        (CALLEE, &bed.callee, &bed.e1, &bed.r1),
    ] {
        let mac = mac(ns, dev)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        bed.relay.ip(&[
            "neigh",
            "replace",
            ip,
            "lladdr",
            &mac,
            "dev",
            relay_dev,
            "nud",
            "permanent",
        ]);
    }
    let (e1, c0) = (ifindex(&bed.callee, &bed.e1), ifindex(&bed.caller, &bed.c0));
    let ends = Ends {
        tx_ifindex: c0,
        tx_mac: mac(&bed.caller, &bed.c0)?,
        next_hop_mac: mac(&bed.relay, &bed.r0)?,
        rx_ifindex: e1,
    };
    // The callee's end. While searching for the max rate it only counts and drops (the
    // generator's CPU must not be the limit); for latency it hands IPv4/UDP to the generator's
    // AF_XDP receiver.
    let counting = measure_at.is_none() && scenario != Scenario::XdpDrop;
    // Native: the callee's end then has a NAPI context (its thread runs on the generator CPU);
    // with the generic hook veth would run the callee's receive path from the relay's send,
    // on the relay's CPU.
    let receiver_mode = AttachMode::Native;
    let mut receiver_program = bed.callee.run(|| -> anyhow::Result<RelayXdp> {
        let program = if counting {
            BENCH_DROP_PROGRAM_NAME
        } else {
            BENCH_TO_XSK_PROGRAM_NAME
        };
        let mut x = RelayXdp::load_bench(program)?;
        x.attach(&bed.e1, receiver_mode)?;
        if !counting {
            x.set_xsk_base(e1, 0)?;
        }
        Ok(x)
    })?;
    let relay = match scenario {
        Scenario::XdpDrop => RelayUnderTest::Program(Box::new(bed.relay.run(
            || -> anyhow::Result<RelayXdp> {
                let mut x = RelayXdp::load_bench(BENCH_DROP_PROGRAM_NAME)?;
                x.attach(&bed.r0, AttachMode::Native)?;
                Ok(x)
            },
        )?)),
        Scenario::XdpNullRedirect => {
            let r1 = ifindex(&bed.relay, &bed.r1);
            RelayUnderTest::Program(Box::new(bed.relay.run(
                || -> anyhow::Result<RelayXdp> {
                    let mut x = RelayXdp::load_bench(BENCH_REDIRECT_PROGRAM_NAME)?;
                    x.set_bench_egress(r1)?;
                    x.attach(&bed.r0, AttachMode::Native)?;
                    Ok(x)
                },
            )?))
        }
        Scenario::KernelUdpRelay => start_kernel_relay(&bed, options)?,
        Scenario::SocketPlain | Scenario::SocketSrtp | Scenario::SocketRtpToSrtp => {
            let config = relayd_config("socket", options, &bed, false);
            RelayUnderTest::Relayd(bed.start_relayd(API_PORT, &config))
        }
        Scenario::XdpForward | Scenario::AfXdpSrtp | Scenario::AfXdpRtpToSrtp => {
            let config = relayd_config("xdp", options, &bed, busy_poll);
            RelayUnderTest::Relayd(bed.start_relayd(API_PORT, &config))
        }
        Scenario::AfXdpNullForward => start_null_forwarder(&bed, options)?,
        Scenario::RtpenginePlain | Scenario::RtpengineSrtp | Scenario::RtpengineRtpToSrtp => {
            RelayUnderTest::Rtpengine(start_rtpengine(&bed, options)?)
        }
    };
    if let RelayUnderTest::Relayd(relayd) = &relay {
        run_ok(Command::new("taskset").args([
            "-a",
            "-cp",
            &options.relay_cpu.to_string(),
            &relayd.pid().to_string(),
        ]));
    }
    let streams = match scenario {
        Scenario::XdpDrop
        | Scenario::XdpNullRedirect
        | Scenario::KernelUdpRelay
        | Scenario::AfXdpNullForward => {
            let caller: std::net::Ipv4Addr = CALLER.parse()?;
            let relay_ip: std::net::Ipv4Addr = RELAY_CALLER_SIDE.parse()?;
            (0..options.streams)
                .map(|i| StreamSpec {
                    source: SocketAddrV4::new(caller, u16::try_from(40_000 + 2 * i).unwrap_or(0)),
                    destination: SocketAddrV4::new(relay_ip, KERNEL_RELAY_PORT),
                    srtp: None,
                    rx_srtp: None,
                })
                .collect()
        }
        Scenario::RtpenginePlain | Scenario::RtpengineSrtp | Scenario::RtpengineRtpToSrtp => {
            let mut ng = bed.relay.run(|| {
                NgController::new(
                    SocketAddr::from(([127, 0, 0, 1], NG_PORT)),
                    u64::from(std::process::id()),
                )
            })?;
            calls(
                &bed,
                options,
                (scenario.srtp(), scenario.encrypts()),
                &mut ng,
            )?
        }
        _ => {
            let mut api = ApiController::new(
                &format!("http://127.0.0.1:{API_PORT}"),
                Some(Token::new(TOKEN.to_owned())),
            )?;
            calls(
                &bed,
                options,
                (scenario.srtp(), scenario.encrypts()),
                &mut api,
            )?
        }
    };
    let mut generator = Generator::new(
        ends,
        streams,
        |umem| {
            bed.caller.run(|| {
                XskSocket::bind(umem, None, c0, 0, Generator::ring_sizes(), Generator::BIND)
            })
        },
        |umem| {
            bed.callee.run(|| {
                XskSocket::bind(umem, None, e1, 0, Generator::ring_sizes(), Generator::BIND)
            })
        },
    )
    .context("binding the generator's AF_XDP sockets")?;
    if !counting {
        receiver_program.set_xsk(0, std::os::fd::AsRawFd::as_raw_fd(generator.rx_socket()))?;
    }
    let receiver_program = receiver_program;
    // What the step delivered: dropped at the relay's end (xdp_drop), counted at the callee's
    // end (searching), or received by the generator.
    let drop_count = |relay: &RelayUnderTest<'_>| match relay {
        RelayUnderTest::Program(x) if scenario == Scenario::XdpDrop => x.bench_count().unwrap_or(0),
        _ if counting => receiver_program.bench_count().unwrap_or(0),
        _ => 0,
    };

    // The rest runs pinned on the generator CPU.
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<ScenarioResult> {
                pin_self(options.generator_cpu)?;
                let drain = Duration::from_millis(300);
                let mut steps = Vec::new();
                // Warm-up: every stream flows (and pinned flows are in place).
                let counted_before = drop_count(&relay);
                let warm = generator.step(2_000, Duration::from_secs(1), drain);
                let warm_delivered = if counting {
                    drop_count(&relay).saturating_sub(counted_before)
                } else {
                    warm.received
                };
                if scenario != Scenario::XdpDrop && warm_delivered == 0 {
                    bail!(
                        "the relay delivered nothing in the warm-up (sent {})",
                        warm.sent
                    );
                }
                let mut measure = |pps: u64| -> anyhow::Result<(StepReport, f64, f64)> {
                    let before = drop_count(&relay);
                    let busy_before = cpu_busy_jiffies(options.relay_cpu)?;
                    let report = generator.step(pps, options.step, drain);
                    let busy = cpu_busy_jiffies(options.relay_cpu)?.saturating_sub(busy_before);
                    if report.sent < pps.min(1_000) * options.step.as_secs().max(1) / 2 {
                        bail!(
                            "the generator stalled at {pps} pps (sent {} in {:?})",
                            report.sent,
                            report.elapsed
                        );
                    }
                    let mut report = report;
                    let counted = drop_count(&relay).saturating_sub(before);
                    if counting {
                        report.received = counted;
                    }
                    let delivered = if scenario == Scenario::XdpDrop {
                        counted as f64 / report.elapsed.as_secs_f64()
                    } else {
                        report.received as f64 / report.elapsed.as_secs_f64()
                    };
                    if std::env::var_os("RELAY_BENCH_DEBUG").is_some() {
                        if let RelayUnderTest::Relayd(relayd) = &relay {
                            let metrics = relayd.metrics();
                            let lines: Vec<&str> = metrics
                                .lines()
                                .filter(|l| {
                                    (l.starts_with("relayd_afxdp")
                                        || l.starts_with("relayd_drops")
                                        || l.starts_with("relayd_srtp"))
                                        && !l.ends_with(" 0")
                                        && !l.starts_with('#')
                                })
                                .collect();
                            eprintln!("   step {pps}: loss {:.4} {lines:?}", report.loss());
                            let show = |ns: &Netns, dev: &str| {
                                let out = ns.ip(&["-s", "-j", "link", "show", "dev", dev]);
                                let json: serde_json::Value =
                                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                                let st = &json[0]["stats64"];
                                format!(
                                    "{dev}: rx {} drop {} tx {} drop {}",
                                    st["rx"]["packets"],
                                    st["rx"]["dropped"],
                                    st["tx"]["packets"],
                                    st["tx"]["dropped"]
                                )
                            };
                            eprintln!(
                                "     {} | {}",
                                show(&bed.relay, &bed.r1),
                                show(&bed.callee, &bed.e1)
                            );
                        }
                    }
                    let mut step = summary(&report);
                    step.relay_cpu_busy = busy as f64 * jiffy_ns()
                        / (report.elapsed + drain).as_nanos().max(1) as f64;
                    let fraction = step.relay_cpu_busy;
                    steps.push(step);
                    Ok((report, delivered, fraction))
                };
                let clean = |r: &StepReport, delivered: f64| -> bool {
                    if scenario == Scenario::XdpDrop {
                        delivered >= r.sent_pps() * (1.0 - options.max_loss)
                    } else {
                        r.loss() <= options.max_loss
                    }
                };
                if let Some(max) = measure_at {
                    // A fresh relay: latency at half the max, CPU per packet at a rate every
                    // relay carries.
                    let (half, _, _) = measure((max / 2.0).max(1.0) as u64)?;
                    let cpu_rate = options.cpu_rate.min((max * 0.8) as u64).max(1);
                    let (at_rate, delivered, busy) = measure(cpu_rate)?;
                    let packets = delivered * at_rate.elapsed.as_secs_f64();
                    let busy_ns = busy * (at_rate.elapsed + drain).as_nanos() as f64;
                    return Ok(ScenarioResult {
                        scenario,
                        max_clean_pps: max,
                        generator_limited: false,
                        p50_us: half.latency.quantile(0.5) as f64 / 1000.0,
                        p99_us: half.latency.quantile(0.99) as f64 / 1000.0,
                        cpu_ns_per_packet: busy_ns / packets.max(1.0),
                        cpu_rate,
                        relay_cpu_busy_at_max: 0.0,
                        projected_pps: 0.0,
                        live_frames_pps: None,
                        steps,
                    });
                }
                // Ramp up, then bisect. rtpengine abandons sockets for good once overloaded,
                // so it gets a gentle ramp and no way back down.
                let recovers = !matches!(
                    scenario,
                    Scenario::RtpenginePlain
                        | Scenario::RtpengineSrtp
                        | Scenario::RtpengineRtpToSrtp
                );
                let (mut rate, factor) = if recovers {
                    (50_000u64, 2.0)
                } else {
                    (10_000, 1.25)
                };
                let (mut good, mut bad) = (0u64, None::<u64>);
                let mut good_delivered = 0.0;
                let mut good_busy = 0.0;
                let mut limited = false;
                loop {
                    let (report, delivered, busy) = measure(rate)?;
                    let short = report.sent_pps() < rate as f64 * 0.97;
                    if clean(&report, delivered) {
                        good = rate;
                        good_delivered = delivered;
                        good_busy = busy;
                        if short {
                            limited = true;
                            break;
                        }
                        rate = (rate as f64 * factor) as u64;
                        if rate > 8_000_000 {
                            break;
                        }
                    } else {
                        bad = Some(rate);
                        break;
                    }
                }
                if let (Some(mut high), true) = (bad, recovers) {
                    let mut low = good;
                    for _ in 0..5 {
                        if high - low <= high / 20 {
                            break;
                        }
                        let mid = u64::midpoint(low, high);
                        let (report, delivered, busy) = measure(mid)?;
                        if clean(&report, delivered) {
                            low = mid;
                            good_delivered = delivered;
                            good_busy = busy;
                            if report.sent_pps() < mid as f64 * 0.97 {
                                limited = true;
                                break;
                            }
                        } else {
                            high = mid;
                        }
                    }
                }
                let (cpu_ns, cpu_rate, half) = (0.0, 0, None::<StepReport>);
                let _ = half;
                Ok(ScenarioResult {
                    scenario,
                    max_clean_pps: good_delivered,
                    generator_limited: limited,
                    p50_us: 0.0,
                    p99_us: 0.0,
                    cpu_ns_per_packet: cpu_ns,
                    cpu_rate,
                    relay_cpu_busy_at_max: good_busy,
                    projected_pps: good_delivered / good_busy.max(0.01),
                    live_frames_pps: None,
                    steps,
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
    })?;
    let mut result = result;
    // Only the drop ceiling: with a relay forwarding live frames, this kernel hands a frame's
    // page out again while the frame still sits in the relay veth's ring, so the relay sees
    // pages twice, the second time with the headers it rewrote (measured: half the frames
    // arrive addressed to the callee). Forwarding is compared by CPU per packet instead.
    if scenario == Scenario::XdpDrop && measure_at.is_none() {
        result.live_frames_pps = Some(live_frames(&bed, options, &relay, &generator)?);
    }
    drop(generator);
    drop(relay);
    drop(receiver_program);
    Ok(result)
}

/// Drives the relay's veth with the in-kernel generator for one step and returns what the
/// relay handled per second: dropped (`xdp_drop`) or forwarded in XDP (`xdp_forward`).
fn live_frames(
    bed: &Topology,
    options: &Options,
    relay: &RelayUnderTest<'_>,
    generator: &Generator,
) -> anyhow::Result<f64> {
    let frame = generator.sample_frame();
    let c0 = ifindex(&bed.caller, &bed.c0);
    let program = bed
        .caller
        .run(|| RelayXdp::load_bench(BENCH_TX_PROGRAM_NAME))?;
    let handled = || -> u64 {
        match relay {
            RelayUnderTest::Program(x) => x.bench_count().unwrap_or(0),
            RelayUnderTest::Relayd(relayd) => {
                relayd.metric("relayd_xdp_packets_total{outcome=\"flow_forward_redirect\"}")
            }
            _ => 0,
        }
    };
    let before = handled();
    let started = Instant::now();
    // Netns::run runs its closure on a thread of its own: pin that one.
    bed.caller.run(|| -> anyhow::Result<()> {
        pin_self(options.generator_cpu)?;
        while started.elapsed() < options.step {
            program.run_live_frames(&frame, c0, 200_000, 64)?;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));

    Ok(handled().saturating_sub(before) as f64 / elapsed)
}
