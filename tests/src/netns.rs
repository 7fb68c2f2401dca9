//! Network namespaces and veth pairs for kernel-datapath tests.
//!
//! Every namespace gets a name unique to this process and call, and is deleted when its guard
//! drops (deleting a namespace deletes the veth ends inside it), so a failing test cleans up
//! too. Addresses come from 198.18.0.0/15 (RFC 2544) and exist only inside these namespaces.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A unique short tag (`<pid><n>`) for names of namespaces and interfaces (at most 15 bytes).
pub fn unique_tag() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{}{n}", std::process::id() % 1_000_000)
}

/// A network namespace owned by the test; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `smp-<role>-<unique>` and brings its loopback up.
    ///
    /// # Panics
    /// When `ip netns add` fails (not root, or iproute2 missing).
    pub fn create(role: &str) -> Self {
        let name = format!("smp-{role}-{}", unique_tag());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>` and panics with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs inside the namespace (`ip netns exec <ns> <program>`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its result. Sockets
    /// created by `f` stay in the namespace for their whole life, wherever they are used later.
    ///
    /// # Panics
    /// When the namespace cannot be entered, or when `f` panics (the panic is propagated).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                    // SAFETY: setns on a valid namespace fd affects only this thread.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let result = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match result {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}

/// Creates a veth pair with `name_a` in `ns_a` and `name_b` in `ns_b`, assigns the given
/// `address/prefix` to each end (198.18.0.0/15 only) and brings both up.
///
/// # Panics
/// When an address is outside 198.18.0.0/15 or a command fails.
pub fn veth_pair(
    ns_a: &Netns,
    name_a: &str,
    addr_a: &str,
    ns_b: &Netns,
    name_b: &str,
    addr_b: &str,
) {
    for addr in [addr_a, addr_b] {
        assert!(
            addr.starts_with("198.18.") || addr.starts_with("198.19."),
            "test addresses must be in 198.18.0.0/15, got {addr}"
        );
    }
    run_ok(Command::new("ip").args([
        "link",
        "add",
        name_a,
        "netns",
        ns_a.name(),
        "type",
        "veth",
        "peer",
        "name",
        name_b,
        "netns",
        ns_b.name(),
    ]));
    ns_a.ip(&["addr", "add", addr_a, "dev", name_a]);
    ns_b.ip(&["addr", "add", addr_b, "dev", name_b]);
    ns_a.ip(&["link", "set", name_a, "up"]);
    ns_b.ip(&["link", "set", name_b, "up"]);
}

/// Runs a command, panicking with its stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}
