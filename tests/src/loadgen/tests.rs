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
        if self.fail_at == Some(call.index) {
            return Err(LoadgenError::config("fake relay refuses this call"));
        }
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
                    let len = match &mut outbound {
                        Some(ctx) => ctx.protect_rtp(&mut buf, len).unwrap(),
                        None => len,
                    };
                    n += 1;
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
