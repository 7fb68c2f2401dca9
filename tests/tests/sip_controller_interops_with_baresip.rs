//! sip-controller between two real baresip user agents: alice and bob register over TLS with
//! `mediaenc=srtp-mand`, alice calls bob, the controller bridges the call with SDES-SRTP on each
//! leg through an in-process relayd, media flows both ways through the relay with no SRTP
//! authentication failure, alice hangs up, and the CDR records both legs as TLS with AES suites
//! and the call as secure end to end.
//!
//! baresip (Debian package `baresip`) is an independent SIP stack (libre) with its own SRTP
//! implementation, so this is an interop test of signalling, SDES negotiation and keying. A
//! machine without baresip prints a visible skip; `CI=true` turns that into a failure.
//!
//! Every wait is bounded; the processes die with the test; on failure the controller's log,
//! both baresip logs (with their SIP traces) and their control transcripts are printed.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tests::{
    baresip::{self, AnswerMode, Baresip, Event, MediaEncryption, Options},
    loadgen::http::HttpClient,
    relayd::{config, TestRelay, TOKEN},
    workspace_bin,
};

const TEST: &str = "sip_controller_interops_with_baresip";
/// relayd's media ports; baresip's are next to them (the three ranges do not overlap, and no
/// other test uses 33000-33399).
const RELAY_PORTS: (u16, u16) = (33_000, 33_099);
const ALICE_RTP: std::ops::RangeInclusive<u16> = 33_200..=33_299;
const BOB_RTP: std::ops::RangeInclusive<u16> = 33_300..=33_399;
/// How long the call stays up while media is checked.
const TALK: Duration = Duration::from_secs(4);
/// Every wait for a process, a registration, an event or a record.
const WAIT: Duration = Duration::from_secs(15);

/// A scratch directory removed on drop.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("{TEST}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).expect("scratch directory");
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process with its output files, killed on drop.
#[derive(Debug)]
struct Process {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        let read = |path: &Path| fs::read_to_string(path).unwrap_or_default();
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }

    /// The first stdout line starting with `prefix`, within [`WAIT`].
    fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(file) = fs::File::open(&self.stdout) {
                let line = BufReader::new(file)
                    .lines()
                    .map_while(Result::ok)
                    .find(|l| l.starts_with(prefix));
                if let Some(line) = line {
                    return line;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "exited ({status}) before printing {prefix:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix:?} within {WAIT:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sip-controller process.
#[derive(Debug)]
struct Controller {
    process: Process,
    /// Its TLS listener, `127.0.0.1:port`.
    tls: String,
    api: HttpClient,
    certificate: PathBuf,
    cdr: PathBuf,
}

impl Controller {
    /// Starts it with mandatory SRTP towards endpoints, TLS only, ephemeral ports, and waits
    /// for its ready line.
    fn start(dir: &Path, relay: &TestRelay) -> Self {
        let state = dir.join("state");
        let cdr = dir.join("cdr.jsonl");
        let config = dir.join("sip-controller.toml");
        fs::write(
            &config,
            format!(
                r#"[sip]
udp = []
tcp = []
tls = ["127.0.0.1:0"]
ring_timeout_secs = 30

[tls]
state_dir = "{state}"

[relay]
url = "http://{relay}"

[api]
listen = "127.0.0.1:0"

[ng]
udp = ["127.0.0.1:0"]

[cdr]
path = "{cdr}"

[endpoints]
srtp = "mandatory"
"#,
                state = state.display(),
                relay = relay.addr,
                cdr = cdr.display(),
            ),
        )
        .expect("controller configuration");
        let stdout = dir.join("controller.stdout");
        let stderr = dir.join("controller.log");
        let child = Command::new(workspace_bin("sip-controller"))
            .arg("-c")
            .arg(&config)
            .env("RELAYD_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("log file"))
            .spawn()
            .expect("start sip-controller");
        let mut process = Process {
            child,
            stdout,
            stderr,
        };
        // sip-controller: SIP udp - tcp - tls 127.0.0.1:N; HTTP API http://127.0.0.1:M/v1/calls
        let ready = process.wait_line("sip-controller: SIP ");
        let tls = ready
            .split(" tls ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("no TLS listener in {ready:?}"))
            .to_owned();
        let api = ready
            .split("HTTP API ")
            .nth(1)
            .and_then(|rest| rest.strip_suffix("/v1/calls"))
            .unwrap_or_else(|| panic!("no API address in {ready:?}"));
        let api = HttpClient::new(api, None, WAIT).expect("API client");
        let certificate = state.join("sip-tls-self-signed.crt");
        assert!(
            certificate.is_file(),
            "no generated certificate at {}",
            certificate.display()
        );
        Self {
            process,
            tls,
            api,
            certificate,
            cdr,
        }
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// `GET` on the controller's API, as JSON.
    fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .api
            .request("GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path} on the controller: {e}"));
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, value)
    }

    /// CDR lines written so far.
    fn cdrs(&self) -> Vec<Value> {
        fs::read_to_string(&self.cdr)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("CDR line {l:?}: {e}")))
            .collect()
    }
}

