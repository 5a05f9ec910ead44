//! Byte messages over every kind of channel: the byte ring natively, and the typed rings when
//! their element is a `Frame<N>` of one of the sizes this tool creates.

use std::time::Duration;

use shmchan::inspect::{Kind, Snapshot};
use shmchan::layout::default_fingerprint;
use shmchan::{Backing, Frame, RecvTimeoutError, TryRecvError, bytes, mpmc, spsc};

/// The frame sizes (maximum bytes per message) `create --flavor spsc|mpmc` chooses from.
pub const FRAME_SIZES: [usize; 6] = [64, 256, 1024, 4096, 16384, 65536];

/// The smallest frame size holding `max_message` bytes.
pub fn frame_size_for(max_message: usize) -> Option<usize> {
    FRAME_SIZES.into_iter().find(|&n| n >= max_message)
}

/// Calls `$body` with `$n` bound as a const for the frame size `$size`.
macro_rules! with_frame_size {
    ($size:expr, |$n:ident| $body:expr, $otherwise:expr) => {
        match $size {
            64 => {
                const $n: usize = 64;
                $body
            }
            256 => {
                const $n: usize = 256;
                $body
            }
            1024 => {
                const $n: usize = 1024;
                $body
            }
            4096 => {
                const $n: usize = 4096;
                $body
            }
            16384 => {
                const $n: usize = 16384;
                $body
            }
            65536 => {
                const $n: usize = 65536;
                $body
            }
            _ => $otherwise,
        }
    };
}
pub(crate) use with_frame_size;

/// The frame size of a typed segment whose element is one of our frames.
pub fn frame_size_of(snap: &Snapshot) -> Option<usize> {
    let n = usize::try_from(snap.elem_size).ok()?.checked_sub(4)?;
    let fingerprint = with_frame_size!(n, |N| default_fingerprint::<Frame<N>>(), return None);
    (snap.elem_align == 1 && snap.fingerprint == fingerprint).then_some(n)
}

/// Why a segment cannot carry byte messages.
pub fn not_a_byte_channel(snap: &Snapshot) -> String {
    format!(
        "this {} segment holds {}-byte elements of an application type; send and recv need a \
         byte channel (flavor bytes, or spsc/mpmc created by `shmchan create`)",
        snap.kind.name(),
        snap.elem_size
    )
}

/// How a receive ended when it returned no message.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Empty,
    Disconnected,
}

/// A channel end that sends byte messages.
pub trait ByteSender {
    fn max_message(&self) -> usize;
    /// Blocks while full; `Err` names the cause (peer gone, corrupted).
    fn send(&mut self, msg: &[u8]) -> Result<(), String>;
}

/// A channel end that receives byte messages.
pub trait ByteReceiver {
    /// `Ok(Ok(()))` with the message in `buf`, `Ok(Err(Ended))` when none is ready (or the
    /// senders are gone and the ring is drained).
    fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<Result<(), Ended>, String>;
    /// Waits up to `timeout`.
    fn recv_timeout(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Result<(), Ended>, String>;
}

impl ByteSender for bytes::Producer {
    fn max_message(&self) -> usize {
        bytes::Producer::max_message(self)
    }
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        bytes::Producer::send(self, msg).map_err(|e| e.to_string())
    }
}

