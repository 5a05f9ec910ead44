//! Passing a segment's file descriptor to another process over a Unix socket (`SCM_RIGHTS`).
//!
//! The receiving side treats whatever arrives as untrusted: extra descriptors are closed, the
//! received one is close-on-exec, and [`crate::Backing::Fd`] then checks its type, seals and size
//! before mapping it.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// One byte of ordinary data travels with the descriptor, so the peer's `recvmsg` never
/// mistakes the message for end-of-stream.
const TAG: u8 = b'S';

/// Sends `fd` over `socket`.
///
/// # Errors
/// Any error of `sendmsg(2)`.
///
/// # Examples
/// ```no_run
/// # use std::os::unix::net::UnixStream;
/// # use std::os::fd::AsFd;
/// let (a, _b) = UnixStream::pair()?;
/// let file = std::fs::File::open("/dev/null")?;
/// shmchan::send_fd(&a, file.as_fd())?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn send_fd(socket: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(&[TAG])];
    loop {
        match sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one descriptor sent by [`send_fd`]. Blocks until a message arrives (set a read
/// timeout on the socket to bound the wait).
///
/// # Errors
/// `UnexpectedEof` if the peer closed the socket, `InvalidData` if the message carried no
/// descriptor, or any error of `recvmsg(2)`.
pub fn recv_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut received: Vec<OwnedFd> = Vec::new();
    let bytes = loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        for raw in fds {
                            // SAFETY: the kernel just installed this descriptor in our table for
                            // us; nothing else owns it.
                            received.push(unsafe { OwnedFd::from_raw_fd(raw) });
                        }
                    }
                }
                break msg.bytes;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if bytes == 0 && received.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the socket"));
    }
    // Extra descriptors are dropped (closed) here; only the first is ours to use.
    let mut received = received.into_iter();
    received
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "message carried no descriptor"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_round_trips() {
        let (a, b) = UnixStream::pair().unwrap();
        let path = std::env::temp_dir().join(format!("shmchan-fdpass-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file.write_all(b"hello").unwrap();
        send_fd(&a, file.as_fd()).unwrap();
        let got = recv_fd(&b).unwrap();
        let mut got = std::fs::File::from(got);
        got.rewind().unwrap();
        let mut text = String::new();
        got.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
    }

    #[test]
    fn plain_data_without_descriptor_is_rejected() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        assert_eq!(recv_fd(&b).unwrap_err().kind(), io::ErrorKind::InvalidData);
        drop(a);
        assert_eq!(recv_fd(&b).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
