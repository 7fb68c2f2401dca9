//! AF_XDP sockets, their UMEM and their four rings, on the kernel's ABI (`linux/if_xdp.h`)
//! through `libc`.
//!
//! Why not a crate: the pure-Rust option (xdpilone) is EUPL-1.2, a copyleft licence this
//! Apache-2.0 project does not want in its binary, and passively maintained; libxdp would need
//! C bindings. What relayd needs is small and explicit: one UMEM per worker shared by that
//! worker's sockets on *several devices* (each socket with its own fill and completion ring,
//! kernel 5.10+), copy or zero-copy chosen per bind, `XDP_MAX_TX_SKB_BUDGET`, statistics. The
//! `unsafe` is confined to this file: mappings, ring indices and frame slices.
//!
//! Ring protocol (shared with the kernel): a ring is a power-of-two array of descriptors plus a
//! producer and a consumer index (free-running `u32`s). The producer writes descriptors at
//! `producer & mask` and then publishes with a release store of `producer`; the consumer reads
//! them after an acquire load of `producer` and hands the slots back with a release store of
//! `consumer`. Userspace produces into the fill and TX rings and consumes the RX and
//! completion rings.

use std::{
    io,
    marker::PhantomData,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

/// `XDP_PACKET_HEADROOM`: where the kernel puts a received frame inside its chunk (copy mode),
/// leaving room for XDP metadata in front.
pub const XDP_PACKET_HEADROOM: u64 = 256;

/// `XDP_MAX_TX_SKB_BUDGET` (kernel 6.17+): descriptors one `sendto()` kick may transmit in copy
/// mode (default 32).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// How a socket is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy where the driver supports it, else copy.
    Auto,
    /// Copy mode (`XDP_COPY`): works on every driver with XDP, veth included.
    Copy,
    /// Zero-copy only (`XDP_ZEROCOPY`); fails on drivers without it.
    ZeroCopy,
}

/// A UMEM: one anonymous mapping cut into equal frames, registered with the kernel through the
/// first socket bound on it.
#[derive(Debug)]
pub struct Umem {
    area: NonNull<u8>,
    len: usize,
    frame_size: u32,
    frames: u32,
}

// SAFETY: the mapping is plain memory owned by this value; frames are handed between the worker
// thread that owns the UMEM and the kernel through the rings only.
unsafe impl Send for Umem {}
// SAFETY: shared access reads only the mapping's address and size; frame contents are reached
// through the `unsafe` accessors, whose callers guarantee exclusive ownership of each frame.
unsafe impl Sync for Umem {}

impl Umem {
    /// Maps `frames` frames of `frame_size` bytes (a power of two, 2048..=4096).
    pub fn new(frames: u32, frame_size: u32) -> io::Result<Self> {
        if !frame_size.is_power_of_two() || !(2048..=4096).contains(&frame_size) || frames == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "UMEM frames must be 2048 or 4096 bytes, and at least one",
            ));
        }
        let len = frames as usize * frame_size as usize;
        // SAFETY: an anonymous private mapping with no address hint; checked below.
        let area = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if area == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            area: NonNull::new(area.cast()).expect("mmap never returns NULL on success"),
            len,
            frame_size,
            frames,
        })
    }

    /// Frames in the UMEM.
    pub const fn frames(&self) -> u32 {
        self.frames
    }

    /// Bytes per frame.
    pub const fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// The UMEM address of frame `index`'s start.
    pub const fn frame_addr(&self, index: u32) -> u64 {
        index as u64 * self.frame_size as u64
    }

    /// The start of the frame holding UMEM address `addr`.
    pub const fn frame_base(&self, addr: u64) -> u64 {
        addr & !(self.frame_size as u64 - 1)
    }

    /// Bytes from `addr` to the end of its frame.
    pub fn room(&self, addr: u64) -> usize {
        usize::try_from(self.frame_base(addr) + u64::from(self.frame_size) - addr).unwrap_or(0)
    }

    /// Whether `addr` lies inside the UMEM.
    pub const fn contains(&self, addr: u64) -> bool {
        addr < self.len as u64
    }

    /// The bytes from `addr` to the end of its frame.
    ///
    /// # Safety
    ///
    /// The frame must be owned by the caller (in none of the kernel's rings), and no other live
    /// slice may overlap the returned one. `addr` must be inside the UMEM.
    #[allow(
        clippy::mut_from_ref,
        reason = "frames are disjoint regions of one mapping, owned one at a time"
    )]
    pub unsafe fn frame_mut(&self, addr: u64) -> &mut [u8] {
        debug_assert!(self.contains(addr));
        // SAFETY: addr is inside the mapping and the slice ends at its frame's end; exclusivity
        // is the caller's promise.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.area.as_ptr().add(usize::try_from(addr).unwrap_or(0)),
                self.room(addr),
            )
        }
    }

    /// `len` bytes ending just before `addr` (the XDP metadata area of a received frame), when
    /// they are inside `addr`'s frame.
    ///
    /// # Safety
    ///
    /// As for [`Umem::frame_mut`]; the bytes are only read.
    pub unsafe fn before(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = addr.checked_sub(len as u64)?;
        if start < self.frame_base(addr) || !self.contains(addr) {
            return None;
        }
        // SAFETY: [start, addr) is inside one frame of the mapping.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.area.as_ptr().add(usize::try_from(start).unwrap_or(0)),
                len,
            )
        })
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once. Sockets using it are closed first
        // (they are dropped before the UMEM by their owner).
        unsafe { libc::munmap(self.area.as_ptr().cast(), self.len) };
    }
}

