//! Criterion benchmarks of the engine alone: protect and unprotect of 172-byte RTP packets
//! (12-byte header, 160-byte payload), one packet per call and batches of 64, every suite.
//! `cargo bench -p srtp`; the side-by-side comparison with libsrtp is the
//! `srtp_vs_libsrtp` example (`cargo xtask bench srtp`).

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "benchmark arithmetic: packet counters and nanosecond ratios"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use srtp::{Batch, BatchPacket, Context, MasterKey, Policy, Suite};

const PACKET: usize = 172;
const BATCH: usize = 64;

fn context(suite: Suite) -> Context {
    let material: Vec<u8> = (0..suite.key_material_len()).map(|i| i as u8).collect();
    let mut policy = Policy::new(MasterKey::from_material(suite, &material).unwrap());
    // The benchmark re-protects the same indices across iterations.
    policy.allow_repeat_tx = true;
    Context::new(&policy).unwrap()
}

fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; PACKET + 64];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    p
}

fn protect(c: &mut Criterion) {
    for suite in Suite::ALL {
        let mut group = c.benchmark_group(format!("protect/{suite}"));
        group.throughput(Throughput::Elements(1));
        let mut ctx = context(suite);
        let mut buf = packet(1);
        group.bench_function("single", |b| {
            b.iter(|| black_box(ctx.protect_rtp(&mut buf, PACKET).unwrap()));
        });
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut contexts = vec![context(suite)];
        let mut batch = Batch::with_capacity(BATCH, PACKET + 64);
        let mut bufs: Vec<Vec<u8>> = (0..BATCH as u16).map(packet).collect();
        group.bench_function("batch64", |b| {
            b.iter(|| {
                let mut packets: Vec<BatchPacket<'_>> = bufs
                    .iter_mut()
                    .map(|buf| BatchPacket::new(0, buf, PACKET))
                    .collect();
                batch.protect_rtp(&mut contexts, &mut packets);
                black_box(&packets[0].result);
            });
        });
        group.finish();
    }
}

fn unprotect(c: &mut Criterion) {
    for suite in Suite::ALL {
        let mut group = c.benchmark_group(format!("unprotect/{suite}"));
        // Protected packets with fresh indices; the receiver is re-created per sample batch so
        // the replay window never refuses them.
        let mut tx = context(suite);
        let mut seq = 0u16;
        let mut next_protected = move || {
            seq = seq.wrapping_add(1);
            let mut p = packet(seq);
            let len = tx.protect_rtp(&mut p, PACKET).unwrap();
            (p, len)
        };
        group.throughput(Throughput::Elements(1));
        group.bench_function("single", |b| {
            b.iter_batched(
                || (context(suite), next_protected()),
                |(mut rx, (mut p, len))| black_box(rx.unprotect_rtp(&mut p, len).unwrap()),
                BatchSize::SmallInput,
            );
        });
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut batch = Batch::with_capacity(BATCH, PACKET + 64);
        group.bench_function("batch64", |b| {
            b.iter_batched(
                || {
                    let packets: Vec<(Vec<u8>, usize)> =
                        (0..BATCH).map(|_| next_protected()).collect();
                    (vec![context(suite)], packets)
                },
                |(mut contexts, mut work)| {
                    let mut packets: Vec<BatchPacket<'_>> = work
                        .iter_mut()
                        .map(|(p, len)| BatchPacket::new(0, p, *len))
                        .collect();
                    batch.unprotect_rtp(&mut contexts, &mut packets);
                    black_box(&packets[0].result);
                },
                BatchSize::SmallInput,
            );
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1))
        .sample_size(30);
    targets = protect, unprotect
}
criterion_main!(benches);
