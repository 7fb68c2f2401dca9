//! The batch API is the single-packet API, many packets at a time: with three contexts of
//! different suites (AES-CM 80-bit, AES-GCM, AES-CM 32-bit) and 64 packets interleaved across
//! contexts and SSRCs (two streams crossing the sequence-number wrap), `Batch::protect_rtp`
//! output is byte-identical to protecting the same packets one by one, `Batch::unprotect_rtp`
//! recovers the plaintexts and follows the rollover counters, a tampered or malformed packet
//! fails alone, a packet repeated inside one batch is a replay the second time, SRTCP batches
//! behave the same, and a context index out of range panics.

mod common;

use common::{pair, payload, rtcp, rtp};
use srtp::{Batch, BatchPacket, Context, Error, Suite};

const SUITES: [Suite; 3] = [
    Suite::AesCm128HmacSha1_80,
    Suite::AeadAes128Gcm,
    Suite::AesCm128HmacSha1_32,
];
const PACKETS: usize = 64;
const ROOM: usize = 64;
/// First RTP packet index of each (context, SSRC) stream; two streams wrap within the batch.
const FIRST_INDEX: [[u64; 2]; 3] = [[65_530, 100], [7, 65_533], [40_000, 1]];

/// Fresh (sender, receiver) contexts for the three suites, each with its own key.
fn contexts() -> (Vec<Context>, Vec<Context>) {
    (0u8..)
        .zip(SUITES)
        .map(|(seed, suite)| pair(suite, 0x70 + seed))
        .unzip()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rtp,
    Rtcp,
}

/// One packet: its context, SSRC, packet index and plaintext.
#[derive(Clone, Debug)]
struct Packet {
    context: usize,
    ssrc: u32,
    /// RTP: ROC * 2^16 + SEQ; RTCP: SRTCP index.
    index: u64,
    plain: Vec<u8>,
}

/// The context of packet `i`: all three, interleaved irregularly.
fn context_of(i: usize) -> usize {
    (i ^ (i >> 2)) % 3
}

fn rtp_ssrc(context: usize, which: usize) -> u32 {
    0x1000_0000 * (u32::try_from(context).unwrap() + 1) + u32::try_from(which).unwrap()
}

fn rtp_packet(context: usize, which: usize, index: u64, n: usize) -> Packet {
    let ssrc = rtp_ssrc(context, which);
    let seq = u16::try_from(index & 0xffff).unwrap();
    let body = payload(u32::try_from(n).unwrap(), n * 37 % 201);
    let (mut plain, len) = rtp(ssrc, seq, &body, 0);
    plain.truncate(len);
    Packet {
        context,
        ssrc,
        index,
        plain,
    }
}

/// The packets of a session in progress: a first batch with one packet per stream (so both
/// ends know every stream), then 64 packets interleaved across the three contexts and two
/// SSRCs per context, payloads of 0..=200 bytes. RTCP needs no first batch.
fn session(kind: Kind) -> (Vec<Packet>, Vec<Packet>) {
    match kind {
        Kind::Rtp => {
            let mut next = FIRST_INDEX;
            let first = (0..6)
                .map(|s| {
                    let (context, which) = (s / 2, s % 2);
                    next[context][which] += 1;
                    rtp_packet(context, which, FIRST_INDEX[context][which], 100 + s)
                })
                .collect();
            let main = (0..PACKETS)
                .map(|i| {
                    let (context, which) = (context_of(i), (i >> 1) & 1);
                    let index = next[context][which];
                    next[context][which] += 1;
                    rtp_packet(context, which, index, i)
                })
                .collect();
            (first, main)
        }
        Kind::Rtcp => {
            let mut sent = [0u64; 6];
            let main = (0..PACKETS)
                .map(|i| {
                    let context = context_of(i);
                    let stream = context * 2 + (i >> 1) % 2;
                    sent[stream] += 1;
                    let ssrc = 0x2000_0000 + u32::try_from(stream).unwrap();
                    let (mut plain, len) = rtcp(ssrc, 4 * (i % 40), 0);
                    plain.truncate(len);
                    Packet {
                        context,
                        ssrc,
                        index: sent[stream],
                        plain,
                    }
                })
                .collect();
            (Vec::new(), main)
        }
    }
}

