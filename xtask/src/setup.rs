//! `cargo xtask setup`: idempotent installation of everything the build and tests need.
//!
//! Each step checks first and prints one line; a machine that has everything is done in about
//! a second. Failures are one line naming the cause: not root, a registry that cannot be
//! reached, a missing nightly toolchain.

use std::{
    path::Path,
    process::{Command, Output},
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::workspace_root;

/// Debian packages: the LLVM that bpf-linker links against, network tools for the namespace
/// tests, and the interop peers later tests drive.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "iputils-ping",
    "ethtool",
    "baresip",
    "kamailio",
    "kamailio-tls-modules",
    "rtpengine-daemon",
    "rtpengine-utils",
    "sip-tester",
    "libsrtp2-dev",
    "tshark",
];

/// bpf-linker release built against LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const NIGHTLY: &str = "nightly";
/// Python test dependencies, pinned, installed into `<workspace>/.venv`.
const PYTHON_REQUIREMENTS: &str = "tests/requirements.txt";
const BPFFS: &str = "/sys/fs/bpf";

pub fn run() -> Result<()> {
    require_root()?;
    apt_packages()?;
    nightly_components()?;
    bpf_linker()?;
    cargo_nextest()?;
    cargo_fuzz()?;
    python_venv()?;
    bpffs()?;
    println!("setup: done");
    Ok(())
}

fn ok(step: &str, detail: &str) {
    println!("setup: {step:<12} ok ({detail})");
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "setup must run as root: it installs Debian packages, loads BPF programs and \
             mounts bpffs (try: sudo -E cargo xtask setup)"
        );
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("cannot run {}", cmd.get_program().display()))
}

/// Whether text from apt, pip or cargo says a registry could not be reached.
fn looks_unreachable(text: &str) -> bool {
    [
        "Could not resolve",
        "Temporary failure in name resolution",
        "Failed to fetch",
        "Connection refused",
        "Network is unreachable",
        "Connection timed out",
        "Failed to establish a new connection",
        "failed to query replaced source registry",
        "failed to download",
        "Could not fetch URL",
        "No matching distribution found",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// The first line of `text` that looks like an error, or its last non-empty line.
fn first_error_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("E:") || l.starts_with("error") || l.starts_with("ERROR"))
        .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("no output")
        .trim()
}

fn apt_packages() -> Result<()> {
    let query = output(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
            .args(APT_PACKAGES),
    )?;
    let listing = String::from_utf8_lossy(&query.stdout);
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            !listing
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [*pkg, "ii"])
        })
        .collect();
    if missing.is_empty() {
        ok("apt", &format!("{} packages present", APT_PACKAGES.len()));
        return Ok(());
    }
    println!("setup: apt          installing {}", missing.join(" "));
    let update = output(Command::new("apt-get").args(["update", "-q"]))?;
    let update_text = format!(
        "{}{}",
        String::from_utf8_lossy(&update.stdout),
        String::from_utf8_lossy(&update.stderr)
    );
    if !update.status.success() || update_text.contains("Failed to fetch") {
        bail!(
            "cannot reach the Debian package registry (apt-get update): {}",
            first_error_line(&update_text)
        );
    }
    let install = output(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )?;
    if !install.status.success() {
        let text = String::from_utf8_lossy(&install.stderr);
        if looks_unreachable(&text) {
            bail!(
                "cannot reach the Debian package registry: {}",
                first_error_line(&text)
            );
        }
        bail!(
            "apt-get install {} failed: {}",
            missing.join(" "),
            first_error_line(&text)
        );
    }
    ok("apt", &format!("installed {}", missing.join(" ")));
    Ok(())
}

