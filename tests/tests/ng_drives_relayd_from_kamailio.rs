//! Kamailio 5.6 runs `deploy/kamailio/kamailio.cfg` unchanged (its rtpengine module calls
//! `rtpengine_manage()` on requests and replies) between a `SIPp` UAC and a `SIPp` UAS, and
//! places calls with RTP both ways (the UAC streams PCMA, the UAS echoes it):
//!
//! ```text
//!  SIPp UAC ──SIP──▶ Kamailio ──SIP──▶ SIPp UAS (-rtp_echo)
//!     │                 │ NG (rtpengine_sock)     │
//!     │                 ▼                         │
//!     │     sip-controller [ng] ──HTTP──▶ relayd  │
//!     └────────────── RTP ──▶ relayd ◀── RTP ─────┘
//! ```
//!
//! With `rtpengine_sock` pointing at sip-controller's NG port: every call succeeds, every SDP
//! the UAS and the UAC received points at relayd's address and at ports of relayd sessions
//! (never at the other party), relayd held one session per call with packets counted on both
//! legs while the calls were up, and no session (nor NG call) is left afterwards.
//!
//! Then the same Kamailio, the same file and the same defines except `RTPENGINE_SOCK` drive
//! sipwise rtpengine (userspace) the same way, as the control: a deployment switches between
//! the two by changing `rtpengine_sock` only.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use tests::{
    loadgen::{
        bencode::Value as Bencode,
        http::{HttpClient, Token},
        ng::NgClient,
    },
    relayd,
    sipctl::{
        embedded_relay_section, eventually, free_port, have_sipp, http_relay_section, log_tail,
        relay_session_ids, request, token, AudioSection, InProcessRelay, NgController, Scratch,
        Sipp, UdpPeer, WAIT,
    },
};

/// Calls per run.
const CALLS: usize = 5;
/// How long each call streams before the UAC hangs up.
const CALL_MILLIS: u64 = 2_000;
/// relayd's media ports (below the ephemeral range, apart from every other test's).
const RELAYD_PORTS: (u16, u16) = (24_000, 24_099);
/// rtpengine's media ports in the control run.
const RTPENGINE_PORTS: (u16, u16) = (24_100, 24_199);
/// The media ports of the relay embedded in sip-controller (`[relay] mode = "embedded"`).
const EMBEDDED_PORTS: (u16, u16) = (24_400, 24_499);
const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

// ----- processes ------------------------------------------------------------------------------

/// sipwise rtpengine in userspace on loopback, killed on drop.
struct Rtpengine {
    ng: SocketAddr,
    log: PathBuf,
    child: Child,
}

impl Rtpengine {
    /// `None` (with a visible skip line) when rtpengine is not installed; under `CI=true` that
    /// fails.
    fn start(dir: &Path, test: &str) -> Option<Self> {
        let ng = SocketAddr::new(LOOPBACK, free_port());
        let log = dir.join("rtpengine.log");
        let spawned = Command::new("rtpengine")
            .args([
                "--config-file=none",
                "--foreground",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng={ng}"),
                &format!("--port-min={}", RTPENGINE_PORTS.0),
                &format!("--port-max={}", RTPENGINE_PORTS.1),
                "--delete-delay=0",
                "--num-threads=2",
                "--log-stderr",
                "--log-level=6",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{test}: rtpengine is not installed and CI=true forbids skipping the \
                     control run (Debian package rtpengine-daemon)"
                );
                eprintln!(
                    "SKIPPED the rtpengine control run of {test}: rtpengine is not installed"
                );
                return None;
            }
            Err(e) => panic!("starting rtpengine: {e}"),
        };
        let mut rtpengine = Self { ng, log, child };
        let mut client = NgClient::connect(ng, 0x7e57).expect("NG client");
        let deadline = Instant::now() + WAIT;
        while client.ping().is_err() {
            if let Ok(Some(status)) = rtpengine.child.try_wait() {
                panic!(
                    "rtpengine exited with {status}:\n{}",
                    log_tail(&rtpengine.log, 50)
                );
            }
            assert!(
                Instant::now() < deadline,
                "rtpengine does not answer ping on {ng}:\n{}",
                log_tail(&rtpengine.log, 50)
            );
        }
        Some(rtpengine)
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- rtpengine log ----\n{}", log_tail(&self.log, 100));
        }
    }
}