/// One mapped ring.
struct RingMap {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<u8>,
    size: u32,
}

// SAFETY: the mapping belongs to one socket, whose owner (a worker thread) is the only user;
// the shared indices are atomics.
unsafe impl Send for RingMap {}

impl RingMap {
    fn map(
        fd: RawFd,
        offsets: &libc::xdp_ring_offset,
        size: u32,
        desc_size: usize,
        page_offset: libc::off_t,
    ) -> io::Result<Self> {
        let map_len =
            usize::try_from(offsets.desc).unwrap_or(usize::MAX) + size as usize * desc_size;
        // SAFETY: mapping a ring the kernel created for this socket, at the offset the ABI names.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                page_offset,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = map.cast::<u8>();
        let at = |offset: u64| {
            // SAFETY: the kernel's offsets lie inside the mapping it sized.
            NonNull::new(unsafe { base.add(usize::try_from(offset).unwrap_or(0)) })
                .expect("inside a successful mapping")
        };
        Ok(Self {
            map: NonNull::new(base).expect("mmap never returns NULL on success"),
            map_len,
            producer: at(offsets.producer).cast(),
            consumer: at(offsets.consumer).cast(),
            flags: at(offsets.flags).cast(),
            descs: at(offsets.desc),
            size,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: a u32 the kernel shares with us for the mapping's lifetime, 4-byte aligned.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.flags.as_ref() }
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// A ring userspace produces into (fill: `u64` frame addresses; TX: `xdp_desc`).
pub struct ProducerRing<T> {
    ring: RingMap,
    cached_producer: u32,
    cached_consumer: u32,
    _desc: PhantomData<T>,
}

impl<T> std::fmt::Debug for ProducerRing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerRing")
            .field("size", &self.ring.size)
            .field("producer", &self.cached_producer)
            .field("consumer", &self.cached_consumer)
            .finish()
    }
}

impl<T: Copy> ProducerRing<T> {
    fn new(ring: RingMap) -> Self {
        let cached_producer = ring.producer().load(Ordering::Relaxed);
        let cached_consumer = ring.consumer().load(Ordering::Acquire);
        Self {
            ring,
            cached_producer,
            cached_consumer,
            _desc: PhantomData,
        }
    }

    /// Free slots, up to `want` (re-reading the consumer index only when the cached view is
    /// short).
    pub fn free(&mut self, want: u32) -> u32 {
        let mut free = self.ring.size - self.cached_producer.wrapping_sub(self.cached_consumer);
        if free < want {
            self.cached_consumer = self.ring.consumer().load(Ordering::Acquire);
            free = self.ring.size - self.cached_producer.wrapping_sub(self.cached_consumer);
        }
        free.min(want)
    }

    /// Writes the `i`-th descriptor after the producer index (`i` below what [`Self::free`]
    /// returned).
    pub fn write(&mut self, i: u32, value: T) {
        let slot = self.cached_producer.wrapping_add(i) & (self.ring.size - 1);
        // SAFETY: slot < size, inside the descriptor array; the slot is free (the caller stays
        // below `free`), so the kernel does not read it concurrently.
        unsafe {
            self.ring
                .descs
                .as_ptr()
                .cast::<T>()
                .add(slot as usize)
                .write(value);
        }
    }

    /// Publishes `count` written descriptors.
    pub fn submit(&mut self, count: u32) {
        self.cached_producer = self.cached_producer.wrapping_add(count);
        self.ring
            .producer()
            .store(self.cached_producer, Ordering::Release);
    }

    /// Whether the kernel asks for a wakeup (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        self.ring.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Descriptors submitted and not yet consumed by the kernel.
    pub fn outstanding(&mut self) -> u32 {
        self.cached_consumer = self.ring.consumer().load(Ordering::Acquire);
        self.cached_producer.wrapping_sub(self.cached_consumer)
    }
}

/// A ring userspace consumes from (RX: `xdp_desc`; completion: `u64` frame addresses).
pub struct ConsumerRing<T> {
    ring: RingMap,
    cached_producer: u32,
    cached_consumer: u32,
    _desc: PhantomData<T>,
}

impl<T> std::fmt::Debug for ConsumerRing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRing")
            .field("size", &self.ring.size)
            .field("producer", &self.cached_producer)
            .field("consumer", &self.cached_consumer)
            .finish()
    }
}

