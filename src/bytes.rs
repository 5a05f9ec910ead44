//! Single-producer/single-consumer channels of variable-length byte messages, written and read
//! in place.
//!
//! A [`Channel`] is a mapped segment holding one data area of `capacity_bytes` (a power of two)
//! in which messages of 0 to `max_message` bytes are laid out back to back. The producer asks
//! for room with [`Producer::try_grant`] (or [`grant`](Producer::grant), which waits), fills
//! the [`WriteGrant`] in place and [`commit`](WriteGrant::commit)s it, possibly shorter than
//! it asked for; the consumer gets the next message as a [`ReadGrant`] from
//! [`Consumer::try_read`] (or [`read`](Consumer::read)) and releases it when the grant is
//! dropped. [`Producer::send`] and [`Consumer::recv`] are the copying forms.
//!
//! ```
//! use shmchan::bytes::{Channel, Options};
//! use shmchan::Backing;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let opts = Options::new().capacity_bytes(1 << 16).max_message(4096);
//! let chan = Channel::create(Backing::Anonymous, &opts)?;
//! let (mut tx, mut rx) = (chan.producer()?, chan.consumer()?);
//!
//! // Zero-copy: ask for up to 64 bytes, write 10 in place, publish those 10.
//! let mut grant = tx.try_grant(64)?;
//! grant.write_at(0, b"hello, ");
//! grant.write_at(7, b"abc");
//! grant.commit(10);
//! // Copying.
//! tx.send(b"second")?;
//!
//! let msg = rx.try_read()?;
//! assert_eq!(msg.to_vec(), b"hello, abc");
//! drop(msg); // releases the record
//! let mut buf = Vec::new();
//! rx.recv(&mut buf)?;
//! assert_eq!(buf, b"second");
//! # Ok(()) }
//! ```
//!
//! # An untrusted peer
//! The data area is shared with the other process, which may write any byte at any time. So
//! safe code never holds a `&[u8]` or `&mut [u8]` into it: a [`WriteGrant`] is filled with
//! copies ([`write_at`](WriteGrant::write_at), [`write_pod`](WriteGrant::write_pod),
//! [`fill`](WriteGrant::fill)) and a [`ReadGrant`] is read with copies
//! ([`copy_to`](ReadGrant::copy_to), [`to_vec`](ReadGrant::to_vec),
//! [`read_pod`](ReadGrant::read_pod)), each bounded by the record's length, which was loaded
//! once and validated before the grant was made (against `max_message`, the end of the data
//! area and the published tail). Whatever the peer writes meanwhile, the copies stay inside the
//! record; they may see bytes the peer changed, which is the peer's business. When the peer is
//! trusted, [`WriteGrant::as_mut_slice`] and [`ReadGrant::as_slice`] lend the memory directly
//! (`unsafe`: a slice the peer writes to while it lives is undefined behaviour).
//!
//! A record that fails validation poisons the handle: every later call reports `Corrupted`.
//!
//! # Delivery
//! As for [`spsc`](crate::spsc): messages arrive in order, exactly once; after the producer
//! detaches or dies everything it committed is delivered, then `Disconnected`; a grant the
//! producer held when it died (or dropped without committing) publishes nothing. A consumer that
//! attaches after a dead one resumes at the last record the dead one released, so it may see
//! again the record the dead one was reading. A dead peer is recognised from its pid and start
//! time within about 25 ms of blocking.

use std::fmt;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::endpoint::{PeerWatch, claim, detach, detach_after_failure};
use crate::error::{OpenError, RecvError, RecvTimeoutError, TryRecvError, untimed_recv};
use crate::layout::ElementType;
use crate::options::{Common, common_option_setters};
use crate::ring::bytes::{
    self as ring, BytesControl, BytesFlavor, ConsumerRing, DataMemory, ProducerRing, Record,
    Refused, Reservation, SharedData,
};
use crate::segment::{Backing, Segment, SegmentParams};
use crate::sync::atomic::Ordering;
use crate::sync::fence::Fences;
use crate::sync::wait::{self, Attempt, WaitStrategy};

/// Options for creating or opening a byte channel.
#[derive(Debug, Clone)]
pub struct Options {
    capacity_bytes: usize,
    max_message: Option<usize>,
    common: Common,
}

impl Default for Options {
    fn default() -> Self {
        Options { capacity_bytes: 1 << 16, max_message: None, common: Common::default() }
    }
}

