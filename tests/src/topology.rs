//! The kernel-datapath test bed: a caller, a relay and a callee namespace joined by two veth
//! pairs, and relayd running as a process inside the relay namespace.
//!
//! ```text
//!   caller ns                  relay ns (relayd; XDP on r0 and r1)           callee ns
//!   c0 198.18.0.2/24 <-veth-> r0 198.18.0.1/24    r1 198.18.1.1/24 <-veth-> e1 198.18.1.2/24
//! ```
//!
//! Every veth end has `queues` RX/TX queues (AF_XDP binds one socket per queue). The peers'
//! ends carry the XDP program without flows (it passes everything): veth delivers `XDP_TX` and
//! redirected frames only to an end with an XDP program. The peers send with full UDP checksums
//! (`ethtool -K tx off`), as frames from a real NIC arrive: with veth's offload a local sender
//! leaves only the pseudo-header sum, which an XDP rewrite cannot complete.

use std::{
    path::PathBuf,
    process::{Child, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use relay_userspace::xdp::{AttachMode, RelayXdp};
use serde_json::Value;

use crate::{
    loadgen::http::{HttpClient, Token},
    netns::{run_ok, unique_tag, Netns},
    workspace_bin,
};

/// The relay's address toward the caller.
pub const RELAY_CALLER_SIDE: &str = "198.18.0.1";
/// The relay's address toward the callee.
pub const RELAY_CALLEE_SIDE: &str = "198.18.1.1";
/// The caller's address.
pub const CALLER: &str = "198.18.0.2";
/// The callee's address.
pub const CALLEE: &str = "198.18.1.2";
/// Bearer token of the relayd processes started here.
pub const TOKEN: &str = "netns-relayd-token-0123456789";

/// Three namespaces and two veth pairs (see the module doc).
#[derive(Debug)]
pub struct Topology {
    /// The caller's namespace.
    pub caller: Netns,
    /// The relay's namespace.
    pub relay: Netns,
    /// The callee's namespace.
    pub callee: Netns,
    /// The caller's veth end.
    pub c0: String,
    /// The relay's end toward the caller.
    pub r0: String,
    /// The relay's end toward the callee.
    pub r1: String,
    /// The callee's veth end.
    pub e1: String,
    peer_programs: Vec<RelayXdp>,
}

/// Preferred busy polling's device side on `dev` in `ns`: the kernel leaves its receive
/// processing (NAPI) to a busy-polling socket and takes it back `timeout_ns` after the socket
/// stops polling (`napi_defer_hard_irqs`, `gro_flush_timeout`).
pub fn defer_napi(ns: &Netns, dev: &str, timeout_ns: u32) {
    run_ok(ns.command("sh").args([
        "-c",
        &format!(
            "echo 2 > /sys/class/net/{dev}/napi_defer_hard_irqs && \
             echo {timeout_ns} > /sys/class/net/{dev}/gro_flush_timeout"
        ),
    ]));
}

impl Topology {
    /// Builds the bed with `queues` queues per veth end.
    ///
    /// # Panics
    /// When a command fails (not root, iproute2 or ethtool missing).
    pub fn new(queues: u32) -> Self {
        Self::build(queues, true)
    }

    /// As [`Topology::new`]; without `peer_programs` the peers' ends get no XDP program (a
    /// benchmark attaches its own).
    ///
    /// # Panics
    /// As [`Topology::new`].
    pub fn build(queues: u32, peer_programs: bool) -> Self {
        let (caller, relay, callee) = (
            Netns::create("caller"),
            Netns::create("relay"),
            Netns::create("callee"),
        );
        let tag = unique_tag();
        let (c0, r0, r1, e1) = (
            format!("c{tag}"),
            format!("r{tag}a"),
            format!("r{tag}b"),
            format!("e{tag}"),
        );
        let q = queues.to_string();
        for (outer, outer_ns, inner, inner_ns) in
            [(&c0, &caller, &r0, &relay), (&e1, &callee, &r1, &relay)]
        {
            run_ok(std::process::Command::new("ip").args([
                "link",
                "add",
                outer,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "netns",
                outer_ns.name(),
                "type",
                "veth",
                "peer",
                "name",
                inner,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "netns",
                inner_ns.name(),
            ]));
        }
        caller.ip(&["addr", "add", "198.18.0.2/24", "dev", &c0]);
        relay.ip(&["addr", "add", "198.18.0.1/24", "dev", &r0]);
        relay.ip(&["addr", "add", "198.18.1.1/24", "dev", &r1]);
        callee.ip(&["addr", "add", "198.18.1.2/24", "dev", &e1]);
        for (ns, dev) in [(&caller, &c0), (&relay, &r0), (&relay, &r1), (&callee, &e1)] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        for (ns, dev) in [(&caller, &c0), (&callee, &e1)] {
            run_ok(ns.command("ethtool").args(["-K", dev, "tx", "off"]));
        }
        // Resolve the neighbours once, so XDP finds next hops from the first packet.
        for target in [CALLER, CALLEE] {
            run_ok(relay.command("ping").args(["-c", "1", "-W", "2", target]));
        }
        let peer_programs = if peer_programs {
            vec![
                caller.run(|| {
                    let mut x = RelayXdp::load().expect("load XDP in the caller namespace");
                    x.attach(&c0, AttachMode::Native).expect("attach to c0");
                    x
                }),
                callee.run(|| {
                    let mut x = RelayXdp::load().expect("load XDP in the callee namespace");
                    x.attach(&e1, AttachMode::Native).expect("attach to e1");
                    x
                }),
            ]
        } else {
            Vec::new()
        };
        Self {
            caller,
            relay,
            callee,
            c0,
            r0,
            r1,
            e1,
            peer_programs,
        }
    }

    /// A relayd configuration for this bed: API on 127.0.0.1:`api_port` in the relay
    /// namespace, interfaces `caller` (198.18.0.1, ports 30000-30099) and `callee`
    /// (198.18.1.1, ports 31000-31099), and `datapath` as the `[datapath]` table's body.
    pub fn relayd_config(&self, api_port: u16, datapath: &str) -> String {
        format!(
            "[http]\nlisten = \"127.0.0.1:{api_port}\"\ntoken_file = \"/dev/null\"\n\
             [media]\nlatch_window_secs = 1\n\
             [datapath]\n{datapath}\n\
             [[interface]]\nname = \"caller\"\naddress = \"{RELAY_CALLER_SIDE}\"\nport_min = 30000\nport_max = 30099\n\
             [[interface]]\nname = \"callee\"\naddress = \"{RELAY_CALLEE_SIDE}\"\nport_min = 31000\nport_max = 31099\n"
        )
    }

    /// The `[datapath]` body for `kind` (`socket`, `xdp`, or `xdp-busy-poll`: AF_XDP workers
    /// in preferred-busy-polling mode) on this bed, with `workers` AF_XDP workers for `xdp`.
    pub fn datapath(&self, kind: &str, workers: usize) -> String {
        match kind {
            "xdp" | "xdp-busy-poll" => format!(
                "kind = \"xdp\"\nworkers = 1\nxdp_workers = {workers}\nxdp_bind = \"copy\"\n\
                 xdp_pin_dir = \"\"\nxdp_interfaces = [\"{}\", \"{}\"]\nxdp_busy_poll = {}",
                self.r0,
                self.r1,
                kind == "xdp-busy-poll"
            ),
            _ => "kind = \"socket\"\nworkers = 1".to_owned(),
        }
    }

    /// Starts relayd in the relay namespace with `config` (TOML text).
    pub fn start_relayd(&self, api_port: u16, config: &str) -> RelaydProcess<'_> {
        RelaydProcess::start(&self.relay, api_port, config, &[])
    }

    /// As [`Topology::start_relayd`], with extra command-line arguments.
    pub fn start_relayd_with(
        &self,
        api_port: u16,
        config: &str,
        args: &[&str],
    ) -> RelaydProcess<'_> {
        RelaydProcess::start(&self.relay, api_port, config, args)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // The programs detach while their namespaces still exist.
        self.peer_programs.clear();
    }
}

