//! `cargo xtask bench sip`: call setups per second through sip-controller, each call with a
//! relayd session (PUT at the offer, PUT at the answer, DELETE at the BYE).
//!
//! sip-controller is pinned alone to `--controller-cpu`; relayd, `SIPp` and `sip-callgen` share
//! `--generator-cpu`. Two series on loopback:
//!
//! - **TLS**: `sip-callgen` places calls over one TLS connection (SRTP offer, mandatory on
//!   both trunks) and answers them as the TLS trunk the controller routes to, so both legs are
//!   TLS + SDES-SRTP;
//! - **UDP**: `SIPp`'s built-in `uac` (from 127.0.0.2) and `uas` (on 127.0.0.3), plain RTP.
//!
//! Each series ramps the offered rate step by step (`--step-secs` each); the max clean rate is
//! the highest step with zero failed calls and the achieved rate within 2% of the offered one.
//! Then 80% of that rate runs for `--confirm-secs` and must have zero failed calls; the
//! controller's CPU time per call is taken from `/proc/<pid>/stat` over that run.

// Rates over call counts far below 2^52: float conversions are exact enough.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{run_step, workspace_root};

/// Options of `bench sip`.
#[derive(Debug, Args)]
pub struct SipBench {
    /// CPU for sip-controller.
    #[arg(long, default_value_t = 1)]
    controller_cpu: usize,
    /// CPU for relayd and the load generators.
    #[arg(long, default_value_t = 0)]
    generator_cpu: usize,
    /// Seconds per ramp step.
    #[arg(long, default_value_t = 4)]
    step_secs: u64,
    /// Seconds of the confirmation run at 80% of the max clean rate.
    #[arg(long, default_value_t = 15)]
    confirm_secs: u64,
    /// Offered rates (calls/s) of the ramp, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,200,300,400,500,600,800,1000,1200,1500,2000"
    )]
    rates: Vec<u32>,
    /// Only this series (`tls` or `udp`).
    #[arg(long)]
    only: Option<String>,
}

