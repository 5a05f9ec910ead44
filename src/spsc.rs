//! Typed single-producer/single-consumer channels between processes.
//!
//! A [`Channel`] is a mapped segment holding one ring of `T`. Either process may create it; the
//! other opens it. Each then attaches the one endpoint it plays: [`Channel::producer`] or
//! [`Channel::consumer`]. One producer and one consumer may be attached at a time; an endpoint
//! whose process detached or died may be taken over.
//!
//! ```
//! use shmchan::spsc::{Channel, Options};
//! use shmchan::Backing;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let name = format!("/shmchan-doc-{}", std::process::id());
//! // In the consumer process:
//! let chan = Channel::<u64>::create(Backing::posix(&name), &Options::new().capacity(64))?;
//! let mut rx = chan.consumer()?;
//! // In the producer process (here, the same one):
//! let mut tx = Channel::<u64>::open(Backing::posix(&name), &Options::new())?.producer()?;
//! tx.send(42)?;
//! assert_eq!(rx.recv()?, 42);
//! drop(tx);
//! assert_eq!(rx.recv(), Err(shmchan::RecvError::Disconnected));
//! # Ok(()) }
//! ```
//!
//! Handles belong to the process that attached them: a child created by `fork` must not use
//! a `Producer` or `Consumer` it inherited (its process identity differs); it inherits the
//! [`Channel`] and attaches its own endpoint, as `examples/fork_pair.rs` does.
//!
//! # Delivery
//! - Messages arrive in order, each exactly once, while both sides follow the protocol.
//! - After the producer detaches (drop) or dies, everything it published is still delivered,
//!   then receives report [`Disconnected`](crate::TryRecvError::Disconnected). A message the
//!   producer was writing when it died is lost.
//! - If the consumer dies, a consumer that attaches later resumes at the last position the dead
//!   one released: it may see again the messages of the one receive call the dead consumer was
//!   in (one message for `recv`, up to a batch for `recv_into`), and never loses one.
//! - A dead peer is noticed from its recorded pid and start time: by a blocked call within about
//!   25 ms (one sleep slice), by `try_recv` on an empty ring and `try_send` on a full one at most
//!   every 25 ms. A clean detach is seen at once.

use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::endpoint::{PeerWatch, claim, detach, detach_after_failure};
use crate::error::{
    OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError, first_try_recv, first_try_send, untimed_recv, untimed_send,
};
use crate::layout::{self, ElementType, SpscControl};
use crate::options::{Common, common_option_setters};
use crate::ring::SharedSlots;
use crate::ring::spsc::{ConsumerRing, Pop, ProducerRing, Push, SpscFlavor};
use crate::segment::{Backing, Segment, SegmentParams};
use crate::sync::atomic::Ordering;
use crate::sync::fence::Fences;
use crate::sync::wait::{self, Attempt, WaitStrategy};

/// Options for creating or opening a channel.
#[derive(Debug, Clone)]
pub struct Options {
    capacity: usize,
    fingerprint: Option<u64>,
    common: Common,
}

impl Default for Options {
    fn default() -> Self {
        Options { capacity: 1024, fingerprint: None, common: Common::default() }
    }
}

impl Options {
    /// Defaults: capacity 1024, mode 0600, default fingerprint, [`WaitStrategy::Adaptive`],
    /// the creator removes the name on drop, only our own user's segments open, 1 s open
    /// timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of slots (a power of two, at least 1). Used at creation only.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The type fingerprint both sides must agree on, instead of the default one derived from
    /// `T`'s type name, size and alignment. Use it when the two programs name the type differently.
    pub fn fingerprint(mut self, fingerprint: u64) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    common_option_setters!();

    fn params<T>(&self) -> SegmentParams {
        let element = ElementType {
            size: size_of::<T>() as u64,
            align: align_of::<T>() as u64,
            fingerprint: self.fingerprint.unwrap_or_else(layout::default_fingerprint::<T>),
        };
        self.common.segment_params(element, self.capacity as u64, 0)
    }
}