impl<T: Copy> ConsumerRing<T> {
    fn new(ring: RingMap) -> Self {
        let cached_consumer = ring.consumer().load(Ordering::Relaxed);
        let cached_producer = ring.producer().load(Ordering::Acquire);
        Self {
            ring,
            cached_producer,
            cached_consumer,
            _desc: PhantomData,
        }
    }

    /// Descriptors ready, up to `want`.
    pub fn available(&mut self, want: u32) -> u32 {
        let mut ready = self.cached_producer.wrapping_sub(self.cached_consumer);
        if ready < want {
            self.cached_producer = self.ring.producer().load(Ordering::Acquire);
            ready = self.cached_producer.wrapping_sub(self.cached_consumer);
        }
        ready.min(want)
    }

    /// Reads the `i`-th ready descriptor (`i` below what [`Self::available`] returned).
    pub fn read(&self, i: u32) -> T {
        let slot = self.cached_consumer.wrapping_add(i) & (self.ring.size - 1);
        // SAFETY: slot < size; the descriptor was published by the kernel's release store,
        // which `available` acquired.
        unsafe {
            self.ring
                .descs
                .as_ptr()
                .cast::<T>()
                .add(slot as usize)
                .read()
        }
    }

    /// Hands `count` read descriptors back to the kernel.
    pub fn release(&mut self, count: u32) {
        self.cached_consumer = self.cached_consumer.wrapping_add(count);
        self.ring
            .consumer()
            .store(self.cached_consumer, Ordering::Release);
    }
}

/// Ring sizes of one socket (powers of two).
#[derive(Clone, Copy, Debug)]
pub struct RingSizes {
    /// RX and TX rings.
    pub rx_tx: u32,
    /// Fill and completion rings.
    pub fill_completion: u32,
}

/// Kernel counters of one socket (`struct xdp_statistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStatistics {
    /// Frames dropped for other reasons (e.g. bad metadata).
    pub rx_dropped: u64,
    /// RX descriptors the kernel found invalid.
    pub rx_invalid_descs: u64,
    /// TX descriptors the kernel found invalid.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// An AF_XDP socket bound to one (interface, queue), with its four rings.
pub struct XskSocket {
    /// Receive ring.
    pub rx: ConsumerRing<libc::xdp_desc>,
    /// Transmit ring.
    pub tx: ProducerRing<libc::xdp_desc>,
    /// Fill ring (frames for the kernel to receive into).
    pub fill: ProducerRing<u64>,
    /// Completion ring (transmitted frames coming back).
    pub completion: ConsumerRing<u64>,
    ifindex: u32,
    queue: u32,
    zero_copy: bool,
    // Last: the rings are unmapped before the socket closes.
    fd: OwnedFd,
}

