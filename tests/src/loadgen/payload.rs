//! The generator's RTP packets: an RTP header (RFC 3550 §5.1) and a payload that says who sent
//! it and when, followed by filler derived from those fields, so the receiver can check every
//! byte and compute the one-way latency.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|   PT = 0    |  sequence = seq_base + index  |  RTP header, 12 bytes
//! |               timestamp = ts_base + 160 * index               |
//! |                     SSRC (random per stream)                  |
//! +---------------------------------------------------------------+
//! |                         magic "RLG1"                          |  payload, 32 bytes
//! |                          call index                           |  (big-endian)
//! |   direction   |                reserved (0)                   |
//! |               run tag (random per run or find-max step)       |
//! |                   packet index (64 bits) ...                  |
//! |                                                               |
//! |           send time, ns since the run's start (64 bits) ...   |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |  filler: xorshift64* keyed by all the fields above ...        |  payload_len - 32 bytes
//! ```

/// RTP header length (no CSRC, no extension).
pub const RTP_HEADER_LEN: usize = 12;
/// Bytes of the payload before the filler.
pub const PAYLOAD_HEADER_LEN: usize = 32;
/// Smallest payload the generator sends.
pub const MIN_PAYLOAD: usize = PAYLOAD_HEADER_LEN;
/// Largest payload the generator sends (fits a 1500-byte MTU with IP, UDP and an SRTP tag).
pub const MAX_PAYLOAD: usize = 1400;
/// RTP timestamp step: 20 ms of 8 kHz audio.
pub const TIMESTAMP_STEP: u32 = 160;
/// The payload type (PCMU, RFC 3551).
pub const PAYLOAD_TYPE: u8 = 0;

const MAGIC: [u8; 4] = *b"RLG1";

/// Which way a stream flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From endpoint A (the carrier side, SRTP) through the relay to endpoint B.
    AToB = 0,
    /// From endpoint B (the PBX side, plain) through the relay to endpoint A.
    BToA = 1,
}

impl Direction {
    /// Both directions, in index order.
    pub const BOTH: [Self; 2] = [Self::AToB, Self::BToA];

    /// 0 or 1.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What identifies one stream's packets on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamIdentity {
    /// Call index.
    pub call: u32,
    /// Direction.
    pub direction: Direction,
    /// RTP SSRC.
    pub ssrc: u32,
    /// RTP sequence number of packet index 0.
    pub seq_base: u16,
    /// RTP timestamp of packet index 0.
    pub ts_base: u32,
    /// Tag of the run (or find-max step); packets of other runs are told apart by it.
    pub run: u32,
}

/// What the receiver learns from a packet that verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Packet index within the stream (0, 1, 2, ...).
    pub index: u64,
    /// Send time in ns since the run's start.
    pub sent_ns: u64,
}

/// Why a received packet is not one this stream sent intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// A packet of another run (an earlier find-max step): not counted.
    OtherRun,
    /// Wrong length, header, identity or content.
    Corrupt(&'static str),
}

impl StreamIdentity {
    /// Writes packet `index` with a `payload_len`-byte payload into `buf` and returns the
    /// packet length (`RTP_HEADER_LEN + payload_len`). `buf` must hold that many bytes and
    /// `payload_len` must be at least [`MIN_PAYLOAD`].
    pub fn write(&self, buf: &mut [u8], index: u64, sent_ns: u64, payload_len: usize) -> usize {
        debug_assert!(payload_len >= MIN_PAYLOAD);
        let len = RTP_HEADER_LEN + payload_len;
        let packet = &mut buf[..len];
        // RFC 3550 §5.1: V=2, no padding, no extension, no CSRC; marker clear.
        packet[0] = 0x80;
        packet[1] = PAYLOAD_TYPE;
        packet[2..4].copy_from_slice(&self.seq(index).to_be_bytes());
        packet[4..8].copy_from_slice(&self.timestamp(index).to_be_bytes());
        packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let payload = &mut packet[RTP_HEADER_LEN..];
        payload[0..4].copy_from_slice(&MAGIC);
        payload[4..8].copy_from_slice(&self.call.to_be_bytes());
        payload[8] = self.direction as u8;
        payload[9..12].fill(0);
        payload[12..16].copy_from_slice(&self.run.to_be_bytes());
        payload[16..24].copy_from_slice(&index.to_be_bytes());
        payload[24..32].copy_from_slice(&sent_ns.to_be_bytes());
        fill(
            &mut payload[PAYLOAD_HEADER_LEN..],
            self.filler_seed(index, sent_ns),
        );
        len
    }

    /// Checks a received (plain, or already decrypted) packet against this stream.
    pub fn verify(&self, packet: &[u8], payload_len: usize) -> Result<Verified, Mismatch> {
        use Mismatch::Corrupt;
        if packet.len() != RTP_HEADER_LEN + payload_len {
            return Err(Corrupt("length"));
        }
        let (header, payload) = packet.split_at(RTP_HEADER_LEN);
        if header[0] != 0x80 || header[1] != PAYLOAD_TYPE {
            return Err(Corrupt("RTP flags or payload type"));
        }
        if payload[0..4] != MAGIC {
            return Err(Corrupt("magic"));
        }
        if be_u32(&payload[12..16]) != self.run {
            return Err(Mismatch::OtherRun);
        }
        if be_u32(&header[8..12]) != self.ssrc
            || be_u32(&payload[4..8]) != self.call
            || payload[8] != self.direction as u8
            || payload[9..12] != [0, 0, 0]
        {
            return Err(Corrupt("stream identity"));
        }
        let index = be_u64(&payload[16..24]);
        let sent_ns = be_u64(&payload[24..32]);
        if u16::from_be_bytes([header[2], header[3]]) != self.seq(index)
            || be_u32(&header[4..8]) != self.timestamp(index)
        {
            return Err(Corrupt("sequence or timestamp"));
        }
        if !filler_matches(
            &payload[PAYLOAD_HEADER_LEN..],
            self.filler_seed(index, sent_ns),
        ) {
            return Err(Corrupt("payload filler"));
        }
        Ok(Verified { index, sent_ns })
    }