impl Options {
    /// Defaults: a 64 KiB data area, the largest `max_message` it allows, mode 0600,
    /// [`WaitStrategy::Adaptive`], the creator removes the name on drop, only our own user's
    /// segments open, 1 s open timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size of the data area in bytes: a power of two from 16 to 2^32. Used at creation only.
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.capacity_bytes = bytes;
        self
    }

    /// Largest message in bytes, recorded in the segment. Its record (an 8-byte header and the
    /// payload rounded up to 8) must fit in half the data area, so at most
    /// `capacity_bytes / 2 - 8`, the default. The bound lets a grant reserve the padding at the
    /// end of the area together with its record, so a refused grant changes nothing. Used at
    /// creation only; an opener reads it from the segment.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = Some(bytes);
        self
    }

    common_option_setters!();

    fn params(&self) -> Result<SegmentParams, OpenError> {
        let start = self.common.start_position;
        if start % ring::RECORD_ALIGN != 0 {
            return Err(OpenError::InvalidOption {
                reason: format!("start position {start} is not a multiple of 8"),
            });
        }
        let capacity = self.capacity_bytes as u64;
        let default_max = (capacity / 2).saturating_sub(ring::RECORD_HEADER);
        let element = ElementType {
            size: ring::ELEM_SIZE,
            align: ring::RECORD_ALIGN,
            fingerprint: ring::BYTES_FINGERPRINT,
        };
        let max_message = self.max_message.map_or(default_max, |m| m as u64);
        Ok(self.common.segment_params(element, capacity, max_message))
    }
}

/// A mapped byte-ring segment. Attach endpoints with [`producer`](Self::producer) and
/// [`consumer`](Self::consumer); the handles keep the mapping alive on their own.
#[derive(Debug)]
pub struct Channel {
    segment: Arc<Segment>,
    wait: WaitStrategy,
}

impl Channel {
    /// Creates a segment with a data area of `options.capacity_bytes` in `backing`.
    ///
    /// # Errors
    /// [`OpenError::AlreadyExists`] if the name is taken, [`OpenError::InvalidOption`] for a
    /// capacity that is not a power of two in range, a `max_message` above half the area, or a
    /// bad mode; [`OpenError::NoSpace`] if the space cannot be reserved, and the OS errors.
    pub fn create(backing: Backing, options: &Options) -> Result<Self, OpenError> {
        let segment = Segment::create::<BytesFlavor>(backing, &options.params()?)?;
        Ok(Channel { segment: Arc::new(segment), wait: options.common.wait })
    }

    /// Opens an existing byte-ring segment; its capacity and `max_message` come from the
    /// segment.
    ///
    /// # Errors
    /// As [`spsc::Channel::open`](crate::spsc::Channel::open); a segment holding another kind of
    /// channel gives [`OpenError::FlavorMismatch`].
    pub fn open(backing: Backing, options: &Options) -> Result<Self, OpenError> {
        let segment = Segment::open::<BytesFlavor>(backing, &options.params()?)?;
        Ok(Channel { segment: Arc::new(segment), wait: options.common.wait })
    }

    /// Attaches the producer endpoint.
    ///
    /// # Errors
    /// [`OpenError::AlreadyAttached`] while another live producer holds it;
    /// [`OpenError::Corrupted`] if the recorded positions are impossible.
    pub fn producer(&self) -> Result<Producer, OpenError> {
        let ctl = control(&self.segment);
        let me = claim(&ctl.endpoints.0.producer)?;
        let ring = ProducerRing::attach(ctl, self.capacity_bytes() as u64, self.max_message_u64())
            .map_err(|_| detach_after_failure(&ctl.endpoints.0.producer, me))?;
        Ok(Producer {
            segment: Arc::clone(&self.segment),
            ring,
            data: self.data(),
            me,
            peer: PeerWatch::default(),
            fences: Fences::for_process(),
            wait: self.wait,
            poisoned: false,
        })
    }

    /// Attaches the consumer endpoint.
    ///
    /// # Errors
    /// As [`producer`](Self::producer).
    pub fn consumer(&self) -> Result<Consumer, OpenError> {
        let ctl = control(&self.segment);
        let me = claim(&ctl.endpoints.0.consumer)?;
        let ring = ConsumerRing::attach(ctl, self.capacity_bytes() as u64, self.max_message_u64())
            .map_err(|_| detach_after_failure(&ctl.endpoints.0.consumer, me))?;
        Ok(Consumer {
            segment: Arc::clone(&self.segment),
            ring,
            data: self.data(),
            me,
            peer: PeerWatch::default(),
            fences: Fences::for_process(),
            wait: self.wait,
            poisoned: false,
        })
    }

