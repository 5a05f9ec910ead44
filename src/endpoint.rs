//! Endpoint ownership, shared by every flavor: the owner words in the segment (who holds an
//! endpoint: pid and start time, or detached), claiming and releasing them, and watching a
//! peer's liveness without a system call on the fast path.

use std::time::Instant;

use crate::error::OpenError;
use crate::layout::endpoint;
use crate::os::process::{self, Liveness};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::wait::PEER_CHECK_INTERVAL;

/// This process's owner word, for the endpoint records.
pub(crate) fn my_endpoint_word() -> Result<u64, OpenError> {
    let me = process::current().map_err(|e| OpenError::Io { op: "/proc/self/stat", source: e })?;
    Ok(endpoint::attached(me.pid, me.start_ticks))
}

pub(crate) fn owner_is_dead(word: u64) -> bool {
    process::liveness(endpoint::pid(word), endpoint::start_low(word), endpoint::START_MASK)
        == Liveness::Dead
}

/// Claims an endpoint word: free if never attached, detached, or held by a dead process.
pub(crate) fn claim(word: &AtomicU64) -> Result<u64, OpenError> {
    let me = my_endpoint_word()?;
    // Bounded: a peer that keeps rewriting the word cannot keep us here.
    for _ in 0..64 {
        // SYNC: Acquire pairs with the previous owner's Release store of DETACHED in `detach`,
        // so its last positions are visible to us.
        let current = word.load(Ordering::Acquire);
        let free = current == endpoint::VACANT
            || endpoint::is_detached(current)
            || (current != me && owner_is_dead(current));
        if !free {
            return Err(OpenError::AlreadyAttached { pid: endpoint::pid(current) });
        }
        // SYNC: AcqRel: Acquire as above; Release so a later owner sees our claim ordered.
        if word.compare_exchange(current, me, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return Ok(me);
        }
    }
    Err(OpenError::Corrupted { reason: "endpoint owner word keeps changing".into() })
}

/// Marks our endpoint detached, if it is still ours.
pub(crate) fn detach(word: &AtomicU64, me: u64) {
    // SYNC: Release pairs with the peer's Acquire load of our word (`peer_gone` checks and
    // `claim`): everything we published happens-before it sees DETACHED.
    let _ =
        word.compare_exchange(me, me | endpoint::DETACHED, Ordering::Release, Ordering::Relaxed);
}

/// Detaches after a failed attach and says why it failed.
pub(crate) fn detach_after_failure(word: &AtomicU64, me: u64) -> OpenError {
    detach(word, me);
    OpenError::Corrupted { reason: "recorded positions are inconsistent".into() }
}

/// A busy `try_recv`/`try_send` loop reads the clock only once per this many failed polls.
const POLLS_PER_CLOCK_READ: u32 = 256;

/// What we know about the peer's owner word: a clean detach is read from the word itself, a
/// death needs `/proc`, looked at no more often than [`PEER_CHECK_INTERVAL`] unless forced.
#[derive(Debug, Default)]
pub(crate) struct PeerWatch {
    confirmed_dead: u64,
    last_check: Option<Instant>,
    polls: u32,
}

impl PeerWatch {
    pub(crate) fn is_gone(&mut self, word: u64, force: bool) -> bool {
        if word == endpoint::VACANT {
            return false;
        }
        if endpoint::is_detached(word) || word == self.confirmed_dead {
            return true;
        }
        if !force {
            // Keep failed polls cheap: a clock read costs more than the poll itself.
            self.polls = self.polls.wrapping_add(1);
            if self.last_check.is_some() && self.polls % POLLS_PER_CLOCK_READ != 0 {
                return false;
            }
        }
        let now = Instant::now();
        if !force && self.last_check.is_some_and(|t| now.duration_since(t) < PEER_CHECK_INTERVAL) {
            return false;
        }
        self.last_check = Some(now);
        if owner_is_dead(word) {
            self.confirmed_dead = word;
            return true;
        }
        false
    }

    /// Gone without a system call: detached, or already confirmed dead.
    #[inline(always)]
    pub(crate) fn known_gone(&self, word: u64) -> bool {
        endpoint::is_detached(word) || (word == self.confirmed_dead && word != endpoint::VACANT)
    }
}
