//! `relay-loadgen`: an RTP/SRTP load generator for media relays (relayd, or sipwise rtpengine
//! and our controller through the NG protocol).
//!
//! Each call has two generator endpoints, A (the carrier, SRTP) and B (the PBX, plain RTP), each
//! a UDP socket. The relay bridges them: A's SRTP is decrypted and sent to B as RTP, B's RTP is
//! encrypted and sent to A as SRTP (`plain` makes both sides plain). The generator sets the calls
//! up ([`control`]), paces RTP both ways ([`pacer`], [`engine`]), verifies what arrives
//! ([`payload`], SRTP authentication) and reports offered and received rates, loss, order and
//! one-way latency ([`stats`], [`histogram`]). [`find_max`] searches for the highest clean
//! rate ([`search`]); [`overload`] drives the same calls at twice a rate and then at half of
//! it, and counts the streams that still deliver at the end.
//!
//! IO and time: [`run`], [`find_max`] and [`overload`] own sockets and threads and read the
//! monotonic clock; every other module is IO-free except [`http`], [`ng`] and [`net`]. Traffic
//! only ever goes to 127.0.0.0/8 or 198.18.0.0/15; any other relay, API or bind address is
//! refused.

pub mod bencode;
pub mod control;
pub mod engine;
pub mod error;
pub mod histogram;
pub mod http;
pub mod net;
pub mod ng;
pub mod pacer;
pub mod payload;
pub mod sdp;
pub mod search;
pub mod stats;

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::Duration,
};

use serde::Serialize;
use srtp::{sdes::CryptoAttribute, Context, Policy, Suite};

pub use self::{
    control::{ApiController, CallPlan, Controller, NgController, RelayCall},
    error::{address_allowed, LoadgenError},
    http::Token,
    search::Verdict,
    stats::{Report, StreamHealth},
};
use self::{
    engine::{DriveOutcome, DriveParams, Media, PhaseParams},
    error::{check_address, check_socket_addr},
    payload::{Direction, StreamIdentity, MAX_PAYLOAD, MIN_PAYLOAD},
    search::Search,
    stats::RunShape,
};

/// Most calls in one run (each holds two sockets here and two to four ports on the relay).
pub const MAX_CALLS: u32 = 10_000;
/// Highest per-stream rate.
pub const MAX_PPS: u64 = 100_000;
/// Longest measured duration.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Longest warm-up.
pub const MAX_WARMUP: Duration = Duration::from_secs(60);
/// Longest drain.
pub const MAX_DRAIN: Duration = Duration::from_secs(30);
/// Longest overload or recovery phase.
pub const MAX_PHASE: Duration = Duration::from_secs(600);
/// Most find-max steps.
pub const MAX_STEPS: u32 = 32;
/// A step whose offered rate falls this far below its target was limited by the generator.
pub const GENERATOR_SHORTFALL: f64 = 0.05;
/// Kernel socket buffer asked for per direction and socket.
const SOCKET_BUFFER: usize = 4 << 20;
/// SRTP replay window of the generator's receive contexts.
pub const RX_REPLAY_WINDOW: usize = 4096;
/// How the relay is controlled.
#[derive(Clone, Debug)]
pub enum Control {
    /// relayd's HTTP API at this base URL.
    Api {
        /// `http://127.0.0.1:8740`.
        url: String,
        /// Bearer token.
        token: Option<Token>,
    },
    /// An NG server (rtpengine, or our controller).
    Ng {
        /// Its UDP address.
        server: SocketAddr,
    },
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// How calls are set up.
    pub control: Control,
    /// Concurrent calls.
    pub calls: u32,
    /// Packets per second per stream (each call has two streams).
    pub pps: u64,
    /// Measured sending time.
    pub duration: Duration,
    /// Unmeasured sending before it.
    pub warmup: Duration,
    /// Receiving time after the last send.
    pub drain: Duration,
    /// RTP payload bytes (the packet is 12 more).
    pub payload_len: usize,
    /// SRTP suite on leg A; `None` for plain RTP on both legs.
    pub suite: Option<Suite>,
    /// Address endpoint A binds to.
    pub bind_a: IpAddr,
    /// Address endpoint B binds to.
    pub bind_b: IpAddr,
    /// Sender wake-up period.
    pub tick: Duration,
    /// CPU for the sender thread.
    pub tx_cpu: Option<usize>,
    /// CPU for the receiver thread.
    pub rx_cpu: Option<usize>,
    /// Progress lines on stderr.
    pub progress: bool,
    /// `--overload`: the final stretch of the recovery phase in which a stream must deliver
    /// at least [`stats::ALIVE_PERCENT`] % of its packets to count as alive.
    pub alive_window: Duration,
}

