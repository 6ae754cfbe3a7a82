//! The hot path's syscalls, called directly: `recv`, `send` and vectored `sendmsg`, each
//! returning the byte count or the raw errno. `std`'s `io::Result` layering (error construction,
//! kind matching) costs more than the rest of an echo's user-space work, so the per-message path
//! uses these; everything else uses the ordinary APIs.
//!
//! They are raw syscalls, not glibc's `recv`/`send`/`sendmsg`: those are cancellation points,
//! and in a multi-threaded process (loadgen, a test suite embedding the server) each one brackets
//! the syscall with two more calls to switch cancellation on and off, measured at about 1.5 % of
//! loadgen's CPU time. On x86_64 the `syscall` instruction is issued inline (the error comes back
//! as the return value, with no errno lookup); elsewhere through libc's `syscall(2)`.
//!
//! Sends always pass MSG_NOSIGNAL: a vanished peer yields EPIPE, never SIGPIPE, even in a host
//! process that does not ignore SIGPIPE.
//!
//! Public (hidden) so that loadgen's hot path can use the same calls.

use std::os::fd::RawFd;

/// An errno value.
pub type Errno = i32;

/// A syscall with up to six arguments; returns the result or the errno.
///
/// # Safety
/// The arguments must be valid for syscall `nr` (pointers live and sized as the call expects).
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn syscall6(nr: libc::c_long, args: [usize; 6]) -> Result<usize, Errno> {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; the kernel's x86_64 convention is rax = number
    // and result, rdi/rsi/rdx/r10/r8/r9 = arguments, rcx and r11 clobbered, no stack use.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    // The kernel returns -errno (-4095..=-1) on failure.
    if (-4095..0).contains(&ret) {
        Err(-ret as Errno)
    } else {
        Ok(ret as usize)
    }
}

