//! Batch transforms: many packets, of one or many contexts, per call.
//!
//! The contexts are any `BorrowMut<Context>`: owned contexts, or `&mut Context` borrowed from
//! wherever the caller keeps them (a datapath worker locks each stream's context once per batch
//! and passes the borrows).
//!
//! The batch runs the three steps of [`crate::Context`] over all packets: every packet is
//! prepared in order (so per-stream state advances exactly as with single calls), then the AES
//! keystream of all packets that share a session key is generated in *one* call over
//! contiguous counter blocks (this is what lets `aes` use its 64-block VAES-512 path), then
//! every packet is finished in order. The scratch space grows to the largest batch seen and is
//! reused, so steady-state batches allocate nothing.

use core::borrow::{Borrow, BorrowMut};

use crate::{
    cipher::Block,
    context::{Job, Op},
    hmac_sha1::{tag_many, Request},
    Context, Error,
};

/// Packets whose HMAC tags are computed together (a multiple of the SHA-1 lane count).
const GROUP: usize = 16;

/// One packet of a batch.
#[derive(Debug)]
pub struct BatchPacket<'a> {
    /// Position of this packet's context in the slice given to the batch call.
    pub context: usize,
    /// The buffer; it must have room for the SRTP/SRTCP overhead when protecting.
    pub buf: &'a mut [u8],
    /// Packet length in `buf` before the call.
    pub len: usize,
    /// After the call: the new length, or why the packet was refused (its state then is
    /// unchanged for receiving; a refused packet must not be sent or delivered).
    pub result: Result<usize, Error>,
}

impl<'a> BatchPacket<'a> {
    /// A packet of `len` bytes in `buf`, for the context at position `context`.
    pub fn new(context: usize, buf: &'a mut [u8], len: usize) -> Self {
        Self {
            context,
            buf,
            len,
            result: Ok(len),
        }
    }
}

/// Reusable scratch space for batch transforms.
#[derive(Debug, Default)]
pub struct Batch {
    jobs: Vec<Option<Job>>,
    /// Keystream offset of each packet.
    offsets: Vec<usize>,
    /// Packets in keystream order (grouped by context and key).
    order: Vec<usize>,
    keystream: Vec<Block>,
    /// Packets with an HMAC tag to compute, and the tags.
    hmac_jobs: Vec<usize>,
    tags: Vec<[u8; 20]>,
    /// Per (context, SSRC) of a receive batch: the ROC and SEQ its prepared packets reach.
    provisional: Vec<Provisional>,
}

#[derive(Clone, Copy, Debug)]
struct Provisional {
    context: usize,
    ssrc: u32,
    roc: u32,
    s_l: u16,
    highest: u64,
}

/// The SSRC of an RTP packet, when it is long enough to have one.
fn rtp_ssrc(buf: &[u8], len: usize) -> Option<u32> {
    let header = buf.get(8..12).filter(|_| len >= 12)?;
    Some(u32::from_be_bytes([
        header[0], header[1], header[2], header[3],
    ]))
}

impl Batch {
    /// Empty scratch; it grows to the largest batch seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scratch sized for `packets` packets of up to `max_len` bytes, so the first batches do not
    /// allocate either.
    pub fn with_capacity(packets: usize, max_len: usize) -> Self {
        Self {
            jobs: Vec::with_capacity(packets),
            offsets: Vec::with_capacity(packets),
            order: Vec::with_capacity(packets),
            keystream: vec![Block::default(); packets * (max_len.div_ceil(16) + 1)],
            hmac_jobs: Vec::with_capacity(packets),
            tags: Vec::with_capacity(packets),
            provisional: Vec::with_capacity(packets),
        }
    }

    /// Records the state a prepared receive job will leave if it verifies.
    fn advance_provisional(&mut self, context: usize, job: &Job) {
        let (roc, s_l) = job.roc_and_seq();
        match self
            .provisional
            .iter_mut()
            .find(|p| p.context == context && p.ssrc == job.ssrc)
        {
            Some(p) if job.index > p.highest => {
                p.roc = roc;
                p.s_l = s_l;
                p.highest = job.index;
            }
            Some(_) => {}
            None => self.provisional.push(Provisional {
                context,
                ssrc: job.ssrc,
                roc,
                s_l,
                highest: job.index,
            }),
        }
    }