/// Everything the test runs; prints every log when the test fails. Drops baresip first, then
/// the controller, then relayd, then the scratch directory.
struct Scene {
    alice: Baresip,
    bob: Baresip,
    controller: Controller,
    relay: TestRelay,
    _scratch: Scratch,
}

impl Drop for Scene {
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        eprintln!("===== sip-controller log =====\n{}", self.controller.log());
        for peer in [&self.alice, &self.bob] {
            let user = &peer.options().user;
            eprintln!("===== baresip {user} log =====\n{}", peer.log());
            eprintln!(
                "===== baresip {user} ctrl_tcp frames =====\n{}",
                peer.control_transcript().join("\n")
            );
        }
    }
}

/// baresip's own outcome for a call event wait: the event, or a panic naming what came instead.
fn expect_event(peer: &mut Baresip, wanted: &str, instead: &[&str]) -> Event {
    let mut kinds = vec![wanted];
    kinds.extend_from_slice(instead);
    let user = peer.options().user.clone();
    let event = peer
        .wait_event(&kinds, WAIT)
        .unwrap_or_else(|e| panic!("{user}: waiting for {wanted}: {e}"));
    let param = event.param.as_deref().unwrap_or("");
    // libre (baresip's SIP stack) fails any request whose next hop is not a `sip:` URI with
    // ENOSYS, e.g. an ACK or BYE towards a `sips:` Contact.
    let hint = if param.contains("Function not implemented") {
        " (libre's ENOSYS: the request's target or route was not a sip: URI; see the Contact \
         the controller sent in the SIP trace)"
    } else {
        ""
    };
    assert_eq!(
        event.kind, wanted,
        "{user}: {} ({param}) instead of {wanted}{hint}",
        event.kind
    );
    event
}

/// Polls until `check` returns `Some`, within [`WAIT`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn counter(leg: &Value, name: &str) -> u64 {
    leg["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {leg}"))
}

/// Every relay leg has received and sent at least `at_least` packets.
fn relay_legs_carried(session: &Value, at_least: u64) -> bool {
    session["legs"].as_array().is_some_and(|legs| {
        legs.len() == 2
            && legs.iter().all(|leg| {
                counter(leg, "packets_in") >= at_least && counter(leg, "packets_out") >= at_least
            })
    })
}

fn is_aes_suite(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.starts_with("AES") || s.starts_with("AEAD_AES"))
}