    fn data(&self) -> SharedData {
        // SAFETY: the geometry was validated against the mapping: the data area of `capacity`
        // bytes starts at slots_offset (128-aligned) inside it, and the Arc every handle holds
        // keeps the mapping alive as long as the data is used.
        unsafe { SharedData::new(self.segment.slots_base(), self.segment.geometry().capacity) }
    }

    fn max_message_u64(&self) -> u64 {
        self.segment.geometry().extra
    }

    /// Size of the data area in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.segment.geometry().capacity as usize
    }

    /// Largest message the channel carries.
    pub fn max_message(&self) -> usize {
        self.max_message_u64() as usize
    }

    /// Bytes of the data area in use now (records, headers and padding), as far as the shared
    /// positions tell (a snapshot).
    pub fn used_bytes(&self) -> usize {
        let ctl = control(&self.segment);
        let head = ctl.head.0.load(Ordering::Relaxed);
        let tail = ctl.tail.0.load(Ordering::Relaxed);
        tail.wrapping_sub(head).min(self.segment.geometry().capacity) as usize
    }

    /// Whether the ring looked empty just now.
    pub fn is_empty(&self) -> bool {
        self.used_bytes() == 0
    }

    /// The segment's fd, for POSIX, file and memfd backings: send it to a peer with
    /// [`send_fd`](crate::send_fd).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.segment.fd()
    }

    /// The System V id, for SysV backings.
    pub fn sysv_id(&self) -> Option<i32> {
        self.segment.sysv_id()
    }

    /// Writes the segment back to its file (`msync`); a no-op for memory-only backings.
    ///
    /// # Errors
    /// The error of `msync(2)`.
    pub fn flush(&self) -> std::io::Result<()> {
        self.segment.flush()
    }
}

/// The control block of a segment created or validated as [`BytesFlavor`].
#[inline(always)]
fn control(segment: &Segment) -> &BytesControl {
    // SAFETY: every Segment in this module was created or validated as BytesFlavor, whose
    // control block is BytesControl (atomics only).
    unsafe { segment.control::<BytesControl>() }
}

// ------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------

/// Error of [`Producer::try_grant`] and [`Producer::try_send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// Not enough room in the ring now.
    Full,
    /// The message is longer than the channel's `max_message`.
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The channel's `max_message`.
        max: usize,
    },
    /// The consumer is gone (dropped, or its process died).
    Disconnected,
    /// The ring failed a consistency check and is closed for good.
    Corrupted,
}

/// Error of [`Producer::grant`] and [`Producer::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The message is longer than the channel's `max_message`.
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The channel's `max_message`.
        max: usize,
    },
    /// The consumer is gone (dropped, or its process died).
    Disconnected,
    /// The ring failed a consistency check and is closed for good.
    Corrupted,
}

/// Error of [`Producer::grant_timeout`] and [`Producer::send_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendTimeoutError {
    /// The deadline passed while the ring stayed too full.
    Timeout,
    /// The message is longer than the channel's `max_message`.
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The channel's `max_message`.
        max: usize,
    },
    /// The consumer is gone (dropped, or its process died).
    Disconnected,
    /// The ring failed a consistency check and is closed for good.
    Corrupted,
}

fn too_large(f: &mut fmt::Formatter<'_>, len: usize, max: usize) -> fmt::Result {
    write!(f, "message of {len} bytes exceeds the channel's maximum of {max}")
}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TrySendError::Full => f.write_str("sending on a full channel"),
            TrySendError::TooLarge { len, max } => too_large(f, len, max),
            TrySendError::Disconnected => f.write_str("sending on a disconnected channel"),
            TrySendError::Corrupted => f.write_str("sending on a corrupted channel"),
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SendError::TooLarge { len, max } => too_large(f, len, max),
            SendError::Disconnected => f.write_str("sending on a disconnected channel"),
            SendError::Corrupted => f.write_str("sending on a corrupted channel"),
        }
    }
}

impl fmt::Display for SendTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SendTimeoutError::Timeout => f.write_str("timed out sending on a full channel"),
            SendTimeoutError::TooLarge { len, max } => too_large(f, len, max),
            SendTimeoutError::Disconnected => f.write_str("sending on a disconnected channel"),
            SendTimeoutError::Corrupted => f.write_str("sending on a corrupted channel"),
        }
    }
}