/// The deploy example's path.
fn kamailio_cfg() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .join("deploy/kamailio/kamailio.cfg")
}

/// Whether Kamailio and its rtpengine module are installed; otherwise a visible skip (a
/// failure under `CI=true`).
fn have_kamailio(test: &str) -> bool {
    let found = Command::new("kamailio")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/rtpengine.so").is_file();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: kamailio with its rtpengine module is missing and CI=true forbids skipping"
        );
        eprintln!("SKIPPED {test}: kamailio is not installed (apt-get install kamailio)");
    }
    found
}

/// What a deployment sets besides the relay: where Kamailio listens and where it forwards.
#[derive(Clone, Copy, Debug)]
struct Deployment {
    listen: SocketAddr,
    next_hop: SocketAddr,
}

impl Deployment {
    /// The `-A` preprocessor defines `deploy/kamailio/kamailio.cfg` documents; only
    /// `RTPENGINE_SOCK` depends on the relay.
    fn defines(self, rtpengine_sock: SocketAddr) -> Vec<String> {
        vec![
            format!("LISTEN=udp:{}", self.listen),
            format!("NEXT_HOP=\"sip:{}\"", self.next_hop),
            format!("RTPENGINE_SOCK=\"udp:{rtpengine_sock}\""),
        ]
    }
}

/// Kamailio in the foreground in its own process group; the whole group is killed on drop.
struct Kamailio {
    log: PathBuf,
    child: Child,
}

impl Kamailio {
    fn start(dir: &Path, name: &str, defines: &[String], listen: SocketAddr) -> Self {
        use std::os::unix::process::CommandExt as _;
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("clone");
        let mut command = Command::new("kamailio");
        command
            .arg("-f")
            .arg(kamailio_cfg())
            .args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-Y")
            .arg(dir)
            .arg("-P")
            .arg(dir.join(format!("{name}.pid")));
        for define in defines {
            command.arg("-A").arg(define);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("spawn kamailio");
        let mut kamailio = Self { log, child };
        kamailio.wait_ready(listen);
        kamailio
    }

    /// Ready when it answers an OPTIONS to itself (the config's keepalive reply).
    fn wait_ready(&mut self, listen: SocketAddr) {
        let peer = UdpPeer::bind([127, 0, 0, 1]);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "kamailio exited with {status}:\n{}",
                    log_tail(&self.log, 60)
                );
            }
            let options = request(
                "OPTIONS",
                &format!("sip:{listen}"),
                &[
                    (
                        "Via",
                        format!("SIP/2.0/UDP {};branch=z9hG4bK{}", peer.addr(), token()),
                    ),
                    ("Max-Forwards", "70".to_owned()),
                    (
                        "From",
                        format!("<sip:probe@{}>;tag={}", peer.addr(), token()),
                    ),
                    ("To", format!("<sip:{listen}>")),
                    ("Call-ID", token()),
                    ("CSeq", "1 OPTIONS".to_owned()),
                ],
                None,
            );
            peer.send(listen, &options);
            if peer
                .recv_where(Duration::from_millis(300), |m| m.status() == Some(200))
                .is_some()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kamailio does not answer OPTIONS on {listen}:\n{}",
                log_tail(&self.log, 60)
            );
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory preconditions; -pid names the process group this
            // test created for Kamailio (process_group(0)), so only its processes are signalled.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- kamailio log ----\n{}", log_tail(&self.log, 150));
        }
    }
}

// ----- SIPp scenarios -------------------------------------------------------------------------

/// The UAC: an INVITE with PCMA at `SIPp`'s RTP stream port, ACK and BYE through the route set
/// Kamailio recorded, RTP streamed from the ACK to the BYE.
const UAC_XML: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="UAC streaming PCMA through a proxy">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=uac 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop><action><exec rtp_stream="pcma.raw,-1,8"/></action></nop>
  <pause milliseconds="CALL_MILLIS"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"#;

