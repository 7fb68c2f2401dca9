//! `sip-callgen`: a SIP call-setup load generator, both ends of the call in one process.
//!
//! The UAC side places calls through sip-controller at a paced rate (INVITE with an SDES-SRTP
//! offer, ACK on 200, BYE after `--hold-ms`); the UAS side is the trunk the controller routes
//! to (answers every INVITE 200 with an SDP answer keyed for the offered tag, 200 to BYE).
//! Both sides speak the transport chosen with `--transport` (TLS by default, over one
//! connection each way like a carrier trunk; the controller's self-signed certificate is not
//! verified). Reports offered, completed and failed calls, the achieved setup rate and setup
//! latency (INVITE sent to 200 received) as JSON.
//!
//! `SIPp` covers UDP/TCP (Debian's build has no TLS); this tool covers TLS, which is why it
//! exists. It uses sip-controller's own transport and codec, so it measures the controller,
//! not a different SIP stack's quirks.

// Rates and percentiles over call counts far below 2^52: float conversions are exact enough.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser;
use serde::Serialize;
use sip_controller::{
    sip::{Message, Method, Request, Response, Uri},
    transport::{
        tls::TlsSettings, Inbound, Outbound, Transport, TransportConfig, TransportEvent,
        TransportLayer,
    },
};

#[derive(Debug, Parser)]
#[command(about = "SIP call-setup load generator (UAC and UAS in one process)")]
struct Args {
    /// The controller's SIP address for the chosen transport.
    #[arg(long)]
    controller: SocketAddr,
    /// Where the UAS side listens (the controller's trunk URI must point here).
    #[arg(long)]
    uas_listen: SocketAddr,
    /// tls, tcp or udp.
    #[arg(long, default_value = "tls")]
    transport: String,
    /// Call attempts per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Calls to place.
    #[arg(long, default_value_t = 1000)]
    calls: u64,
    /// Time between the 200 and the BYE, in milliseconds.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// A call that has not completed after this many seconds counts as failed.
    #[arg(long, default_value_t = 10)]
    call_timeout_secs: u64,
    /// Directory for the UAS side's self-signed certificate.
    #[arg(long, default_value = "target/sip-callgen-state")]
    state_dir: PathBuf,
    /// Offer SRTP (RTP/SAVP with a=crypto) instead of plain RTP.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    srtp: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    transport: String,
    offered_rate: f64,
    attempted: u64,
    completed: u64,
    failed: u64,
    failures: HashMap<String, u64>,
    achieved_setup_rate: f64,
    setup_ms_p50: f64,
    setup_ms_p99: f64,
    elapsed_secs: f64,
}

#[derive(Debug)]
struct UacCall {
    started: Instant,
    answered: Option<Instant>,
    bye_at: Option<Instant>,
    bye_sent: bool,
    remote_tag: Option<String>,
    contact: Option<Uri>,
}

/// A send that takes longer than this counts as a failed call (the controller is not
/// reading: overload).
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

const OFFER_SRTP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/SAVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=sendrecv\r\n";
const OFFER_PLAIN: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

fn transport_of(name: &str) -> Option<Transport> {
    match name {
        "tls" => Some(Transport::Tls),
        "tcp" => Some(Transport::Tcp),
        "udp" => Some(Transport::Udp),
        _ => None,
    }
}