impl Config {
    /// The defaults of the CLI for `control`: 10 calls, 50 pps, 10 s, 160-byte payload,
    /// `AES_CM_128_HMAC_SHA1_80`, 1 s drain, loopback endpoints, 200 us tick, 5 s alive
    /// window.
    pub fn new(control: Control) -> Self {
        Self {
            control,
            calls: 10,
            pps: 50,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            drain: Duration::from_secs(1),
            payload_len: 160,
            suite: Some(Suite::AesCm128HmacSha1_80),
            bind_a: error::DEFAULT_BIND,
            bind_b: error::DEFAULT_BIND,
            tick: Duration::from_micros(200),
            tx_cpu: None,
            rx_cpu: None,
            progress: false,
            alive_window: Duration::from_secs(5),
        }
    }

    /// Checks every bound and the address policy.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let bad = |reason: String| Err(LoadgenError::config(reason));
        if !(1..=MAX_CALLS).contains(&self.calls) {
            return bad(format!("calls must be 1..={MAX_CALLS}, got {}", self.calls));
        }
        if !(1..=MAX_PPS).contains(&self.pps) {
            return bad(format!("pps must be 1..={MAX_PPS}, got {}", self.pps));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad(format!(
                "duration must be above 0 and at most {} s",
                MAX_DURATION.as_secs()
            ));
        }
        if self.warmup > MAX_WARMUP {
            return bad(format!("warm-up is at most {} s", MAX_WARMUP.as_secs()));
        }
        if self.drain > MAX_DRAIN {
            return bad(format!("drain is at most {} s", MAX_DRAIN.as_secs()));
        }
        if self.alive_window.is_zero() || self.alive_window > MAX_PHASE {
            return bad(format!(
                "the alive window must be above 0 and at most {} s",
                MAX_PHASE.as_secs()
            ));
        }
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&self.payload_len) {
            return bad(format!(
                "payload must be {MIN_PAYLOAD}..={MAX_PAYLOAD} bytes, got {}",
                self.payload_len
            ));
        }
        if self.tick < Duration::from_micros(100) || self.tick > Duration::from_millis(100) {
            return bad("tick must be 100 us..=100 ms".to_owned());
        }
        // Whether the CPU exists and is allowed is checked when pinning (a clear error then).
        for (what, cpu) in [("--cpu", self.tx_cpu), ("--rx-cpu", self.rx_cpu)] {
            if let Some(cpu) = cpu {
                if cpu >= 1024 {
                    return bad(format!("{what} {cpu}: beyond CPU_SETSIZE"));
                }
            }
        }
        check_address("bind address of A", self.bind_a)?;
        check_address("bind address of B", self.bind_b)?;
        match &self.control {
            Control::Api { .. } => {} // checked when the client is built (it parses the URL)
            Control::Ng { server } => check_socket_addr("NG server", *server)?,
        }
        Ok(())
    }

    /// The controller this configuration names.
    pub fn controller(&self) -> Result<Box<dyn Controller>, LoadgenError> {
        Ok(match &self.control {
            Control::Api { url, token } => Box::new(ApiController::new(url, token.clone())?),
            Control::Ng { server } => Box::new(NgController::new(*server, random_u64()?)?),
        })
    }
}