/// The UAS: answers with PCMA at its echo port and keeps Kamailio's Record-Route (`SIPp`'s
/// built-in `uas` drops it, which a proxy in the path cannot work with).
const UAS_XML: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="UAS behind a proxy, RTP echo">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=uas 1 1 IN IP[media_ip_type] [media_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
  <timewait milliseconds="500"/>
</scenario>
"#;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// What a relay showed of one call while it was up: its local RTP ports and, per leg, the
/// most packets it had received.
#[derive(Clone, Debug, Default)]
struct Seen {
    local_rtp_ports: BTreeSet<u16>,
    packets_per_leg: Vec<u64>,
}

impl Seen {
    fn merge(&mut self, other: Self) {
        self.local_rtp_ports.extend(other.local_rtp_ports);
        if self.packets_per_leg.len() < other.packets_per_leg.len() {
            self.packets_per_leg.resize(other.packets_per_leg.len(), 0);
        }
        for (mine, theirs) in self.packets_per_leg.iter_mut().zip(other.packets_per_leg) {
            *mine = (*mine).max(theirs);
        }
    }
}

/// A relay as the test inspects it.
trait Inspect: Sync {
    /// Its calls right now, by id.
    fn calls(&self) -> BTreeMap<String, Seen>;
    /// The address its SDP advertises.
    fn address(&self) -> IpAddr;
    /// Its media port range.
    fn ports(&self) -> (u16, u16);
}

/// relayd (or the relay embedded in sip-controller) through its HTTP API.
struct RelaydView {
    client: HttpClient,
    ports: (u16, u16),
}

impl RelaydView {
    fn at(api: SocketAddr, ports: (u16, u16)) -> Self {
        Self {
            client: HttpClient::new(
                &format!("http://{api}"),
                Some(Token::new(relayd::TOKEN.to_owned())),
                Duration::from_secs(5),
            )
            .expect("relayd client"),
            ports,
        }
    }
}

impl RelaydView {
    fn json(&self, path: &str) -> Option<serde_json::Value> {
        let response = self.client.request("GET", path, None).ok()?;
        (response.status == 200)
            .then(|| serde_json::from_slice(&response.body).ok())
            .flatten()
    }
}

impl Inspect for RelaydView {
    fn calls(&self) -> BTreeMap<String, Seen> {
        let mut calls = BTreeMap::new();
        let Some(list) = self.json("/v1/sessions") else {
            return calls;
        };
        for id in list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_str())
        {
            // Deleted between the list and the GET: skip it.
            let Some(view) = self.json(&format!("/v1/sessions/{id}")) else {
                continue;
            };
            let mut seen = Seen::default();
            for leg in view["legs"].as_array().into_iter().flatten() {
                if let Some(port) = leg["local"]["rtp_port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                {
                    seen.local_rtp_ports.insert(port);
                }
                seen.packets_per_leg
                    .push(leg["counters"]["packets_in"].as_u64().unwrap_or(0));
            }
            calls.insert(id.to_owned(), seen);
        }
        calls
    }

    fn address(&self) -> IpAddr {
        LOOPBACK
    }

    fn ports(&self) -> (u16, u16) {
        self.ports
    }
}

/// rtpengine through NG `list` and `query`, over one client: rtpengine caches replies by
/// cookie alone, so cookies must never repeat.
struct RtpengineView {
    client: std::sync::Mutex<NgClient>,
}

fn bencode_int(value: Option<&Bencode<'_>>) -> Option<i64> {
    match value? {
        Bencode::Int(n) => Some(*n),
        _ => None,
    }
}

fn bencode_list<'v, 'a>(value: Option<&'v Bencode<'a>>) -> &'v [Bencode<'a>] {
    match value {
        Some(Bencode::List(items)) => items,
        _ => &[],
    }
}

fn bencode_dict_values<'v, 'a>(value: Option<&'v Bencode<'a>>) -> Vec<&'v Bencode<'a>> {
    match value {
        Some(Bencode::Dict(entries)) => entries.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    }
}

/// The call-ids an NG server lists.
fn ng_list(client: &mut NgClient) -> Vec<String> {
    let list = Bencode::Dict(vec![(b"command", Bencode::str("list"))]);
    client
        .request(&list, |reply| {
            Ok(bencode_list(reply.get("calls"))
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect())
        })
        .expect("NG list")
}