    /// Protects RTP packets ([`Context::protect_rtp`] for each).
    pub fn protect_rtp<C: BorrowMut<Context>>(
        &mut self,
        contexts: &mut [C],
        packets: &mut [BatchPacket<'_>],
    ) {
        self.run(Op::ProtectRtp, contexts, packets);
    }

    /// Verifies and decrypts SRTP packets ([`Context::unprotect_rtp`] for each).
    pub fn unprotect_rtp<C: BorrowMut<Context>>(
        &mut self,
        contexts: &mut [C],
        packets: &mut [BatchPacket<'_>],
    ) {
        self.run(Op::UnprotectRtp, contexts, packets);
    }

    /// Protects RTCP packets ([`Context::protect_rtcp`] for each).
    pub fn protect_rtcp<C: BorrowMut<Context>>(
        &mut self,
        contexts: &mut [C],
        packets: &mut [BatchPacket<'_>],
    ) {
        self.run(Op::ProtectRtcp, contexts, packets);
    }

    /// Verifies and decrypts SRTCP packets ([`Context::unprotect_rtcp`] for each).
    pub fn unprotect_rtcp<C: BorrowMut<Context>>(
        &mut self,
        contexts: &mut [C],
        packets: &mut [BatchPacket<'_>],
    ) {
        self.run(Op::UnprotectRtcp, contexts, packets);
    }

    fn run<C: BorrowMut<Context>>(
        &mut self,
        op: Op,
        contexts: &mut [C],
        packets: &mut [BatchPacket<'_>],
    ) {
        let count = contexts.len();
        // Step 1, in packet order.
        self.jobs.clear();
        self.provisional.clear();
        for packet in packets.iter_mut() {
            let context: &mut Context = contexts
                .get_mut(packet.context)
                .unwrap_or_else(|| {
                    panic!("batch packet names context {} of {count}", packet.context)
                })
                .borrow_mut();
            // Received SRTP: estimate from the state earlier packets of this batch will leave.
            let hint = (op == Op::UnprotectRtp)
                .then(|| rtp_ssrc(packet.buf, packet.len))
                .flatten()
                .and_then(|ssrc| {
                    self.provisional
                        .iter()
                        .find(|p| p.context == packet.context && p.ssrc == ssrc)
                        .map(|p| (p.roc, p.s_l))
                });
            match context.prepare(op, packet.buf, packet.len, hint) {
                Ok(job) => {
                    if op == Op::UnprotectRtp {
                        self.advance_provisional(packet.context, &job);
                    }
                    self.jobs.push(Some(job));
                }
                Err(e) => {
                    packet.result = Err(e);
                    self.jobs.push(None);
                }
            }
        }
        self.keystream_pass(contexts, packets);
        // Step 3a: sending jobs are encrypted (GCM ones are then complete).
        if matches!(op, Op::ProtectRtp | Op::ProtectRtcp) {
            for (i, packet) in packets.iter_mut().enumerate() {
                if let Some(job) = &self.jobs[i] {
                    let at = self.offsets[i];
                    contexts[packet.context].borrow_mut().encrypt(
                        job,
                        packet.buf,
                        &self.keystream[at..at + job.blocks],
                    );
                }
            }
        }
        self.hmac_pass(contexts, packets);
        // Step 3c, in packet order: sending writes the tags; receiving verifies, decrypts and
        // commits.
        for (i, packet) in packets.iter_mut().enumerate() {
            let Some(job) = &self.jobs[i] else {
                continue;
            };
            let context: &mut Context = contexts[packet.context].borrow_mut();
            let has_hmac = context.hmac_key(job).is_some();
            packet.result = match op {
                Op::ProtectRtp | Op::ProtectRtcp => {
                    if has_hmac {
                        context.write_tag(job, packet.buf, &self.tags[i]);
                    }
                    Ok(job.len_out)
                }
                Op::UnprotectRtp | Op::UnprotectRtcp if context.index_is_current(job) => {
                    let at = self.offsets[i];
                    context.open(
                        job,
                        packet.buf,
                        &self.keystream[at..at + job.blocks],
                        has_hmac.then_some(&self.tags[i]),
                    )
                }
                // An earlier packet this one's index estimate relied on was refused: redo it
                // alone against the committed state.
                Op::UnprotectRtp | Op::UnprotectRtcp => {
                    context.transform_one(op, packet.buf, packet.len)
                }
            };
        }
    }

    /// Step 2: groups packets by session key, lays their counter blocks out contiguously and
    /// runs AES once per group.
    fn keystream_pass<C: Borrow<Context>>(&mut self, contexts: &[C], packets: &[BatchPacket<'_>]) {
        self.order.clear();
        self.order
            .extend((0..packets.len()).filter(|&i| self.jobs[i].is_some()));
        let jobs = &self.jobs;
        self.order.sort_unstable_by_key(|&i| {
            let job = jobs[i].as_ref().expect("filtered");
            (packets[i].context, job.key, i)
        });
        self.offsets.clear();
        self.offsets.resize(packets.len(), 0);
        let mut total = 0;
        for &i in &self.order {
            self.offsets[i] = total;
            total += self.jobs[i].as_ref().expect("filtered").blocks;
        }
        if self.keystream.len() < total {
            self.keystream.resize(total, Block::default());
        }
        let mut run_start = 0;
        while run_start < self.order.len() {
            let first = self.order[run_start];
            let first_job = self.jobs[first].as_ref().expect("filtered");
            let context: &Context = contexts[packets[first].context].borrow();
            let mut run_end = run_start;
            while run_end < self.order.len() {
                let i = self.order[run_end];
                let job = self.jobs[i].as_ref().expect("filtered");
                if packets[i].context != packets[first].context || job.key != first_job.key {
                    break;
                }
                let at = self.offsets[i];
                context.write_counters(job, &mut self.keystream[at..at + job.blocks]);
                run_end += 1;
            }
            let last = self.order[run_end - 1];
            let from = self.offsets[first];
            let to = self.offsets[last] + self.jobs[last].as_ref().expect("filtered").blocks;
            context
                .session_keys(first_job)
                .cipher()
                .encrypt_blocks(&mut self.keystream[from..to]);
            run_start = run_end;
        }
    }

    /// Step 3b: HMAC-SHA1 tags of every HMAC job, several packets per SHA-1 pass.
    fn hmac_pass<C: Borrow<Context>>(&mut self, contexts: &[C], packets: &[BatchPacket<'_>]) {
        self.tags.clear();
        self.tags.resize(packets.len(), [0; 20]);
        self.hmac_jobs.clear();
        self.hmac_jobs.extend((0..packets.len()).filter(|&i| {
            self.jobs[i].as_ref().is_some_and(|job| {
                contexts[packets[i].context]
                    .borrow()
                    .hmac_key(job)
                    .is_some()
            })
        }));
        for group in self.hmac_jobs.chunks(GROUP) {
            let mut suffixes = [([0u8; 4], 0usize); GROUP];
            let mut ends = [0usize; GROUP];
            for (k, &i) in group.iter().enumerate() {
                let job = self.jobs[i].as_ref().expect("filtered");
                let (end, suffix, suffix_len) = job.auth_span();
                ends[k] = end;
                suffixes[k] = (suffix, suffix_len);
            }
            let first = group[0];
            let first_key = contexts[packets[first].context]
                .borrow()
                .hmac_key(self.jobs[first].as_ref().expect("filtered"))
                .expect("filtered");
            let mut requests = [Request {
                key: first_key,
                data: &[],
                suffix: &[],
            }; GROUP];
            for (k, &i) in group.iter().enumerate() {
                let job = self.jobs[i].as_ref().expect("filtered");
                requests[k] = Request {
                    key: contexts[packets[i].context]
                        .borrow()
                        .hmac_key(job)
                        .expect("filtered"),
                    data: &packets[i].buf[..ends[k]],
                    suffix: &suffixes[k].0[..suffixes[k].1],
                };
            }
            let mut tags = [[0u8; 20]; GROUP];
            tag_many(&requests[..group.len()], &mut tags[..group.len()]);
            for (k, &i) in group.iter().enumerate() {
                self.tags[i] = tags[k];
            }
        }
    }
}
