//! Lock-free channels between processes on one Linux host, over shared memory.
//!
//! Shared memory is the fastest way for processes to exchange data, but it brings no
//! synchronisation and no protocol. shmchan is that missing layer: rings laid out in the segment,
//! atomic positions, and a futex wait path, so a blocked side sleeps without burning a core and
//! wakes in microseconds, while the non-blocking path makes no system call at all.
//!
//! ```
//! use shmchan::spsc::{Channel, Options};
//! use shmchan::Backing;
//!
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
//! #[repr(C)]
//! struct Tick { seq: u64, price: f64 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let name = format!("/shmchan-crate-doc-{}", std::process::id());
//! let chan = Channel::<Tick>::create(Backing::posix(&name), &Options::new().capacity(1024))?;
//! let mut rx = chan.consumer()?;
//!
//! // Usually another process: it opens the same name and attaches the producer.
//! let mut tx = Channel::<Tick>::open(Backing::posix(&name), &Options::new())?.producer()?;
//! tx.send(Tick { seq: 1, price: 101.5 })?;
//!
//! let tick = rx.recv()?;
//! assert_eq!((tick.seq, tick.price), (1, 101.5));
//! # Ok(()) }
//! ```
//!
//! # Architecture
//! - `os` (private): system calls, the only user of `nix`/`libc`.
//! - `layout`: the segment format, shared by every backing.
//! - `sync`: the loom shim, futex park/wake, the sleep handshake's fences, the wait strategy.
//! - `ring`: the ring algorithms, pure logic over a control block and slot memory.
//! - [`spsc`]: the safe public handles.
//!
//! # What a peer can and cannot do
//! The segment is input from the other side at every instant. A peer, whatever it writes, cannot
//! make us read or write out of bounds, panic, or hang past a deadline: geometry is validated
//! once at open and kept privately; every shared value is loaded once and checked; payloads are
//! copied out (never referenced) and `T: Pod` accepts any bytes. It can forge, drop or reorder
//! messages in a ring it can write, and deny service on it; a detected inconsistency fails the
//! channel for good with a `Corrupted` error. See the README for the full list.

#![warn(missing_docs)]
#![cfg_attr(shmchan_loom, allow(dead_code, unused_imports))]

pub mod bytes;
mod endpoint;
mod error;
mod frame;
pub mod inspect;
#[doc(hidden)]
pub mod layout;
pub mod mpmc;
mod options;
mod os;
mod ring;
mod segment;
pub mod spsc;
mod sync;

#[cfg(all(test, shmchan_loom))]
mod loom_models;
#[cfg(all(test, shmchan_loom))]
mod loom_models_bytes;
#[cfg(all(test, shmchan_loom))]
mod loom_models_mpmc;

pub use error::{
    OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError, TypeField,
};
pub use frame::{Frame, FrameTooLong};
pub use os::fdpass::{recv_fd, send_fd};
pub use segment::Backing;
pub use sync::wait::WaitStrategy;

/// Removes a POSIX shm name (with or without the leading `/`).
///
/// # Errors
/// [`OpenError::InvalidName`], [`OpenError::NotFound`], or the error of `shm_unlink(3)`.
pub fn remove_posix(name: &str) -> Result<(), OpenError> {
    let name = os::segment::posix_name(name)?;
    os::segment::unlink_posix(&name).map_err(|e| OpenError::from_io(e, "shm_unlink"))
}
