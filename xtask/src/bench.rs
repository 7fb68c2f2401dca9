//! `cargo xtask bench ...`: benchmark commands (never timed tests).
//!
//! - `bench srtp`: this SRTP engine against libsrtp 2.5 in one process, on the same packets,
//!   pinned to one core; prints the Markdown table that goes into docs/PERFORMANCE.md.
//!   `--criterion` also runs the criterion benchmarks (`cargo bench -p srtp`).
//! - `bench socket`: relayd's socket datapath against sipwise rtpengine userspace, each pinned to
//!   one core with the load generator on the other, on loopback: max clean packets/s (plain and
//!   SRTP<->RTP), latency at that rate, and an overload step (2x the max for a while, then half)
//!   counting the streams still alive afterwards.
//! - `bench xdp`: every relay on the same caller/relay/callee veth topology (root), driven by
//!   an AF_XDP generator: the `XDP_DROP` ceiling (also with the in-kernel live-frames generator),
//!   a kernel UDP socket relay, relayd's socket datapath, XDP plain forwarding, AF_XDP
//!   SRTP->RTP, sipwise rtpengine userspace; max clean rate, latency, CPU per packet; a table
//!   and a PNG chart (matplotlib, installed into the venv on first use).
//! - `bench sip`: call setups per second through sip-controller with relay programming, over
//!   TLS with SRTP (`sip-callgen`) and over UDP (`SIPp`); see `bench_sip.rs`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};

use crate::{run_step, setup, workspace_root};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// SRTP engine vs libsrtp: ns/packet and packets/s per core, 172-byte RTP packets.
    Srtp {
        /// CPU to pin the benchmark to.
        #[arg(long, default_value_t = 1)]
        cpu: usize,
        /// Packets per measurement.
        #[arg(long, default_value_t = 200_000)]
        packets: usize,
        /// Interleaved repetitions per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Also run the criterion benchmarks.
        #[arg(long)]
        criterion: bool,
    },
    /// relayd's socket datapath vs sipwise rtpengine userspace on loopback.
    Socket(SocketBench),
    /// Every relay on the same veth topology: `XDP_DROP` ceiling, kernel UDP relay, relayd socket
    /// and XDP / AF_XDP datapaths, sipwise rtpengine userspace (root).
    Xdp(XdpBench),
    /// Call setups per second through sip-controller with relay programming: TLS + SRTP
    /// (`sip-callgen`) and UDP (`SIPp`).
    Sip(crate::bench_sip::SipBench),
    /// NG offer+answer+delete per second: sip-controller's NG server with relayd vs sipwise
    /// rtpengine userspace, same client, same run.
    Ng(crate::bench_ng::NgBench),
}

/// Options of `bench xdp`.
#[derive(Debug, Args)]
struct XdpBench {
    /// Calls (one stream each, caller -> callee).
    #[arg(long, default_value_t = 200)]
    streams: u32,
    /// CPU for the relay under test (and its NAPI threads).
    #[arg(long, default_value_t = 1)]
    relay_cpu: usize,
    /// CPU for the generator.
    #[arg(long, default_value_t = 0)]
    generator_cpu: usize,
    /// Milliseconds per rate step.
    #[arg(long, default_value_t = 2000)]
    step_ms: u64,
    /// Only these scenarios (repeat): `xdp_drop`, `kernel_udp_relay`, `socket_plain`,
    /// `socket_srtp`, `socket_rtp_to_srtp`, `xdp_forward`, `xdp_null_redirect`, `afxdp_srtp`,
    /// `afxdp_rtp_to_srtp`, `afxdp_null_forward`, `rtpengine_plain`, `rtpengine_srtp`,
    /// `rtpengine_rtp_to_srtp`.
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Where the chart goes.
    #[arg(long, default_value = "docs/xdp-bench.png")]
    chart: PathBuf,
    /// relayd's AF_XDP ring size in the XDP scenarios (`datapath.xdp_ring_size`; default:
    /// relay-xdpbench's, 16384).
    #[arg(long)]
    xdp_ring_size: Option<u32>,
    /// relayd's AF_XDP scenarios in preferred-busy-polling mode (`datapath.xdp_busy_poll`
    /// plus NAPI deferral on the relay's veths; default: relay-xdpbench's, true); `false`
    /// leaves receive to the NAPI threads.
    #[arg(long)]
    afxdp_busy_poll: Option<bool>,
}