/// A mapped SPSC segment of `T`. Attach endpoints with [`producer`](Self::producer) and
/// [`consumer`](Self::consumer); the handles keep the mapping alive on their own.
#[derive(Debug)]
pub struct Channel<T> {
    segment: Arc<Segment>,
    wait: WaitStrategy,
    _type: PhantomData<fn(T) -> T>,
}

impl<T: Pod> Channel<T> {
    /// Creates a segment of `options.capacity` slots of `T` in `backing`.
    ///
    /// # Examples
    /// ```
    /// use shmchan::spsc::{Channel, Options};
    /// use shmchan::Backing;
    ///
    /// // A parent and the children it forks share an anonymous segment: no name to clean up.
    /// let chan = Channel::<[u8; 64]>::create(Backing::Anonymous, &Options::new().capacity(256))?;
    /// assert_eq!(chan.capacity(), 256);
    /// # Ok::<(), shmchan::OpenError>(())
    /// ```
    ///
    /// # Errors
    /// [`OpenError::AlreadyExists`] if the name is taken, [`OpenError::InvalidOption`] for a bad
    /// capacity or mode, [`OpenError::NoSpace`] if the space cannot be reserved, and the OS errors.
    pub fn create(backing: Backing, options: &Options) -> Result<Self, OpenError> {
        let segment = Segment::create::<SpscFlavor>(backing, &options.params::<T>())?;
        Ok(Channel { segment: Arc::new(segment), wait: options.common.wait, _type: PhantomData })
    }

    /// Opens an existing segment, validating its header against `T`.
    ///
    /// # Examples
    /// ```
    /// use shmchan::spsc::{Channel, Options};
    /// use shmchan::{Backing, OpenError};
    ///
    /// let name = format!("/shmchan-doc-open-{}", std::process::id());
    /// let _chan = Channel::<u64>::create(Backing::posix(&name), &Options::new())?;
    /// // The header records the element type: opening it as another type is refused.
    /// let err = Channel::<u32>::open(Backing::posix(&name), &Options::new()).unwrap_err();
    /// assert!(matches!(err, OpenError::TypeMismatch { .. }));
    /// # Ok::<(), OpenError>(())
    /// ```
    ///
    /// # Errors
    /// [`OpenError::NotFound`], [`OpenError::BadMagic`], [`OpenError::VersionMismatch`],
    /// [`OpenError::TypeMismatch`], [`OpenError::TooSmall`], [`OpenError::NotInitialized`],
    /// [`OpenError::Corrupted`], [`OpenError::ForeignOwner`], [`OpenError::MissingSeals`]...
    pub fn open(backing: Backing, options: &Options) -> Result<Self, OpenError> {
        let segment = Segment::open::<SpscFlavor>(backing, &options.params::<T>())?;
        Ok(Channel { segment: Arc::new(segment), wait: options.common.wait, _type: PhantomData })
    }

    /// Attaches the producer endpoint.
    ///
    /// # Errors
    /// [`OpenError::AlreadyAttached`] while another live producer holds it;
    /// [`OpenError::Corrupted`] if the recorded positions are impossible.
    pub fn producer(&self) -> Result<Producer<T>, OpenError> {
        let ctl = control(&self.segment);
        let me = claim(&ctl.endpoints.0.producer)?;
        let slots = self.slots();
        let ring = ProducerRing::attach::<T, _>(ctl, &slots, self.capacity() as u64)
            .map_err(|_| detach_after_failure(&ctl.endpoints.0.producer, me))?;
        Ok(Producer {
            segment: Arc::clone(&self.segment),
            ring,
            slots,
            me,
            peer: PeerWatch::default(),
            fences: Fences::for_process(),
            wait: self.wait,
            poisoned: false,
            _type: PhantomData,
        })
    }

    /// Attaches the consumer endpoint.
    ///
    /// # Errors
    /// As [`producer`](Self::producer).
    pub fn consumer(&self) -> Result<Consumer<T>, OpenError> {
        let ctl = control(&self.segment);
        let me = claim(&ctl.endpoints.0.consumer)?;
        let ring = ConsumerRing::attach(ctl, self.capacity() as u64)
            .map_err(|_| detach_after_failure(&ctl.endpoints.0.consumer, me))?;
        Ok(Consumer {
            segment: Arc::clone(&self.segment),
            ring,
            slots: self.slots(),
            me,
            peer: PeerWatch::default(),
            fences: Fences::for_process(),
            wait: self.wait,
            poisoned: false,
            _type: PhantomData,
        })
    }