impl Inspect for RtpengineView {
    fn calls(&self) -> BTreeMap<String, Seen> {
        let Ok(mut client) = self.client.lock() else {
            return BTreeMap::new();
        };
        let mut calls = BTreeMap::new();
        for call_id in ng_list(&mut client) {
            let query = Bencode::Dict(vec![
                (b"command", Bencode::str("query")),
                (b"call-id", Bencode::str(&call_id)),
            ]);
            let seen = client.request(&query, |reply| {
                let mut seen = Seen::default();
                for tag in bencode_dict_values(reply.get("tags")) {
                    let mut packets = 0u64;
                    for media in bencode_list(tag.get("medias")) {
                        for stream in bencode_list(media.get("streams")) {
                            if let Some(port) = bencode_int(stream.get("local port"))
                                .and_then(|p| u16::try_from(p).ok())
                            {
                                seen.local_rtp_ports.insert(port);
                            }
                            let stats = stream.get("stats");
                            packets += bencode_int(stats.and_then(|s| s.get("packets")))
                                .and_then(|p| u64::try_from(p).ok())
                                .unwrap_or(0);
                        }
                    }
                    seen.packets_per_leg.push(packets);
                }
                Ok(seen)
            });
            // Deleted between the list and the query: skip it.
            if let Ok(seen) = seen {
                calls.insert(call_id, seen);
            }
        }
        calls
    }

    fn address(&self) -> IpAddr {
        LOOPBACK
    }

    fn ports(&self) -> (u16, u16) {
        RTPENGINE_PORTS
    }
}

/// The SDP bodies of the messages `SIPp` logged as received (`-trace_msg`).
fn received_sdps(message_log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(message_log).unwrap_or_default();
    text.split("----------------------------------------------- ")
        .filter(|block| block.contains("message received"))
        .filter_map(|block| {
            let start = block.find("\nv=0")?;
            Some(block[start + 1..].replace('\r', ""))
        })
        .collect()
}

/// The screens `SIPp` dumped at exit.
fn screen(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.screen.log"))).unwrap_or_default()
}

fn successful_calls(screen: &str) -> Option<usize> {
    screen
        .lines()
        .find(|l| l.trim_start().starts_with("Successful call"))?
        .split_whitespace()
        .filter_map(|w| w.parse::<usize>().ok())
        .next_back()
}