fn random_u64() -> Result<u64, LoadgenError> {
    let mut bytes = [0_u8; 8];
    getrandom::fill(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// One load run with `config`: set the calls up, send, verify, tear down, report.
pub fn run(config: &Config) -> Result<Report, LoadgenError> {
    config.validate()?;
    let mut controller = config.controller()?;
    run_with(controller.as_mut(), config, config.pps, config.duration, "")
}

/// One load run through `controller` at `pps` per stream for `duration`; progress lines (if
/// enabled) start with `label`.
pub fn run_with(
    controller: &mut dyn Controller,
    config: &Config,
    pps: u64,
    duration: Duration,
    label: &str,
) -> Result<Report, LoadgenError> {
    let mut phases = Vec::with_capacity(2);
    if !config.warmup.is_zero() {
        phases.push(PhaseParams {
            name: "",
            pps,
            duration: config.warmup,
            measured: false,
        });
    }
    phases.push(PhaseParams {
        name: "",
        pps,
        duration,
        measured: true,
    });
    let params = drive_params(config, phases, Duration::ZERO, label);
    let outcome = with_calls(controller, config, |media| engine::drive(media, &params))?;
    let measured = outcome
        .phases
        .first()
        .ok_or_else(|| LoadgenError::config("the drive measured no phase"))?;
    Ok(Report::new(
        &run_shape(config, pps, measured.duration_s),
        &measured.tallies,
    ))
}

/// Sets `config.calls` calls up through `controller`, hands their media to `drive`, and tears
/// every call that was set up down again, whatever `drive` returned.
fn with_calls<T>(
    controller: &mut dyn Controller,
    config: &Config,
    drive: impl FnOnce(&mut Media) -> Result<T, LoadgenError>,
) -> Result<T, LoadgenError> {
    config.validate()?;
    let run_tag = random_u64()?;
    let calls = usize::try_from(config.calls).map_err(|_| LoadgenError::config("calls"))?;
    net::ensure_open_files(u64::from(config.calls) * 2 + 128).map_err(LoadgenError::io(
        format!("raising the open-file limit for {calls} calls"),
    ))?;

    let mut plans = Vec::with_capacity(calls);
    let mut sockets = Vec::with_capacity(calls);
    for index in 0..config.calls {
        let a = bind_endpoint(config.bind_a)?;
        let b = bind_endpoint(config.bind_b)?;
        let a_key = config
            .suite
            .map(|suite| CryptoAttribute::generate(1, suite))
            .transpose()?;
        plans.push(CallPlan {
            index,
            id: format!("lg-{:08x}-{index}", run_tag & 0xffff_ffff),
            a: local_addr(&a)?,
            b: local_addr(&b)?,
            a_key,
        });
        sockets.push([a, b]);
    }

    let mut relays = Vec::with_capacity(calls);
    let result = plans
        .iter()
        .try_for_each(|plan| match controller.create(plan) {
            Ok(relay) => {
                relays.push(relay);
                Ok(())
            }
            Err(e) => {
                // The relay may hold part of it (an offer without its answer, a session whose
                // view was unusable): delete it too; an error here only says it held nothing.
                let _ = controller.delete(plan);
                Err(e)
            }
        })
        .and_then(|()| {
            let mut media = build_media(&plans, &relays, sockets, run_tag)?;
            drive(&mut media)
        });
    let failures = teardown(controller, &plans[..relays.len()]);
    if failures > 0 {
        eprintln!(
            "warning: {failures} of {} {} deletes failed",
            relays.len(),
            controller.name()
        );
    }
    result
}

fn bind_endpoint(ip: IpAddr) -> Result<UdpSocket, LoadgenError> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
        .map_err(LoadgenError::io(format!("binding a UDP socket on {ip}")))?;
    net::grow_socket_buffers(socket.as_raw_fd(), SOCKET_BUFFER);
    Ok(socket)
}

fn local_addr(socket: &UdpSocket) -> Result<SocketAddr, LoadgenError> {
    socket
        .local_addr()
        .map_err(LoadgenError::io("reading a socket's address"))
}

/// Deletes every call in `plans` and returns how many deletes failed (the first failure is
/// printed).
fn teardown(controller: &mut dyn Controller, plans: &[CallPlan]) -> usize {
    let mut failures = 0;
    for plan in plans {
        if let Err(e) = controller.delete(plan) {
            if failures == 0 {
                eprintln!("warning: deleting {}: {e}", plan.id);
            }
            failures += 1;
        }
    }
    failures
}

fn build_media(
    plans: &[CallPlan],
    relays: &[RelayCall],
    sockets: Vec<[UdpSocket; 2]>,
    run_tag: u64,
) -> Result<Media, LoadgenError> {
    let mut tx = Vec::new();
    let mut rx = Vec::new();
    let mut streams = Vec::with_capacity(plans.len());
    for ((plan, relay), [a, b]) in plans.iter().zip(relays).zip(&sockets) {
        a.connect(relay.a_to_relay)
            .map_err(LoadgenError::io(format!(
                "connecting A to the relay at {}",
                relay.a_to_relay
            )))?;
        b.connect(relay.b_to_relay)
            .map_err(LoadgenError::io(format!(
                "connecting B to the relay at {}",
                relay.b_to_relay
            )))?;
        if let (Some(ours), Some(theirs)) = (&plan.a_key, &relay.relay_key) {
            tx.push(Context::new(&policy(ours, None)?)?);
            rx.push(Context::new(&policy(theirs, Some(RX_REPLAY_WINDOW))?)?);
        }
        let mut random = [0_u8; 20];
        getrandom::fill(&mut random)?;
        #[allow(clippy::cast_possible_truncation)]
        let run = run_tag as u32;
        let identity = |direction: Direction, r: &[u8]| StreamIdentity {
            call: plan.index,
            direction,
            ssrc: u32::from_be_bytes([r[0], r[1], r[2], r[3]]),
            seq_base: u16::from_be_bytes([r[4], r[5]]),
            ts_base: u32::from_be_bytes([r[6], r[7], r[8], r[9]]),
            run,
        };
        streams.push([
            identity(Direction::AToB, &random[..10]),
            identity(Direction::BToA, &random[10..]),
        ]);
    }
    Ok(Media {
        sockets,
        tx,
        rx,
        streams,
    })
}

/// The SRTP policy of an SDES attribute (its keys, MKI length, and a replay window if given).
pub fn policy(
    attribute: &CryptoAttribute,
    replay_window: Option<usize>,
) -> Result<Policy, LoadgenError> {
    let keys = attribute.master_keys()?;
    let mut keys = keys.into_iter();
    let first = keys
        .next()
        .ok_or_else(|| LoadgenError::config("an a=crypto attribute without keys"))?;
    let mut policy = Policy::new(first);
    policy.keys.extend(keys);
    policy.mki_len = attribute.mki_len()?;
    if let Some(window) = replay_window {
        policy.replay_window = window;
    }
    Ok(policy)
}

fn drive_params(
    config: &Config,
    phases: Vec<PhaseParams>,
    window: Duration,
    label: &str,
) -> DriveParams {
    DriveParams {
        phases,
        window,
        drain: config.drain,
        payload_len: config.payload_len,
        tick: config.tick,
        tx_cpu: config.tx_cpu,
        rx_cpu: config.rx_cpu,
        progress: config.progress.then(|| label.to_owned()),
    }
}

fn run_shape(config: &Config, pps: u64, duration_s: f64) -> RunShape {
    RunShape {
        calls: config.calls,
        pps_per_stream: pps,
        duration_s,
        srtp_suite: config.suite.map(|s| s.sdes_name().to_owned()),
        packet_bytes: payload::RTP_HEADER_LEN + config.payload_len,
    }
}

/// Parameters of `--find-max`.
#[derive(Clone, Debug)]
pub struct FindMaxParams {
    /// Measured time per step.
    pub step: Duration,
    /// Most steps.
    pub max_steps: u32,
    /// Highest loss ratio a clean step may have (0.001 = 0.1 %).
    pub max_loss: f64,
}

impl Default for FindMaxParams {
    fn default() -> Self {
        Self {
            step: Duration::from_secs(3),
            max_steps: 12,
            max_loss: 0.001,
        }
    }
}

/// One step of a find-max search.
#[derive(Clone, Debug, Serialize)]
pub struct FindMaxStep {
    /// 1-based step number.
    pub step: u32,
    /// Rate per stream tried.
    pub pps_per_stream: u64,
    /// How it went.
    pub verdict: Verdict,
    /// What was measured.
    pub report: Report,
}

/// The outcome of a find-max search.
#[derive(Clone, Debug, Serialize)]
pub struct FindMaxResult {
    /// Highest clean rate per stream (`null` if no step was clean).
    pub pps_per_stream: Option<u64>,
    /// Total offered pps of that step (both directions of every call).
    pub max_clean_pps: Option<f64>,
    /// Its received pps.
    pub received_pps: Option<f64>,
    /// `max_clean_pps / 100`: concurrent calls at 50 pps per direction.
    pub equivalent_calls_at_50pps: Option<f64>,
    /// Its loss ratio.
    pub loss_ratio: Option<f64>,
    /// Its one-way latency.
    pub latency_us: Option<stats::LatencyReport>,
    /// Some step could not be offered at its target rate: the maximum may be the generator's.
    pub generator_limited: bool,
}

/// The whole `--find-max` report.
#[derive(Clone, Debug, Serialize)]
pub struct FindMaxReport {
    /// Always `"find_max"`.
    pub mode: &'static str,
    /// Calls per step.
    pub calls: u32,
    /// Seconds per step.
    pub step_s: f64,
    /// Loss limit of a clean step.
    pub max_loss: f64,
    /// The steps in order.
    pub steps: Vec<FindMaxStep>,
    /// The result.
    pub result: FindMaxResult,
}

impl FindMaxStep {
    /// The one-line description printed after each step.
    pub fn line(&self) -> String {
        let r = &self.report;
        format!(
            "step {}: {} pps/stream x {} streams = {} pps target; offered {:.0} received {:.0} \
             loss {:.4}% corrupt {} auth-fail {} p99 {} us -> {:?}",
            self.step,
            self.pps_per_stream,
            u64::from(r.calls) * 2,
            r.target_pps,
            r.offered_pps,
            r.received_pps,
            r.loss_ratio * 100.0,
            r.corrupt,
            r.auth_failures,
            r.latency_us.p99,
            self.verdict
        )
    }
}

impl FindMaxReport {
    /// A human summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            out.push_str(&step.line());
            out.push('\n');
        }
        match (self.result.pps_per_stream, self.result.max_clean_pps) {
            (Some(per_stream), Some(total)) => {
                let _ = writeln!(
                    out,
                    "max clean rate: {total:.0} pps ({} calls x 2 x {per_stream} pps, loss <= {}%), \
                 = {:.0} concurrent calls at 50 pps per direction{}",
                self.calls,
                self.max_loss * 100.0,
                self.result.equivalent_calls_at_50pps.unwrap_or(0.0),
                if self.result.generator_limited {
                    "; the generator hit its own limit, so this is a lower bound"
                } else {
                    ""
                }
                );
            }
            _ => out.push_str("no step was clean\n"),
        }
        out
    }
}

