//! Builds the XDP program (crate `relay-ebpf`) for `bpfel-unknown-none` with aya-build, so that
//! `cargo build`, `cargo test` and `cargo clippy` of relayd always embed a fresh object.
//!
//! relay-ebpf is its own Cargo workspace (it needs nightly, `-Z build-std=core` and bpf-linker,
//! none of which the host build uses). aya-build runs `cargo build --package relay-ebpf` in the
//! current directory, so the build script moves into relay-ebpf's directory first. The object
//! lands in `OUT_DIR/relay-xdp`, which `src/xdp.rs` embeds.
use std::{env, path::PathBuf};

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("relay-userspace has no parent directory"))?;
    let ebpf_dir = root.join("relay-ebpf");
    let ebpf_dir_str = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // The eBPF object also depends on the shared types.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("relay-common").display()
    );
    env::set_current_dir(&ebpf_dir).with_context(|| format!("entering {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "relay-ebpf",
            root_dir: ebpf_dir_str,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context(
        "building the XDP program failed; `cargo xtask setup` installs the nightly rust-src \
         component and bpf-linker it needs",
    )
}