/// Options of `bench socket`.
#[derive(Debug, Args)]
struct SocketBench {
    /// Concurrent calls during the search (each call is two streams).
    #[arg(long, default_value_t = 200)]
    calls: u32,
    /// CPU for the relay under test.
    #[arg(long, default_value_t = 1)]
    relay_cpu: usize,
    /// CPU for the load generator.
    #[arg(long, default_value_t = 0)]
    generator_cpu: usize,
    /// Seconds per search step.
    #[arg(long, default_value_t = 3)]
    step_secs: u64,
    /// Most search steps.
    #[arg(long, default_value_t = 10)]
    max_steps: u32,
    /// Seconds of overload (2x max) and of recovery (half max).
    #[arg(long, default_value_t = 10)]
    overload_secs: u64,
    /// Skip rtpengine (for a quick look at relayd alone).
    #[arg(long)]
    skip_rtpengine: bool,
    /// Per-stream rate of the fixed-load run that measures the relay's CPU time per packet
    /// (below both relays' maximum, so both carry it cleanly).
    #[arg(long, default_value_t = 300)]
    efficiency_pps: u64,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    setup::run()?;
    match &args.target {
        BenchTarget::Socket(bench) => socket_bench(bench),
        BenchTarget::Xdp(bench) => xdp_bench(bench),
        BenchTarget::Sip(bench) => crate::bench_sip::run(bench),
        BenchTarget::Ng(bench) => crate::bench_ng::run(bench),
        BenchTarget::Srtp {
            cpu,
            packets,
            rounds,
            criterion,
        } => {
            run_step(
                "srtp vs libsrtp (release build, pinned)",
                Command::new("cargo").args([
                    "run",
                    "--quiet",
                    "--release",
                    "--locked",
                    "-p",
                    "srtp",
                    "--example",
                    "srtp_vs_libsrtp",
                    "--",
                    "--cpu",
                    &cpu.to_string(),
                    "--packets",
                    &packets.to_string(),
                    "--rounds",
                    &rounds.to_string(),
                ]),
            )?;
            if *criterion {
                run_step(
                    "criterion: cargo bench -p srtp",
                    Command::new("taskset").args([
                        "-c",
                        &cpu.to_string(),
                        "cargo",
                        "bench",
                        "--locked",
                        "-p",
                        "srtp",
                        "--bench",
                        "srtp",
                    ]),
                )?;
            }
            Ok(())
        }
    }
}

/// matplotlib for the chart, installed into the project's venv on first use (PyPI).
const MATPLOTLIB: &str = "matplotlib==3.9.2";