/// Classifies a step: failed when the relay lost (or mangled) too much of what was offered,
/// even if less than the target was offered; generator-limited when everything offered came
/// through but the generator could not offer the target rate; clean otherwise.
pub fn verdict(report: &Report, max_loss: f64) -> Verdict {
    #[allow(clippy::cast_precision_loss)]
    let target = report.target_pps as f64;
    if !report.is_clean(max_loss) {
        Verdict::Failed
    } else if report.offered_pps < target * (1.0 - GENERATOR_SHORTFALL) {
        Verdict::GeneratorLimited
    } else {
        Verdict::Clean
    }
}

/// Searches for the highest per-stream rate (with `config.calls` calls, starting at
/// `config.pps`) whose loss is at most `params.max_loss`. Every step sets up fresh calls, so a
/// relay that gave up on streams in an overloaded step cannot spoil the next.
pub fn find_max(config: &Config, params: &FindMaxParams) -> Result<FindMaxReport, LoadgenError> {
    config.validate()?;
    if !(1..=MAX_STEPS).contains(&params.max_steps) {
        return Err(LoadgenError::config(format!(
            "max steps must be 1..={MAX_STEPS}"
        )));
    }
    if params.step.is_zero() || params.step > Duration::from_secs(60) {
        return Err(LoadgenError::config("a step lasts 1..=60 s"));
    }
    if !(0.0..=0.5).contains(&params.max_loss) {
        return Err(LoadgenError::config("max loss must be 0..=0.5"));
    }
    let mut controller = config.controller()?;
    find_max_with(controller.as_mut(), config, params)
}

