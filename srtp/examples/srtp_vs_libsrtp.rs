//! Benchmark harness: this engine against libsrtp 2.5 (Debian's libsrtp2, through FFI) in the
//! same process, on the same packets, pinned to one core.
//!
//! 172-byte RTP packets (12-byte header, 160-byte payload), every suite, protect and unprotect,
//! single-packet calls and batches of 64. Each measurement runs `--packets` packets and is
//! repeated `--rounds` times in an interleaved order (ours, libsrtp, ours, ...), so drift on a
//! noisy machine hits both alike; the median is reported. Prints a Markdown table.
//!
//! Run it with `cargo xtask bench srtp` (or `cargo run --release -p srtp --example
//! srtp_vs_libsrtp -- --cpu 1`).

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "benchmark arithmetic: packet counters and nanosecond ratios"
)]

use std::time::Instant;

use libsrtp_oracle::{Direction, LibSrtp, OracleConfig, Profile};
use srtp::{Batch, BatchPacket, Context, MasterKey, Policy, Suite};

const PAYLOAD: usize = 160;
const PACKET: usize = 12 + PAYLOAD;
const ROOM: usize = 160;
const BATCH: usize = 64;

struct Options {
    cpu: Option<usize>,
    /// Skip libsrtp (for profiling this engine alone).
    ours_only: bool,
    /// Only this suite.
    suite: Option<Suite>,
    packets: usize,
    rounds: usize,
}

fn options() -> Options {
    let mut options = Options {
        cpu: None,
        ours_only: false,
        suite: None,
        packets: 200_000,
        rounds: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--ours-only" => options.ours_only = true,
            "--suite" => {
                let name = args.next().unwrap_or_default();
                options.suite = Some(
                    Suite::from_sdes_name(&name).unwrap_or_else(|| panic!("unknown suite {name}")),
                );
            }
            "--cpu" => options.cpu = Some(value()),
            "--packets" => options.packets = value(),
            "--rounds" => options.rounds = value(),
            other => panic!(
                "unknown argument {other} (expected --cpu N, --packets N, --rounds N, \
                 --suite NAME, --ours-only)"
            ),
        }
    }
    options
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; sched_setaffinity(0, ...)
    // applies to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set),
            0,
            "sched_setaffinity({cpu}) failed"
        );
    }
}

fn profile(suite: Suite) -> Profile {
    match suite {
        Suite::AesCm128HmacSha1_80 => Profile::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32 => Profile::AesCm128HmacSha1_32,
        Suite::AesCm256HmacSha1_80 => Profile::AesCm256HmacSha1_80,
        Suite::AesCm256HmacSha1_32 => Profile::AesCm256HmacSha1_32,
        Suite::AeadAes128Gcm => Profile::AeadAes128Gcm,
        Suite::AeadAes256Gcm => Profile::AeadAes256Gcm,
        _ => unreachable!("every suite is mapped"),
    }
}

/// A 172-byte RTP packet with sequence number `seq` in a buffer with room for the trailer.
fn plain_packet(seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; PACKET + ROOM];
    p[0] = 0x80;
    p[1] = 0x00;
    p[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    p[4..8].copy_from_slice(&seq.wrapping_mul(160).to_be_bytes());
    p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    for (i, b) in p[12..PACKET].iter_mut().enumerate() {
        *b = (i as u32 ^ seq) as u8;
    }
    p
}

fn ours(suite: Suite, material: &[u8]) -> Context {
    let mut policy = Policy::new(MasterKey::from_material(suite, material).unwrap());
    policy.max_streams = 4;
    Context::new(&policy).unwrap()
}

fn lib(suite: Suite, direction: Direction, material: &[u8]) -> LibSrtp {
    LibSrtp::new(&OracleConfig::single_key(
        profile(suite),
        direction,
        material.to_vec(),
    ))
    .unwrap()
}

/// ns per packet of one timed run.
fn per_packet(start: Instant, packets: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / packets as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Row {
    suite: Suite,
    op: &'static str,
    ours_single: f64,
    ours_batch: f64,
    libsrtp: f64,
}

fn protect_runs(suite: Suite, material: &[u8], options: &Options) -> Row {
    let template: Vec<Vec<u8>> = (0..BATCH as u32).map(plain_packet).collect();
    let (mut single, mut batched, mut reference) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        // Ours, one packet per call.
        let mut ctx = ours(suite, material);
        let mut buf = template[0].clone();
        let start = Instant::now();
        for n in 0..options.packets as u32 {
            buf[..PACKET].copy_from_slice(&template[(n % 64) as usize][..PACKET]);
            buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            let len = ctx.protect_rtp(&mut buf, PACKET).unwrap();
            std::hint::black_box(len);
        }
        single.push(per_packet(start, options.packets));

        // Ours, batches of 64.
        let mut contexts = vec![ours(suite, material)];
        let mut batch = Batch::with_capacity(BATCH, PACKET + 64);
        let mut bufs = template.clone();
        let rounds = options.packets / BATCH;
        let start = Instant::now();
        for r in 0..rounds {
            for (i, buf) in bufs.iter_mut().enumerate() {
                buf[..PACKET].copy_from_slice(&template[i][..PACKET]);
                buf[2..4].copy_from_slice(&((r * BATCH + i) as u16).to_be_bytes());
            }
            let mut packets: [BatchPacket<'_>; BATCH] = {
                let mut it = bufs.iter_mut();
                std::array::from_fn(|_| BatchPacket::new(0, it.next().unwrap(), PACKET))
            };
            batch.protect_rtp(&mut contexts, &mut packets);
            std::hint::black_box(&packets[BATCH - 1].result);
        }
        batched.push(per_packet(start, rounds * BATCH));

        if options.ours_only {
            continue;
        }
        // libsrtp.
        let mut session = lib(suite, Direction::Outbound, material);
        let mut buf = template[0].clone();
        let start = Instant::now();
        for n in 0..options.packets as u32 {
            buf[..PACKET].copy_from_slice(&template[(n % 64) as usize][..PACKET]);
            buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            let len = session.protect_rtp_in_place(&mut buf, PACKET).unwrap();
            std::hint::black_box(len);
        }
        reference.push(per_packet(start, options.packets));
    }
    Row {
        suite,
        op: "protect",
        ours_single: median(single),
        ours_batch: median(batched),
        libsrtp: if reference.is_empty() {
            f64::NAN
        } else {
            median(reference)
        },
    }
}

