//! The operating-system layer: the only code in the crate that calls `nix` or `libc`.
//!
//! - [`segment`]: creating, opening, sizing, sealing, mapping and removing shared objects
//!   (POSIX shm, regular files, anonymous shared mappings, memfd, System V shm).
//! - [`futex`]: shared (cross-process) futex wait/wake and the `membarrier` asymmetric fence.
//! - [`process`]: process identity (pid + start time) and liveness of a recorded peer.
//! - [`cpus`]: how many CPUs the processes of a channel share (online, within a CPU quota).
//! - [`fdpass`]: passing a segment's fd over a Unix socket (`SCM_RIGHTS`).

#[cfg(not(target_os = "linux"))]
compile_error!("shmchan supports Linux only: it relies on futexes, memfd seals and /proc");

pub(crate) mod cpus;
pub mod fdpass;
pub(crate) mod futex;
pub(crate) mod process;
pub(crate) mod segment;