/// The packets' contexts and byte strings.
fn split(packets: &[Packet]) -> (Vec<usize>, Vec<Vec<u8>>) {
    packets.iter().map(|p| (p.context, p.plain.clone())).unzip()
}

/// Bytes a transform leaves in the clear at the start of a packet.
fn header_len(kind: Kind) -> usize {
    match kind {
        Kind::Rtp => 12,
        Kind::Rtcp => 8,
    }
}

/// Protects or unprotects `inputs` (packet `i` with context `context_of[i]`) in one batch and
/// returns each packet's result: its output bytes, or the error.
fn run_batch(
    batch: &mut Batch,
    contexts: &mut [Context],
    kind: Kind,
    protect: bool,
    context_of: &[usize],
    inputs: &[Vec<u8>],
) -> Vec<Result<Vec<u8>, Error>> {
    let mut bufs: Vec<Vec<u8>> = inputs
        .iter()
        .map(|p| {
            let mut b = p.clone();
            b.resize(p.len() + ROOM, 0);
            b
        })
        .collect();
    let mut packets: Vec<BatchPacket<'_>> = bufs
        .iter_mut()
        .zip(inputs)
        .zip(context_of)
        .map(|((buf, input), &context)| BatchPacket::new(context, buf, input.len()))
        .collect();
    match (kind, protect) {
        (Kind::Rtp, true) => batch.protect_rtp(contexts, &mut packets),
        (Kind::Rtp, false) => batch.unprotect_rtp(contexts, &mut packets),
        (Kind::Rtcp, true) => batch.protect_rtcp(contexts, &mut packets),
        (Kind::Rtcp, false) => batch.unprotect_rtcp(contexts, &mut packets),
    }
    packets
        .into_iter()
        .map(|p| p.result.map(|n| p.buf[..n].to_vec()))
        .collect()
}

/// The same, one call per packet.
fn run_single(
    contexts: &mut [Context],
    kind: Kind,
    protect: bool,
    context_of: &[usize],
    inputs: &[Vec<u8>],
) -> Vec<Result<Vec<u8>, Error>> {
    inputs
        .iter()
        .zip(context_of)
        .map(|(input, &context)| {
            let ctx = &mut contexts[context];
            let mut b = input.clone();
            b.resize(input.len() + ROOM, 0);
            let len = input.len();
            let n = match (kind, protect) {
                (Kind::Rtp, true) => ctx.protect_rtp(&mut b, len),
                (Kind::Rtp, false) => ctx.unprotect_rtp(&mut b, len),
                (Kind::Rtcp, true) => ctx.protect_rtcp(&mut b, len),
                (Kind::Rtcp, false) => ctx.unprotect_rtcp(&mut b, len),
            }?;
            b.truncate(n);
            Ok(b)
        })
        .collect()
}

fn all_ok(results: Vec<Result<Vec<u8>, Error>>) -> Vec<Vec<u8>> {
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("packet {i}: {e}")))
        .collect()
}

/// Sender and receiver contexts that have exchanged the session's first batch (one batch call
/// each), and the protected main packets (single calls).
fn in_progress(kind: Kind, first: &[Packet], main: &[Packet]) -> (Vec<Context>, Vec<Vec<u8>>) {
    let (mut tx, mut rx) = contexts();
    let mut batch = Batch::new();
    let (first_contexts, first_plains) = split(first);
    let sent = all_ok(run_batch(
        &mut batch,
        &mut tx,
        kind,
        true,
        &first_contexts,
        &first_plains,
    ));
    let received = all_ok(run_batch(
        &mut batch,
        &mut rx,
        kind,
        false,
        &first_contexts,
        &sent,
    ));
    assert_eq!(received, first_plains);
    let (main_contexts, main_plains) = split(main);
    let protected = all_ok(run_single(
        &mut tx,
        kind,
        true,
        &main_contexts,
        &main_plains,
    ));
    (rx, protected)
}

