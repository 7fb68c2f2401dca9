//! End-to-end runs of the generator against an in-process fake relay that bridges A and B the
//! way relayd and rtpengine do (SRTP on A, plain on B) and can drop, duplicate or corrupt
//! packets on purpose, so that every counter of the report is checked against what the relay
//! really did.

use std::{
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use srtp::{sdes::CryptoAttribute, Context, Suite};

use super::*;

/// What the fake relay does to packets on purpose (every n-th packet of each call and
/// direction, counting from 1; 0 = never).
#[derive(Clone, Copy, Debug, Default)]
struct Impairments {
    drop_a_to_b: u64,
    duplicate_b_to_a: u64,
    corrupt_tag_b_to_a: u64,
}

#[derive(Debug, Default)]
struct Done {
    dropped: AtomicU64,
    duplicated: AtomicU64,
    corrupted: AtomicU64,
}

#[derive(Debug)]
struct FakeCall {
    id: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct FakeRelay {
    impairments: Impairments,
    done: Arc<Done>,
    calls: Vec<FakeCall>,
    /// Refuse the call with this index.
    fail_at: Option<u32>,
    /// Stop forwarding both streams of this call, for good, after this many packets each
    /// (the way rtpengine gives up on a socket after repeated backlogs).
    gives_up: Option<(u32, u64)>,
    creates: usize,
    deletes: usize,
}

impl FakeRelay {
    fn new(impairments: Impairments) -> Self {
        Self {
            impairments,
            ..Self::default()
        }
    }
}

impl Drop for FakeCall {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let joined = t.join();
            assert!(
                joined.is_ok() || thread::panicking(),
                "a fake relay thread panicked"
            );
        }
    }
}

fn srtp_context(attribute: &CryptoAttribute) -> Context {
    Context::new(&policy(attribute, None).unwrap()).unwrap()
}

impl Controller for FakeRelay {
    fn name(&self) -> &'static str {
        "fake relay"
    }

    fn create(&mut self, call: &CallPlan) -> Result<RelayCall, LoadgenError> {
        self.creates += 1;
        if self.fail_at == Some(call.index) {
            return Err(LoadgenError::config("fake relay refuses this call"));
        }
        let forward_at_most = match self.gives_up {
            Some((index, packets)) if index == call.index => packets,
            _ => u64::MAX,
        };
        let leg_a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let leg_b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&leg_a, &leg_b] {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        let relay_key = call
            .a_key
            .as_ref()
            .map(|k| CryptoAttribute::generate(k.tag, k.suite).unwrap());
        let relay = RelayCall {
            a_to_relay: leg_a.local_addr().unwrap(),
            b_to_relay: leg_b.local_addr().unwrap(),
            relay_key: relay_key.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let imp = self.impairments;

        // A -> relay (SRTP): unprotect, forward plain to B from leg B.
        let a_to_b = {
            let (rx, tx) = (leg_a.try_clone().unwrap(), leg_b.try_clone().unwrap());
            let mut inbound = call.a_key.as_ref().map(srtp_context);
            let (to, stop, done) = (call.b, stop.clone(), self.done.clone());
            thread::spawn(move || {
                let mut buf = [0_u8; 2048];
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(len) = rx.recv(&mut buf) else { continue };
                    let len = match &mut inbound {
                        Some(ctx) => match ctx.unprotect_rtp(&mut buf, len) {
                            Ok(len) => len,
                            Err(_) => continue,
                        },
                        None => len,
                    };
                    n += 1;
                    if n > forward_at_most {
                        continue;
                    }
                    if imp.drop_a_to_b > 0 && n.is_multiple_of(imp.drop_a_to_b) {
                        done.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let _ = tx.send_to(&buf[..len], to);
                }
            })
        };
        // B -> relay (plain): protect with the relay's key, forward to A from leg A.
        let b_to_a = {
            let (rx, tx) = (leg_b, leg_a);
            let mut outbound = relay_key.as_ref().map(srtp_context);
            let (to, stop, done) = (call.a, stop.clone(), self.done.clone());
            thread::spawn(move || {
                let mut buf = [0_u8; 2048];
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(len) = rx.recv(&mut buf) else { continue };
                    n += 1;
                    if n > forward_at_most {
                        continue;
                    }
                    let len = match &mut outbound {
                        Some(ctx) => ctx.protect_rtp(&mut buf, len).unwrap(),
                        None => len,
                    };
                    if imp.corrupt_tag_b_to_a > 0 && n.is_multiple_of(imp.corrupt_tag_b_to_a) {
                        buf[len - 1] ^= 0x55;
                        done.corrupted.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send_to(&buf[..len], to);
                        continue;
                    }
                    let _ = tx.send_to(&buf[..len], to);
                    if imp.duplicate_b_to_a > 0 && n.is_multiple_of(imp.duplicate_b_to_a) {
                        done.duplicated.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send_to(&buf[..len], to);
                    }
                }
            })
        };
        self.calls.push(FakeCall {
            id: call.id.clone(),
            stop,
            threads: vec![a_to_b, b_to_a],
        });
        Ok(relay)
    }

    fn delete(&mut self, call: &CallPlan) -> Result<(), LoadgenError> {
        self.deletes += 1;
        let position = self
            .calls
            .iter()
            .position(|c| c.id == call.id)
            .ok_or_else(|| LoadgenError::config("unknown call"))?;
        drop(self.calls.remove(position));
        Ok(())
    }
}

