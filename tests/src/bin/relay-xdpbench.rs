//! `relay-xdpbench`: the kernel-datapath benchmark (`cargo xtask bench xdp` runs it; root).
//! See `tests::xdpbench` for what is measured and how.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use tests::xdpbench::{self, Options, Scenario};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "relay-xdpbench",
    about = "Every relay on the same veth topology, in one run"
)]
struct Cli {
    /// Calls (one stream each, caller -> callee).
    #[arg(long, default_value_t = 200)]
    streams: u32,
    /// CPU of the relay under test.
    #[arg(long, default_value_t = 1)]
    relay_cpu: usize,
    /// CPU of the generator.
    #[arg(long, default_value_t = 0)]
    generator_cpu: usize,
    /// Milliseconds per rate step.
    #[arg(long, default_value_t = 2000)]
    step_ms: u64,
    /// Rate at which CPU per packet is compared.
    #[arg(long, default_value_t = 100_000)]
    cpu_rate: u64,
    /// relayd's `datapath.xdp_ring_size` for the XDP scenarios (AF_XDP ring descriptors).
    #[arg(long, default_value_t = xdpbench::XDP_RING_SIZE)]
    xdp_ring_size: u32,
    /// relayd's AF_XDP scenario in preferred-busy-polling mode (`datapath.xdp_busy_poll`,
    /// NAPI deferral on the relay's veths); `false` leaves receive processing to the NAPI
    /// threads.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    afxdp_busy_poll: bool,
    /// Scenarios (repeat; default: all).
    #[arg(long = "scenario")]
    scenarios: Vec<Scenario>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("relay-xdpbench: needs root (namespaces, XDP, AF_XDP)");
        return ExitCode::FAILURE;
    }
    let options = Options {
        streams: cli.streams.max(1),
        relay_cpu: cli.relay_cpu,
        generator_cpu: cli.generator_cpu,
        step: Duration::from_millis(cli.step_ms.max(200)),
        cpu_rate: cli.cpu_rate,
        max_loss: 0.001,
        xdp_ring_size: cli.xdp_ring_size,
        afxdp_busy_poll: cli.afxdp_busy_poll,
        scenarios: if cli.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            cli.scenarios
        },
    };
    match xdpbench::run(&options) {
        Ok(results) => {
            if let Some(path) = &cli.json {
                let json = serde_json::json!({
                    "streams": options.streams,
                    "relay_cpu": options.relay_cpu,
                    "generator_cpu": options.generator_cpu,
                    "step_ms": options.step.as_millis(),
                    "xdp_ring_size": options.xdp_ring_size,
                    "afxdp_busy_poll": options.afxdp_busy_poll,
                    "napi_defer_ns": xdpbench::NAPI_DEFER_NS,
                    "results": results,
                });
                if let Err(e) =
                    std::fs::write(path, serde_json::to_vec_pretty(&json).unwrap_or_default())
                {
                    eprintln!("relay-xdpbench: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relay-xdpbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