impl std::error::Error for TrySendError {}
impl std::error::Error for SendError {}
impl std::error::Error for SendTimeoutError {}

impl From<SendTimeoutError> for SendError {
    /// For waits without a deadline, which end only by success, disconnect or corruption.
    fn from(e: SendTimeoutError) -> Self {
        match e {
            SendTimeoutError::TooLarge { len, max } => SendError::TooLarge { len, max },
            SendTimeoutError::Corrupted => SendError::Corrupted,
            SendTimeoutError::Timeout | SendTimeoutError::Disconnected => SendError::Disconnected,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Producer
// ------------------------------------------------------------------------------------------

/// The sending end of a byte channel.
pub struct Producer {
    segment: Arc<Segment>,
    ring: ProducerRing,
    data: SharedData,
    me: u64,
    peer: PeerWatch,
    fences: Fences,
    wait: WaitStrategy,
    poisoned: bool,
}

// SAFETY: a Producer owns its cursor and reaches shared memory only through the Arc'd mapping
// (the raw pointer in `data` points into it); nothing in it is tied to the creating thread.
unsafe impl Send for Producer {}

impl Producer {
    #[inline(always)]
    fn ctl(&self) -> &BytesControl {
        control(&self.segment)
    }

    /// Room for a message of up to `len` bytes now, or why not. Changes nothing shared.
    #[inline]
    fn try_reserve(&mut self, len: usize) -> Result<Reservation, TrySendError> {
        let max = self.max_message();
        if len > max {
            return Err(TrySendError::TooLarge { len, max });
        }
        if self.poisoned {
            return Err(TrySendError::Corrupted);
        }
        let peer = self.ctl().endpoints.0.consumer.load(Ordering::Relaxed);
        if self.peer.known_gone(peer) {
            return Err(TrySendError::Disconnected);
        }
        match self.ring.reserve(control(&self.segment), len as u64) {
            Ok(reservation) => Ok(reservation),
            Err(Refused::Full) => Err(self.full_outcome(peer)),
            Err(Refused::TooLarge) => Err(TrySendError::TooLarge { len, max }),
            Err(Refused::Corrupt) => {
                self.poison();
                Err(TrySendError::Corrupted)
            }
        }
    }

    #[cold]
    fn full_outcome(&mut self, peer: u64) -> TrySendError {
        if self.peer.is_gone(peer, false) { TrySendError::Disconnected } else { TrySendError::Full }
    }

    #[cold]
    fn poison(&mut self) {
        self.poisoned = true;
        self.ctl().endpoints.0.poisoned.store(1, Ordering::Relaxed);
        wait::wake_unconditionally(&self.ctl().consumer_wait.0);
    }

    /// Room for a message of up to `len` bytes, if the ring has it now. Fill the grant and
    /// [`commit`](WriteGrant::commit) it; dropping it publishes nothing. Never blocks and makes
    /// no system call unless the consumer sleeps (on commit).
    ///
    /// # Examples
    /// ```
    /// use shmchan::bytes::{Channel, Options, TrySendError};
    /// use shmchan::Backing;
    ///
    /// let chan = Channel::create(Backing::Anonymous, &Options::new().capacity_bytes(64))?;
    /// let mut tx = chan.producer()?;
    /// assert_eq!(chan.max_message(), 24);
    /// let err = tx.try_grant(100).unwrap_err();
    /// assert_eq!(err, TrySendError::TooLarge { len: 100, max: 24 });
    /// let mut grant = tx.try_grant(24).unwrap();
    /// grant.write_pod(0, &7u64);
    /// drop(grant); // nothing published
    /// assert!(chan.is_empty());
    /// # Ok::<(), shmchan::OpenError>(())
    /// ```
    ///
    /// # Errors
    /// [`TrySendError::TooLarge`] above `max_message`, [`TrySendError::Full`] when the ring
    /// lacks room now, [`TrySendError::Disconnected`] when the consumer detached or died,
    /// [`TrySendError::Corrupted`] once the ring failed a check.
    pub fn try_grant(&mut self, len: usize) -> Result<WriteGrant<'_>, TrySendError> {
        let reservation = self.try_reserve(len)?;
        Ok(WriteGrant { producer: self, reservation, len })
    }

    /// As [`try_grant`](Self::try_grant), waiting while the ring lacks room.
    ///
    /// # Errors
    /// [`SendError::TooLarge`], [`SendError::Disconnected`], [`SendError::Corrupted`].
    pub fn grant(&mut self, len: usize) -> Result<WriteGrant<'_>, SendError> {
        let reservation = self.reserve_until(len, None).map_err(SendError::from)?;
        Ok(WriteGrant { producer: self, reservation, len })
    }

    /// As [`grant`](Self::grant), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] when the time ran out, and as [`grant`](Self::grant).
    pub fn grant_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<WriteGrant<'_>, SendTimeoutError> {
        let reservation = self.reserve_until(len, Some(Instant::now() + timeout))?;
        Ok(WriteGrant { producer: self, reservation, len })
    }