fn batch_matches_single_calls(kind: Kind) {
    let (first, main) = session(kind);
    let (first_contexts, first_plains) = split(&first);
    let (context_of, plains) = split(&main);
    let (mut tx, mut rx) = contexts();
    let (mut reference_tx, _) = contexts();
    let mut batch = Batch::new();

    // The first batch, then the 64 packets in two batches (reusing the scratch space).
    let sent_first = all_ok(run_batch(
        &mut batch,
        &mut tx,
        kind,
        true,
        &first_contexts,
        &first_plains,
    ));
    let (half_a, half_b) = plains.split_at(PACKETS / 2);
    let (contexts_a, contexts_b) = context_of.split_at(PACKETS / 2);
    let mut protected = all_ok(run_batch(
        &mut batch, &mut tx, kind, true, contexts_a, half_a,
    ));
    protected.extend(all_ok(run_batch(
        &mut batch, &mut tx, kind, true, contexts_b, half_b,
    )));

    let single_first = all_ok(run_single(
        &mut reference_tx,
        kind,
        true,
        &first_contexts,
        &first_plains,
    ));
    let one_by_one = all_ok(run_single(
        &mut reference_tx,
        kind,
        true,
        &context_of,
        &plains,
    ));
    assert_eq!(sent_first, single_first, "{kind:?}: the first batch");
    for (i, (batched, single)) in protected.iter().zip(&one_by_one).enumerate() {
        assert_eq!(
            batched, single,
            "{kind:?} packet {i}: batch and single call differ"
        );
        let (start, end) = (header_len(kind), plains[i].len());
        if end - start >= 4 {
            assert_ne!(
                batched[start..end],
                plains[i][start..],
                "{kind:?} {i}: encrypted"
            );
        }
    }

    let received_first = all_ok(run_batch(
        &mut batch,
        &mut rx,
        kind,
        false,
        &first_contexts,
        &sent_first,
    ));
    assert_eq!(received_first, first_plains, "{kind:?}: the first batch");
    let recovered = all_ok(run_batch(
        &mut batch,
        &mut rx,
        kind,
        false,
        &context_of,
        &protected,
    ));
    assert_eq!(
        recovered, plains,
        "{kind:?}: batch unprotect recovers the plaintexts"
    );
}

#[test]
fn batch_protect_rtp_is_byte_identical_to_single_calls_and_unprotect_recovers_it() {
    batch_matches_single_calls(Kind::Rtp);
}

#[test]
fn batch_protect_rtcp_is_byte_identical_to_single_calls_and_unprotect_recovers_it() {
    batch_matches_single_calls(Kind::Rtcp);
}

#[test]
fn batched_receivers_follow_the_rollover_like_single_calls() {
    let (first, main) = session(Kind::Rtp);
    let (rx, protected) = in_progress(Kind::Rtp, &first, &main);
    let mut batched_rx = rx.clone();
    let mut single_rx = rx;
    let (context_of, plains) = split(&main);
    let mut batch = Batch::with_capacity(PACKETS, 256);
    let recovered = all_ok(run_batch(
        &mut batch,
        &mut batched_rx,
        Kind::Rtp,
        false,
        &context_of,
        &protected,
    ));
    assert_eq!(recovered, plains);
    let recovered = all_ok(run_single(
        &mut single_rx,
        Kind::Rtp,
        false,
        &context_of,
        &protected,
    ));
    assert_eq!(recovered, plains);
    let mut wrapped = 0;
    for context in 0..3 {
        for which in 0..2 {
            let ssrc = rtp_ssrc(context, which);
            let highest = main
                .iter()
                .filter(|p| p.ssrc == ssrc)
                .map(|p| p.index)
                .max()
                .expect("every stream has packets");
            let roc = u32::try_from(highest >> 16).unwrap();
            wrapped += roc;
            assert_eq!(batched_rx[context].roc(ssrc), Some(roc), "batch {ssrc:#x}");
            assert_eq!(single_rx[context].roc(ssrc), Some(roc), "single {ssrc:#x}");
        }
    }
    assert_eq!(wrapped, 2, "two streams crossed the wrap");
}

