//! The Linux calls the generator needs beyond `std`: `sendmmsg`/`recvmmsg` batches, epoll,
//! thread CPU affinity, socket buffer sizes and the open-file limit. Every `unsafe` block of the
//! generator is here, each with its reason.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr,
};

/// Bytes reserved per packet slot (largest packet plus SRTP tag and MKI, rounded up).
pub const SLOT: usize = 2048;

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024);
    if cpu >= max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond CPU_SETSIZE"),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks for `bytes` of kernel buffer in each direction (the kernel caps it at
/// `net.core.{r,w}mem_max` unless the process may force it); failures are ignored because a
/// smaller buffer only shows up as loss, which the report counts.
pub fn grow_socket_buffers(fd: RawFd, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for option in [force, plain] {
            // SAFETY: `value` is a live c_int and the length passed is its size.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    option,
                    (&raw const value).cast(),
                    socklen_of::<libc::c_int>(),
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
}

/// Raises the soft open-file limit to at least `needed` (up to the hard limit).
pub fn ensure_open_files(needed: u64) -> io::Result<()> {
    // SAFETY: rlimit is plain data; getrlimit fills it.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        return Err(io::Error::other(format!(
            "needs {needed} open files but the hard limit (ulimit -Hn) is {}",
            limit.rlim_max
        )));
    }
    limit.rlim_cur = needed;
    // SAFETY: `limit` is a valid rlimit with cur <= max.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// An epoll instance with level-triggered read interest.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for readability; events carry `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; `event` is valid for the call.
        let rc = unsafe {
            libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut event)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits up to `timeout_ms` and returns the tokens of ready descriptors in `tokens`
    /// (cleared first).
    pub fn wait(
        &self,
        events: &mut [libc::epoll_event],
        tokens: &mut Vec<u64>,
        timeout_ms: i32,
    ) -> io::Result<()> {
        tokens.clear();
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `events` is writable for `max` entries.
        let n =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(error)
            };
        }
        let n = usize::try_from(n).unwrap_or(0);
        tokens.extend(events[..n].iter().map(|e| e.u64));
        Ok(())
    }
}

/// Sends up to [`MmsgSender::MAX`] datagrams per `sendmmsg` on a connected socket.
#[derive(Debug)]
pub struct MmsgSender {
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Default for MmsgSender {
    fn default() -> Self {
        Self::new()
    }
}

impl MmsgSender {
    /// Datagrams per call.
    pub const MAX: usize = 64;

    /// Scratch for one batch.
    pub fn new() -> Self {
        Self {
            iovs: Vec::with_capacity(Self::MAX),
            hdrs: Vec::with_capacity(Self::MAX),
        }
    }

    /// Sends `packets` (at most [`Self::MAX`]) on the connected socket `fd`. Returns how many
    /// the kernel took; the rest were not sent (the caller decides). `Err` only when the first
    /// datagram failed.
    pub fn send(&mut self, fd: RawFd, packets: &[&[u8]]) -> io::Result<usize> {
        let packets = &packets[..packets.len().min(Self::MAX)];
        self.iovs.clear();
        self.hdrs.clear();
        for packet in packets {
            self.iovs.push(libc::iovec {
                iov_base: packet.as_ptr().cast_mut().cast(),
                iov_len: packet.len(),
            });
        }
        for iov in &mut self.iovs {
            // SAFETY: msghdr/mmsghdr are plain C structs; all-zero is "no name, no control".
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = ptr::from_mut(iov);
            hdr.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(hdr);
        }
        let count = libc::c_uint::try_from(self.hdrs.len()).unwrap_or(0);
        loop {
            // SAFETY: every header points at one iovec in `self.iovs`, each naming a live
            // slice of `packets` that the kernel only reads; the socket is connected, so no
            // msg_name is needed.
            let n = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), count, 0) };
            if n >= 0 {
                return Ok(usize::try_from(n).unwrap_or(0));
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

/// Receives up to [`MmsgReceiver::BATCH`] datagrams per `recvmmsg` into owned slots.
#[derive(Debug)]
pub struct MmsgReceiver {
    bufs: Box<[u8]>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Default for MmsgReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl MmsgReceiver {
    /// Datagrams per call.
    pub const BATCH: usize = 64;

    /// Slots for one batch (allocated once).
    pub fn new() -> Self {
        Self {
            bufs: vec![0_u8; Self::BATCH * SLOT].into_boxed_slice(),
            lens: vec![0; Self::BATCH],
            truncated: vec![false; Self::BATCH],
            iovs: Vec::with_capacity(Self::BATCH),
            hdrs: Vec::with_capacity(Self::BATCH),
        }
    }

    /// One non-blocking `recvmmsg` on `fd`: the number of datagrams received (0 when none
    /// was waiting, or the socket reported an asynchronous error such as ICMP port
    /// unreachable).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.iovs.clear();
        self.hdrs.clear();
        for slot in self.bufs.chunks_mut(SLOT) {
            self.iovs.push(libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            });
        }
        for iov in &mut self.iovs {
            // SAFETY: plain C structs; all-zero is "no name, no control".
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = ptr::from_mut(iov);
            hdr.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(hdr);
        }
        let count = libc::c_uint::try_from(self.hdrs.len()).unwrap_or(0);
        loop {
            // SAFETY: every header points at one iovec naming a distinct SLOT-byte slot of
            // `self.bufs`, which outlives the call; MSG_DONTWAIT makes it non-blocking.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    count,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if n >= 0 {
                let n = usize::try_from(n).unwrap_or(0);
                for (i, hdr) in self.hdrs[..n].iter().enumerate() {
                    self.lens[i] = usize::try_from(hdr.msg_len).unwrap_or(0).min(SLOT);
                    self.truncated[i] = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                }
                return Ok(n);
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused => return Ok(0),
                _ => return Err(error),
            }
        }
    }

    /// The slots and the length of datagram `i` of the last batch (and whether it was cut).
    pub fn slots_mut(&mut self) -> (&mut [u8], &[usize], &[bool]) {
        (&mut self.bufs, &self.lens, &self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let packets: Vec<Vec<u8>> = (0..10_u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        assert_eq!(MmsgSender::new().send(tx.as_raw_fd(), &refs).unwrap(), 10);

        let epoll = Epoll::new().unwrap();
        epoll.add(rx.as_raw_fd(), 42).unwrap();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let mut tokens = Vec::new();
        epoll.wait(&mut events, &mut tokens, 1000).unwrap();
        assert_eq!(tokens, vec![42]);

        let mut receiver = MmsgReceiver::new();
        let mut got = Vec::new();
        while got.len() < 10 {
            let n = receiver.recv(rx.as_raw_fd()).unwrap();
            let (bufs, lens, truncated) = receiver.slots_mut();
            for i in 0..n {
                assert!(!truncated[i]);
                got.push(bufs[i * SLOT..i * SLOT + lens[i]].to_vec());
            }
        }
        assert_eq!(got, packets);
        assert_eq!(
            receiver.recv(rx.as_raw_fd()).unwrap(),
            0,
            "nothing left, no block"
        );
    }

    #[test]
    fn pinning_to_an_allowed_cpu_works_and_a_huge_one_is_refused() {
        std::thread::spawn(|| {
            pin_current_thread(0).unwrap();
            assert!(pin_current_thread(1 << 20).is_err());
        })
        .join()
        .unwrap();
    }
}