    fn reserve_until(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<Reservation, SendTimeoutError> {
        // The common case first, without the blocking machinery (an Arc clone, a locked op
        // that would wait for this producer's stores to shared memory to drain).
        if let Some(done) = (Reserve { producer: self, len }).attempt() {
            return done;
        }
        self.reserve_blocking(len, deadline)
    }

    #[inline(never)]
    fn reserve_blocking(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<Reservation, SendTimeoutError> {
        let segment = Arc::clone(&self.segment);
        let (wait, fences) = (self.wait, self.fences);
        let mut op = Reserve { producer: self, len };
        wait::block(&mut op, &control(&segment).producer_wait.0, wait, fences, deadline)
            .unwrap_or(Err(SendTimeoutError::Timeout))
    }

    /// Publishes the record `reservation` describes with `len` bytes.
    #[inline]
    fn commit(&mut self, reservation: &Reservation, len: usize) {
        let ctl = control(&self.segment);
        self.ring.commit(ctl, &self.data, reservation, len as u64);
        wait::wake_if_sleeping(&ctl.consumer_wait.0, self.fences);
    }

    /// Sends a copy of `msg` if the ring has room now.
    ///
    /// # Errors
    /// As [`try_grant`](Self::try_grant).
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), TrySendError> {
        let mut grant = self.try_grant(msg.len())?;
        grant.write_at(0, msg);
        grant.commit(msg.len());
        Ok(())
    }

    /// Sends a copy of `msg`, waiting while the ring lacks room.
    ///
    /// # Errors
    /// As [`grant`](Self::grant).
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let mut grant = self.grant(msg.len())?;
        grant.write_at(0, msg);
        grant.commit(msg.len());
        Ok(())
    }

    /// Sends a copy of `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`grant_timeout`](Self::grant_timeout).
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<(), SendTimeoutError> {
        let mut grant = self.grant_timeout(msg.len(), timeout)?;
        grant.write_at(0, msg);
        grant.commit(msg.len());
        Ok(())
    }

    /// Largest message the channel carries.
    pub fn max_message(&self) -> usize {
        self.segment.geometry().extra as usize
    }

    /// Size of the data area in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.segment.geometry().capacity as usize
    }

    /// Whether the consumer is known to be gone (detached, or found dead).
    pub fn is_disconnected(&mut self) -> bool {
        let peer = self.ctl().endpoints.0.consumer.load(Ordering::Acquire);
        self.peer.is_gone(peer, true)
    }

    /// Sets how blocking calls wait from now on.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// The free-running byte position of the next record (diagnostics).
    pub fn position(&self) -> u64 {
        self.ring.position()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let ctl = control(&self.segment);
        detach(&ctl.endpoints.0.producer, self.me);
        wait::wake_unconditionally(&ctl.consumer_wait.0);
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("position", &self.ring.position())
            .field("cached_free", &self.ring.cached_free())
            .finish_non_exhaustive()
    }
}

struct Reserve<'a> {
    producer: &'a mut Producer,
    len: usize,
}

impl Attempt for Reserve<'_> {
    type Output = Result<Reservation, SendTimeoutError>;

    fn attempt(&mut self) -> Option<Self::Output> {
        match self.producer.try_reserve(self.len) {
            Ok(reservation) => Some(Ok(reservation)),
            Err(TrySendError::Full) => None,
            Err(TrySendError::TooLarge { len, max }) => {
                Some(Err(SendTimeoutError::TooLarge { len, max }))
            }
            Err(TrySendError::Disconnected) => Some(Err(SendTimeoutError::Disconnected)),
            Err(TrySendError::Corrupted) => Some(Err(SendTimeoutError::Corrupted)),
        }
    }

    fn check_peer(&mut self) {
        let p = &mut *self.producer;
        let peer = p.ctl().endpoints.0.consumer.load(Ordering::Acquire);
        p.peer.is_gone(peer, true);
    }
}