fn xdp_bench(bench: &XdpBench) -> Result<()> {
    let root = workspace_root();
    run_step(
        "build relayd and the benchmark (release)",
        Command::new("cargo").current_dir(&root).args([
            "build",
            "--release",
            "--locked",
            "-p",
            "relay-userspace",
            "--bin",
            "relayd",
            "-p",
            "tests",
            "--bin",
            "relay-xdpbench",
        ]),
    )?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let json = out_dir.join("xdp.json");
    let mut command = Command::new(root.join("target/release/relay-xdpbench"));
    command.args([
        "--streams",
        &bench.streams.to_string(),
        "--relay-cpu",
        &bench.relay_cpu.to_string(),
        "--generator-cpu",
        &bench.generator_cpu.to_string(),
        "--step-ms",
        &bench.step_ms.to_string(),
        "--json",
    ]);
    command.arg(&json);
    if let Some(size) = bench.xdp_ring_size {
        command.args(["--xdp-ring-size", &size.to_string()]);
    }
    if let Some(busy) = bench.afxdp_busy_poll {
        command.args(["--afxdp-busy-poll", &busy.to_string()]);
    }
    for scenario in &bench.scenarios {
        command.args(["--scenario", scenario]);
    }
    run_step("relay-xdpbench (veth topology, every relay)", &mut command)?;
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    print_xdp_table(&results);
    let python = root.join(".venv/bin/python");
    let has_matplotlib = Command::new(&python)
        .args(["-c", "import matplotlib"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_matplotlib {
        run_step(
            "matplotlib for the chart (PyPI, into .venv)",
            Command::new(root.join(".venv/bin/pip")).args(["install", "--quiet", MATPLOTLIB]),
        )?;
    }
    let chart = root.join(&bench.chart);
    run_step(
        "chart",
        Command::new(&python)
            .arg(root.join("tests/py/plot_xdp_bench.py"))
            .arg(&json)
            .arg(&chart),
    )?;
    println!("results: {}\nchart:   {}", json.display(), chart.display());
    Ok(())
}

/// The ratios `bench xdp` prints: (label, scenario, over scenario, figure).
const XDP_RATIOS: &[(&str, &str, &str, &str)] = &[
    (
        "XDP forward / XDP_DROP (max clean, same generator)",
        "xdp_forward",
        "xdp_drop",
        "max_clean_pps",
    ),
    (
        "XDP forward / XDP_DROP (projected)",
        "xdp_forward",
        "xdp_drop",
        "projected_pps",
    ),
    (
        "XDP forward / XDP null redirect (max clean)",
        "xdp_forward",
        "xdp_null_redirect",
        "max_clean_pps",
    ),
    (
        "XDP null redirect / XDP_DROP (max clean)",
        "xdp_null_redirect",
        "xdp_drop",
        "max_clean_pps",
    ),
    (
        "AF_XDP SRTP / rtpengine SRTP (max clean)",
        "afxdp_srtp",
        "rtpengine_srtp",
        "max_clean_pps",
    ),
    (
        "relayd socket plain / rtpengine plain (max clean)",
        "socket_plain",
        "rtpengine_plain",
        "max_clean_pps",
    ),
    (
        "relayd socket SRTP->RTP / rtpengine SRTP->RTP (max clean)",
        "socket_srtp",
        "rtpengine_srtp",
        "max_clean_pps",
    ),
    (
        "relayd socket RTP->SRTP / rtpengine RTP->SRTP (max clean)",
        "socket_rtp_to_srtp",
        "rtpengine_rtp_to_srtp",
        "max_clean_pps",
    ),
    (
        "AF_XDP RTP->SRTP / rtpengine RTP->SRTP (max clean)",
        "afxdp_rtp_to_srtp",
        "rtpengine_rtp_to_srtp",
        "max_clean_pps",
    ),
    (
        "AF_XDP SRTP / relayd socket SRTP (max clean)",
        "afxdp_srtp",
        "socket_srtp",
        "max_clean_pps",
    ),
    (
        "AF_XDP SRTP / AF_XDP null forwarder (max clean)",
        "afxdp_srtp",
        "afxdp_null_forward",
        "max_clean_pps",
    ),
    (
        "AF_XDP null forwarder / relayd socket SRTP (max clean)",
        "afxdp_null_forward",
        "socket_srtp",
        "max_clean_pps",
    ),
];

fn print_xdp_table(results: &serde_json::Value) {
    let empty = Vec::new();
    let rows = results["results"].as_array().unwrap_or(&empty);
    println!();
    println!(
        "{} streams, one direction, relay on CPU {}, generator on CPU {}, loss <= 0.1%",
        results["streams"], results["relay_cpu"], results["generator_cpu"]
    );
    println!();
    println!("| scenario | max clean pps | relay CPU busy at max | projected pps | p50 us | p99 us | CPU ns/packet (at pps) | live frames pps |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let get = |r: &serde_json::Value, key: &str| r[key].as_f64().unwrap_or(0.0);
    for r in rows {
        println!(
            "| {} | {:.0}{} | {:.0} % | {:.0} | {:.0} | {:.0} | {:.0} ({}) | {} |",
            r["scenario"].as_str().unwrap_or("?"),
            get(r, "max_clean_pps"),
            if r["generator_limited"].as_bool() == Some(true) {
                " (generator-limited)"
            } else {
                ""
            },
            get(r, "relay_cpu_busy_at_max") * 100.0,
            get(r, "projected_pps"),
            get(r, "p50_us"),
            get(r, "p99_us"),
            get(r, "cpu_ns_per_packet"),
            r["cpu_rate"],
            r["live_frames_pps"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
        );
    }
    let find = |name: &str| rows.iter().find(|r| r["scenario"] == name);
    let ratio = |a: &str, b: &str, key: &str| {
        let (Some(a), Some(b)) = (find(a), find(b)) else {
            return None;
        };
        let (x, y) = (get(a, key), get(b, key));
        (y > 0.0).then(|| x / y)
    };
    for &(label, a, b, key) in XDP_RATIOS {
        if let Some(r) = ratio(a, b, key) {
            println!("{label}: {r:.2}x");
        }
    }
}

const RELAYD_API: &str = "127.0.0.1:18790";
const RTPENGINE_NG: &str = "127.0.0.1:22290";
const BENCH_TOKEN: &str = "bench-token-0123456789abcdef";

/// A child process killed (and waited for) on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One relay under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relay {
    Relayd,
    Rtpengine,
}

impl Relay {
    const fn name(self) -> &'static str {
        match self {
            Self::Relayd => "relayd (socket datapath)",
            Self::Rtpengine => "sipwise rtpengine 10.5 (userspace)",
        }
    }
}

/// What one relay achieved.
#[derive(Debug, Default)]
struct Results {
    plain: Option<serde_json::Value>,
    srtp: Option<serde_json::Value>,
    overload: Option<serde_json::Value>,
    /// (media, relay CPU ns per forwarded packet, received pps) at the fixed load.
    efficiency: Vec<(&'static str, f64, f64)>,
}

/// CPU time (user + system, every thread) a process has used, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = f64::from(u32::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100));
    Ok((ticks(11) + ticks(12)) / hz.max(1.0))
}

fn socket_bench(bench: &SocketBench) -> Result<()> {
    run_step(
        "cargo build --release (relayd, relay-loadgen)",
        Command::new("cargo").args([
            "build",
            "--release",
            "--locked",
            "-p",
            "relay-userspace",
            "--bin",
            "relayd",
            "-p",
            "tests",
            "--bin",
            "relay-loadgen",
        ]),
    )?;
    let release = workspace_root().join("target/release");
    let out_dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let mut all = Vec::new();
    for relay in [Relay::Relayd, Relay::Rtpengine] {
        if relay == Relay::Rtpengine && bench.skip_rtpengine {
            continue;
        }
        println!("==> {}", relay.name());
        let results = measure(relay, bench, &release, &out_dir)?;
        all.push((relay, results));
    }
    print_tables(bench, &all);
    Ok(())
}

fn start_relay(relay: Relay, bench: &SocketBench, release: &Path) -> Result<Guard> {
    let cpu = bench.relay_cpu.to_string();
    let child = match relay {
        Relay::Relayd => Command::new("taskset")
            .args(["-c", &cpu])
            .arg(release.join("relayd"))
            .args([
                "--workers",
                "1",
                "--cpus",
                &cpu,
                "--http-listen",
                RELAYD_API,
                "--token-file",
                "/dev/null",
            ])
            .env("RELAYD_TOKEN", BENCH_TOKEN)
            .env("RELAYD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting relayd")?,
        Relay::Rtpengine => Command::new("taskset")
            .args(["-c", &cpu, "rtpengine"])
            .args([
                "--config-file=none",
                "--foreground",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng={RTPENGINE_NG}"),
                "--port-min=40000",
                "--port-max=49999",
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
            )?,
    };
    let guard = Guard(child);
    // Ready when its control port answers (relayd: TCP connect; rtpengine: an NG ping).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = match relay {
            Relay::Relayd => std::net::TcpStream::connect(RELAYD_API).is_ok(),
            Relay::Rtpengine => ng_ping(),
        };
        if ready {
            return Ok(guard);
        }
        if Instant::now() > deadline {
            bail!("{} did not come up within 10 s", relay.name());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether rtpengine answers an NG `ping` with `pong`.
fn ng_ping() -> bool {
    let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    if socket
        .send_to(b"xtask1 d7:command4:pinge", RTPENGINE_NG)
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 256];
    socket
        .recv(&mut buf)
        .is_ok_and(|n| buf[..n].windows(4).any(|w| w == b"pong"))
}

fn loadgen(
    relay: Relay,
    bench: &SocketBench,
    release: &Path,
    extra: &[String],
) -> Result<serde_json::Value> {
    let control: Vec<String> = match relay {
        Relay::Relayd => vec!["--api".into(), format!("http://{RELAYD_API}")],
        Relay::Rtpengine => vec!["--ng".into(), RTPENGINE_NG.into()],
    };
    let cpu = bench.generator_cpu.to_string();
    let output = Command::new(release.join("relay-loadgen"))
        .args(&control)
        .args([
            "--calls",
            &bench.calls.to_string(),
            "--cpu",
            &cpu,
            "--rx-cpu",
            &cpu,
            "--json",
            "-q",
        ])
        .args(extra)
        .env("RELAYD_TOKEN", BENCH_TOKEN)
        .stderr(Stdio::inherit())
        .output()
        .context("running relay-loadgen")?;
    if !output.status.success() {
        bail!("relay-loadgen failed ({})", output.status);
    }
    serde_json::from_slice(&output.stdout).context("relay-loadgen's JSON")
}

fn measure(relay: Relay, bench: &SocketBench, release: &Path, out_dir: &Path) -> Result<Results> {
    let guard = start_relay(relay, bench, release)?;
    let pid = guard.0.id();
    // CPU per packet at a fixed load both relays carry: independent of the generator's limit.
    let mut efficiency = Vec::new();
    for (media, plain) in [("plain RTP", true), ("SRTP<->RTP", false)] {
        let mut extra = vec![
            "--pps".to_owned(),
            bench.efficiency_pps.to_string(),
            "--duration".to_owned(),
            "10".to_owned(),
        ];
        if plain {
            extra.push("--plain".to_owned());
        }
        let before = cpu_seconds(pid)?;
        let report = loadgen(relay, bench, release, &extra)?;
        let used = cpu_seconds(pid)? - before;
        let received = report["received"].as_f64().unwrap_or(0.0);
        let ns = if received > 0.0 {
            used * 1e9 / received
        } else {
            f64::NAN
        };
        println!(
            "    {media} at {} pps: relay CPU {used:.2} s for {received:.0} packets = {ns:.0} ns/packet, loss {:.4}%",
            report["offered_pps"].as_f64().map_or(0.0, f64::round),
            report["loss_ratio"].as_f64().unwrap_or(1.0) * 100.0
        );
        efficiency.push((media, ns, report["received_pps"].as_f64().unwrap_or(0.0)));
    }
    let search = |plain: bool| -> Result<serde_json::Value> {
        let mut extra = vec![
            "--find-max".to_owned(),
            "--step-secs".to_owned(),
            bench.step_secs.to_string(),
            "--max-steps".to_owned(),
            bench.max_steps.to_string(),
        ];
        if plain {
            extra.push("--plain".to_owned());
        }
        loadgen(relay, bench, release, &extra)
    };
    let plain = search(true)?;
    println!("    plain: {}", summary(&plain));
    let srtp = search(false)?;
    println!("    srtp<->rtp: {}", summary(&srtp));
    let overload = match srtp["result"]["pps_per_stream"].as_u64() {
        Some(per_stream) => {
            let report = loadgen(
                relay,
                bench,
                release,
                &[
                    "--overload".to_owned(),
                    per_stream.to_string(),
                    "--overload-secs".to_owned(),
                    bench.overload_secs.to_string(),
                    "--recover-secs".to_owned(),
                    bench.overload_secs.to_string(),
                ],
            )?;
            println!(
                "    overload: streams alive after recovery {} of {}",
                report["overload"]["recovery"]["streams_alive"],
                report["overload"]["recovery"]["streams_total"]
            );
            Some(report)
        }
        None => None,
    };
    let results = Results {
        plain: Some(plain),
        srtp: Some(srtp),
        overload,
        efficiency,
    };
    let file: PathBuf = out_dir.join(format!(
        "socket-{}.json",
        match relay {
            Relay::Relayd => "relayd",
            Relay::Rtpengine => "rtpengine",
        }
    ));
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&serde_json::json!({
            "plain": results.plain,
            "srtp": results.srtp,
            "overload": results.overload,
            "efficiency": results.efficiency.iter().map(|(m, ns, pps)| serde_json::json!({
                "media": m, "relay_cpu_ns_per_packet": ns, "received_pps": pps,
                "projected_max_pps": 1e9 / ns,
            })).collect::<Vec<_>>(),
        }))?,
    )?;
    Ok(results)
}

fn summary(report: &serde_json::Value) -> String {
    let r = &report["result"];
    format!(
        "max clean {} pps, p50 {} us, p99 {} us",
        r["max_clean_pps"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
        r["latency_us"]["p50"],
        r["latency_us"]["p99"],
    )
}

fn pps(report: Option<&serde_json::Value>) -> Option<f64> {
    report?["result"]["max_clean_pps"].as_f64()
}

fn print_tables(bench: &SocketBench, all: &[(Relay, Results)]) {
    println!();
    println!(
        "{} calls, 172-byte RTP, relay on CPU {}, generator on CPU {}, loss <= 0.1%",
        bench.calls, bench.relay_cpu, bench.generator_cpu
    );
    println!();
    println!("| relay | media | max clean pps | calls at 50 pps/direction | p50 us | p99 us |");
    println!("|---|---|---:|---:|---:|---:|");
    for (relay, results) in all {
        for (media, report) in [("plain RTP", &results.plain), ("SRTP<->RTP", &results.srtp)] {
            let Some(report) = report else { continue };
            let r = &report["result"];
            let max = r["max_clean_pps"].as_f64().unwrap_or(0.0);
            println!(
                "| {} | {media} | {max:.0} | {:.0} | {} | {} |",
                relay.name(),
                max / 100.0,
                r["latency_us"]["p50"],
                r["latency_us"]["p99"]
            );
        }
    }
    if let [(_, ours), (_, theirs)] = all {
        for (media, a, b) in [
            (
                "plain RTP",
                pps(ours.plain.as_ref()),
                pps(theirs.plain.as_ref()),
            ),
            (
                "SRTP<->RTP",
                pps(ours.srtp.as_ref()),
                pps(theirs.srtp.as_ref()),
            ),
        ] {
            if let (Some(a), Some(b)) = (a, b) {
                println!("relayd vs rtpengine, {media}: {:.2}x", a / b);
            }
        }
    }
    println!();
    println!(
        "| relay | media | relay CPU ns/packet at the fixed load | one-core capacity (1e9 / ns) |"
    );
    println!("|---|---|---:|---:|");
    for (relay, results) in all {
        for (media, ns, _) in &results.efficiency {
            println!("| {} | {media} | {ns:.0} | {:.0} |", relay.name(), 1e9 / ns);
        }
    }
    if let [(_, ours), (_, theirs)] = all {
        for ((media, a, _), (_, b, _)) in ours.efficiency.iter().zip(&theirs.efficiency) {
            println!(
                "relayd vs rtpengine, CPU per packet, {media}: {:.2}x fewer ns",
                b / a
            );
        }
    }
    println!();
    println!("| relay | overload pps/stream | streams | alive after recovery | dead |");
    println!("|---|---:|---:|---:|---:|");
    for (relay, results) in all {
        if let Some(report) = &results.overload {
            let o = &report["overload"];
            println!(
                "| {} | {} | {} | {} | {} |",
                relay.name(),
                o["pps_per_stream"],
                o["recovery"]["streams_total"],
                o["recovery"]["streams_alive"],
                o["recovery"]["streams_dead"]
            );
        }
    }
}