fn config(calls: u32, pps: u64, suite: Option<Suite>) -> Config {
    let mut config = Config::new(Control::Ng {
        server: "127.0.0.1:9".parse().unwrap(),
    });
    config.calls = calls;
    config.pps = pps;
    config.duration = Duration::from_secs(1);
    config.drain = Duration::from_millis(300);
    config.suite = suite;
    config
}

#[test]
fn a_clean_srtp_run_receives_everything_it_sent() {
    let mut relay = FakeRelay::new(Impairments::default());
    let config = config(3, 200, Some(Suite::AesCm128HmacSha1_80));
    let report = run_with(&mut relay, &config, 200, config.duration, "").unwrap();
    for d in [&report.per_direction.a_to_b, &report.per_direction.b_to_a] {
        assert_eq!(d.sent, 3 * 200, "{report:#?}");
        assert_eq!(d.received, d.sent, "{report:#?}");
        assert_eq!(
            (d.lost, d.corrupt, d.auth_failures, d.duplicates),
            (0, 0, 0, 0)
        );
        assert!(d.latency_us.p50 > 0.0 && d.latency_us.max < 1_000_000.0);
    }
    assert_eq!(report.target_pps, 1200);
    assert!(
        (report.offered_pps - 1200.0).abs() < 1.0,
        "{}",
        report.offered_pps
    );
    assert_eq!(report.packet_bytes, 172);
    assert_eq!(relay.deletes, 3, "every call is torn down");
    assert!(relay.calls.is_empty());
}

#[test]
fn a_plain_run_with_warmup_counts_only_the_measured_window() {
    let mut relay = FakeRelay::new(Impairments::default());
    let mut config = config(2, 100, None);
    config.warmup = Duration::from_millis(300);
    config.payload_len = 32;
    let report = run_with(&mut relay, &config, 100, config.duration, "").unwrap();
    assert_eq!(report.sent, 2 * 2 * 100);
    assert_eq!(report.received, report.sent);
    assert_eq!(report.srtp_suite, None);
    assert_eq!(report.packet_bytes, 44);
}

#[test]
fn loss_duplicates_and_forged_tags_are_counted_exactly() {
    let mut relay = FakeRelay::new(Impairments {
        drop_a_to_b: 10,
        duplicate_b_to_a: 7,
        corrupt_tag_b_to_a: 5,
    });
    let config = config(2, 250, Some(Suite::AesCm128HmacSha1_80));
    let report = run_with(&mut relay, &config, 250, config.duration, "").unwrap();
    let done = &relay.done;
    let (dropped, duplicated, corrupted) = (
        done.dropped.load(Ordering::Relaxed),
        done.duplicated.load(Ordering::Relaxed),
        done.corrupted.load(Ordering::Relaxed),
    );
    let a_to_b = &report.per_direction.a_to_b;
    let b_to_a = &report.per_direction.b_to_a;
    assert_eq!(a_to_b.sent, 500);
    assert_eq!(dropped, 50);
    assert_eq!(a_to_b.lost, dropped, "{report:#?}");
    assert_eq!(a_to_b.auth_failures, 0);
    assert_eq!(b_to_a.auth_failures, corrupted, "{report:#?}");
    assert_eq!(b_to_a.lost, corrupted, "a forged packet is not received");
    assert_eq!(b_to_a.duplicates, duplicated, "{report:#?}");
    assert_eq!(report.corrupt, 0);
    assert!(!report.is_clean(0.001));
    assert!((a_to_b.loss_ratio - 0.1).abs() < 1e-9);
}