/// One run: a UAS, Kamailio with `rtpengine_sock` = `relay_ng`, a UAC placing [`CALLS`] calls,
/// the relay polled while they are up. Returns what the relay showed.
#[allow(clippy::too_many_lines, reason = "setup, run and verdict of one run")]
fn run_calls(
    scratch: &Path,
    name: &str,
    deployment: Deployment,
    relay_ng: SocketAddr,
    relay: &dyn Inspect,
) -> BTreeMap<String, Seen> {
    let uas_media = free_port();
    let uas_name = format!("{name}-uas");
    let mut uas = Sipp::start(
        scratch,
        &uas_name,
        &[
            strings(&[
                "-sf",
                "uas.xml",
                "-i",
                "127.0.0.1",
                "-mi",
                "127.0.0.1",
                "-p",
            ]),
            vec![
                deployment.next_hop.port().to_string(),
                "-mp".into(),
                uas_media.to_string(),
                "-m".into(),
                CALLS.to_string(),
                "-rtp_echo".into(),
                "-trace_msg".into(),
                "-message_file".into(),
                format!("{uas_name}.messages.log"),
                "-trace_screen".into(),
                "-screen_file".into(),
                format!("{uas_name}.screen.log"),
            ],
        ]
        .concat(),
    );
    let defines = deployment.defines(relay_ng);
    let _kamailio = Kamailio::start(scratch, name, &defines, deployment.listen);

    let uac_media = free_port();
    let uac_name = format!("{name}-uac");
    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                for (id, now) in relay.calls() {
                    seen.entry(id).or_default().merge(now);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        let mut uac = Sipp::start(
            scratch,
            &uac_name,
            &[
                strings(&["-sf", "uac.xml"]),
                vec![
                    deployment.listen.to_string(),
                    "-i".into(),
                    "127.0.0.1".into(),
                    "-mi".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    free_port().to_string(),
                    "-mp".into(),
                    uac_media.to_string(),
                    "-m".into(),
                    CALLS.to_string(),
                    "-l".into(),
                    CALLS.to_string(),
                    "-r".into(),
                    "5".into(),
                    "-timeout".into(),
                    "30s".into(),
                    "-timeout_error".into(),
                    "-trace_msg".into(),
                    "-message_file".into(),
                    format!("{uac_name}.messages.log"),
                    "-trace_screen".into(),
                    "-screen_file".into(),
                    format!("{uac_name}.screen.log"),
                ],
            ]
            .concat(),
        );
        let status = uac.wait(Duration::from_secs(60));
        stop.store(true, Ordering::Relaxed);
        let seen = poller.join().expect("poller");
        assert!(
            status.success(),
            "{name}: SIPp UAC failed ({status}):\n{}\n{}",
            uac.output(),
            screen(scratch, &uac_name)
        );
        seen
    });
    assert_eq!(
        successful_calls(&screen(scratch, &uac_name)),
        Some(CALLS),
        "{name}: SIPp counts {CALLS} successful calls:\n{}",
        screen(scratch, &uac_name)
    );
    let uas_status = uas.wait(WAIT);
    assert!(
        uas_status.success(),
        "{name}: SIPp UAS failed ({uas_status}):\n{}",
        uas.output()
    );

    // The relay held one call per SIP call, with media counted on both legs.
    assert_eq!(
        seen.len(),
        CALLS,
        "{name}: one relay call per SIP call: {seen:?}"
    );
    for (id, call) in &seen {
        assert_eq!(
            call.packets_per_leg.len(),
            2,
            "{name}: call {id} has two legs: {call:?}"
        );
        assert!(
            call.packets_per_leg.iter().all(|&p| p > 0),
            "{name}: call {id} carried media both ways while up: {call:?}"
        );
    }

    // Every SDP a party received points at the relay, never at the other party.
    let relay_ports: BTreeSet<u16> = seen
        .values()
        .flat_map(|c| c.local_rtp_ports.iter().copied())
        .collect();
    let (low, high) = relay.ports();
    for (party, own_media, other_media, log) in [
        (
            "UAS (offers)",
            uas_media,
            uac_media,
            format!("{uas_name}.messages.log"),
        ),
        (
            "UAC (answers)",
            uac_media,
            uas_media,
            format!("{uac_name}.messages.log"),
        ),
    ] {
        let sdps = received_sdps(&scratch.join(&log));
        assert!(
            sdps.len() >= CALLS,
            "{name}: the {party} received {} SDP bodies, expected {CALLS} or more",
            sdps.len()
        );
        for sdp in &sdps {
            let audio = AudioSection::parse(sdp);
            assert_eq!(
                audio.address,
                relay.address(),
                "{name}: {party} SDP points at the relay:\n{sdp}"
            );
            assert!(
                (low..=high).contains(&audio.port)
                    && relay_ports.contains(&audio.port)
                    && audio.port != own_media
                    && audio.port != other_media,
                "{name}: {party} SDP port {} is a relay port in {low}-{high} of a live call \
                 ({relay_ports:?}), not a party's ({own_media}, {other_media}):\n{sdp}",
                audio.port
            );
            assert_eq!(audio.proto, "RTP/AVP", "{name}: {sdp}");
        }
    }
    seen
}

/// The `SIPp` scenarios and the audio they loop, in `dir`.
fn write_scenarios(dir: &Path) {
    std::fs::write(
        dir.join("uac.xml"),
        UAC_XML.replace("CALL_MILLIS", &CALL_MILLIS.to_string()),
    )
    .expect("write the UAC scenario");
    std::fs::write(dir.join("uas.xml"), UAS_XML).expect("write the UAS scenario");
    // One second of PCMA (0xd5 is A-law silence), looped by SIPp's RTP stream.
    std::fs::write(dir.join("pcma.raw"), [0xd5u8; 8000]).expect("write the audio");
}