    /// The RTP sequence number of packet `index` (mod 2^16).
    pub fn seq(&self, index: u64) -> u16 {
        // Truncation is the point: RTP sequence numbers wrap.
        #[allow(clippy::cast_possible_truncation)]
        let low = index as u16;
        self.seq_base.wrapping_add(low)
    }

    /// The RTP timestamp of packet `index` (mod 2^32).
    pub fn timestamp(&self, index: u64) -> u32 {
        #[allow(clippy::cast_possible_truncation)]
        let low = index as u32;
        self.ts_base.wrapping_add(low.wrapping_mul(TIMESTAMP_STEP))
    }

    fn filler_seed(&self, index: u64, sent_ns: u64) -> u64 {
        let mut h = 0x9e37_79b9_7f4a_7c15_u64;
        for word in [
            u64::from(self.call),
            self.direction as u64,
            u64::from(self.run),
            u64::from(self.ssrc),
            index,
            sent_ns,
        ] {
            h = splitmix(h ^ word);
        }
        h
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut bytes = [0_u8; 8];
    bytes.copy_from_slice(&b[..8]);
    u64::from_be_bytes(bytes)
}

/// `SplitMix64`'s finaliser: a cheap, well-mixing 64-bit hash step.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The filler stream: xorshift64* from `seed` (never zero), 8 bytes per step.
struct Filler(u64);

impl Filler {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next_word(&mut self) -> [u8; 8] {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()
    }
}

fn fill(out: &mut [u8], seed: u64) {
    let mut filler = Filler::new(seed);
    for chunk in out.chunks_mut(8) {
        let word = filler.next_word();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

fn filler_matches(data: &[u8], seed: u64) -> bool {
    let mut filler = Filler::new(seed);
    data.chunks(8).all(|chunk| {
        let word = filler.next_word();
        chunk == &word[..chunk.len()]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamIdentity {
        StreamIdentity {
            call: 7,
            direction: Direction::BToA,
            ssrc: 0xdead_beef,
            seq_base: 65_530,
            ts_base: 0xffff_ff00,
            run: 0x1234_5678,
        }
    }

    #[test]
    fn writes_the_documented_layout() {
        let mut buf = [0_u8; 64];
        let len = stream().write(&mut buf, 10, 0x0102_0304_0506_0708, 37);
        assert_eq!(len, 49);
        // seq 65530 + 10 wraps to 4; ts 0xffffff00 + 1600 wraps to 0x540.
        assert_eq!(
            buf[..44].to_vec(),
            crate::hex(
                "80 00 0004 00000540 deadbeef
                 524c4731 00000007 01 000000 12345678
                 000000000000000a 0102030405060708"
            )
        );
        assert!(buf[49..].iter().all(|&b| b == 0), "nothing past the packet");
    }

    #[test]
    fn round_trips_and_reports_index_and_send_time() {
        let s = stream();
        let mut buf = [0_u8; 12 + 160];
        for index in [0, 1, 65_535, 65_536, u64::from(u32::MAX) + 3] {
            let len = s.write(&mut buf, index, index * 20_000_000, 160);
            assert_eq!(len, 172);
            assert_eq!(
                s.verify(&buf[..len], 160),
                Ok(Verified {
                    index,
                    sent_ns: index * 20_000_000
                })
            );
        }
    }

    #[test]
    fn every_single_byte_change_is_detected() {
        let s = stream();
        let mut buf = [0_u8; 12 + 160];
        let len = s.write(&mut buf, 99, 123_456_789, 160);
        for i in 0..len {
            let mut tampered = buf;
            tampered[i] ^= 0x01;
            let result = s.verify(&tampered[..len], 160);
            if (RTP_HEADER_LEN + 12..RTP_HEADER_LEN + 16).contains(&i) {
                assert_eq!(result, Err(Mismatch::OtherRun), "byte {i}");
            } else {
                assert!(
                    matches!(result, Err(Mismatch::Corrupt(_))),
                    "byte {i}: {result:?}"
                );
            }
        }
        assert_eq!(
            s.verify(&buf[..len - 1], 160),
            Err(Mismatch::Corrupt("length"))
        );
    }

    #[test]
    fn a_packet_of_another_stream_is_corrupt_for_this_one() {
        let a = stream();
        let b = StreamIdentity {
            call: 8,
            ..stream()
        };
        let mut buf = [0_u8; 12 + 32];
        let len = a.write(&mut buf, 1, 2, 32);
        assert_eq!(
            b.verify(&buf[..len], 32),
            Err(Mismatch::Corrupt("stream identity"))
        );
        let other_direction = StreamIdentity {
            direction: Direction::AToB,
            ..stream()
        };
        assert!(other_direction.verify(&buf[..len], 32).is_err());
    }
}
