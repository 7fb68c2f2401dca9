//! The AF_XDP null forwarder: the floor of any AF_XDP relay on this bed.
//!
//! It receives every IPv4/UDP frame of the relay's caller-side veth on an AF_XDP socket (the
//! `relay_bench_to_xsk` program redirects them) and puts it, untouched, on the TX ring of a
//! socket on the callee-side veth that shares the UMEM: no parsing, no flow lookup, no SRTP,
//! no header rewrite. Its loop is relayd's AF_XDP worker loop (batches of up to 64 per RX
//! turn, a transmit kick per burst of 32 or when the RX ring is empty, completions recycled to
//! the fill ring, a 200 us spin before sleeping in poll(2)), with the same ring size, on the
//! same CPU, with the same NAPI threads. Whatever it cannot carry, no AF_XDP relay on this bed
//! carries: the gap between it and relayd's AF_XDP SRTP path is the relay's own work.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use relay_userspace::afxdp::xsk::{BindMode, RingSizes, Umem, XskSocket};

const FRAME_SIZE: u32 = 2048;
const BATCH: u32 = 64;
const KICK_BURST: u32 = 32;
const SPIN: Duration = Duration::from_micros(200);

/// The forwarder's sockets and frames, built in the relay namespace and run on its own thread.
pub struct NullForwarder {
    // Sockets before the UMEM (they unmap their rings first).
    rx: XskSocket,
    tx: XskSocket,
    free: Vec<u64>,
    ring: u32,
    umem: Umem,
}

impl NullForwarder {
    /// Binds the receiving socket on (`rx_ifindex`, queue 0) and the transmitting one on
    /// (`tx_ifindex`, queue 0), copy mode, rings of `ring` descriptors; the UMEM holds a fill
    /// ring's worth of frames per socket plus as many in flight, like relayd's workers. Run it
    /// in the namespace of the interfaces; put [`Self::rx_socket`] in the program's XSKMAP.
    pub fn bind(rx_ifindex: u32, tx_ifindex: u32, ring: u32) -> std::io::Result<Self> {
        let sizes = RingSizes {
            rx_tx: ring,
            fill_completion: ring,
        };
        let umem = Umem::new(ring * 4, FRAME_SIZE)?;
        let rx = XskSocket::bind(&umem, None, rx_ifindex, 0, sizes, BindMode::Copy)?;
        let tx = XskSocket::bind(&umem, Some(&rx), tx_ifindex, 0, sizes, BindMode::Copy)?;
        let free = (0..umem.frames())
            .rev()
            .map(|i| umem.frame_addr(i))
            .collect();
        let mut forwarder = Self {
            rx,
            tx,
            free,
            ring,
            umem,
        };
        forwarder.refill();
        Ok(forwarder)
    }

    /// The receiving socket.
    pub fn rx_socket(&self) -> &XskSocket {
        &self.rx
    }

    /// Starts forwarding on a thread pinned to `cpu` until `stop` is set.
    pub fn spawn(mut self, cpu: usize, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        std::thread::Builder::new()
            .name("null-xsk".into())
            .spawn(move || {
                let _ = relay_userspace::datapath::sys::pin_to_cpu(cpu);
                self.run(&stop);
            })
            .expect("spawning the null forwarder")
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut unkicked = 0;
        let mut last_work = Instant::now();
        while !stop.load(Relaxed) {
            let received = self.forward();
            unkicked += received;
            if unkicked >= KICK_BURST || (received == 0 && unkicked > 0) {
                let _ = self.tx.kick_tx();
                unkicked = self.tx.tx.outstanding();
            }
            let completed = self.complete();
            self.refill();
            if received > 0 || completed {
                last_work = Instant::now();
                continue;
            }
            if last_work.elapsed() < SPIN || unkicked > 0 {
                std::hint::spin_loop();
                continue;
            }
            let mut poll = libc::pollfd {
                fd: self.rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&raw mut poll, 1, 100) };
            last_work = Instant::now();
        }
    }

    /// Moves up to a batch from the RX ring to the TX ring; frames with no TX room go back to
    /// the free list (dropped). Returns the frames put on the TX ring.
    fn forward(&mut self) -> u32 {
        let count = self.rx.rx.available(BATCH);
        if count == 0 {
            return 0;
        }
        let room = self.tx.tx.free(count);
        for i in 0..count {
            let desc = self.rx.rx.read(i);
            if i < room {
                self.tx.tx.write(i, desc);
            } else {
                self.free.push(self.umem.frame_base(desc.addr));
            }
        }
        self.rx.rx.release(count);
        self.tx.tx.submit(room);
        room
    }

    fn complete(&mut self) -> bool {
        let done = self.tx.completion.available(self.ring);
        for i in 0..done {
            let addr = self.tx.completion.read(i);
            self.free.push(self.umem.frame_base(addr));
        }
        self.tx.completion.release(done);
        done > 0
    }

    fn refill(&mut self) {
        let want = u32::try_from(self.free.len()).unwrap_or(u32::MAX);
        let room = self.rx.fill.free(want);
        for i in 0..room {
            let addr = self.free.pop().expect("room <= free frames");
            self.rx.fill.write(i, addr);
        }
        self.rx.fill.submit(room);
    }
}