fn token(n: u64) -> String {
    format!("{n:x}{:x}", std::process::id())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(transport) = transport_of(&args.transport) else {
        eprintln!("sip-callgen: --transport must be tls, tcp or udp");
        return ExitCode::from(2);
    };
    if args.rate <= 0.0 || args.calls == 0 {
        eprintln!("sip-callgen: --rate and --calls must be positive");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sip-callgen: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args, transport)) {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("sip-callgen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::too_many_lines)]
async fn run(args: &Args, transport: Transport) -> Result<Report, String> {
    let mut config = TransportConfig::default();
    match transport {
        Transport::Tls => {
            config.tls = vec![args.uas_listen];
            let mut tls = TlsSettings::self_signed(args.state_dir.clone());
            tls.tls_verify_server = false;
            config.tls_settings = Some(tls);
            // Outbound TCP/TLS needs the stream machinery; an ephemeral TCP listener enables it.
            config.tcp = vec![SocketAddr::new(args.uas_listen.ip(), 0)];
        }
        Transport::Tcp => config.tcp = vec![args.uas_listen],
        Transport::Udp => config.udp = vec![args.uas_listen],
    }
    let (layer, mut events) = TransportLayer::start(config)
        .await
        .map_err(|e| format!("starting the transports: {e}"))?;
    let local = layer
        .local_addrs(transport)
        .first()
        .copied()
        .ok_or("no local address")?;
    let offer = if args.srtp { OFFER_SRTP } else { OFFER_PLAIN };
    let scheme_transport = match transport {
        Transport::Tls => "tls",
        Transport::Tcp => "tcp",
        Transport::Udp => "udp",
    };
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let mut next_call = start;
    let mut attempted = 0u64;
    let mut calls: HashMap<String, UacCall> = HashMap::new();
    let mut failures: HashMap<String, u64> = HashMap::new();
    let mut setup_ms: Vec<f64> = Vec::new();
    let mut completed = 0u64;
    let call_timeout = Duration::from_secs(args.call_timeout_secs);
    let hold = Duration::from_millis(args.hold_ms);
    let hard_stop = start
        + Duration::from_secs_f64(args.calls as f64 / args.rate)
        + call_timeout
        + hold
        + Duration::from_secs(5);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let now = Instant::now();
        if now > hard_stop || (attempted == args.calls && calls.is_empty()) {
            break;
        }
        // Place the calls that are due (a bounded batch per turn, so responses keep being
        // read even when the generator falls behind its schedule).
        let mut placed = 0;
        while attempted < args.calls
            && next_call <= now
            && placed < 64
            && Instant::now() < hard_stop
        {
            placed += 1;
            attempted += 1;
            next_call += interval;
            let call_id = format!("{}@callgen", token(attempted));
            let branch = format!("z9hG4bK{}", token(attempted));
            let invite = format!(
                "INVITE sip:cg{attempted}@{controller};transport={scheme_transport} SIP/2.0\r\n\
                 Via: SIP/2.0/{t} {local};branch={branch};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:callgen@{local}>;tag=a{attempted}\r\n\
                 To: <sip:cg{attempted}@{controller}>\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: 1 INVITE\r\n\
                 Contact: <sip:callgen@{local};transport={scheme_transport}>\r\n\
                 Content-Type: application/sdp\r\n\
                 Content-Length: {len}\r\n\r\n{offer}",
                controller = args.controller,
                t = transport_wire(transport),
                len = offer.len(),
            );
            let mut out = Outbound::request(transport, args.controller, invite.into_bytes());
            out.tls_verify_server = Some(false);
            match tokio::time::timeout(SEND_TIMEOUT, layer.send(out)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    *failures.entry(format!("send: {e}")).or_default() += 1;
                    continue;
                }
                Err(_) => {
                    *failures.entry("send timeout".to_owned()).or_default() += 1;
                    continue;
                }
            }
            calls.insert(
                call_id,
                UacCall {
                    started: Instant::now(),
                    answered: None,
                    bye_at: None,
                    bye_sent: false,
                    remote_tag: None,
                    contact: None,
                },
            );
        }
        // BYEs that are due, and timeouts.
        let due: Vec<String> = calls
            .iter()
            .filter(|(_, c)| !c.bye_sent && c.bye_at.is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(call) = calls.get_mut(&id) {
                call.bye_sent = true;
                let target = call
                    .contact
                    .clone()
                    .map_or_else(|| format!("sip:{}", args.controller), |u| u.to_string());
                let bye = format!(
                    "BYE {target} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch=z9hG4bK{b}bye;rport\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:callgen@{local}>;tag=a{tag}\r\n\
                     To: <sip:x@{controller}>;tag={remote}\r\nCall-ID: {id}\r\nCSeq: 2 BYE\r\n\
                     Content-Length: 0\r\n\r\n",
                    t = transport_wire(transport),
                    b = token(call.started.elapsed().as_nanos() as u64),
                    tag = id.split('@').next().unwrap_or(""),
                    controller = args.controller,
                    remote = call.remote_tag.clone().unwrap_or_default(),
                );
                let mut out = Outbound::request(transport, args.controller, bye.into_bytes());
                out.tls_verify_server = Some(false);
                let _ = layer.send(out).await;
            }
        }
        calls.retain(|_, call| {
            if call.started.elapsed() > call_timeout {
                *failures.entry("timeout".to_owned()).or_default() += 1;
                false
            } else {
                true
            }
        });
        // Messages.
        tokio::select! {
            event = events.recv() => {
                let Some(TransportEvent::Message(inbound)) = event else { continue };
                let Ok(message) = Message::parse(&inbound.bytes) else {
                    *failures.entry("unparseable message".to_owned()).or_default() += 1;
                    continue;
                };
                match message {
                    Message::Request(request) => uas(&layer, &inbound, &request).await,
                    Message::Response(response) => {
                        uac_response(&layer, transport, local, args.controller, &response, &mut calls, &mut failures, &mut setup_ms, &mut completed, hold).await;
                    }
                }
            }
            _ = tick.tick() => {}
        }
    }
    for _ in &calls {
        *failures
            .entry("unfinished at the end".to_owned())
            .or_default() += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    setup_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if setup_ms.is_empty() {
            0.0
        } else {
            let i = ((setup_ms.len() as f64 - 1.0) * p).round() as usize;
            setup_ms[i.min(setup_ms.len() - 1)]
        }
    };
    let answered = setup_ms.len() as f64;
    let failed = failures.values().sum();
    Ok(Report {
        transport: args.transport.clone(),
        offered_rate: args.rate,
        attempted,
        completed,
        failed,
        failures,
        achieved_setup_rate: answered / (args.calls as f64 / args.rate).max(1e-9),
        setup_ms_p50: pct(0.5),
        setup_ms_p99: pct(0.99),
        elapsed_secs: elapsed,
    })
}

