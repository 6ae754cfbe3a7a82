//! The hot path's syscalls, called directly: `recv`, `send` and two-buffer `sendmsg`, each
//! returning the byte count or the raw errno. `std`'s `io::Result` layering (error construction,
//! kind matching) costs more than the rest of an echo's user-space work, so the per-message path
//! uses these; everything else uses the ordinary APIs.
//!
//! Sends always pass MSG_NOSIGNAL: a vanished peer yields EPIPE, never SIGPIPE, even in a host
//! process that does not ignore SIGPIPE.

use std::os::fd::RawFd;

/// An errno value.
pub(crate) type Errno = i32;

#[inline]
fn result(ret: isize) -> Result<usize, Errno> {
    if ret >= 0 {
        Ok(ret as usize)
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

/// recv(2) into `buf`.
#[inline]
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    result(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) })
}

/// send(2) of `buf` with MSG_NOSIGNAL.
#[inline]
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    result(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
}

/// sendmsg(2) of `first` then `second`, in one call, with MSG_NOSIGNAL.
pub(crate) fn send2(fd: RawFd, first: &[u8], second: &[u8]) -> Result<usize, Errno> {
    let mut iov = [
        libc::iovec { iov_base: first.as_ptr() as *mut _, iov_len: first.len() },
        libc::iovec { iov_base: second.as_ptr() as *mut _, iov_len: second.len() },
    ];
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` points at two iovecs describing live, readable slices.
    result(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn send_recv_and_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(recv(b.as_raw_fd(), &mut buf), Err(libc::EAGAIN));
        assert_eq!(send(a.as_raw_fd(), b"abc"), Ok(3));
        assert_eq!(send2(a.as_raw_fd(), b"de", b"fgh"), Ok(5));
        assert_eq!(recv(b.as_raw_fd(), &mut buf), Ok(8));
        assert_eq!(&buf[..8], b"abcdefgh");
        drop(b);
        // The peer is gone: EPIPE, and no SIGPIPE (the test process would die).
        assert_eq!(send(a.as_raw_fd(), b"x"), Err(libc::EPIPE));
    }
}