/// One leg of a controller call record (API or CDR): TLS signalling with its version, SRTP with
/// AES suites both ways, secure.
fn assert_secure_leg(leg: &Value, role: &str, context: &str) {
    assert_eq!(leg["role"], role, "{context}: {leg}");
    assert_eq!(
        leg["signalling"]["transport"], "tls",
        "{context}: {role} leg {leg}"
    );
    assert!(
        leg["signalling"]["tls_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{context}: {role} leg without a TLS version: {leg}"
    );
    assert!(
        is_aes_suite(&leg["media"]["inbound_suite"]),
        "{context}: {role} leg {leg}"
    );
    assert!(
        is_aes_suite(&leg["media"]["outbound_suite"]),
        "{context}: {role} leg {leg}"
    );
    assert_eq!(leg["secure"], true, "{context}: {role} leg {leg}");
}

fn start_peer(
    dir: &Path,
    user: &str,
    controller: &Controller,
    rtp: std::ops::RangeInclusive<u16>,
    tone: &Path,
) -> Baresip {
    let options = Options {
        user: user.to_owned(),
        registrar: controller.tls.parse().expect("TLS listener address"),
        media_encryption: MediaEncryption::SrtpMandatory,
        answer_mode: AnswerMode::Auto,
        rtp_ports: rtp,
        audio_source: tone.to_owned(),
        ca_file: Some(controller.certificate.clone()),
    };
    let mut peer = Baresip::start(&dir.join(user), options, WAIT)
        .unwrap_or_else(|e| panic!("starting baresip {user}: {e}\n{}", controller.log()));
    if let Err(e) = peer.wait_registered(WAIT) {
        let (peer_log, controller_log) = (peer.log(), controller.log());
        panic!(
            "{user} did not register over TLS: {e}\n===== baresip {user} =====\n{peer_log}\n\
             ===== sip-controller =====\n{controller_log}"
        );
    }
    peer
}

/// baresip is present with every module the test loads; `false` (with a visible skip) when it
/// is not and this is not CI.
fn baresip_available() -> bool {
    let problem = match (baresip::version(), baresip::module_dir()) {
        (Ok(_), Ok(_)) => return true,
        (Err(e), _) | (_, Err(e)) => e,
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{TEST}: {problem}; CI=true forbids skipping it"
    );
    eprintln!("SKIPPED {TEST}: {problem}");
    false
}

#[test]
fn sip_controller_bridges_two_baresips_over_tls_with_srtp_on_both_legs() {
    if !baresip_available() {
        return;
    }
    let scratch = Scratch::new();
    let dir = scratch.0.clone();
    let tone = dir.join("tone.wav");
    // Longer than the call: baresip hangs up when its microphone file ends.
    baresip::write_tone_wav(&tone, 60, 440).expect("tone file");

    let relay = TestRelay::start(config(RELAY_PORTS.0, RELAY_PORTS.1));
    let controller = Controller::start(&dir, &relay);
    let alice = start_peer(&dir, "alice", &controller, ALICE_RTP, &tone);
    let bob = start_peer(&dir, "bob", &controller, BOB_RTP, &tone);
    let mut scene = Scene {
        alice,
        bob,
        controller,
        relay,
        _scratch: scratch,
    };
    eprintln!(
        "{TEST}: {} via sip-controller TLS {}",
        baresip::version().unwrap_or_default(),
        scene.controller.tls
    );

    // alice calls bob's address of record; the controller finds bob's registered contact.
    let bob_aor = scene.bob.options().aor();
    scene.alice.dial(&bob_aor).expect("dial accepted");

    // Both baresips bring up SRTP with an AES suite on their leg, and the call is established.
    let alice_menc = expect_event(&mut scene.alice, "CALL_MENC", &["CALL_CLOSED"]);
    let bob_menc = expect_event(&mut scene.bob, "CALL_MENC", &["CALL_CLOSED"]);
    for (user, event) in [("alice", &alice_menc), ("bob", &bob_menc)] {
        // param: "<secure>,<media>,<suite>", e.g. "0,audio,AES_CM_128_HMAC_SHA1_80".
        let param = event.param.clone().unwrap_or_default();
        let suite = param.rsplit(',').next().unwrap_or_default();
        assert!(
            param.contains(",audio,")
                && (suite.starts_with("AES") || suite.starts_with("AEAD_AES")),
            "{user}: media encryption {param:?}"
        );
    }
    expect_event(&mut scene.alice, "CALL_ESTABLISHED", &["CALL_CLOSED"]);
    expect_event(&mut scene.bob, "CALL_ESTABLISHED", &["CALL_CLOSED"]);

    // The controller shows one confirmed call, TLS and SRTP on both legs.
    let call_id = eventually("one confirmed call on /v1/calls", || {
        let (status, calls) = scene.controller.get("/v1/calls");
        assert_eq!(status, 200, "GET /v1/calls: {calls}");
        calls.as_array()?.iter().find_map(|c| {
            (c["state"] == "confirmed").then(|| c["id"].as_str().map(str::to_owned))?
        })
    });
    let (status, live) = scene.controller.get(&format!("/v1/calls/{call_id}"));
    assert_eq!(status, 200, "GET /v1/calls/{call_id}: {live}");
    assert!(
        live["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("sip:alice@")),
        "{live}"
    );
    assert_secure_leg(&live["legs"][0], "caller", "live call");
    assert_secure_leg(&live["legs"][1], "callee", "live call");
    assert_eq!(live["secure_end_to_end"], true, "{live}");

    // Media flows both ways through relayd: every leg receives and sends, nothing fails SRTP
    // authentication (a wrong key on either leg would count every packet here).
    let session_path = format!("/v1/sessions/{call_id}");
    eventually("media on both relay legs", || {
        let (status, session) = scene.relay.json("GET", &session_path, None);
        assert_eq!(status, 200, "GET {session_path}: {session}");
        relay_legs_carried(&session, 10).then_some(())
    });
    thread::sleep(TALK);
    let (_, session) = scene.relay.json("GET", &session_path, None);
    // 20 ms packets: a few seconds of talk is well over a hundred packets each way per leg.
    assert!(
        relay_legs_carried(&session, 100),
        "relay session after {TALK:?}: {session}"
    );
    for leg in session["legs"].as_array().expect("legs") {
        assert_eq!(
            counter(leg, "auth_failures"),
            0,
            "SRTP authentication failures: {leg}"
        );
        assert_eq!(counter(leg, "replays"), 0, "SRTP replays: {leg}");
    }

    // alice hangs up: both baresips see the call close, the relay session goes away.
    scene.alice.hangup().expect("hangup accepted");
    expect_event(&mut scene.alice, "CALL_CLOSED", &[]);
    expect_event(&mut scene.bob, "CALL_CLOSED", &[]);
    eventually("relay session deleted", || {
        (scene.relay.json("GET", &session_path, None).0 == 404).then_some(())
    });

    // The CDR: answered, ended by the caller's BYE, both legs TLS with AES suites, media
    // counted, no authentication failure, secure end to end.
    let cdr = eventually("the call's CDR line", || {
        scene
            .controller
            .cdrs()
            .into_iter()
            .find(|c| c["id"] == call_id.as_str())
    });
    assert_eq!(scene.controller.cdrs().len(), 1, "exactly one CDR line");
    assert_secure_cdr(&cdr);
}

/// The CDR of an answered call the caller hung up: both legs TLS with AES suites, media
/// counted both ways, no authentication failure, secure end to end.
fn assert_secure_cdr(cdr: &Value) {
    assert_eq!(cdr["state"], "terminated", "{cdr}");
    assert_eq!(cdr["status"], 200, "{cdr}");
    assert_eq!(cdr["end_reason"], "bye_caller", "{cdr}");
    assert_secure_leg(&cdr["legs"][0], "caller", "CDR");
    assert_secure_leg(&cdr["legs"][1], "callee", "CDR");
    for leg in cdr["legs"].as_array().expect("legs") {
        let media = &leg["media"];
        assert!(
            media["packets_in"].as_u64().is_some_and(|n| n >= 100),
            "CDR {leg}"
        );
        assert!(
            media["packets_out"].as_u64().is_some_and(|n| n >= 100),
            "CDR {leg}"
        );
        // baresip 1.0 sends its final RTCP BYE + SDES unprotected, after tearing SRTP down
        // (seen on the wire: `81cb0003 ... "Adjo"` to the relay's RTCP port, no SRTCP index
        // or tag). relayd rightly refuses it; whether that one packet lands before the
        // controller reads the final counters is a race. Media during the call had no
        // failures (checked above, before the hangup).
        assert!(
            media["auth_failures"].as_u64().is_some_and(|n| n <= 1),
            "CDR {leg}"
        );
    }
    assert_eq!(cdr["secure_end_to_end"], true, "{cdr}");
}