    fn slots(&self) -> SharedSlots {
        // SAFETY: the segment's geometry was validated against the mapping, which the Arc held
        // by every handle keeps alive as long as these slots are used.
        unsafe { SharedSlots::new(self.segment.slots_base(), self.segment.geometry()) }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.segment.geometry().capacity as usize
    }

    /// Messages in the ring now, as far as the shared positions tell (a snapshot).
    pub fn len(&self) -> usize {
        occupancy(control(&self.segment), self.segment.geometry().capacity)
    }

    /// Whether the ring looked empty just now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// The SPSC control block of a segment opened or created as [`SpscFlavor`].
#[inline(always)]
fn control(segment: &Segment) -> &SpscControl {
    // SAFETY: every Segment in this module was created or validated as SpscFlavor, whose
    // control block is SpscControl (atomics only).
    unsafe { segment.control::<SpscControl>() }
}

fn occupancy(ctl: &SpscControl, capacity: u64) -> usize {
    let head = ctl.head.0.load(Ordering::Relaxed);
    let tail = ctl.tail.0.load(Ordering::Relaxed);
    tail.wrapping_sub(head).min(capacity) as usize
}

/// The sending end of an SPSC channel.
pub struct Producer<T> {
    segment: Arc<Segment>,
    ring: ProducerRing,
    slots: SharedSlots,
    me: u64,
    peer: PeerWatch,
    fences: Fences,
    wait: WaitStrategy,
    poisoned: bool,
    _type: PhantomData<fn(T) -> T>,
}

// SAFETY: a Producer owns its cursor and reaches shared memory only through the Arc'd mapping;
// nothing in it is tied to the creating thread.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T: Pod> Producer<T> {
    #[inline(always)]
    fn ctl(&self) -> &SpscControl {
        control(&self.segment)
    }

