//! `cargo xtask test`: setup, formatting, lints with warnings denied, then every test in the
//! workspace (root-only BPF and network-namespace tests included; under `CI=true` they fail
//! rather than skip when they cannot run). Ends with the test runner's own summary.

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::{run_step, setup};

/// (crate directory, target) of every cargo-fuzz target.
const FUZZ_TARGETS: &[(&str, &str)] = &[
    ("srtp", "unprotect"),
    ("sip-controller", "sip_parse"),
    ("sip-controller", "sdp_rewrite"),
    ("sip-controller", "ng_decode"),
];

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy (for quick local iterations; CI runs them).
    #[arg(long)]
    skip_checks: bool,
    /// Extra arguments for `cargo nextest run` (e.g. a test name filter).
    #[arg(last = true)]
    nextest_args: Vec<String>,
}

pub fn run(args: &TestArgs) -> Result<()> {
    setup::run()?;
    if !args.skip_checks {
        // Nightly rustfmt honours the import grouping options in rustfmt.toml.
        run_step(
            "cargo fmt --check",
            Command::new("cargo").args(["+nightly", "fmt", "--all", "--", "--check"]),
        )?;
        run_step(
            "cargo clippy (warnings denied)",
            Command::new("cargo").args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    // Integration tests start relayd and friends as processes: build every binary first.
    run_step(
        "cargo build --bins",
        Command::new("cargo").args(["build", "--workspace", "--bins", "--locked"]),
    )?;
    // Every fuzz target runs briefly (at most 50 000 inputs or 60 s), so a target that no
    // longer builds, or crashes on what it finds quickly, fails the run. Longer campaigns:
    // `cargo +nightly fuzz run --fuzz-dir <crate>/fuzz <target>`.
    for (dir, target) in FUZZ_TARGETS {
        run_step(
            &format!("fuzz smoke: {dir}/fuzz {target}"),
            Command::new("cargo").args([
                "+nightly",
                "fuzz",
                "run",
                "--fuzz-dir",
                &format!("{dir}/fuzz"),
                target,
                "--",
                "-runs=50000",
                "-max_total_time=60",
            ]),
        )?;
    }
    run_step(
        "doc tests",
        Command::new("cargo").args(["test", "--workspace", "--doc", "--locked", "--quiet"]),
    )?;
    run_step(
        "cargo nextest run (every test, root-only ones included)",
        Command::new("cargo")
            .args([
                "nextest",
                "run",
                "--workspace",
                "--locked",
                "--no-fail-fast",
            ])
            .args(&args.nextest_args),
    )
}
