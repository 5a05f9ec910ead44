//! The fences of the sleep handshake.
//!
//! A sleeper stores `SLEEPING` to its futex word and then re-checks the ring; a waker publishes
//! to the ring and then loads the sleeper's word. Each side stores one location and loads the
//! other (Dekker's pattern), so each needs a StoreLoad barrier between the two: without one, both
//! may read stale values, the sleeper sleeps and the waker skips the `FUTEX_WAKE`.
//!
//! The waker runs once per message; the sleeper only before it sleeps. So when the kernel
//! supports it, the barrier is made asymmetric: the hot side issues a compiler fence only
//! ([`Fences::light`]) and the sleeping side issues `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`
//! ([`Fences::heavy`]), which forces a full barrier on every running thread of every process that
//! registered for it. A process that cannot register uses a real `fence(SeqCst)` on its hot path;
//! a sleeper whose `membarrier` fails falls back to a full fence, and a wake-up it then misses
//! costs at most one sleep slice. Under loom both sides use `fence(SeqCst)`, the symmetric form
//! of the same protocol.

use crate::sync::atomic::{Ordering, compiler_fence, fence};

/// The fence pair a handle uses; chosen once per process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fences {
    /// This process is registered for global expedited membarriers.
    asymmetric: bool,
}

impl Fences {
    /// The fences for this process, registering for `membarrier` on first use.
    pub(crate) fn for_process() -> Self {
        #[cfg(not(shmchan_loom))]
        {
            // Registration belongs to the address space, which a forked child does not share:
            // remember which process registered, and register again in a child.
            static REGISTERED: std::sync::Mutex<Option<(u32, bool)>> = std::sync::Mutex::new(None);
            let pid = std::process::id();
            let mut registered = REGISTERED.lock().unwrap_or_else(|poison| poison.into_inner());
            let asymmetric = match *registered {
                Some((who, asymmetric)) if who == pid => asymmetric,
                _ => {
                    let asymmetric = crate::os::futex::membarrier_register()
                        && crate::os::futex::membarrier_global();
                    *registered = Some((pid, asymmetric));
                    asymmetric
                }
            };
            Fences { asymmetric }
        }
        #[cfg(shmchan_loom)]
        Fences { asymmetric: false }
    }

    /// The waker's side: between publishing and loading the peer's futex word.
    #[inline(always)]
    pub(crate) fn light(self) {
        if self.asymmetric {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The sleeper's side: between storing `SLEEPING` and re-checking the ring.
    #[inline]
    pub(crate) fn heavy(self) {
        #[cfg(not(shmchan_loom))]
        if crate::os::futex::membarrier_global() {
            return;
        }
        fence(Ordering::SeqCst);
    }
}