/// Packets per unprotect pass: small enough to stay in cache like a receive batch does, a
/// multiple of the batch size.
const UNPROTECT_SET: usize = 16_384;

fn unprotect_runs(suite: Suite, material: &[u8], options: &Options) -> Row {
    // Protect once (our output is byte-identical to libsrtp's, see srtp_matches_libsrtp.rs).
    let mut tx = ours(suite, material);
    let protected: Vec<(Vec<u8>, usize)> = (0..UNPROTECT_SET as u32)
        .map(|n| {
            let mut p = plain_packet(n);
            let len = tx.protect_rtp(&mut p, PACKET).unwrap();
            p.truncate(len + 16);
            (p, len)
        })
        .collect();
    let passes = options.packets.div_ceil(UNPROTECT_SET);
    let total = passes * UNPROTECT_SET;
    let (mut single, mut batched, mut reference) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        let mut elapsed = std::time::Duration::ZERO;
        for _ in 0..passes {
            let mut work = protected.clone();
            let mut ctx = ours(suite, material);
            let start = Instant::now();
            for (buf, len) in &mut work {
                std::hint::black_box(ctx.unprotect_rtp(buf, *len).unwrap());
            }
            elapsed += start.elapsed();
        }
        single.push(elapsed.as_nanos() as f64 / total as f64);

        let mut batch = Batch::with_capacity(BATCH, PACKET + 64);
        let mut elapsed = std::time::Duration::ZERO;
        for _ in 0..passes {
            let mut work = protected.clone();
            let mut contexts = vec![ours(suite, material)];
            let start = Instant::now();
            for chunk in work.chunks_exact_mut(BATCH) {
                let mut packets: [BatchPacket<'_>; BATCH] = {
                    let mut it = chunk.iter_mut();
                    std::array::from_fn(|_| {
                        let (buf, len) = it.next().unwrap();
                        BatchPacket::new(0, buf, *len)
                    })
                };
                batch.unprotect_rtp(&mut contexts, &mut packets);
                std::hint::black_box(&packets[BATCH - 1].result);
            }
            elapsed += start.elapsed();
            assert_eq!(
                contexts[0].roc(0x1234_5678),
                Some(0),
                "every packet was accepted"
            );
        }
        batched.push(elapsed.as_nanos() as f64 / total as f64);

        if options.ours_only {
            continue;
        }
        let mut elapsed = std::time::Duration::ZERO;
        for _ in 0..passes {
            let mut work = protected.clone();
            let mut session = lib(suite, Direction::Inbound, material);
            let start = Instant::now();
            for (buf, len) in &mut work {
                std::hint::black_box(session.unprotect_rtp_in_place(buf, *len).unwrap());
            }
            elapsed += start.elapsed();
        }
        reference.push(elapsed.as_nanos() as f64 / total as f64);
    }
    Row {
        suite,
        op: "unprotect",
        ours_single: median(single),
        ours_batch: median(batched),
        libsrtp: if reference.is_empty() {
            f64::NAN
        } else {
            median(reference)
        },
    }
}

fn main() {
    let options = options();
    if let Some(cpu) = options.cpu {
        pin(cpu);
    }
    println!(
        "172-byte RTP packets, {} packets x {} rounds per cell, median ns/packet; {}; cpu {}",
        options.packets,
        options.rounds,
        libsrtp_oracle::libsrtp_version(),
        options
            .cpu
            .map_or_else(|| "unpinned".to_owned(), |c| c.to_string()),
    );
    println!();
    println!(
        "| suite | op | ours single ns | ours batch-64 ns | libsrtp ns | ours batch Mpps/core | batch vs libsrtp |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for suite in Suite::ALL {
        if options.suite.is_some_and(|only| only != suite) {
            continue;
        }
        let material: Vec<u8> = (0..suite.key_material_len())
            .map(|i| (i * 13 + 7) as u8)
            .collect();
        for row in [
            protect_runs(suite, &material, &options),
            unprotect_runs(suite, &material, &options),
        ] {
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2}x |",
                row.suite,
                row.op,
                row.ours_single,
                row.ours_batch,
                row.libsrtp,
                1_000.0 / row.ours_batch,
                row.libsrtp / row.ours_batch,
            );
        }
    }
}