/// Room for one message in the ring, filled in place by the producer.
///
/// The memory is shared with the consumer's process, so it is written through copies only
/// ([`write_at`](Self::write_at), [`write_pod`](Self::write_pod), [`fill`](Self::fill)).
/// [`commit`](Self::commit) publishes the first `len` bytes; dropping the grant publishes
/// nothing. Bytes not written hold whatever an earlier message left there.
pub struct WriteGrant<'a> {
    producer: &'a mut Producer,
    reservation: Reservation,
    len: usize,
}

impl WriteGrant<'_> {
    /// Bytes granted.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the grant holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Data offset of `offset..offset + n`, which must lie inside the grant.
    #[track_caller]
    fn range(&self, offset: usize, n: usize) -> u64 {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => self.reservation.payload_offset + offset as u64,
            _ => panic!("bytes {offset}..{offset}+{n} lie outside a grant of {}", self.len),
        }
    }

    /// Copies `src` into the grant at `offset`.
    ///
    /// # Panics
    /// If `offset + src.len()` exceeds [`len`](Self::len).
    #[track_caller]
    pub fn write_at(&mut self, offset: usize, src: &[u8]) {
        let at = self.range(offset, src.len());
        // SAFETY: the range lies inside our reservation, which the consumer does not read
        // before the commit publishes it.
        unsafe { self.producer.data.write(at, src) };
    }

    /// Copies the bytes of `value` into the grant at `offset` (no alignment needed).
    ///
    /// # Panics
    /// If `offset + size_of::<T>()` exceeds [`len`](Self::len).
    #[track_caller]
    pub fn write_pod<T: Pod>(&mut self, offset: usize, value: &T) {
        self.write_at(offset, bytemuck::bytes_of(value));
    }

    /// Sets `n` bytes from `offset` to `byte`.
    ///
    /// # Panics
    /// If `offset + n` exceeds [`len`](Self::len).
    #[track_caller]
    pub fn fill(&mut self, offset: usize, n: usize, byte: u8) {
        let at = self.range(offset, n);
        // SAFETY: as in `write_at`.
        unsafe { self.producer.data.fill(at, n, byte) };
    }

    /// A raw pointer to the first byte of the grant, valid for [`len`](Self::len) bytes until
    /// the grant is committed or dropped (for `read(2)` and the like).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.producer.data.ptr(self.range(0, self.len))
    }

    /// The grant as a mutable slice.
    ///
    /// # Safety
    /// The memory is shared: the slice is sound only while no other process writes or reads
    /// these bytes. A consumer that follows the protocol never touches them before the commit;
    /// only call this when the peer is trusted to follow it.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        let ptr = self.as_mut_ptr();
        // SAFETY: `len` bytes from `ptr` lie inside the data area (the reservation), borrowed
        // mutably through `self`; the caller guarantees no other process accesses them.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }

    /// Publishes the first `len` bytes of the grant as one message.
    ///
    /// # Panics
    /// If `len` exceeds [`len`](Self::len) (the grant).
    #[track_caller]
    pub fn commit(self, len: usize) {
        assert!(len <= self.len, "commit of {len} bytes exceeds a grant of {}", self.len);
        self.producer.commit(&self.reservation, len);
    }
}

impl fmt::Debug for WriteGrant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGrant").field("len", &self.len).finish_non_exhaustive()
    }
}

// ------------------------------------------------------------------------------------------
// Consumer
// ------------------------------------------------------------------------------------------

/// The receiving end of a byte channel.
pub struct Consumer {
    segment: Arc<Segment>,
    ring: ConsumerRing,
    data: SharedData,
    me: u64,
    peer: PeerWatch,
    fences: Fences,
    wait: WaitStrategy,
    poisoned: bool,
}

// SAFETY: as for Producer.
unsafe impl Send for Consumer {}

impl Consumer {
    #[inline(always)]
    fn ctl(&self) -> &BytesControl {
        control(&self.segment)
    }

    /// The next record, validated, if one is published.
    #[inline]
    fn try_peek(&mut self) -> Result<Record, TryRecvError> {
        if self.poisoned {
            return Err(TryRecvError::Corrupted);
        }
        match self.ring.peek(control(&self.segment), &self.data) {
            Ok(Some(record)) => Ok(record),
            Ok(None) => self.empty_outcome(false),
            Err(_) => Err(self.poison()),
        }
    }

