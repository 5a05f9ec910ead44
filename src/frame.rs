//! Byte frames: messages of any length up to a fixed maximum, for the typed rings.
//!
//! A [`Frame<N>`] is a `Pod` value holding up to `N` bytes and their length, so it travels
//! through an [`mpmc`](crate::mpmc) (or [`spsc`](crate::spsc)) channel like any message: the
//! maximum is fixed when the channel is created (it is the element size in the header), and
//! each frame carries its own length. A frame received from a peer is a private copy; its
//! length field is checked before any byte is handed out.
//!
//! ```
//! use shmchan::mpmc::{Channel, Options};
//! use shmchan::{Backing, Frame};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let chan = Channel::<Frame<256>>::create(Backing::Anonymous, &Options::new())?;
//! let (mut tx, mut rx) = (chan.sender()?, chan.receiver()?);
//! tx.send(Frame::new(b"GET /index.html")?)?;
//! let frame = rx.recv()?;
//! assert_eq!(frame.bytes(), Some(&b"GET /index.html"[..]));
//! # Ok(()) }
//! ```

use std::fmt;

/// Up to `N` bytes and their length, as one fixed-size `Pod` message.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Frame<const N: usize> {
    /// The length, little endian (bytes, so the frame has alignment 1 and no padding).
    len: [u8; 4],
    data: [u8; N],
}

// SAFETY: two byte arrays in `repr(C)`: alignment 1, no padding, every bit pattern valid,
// all-zero included.
unsafe impl<const N: usize> bytemuck::Zeroable for Frame<N> {}
// SAFETY: as above; Frame is Copy and 'static.
unsafe impl<const N: usize> bytemuck::Pod for Frame<N> {}

/// A frame was asked to hold more than its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLong {
    /// The length asked for.
    pub len: usize,
    /// The frame's maximum.
    pub max: usize,
}

impl fmt::Display for FrameTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes do not fit in a frame of at most {}", self.len, self.max)
    }
}

impl std::error::Error for FrameTooLong {}

impl<const N: usize> Frame<N> {
    /// The largest frame this type holds.
    pub const MAX: usize = {
        assert!(N <= u32::MAX as usize, "a frame holds at most u32::MAX bytes");
        N
    };

    /// A frame holding a copy of `bytes`.
    ///
    /// # Errors
    /// [`FrameTooLong`] when `bytes` is longer than `N`.
    pub fn new(bytes: &[u8]) -> Result<Self, FrameTooLong> {
        if bytes.len() > Self::MAX {
            return Err(FrameTooLong { len: bytes.len(), max: N });
        }
        let mut data = [0u8; N];
        data[..bytes.len()].copy_from_slice(bytes);
        Ok(Frame { len: (bytes.len() as u32).to_le_bytes(), data })
    }

    /// The frame's bytes, or `None` if its length field exceeds `N` (a damaged frame from a
    /// peer: the bytes are not trusted to mean anything then).
    pub fn bytes(&self) -> Option<&[u8]> {
        // A private copy, never shared memory: a plain slice of it is fine.
        self.data.get(..self.len())
    }

    /// The length field as received (may exceed `N` in a damaged frame).
    pub fn len(&self) -> usize {
        u32::from_le_bytes(self.len) as usize
    }

    /// Whether the frame holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<const N: usize> Default for Frame<N> {
    fn default() -> Self {
        Frame { len: [0; 4], data: [0; N] }
    }
}

impl<const N: usize> fmt::Debug for Frame<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bytes() {
            Some(bytes) => f.debug_struct("Frame").field("bytes", &bytes).finish(),
            None => f.debug_struct("Frame").field("damaged_len", &self.len()).finish(),
        }
    }
}

#[cfg(all(test, not(shmchan_loom)))]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_what_does_not_fit() {
        let f = Frame::<8>::new(b"abc").unwrap();
        assert_eq!(f.bytes(), Some(&b"abc"[..]));
        assert_eq!((f.len(), f.is_empty()), (3, false));
        assert_eq!(Frame::<8>::new(&[1; 9]).unwrap_err(), FrameTooLong { len: 9, max: 8 });
        assert_eq!(Frame::<8>::new(&[7; 8]).unwrap().bytes(), Some(&[7u8; 8][..]));
        assert_eq!(Frame::<0>::new(b"").unwrap().bytes(), Some(&b""[..]));
        assert_eq!((size_of::<Frame<5>>(), align_of::<Frame<5>>()), (9, 1), "no padding");
    }

    #[test]
    fn a_damaged_length_hands_out_nothing() {
        let mut raw = bytemuck::bytes_of(&Frame::<4>::new(b"ab").unwrap()).to_vec();
        raw[..4].copy_from_slice(&1000u32.to_le_bytes());
        let f: Frame<4> = bytemuck::pod_read_unaligned(&raw);
        assert_eq!(f.bytes(), None);
        assert_eq!(f.len(), 1000);
        assert!(format!("{f:?}").contains("damaged"));
    }
}