const SIP_PORT: u16 = 25060;
const TLS_PORT: u16 = 25061;
const CALLGEN_UAS: &str = "127.0.0.1:25071";
const SIPP_UAS: &str = "127.0.0.3:25090";
const RELAYD_API: &str = "127.0.0.1:18791";
const CONTROLLER_API: &str = "127.0.0.1:18091";
const TOKEN: &str = "bench-token-0123456789abcdef";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct Step {
    rate: u32,
    attempted: u64,
    failed: u64,
    achieved: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Step {
    fn clean(&self) -> bool {
        self.failed == 0 && self.achieved >= f64::from(self.rate) * 0.98
    }
}

fn config(state: &Path) -> String {
    format!(
        r#"[sip]
udp = ["127.0.0.1:{SIP_PORT}"]
tcp = ["127.0.0.1:{SIP_PORT}"]
tls = ["127.0.0.1:{TLS_PORT}"]
max_calls = 100000
[tls]
state_dir = "{state}"
verify_server = false
[relay]
url = "http://{RELAYD_API}"
token_file = "/dev/null"
media_timeout_secs = 300
[api]
listen = "{CONTROLLER_API}"
[ng]
udp = []
[registrar]
allow_unauthenticated_from = []
[[trunks]]
name = "carrier"
uri = "sips:{CALLGEN_UAS}"
allow_from = ["127.0.0.1/32"]
srtp = "mandatory"
[[trunks]]
name = "sipp"
uri = "sip:127.0.0.2:25070"
allow_from = ["127.0.0.2/32"]
srtp = "off"
[[trunks]]
name = "pbx"
uri = "sip:{SIPP_UAS}"
srtp = "off"
[[routes]]
name = "tls-loop"
from = "carrier"
to = "carrier"
[[routes]]
name = "udp-sipp"
from = "sipp"
to = "pbx"
"#,
        state = state.display()
    )
}

fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
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
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

fn wait_for_port(addr: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("{addr} did not come up within 10 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[allow(clippy::too_many_lines)] // one linear script: build, start, ramp, confirm, table
pub fn run(bench: &SipBench) -> Result<()> {
    run_step(
        "cargo build --release (relayd, sip-controller, sip-callgen)",
        Command::new("cargo").args([
            "build",
            "--release",
            "--locked",
            "-p",
            "relay-userspace",
            "--bin",
            "relayd",
            "-p",
            "sip-controller",
            "--bin",
            "sip-controller",
            "-p",
            "tests",
            "--bin",
            "sip-callgen",
        ]),
    )?;
    let release = workspace_root().join("target/release");
    let state = workspace_root().join("target/bench/sip-state");
    std::fs::create_dir_all(&state)?;
    let config_file = state.join("sip-controller.toml");
    std::fs::write(&config_file, config(&state))?;
    // Every call holds 4 media ports and relayd quarantines released ports: a wide range and a
    // short quarantine keep thousands of calls a second from exhausting it.
    let relayd_config = state.join("relayd.toml");
    std::fs::write(
        &relayd_config,
        "[media]\nport_quarantine_secs = 2\nmax_sessions = 50000\n\n[[interface]]\nname = \"default\"\naddress = \"127.0.0.1\"\nport_min = 20000\nport_max = 59999\n",
    )?;
    let gen_cpu = bench.generator_cpu.to_string();
    let _relayd = Guard(
        Command::new("taskset")
            .args(["-c", &gen_cpu])
            .arg(release.join("relayd"))
            .arg("--config")
            .arg(&relayd_config)
            .args([
                "--workers",
                "1",
                "--http-listen",
                RELAYD_API,
                "--token-file",
                "/dev/null",
            ])
            .env("RELAYD_TOKEN", TOKEN)
            .env("RELAYD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting relayd")?,
    );
    wait_for_port(RELAYD_API)?;
    let controller = Guard(
        Command::new("taskset")
            .args(["-c", &bench.controller_cpu.to_string()])
            .arg(release.join("sip-controller"))
            .arg("-c")
            .arg(&config_file)
            .env("RELAYD_TOKEN", TOKEN)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .context("starting sip-controller")?,
    );
    wait_for_port(CONTROLLER_API)?;
    let pid = controller.0.id();
    let mut rows = Vec::new();
    for series in ["tls", "udp"] {
        if bench.only.as_deref().is_some_and(|only| only != series) {
            continue;
        }
        println!("==> {series}: ramp");
        let mut best: Option<Step> = None;
        for &rate in &bench.rates {
            let step = run_load(series, rate, bench.step_secs, &release, &gen_cpu)?;
            println!(
                "    {rate:>5} calls/s offered: {} attempted, {} failed, {:.0} calls/s set up{}",
                step.attempted,
                step.failed,
                step.achieved,
                step.p99_ms
                    .map_or_else(String::new, |p| format!(", setup p99 {p:.1} ms"))
            );
            if !step.clean() {
                break;
            }
            best = Some(step);
            // Let retransmission timers and relay deletes of the last step drain.
            std::thread::sleep(Duration::from_secs(2));
        }
        let Some(best) = best else {
            println!("    no clean step");
            rows.push((series, None, None, None));
            continue;
        };
        let confirm_rate = (f64::from(best.rate) * 0.8).round() as u32;
        std::thread::sleep(Duration::from_secs(3));
        let cpu_before = cpu_seconds(pid);
        let confirm = run_load(series, confirm_rate, bench.confirm_secs, &release, &gen_cpu)?;
        let cpu_per_call_us =
            (cpu_seconds(pid) - cpu_before) * 1e6 / (confirm.attempted.max(1) as f64);
        println!(
            "==> {series}: max clean {} calls/s; at 80% ({confirm_rate} calls/s, {} s): {} calls, {} failed; controller CPU {cpu_per_call_us:.0} us/call",
            best.rate, bench.confirm_secs, confirm.attempted, confirm.failed
        );
        rows.push((series, Some(best), Some(confirm), Some(cpu_per_call_us)));
    }
    println!();
    println!("| series | max clean calls/s | setup p50 / p99 ms at max | 80% run: calls/s, calls, failed | controller CPU per call |");
    println!("|---|---:|---:|---:|---:|");
    for (series, best, confirm, cpu) in &rows {
        match (best, confirm, cpu) {
            (Some(b), Some(c), Some(cpu)) => println!(
                "| {series} | {} | {} / {} | {}, {}, {} | {cpu:.0} us |",
                b.rate,
                b.p50_ms
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
                b.p99_ms
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
                c.rate,
                c.attempted,
                c.failed
            ),
            _ => println!("| {series} | no clean step | - | - | - |"),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_lines)] // two load tools, each a linear run-and-parse
fn run_load(series: &str, rate: u32, secs: u64, release: &Path, cpu: &str) -> Result<Step> {
    let calls = u64::from(rate) * secs;
    if series == "tls" {
        let output = Command::new("taskset")
            .args(["-c", cpu])
            .arg(release.join("sip-callgen"))
            .args([
                "--controller",
                &format!("127.0.0.1:{TLS_PORT}"),
                "--uas-listen",
                CALLGEN_UAS,
                "--rate",
                &rate.to_string(),
                "--calls",
                &calls.to_string(),
                "--state-dir",
                &workspace_root()
                    .join("target/bench/sip-state/callgen")
                    .display()
                    .to_string(),
            ])
            .output()
            .context("running sip-callgen")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let report: serde_json::Value = serde_json::from_str(text.trim()).with_context(|| {
            format!(
                "sip-callgen printed no report: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        let num = |k: &str| report[k].as_f64().unwrap_or(0.0);
        return Ok(Step {
            rate,
            attempted: report["attempted"].as_u64().unwrap_or(0),
            failed: report["failed"].as_u64().unwrap_or(u64::MAX),
            achieved: num("achieved_setup_rate"),
            p50_ms: Some(num("setup_ms_p50")),
            p99_ms: Some(num("setup_ms_p99")),
        });
    }
    let _uas = Guard(
        Command::new("taskset")
            .args([
                "-c",
                cpu,
                "sipp",
                "-sn",
                "uas",
                "-i",
                "127.0.0.3",
                "-p",
                "25090",
                "-nostdin",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting SIPp uas (Debian sip-tester)")?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let output = Command::new("taskset")
        .args([
            "-c",
            cpu,
            "sipp",
            "-sn",
            "uac",
            "-i",
            "127.0.0.2",
            "-p",
            "25070",
            "-s",
            "9000",
        ])
        .args([
            "-r",
            &rate.to_string(),
            "-m",
            &calls.to_string(),
            "-nostdin",
        ])
        .args(["-timeout", &format!("{}s", secs + 20), "-timeout_error"])
        .arg(format!("127.0.0.1:{SIP_PORT}"))
        .output()
        .context("running SIPp uac")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let count = |label: &str| -> u64 {
        text.lines()
            .filter(|l| l.contains(label))
            .filter_map(|l| l.rsplit('|').next().and_then(|v| v.trim().parse().ok()))
            .next_back()
            .unwrap_or(0)
    };
    let successful = count("Successful call");
    let failed = count("Failed call") + calls.saturating_sub(successful + count("Failed call"));
    Ok(Step {
        rate,
        attempted: calls,
        failed,
        achieved: successful as f64 / secs as f64,
        p50_ms: None,
        p99_ms: None,
    })
}