#[test]
fn kamailio_calls_through_sip_controller_anchor_media_on_relayd() {
    const TEST: &str = "kamailio_calls_through_sip_controller_anchor_media_on_relayd";
    if !have_sipp(TEST) || !have_kamailio(TEST) {
        return;
    }
    let scratch = Scratch::new(TEST);
    write_scenarios(&scratch.path);

    let relay = InProcessRelay::start(
        relayd::config(RELAYD_PORTS.0, RELAYD_PORTS.1),
        ([127, 0, 0, 1], 0).into(),
    );
    let controller = NgController::start(&scratch.path, &http_relay_section(relay.addr));
    let deployment = Deployment {
        listen: SocketAddr::new(LOOPBACK, free_port()),
        next_hop: SocketAddr::new(LOOPBACK, free_port()),
    };
    let relayd_view = RelaydView::at(relay.addr, RELAYD_PORTS);
    run_calls(
        &scratch.path,
        "kamailio-relayd",
        deployment,
        controller.ng,
        &relayd_view,
    );
    assert!(
        eventually(WAIT, || relay.session_ids().is_empty()),
        "every relayd session is deleted after the BYEs: {:?}",
        relay.session_ids()
    );
    let mut ng = NgClient::connect(controller.ng, 0x6b61).expect("NG client");
    assert_eq!(
        ng_list(&mut ng),
        Vec::<String>::new(),
        "sip-controller holds no NG call afterwards"
    );

    // The control: the same Kamailio configuration and defines but RTPENGINE_SOCK, on sipwise
    // rtpengine.
    let Some(rtpengine) = Rtpengine::start(&scratch.path, TEST) else {
        return;
    };
    let ours = deployment.defines(controller.ng);
    let theirs = deployment.defines(rtpengine.ng);
    let differing: Vec<(&String, &String)> =
        ours.iter().zip(&theirs).filter(|(a, b)| a != b).collect();
    assert!(
        differing.len() == 1 && differing[0].0.starts_with("RTPENGINE_SOCK="),
        "the two deployments differ in rtpengine_sock only: {differing:?}"
    );
    let rtpengine_view = RtpengineView {
        client: std::sync::Mutex::new(NgClient::connect(rtpengine.ng, 0x5ee).expect("NG client")),
    };
    run_calls(
        &scratch.path,
        "kamailio-rtpengine",
        deployment,
        rtpengine.ng,
        &rtpengine_view,
    );
    let mut ng = NgClient::connect(rtpengine.ng, 0x6b62).expect("NG client");
    assert!(
        eventually(WAIT, || ng_list(&mut ng).is_empty()),
        "rtpengine holds no call afterwards"
    );
}

/// The same Kamailio deployment (its configuration, and the same `rtpengine_sock`) with the
/// relay embedded in sip-controller, the mode `cargo xtask bench ng` measures fastest.
#[test]
fn kamailio_calls_through_sip_controller_with_the_relay_embedded() {
    const TEST: &str = "kamailio_calls_through_sip_controller_with_the_relay_embedded";
    if !have_sipp(TEST) || !have_kamailio(TEST) {
        return;
    }
    let scratch = Scratch::new(TEST);
    write_scenarios(&scratch.path);

    let api = SocketAddr::new(LOOPBACK, free_port());
    let controller = NgController::start(
        &scratch.path,
        &embedded_relay_section(&scratch.path, api, EMBEDDED_PORTS),
    );
    let deployment = Deployment {
        listen: SocketAddr::new(LOOPBACK, free_port()),
        next_hop: SocketAddr::new(LOOPBACK, free_port()),
    };
    run_calls(
        &scratch.path,
        "kamailio-embedded",
        deployment,
        controller.ng,
        &RelaydView::at(api, EMBEDDED_PORTS),
    );
    assert!(
        eventually(WAIT, || relay_session_ids(api).is_empty()),
        "every relay session is deleted after the BYEs: {:?}",
        relay_session_ids(api)
    );
    let mut ng = NgClient::connect(controller.ng, 0x6b63).expect("NG client");
    assert_eq!(
        ng_list(&mut ng),
        Vec::<String>::new(),
        "sip-controller holds no NG call afterwards"
    );
}