/// [`find_max`] through a given controller.
pub fn find_max_with(
    controller: &mut dyn Controller,
    config: &Config,
    params: &FindMaxParams,
) -> Result<FindMaxReport, LoadgenError> {
    let mut search = Search::new(config.pps, params.max_steps, MAX_PPS);
    let mut steps: Vec<FindMaxStep> = Vec::new();
    while let Some(rate) = search.next_rate() {
        let number = search.steps() + 1;
        let label = format!("step {number} @ {rate} pps/stream ");
        let report = run_with(controller, config, rate, params.step, &label)?;
        let verdict = verdict(&report, params.max_loss);
        search.record(rate, verdict);
        let step = FindMaxStep {
            step: number,
            pps_per_stream: rate,
            verdict,
            report,
        };
        if config.progress {
            eprintln!("{}", step.line());
        }
        steps.push(step);
    }
    let best = search.best().and_then(|rate| {
        steps
            .iter()
            .filter(|s| s.verdict == Verdict::Clean && s.pps_per_stream == rate)
            .map(|s| &s.report)
            .next_back()
    });
    let result = FindMaxResult {
        pps_per_stream: search.best(),
        max_clean_pps: best.map(|r| r.offered_pps),
        received_pps: best.map(|r| r.received_pps),
        equivalent_calls_at_50pps: best.map(|r| r.offered_pps / 100.0),
        loss_ratio: best.map(|r| r.loss_ratio),
        latency_us: best.map(|r| r.latency_us),
        generator_limited: search.generator_limited(),
    };
    Ok(FindMaxReport {
        mode: "find_max",
        calls: config.calls,
        step_s: params.step.as_secs_f64(),
        max_loss: params.max_loss,
        steps,
        result,
    })
}

