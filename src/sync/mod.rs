//! Synchronisation primitives shared by the ring algorithms.
//!
//! - [`atomic`]: the loom shim; the only place that names an atomics implementation.
//! - [`park`]: futex wait/wake on a word in the segment (a Mutex+Condvar model under loom).
//! - [`fence`]: the Dekker fences of the sleep handshake, asymmetric when the kernel allows.
//! - [`wait`]: the wait strategy and the spin-then-sleep state machine.
//! - [`prefetch`]: the cache hint the byte ring's producer gives ahead of its copies.

pub(crate) mod atomic;
pub(crate) mod fence;
pub(crate) mod park;
pub(crate) mod prefetch;
pub mod wait;