/// relayd running as a child process in a namespace, with an API client.
#[derive(Debug)]
pub struct RelaydProcess<'a> {
    ns: &'a Netns,
    child: Option<Child>,
    client: HttpClient,
    config_path: PathBuf,
    log_path: PathBuf,
}

impl<'a> RelaydProcess<'a> {
    /// Writes `config`, starts `relayd --config` in `ns` and waits until its API answers.
    ///
    /// # Panics
    /// When relayd exits or does not answer within 10 s (its stderr is in the message).
    pub fn start(ns: &'a Netns, api_port: u16, config: &str, args: &[&str]) -> Self {
        let stem = format!("relayd-{}-{}", ns.name(), unique_tag());
        let config_path = std::env::temp_dir().join(format!("{stem}.toml"));
        let log_path = std::env::temp_dir().join(format!("{stem}.log"));
        std::fs::write(&config_path, config).expect("write the relayd config");
        let log = std::fs::File::create(&log_path).expect("create the relayd log");
        let child = ns
            .command(workspace_bin("relayd").to_str().expect("UTF-8 path"))
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("RELAYD_TOKEN", TOKEN)
            .env("RELAYD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn relayd");
        let client = HttpClient::new(
            &format!("http://127.0.0.1:{api_port}"),
            Some(Token::new(TOKEN.to_owned())),
            Duration::from_secs(5),
        )
        .expect("HTTP client");
        let mut relayd = Self {
            ns,
            child: Some(child),
            client,
            config_path,
            log_path,
        };
        let started = Instant::now();
        while ns.run(|| std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err()) {
            if let Some(status) = relayd.exited() {
                panic!("relayd exited ({status}): {}", relayd.stderr());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "relayd did not start: {}",
                relayd.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        relayd
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id (relayd itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What relayd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn stderr(&mut self) -> String {
        self.log()
    }

    /// One API call from inside the namespace: status and JSON body (`Null` when empty).
    ///
    /// # Panics
    /// When the request fails at the HTTP level.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.ns.run(|| {
            let body = body.map(|b| serde_json::to_vec(b).expect("JSON"));
            let response = self
                .client
                .request(method, path, body.as_deref())
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            (response.status, value)
        })
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        self.ns.run(|| {
            let response = self
                .client
                .request("GET", "/metrics", None)
                .expect("GET /metrics");
            String::from_utf8(response.body).expect("UTF-8 metrics")
        })
    }

    /// The value of one metrics line (`name{labels}` exactly), 0 when absent.
    pub fn metric(&self, series: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Stops relayd with SIGTERM and returns its exit status (after at most 10 s).
    ///
    /// # Panics
    /// When it does not exit in time.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: signals our own child.
        unsafe { libc::kill(i32::try_from(child.id()).unwrap_or(0), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("relayd did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RelaydProcess<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.config_path);
        if std::thread::panicking() {
            eprintln!("relayd log kept at {}", self.log_path.display());
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}