/// Parameters of `--overload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverloadParams {
    /// The base rate per stream (the relay's highest clean rate): the overload phase sends
    /// twice it, the recovery phase half of it (a warm-up, if any, the base rate itself).
    pub pps_per_stream: u64,
    /// Length of the overload phase.
    pub overload: Duration,
    /// Length of the recovery phase.
    pub recover: Duration,
}

impl OverloadParams {
    /// 10 s of overload and 10 s of recovery around `pps_per_stream`.
    pub fn new(pps_per_stream: u64) -> Self {
        Self {
            pps_per_stream,
            overload: Duration::from_secs(10),
            recover: Duration::from_secs(10),
        }
    }

    /// Per-stream rate of the overload phase.
    pub fn overload_pps(&self) -> u64 {
        self.pps_per_stream.saturating_mul(2)
    }

    /// Per-stream rate of the recovery phase.
    pub fn recovery_pps(&self) -> u64 {
        (self.pps_per_stream / 2).max(1)
    }

    /// Checks the bounds, and that `config`'s alive window fits in the recovery phase.
    pub fn validate(&self, config: &Config) -> Result<(), LoadgenError> {
        if !(2..=MAX_PPS / 2).contains(&self.pps_per_stream) {
            return Err(LoadgenError::config(format!(
                "the overload base rate must be 2..={} pps per stream, got {}",
                MAX_PPS / 2,
                self.pps_per_stream
            )));
        }
        for (what, phase) in [("overload", self.overload), ("recovery", self.recover)] {
            if phase.is_zero() || phase > MAX_PHASE {
                return Err(LoadgenError::config(format!(
                    "the {what} phase must last above 0 and at most {} s",
                    MAX_PHASE.as_secs()
                )));
            }
        }
        if config.alive_window > self.recover {
            return Err(LoadgenError::config(
                "the alive window must fit in the recovery phase",
            ));
        }
        Ok(())
    }