fn nightly_components() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !String::from_utf8_lossy(&toolchains.stdout)
        .lines()
        .any(|l| l.starts_with("nightly-"))
    {
        bail!(
            "the nightly Rust toolchain is missing; the XDP program is built with it \
             (rustup toolchain install nightly --component rust-src)"
        );
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    let installed = String::from_utf8_lossy(&installed.stdout).into_owned();
    // rust-src: `-Z build-std=core` for bpfel-unknown-none; rustfmt: the import options.
    for component in ["rust-src", "rustfmt"] {
        if installed.lines().any(|l| l.starts_with(component)) {
            ok(component, "nightly");
            continue;
        }
        let add = output(Command::new("rustup").args([
            "component",
            "add",
            component,
            "--toolchain",
            NIGHTLY,
        ]))?;
        if !add.status.success() {
            let text = String::from_utf8_lossy(&add.stderr);
            bail!(
                "rustup component add {component} --toolchain nightly failed{}: {}",
                if looks_unreachable(&text) {
                    " (the Rust distribution server cannot be reached)"
                } else {
                    ""
                },
                first_error_line(&text)
            );
        }
        ok(component, "added to nightly");
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION}");
    if let Ok(out) = Command::new("bpf-linker").arg("--version").output() {
        let version = String::from_utf8_lossy(&out.stdout);
        if version.trim() == wanted {
            ok("bpf-linker", BPF_LINKER_VERSION);
            return Ok(());
        }
    }
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        bail!("{LLVM_PREFIX} is missing; bpf-linker needs llvm-22-dev (the apt step installs it)");
    }
    println!("setup: bpf-linker   building {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)");
    let path = format!(
        "{LLVM_PREFIX}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let install = output(
        Command::new("cargo")
            .env("PATH", path)
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ]),
    )?;
    if !install.status.success() {
        let text = String::from_utf8_lossy(&install.stderr);
        if looks_unreachable(&text) {
            bail!(
                "cannot reach crates.io to build bpf-linker: {}",
                first_error_line(&text)
            );
        }
        bail!("building bpf-linker failed: {}", first_error_line(&text));
    }
    ok("bpf-linker", &format!("built {BPF_LINKER_VERSION}"));
    Ok(())
}

fn cargo_nextest() -> Result<()> {
    if Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        ok("nextest", "present");
        return Ok(());
    }
    println!("setup: nextest      installing cargo-nextest");
    let install = output(Command::new("cargo").args(["install", "cargo-nextest", "--locked"]))?;
    if !install.status.success() {
        let text = String::from_utf8_lossy(&install.stderr);
        if looks_unreachable(&text) {
            bail!(
                "cannot reach crates.io to install cargo-nextest: {}",
                first_error_line(&text)
            );
        }
        bail!(
            "installing cargo-nextest failed: {}",
            first_error_line(&text)
        );
    }
    ok("nextest", "installed");
    Ok(())
}

fn cargo_fuzz() -> Result<()> {
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        ok("cargo-fuzz", "present");
        return Ok(());
    }
    println!("setup: cargo-fuzz   installing cargo-fuzz");
    let install = output(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    if !install.status.success() {
        let text = String::from_utf8_lossy(&install.stderr);
        if looks_unreachable(&text) {
            bail!(
                "cannot reach crates.io to install cargo-fuzz: {}",
                first_error_line(&text)
            );
        }
        bail!("installing cargo-fuzz failed: {}", first_error_line(&text));
    }
    ok("cargo-fuzz", "installed");
    Ok(())
}

fn python_venv() -> Result<()> {
    let root = workspace_root();
    let venv = root.join(".venv");
    let python = venv.join("bin/python");
    let requirements = root.join(PYTHON_REQUIREMENTS);
    let stamp = venv.join(".requirements-installed");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        ok("python", ".venv up to date");
        return Ok(());
    }
    if !python.exists() {
        let create = output(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        if !create.status.success() {
            bail!(
                "python3 -m venv {} failed: {}",
                venv.display(),
                first_error_line(&String::from_utf8_lossy(&create.stderr))
            );
        }
    }
    let install = output(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
    )?;
    if !install.status.success() {
        let text = String::from_utf8_lossy(&install.stderr);
        if looks_unreachable(&text) {
            bail!("cannot reach PyPI: {}", first_error_line(&text));
        }
        bail!(
            "pip install -r {PYTHON_REQUIREMENTS} failed: {}",
            first_error_line(&text)
        );
    }
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    ok(
        "python",
        &format!("installed {PYTHON_REQUIREMENTS} into .venv"),
    );
    Ok(())
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some(BPFFS) && l.split_whitespace().nth(2) == Some("bpf")
    }) {
        ok("bpffs", BPFFS);
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    let mount = output(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    if !mount.status.success() {
        return Err(anyhow!(
            "mount -t bpf bpf {BPFFS} failed: {}",
            first_error_line(&String::from_utf8_lossy(&mount.stderr))
        ));
    }
    ok("bpffs", &format!("mounted at {BPFFS}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{first_error_line, looks_unreachable};

    #[test]
    fn apt_and_pip_network_failures_are_recognised() {
        assert!(looks_unreachable(
            "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  \
             Temporary failure resolving 'deb.debian.org'"
        ));
        assert!(looks_unreachable(
            "WARNING: Retrying ... Failed to establish a new connection: [Errno -3]"
        ));
        assert!(!looks_unreachable("E: Unable to locate package nosuchpkg"));
    }

    #[test]
    fn the_first_error_line_is_reported() {
        let text = "Reading package lists...\nE: Unable to locate package x\nE: second\n";
        assert_eq!(first_error_line(text), "E: Unable to locate package x");
        assert_eq!(first_error_line("a\nlast line\n\n"), "last line");
        assert_eq!(first_error_line(""), "no output");
    }
}