#[test]
fn a_tampered_packet_fails_alone_in_its_batch() {
    for kind in [Kind::Rtp, Kind::Rtcp] {
        let (first, main) = session(kind);
        let (mut rx, mut protected) = in_progress(kind, &first, &main);
        let (context_of, plains) = split(&main);
        let genuine = protected[32].clone();
        // The first encrypted byte of packet 32.
        assert!(plains[32].len() > header_len(kind));
        protected[32][header_len(kind)] ^= 0x20;
        // A malformed packet (version 1) in the same batch fails at parsing, also alone.
        protected[40][0] = 0x40 | (protected[40][0] & 0x3f);

        let mut batch = Batch::new();
        let results = run_batch(&mut batch, &mut rx, kind, false, &context_of, &protected);
        for (i, result) in results.iter().enumerate() {
            match i {
                32 => assert_eq!(result, &Err(Error::AuthenticationFailed), "{kind:?}"),
                40 => assert_eq!(result, &Err(Error::BadVersion { version: 1 }), "{kind:?}"),
                _ => assert_eq!(result.as_ref(), Ok(&plains[i]), "{kind:?} packet {i}"),
            }
        }
        // The failed packet changed nothing: its genuine version is still accepted.
        let retry = run_batch(
            &mut batch,
            &mut rx,
            kind,
            false,
            &context_of[32..=32],
            &[genuine],
        );
        assert_eq!(retry, vec![Ok(plains[32].clone())], "{kind:?}");
    }
}

#[test]
fn a_malformed_packet_in_a_protect_batch_fails_alone() {
    let (_, main) = session(Kind::Rtp);
    let (mut context_of, mut plains) = split(&main);
    let (mut tx, _) = contexts();
    let (mut reference_tx, _) = contexts();
    let reference = all_ok(run_single(
        &mut reference_tx,
        Kind::Rtp,
        true,
        &context_of,
        &plains,
    ));
    // An 11-byte packet slipped in at position 20.
    context_of.insert(20, 1);
    plains.insert(20, vec![0x80; 11]);
    let mut batch = Batch::new();
    let mut results = run_batch(&mut batch, &mut tx, Kind::Rtp, true, &context_of, &plains);
    assert_eq!(
        results.remove(20),
        Err(Error::Truncated {
            len: 11,
            needed: 12
        })
    );
    assert_eq!(all_ok(results), reference);
}

#[test]
fn the_same_packet_twice_in_one_batch_is_a_replay_the_second_time() {
    for kind in [Kind::Rtp, Kind::Rtcp] {
        let (first, main) = session(kind);
        let (mut rx, mut protected) = in_progress(kind, &first, &main);
        let (mut context_of, plains) = split(&main);
        // Packet 5 again, at the end of the same batch.
        protected.push(protected[5].clone());
        context_of.push(context_of[5]);
        let mut batch = Batch::new();
        let results = run_batch(&mut batch, &mut rx, kind, false, &context_of, &protected);
        assert_eq!(results[5].as_ref(), Ok(&plains[5]), "{kind:?}");
        assert_eq!(
            results[PACKETS],
            Err(Error::Replayed {
                index: main[5].index
            }),
            "{kind:?}"
        );
        assert!(results[..PACKETS].iter().all(Result::is_ok), "{kind:?}");
    }
}

#[test]
fn a_new_streams_first_protect_batch_crosses_the_wrap_like_single_calls() {
    let (mut tx, _) = contexts();
    let (mut reference_tx, _) = contexts();
    let main: Vec<Packet> = (65_533..65_540)
        .map(|index| rtp_packet(1, 0, index, 0))
        .collect();
    let (context_of, plains) = split(&main);
    let batched = run_batch(
        &mut Batch::new(),
        &mut tx,
        Kind::Rtp,
        true,
        &context_of,
        &plains,
    );
    let single = run_single(&mut reference_tx, Kind::Rtp, true, &context_of, &plains);
    assert_eq!(all_ok(batched), all_ok(single));
    assert_eq!(tx[1].roc(rtp_ssrc(1, 0)), Some(1));
}

/// Receiving commits nothing until a tag verifies, so a batch estimates each packet's index from
/// the state its earlier packets of the same stream will leave: a new stream's first batch may
/// cross the 65535 -> 0 wrap, exactly as single calls do.
#[test]
fn a_new_streams_first_batch_may_cross_the_wrap() {
    let (mut tx, rx) = contexts();
    let main: Vec<Packet> = (65_533..65_540)
        .map(|index| rtp_packet(1, 0, index, 0))
        .collect();
    let (context_of, plains) = split(&main);
    let protected = all_ok(run_single(&mut tx, Kind::Rtp, true, &context_of, &plains));
    let single = run_single(&mut rx.clone(), Kind::Rtp, false, &context_of, &protected);
    assert_eq!(all_ok(single), plains, "single calls accept the wrap");
    let batched = run_batch(
        &mut Batch::new(),
        &mut rx.clone(),
        Kind::Rtp,
        false,
        &context_of,
        &protected,
    );
    assert_eq!(batched, plains.into_iter().map(Ok).collect::<Vec<_>>());
}