    /// Sends `value` if there is room now. Never blocks and makes no system call unless the
    /// consumer sleeps.
    ///
    /// # Examples
    /// ```
    /// use shmchan::spsc::{Channel, Options};
    /// use shmchan::{Backing, TrySendError};
    ///
    /// let chan = Channel::<u32>::create(Backing::Anonymous, &Options::new().capacity(1))?;
    /// let mut tx = chan.producer()?;
    /// tx.try_send(1).unwrap();
    /// // Full: the message comes back.
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    /// # Ok::<(), shmchan::OpenError>(())
    /// ```
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the ring is full, [`TrySendError::Disconnected`] when the
    /// consumer detached or died, [`TrySendError::Corrupted`] once the ring failed a check.
    #[inline]
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        if self.poisoned {
            return Err(TrySendError::Corrupted(value));
        }
        let peer = self.ctl().endpoints.0.consumer.load(Ordering::Relaxed);
        if self.peer.known_gone(peer) {
            return Err(TrySendError::Disconnected(value));
        }
        match self.ring.push(control(&self.segment), &self.slots, &value) {
            Push::Done => {
                wait::wake_if_sleeping(&self.ctl().consumer_wait.0, self.fences);
                Ok(())
            }
            Push::Full => Err(self.full_outcome(value, peer, false)),
            Push::Corrupt => Err(TrySendError::Corrupted(self.poison(value))),
        }
    }

    #[cold]
    fn full_outcome<V>(&mut self, value: V, peer: u64, force: bool) -> TrySendError<V> {
        if self.peer.is_gone(peer, force) {
            TrySendError::Disconnected(value)
        } else {
            TrySendError::Full(value)
        }
    }

    #[cold]
    fn poison<V>(&mut self, value: V) -> V {
        self.poisoned = true;
        self.ctl().endpoints.0.poisoned.store(1, Ordering::Relaxed);
        wait::wake_unconditionally(&self.ctl().consumer_wait.0);
        value
    }

    /// Sends `value`, waiting while the ring is full. Until a consumer first attaches, the
    /// ring fills and then `send` waits for one: use [`send_timeout`](Self::send_timeout) to
    /// bound that.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] when the consumer detached or died; [`SendError::Corrupted`].
    pub fn send(&mut self, value: T) -> Result<(), SendError<T>> {
        match first_try_send(self.try_send(value))? {
            None => Ok(()),
            Some(value) => self.send_until(value, None).map_err(untimed_send),
        }
    }

    /// Sends `value`, waiting at most `timeout` while the ring is full.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] when the time ran out, and as [`send`](Self::send).
    pub fn send_timeout(&mut self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, Some(Instant::now() + timeout))
    }

    #[inline(never)]
    fn send_until(
        &mut self,
        value: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        let segment = Arc::clone(&self.segment);
        let (wait, fences) = (self.wait, self.fences);
        let mut op = SendOne { producer: self, value };
        match wait::block(&mut op, &control(&segment).producer_wait.0, wait, fences, deadline) {
            Some(result) => result,
            None => Err(SendTimeoutError::Timeout(value)),
        }
    }

    /// Sends as many of `values` as fit now, in order; returns how many were sent.
    ///
    /// # Errors
    /// [`TrySendError::Full`] if none fit (and `values` was not empty), otherwise as
    /// [`try_send`](Self::try_send).
    pub fn try_send_slice(&mut self, values: &[T]) -> Result<usize, TrySendError<()>> {
        if self.poisoned {
            return Err(TrySendError::Corrupted(()));
        }
        let peer = self.ctl().endpoints.0.consumer.load(Ordering::Relaxed);
        if self.peer.known_gone(peer) {
            return Err(TrySendError::Disconnected(()));
        }
        match self.ring.push_slice(control(&self.segment), &self.slots, values) {
            Ok(0) if !values.is_empty() => Err(self.full_outcome((), peer, false)),
            Ok(n) => {
                if n > 0 {
                    wait::wake_if_sleeping(&self.ctl().consumer_wait.0, self.fences);
                }
                Ok(n)
            }
            Err(_) => {
                self.poison(());
                Err(TrySendError::Corrupted(()))
            }
        }
    }

    /// Sends all of `values` in order, waiting for room as needed.
    ///
    /// # Errors
    /// As [`send`](Self::send); the error carries how many messages were sent before it.
    pub fn send_slice(&mut self, values: &[T]) -> Result<(), SendError<usize>> {
        let mut sent = 0;
        while sent < values.len() {
            let segment = Arc::clone(&self.segment);
            let (wait, fences) = (self.wait, self.fences);
            let mut op = SendSlice { producer: self, values: &values[sent..] };
            match wait::block(&mut op, &control(&segment).producer_wait.0, wait, fences, None) {
                Some(Ok(n)) => sent += n,
                Some(Err(TrySendError::Corrupted(()))) => return Err(SendError::Corrupted(sent)),
                Some(Err(_)) | None => return Err(SendError::Disconnected(sent)),
            }
        }
        Ok(())
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
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

    /// Writes the segment back to its file (`msync`); a no-op for memory-only backings.
    ///
    /// # Errors
    /// The error of `msync(2)`.
    pub fn flush(&self) -> std::io::Result<()> {
        self.segment.flush()
    }

    /// The free-running position of the next message (diagnostics).
    pub fn position(&self) -> u64 {
        self.ring.position()
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        let ctl = control(&self.segment);
        detach(&ctl.endpoints.0.producer, self.me);
        wait::wake_unconditionally(&ctl.consumer_wait.0);
    }
}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("position", &self.ring.position()).finish_non_exhaustive()
    }
}

struct SendOne<'a, T> {
    producer: &'a mut Producer<T>,
    value: T,
}

impl<T: Pod> Attempt for SendOne<'_, T> {
    type Output = Result<(), SendTimeoutError<T>>;

    fn attempt(&mut self) -> Option<Self::Output> {
        match self.producer.try_send(self.value) {
            Ok(()) => Some(Ok(())),
            Err(TrySendError::Full(_)) => None,
            Err(TrySendError::Disconnected(v)) => Some(Err(SendTimeoutError::Disconnected(v))),
            Err(TrySendError::Corrupted(v)) => Some(Err(SendTimeoutError::Corrupted(v))),
        }
    }

    fn check_peer(&mut self) {
        let p = &mut *self.producer;
        let peer = p.ctl().endpoints.0.consumer.load(Ordering::Acquire);
        p.peer.is_gone(peer, true);
    }
}

