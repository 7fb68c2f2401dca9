//! Thin safe wrappers over the Linux calls the socket datapath needs and std does not offer:
//! epoll, eventfd, `recvmmsg`/`sendmmsg` batches, CPU pinning and socket buffer sizes.
//!
//! Each `unsafe` block states why it is sound; buffers are owned by the batch structs and
//! outlive every call that points into them.

#![allow(
    clippy::cast_possible_truncation,
    reason = "C ABI constants and struct sizes (AF_INET, sizeof(sockaddr_in)) fit their C types"
)]

use std::{
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

/// Largest datagram a batch slot holds (an RTP packet plus SRTP trailers fits easily).
pub const SLOT_LEN: usize = 2048;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An epoll instance (level-triggered).
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// Creates one.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions; the fd is owned from here on.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for readability, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        check(unsafe {
            libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut event)
        })?;
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        check(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        })?;
        Ok(())
    }

    /// Waits up to `timeout_ms` and fills `events`; returns how many are ready.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `events` is writable for `max` entries.
        let rc =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        match check(rc) {
            Ok(n) => Ok(usize::try_from(n).unwrap_or(0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// An eventfd used to wake a worker.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates a non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: no memory preconditions.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: fresh descriptor.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Its descriptor (for epoll).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Wakes the waiter.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) still wakes.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Clears pending wake-ups.
    pub fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut value).cast(), 8) };
    }
}

