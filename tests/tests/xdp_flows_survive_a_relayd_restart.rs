//! A relayd restart while media flows: with the xdp datapath, pinned maps and links and a state
//! directory, plain flows keep forwarding in XDP while no relayd runs, and the next relayd
//! restores the sessions (same ports, learned peers) and adopts the flows without a gap.
//!
//! Caller/relay/callee namespaces as in `tests::topology`; the bpffs for the pins is mounted by
//! the test on a temporary directory of the host (visible inside `ip netns exec`) and removed
//! at the end, as is the state directory.

use std::{
    net::UdpSocket,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tests::{
    netns::{run_ok, unique_tag},
    require_root,
    topology::{Topology, CALLEE, CALLER, RELAY_CALLER_SIDE},
};

const API_PORT: u16 = 18_795;
/// Packets per second per stream, and how long the stream runs.
const PPS: u64 = 200;
const SECONDS: u64 = 5;

fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x42; 160]);
    p
}

/// A bpffs mounted on a fresh temporary directory, unmounted and removed on drop.
struct BpfMount(PathBuf);

impl BpfMount {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("relayd-bpffs-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        run_ok(std::process::Command::new("mount").args([
            "-t",
            "bpf",
            "bpf",
            dir.to_str().unwrap(),
        ]));
        Self(dir)
    }
}