struct SendSlice<'a, 'v, T> {
    producer: &'a mut Producer<T>,
    values: &'v [T],
}

impl<T: Pod> Attempt for SendSlice<'_, '_, T> {
    type Output = Result<usize, TrySendError<()>>;

    fn attempt(&mut self) -> Option<Self::Output> {
        match self.producer.try_send_slice(self.values) {
            Err(TrySendError::Full(())) => None,
            other => Some(other),
        }
    }

    fn check_peer(&mut self) {
        let p = &mut *self.producer;
        let peer = p.ctl().endpoints.0.consumer.load(Ordering::Acquire);
        p.peer.is_gone(peer, true);
    }
}

/// The receiving end of an SPSC channel.
pub struct Consumer<T> {
    segment: Arc<Segment>,
    ring: ConsumerRing,
    slots: SharedSlots,
    me: u64,
    peer: PeerWatch,
    fences: Fences,
    wait: WaitStrategy,
    poisoned: bool,
    _type: PhantomData<fn(T) -> T>,
}

// SAFETY: as for Producer.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T: Pod> Consumer<T> {
    #[inline(always)]
    fn ctl(&self) -> &SpscControl {
        control(&self.segment)
    }

    /// Receives a message if one is ready. Never blocks and makes no system call unless the
    /// producer sleeps on a full ring.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when nothing is ready, [`TryRecvError::Disconnected`] when the
    /// producer is gone and the ring is drained, [`TryRecvError::Corrupted`] once the ring failed
    /// a check.
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if self.poisoned {
            return Err(TryRecvError::Corrupted);
        }
        match self.ring.pop(&self.slots) {
            Pop::Item(value) => {
                self.release();
                Ok(value)
            }
            Pop::Empty => self.empty_outcome(false),
            Pop::Corrupt => Err(self.poison()),
        }
    }

    #[inline(always)]
    fn release(&self) {
        self.ring.release(self.ctl());
        wait::wake_if_sleeping(&self.ctl().producer_wait.0, self.fences);
    }

    /// The ring looked empty: decide between Empty and Disconnected. A producer publishes before
    /// it detaches, so once its word reads as gone one more look at the ring is conclusive.
    #[cold]
    fn empty_outcome(&mut self, force: bool) -> Result<T, TryRecvError> {
        if self.ctl().endpoints.0.poisoned.load(Ordering::Relaxed) != 0 {
            return Err(self.poison());
        }
        // SYNC: Acquire pairs with the producer's Release in `detach`, after its last publish.
        let peer = self.ctl().endpoints.0.producer.load(Ordering::Acquire);
        if !self.peer.is_gone(peer, force) {
            return Err(TryRecvError::Empty);
        }
        match self.ring.pop(&self.slots) {
            Pop::Item(value) => {
                self.release();
                Ok(value)
            }
            Pop::Empty => Err(TryRecvError::Disconnected),
            Pop::Corrupt => Err(self.poison()),
        }
    }

    #[cold]
    fn poison(&mut self) -> TryRecvError {
        self.poisoned = true;
        self.ctl().endpoints.0.poisoned.store(1, Ordering::Relaxed);
        wait::wake_unconditionally(&self.ctl().producer_wait.0);
        TryRecvError::Corrupted
    }

    /// Receives a message, waiting until one is ready.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] when the producer is gone and the ring is drained;
    /// [`RecvError::Corrupted`].
    pub fn recv(&mut self) -> Result<T, RecvError> {
        match first_try_recv(self.try_recv())? {
            Some(value) => Ok(value),
            None => self.recv_until(None).map_err(untimed_recv),
        }
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when the time ran out, and as [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    #[inline(never)]
    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let segment = Arc::clone(&self.segment);
        let (wait, fences) = (self.wait, self.fences);
        let mut op = RecvOne { consumer: self };
        wait::block(&mut op, &control(&segment).consumer_wait.0, wait, fences, deadline)
            .unwrap_or(Err(RecvTimeoutError::Timeout))
    }

    /// Receives up to `buf.len()` ready messages into `buf`, releasing their slots at once;
    /// returns how many.
    ///
    /// # Examples
    /// ```
    /// use shmchan::spsc::{Channel, Options};
    /// use shmchan::{Backing, TryRecvError};
    ///
    /// let chan = Channel::<u16>::create(Backing::Anonymous, &Options::new().capacity(64))?;
    /// let (mut tx, mut rx) = (chan.producer()?, chan.consumer()?);
    /// tx.send_slice(&[1, 2, 3]).unwrap();
    /// let mut buf = [0u16; 8];
    /// assert_eq!(rx.try_recv_into(&mut buf), Ok(3));
    /// assert_eq!(&buf[..3], &[1, 2, 3]);
    /// drop(tx);
    /// assert_eq!(rx.try_recv_into(&mut buf), Err(TryRecvError::Disconnected));
    /// # Ok::<(), shmchan::OpenError>(())
    /// ```
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv) when no message is ready (and `buf` is not empty).
    pub fn try_recv_into(&mut self, buf: &mut [T]) -> Result<usize, TryRecvError> {
        if self.poisoned {
            return Err(TryRecvError::Corrupted);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let (n, corrupt) = self.ring.pop_many(control(&self.segment), &self.slots, buf);
        if corrupt {
            if n > 0 {
                self.release();
            }
            return Err(self.poison());
        }
        if n > 0 {
            self.release();
            return Ok(n);
        }
        self.empty_outcome(false).map(|value| {
            buf[0] = value;
            1
        })
    }

    /// Receives at least one message into `buf` (waiting for it), and as many more as are ready.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_into(&mut self, buf: &mut [T]) -> Result<usize, RecvError> {
        self.recv_into_until(buf, None).map_err(untimed_recv)
    }

    /// As [`recv_into`](Self::recv_into), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_into_timeout(
        &mut self,
        buf: &mut [T],
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        self.recv_into_until(buf, Some(Instant::now() + timeout))
    }

    fn recv_into_until(
        &mut self,
        buf: &mut [T],
        deadline: Option<Instant>,
    ) -> Result<usize, RecvTimeoutError> {
        let segment = Arc::clone(&self.segment);
        let (wait, fences) = (self.wait, self.fences);
        let mut op = RecvMany { consumer: self, buf };
        wait::block(&mut op, &control(&segment).consumer_wait.0, wait, fences, deadline)
            .unwrap_or(Err(RecvTimeoutError::Timeout))
    }

    /// An iterator over the messages ready now; it never blocks and ends at the first
    /// empty, disconnected or corrupted state.
    pub fn try_iter(&mut self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.try_recv().ok())
    }

    /// A blocking iterator that ends when the producer is gone and the ring is drained.
    pub fn iter(&mut self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
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

    /// The free-running position of the next message to receive (diagnostics).
    pub fn position(&self) -> u64 {
        self.ring.position()
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        let ctl = control(&self.segment);
        detach(&ctl.endpoints.0.consumer, self.me);
        wait::wake_unconditionally(&ctl.producer_wait.0);
    }
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("position", &self.ring.position()).finish_non_exhaustive()
    }
}

struct RecvOne<'a, T> {
    consumer: &'a mut Consumer<T>,
}

impl<T: Pod> Attempt for RecvOne<'_, T> {
    type Output = Result<T, RecvTimeoutError>;

    fn attempt(&mut self) -> Option<Self::Output> {
        match self.consumer.try_recv() {
            Ok(value) => Some(Ok(value)),
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

struct RecvMany<'a, 'b, T> {
    consumer: &'a mut Consumer<T>,
    buf: &'b mut [T],
}

impl<T: Pod> Attempt for RecvMany<'_, '_, T> {
    type Output = Result<usize, RecvTimeoutError>;

    fn attempt(&mut self) -> Option<Self::Output> {
        match self.consumer.try_recv_into(self.buf) {
            Ok(n) => Some(Ok(n)),
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