#[test]
fn a_refused_call_tears_down_the_ones_already_made() {
    let mut relay = FakeRelay {
        fail_at: Some(2),
        ..FakeRelay::default()
    };
    let config = config(4, 50, Some(Suite::AesCm128HmacSha1_80));
    let err = run_with(&mut relay, &config, 50, config.duration, "").unwrap_err();
    assert!(err.to_string().contains("refuses"), "{err}");
    assert_eq!(
        relay.deletes, 3,
        "the two made, and the refused one just in case"
    );
    assert!(relay.calls.is_empty());
}

#[test]
fn find_max_reports_every_step_and_the_best_clean_one() {
    let mut relay = FakeRelay::new(Impairments::default());
    let config = config(2, 50, Some(Suite::AesCm128HmacSha1_80));
    let params = FindMaxParams {
        step: Duration::from_secs(1),
        max_steps: 2,
        max_loss: 0.001,
    };
    let report = find_max_with(&mut relay, &config, &params).unwrap();
    let rates: Vec<u64> = report.steps.iter().map(|s| s.pps_per_stream).collect();
    assert_eq!(rates, vec![50, 100]);
    assert!(report.steps.iter().all(|s| s.verdict == Verdict::Clean));
    assert_eq!(report.result.pps_per_stream, Some(100));
    let total = report.result.max_clean_pps.unwrap();
    assert!((total - 400.0).abs() < 1.0, "{total}");
    assert!((report.result.equivalent_calls_at_50pps.unwrap() - 4.0).abs() < 0.01);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mode"], "find_max");
    assert_eq!(json["steps"][1]["verdict"], "clean");
    assert!(json["result"]["latency_us"]["p99"].is_number());
    assert!(report.summary().contains("max clean rate: 400 pps"));
}

#[test]
fn configuration_bounds_and_address_policy_are_enforced() {
    let ok = config(1, 50, None);
    ok.validate().unwrap();
    let mut bad = ok.clone();
    bad.calls = 0;
    assert!(bad.validate().is_err());
    let mut bad = ok.clone();
    bad.pps = MAX_PPS + 1;
    assert!(bad.validate().is_err());
    let mut bad = ok.clone();
    bad.payload_len = 31;
    assert!(bad.validate().is_err());
    let mut bad = ok.clone();
    bad.bind_a = "10.0.0.1".parse().unwrap();
    assert!(matches!(
        bad.validate(),
        Err(LoadgenError::AddressNotAllowed { .. })
    ));
    let mut bad = ok.clone();
    bad.control = Control::Ng {
        server: "192.0.2.1:2223".parse().unwrap(),
    };
    assert!(matches!(
        bad.validate(),
        Err(LoadgenError::AddressNotAllowed { .. })
    ));
    let mut bad = ok;
    bad.control = Control::Api {
        url: "http://192.0.2.1:8740".to_owned(),
        token: None,
    };
    assert!(matches!(
        bad.controller(),
        Err(LoadgenError::AddressNotAllowed { .. })
    ));
}