impl Drop for BpfMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn local_port(view: &Value, leg: usize) -> u16 {
    u16::try_from(view["legs"][leg]["local"]["rtp_port"].as_u64().unwrap()).unwrap()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                names.extend(files_under(&path));
            } else {
                names.push(path.display().to_string());
            }
        }
    }
    names.sort();
    names
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one restart, checked before, during and after"
)]
fn plain_flows_keep_forwarding_across_a_relayd_restart() {
    if !require_root("plain_flows_keep_forwarding_across_a_relayd_restart") {
        return;
    }
    let bed = Topology::new(1);
    let tag = unique_tag();
    let bpffs = BpfMount::new(&tag);
    let state = std::env::temp_dir().join(format!("relayd-state-{tag}"));
    let datapath = format!(
        "kind = \"xdp\"\nworkers = 1\nxdp_workers = 1\nxdp_bind = \"copy\"\n\
         xdp_interfaces = [\"{}\", \"{}\"]\nxdp_pin_dir = \"{}/relayd\"\nxdp_keep_on_exit = true",
        bed.r0,
        bed.r1,
        bpffs.0.display()
    );
    let config = format!(
        "{}\n[state]\ndir = \"{}\"\n",
        bed.relayd_config(API_PORT, &datapath),
        state.display()
    );
    let first = bed.start_relayd(API_PORT, &config);

    // A session with fixed peers, and one whose caller leg learns its peer.
    let (status, view) = first.call(
        "PUT",
        "/v1/sessions/fixed",
        Some(&json!({ "legs": [
            { "id": "a", "interface": "caller", "latch": "fixed", "forward_to": "b",
              "rtcp_mux": true, "remote": { "address": CALLER, "rtp_port": 40_000 } },
            { "id": "b", "interface": "callee", "latch": "fixed", "forward_to": "a",
              "rtcp_mux": true, "remote": { "address": CALLEE, "rtp_port": 50_000 } }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let fixed_port = local_port(&view, 0);
    let (status, view) = first.call(
        "PUT",
        "/v1/sessions/learned",
        Some(&json!({ "legs": [
            { "id": "a", "interface": "caller", "strict_source": true, "forward_to": "b",
              "rtcp_mux": true },
            { "id": "b", "interface": "callee", "latch": "fixed", "forward_to": "a",
              "rtcp_mux": true, "remote": { "address": CALLEE, "rtp_port": 50_002 } }
        ]})),
    );
    assert_eq!(status, 201, "{view}");
    let learned_port = local_port(&view, 0);

    let caller_fixed = bed
        .caller
        .run(|| UdpSocket::bind((CALLER, 40_000)).unwrap());
    let caller_learned = bed
        .caller
        .run(|| UdpSocket::bind((CALLER, 40_002)).unwrap());
    let callee_fixed = bed
        .callee
        .run(|| UdpSocket::bind((CALLEE, 50_000)).unwrap());
    let callee_learned = bed
        .callee
        .run(|| UdpSocket::bind((CALLEE, 50_002)).unwrap());
    let to = |port: u16| (RELAY_CALLER_SIDE, port);
    // The learning leg latches in userspace, then (window 1 s) its flow is pinned in XDP.
    let started = Instant::now();
    let mut probes = 0u16;
    loop {
        caller_learned
            .send_to(&rtp(2, probes), to(learned_port))
            .unwrap();
        probes += 1;
        std::thread::sleep(Duration::from_millis(100));
        let (_, view) = first.call("GET", "/v1/sessions/learned", None);
        if view["legs"][0]["counters"]["xdp_packets"]
            .as_u64()
            .unwrap_or(0)
            > 0
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "never pinned: {view}"
        );
    }

    // Media both streams at PPS for SECONDS; relayd restarts in the middle.
    let done = AtomicBool::new(false);
    let total = PPS * SECONDS;
    let (got_fixed, got_learned) = std::thread::scope(|scope| {
        let receiver = |socket: &UdpSocket, skip: usize| {
            let socket = socket.try_clone().unwrap();
            let done = &done;
            scope.spawn(move || {
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut seqs = Vec::new();
                let mut buf = [0u8; 2048];
                loop {
                    match socket.recv(&mut buf) {
                        Ok(n) if n >= 4 => seqs.push(u16::from_be_bytes([buf[2], buf[3]])),
                        Err(_) if done.load(Ordering::Relaxed) => break,
                        // Runts and quiet moments.
                        _ => {}
                    }
                }
                seqs.into_iter().skip(skip).collect::<Vec<u16>>()
            })
        };
        let fixed_rx = receiver(&callee_fixed, 0);
        let learned_rx = receiver(&callee_learned, usize::from(probes));
        let sender = scope.spawn(|| {
            let begin = Instant::now();
            for i in 0..total {
                let due = begin + Duration::from_micros(i * 1_000_000 / PPS);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let seq = u16::try_from(i).unwrap();
                caller_fixed.send_to(&rtp(1, seq), to(fixed_port)).unwrap();
                caller_learned
                    .send_to(&rtp(2, probes + seq), to(learned_port))
                    .unwrap();
            }
        });
        std::thread::sleep(Duration::from_secs(1));
        assert!(first.stop().success(), "relayd stops cleanly");
        let pins = files_under(&bpffs.0.join("relayd"));
        assert!(
            pins.iter().any(|p| p.contains("/links/"))
                && pins.iter().any(|p| p.ends_with("RELAY_FLOWS")),
            "links and maps stay pinned while no relayd runs: {pins:?}"
        );
        // Nobody runs for a moment; XDP carries on.
        std::thread::sleep(Duration::from_millis(500));
        let second = bed.start_relayd(API_PORT, &config);
        sender.join().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        done.store(true, Ordering::Relaxed);
        let got = (fixed_rx.join().unwrap(), learned_rx.join().unwrap());

        // The second relayd restored both sessions, with what the first had learned.
        let (status, list) = second.call("GET", "/v1/sessions", None);
        assert_eq!(status, 200);
        let ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["fixed", "learned"]);
        let (_, view) = second.call("GET", "/v1/sessions/learned", None);
        assert_eq!(
            view["legs"][0]["latched_rtp"],
            format!("{CALLER}:40002"),
            "{view}"
        );
        assert_eq!(local_port(&view, 0), learned_port, "same port");
        let (_, view) = second.call("GET", "/v1/sessions/fixed", None);
        let xdp = view["legs"][0]["counters"]["xdp_packets"].as_u64().unwrap();
        assert!(
            xdp >= total,
            "the adopted flow's counters ran on through the restart: {xdp} of {total}"
        );
        // Taken out of service: everything pinned goes.
        let (status, _) = second.call("DELETE", "/v1/sessions/fixed", None);
        assert_eq!(status, 204);
        let (status, _) = second.call("DELETE", "/v1/sessions/learned", None);
        assert_eq!(status, 204);
        assert!(second.stop().success());
        got
    });
    assert_eq!(
        got_fixed,
        (0..u16::try_from(total).unwrap()).collect::<Vec<_>>(),
        "every packet of the fixed session arrived, in order, across the restart"
    );
    assert_eq!(
        got_learned,
        (probes..probes + u16::try_from(total).unwrap()).collect::<Vec<_>>(),
        "and of the learned one"
    );

    // A relayd told to leave removes its pins.
    let last = bed.start_relayd_with(API_PORT, &config, &["--xdp-detach-on-exit"]);
    let (_, list) = last.call("GET", "/v1/sessions", None);
    assert_eq!(list, json!([]), "deleted sessions are not restored");
    assert!(last.stop().success());
    let pins = files_under(&bpffs.0.join("relayd"));
    assert!(pins.is_empty(), "nothing left pinned: {pins:?}");
    let _ = std::fs::remove_dir_all(&state);
}