/// Converts a socket address to its C form; returns the length to pass.
pub fn to_raw(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(std::ptr::from_mut(out).cast::<libc::sockaddr_in>()) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(std::ptr::from_mut(out).cast::<libc::sockaddr_in6>()) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            sin6.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Converts a C socket address filled in by the kernel.
pub fn from_raw(raw: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(raw.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(std::ptr::from_ref(raw).cast::<libc::sockaddr_in>()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(std::ptr::from_ref(raw).cast::<libc::sockaddr_in6>()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Packet slots for one `recvmmsg`/`sendmmsg` batch.
pub struct PacketBatch {
    data: Vec<[u8; SLOT_LEN]>,
    /// Valid length of each slot.
    pub lens: Vec<usize>,
    /// Peer of each slot (source after receive, destination before send).
    pub addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    /// Destinations of a send.
    dest_addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// Control buffers (one `UDP_SEGMENT` cmsg per header), 8-byte aligned.
    controls: Vec<[u64; 3]>,
    /// Segmentation offload refused by the kernel once: send packet by packet from then on.
    gso_disabled: bool,
}

/// `SOL_UDP` / `UDP_SEGMENT` (linux/udp.h): UDP segmentation offload on send (Linux 4.18).
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
/// Most segments the kernel takes in one GSO send (`UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;

impl std::fmt::Debug for PacketBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBatch")
            .field("slots", &self.data.len())
            .finish_non_exhaustive()
    }
}

impl PacketBatch {
    /// `slots` slots of [`SLOT_LEN`] bytes.
    pub fn new(slots: usize) -> Self {
        // SAFETY (zeroed): all-zero is a valid value for these plain C structs.
        Self {
            data: vec![[0u8; SLOT_LEN]; slots],
            lens: vec![0; slots],
            addrs: vec![unsafe { zeroed() }; slots],
            addr_lens: vec![0; slots],
            dest_addrs: vec![unsafe { zeroed() }; slots],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                slots
            ],
            headers: vec![unsafe { zeroed() }; slots],
            controls: vec![[0u64; 3]; slots],
            gso_disabled: false,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// The whole slot `i` (for in-place transforms that grow the packet).
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8; SLOT_LEN] {
        &mut self.data[i]
    }

    /// The packet in slot `i`.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.data[i][..self.lens[i]]
    }

    /// Mutable access to the slot buffers, their lengths and addresses together.
    pub fn parts_mut(
        &mut self,
    ) -> (
        &mut [[u8; SLOT_LEN]],
        &mut [usize],
        &mut [libc::sockaddr_storage],
    ) {
        (&mut self.data, &mut self.lens, &mut self.addrs)
    }

    /// Receives up to `max` datagrams from `socket` (non-blocking); returns how many.
    pub fn recv(&mut self, socket: &UdpSocket, max: usize) -> io::Result<usize> {
        let n = max.min(self.data.len());
        for i in 0..n {
            self.iovecs[i] = libc::iovec {
                iov_base: self.data[i].as_mut_ptr().cast(),
                iov_len: SLOT_LEN,
            };
            self.addr_lens[i] = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let header = &mut self.headers[i];
            header.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            header.msg_hdr.msg_namelen = self.addr_lens[i];
            header.msg_hdr.msg_iov = &raw mut self.iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        let vlen = libc::c_uint::try_from(n).unwrap_or(libc::c_uint::MAX);
        // SAFETY: every header points at live buffers owned by `self` that are not otherwise
        // borrowed during the call.
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        match check(rc) {
            Ok(got) => {
                let got = usize::try_from(got).unwrap_or(0);
                for i in 0..got {
                    self.lens[i] = self.headers[i].msg_len as usize;
                    // A truncated datagram (larger than a slot) is marked by MSG_TRUNC.
                    if self.headers[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                        self.lens[i] = 0;
                    }
                }
                Ok(got)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Sends the slots listed in `which` (slot index, destination) from `socket` with UDP
    /// segmentation offload: consecutive packets of one size to one destination go down the
    /// stack as one GSO send (one route lookup, one skb through IP output and the device),
    /// which on Linux costs far less per packet than one send each. Falls back to
    /// [`Self::send`] for good if the kernel refuses GSO. Returns how many were sent.
    pub fn send_segmented(&mut self, socket: &UdpSocket, which: &[(usize, SocketAddr)]) -> usize {
        if self.gso_disabled || which.len() < 2 {
            return self.send(socket, which);
        }
        // Runs: [start, end) of `which` with one destination and one length.
        let mut runs: Vec<(usize, usize)> = Vec::with_capacity(self.headers.len());
        let mut start = 0;
        while start < which.len() {
            let (first, dest) = which[start];
            let len = self.lens[first];
            let mut end = start + 1;
            while end < which.len()
                && end - start < MAX_SEGMENTS
                && which[end].1 == dest
                && self.lens[which[end].0] == len
                && (end - start + 1) * len <= 65_000
            {
                end += 1;
            }
            runs.push((start, end));
            start = end;
        }
        for (k, &(start, end)) in runs.iter().enumerate() {
            for (j, &(slot, _)) in which[start..end].iter().enumerate() {
                self.iovecs[start + j] = libc::iovec {
                    iov_base: self.data[slot].as_mut_ptr().cast(),
                    iov_len: self.lens[slot],
                };
            }
            let len = to_raw(&which[start].1, &mut self.dest_addrs[k]);
            let segments = end - start;
            let header = &mut self.headers[k];
            header.msg_hdr.msg_name = (&raw mut self.dest_addrs[k]).cast();
            header.msg_hdr.msg_namelen = len;
            header.msg_hdr.msg_iov = &raw mut self.iovecs[start];
            header.msg_hdr.msg_iovlen = segments;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
            if segments > 1 {
                let control = &mut self.controls[k];
                *control = [0; 3];
                // SAFETY: `control` is 24 bytes, 8-byte aligned: room for a cmsghdr (16 bytes on
                // 64-bit Linux) and a u16.
                unsafe {
                    let cmsg = control.as_mut_ptr().cast::<libc::cmsghdr>();
                    (*cmsg).cmsg_len = size_of::<libc::cmsghdr>() + size_of::<u16>();
                    (*cmsg).cmsg_level = SOL_UDP;
                    (*cmsg).cmsg_type = UDP_SEGMENT;
                    let data = cmsg.cast::<u8>().add(size_of::<libc::cmsghdr>());
                    let segment = (self.lens[which[start].0] as u16).to_ne_bytes();
                    std::ptr::copy_nonoverlapping(segment.as_ptr(), data, segment.len());
                }
                header.msg_hdr.msg_control = control.as_mut_ptr().cast();
                header.msg_hdr.msg_controllen = size_of::<[u64; 3]>();
            } else {
                header.msg_hdr.msg_control = std::ptr::null_mut();
                header.msg_hdr.msg_controllen = 0;
            }
        }
        let vlen = libc::c_uint::try_from(runs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: headers 0..runs point at live iovecs, slot buffers, addresses and control
        // buffers of `self`.
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
            )
        };
        match check(rc) {
            Ok(got) => runs[..usize::try_from(got).unwrap_or(0)]
                .iter()
                .map(|(s, e)| e - s)
                .sum(),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                ) =>
            {
                tracing::warn!(%e, "UDP segmentation offload refused; sending packet by packet");
                self.gso_disabled = true;
                self.send(socket, which)
            }
            Err(_) => 0,
        }
    }

    /// Sends the slots listed in `which` (slot index, destination) from `socket`; returns how
    /// many were sent (the rest met a full send buffer or an error).
    pub fn send(&mut self, socket: &UdpSocket, which: &[(usize, SocketAddr)]) -> usize {
        let mut sent = 0;
        while sent < which.len() {
            let n = (which.len() - sent).min(self.headers.len());
            for k in 0..n {
                let (slot, dest) = which[sent + k];
                let len = to_raw(&dest, &mut self.dest_addrs[k]);
                self.iovecs[k] = libc::iovec {
                    iov_base: self.data[slot].as_mut_ptr().cast(),
                    iov_len: self.lens[slot],
                };
                let header = &mut self.headers[k];
                header.msg_hdr.msg_name = (&raw mut self.dest_addrs[k]).cast();
                header.msg_hdr.msg_namelen = len;
                header.msg_hdr.msg_iov = &raw mut self.iovecs[k];
                header.msg_hdr.msg_iovlen = 1;
                header.msg_hdr.msg_control = std::ptr::null_mut();
                header.msg_hdr.msg_controllen = 0;
                header.msg_hdr.msg_flags = 0;
                header.msg_len = 0;
            }
            let vlen = libc::c_uint::try_from(n).unwrap_or(libc::c_uint::MAX);
            // SAFETY: headers 0..n point at live slot buffers and address entries of `self`.
            let rc = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    vlen,
                    libc::MSG_DONTWAIT,
                )
            };
            match check(rc) {
                Ok(got) if got > 0 => sent += usize::try_from(got).unwrap_or(0),
                _ => return sent,
            }
        }
        sent
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; pid 0 is this thread.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        libc::CPU_SET(cpu, &mut set);
        check(libc::sched_setaffinity(
            0,
            size_of::<libc::cpu_set_t>(),
            &raw const set,
        ))?;
    }
    Ok(())
}

/// Sets a socket's kernel receive buffer.
pub fn set_recv_buffer(socket: &UdpSocket, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: passes a live c_int of the stated size.
    check(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// A socket's kernel receive buffer as the kernel reports it (`SO_RCVBUF`: twice what was set,
/// the bookkeeping overhead included).
pub fn recv_buffer(socket: &UdpSocket) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a live c_int and its length, which the kernel writes.
    check(unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut value).cast(),
            &raw mut len,
        )
    })?;
    Ok(usize::try_from(value).unwrap_or(0))
}

/// The open-file limit (soft), or 1024 when it cannot be read.
pub fn nofile_limit() -> u64 {
    // SAFETY: getrlimit writes a live rlimit.
    unsafe {
        let mut limit: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            limit.rlim_cur
        } else {
            1024
        }
    }
}

/// Raises the open-file limit to its hard maximum (each leg holds two sockets).
pub fn raise_nofile_limit() -> io::Result<u64> {
    // SAFETY: getrlimit/setrlimit read and write a live rlimit.
    unsafe {
        let mut limit: libc::rlimit = zeroed();
        check(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit))?;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            check(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit))?;
        }
        Ok(limit.rlim_cur)
    }
}