#[test]
fn a_step_that_loses_packets_failed_even_when_the_generator_fell_short() {
    let report = |offered_pps: f64, loss_ratio: f64| Report {
        calls: 10,
        pps_per_stream: 100,
        target_pps: 2000,
        offered_pps,
        loss_ratio,
        sent: 1000,
        ..Report::default()
    };
    assert_eq!(verdict(&report(2000.0, 0.0), 0.001), Verdict::Clean);
    assert_eq!(verdict(&report(1990.0, 0.001), 0.001), Verdict::Clean);
    assert_eq!(
        verdict(&report(1500.0, 0.0), 0.001),
        Verdict::GeneratorLimited
    );
    assert_eq!(verdict(&report(1500.0, 0.5), 0.001), Verdict::Failed);
    assert_eq!(verdict(&report(2000.0, 0.002), 0.001), Verdict::Failed);
    let mut forged = report(2000.0, 0.0);
    forged.auth_failures = 1;
    assert_eq!(verdict(&forged, 0.001), Verdict::Failed);
}

fn overload_params() -> OverloadParams {
    OverloadParams {
        pps_per_stream: 100,
        overload: Duration::from_secs(1),
        recover: Duration::from_secs(1),
    }
}

#[test]
fn overload_runs_both_phases_on_the_same_calls_and_counts_the_streams_that_gave_up() {
    // Call 1's streams stop after 100 packets each, halfway through the overload phase.
    let mut relay = FakeRelay {
        gives_up: Some((1, 100)),
        ..FakeRelay::default()
    };
    let mut config = config(3, 50, Some(Suite::AesCm128HmacSha1_80));
    config.alive_window = Duration::from_millis(500);
    let report = overload_with(&mut relay, &config, &overload_params()).unwrap();
    eprint!("{}", report.summary());
    assert_eq!(
        (relay.creates, relay.deletes),
        (3, 3),
        "set up once, torn down once"
    );
    assert!(relay.calls.is_empty());

    let result = &report.overload;
    let (overload, recovery) = (&result.overload, &result.recovery.report);
    assert_eq!(result.pps_per_stream, 100);
    assert_eq!(
        (overload.pps_per_stream, recovery.pps_per_stream),
        (200, 50)
    );
    for (phase, per_stream) in [(overload, 200), (recovery, 50)] {
        for d in [&phase.per_direction.a_to_b, &phase.per_direction.b_to_a] {
            assert_eq!(d.sent, 3 * per_stream, "{phase:#?}");
        }
    }
    assert_eq!(overload.received, 2 * 2 * 200 + 2 * 100, "{overload:#?}");
    assert_eq!(recovery.received, 2 * 2 * 50, "{recovery:#?}");
    // Sequence numbers and SRTP indices ran on from one phase to the next: a restart would be
    // refused as replays by the SRTP context or booked as duplicates.
    for phase in [overload, recovery] {
        assert_eq!(
            (
                phase.duplicates,
                phase.out_of_order,
                phase.corrupt,
                phase.auth_failures,
                phase.send_errors
            ),
            (0, 0, 0, 0, 0),
            "{phase:#?}"
        );
    }
    assert_eq!(
        result.recovery.health,
        StreamHealth {
            streams_total: 6,
            streams_alive: 4,
            streams_dead: 2,
        }
    );
    let per_direction = result.recovery.health_per_direction;
    assert_eq!(per_direction.a_to_b, per_direction.b_to_a);
    assert_eq!(
        (
            per_direction.a_to_b.streams_alive,
            per_direction.a_to_b.streams_dead
        ),
        (2, 1)
    );
    assert!(report.summary().contains("4 alive, 2 dead, 0 partly, of 6"));
    assert!(!result.generator_limited);

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mode"], "overload");
    let o = &json["overload"];
    assert_eq!(o["pps_per_stream"], 100);
    assert_eq!(o["overload"]["pps_per_stream"], 200);
    assert!(o["overload"]["offered_pps"].is_number());
    let loss = o["overload"]["loss_ratio"].as_f64().unwrap();
    assert!((loss - 200.0 / 1200.0).abs() < 1e-9, "{loss}");
    assert_eq!(o["recovery"]["pps_per_stream"], 50);
    assert!(o["recovery"]["received_pps"].is_number());
    assert_eq!(o["recovery"]["streams_total"], 6);
    assert_eq!(o["recovery"]["streams_alive"], 4);
    assert_eq!(o["recovery"]["streams_dead"], 2);
    assert_eq!(o["recovery"]["window_s"], 0.5);
    assert_eq!(
        o["recovery"]["health_per_direction"]["b_to_a"]["streams_dead"],
        1
    );
}