/// A syscall with up to six arguments; returns the result or the errno.
///
/// # Safety
/// The arguments must be valid for syscall `nr` (pointers live and sized as the call expects).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
unsafe fn syscall6(nr: libc::c_long, a: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for the arguments.
    let ret = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if ret >= 0 {
        Ok(ret as usize)
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

/// recv(2) into `buf` (recvfrom without an address, which is what glibc's recv does).
#[inline]
pub fn recv(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let args = [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call; no
    // address is asked for.
    unsafe { syscall6(libc::SYS_recvfrom, args) }
}

/// recv(2) with MSG_PEEK: what `recv` would return, left in the socket.
pub fn peek(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let args = [fd as usize, buf.as_mut_ptr() as usize, buf.len(), libc::MSG_PEEK as usize, 0, 0];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call; no
    // address is asked for.
    unsafe { syscall6(libc::SYS_recvfrom, args) }
}

/// send(2) of `buf` with MSG_NOSIGNAL (sendto without an address).
#[inline]
pub fn send(fd: RawFd, buf: &[u8]) -> Result<usize, Errno> {
    let args = [fd as usize, buf.as_ptr() as usize, buf.len(), libc::MSG_NOSIGNAL as usize, 0, 0];
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    unsafe { syscall6(libc::SYS_sendto, args) }
}

/// sendmsg(2) of `first` then `second`, in one call, with MSG_NOSIGNAL.
pub fn send2(fd: RawFd, first: &[u8], second: &[u8]) -> Result<usize, Errno> {
    let mut iov = [
        libc::iovec { iov_base: first.as_ptr() as *mut _, iov_len: first.len() },
        libc::iovec { iov_base: second.as_ptr() as *mut _, iov_len: second.len() },
    ];
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    let args =
        [fd as usize, &msg as *const libc::msghdr as usize, libc::MSG_NOSIGNAL as usize, 0, 0, 0];
    // SAFETY: `msg` points at two iovecs describing live, readable slices.
    unsafe { syscall6(libc::SYS_sendmsg, args) }
}

/// The most slices [`send_vectored`] hands to one sendmsg(2) (Linux's UIO_MAXIOV is 1024).
pub const MAX_IOV: usize = 64;

/// sendmsg(2) of up to [`MAX_IOV`] slices, in order, in one call, with MSG_NOSIGNAL.
pub fn send_vectored(fd: RawFd, bufs: &[std::io::IoSlice<'_>]) -> Result<usize, Errno> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(MAX_IOV) as _;
    let args =
        [fd as usize, &msg as *const libc::msghdr as usize, libc::MSG_NOSIGNAL as usize, 0, 0, 0];
    // SAFETY: `msg` points at live IoSlices (iovec-compatible) describing readable slices; the
    // kernel only reads through them.
    unsafe { syscall6(libc::SYS_sendmsg, args) }
}

/// The most datagrams [`send_datagrams`] hands to one sendmmsg(2).
pub const MAX_DATAGRAMS: usize = 64;

/// sendmmsg(2) on a connected socket: one datagram per buffer (at most [`MAX_DATAGRAMS`]), with
/// MSG_NOSIGNAL. Returns how many were sent; a failure is returned only when the first one fails
/// (the rest are then not attempted), as sendmmsg does.
pub fn send_datagrams(fd: RawFd, datagrams: &[&[u8]]) -> Result<usize, Errno> {
    let n = datagrams.len().min(MAX_DATAGRAMS);
    // SAFETY: all-zero iovec and mmsghdr are valid values (no name, no control data).
    let mut iovs: [libc::iovec; MAX_DATAGRAMS] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_DATAGRAMS] = unsafe { std::mem::zeroed() };
    for (i, datagram) in datagrams[..n].iter().enumerate() {
        iovs[i] = libc::iovec { iov_base: datagram.as_ptr() as *mut _, iov_len: datagram.len() };
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    let args = [fd as usize, hdrs.as_mut_ptr() as usize, n, libc::MSG_NOSIGNAL as usize, 0, 0];
    // SAFETY: the first `n` headers each point at one iovec describing a live, readable slice.
    unsafe { syscall6(libc::SYS_sendmmsg, args) }
}

/// CPUs this process may run on (its affinity mask), at least 1.
pub fn cpus_available() -> usize {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it for pid 0 (us).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            return (libc::CPU_COUNT(&set) as usize).max(1);
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The open-file limit this process runs under (the soft one), if it can be read.
pub fn open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// When this process started, in seconds since the Unix epoch (from `/proc`: the boot time plus
/// the process's start in clock ticks after boot).
pub fn process_start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state): start time
    // is field 22.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let ticks: f64 = rest.split(' ').nth(22 - 3)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: f64 = boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    // SAFETY: sysconf reads a configuration value; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + ticks / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn process_start_time_is_a_moment_before_now() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let started = process_start_time().expect("read from /proc");
        // Clock ticks and boot time are whole units: a second either way is rounding.
        assert!(started <= now.as_secs_f64() + 1.0, "{started} after {now:?}");
        assert!(started > now.as_secs_f64() - 24.0 * 3600.0, "{started} a day before {now:?}");
    }

    #[test]
    fn send_recv_and_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(recv(-1, &mut buf), Err(libc::EBADF));
        assert_eq!(recv(b.as_raw_fd(), &mut buf), Err(libc::EAGAIN));
        assert_eq!(send(a.as_raw_fd(), b"abc"), Ok(3));
        assert_eq!(send2(a.as_raw_fd(), b"de", b"fgh"), Ok(5));
        assert_eq!(recv(b.as_raw_fd(), &mut buf), Ok(8));
        assert_eq!(&buf[..8], b"abcdefgh");
        let parts =
            [std::io::IoSlice::new(b"ij"), std::io::IoSlice::new(b""), std::io::IoSlice::new(b"k")];
        assert_eq!(send_vectored(a.as_raw_fd(), &parts), Ok(3));
        assert_eq!(recv(b.as_raw_fd(), &mut buf), Ok(3));
        assert_eq!(&buf[..3], b"ijk");
        drop(b);
        // The peer is gone: EPIPE, and no SIGPIPE (the test process would die).
        assert_eq!(send(a.as_raw_fd(), b"x"), Err(libc::EPIPE));
    }

    #[test]
    fn datagrams_go_out_one_per_buffer() {
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        assert_eq!(send_datagrams(a.as_raw_fd(), &[b"one", b"", b"three"]), Ok(3));
        let mut buf = [0u8; 16];
        for expected in [&b"one"[..], b"", b"three"] {
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], expected);
        }
        let many: Vec<&[u8]> = vec![b"x"; MAX_DATAGRAMS + 5];
        assert_eq!(send_datagrams(a.as_raw_fd(), &many), Ok(MAX_DATAGRAMS));
        assert_eq!(send_datagrams(-1, &many), Err(libc::EBADF));
    }
}
