//! The load generator sets calls up on sipwise rtpengine (userspace, no kernel module) over the
//! NG protocol, sends SRTP on leg A and plain RTP on leg B through it, and verifies every packet
//! that comes back: nothing lost, every SRTP packet from rtpengine authenticates with the key
//! rtpengine put in its answer, and every call is deleted at the end.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use srtp::Suite;
use tests::loadgen::{self, bencode::Value, ng::NgClient, Config, Control, Report};

/// rtpengine running in the foreground on loopback; killed when dropped.
struct Rtpengine {
    child: Child,
    ng: SocketAddr,
    log: PathBuf,
}

impl Rtpengine {
    /// Starts rtpengine, or returns `None` (after a visible skip line) when it is not
    /// installed; under `CI=true` a missing rtpengine fails the test.
    fn start(test: &str, slot: u32) -> Option<Self> {
        let ng = free_udp_port();
        // Media ports below the kernel's ephemeral range (32768+), where the generator's own
        // sockets live; 400 ports in this test's own slot (4 or 5; see
        // loadgen_drives_relayd_over_http.rs), so parallel tests never share a range.
        let port_min = 20_000 + slot * 500;
        let port_max = port_min + 399;
        let log = std::env::temp_dir().join(format!("rtpengine-{test}-{}.log", std::process::id()));
        let log_file = fs::File::create(&log).unwrap();
        let spawned = Command::new("rtpengine")
            .args([
                "--config-file=none",
                "--foreground",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng={ng}"),
                &format!("--port-min={port_min}"),
                &format!("--port-max={port_max}"),
                "--delete-delay=0",
                "--num-threads=2",
                "--log-stderr",
                "--log-level=5",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{test}: rtpengine is not installed and CI=true forbids skipping \
                     (Debian package rtpengine-daemon)"
                );
                eprintln!(
                    "SKIPPED {test}: rtpengine is not installed (apt-get install rtpengine-daemon)"
                );
                return None;
            }
            Err(e) => panic!("{test}: starting rtpengine: {e}"),
        };
        let mut rtpengine = Self { child, ng, log };
        rtpengine.wait_ready();
        Some(rtpengine)
    }

    fn wait_ready(&mut self) {
        let mut client = NgClient::connect(self.ng, 1).unwrap();
        for _ in 0..20 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("rtpengine exited with {status}:\n{}", self.log_tail());
            }
            if client.ping().is_ok() {
                return;
            }
        }
        panic!("rtpengine did not answer ping:\n{}", self.log_tail());
    }

    /// The call-ids rtpengine still holds.
    fn calls(&self) -> Vec<String> {
        let mut client = NgClient::connect(self.ng, 2).unwrap();
        client
            .request(
                &Value::Dict(vec![(b"command", Value::str("list"))]),
                |reply| {
                    Ok(match reply.get("calls") {
                        Some(Value::List(calls)) => calls
                            .iter()
                            .filter_map(|c| c.as_str().map(str::to_owned))
                            .collect(),
                        _ => Vec::new(),
                    })
                },
            )
            .unwrap()
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = fs::remove_file(&self.log);
        }
    }
}

fn free_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn assert_clean(report: &Report, expected_per_direction: u64, rtpengine: &Rtpengine) {
    for (name, d) in [
        ("a_to_b", &report.per_direction.a_to_b),
        ("b_to_a", &report.per_direction.b_to_a),
    ] {
        assert_eq!(
            d.sent,
            expected_per_direction,
            "{name} sent\n{}",
            report.summary()
        );
        assert!(
            d.loss_ratio <= 0.001,
            "{name} lost {} of {}\n{}\nrtpengine log:\n{}",
            d.lost,
            d.sent,
            report.summary(),
            rtpengine.log_tail()
        );
        assert_eq!(d.auth_failures, 0, "{name}\n{}", report.summary());
        assert_eq!(d.corrupt, 0, "{name}\n{}", report.summary());
        assert_eq!(d.send_errors, 0, "{name}\n{}", report.summary());
        assert!(d.latency_us.p50 > 0.0, "{name}: latency was measured");
    }
    assert!(
        rtpengine.calls().is_empty(),
        "every call was deleted: {:?}",
        rtpengine.calls()
    );
}

fn config(rtpengine: &Rtpengine, calls: u32, seconds: u64) -> Config {
    let mut config = Config::new(Control::Ng {
        server: rtpengine.ng,
    });
    config.calls = calls;
    config.pps = 50;
    config.duration = Duration::from_secs(seconds);
    config.drain = Duration::from_secs(1);
    config
}

#[test]
fn srtp_on_leg_a_is_decrypted_and_reencrypted_by_rtpengine_without_loss() {
    let Some(rtpengine) = Rtpengine::start("srtp_through_rtpengine", 4) else {
        return;
    };
    let mut config = config(&rtpengine, 20, 4);
    config.suite = Some(Suite::AesCm128HmacSha1_80);
    let report = loadgen::run(&config).unwrap();
    eprintln!("{}", report.summary());
    assert_eq!(
        report.srtp_suite.as_deref(),
        Some("AES_CM_128_HMAC_SHA1_80")
    );
    assert_clean(&report, 20 * 50 * 4, &rtpengine);
}

#[test]
fn plain_rtp_is_forwarded_by_rtpengine_without_loss() {
    let Some(rtpengine) = Rtpengine::start("plain_through_rtpengine", 5) else {
        return;
    };
    let mut config = config(&rtpengine, 10, 3);
    config.suite = None;
    let report = loadgen::run(&config).unwrap();
    eprintln!("{}", report.summary());
    assert_clean(&report, 10 * 50 * 3, &rtpengine);
}
