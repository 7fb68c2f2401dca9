//! `cargo xtask bench ...`: benchmark commands (never timed tests).
//!
//! - `bench srtp`: this SRTP engine against libsrtp 2.5 in one process, on the same packets,
//!   pinned to one core; prints the Markdown table that goes into docs/PERFORMANCE.md.
//!   `--criterion` also runs the criterion benchmarks (`cargo bench -p srtp`).

use std::process::Command;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::{run_step, setup};

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
}

pub fn run(args: &BenchArgs) -> Result<()> {
    setup::run()?;
    match &args.target {
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