impl ByteReceiver for bytes::Consumer {
    fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<Result<(), Ended>, String> {
        try_outcome(bytes::Consumer::try_recv(self, buf).map(drop))
    }
    fn recv_timeout(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Result<(), Ended>, String> {
        timeout_outcome(bytes::Consumer::recv_timeout(self, buf, timeout).map(drop))
    }
}

fn try_outcome(r: Result<(), TryRecvError>) -> Result<Result<(), Ended>, String> {
    match r {
        Ok(()) => Ok(Ok(())),
        Err(TryRecvError::Empty) => Ok(Err(Ended::Empty)),
        Err(TryRecvError::Disconnected) => Ok(Err(Ended::Disconnected)),
        Err(e) => Err(e.to_string()),
    }
}

fn timeout_outcome(r: Result<(), RecvTimeoutError>) -> Result<Result<(), Ended>, String> {
    match r {
        Ok(()) => Ok(Ok(())),
        Err(RecvTimeoutError::Timeout) => Ok(Err(Ended::Empty)),
        Err(RecvTimeoutError::Disconnected) => Ok(Err(Ended::Disconnected)),
        Err(e) => Err(e.to_string()),
    }
}

/// Copies a received frame into `buf`; a frame whose length field exceeds its size is the
/// peer's corruption.
fn unpack<const N: usize>(frame: &Frame<N>, buf: &mut Vec<u8>) -> Result<(), String> {
    let bytes = frame.bytes().ok_or("a received frame has a length beyond its maximum")?;
    buf.clear();
    buf.extend_from_slice(bytes);
    Ok(())
}

fn pack<const N: usize>(msg: &[u8]) -> Result<Frame<N>, String> {
    Frame::<N>::new(msg).map_err(|e| e.to_string())
}

macro_rules! frame_ends {
    ($tx:ty, $rx:ty) => {
        impl<const N: usize> ByteSender for $tx {
            fn max_message(&self) -> usize {
                N
            }
            fn send(&mut self, msg: &[u8]) -> Result<(), String> {
                let frame = pack::<N>(msg)?;
                <$tx>::send(self, frame).map_err(|e| e.to_string())
            }
        }

        impl<const N: usize> ByteReceiver for $rx {
            fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<Result<(), Ended>, String> {
                match <$rx>::try_recv(self) {
                    Ok(frame) => unpack(&frame, buf).map(Ok),
                    Err(e) => try_outcome(Err(e)),
                }
            }
            fn recv_timeout(
                &mut self,
                buf: &mut Vec<u8>,
                timeout: Duration,
            ) -> Result<Result<(), Ended>, String> {
                match <$rx>::recv_timeout(self, timeout) {
                    Ok(frame) => unpack(&frame, buf).map(Ok),
                    Err(e) => timeout_outcome(Err(e)),
                }
            }
        }
    };
}

frame_ends!(spsc::Producer<Frame<N>>, spsc::Consumer<Frame<N>>);
frame_ends!(mpmc::Sender<Frame<N>>, mpmc::Receiver<Frame<N>>);

/// How long opening waits for a creator still initialising the segment.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens one end of the byte channel `snap` describes: `$bytes_end` of a byte ring,
/// `$spsc_end`/`$mpmc_end` of a typed ring of frames.
macro_rules! open_end {
    ($backing:expr, $snap:expr, $bytes_end:ident, $spsc_end:ident, $mpmc_end:ident) => {{
        let (backing, snap) = ($backing, $snap);
        let e = |e: shmchan::OpenError| crate::target::describe(&e);
        match snap.kind {
            Kind::Bytes => {
                let opts = bytes::Options::new().open_timeout(OPEN_TIMEOUT);
                let chan = bytes::Channel::open(backing, &opts).map_err(e)?;
                Ok(Box::new(chan.$bytes_end().map_err(e)?))
            }
            Kind::Spsc => {
                let n = frame_size_of(snap).ok_or_else(|| not_a_byte_channel(snap))?;
                let opts = spsc::Options::new().open_timeout(OPEN_TIMEOUT);
                with_frame_size!(
                    n,
                    |N| {
                        let chan = spsc::Channel::<Frame<N>>::open(backing, &opts).map_err(e)?;
                        Ok(Box::new(chan.$spsc_end().map_err(e)?))
                    },
                    Err(not_a_byte_channel(snap))
                )
            }
            Kind::Mpmc => {
                let n = frame_size_of(snap).ok_or_else(|| not_a_byte_channel(snap))?;
                let opts = mpmc::Options::new().open_timeout(OPEN_TIMEOUT);
                with_frame_size!(
                    n,
                    |N| {
                        let chan = mpmc::Channel::<Frame<N>>::open(backing, &opts).map_err(e)?;
                        Ok(Box::new(chan.$mpmc_end().map_err(e)?))
                    },
                    Err(not_a_byte_channel(snap))
                )
            }
        }
    }};
}

/// Opens the sending end of the byte channel `snap` describes.
pub fn open_sender(backing: Backing, snap: &Snapshot) -> Result<Box<dyn ByteSender>, String> {
    open_end!(backing, snap, producer, producer, sender)
}

/// Opens the receiving end of the byte channel `snap` describes.
pub fn open_receiver(backing: Backing, snap: &Snapshot) -> Result<Box<dyn ByteReceiver>, String> {
    open_end!(backing, snap, consumer, consumer, receiver)
}