/// A known stream whose batch advances the sequence number by more than 2^15 in total (each
/// step below 2^15, so single calls follow them) follows the wrap too.
#[test]
fn a_batch_spanning_half_the_sequence_space_follows_the_wrap() {
    let (mut tx, rx) = contexts();
    let main: Vec<Packet> = [10, 20_000, 40_000, 60_000, 65_536 + 5]
        .into_iter()
        .map(|index| rtp_packet(0, 0, index, 0))
        .collect();
    let (context_of, plains) = split(&main);
    let protected = all_ok(run_single(&mut tx, Kind::Rtp, true, &context_of, &plains));
    let single = run_single(&mut rx.clone(), Kind::Rtp, false, &context_of, &protected);
    assert_eq!(all_ok(single), plains, "single calls follow the wrap");
    // The receiver knows the stream (packet 10) before the batch of the other four.
    let mut rx = rx;
    let first = run_batch(
        &mut Batch::new(),
        &mut rx,
        Kind::Rtp,
        false,
        &context_of[..1],
        &protected[..1],
    );
    assert_eq!(all_ok(first), plains[..1]);
    let batched = run_batch(
        &mut Batch::new(),
        &mut rx,
        Kind::Rtp,
        false,
        &context_of[1..],
        &protected[1..],
    );
    assert_eq!(
        batched,
        plains[1..].iter().cloned().map(Ok).collect::<Vec<_>>()
    );
}

#[test]
#[should_panic(expected = "names context 3 of 3")]
fn a_context_index_out_of_range_panics() {
    let (mut tx, _) = contexts();
    let (mut a, len_a) = rtp(1, 1, &[0; 20], ROOM);
    let (mut b, len_b) = rtp(2, 1, &[0; 20], ROOM);
    let mut packets = [
        BatchPacket::new(0, &mut a, len_a),
        BatchPacket::new(3, &mut b, len_b),
    ];
    Batch::new().protect_rtp(&mut tx, &mut packets);
}

/// A forged packet whose sequence number would move the stream far ahead must not make the
/// genuine packets after it in the same batch fail: their index was estimated from the forged
/// one, so the batch redoes them against the committed state.
#[test]
fn a_forged_packet_in_a_batch_does_not_derail_the_genuine_ones_after_it() {
    let (mut tx, rx) = contexts();
    let (mut other_sender, _) = contexts();
    let genuine: Vec<Packet> = [100, 101, 102]
        .into_iter()
        .map(|index| rtp_packet(0, 0, index, 0))
        .collect();
    let (context_of, plains) = split(&genuine);
    let protected = all_ok(run_single(&mut tx, Kind::Rtp, true, &context_of, &plains));
    // A packet claiming a jump to 40 000, protected by another sender and then corrupted.
    let jump = [rtp_packet(0, 0, 40_000, 0)];
    let (jump_context, jump_plain) = split(&jump);
    let mut forged = all_ok(run_single(
        &mut other_sender,
        Kind::Rtp,
        true,
        &jump_context,
        &jump_plain,
    ));
    let last = forged[0].len() - 1;
    forged[0][last] ^= 0x01;

    let mut rx = rx;
    let first = run_batch(
        &mut Batch::new(),
        &mut rx,
        Kind::Rtp,
        false,
        &context_of[..1],
        &protected[..1],
    );
    assert_eq!(all_ok(first), plains[..1]);
    let batch_contexts = [jump_context[0], context_of[1], context_of[2]];
    let batch_packets = [
        forged[0].clone(),
        protected[1].clone(),
        protected[2].clone(),
    ];
    let batched = run_batch(
        &mut Batch::new(),
        &mut rx,
        Kind::Rtp,
        false,
        &batch_contexts,
        &batch_packets,
    );
    assert_eq!(batched[0], Err(Error::AuthenticationFailed));
    assert_eq!(batched[1], Ok(plains[1].clone()));
    assert_eq!(batched[2], Ok(plains[2].clone()));
}