    /// The phases of the drive: the warm-up of `config` (unmeasured, at the base rate), then
    /// overload, then recovery.
    fn phases(&self, config: &Config) -> Vec<PhaseParams> {
        let mut phases = Vec::with_capacity(3);
        if !config.warmup.is_zero() {
            phases.push(PhaseParams {
                name: "warm-up",
                pps: self.pps_per_stream,
                duration: config.warmup,
                measured: false,
            });
        }
        phases.push(PhaseParams {
            name: "overload",
            pps: self.overload_pps(),
            duration: self.overload,
            measured: true,
        });
        phases.push(PhaseParams {
            name: "recovery",
            pps: self.recovery_pps(),
            duration: self.recover,
            measured: true,
        });
        phases
    }
}

/// How each direction's streams fared in the alive window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamHealthPerDirection {
    /// The A-to-B streams (SRTP into the relay).
    pub a_to_b: StreamHealth,
    /// The B-to-A streams (plain RTP into the relay).
    pub b_to_a: StreamHealth,
}

/// The recovery phase of an overload run, and how many streams were alive at its end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryReport {
    /// What the phase measured.
    #[serde(flatten)]
    pub report: Report,
    /// The final stretch of the phase the streams were judged on, in seconds.
    pub window_s: f64,
    /// Streams alive, dead and in all, over both directions.
    #[serde(flatten)]
    pub health: StreamHealth,
    /// The same, for each direction.
    pub health_per_direction: StreamHealthPerDirection,
}

/// The result of an overload run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OverloadResult {
    /// The base rate per stream.
    pub pps_per_stream: u64,
    /// The overload phase (twice the base rate).
    pub overload: Report,
    /// The recovery phase (half the base rate).
    pub recovery: RecoveryReport,
    /// A phase was offered more than [`GENERATOR_SHORTFALL`] below its target rate: the
    /// generator could not offer it (a phase whose time is up moves on regardless, so the
    /// recovery still starts on time).
    pub generator_limited: bool,
}

/// The whole `--overload` report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OverloadReport {
    /// Always `"overload"`.
    pub mode: &'static str,
    /// Calls (each two streams).
    pub calls: u32,
    /// The phases and the streams' fate.
    pub overload: OverloadResult,
}