    /// The ring looked empty: decide between Empty and Disconnected. A producer publishes before
    /// it detaches, so once its word reads as gone one more look at the ring is conclusive.
    #[cold]
    fn empty_outcome(&mut self, force: bool) -> Result<Record, TryRecvError> {
        if self.ctl().endpoints.0.poisoned.load(Ordering::Relaxed) != 0 {
            return Err(self.poison());
        }
        // SYNC: Acquire pairs with the producer's Release in `detach`, after its last commit.
        let peer = self.ctl().endpoints.0.producer.load(Ordering::Acquire);
        if !self.peer.is_gone(peer, force) {
            return Err(TryRecvError::Empty);
        }
        match self.ring.peek(control(&self.segment), &self.data) {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(TryRecvError::Disconnected),
            Err(_) => Err(self.poison()),
        }
    }

    #[cold]
    fn poison(&mut self) -> TryRecvError {
        self.poisoned = true;
        self.ctl().endpoints.0.poisoned.store(1, Ordering::Relaxed);
        wait::wake_unconditionally(&self.ctl().producer_wait.0);
        TryRecvError::Corrupted
    }

    /// Hands `record` back to the producer.
    #[inline]
    fn release(&mut self, record: &Record) {
        let ctl = control(&self.segment);
        self.ring.release(ctl, record);
        wait::wake_if_sleeping(&ctl.producer_wait.0, self.fences);
    }

    /// The next message, if one is ready, as a grant to read in place; it is released when the
    /// grant is dropped. Never blocks and makes no system call unless the producer sleeps (on
    /// release).
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when nothing is ready, [`TryRecvError::Disconnected`] when the
    /// producer is gone and the ring is drained, [`TryRecvError::Corrupted`] once a record
    /// failed validation.
    pub fn try_read(&mut self) -> Result<ReadGrant<'_>, TryRecvError> {
        let record = self.try_peek()?;
        Ok(ReadGrant { consumer: self, record })
    }

    /// As [`try_read`](Self::try_read), waiting until a message is ready.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] when the producer is gone and the ring is drained;
    /// [`RecvError::Corrupted`].
    pub fn read(&mut self) -> Result<ReadGrant<'_>, RecvError> {
        let record = self.peek_until(None).map_err(untimed_recv)?;
        Ok(ReadGrant { consumer: self, record })
    }

    /// As [`read`](Self::read), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when the time ran out, and as [`read`](Self::read).
    pub fn read_timeout(&mut self, timeout: Duration) -> Result<ReadGrant<'_>, RecvTimeoutError> {
        let record = self.peek_until(Some(Instant::now() + timeout))?;
        Ok(ReadGrant { consumer: self, record })
    }

    fn peek_until(&mut self, deadline: Option<Instant>) -> Result<Record, RecvTimeoutError> {
        // The common case first, without the blocking machinery (see `reserve_until`).
        if let Some(done) = (Peek { consumer: self }).attempt() {
            return done;
        }
        self.peek_blocking(deadline)
    }

    #[inline(never)]
    fn peek_blocking(&mut self, deadline: Option<Instant>) -> Result<Record, RecvTimeoutError> {
        let segment = Arc::clone(&self.segment);
        let (wait, fences) = (self.wait, self.fences);
        let mut op = Peek { consumer: self };
        wait::block(&mut op, &control(&segment).consumer_wait.0, wait, fences, deadline)
            .unwrap_or(Err(RecvTimeoutError::Timeout))
    }

    /// Copies the next message, if one is ready, into `buf` (replacing its contents); returns
    /// its length.
    ///
    /// # Errors
    /// As [`try_read`](Self::try_read).
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        Ok(self.try_read()?.copy_into(buf))
    }

    /// Copies the next message into `buf` (replacing its contents), waiting for it; returns its
    /// length.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        Ok(self.read()?.copy_into(buf))
    }

    /// As [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`read_timeout`](Self::read_timeout).
    pub fn recv_timeout(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        Ok(self.read_timeout(timeout)?.copy_into(buf))
    }

    /// Largest message the channel carries.
    pub fn max_message(&self) -> usize {
        self.segment.geometry().extra as usize
    }

    /// Size of the data area in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.segment.geometry().capacity as usize
    }

    /// Whether the producer is known to be gone (detached, or found dead). Messages may still
    /// be waiting in the ring.
    pub fn is_disconnected(&mut self) -> bool {
        let peer = self.ctl().endpoints.0.producer.load(Ordering::Acquire);
        self.peer.is_gone(peer, true)
    }

    /// Sets how blocking calls wait from now on.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// The free-running byte position of the next record to read (diagnostics).
    pub fn position(&self) -> u64 {
        self.ring.position()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let ctl = control(&self.segment);
        detach(&ctl.endpoints.0.consumer, self.me);
        wait::wake_unconditionally(&ctl.producer_wait.0);
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").field("position", &self.ring.position()).finish_non_exhaustive()
    }
}