impl std::fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSocket")
            .field("ifindex", &self.ifindex)
            .field("queue", &self.queue)
            .field("zero_copy", &self.zero_copy)
            .finish_non_exhaustive()
    }
}

/// `<asm-generic/socket.h>` busy-polling options, not in every libc release.
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// An `SOL_XDP` socket option.
fn set_option<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    set_option_at(fd, libc::SOL_XDP, name, value)
}

fn set_option_at<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(value).cast(),
            libc::socklen_t::try_from(size_of::<T>()).unwrap_or(0),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl XskSocket {
    /// Creates a socket on `umem` and binds it to (`ifindex`, `queue`). The first socket of a
    /// UMEM (`owner = None`) registers it; later ones share it (`XDP_SHARED_UMEM`), each with
    /// its own fill and completion ring, on any device and queue.
    #[allow(
        clippy::too_many_lines,
        reason = "the setup sequence the kernel ABI prescribes"
    )]
    pub fn bind(
        umem: &Umem,
        owner: Option<&XskSocket>,
        ifindex: u32,
        queue: u32,
        sizes: RingSizes,
        mode: BindMode,
    ) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let raw = fd.as_raw_fd();
        if owner.is_none() {
            let registration = libc::xdp_umem_reg {
                addr: umem.area.as_ptr() as u64,
                len: umem.len as u64,
                chunk_size: umem.frame_size,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            set_option(raw, libc::XDP_UMEM_REG, &registration)?;
        }
        set_option(raw, libc::XDP_UMEM_FILL_RING, &sizes.fill_completion)?;
        set_option(raw, libc::XDP_UMEM_COMPLETION_RING, &sizes.fill_completion)?;
        set_option(raw, libc::XDP_RX_RING, &sizes.rx_tx)?;
        set_option(raw, libc::XDP_TX_RING, &sizes.rx_tx)?;
        // Best effort (kernel 6.17+): larger TX bursts per kick in copy mode.
        let budget: u32 = 256;
        let _ = set_option(raw, XDP_MAX_TX_SKB_BUDGET, &budget);

        // SAFETY: all-zero is a valid xdp_mmap_offsets; the kernel fills it.
        let mut offsets: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = libc::socklen_t::try_from(size_of::<libc::xdp_mmap_offsets>()).unwrap_or(0);
        // SAFETY: `offsets` is writable for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                std::ptr::from_mut(&mut offsets).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let desc = size_of::<libc::xdp_desc>();
        let addr = size_of::<u64>();
        let page = |offset: u64| libc::off_t::try_from(offset).unwrap_or(0);
        let rx = RingMap::map(raw, &offsets.rx, sizes.rx_tx, desc, libc::XDP_PGOFF_RX_RING)?;
        let tx = RingMap::map(raw, &offsets.tx, sizes.rx_tx, desc, libc::XDP_PGOFF_TX_RING)?;
        let fill = RingMap::map(
            raw,
            &offsets.fr,
            sizes.fill_completion,
            addr,
            page(libc::XDP_UMEM_PGOFF_FILL_RING),
        )?;
        let completion = RingMap::map(
            raw,
            &offsets.cr,
            sizes.fill_completion,
            addr,
            page(libc::XDP_UMEM_PGOFF_COMPLETION_RING),
        )?;

        let bind = |flags: u16| {
            let address = libc::sockaddr_xdp {
                sxdp_family: u16::try_from(libc::AF_XDP).expect("AF_XDP fits"),
                sxdp_flags: flags,
                sxdp_ifindex: ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: owner.map_or(0, |o| o.fd.as_raw_fd().cast_unsigned()),
            };
            // SAFETY: a live sockaddr_xdp of the size passed.
            let rc = unsafe {
                libc::bind(
                    raw,
                    std::ptr::from_ref(&address).cast(),
                    libc::socklen_t::try_from(size_of::<libc::sockaddr_xdp>()).unwrap_or(0),
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        let zero_copy = if owner.is_some() {
            // A sharing socket inherits copy/zero-copy and need_wakeup from the UMEM's owner;
            // the kernel refuses those flags here.
            bind(libc::XDP_SHARED_UMEM)?;
            owner.is_some_and(|o| o.zero_copy)
        } else {
            match mode {
                BindMode::Copy => {
                    bind(libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP)?;
                    false
                }
                BindMode::ZeroCopy => {
                    bind(libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP)?;
                    true
                }
                BindMode::Auto => match bind(libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP) {
                    Ok(()) => true,
                    Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        bind(libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP)?;
                        false
                    }
                    Err(e) => return Err(e),
                },
            }
        };
        Ok(Self {
            rx: ConsumerRing::new(rx),
            tx: ProducerRing::new(tx),
            fill: ProducerRing::new(fill),
            completion: ConsumerRing::new(completion),
            ifindex,
            queue,
            zero_copy,
            fd,
        })
    }

    /// The interface index.
    pub const fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The queue.
    pub const fn queue(&self) -> u32 {
        self.queue
    }

    /// Whether the socket runs zero-copy.
    pub const fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Asks the kernel to transmit what the TX ring holds. Transient refusals (`EAGAIN`,
    /// `EBUSY`, `ENOBUFS`, `ENETDOWN`) are not errors: the next kick retries.
    pub fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: sendto(2) with no buffer, the AF_XDP transmit trigger.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => Ok(()),
            _ => Err(e),
        }
    }

    /// Turns on preferred busy polling (kernel 5.11+): the device queue's NAPI runs in this
    /// socket's `recvfrom`/`sendto`/`poll` calls, for up to `budget` frames, instead of in
    /// the device's interrupt or NAPI thread, as long as the process keeps calling them (the
    /// device's `napi_defer_hard_irqs` and `gro_flush_timeout` keep the interrupt, or thread
    /// wake-up, from taking it back in between). `usecs` is how long a call may spin.
    pub fn busy_poll(&self, usecs: u32, budget: u32) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        let one: libc::c_int = 1;
        let usecs = libc::c_int::try_from(usecs).unwrap_or(libc::c_int::MAX);
        let budget = libc::c_int::try_from(budget).unwrap_or(libc::c_int::MAX);
        for (name, value) in [
            (SO_PREFER_BUSY_POLL, &one),
            (libc::SO_BUSY_POLL, &usecs),
            (SO_BUSY_POLL_BUDGET, &budget),
        ] {
            set_option_at(fd, libc::SOL_SOCKET, name, value)?;
        }
        Ok(())
    }

    /// Whether the kernel has this socket in preferred-busy-polling mode.
    pub fn busy_polling(&self) -> io::Result<bool> {
        let mut value: libc::c_int = 0;
        let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(0);
        // SAFETY: `value` is writable for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PREFER_BUSY_POLL,
                std::ptr::from_mut(&mut value).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value != 0)
    }

    /// Wakes the kernel to consume the fill ring (zero-copy drivers with `need_wakeup`).
    pub fn kick_rx(&self) {
        // SAFETY: recvfrom(2) with no buffer, the AF_XDP receive trigger; errors are harmless.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }

    /// The kernel's counters for this socket.
    pub fn statistics(&self) -> io::Result<XskStatistics> {
        // SAFETY: all-zero is a valid xdp_statistics; the kernel fills it.
        let mut stats: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = libc::socklen_t::try_from(size_of::<libc::xdp_statistics>()).unwrap_or(0);
        // SAFETY: `stats` is writable for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                std::ptr::from_mut(&mut stats).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(XskStatistics {
            rx_dropped: stats.rx_dropped,
            rx_invalid_descs: stats.rx_invalid_descs,
            tx_invalid_descs: stats.tx_invalid_descs,
            rx_ring_full: stats.rx_ring_full,
            rx_fill_ring_empty_descs: stats.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: stats.tx_ring_empty_descs,
        })
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The receive queues `interface` has (the smaller of its RX and TX queue counts, as an
/// AF_XDP socket needs both), from sysfs.
pub fn queue_count(interface: &str) -> io::Result<u32> {
    let dir = format!("/sys/class/net/{interface}/queues");
    let (mut rx, mut tx) = (0u32, 0u32);
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("rx-") {
            rx += 1;
        } else if name.starts_with("tx-") {
            tx += 1;
        }
    }
    Ok(rx.min(tx))
}
