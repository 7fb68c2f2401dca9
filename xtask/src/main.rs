//! Project automation: `cargo xtask setup | up | test`.
//!
//! - `setup` installs everything the build and the tests need on a fresh Debian machine, and is
//!   fast and quiet when all of it is already there.
//! - `up` runs setup, builds, and runs the stack in the foreground on loopback defaults.
//! - `test` runs setup, the format and lint checks, and every test including the root-only
//!   BPF and network-namespace ones.
//! - `bench` runs the benchmark commands.
//!
//! Errors are one line (`xtask: ...`), never a backtrace.

mod bench;
mod bench_ng;
mod bench_sip;
mod setup;
mod test;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the toolchain pieces, Debian packages and Python test dependencies.
    Setup,
    /// Build and run the stack in the foreground on loopback defaults (Ctrl-C stops it).
    Up(up::UpArgs),
    /// Setup, formatting and lint checks, then every test in the workspace.
    Test(test::TestArgs),
    /// Benchmarks (commands, not tests); results go to docs/PERFORMANCE.md.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Up(args) => up::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.to_path_buf(), std::path::Path::to_path_buf)
}

/// Runs a command in the workspace root, streaming its output; fails naming the step.
fn run_step(step: &str, cmd: &mut std::process::Command) -> anyhow::Result<()> {
    println!("==> {step}");
    let status = cmd.current_dir(workspace_root()).status().map_err(|e| {
        anyhow::anyhow!("{step}: cannot start {}: {e}", cmd.get_program().display())
    })?;
    anyhow::ensure!(status.success(), "{step} failed ({status})");
    Ok(())
}