fn transport_wire(transport: Transport) -> &'static str {
    match transport {
        Transport::Tls => "TLS",
        Transport::Tcp => "TCP",
        Transport::Udp => "UDP",
    }
}

#[allow(clippy::too_many_arguments)]
async fn uac_response(
    layer: &TransportLayer,
    transport: Transport,
    local: SocketAddr,
    controller: SocketAddr,
    response: &Response,
    calls: &mut HashMap<String, UacCall>,
    failures: &mut HashMap<String, u64>,
    setup_ms: &mut Vec<f64>,
    completed: &mut u64,
    hold: Duration,
) {
    let (Ok(call_id), Ok(cseq)) = (response.headers.call_id(), response.headers.cseq()) else {
        return;
    };
    let call_id = call_id.to_owned();
    let Some(call) = calls.get_mut(&call_id) else {
        return;
    };
    if response.status < 200 {
        return;
    }
    match cseq.method {
        Method::Invite if (200..300).contains(&response.status) => {
            if call.answered.is_some() {
                return; // retransmission: our ACK went out already
            }
            call.answered = Some(Instant::now());
            setup_ms.push(call.started.elapsed().as_secs_f64() * 1000.0);
            call.remote_tag = response
                .headers
                .to()
                .ok()
                .and_then(|t| t.tag().map(str::to_owned));
            call.contact = response.headers.contacts().ok().and_then(|c| {
                c.into_iter().find_map(|c| match c {
                    sip_controller::sip::Contact::Address(a) => Some(a.uri().clone()),
                    sip_controller::sip::Contact::Wildcard => None,
                })
            });
            let target = call
                .contact
                .clone()
                .map_or_else(|| format!("sip:{controller}"), |u| u.to_string());
            let ack = format!(
                "ACK {target} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch=z9hG4bK{b}ack;rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:callgen@{local}>;tag=a{tag}\r\n\
                 To: <sip:x@{controller}>;tag={remote}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n\
                 Content-Length: 0\r\n\r\n",
                t = transport_wire(transport),
                b = token(setup_ms.len() as u64),
                tag = call_id.split('@').next().unwrap_or(""),
                remote = call.remote_tag.clone().unwrap_or_default(),
            );
            let mut out = Outbound::request(transport, controller, ack.into_bytes());
            out.tls_verify_server = Some(false);
            let _ = layer.send(out).await;
            call.bye_at = Some(Instant::now() + hold);
        }
        Method::Invite => {
            *failures
                .entry(format!("INVITE {}", response.status))
                .or_default() += 1;
            calls.remove(&call_id);
        }
        Method::Bye => {
            if (200..300).contains(&response.status) {
                *completed += 1;
            } else {
                *failures
                    .entry(format!("BYE {}", response.status))
                    .or_default() += 1;
            }
            calls.remove(&call_id);
        }
        _ => {}
    }
}

/// The trunk side: answer INVITEs 200 (SDP answer keyed for the first offered crypto line),
/// BYEs 200, ignore ACKs.
async fn uas(layer: &TransportLayer, inbound: &Inbound, request: &Request) {
    let status_body = match request.method {
        Method::Invite => Some(answer_sdp(&request.body)),
        Method::Bye | Method::Options | Method::Cancel => Some(None),
        _ => None,
    };
    let Some(body) = status_body else { return };
    let mut response = Response::from_request(request, 200, None);
    if request.method == Method::Invite {
        let _ = response.set_to_tag("uas1");
        response.headers.push(
            "Contact",
            format!(
                "<sip:uas@{};transport={}>",
                inbound.local,
                transport_wire(inbound.transport).to_ascii_lowercase()
            ),
        );
    }
    if let Some(body) = body {
        response.headers.push("Content-Type", "application/sdp");
        response.body = body;
    }
    let _ = layer
        .send(Outbound::response_to(inbound, response.to_bytes()))
        .await;
}

fn answer_sdp(offer: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(offer).ok()?;
    let proto = if text.contains("RTP/SAVP") {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let mut sdp = format!(
        "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 42000 {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    if let Some(line) = text.lines().find(|l| l.starts_with("a=crypto:")) {
        // Same tag and suite, a fresh key of our own (RFC 4568 §7.1.2).
        let offered = srtp::sdes::CryptoAttribute::parse_line(line).ok()?;
        let ours = srtp::sdes::CryptoAttribute::generate(offered.tag, offered.suite).ok()?;
        sdp.push_str(&ours.sdp_line());
        sdp.push_str("\r\n");
    }
    sdp.push_str("a=sendrecv\r\n");
    Some(sdp.into_bytes())
}