impl OverloadReport {
    /// Sums up what a drive of [`OverloadParams::phases`] measured: its two measured phases,
    /// and the per-stream counts of the alive window.
    pub fn new(
        config: &Config,
        params: &OverloadParams,
        outcome: &DriveOutcome,
    ) -> Result<Self, LoadgenError> {
        let [overload, recovery] = outcome.phases.as_slice() else {
            return Err(LoadgenError::config(format!(
                "an overload drive measures two phases, not {}",
                outcome.phases.len()
            )));
        };
        let sent = outcome.window_sent.counts();
        let received = outcome.window_received.counts();
        let pairs = || sent.iter().copied().zip(received.iter().copied());
        let health_per_direction = StreamHealthPerDirection {
            a_to_b: StreamHealth::classify(pairs().step_by(2)),
            b_to_a: StreamHealth::classify(pairs().skip(1).step_by(2)),
        };
        let overload = Report::new(
            &run_shape(config, params.overload_pps(), overload.duration_s),
            &overload.tallies,
        );
        let recovery = Report::new(
            &run_shape(config, params.recovery_pps(), recovery.duration_s),
            &recovery.tallies,
        );
        #[allow(clippy::cast_precision_loss)]
        let short = |r: &Report| r.offered_pps < r.target_pps as f64 * (1.0 - GENERATOR_SHORTFALL);
        Ok(Self {
            mode: "overload",
            calls: config.calls,
            overload: OverloadResult {
                pps_per_stream: params.pps_per_stream,
                generator_limited: short(&overload) || short(&recovery),
                overload,
                recovery: RecoveryReport {
                    report: recovery,
                    window_s: config.alive_window.as_secs_f64(),
                    health: StreamHealth::classify(pairs()),
                    health_per_direction,
                },
            },
        })
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let result = &self.overload;
        let recovery = &result.recovery;
        let mut out = format!(
            "overload run: {} calls x 2 streams, base {} pps/stream, {} bytes/packet, {}\n",
            self.calls,
            result.pps_per_stream,
            recovery.report.packet_bytes,
            recovery
                .report
                .srtp_suite
                .as_deref()
                .map_or_else(|| "plain RTP".to_owned(), |s| format!("SRTP {s} on leg A")),
        );
        for (name, r) in [
            ("overload", &result.overload),
            ("recovery", &recovery.report),
        ] {
            let _ = writeln!(
                out,
                "{name:<8} {} pps/stream ({} pps target) for {:.1} s: offered {:.0} pps, \
                 received {:.0} pps, loss {:.4}%; corrupt {} auth-fail {} send-err {}; \
                 p99 {} us",
                r.pps_per_stream,
                r.target_pps,
                r.duration_s,
                r.offered_pps,
                r.received_pps,
                r.loss_ratio * 100.0,
                r.corrupt,
                r.auth_failures,
                r.send_errors,
                r.latency_us.p99,
            );
        }
        let h = &recovery.health;
        let _ = writeln!(
            out,
            "streams after recovery (packets of its last {:.1} s; alive: >= {}% delivered): \
             {} alive, {} dead, {} partly, of {} (A->B {}/{} alive, B->A {}/{} alive)",
            recovery.window_s,
            stats::ALIVE_PERCENT,
            h.streams_alive,
            h.streams_dead,
            h.streams_total - h.streams_alive - h.streams_dead,
            h.streams_total,
            recovery.health_per_direction.a_to_b.streams_alive,
            recovery.health_per_direction.a_to_b.streams_total,
            recovery.health_per_direction.b_to_a.streams_alive,
            recovery.health_per_direction.b_to_a.streams_total,
        );
        if result.generator_limited {
            out.push_str(
                "the generator could not offer a phase at its target rate (see offered): the \
                 overload was smaller than asked\n",
            );
        }
        out
    }
}

/// The overload run of `params`: set `config.calls` calls up once, drive them at twice the
/// base rate for `params.overload`, then at half of it for `params.recover` on the same
/// streams (no teardown in between), tear them down, and report both phases and how many
/// streams delivered at least [`stats::ALIVE_PERCENT`] % (alive) or nothing (dead) of their
/// packets in the last `config.alive_window` of the recovery.
pub fn overload(config: &Config, params: &OverloadParams) -> Result<OverloadReport, LoadgenError> {
    config.validate()?;
    params.validate(config)?;
    let mut controller = config.controller()?;
    overload_with(controller.as_mut(), config, params)
}

/// [`overload`] through a given controller.
pub fn overload_with(
    controller: &mut dyn Controller,
    config: &Config,
    params: &OverloadParams,
) -> Result<OverloadReport, LoadgenError> {
    params.validate(config)?;
    let drive = drive_params(config, params.phases(config), config.alive_window, "");
    let outcome = with_calls(controller, config, |media| engine::drive(media, &drive))?;
    OverloadReport::new(config, params, &outcome)
}

#[cfg(test)]
mod tests;