struct Peek<'a> {
    consumer: &'a mut Consumer,
}

impl Attempt for Peek<'_> {
    type Output = Result<Record, RecvTimeoutError>;

    fn attempt(&mut self) -> Option<Self::Output> {
        match self.consumer.try_peek() {
            Ok(record) => Some(Ok(record)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
            Err(TryRecvError::Corrupted) => Some(Err(RecvTimeoutError::Corrupted)),
        }
    }

    fn check_peer(&mut self) {
        let c = &mut *self.consumer;
        let peer = c.ctl().endpoints.0.producer.load(Ordering::Acquire);
        c.peer.is_gone(peer, true);
    }
}

/// One received message, read in place; released (handed back to the producer) on
/// [`release`](Self::release) or drop.
///
/// The memory is shared with the producer's process, so it is read through copies only
/// ([`copy_to`](Self::copy_to), [`to_vec`](Self::to_vec), [`read_pod`](Self::read_pod)), each
/// bounded by the record's length, validated once when the grant was made. A hostile producer
/// can change the bytes while the grant lives (never the length): copy a message out before
/// checking and using it.
pub struct ReadGrant<'a> {
    consumer: &'a mut Consumer,
    record: Record,
}

impl ReadGrant<'_> {
    /// Length of the message in bytes.
    pub fn len(&self) -> usize {
        self.record.len as usize
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.record.len == 0
    }

    /// Copies the first `min(len, dst.len())` bytes of the message into `dst`; returns how many.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.len());
        // SAFETY: `n` bytes from the payload lie inside the validated record, which the
        // producer does not write before we release it.
        unsafe { self.consumer.data.read(self.record.payload_offset, &mut dst[..n]) };
        n
    }

    /// Copies `dst.len()` bytes from `offset` of the message, if they lie inside it.
    pub fn copy_range_to(&self, offset: usize, dst: &mut [u8]) -> Option<()> {
        let end = offset.checked_add(dst.len())?;
        if end > self.len() {
            return None;
        }
        // SAFETY: as in `copy_to`: offset..end lies inside the record.
        unsafe { self.consumer.data.read(self.record.payload_offset + offset as u64, dst) };
        Some(())
    }

    /// The message, copied into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.len()];
        self.copy_to(&mut out);
        out
    }

    fn copy_into(self, buf: &mut Vec<u8>) -> usize {
        buf.clear();
        buf.resize(self.len(), 0);
        self.copy_to(buf)
    }

    /// Copies a `T` out of the message at `offset` (no alignment needed); `None` if it does
    /// not lie inside the message.
    pub fn read_pod<T: Pod>(&self, offset: usize) -> Option<T> {
        let mut value = T::zeroed();
        self.copy_range_to(offset, bytemuck::bytes_of_mut(&mut value))?;
        Some(value)
    }

    /// A raw pointer to the first byte of the message, valid for [`len`](Self::len) bytes
    /// until the grant is released.
    pub fn as_ptr(&self) -> *const u8 {
        self.consumer.data.ptr(self.record.payload_offset)
    }

    /// The message as a slice, without a copy.
    ///
    /// # Safety
    /// The memory is shared: the slice is sound only while no other process writes these
    /// bytes. A producer that follows the protocol never writes a record before it is released;
    /// only call this when the peer is trusted to follow it.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes from the payload lie inside the data area (validated record),
        // borrowed through `self`; the caller guarantees no other process writes them.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    /// Releases the message (as dropping the grant does).
    pub fn release(self) {}
}

impl Drop for ReadGrant<'_> {
    fn drop(&mut self) {
        self.consumer.release(&self.record);
    }
}

impl fmt::Debug for ReadGrant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGrant").field("len", &self.len()).finish_non_exhaustive()
    }
}