#[test]
fn an_overload_report_judges_each_stream_on_its_window_counts() {
    let config = config(2, 50, None);
    let params = overload_params();
    let phase = |sent: u64, received: u64| {
        let mut tallies = stats::Tallies::default();
        for d in 0..2 {
            tallies.send[d].sent = sent;
            tallies.receive[d].received = received;
        }
        engine::PhaseOutcome {
            tallies,
            duration_s: 1.0,
        }
    };
    // Streams: call 0 A->B, call 0 B->A, call 1 A->B, call 1 B->A.
    let mut window_sent = stats::WindowCounter::new(4, 0..100);
    let mut window_received = stats::WindowCounter::new(4, 0..100);
    for (stream, sent, received) in [(0, 10, 10), (1, 10, 0), (2, 10, 9), (3, 10, 5)] {
        for index in 0..sent {
            window_sent.record(stream, index);
        }
        for index in 0..received {
            window_received.record(stream, index);
        }
    }
    let outcome = DriveOutcome {
        phases: vec![phase(400, 200), phase(100, 100)],
        window_sent,
        window_received,
    };
    let report = OverloadReport::new(&config, &params, &outcome).unwrap();
    let recovery = &report.overload.recovery;
    assert_eq!(
        recovery.health,
        StreamHealth {
            streams_total: 4,
            streams_alive: 2,
            streams_dead: 1,
        }
    );
    assert_eq!(recovery.health_per_direction.a_to_b.streams_alive, 2);
    assert_eq!(recovery.health_per_direction.b_to_a.streams_dead, 1);
    assert_eq!(recovery.health_per_direction.b_to_a.streams_alive, 0);
    let overload = &report.overload.overload;
    assert_eq!(
        (overload.sent, overload.received, overload.lost),
        (800, 400, 400)
    );
    assert!((overload.loss_ratio - 0.5).abs() < 1e-12);
    assert_eq!(overload.target_pps, 2 * 2 * 200);
    assert_eq!(recovery.report.target_pps, 2 * 2 * 50);
    assert_eq!(recovery.report.lost, 0);
    assert!(
        !report.overload.generator_limited,
        "both phases offered in full"
    );

    let short = DriveOutcome {
        phases: vec![phase(300, 300), phase(100, 100)],
        ..outcome.clone()
    };
    let limited = OverloadReport::new(&config, &params, &short).unwrap();
    assert!(limited.overload.generator_limited, "600 of 800 pps offered");
    assert!(limited.summary().contains("could not offer"));

    let one_phase = DriveOutcome {
        phases: vec![phase(1, 1)],
        ..outcome
    };
    assert!(OverloadReport::new(&config, &params, &one_phase).is_err());
}

#[test]
fn overload_parameters_are_bounded_and_the_window_fits_the_recovery() {
    let mut config = config(1, 50, None);
    config.alive_window = Duration::from_millis(500);
    let ok = overload_params();
    ok.validate(&config).unwrap();
    assert_eq!((ok.overload_pps(), ok.recovery_pps()), (200, 50));
    assert_eq!(OverloadParams::new(3).recovery_pps(), 1, "rounded down");
    let mut bad = ok.clone();
    bad.pps_per_stream = 1;
    assert!(bad.validate(&config).is_err());
    let mut bad = ok.clone();
    bad.pps_per_stream = MAX_PPS / 2 + 1;
    assert!(bad.validate(&config).is_err());
    let mut bad = ok.clone();
    bad.overload = Duration::ZERO;
    assert!(bad.validate(&config).is_err());
    let mut bad = ok.clone();
    bad.recover = MAX_PHASE + Duration::from_secs(1);
    assert!(bad.validate(&config).is_err());
    let mut long_window = config.clone();
    long_window.alive_window = Duration::from_secs(2);
    assert!(
        ok.validate(&long_window).is_err(),
        "2 s window, 1 s recovery"
    );
    let mut no_window = config;
    no_window.alive_window = Duration::ZERO;
    assert!(no_window.validate().is_err());
}
