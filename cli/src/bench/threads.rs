//! Thread-only peers: the best in-process queues, between two pinned threads of this
//! process, as the bar a cross-process ring is held to.
//!
//! At every size of the plan, for `rtrb::RingBuffer`, `crossbeam_queue::ArrayQueue` and
//! `crossbeam_channel::bounded`, all carrying `[u64; W]`:
//! - latency: a ping-pong through two queues (one each way), the other thread echoing;
//! - throughput: one producer thread, one consumer thread, one message per call, every
//!   sequence number checked, the capacity of the shmchan SPSC throughput rows.
//!
//! rtrb and ArrayQueue have no blocking calls: both sides spin on the non-blocking push/pop
//! with `std::hint::spin_loop` (`wait: spin`). crossbeam-channel is used through its blocking
//! calls, as people use it (they spin briefly, then park the thread; `wait: blocking`).
//!
//! Beside them, two rows that feed ratios: rtrb at 8 B per message and chunked (diagnostic),
//! and ArrayQueue with two producers and two consumers.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::harness::{IdleLimit, PEER_LIMIT, pin_to};
use super::mpmc_rows::{
    SENDER_SHIFT, Tally, by_words, counted_messages, mp_cpu, round_trips, warmup_messages,
};
use super::spsc_rows::{BATCH, MAX_CAPACITY, capacity_for, message};
use super::{Ctx, Latency, Plan, Rates, Record, Result, Step, size_name};

pub(crate) fn steps(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for queue in
        [ThreadQueueKind::Rtrb, ThreadQueueKind::ArrayQueue, ThreadQueueKind::CrossbeamChannel]
    {
        let transport = queue.transport();
        for size in plan.sizes.iter().copied() {
            let name = format!("latency/{transport}/{}", size_name(size));
            steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
                let s = queue.latency(size, &ctx.plan, ctx.here, ctx.there)?;
                ctx.emit(
                    Record::latency(&name, &s)
                        .of("latency", transport, size)
                        .text("wait", queue.wait())
                        .num("capacity", capacity_for(size) as f64),
                );
                Ok(())
            }));
        }
        for size in plan.sizes.iter().copied() {
            let name = format!("throughput/{transport}/{}", size_name(size));
            steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
                let t = queue.throughput(size, &ctx.plan, ctx.here, ctx.there)?;
                ctx.emit(
                    Record::throughput(&name, size, &t)
                        .of("throughput", transport, size)
                        .text("wait", queue.wait())
                        .num("capacity", capacity_for(size) as f64),
                );
                Ok(())
            }));
        }
    }
    steps.extend([Step::new("throughput/rtrb_threads_diag/8B", |ctx: &mut Ctx<'_>| {
        let t = rtrb_threads(&ctx.plan, false, ctx.here, ctx.there);
        ctx.fig.rtrb_per_message = t.median;
        ctx.emit(
            Record::throughput("rtrb_threads/per_message/8B", 8, &t).text("kind", "diagnostic"),
        );
        let t = rtrb_threads(&ctx.plan, true, ctx.here, ctx.there);
        ctx.fig.rtrb_chunked = t.median;
        ctx.emit(Record::throughput("rtrb_threads/chunked/8B", 8, &t).text("kind", "diagnostic"));
        Ok(())
    })]);
    // ArrayQueue with 1+1 and 2+2 threads, beside the MPMC rows with as many processes.
    steps.extend([1, 2].map(|n| {
        let transport = format!("arrayqueue_threads_{n}p{n}c");
        let name = format!("throughput/{transport}/8B");
        Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
            let t = arrayqueue_threads(&ctx.plan, n, n, &ctx.cpus);
            match n {
                1 => ctx.fig.arrayqueue_1p1c = t.median,
                _ => ctx.fig.arrayqueue_2p2c = t.median,
            }
            ctx.emit(Record::throughput(&name, 8, &t).of("scaling", &transport, 8));
            Ok(())
        })
    }));
    steps
}

pub(crate) fn child(_role: &str, _names: &[&str], _param: &str) -> Option<Result<()>> {
    // Thread rows have no peer process.
    None
}

/// The queues of the per-size rows.
#[derive(Clone, Copy)]
enum ThreadQueueKind {
    Rtrb,
    ArrayQueue,
    CrossbeamChannel,
}

impl ThreadQueueKind {
    fn transport(self) -> &'static str {
        match self {
            ThreadQueueKind::Rtrb => "rtrb_threads",
            ThreadQueueKind::ArrayQueue => "arrayqueue_threads",
            ThreadQueueKind::CrossbeamChannel => "crossbeam_channel_threads",
        }
    }

    /// How the rows wait on this queue (the rows' `wait` field).
    fn wait(self) -> &'static str {
        match self {
            ThreadQueueKind::Rtrb | ThreadQueueKind::ArrayQueue => "spin",
            ThreadQueueKind::CrossbeamChannel => "blocking",
        }
    }

    fn latency(
        self,
        size: usize,
        plan: &Plan,
        here: Option<usize>,
        there: Option<usize>,
    ) -> Result<Latency> {
        let args = (plan.spin_samples, plan.latency_budget, here, there);
        match self {
            ThreadQueueKind::Rtrb => by_words!(size, queue_latency::<RtrbEnds>(args)),
            ThreadQueueKind::ArrayQueue => by_words!(size, queue_latency::<ArrayQueueEnds>(args)),
            ThreadQueueKind::CrossbeamChannel => {
                by_words!(size, queue_latency::<ChannelEnds>(args))
            }
        }
    }

    fn throughput(
        self,
        size: usize,
        plan: &Plan,
        here: Option<usize>,
        there: Option<usize>,
    ) -> Result<Rates> {
        match self {
            ThreadQueueKind::Rtrb => {
                by_words!(size, queue_throughput::<RtrbEnds>(plan, here, there))
            }
            ThreadQueueKind::ArrayQueue => {
                by_words!(size, queue_throughput::<ArrayQueueEnds>(plan, here, there))
            }
            ThreadQueueKind::CrossbeamChannel => {
                by_words!(size, queue_throughput::<ChannelEnds>(plan, here, there))
            }
        }
    }
}

/// What a thread of these rows reports: errors as text, which can cross threads.
type ThreadResult<T> = std::result::Result<T, String>;

/// A bounded queue between two threads, driven as the rows drive it: one thread owns the
/// sending end, one the receiving end. Every wait ends: on the value, when the other end is
/// dropped (which every exit of the other thread does, a panic included), or with an error
/// after [`PEER_LIMIT`].
trait ThreadQueue<T: Send> {
    type Tx: Send;
    type Rx: Send;

    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx);

    /// Sends `value`, waiting while the queue is full; fails once the receiving end is gone.
    fn push(tx: &mut Self::Tx, value: T) -> ThreadResult<()>;

    /// Receives, waiting while the queue is empty; `None` once the sending end is gone and
    /// the queue is drained.
    fn pop(rx: &mut Self::Rx) -> ThreadResult<Option<T>>;
}

/// `rtrb::RingBuffer`: spinning on `push`/`pop`.
struct RtrbEnds;

impl<T: Send> ThreadQueue<T> for RtrbEnds {
    type Tx = rtrb::Producer<T>;
    type Rx = rtrb::Consumer<T>;

    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(capacity)
    }

    fn push(tx: &mut Self::Tx, value: T) -> ThreadResult<()> {
        let Err(rtrb::PushError::Full(mut value)) = tx.push(value) else { return Ok(()) };
        let mut idle = IdleLimit::new();
        loop {
            // Waits for room before trying again, so a large value is not handed back and
            // forth on every turn.
            if !tx.is_full() {
                match tx.push(value) {
                    Ok(()) => return Ok(()),
                    Err(rtrb::PushError::Full(back)) => value = back,
                }
            }
            if idle.spin()? && tx.is_abandoned() {
                return Err("the consumer thread is gone".into());
            }
        }
    }

    fn pop(rx: &mut Self::Rx) -> ThreadResult<Option<T>> {
        let mut idle = IdleLimit::new();
        loop {
            if let Ok(v) = rx.pop() {
                return Ok(Some(v));
            }
            if idle.spin()? && rx.is_abandoned() {
                // SYNC: `is_abandoned` reads the Arc's count with no ordering promised; this
                // fence makes that read an Acquire one, pairing with the Release decrement of the
                // producer's drop, which follows its last push: the look below is conclusive.
                fence(Ordering::Acquire);
                return Ok(rx.pop().ok());
            }
        }
    }
}

/// `crossbeam_queue::ArrayQueue`, shared by the two ends, with flags saying that an end was
/// dropped (the queue has no disconnect of its own): spinning on `push`/`pop`.
struct ArrayQueueEnds;

struct SharedArrayQueue<T> {
    queue: crossbeam_queue::ArrayQueue<T>,
    tx_gone: AtomicBool,
    rx_gone: AtomicBool,
}

struct ArrayQueueTx<T>(Arc<SharedArrayQueue<T>>);
struct ArrayQueueRx<T>(Arc<SharedArrayQueue<T>>);

impl<T> Drop for ArrayQueueTx<T> {
    fn drop(&mut self) {
        // SYNC: Release pairs with the Acquire load in `pop`: our pushes are visible to a
        // consumer that sees the flag.
        self.0.tx_gone.store(true, Ordering::Release);
    }
}

impl<T> Drop for ArrayQueueRx<T> {
    fn drop(&mut self) {
        // Only read as "stop waiting" by `push`, which needs nothing else from us.
        self.0.rx_gone.store(true, Ordering::Relaxed);
    }
}

impl<T: Send> ThreadQueue<T> for ArrayQueueEnds {
    type Tx = ArrayQueueTx<T>;
    type Rx = ArrayQueueRx<T>;

    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx) {
        let shared = Arc::new(SharedArrayQueue {
            queue: crossbeam_queue::ArrayQueue::new(capacity),
            tx_gone: AtomicBool::new(false),
            rx_gone: AtomicBool::new(false),
        });
        (ArrayQueueTx(Arc::clone(&shared)), ArrayQueueRx(shared))
    }

    fn push(tx: &mut Self::Tx, value: T) -> ThreadResult<()> {
        let shared = &*tx.0;
        let Err(mut value) = shared.queue.push(value) else { return Ok(()) };
        let mut idle = IdleLimit::new();
        loop {
            // As for rtrb: wait for room before handing the value over again.
            if !shared.queue.is_full() {
                match shared.queue.push(value) {
                    Ok(()) => return Ok(()),
                    Err(back) => value = back,
                }
            }
            if idle.spin()? && shared.rx_gone.load(Ordering::Relaxed) {
                return Err("the consumer thread is gone".into());
            }
        }
    }

    fn pop(rx: &mut Self::Rx) -> ThreadResult<Option<T>> {
        let shared = &*rx.0;
        let mut idle = IdleLimit::new();
        loop {
            if let Some(v) = shared.queue.pop() {
                return Ok(Some(v));
            }
            // SYNC: Acquire pairs with the Release store in `ArrayQueueTx::drop`, after the
            // producer's last push: the look below is conclusive.
            if idle.spin()? && shared.tx_gone.load(Ordering::Acquire) {
                return Ok(shared.queue.pop());
            }
        }
    }
}

/// `crossbeam_channel::bounded` through its blocking calls: `try_send`/`try_recv` first (what
/// `send`/`recv` try first too), then `send_timeout`/`recv_timeout`, the same spin-then-park
/// wait as `send`/`recv` with a limit, whose only cost is a clock read once the queue was
/// found full or empty. Both also return as soon as the other end is dropped.
struct ChannelEnds;

impl<T: Send> ThreadQueue<T> for ChannelEnds {
    type Tx = crossbeam_channel::Sender<T>;
    type Rx = crossbeam_channel::Receiver<T>;

    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx) {
        crossbeam_channel::bounded(capacity)
    }

    fn push(tx: &mut Self::Tx, value: T) -> ThreadResult<()> {
        use crossbeam_channel::{SendTimeoutError, TrySendError};
        let value = match tx.try_send(value) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(value)) => value,
            Err(TrySendError::Disconnected(_)) => return Err("the consumer thread is gone".into()),
        };
        match tx.send_timeout(value, PEER_LIMIT) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => {
                Err(format!("the consumer thread took nothing for {PEER_LIMIT:?}"))
            }
            Err(SendTimeoutError::Disconnected(_)) => Err("the consumer thread is gone".into()),
        }
    }

    fn pop(rx: &mut Self::Rx) -> ThreadResult<Option<T>> {
        use crossbeam_channel::{RecvTimeoutError, TryRecvError};
        match rx.try_recv() {
            Ok(v) => return Ok(Some(v)),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => return Ok(None),
        }
        match rx.recv_timeout(PEER_LIMIT) {
            Ok(v) => Ok(Some(v)),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("the producer thread sent nothing for {PEER_LIMIT:?}"))
            }
            Err(RecvTimeoutError::Disconnected) => Ok(None),
        }
    }
}

/// Pins the calling thread to `cpu`, if there is one.
fn pin(cpu: Option<usize>) {
    if let Some(c) = cpu {
        pin_to(c);
    }
}

/// `ours`, unless it or the other thread's result failed; both errors when both did (the first
/// failure makes the other side fail too, and either may be the first).
fn both<T>(ours: Result<T>, theirs: ThreadResult<()>, who: &str) -> Result<T> {
    match (ours, theirs) {
        (Ok(v), Ok(())) => Ok(v),
        (Err(e), Ok(())) => Err(e),
        (Ok(_), Err(e)) => Err(format!("{who}: {e}").into()),
        (Err(e), Err(theirs)) => Err(format!("{e}; {who}: {theirs}").into()),
    }
}

/// One-way latency of queue `Q` between two threads: this thread (on `here`) sends `[u64; W]`
/// through one queue, a thread on `there` echoes it back through another (both of the
/// throughput rows' capacity); round trips halved, sampled as [`round_trips`] says.
fn queue_latency<Q, const W: usize>(
    (samples, budget, here, there): (usize, Duration, Option<usize>, Option<usize>),
) -> Result<Latency>
where
    [u64; W]: Pod,
    Q: ThreadQueue<[u64; W]>,
{
    let capacity = capacity_for(W * 8);
    let (mut ping_tx, mut ping_rx) = Q::with_capacity(capacity);
    let (mut pong_tx, mut pong_rx) = Q::with_capacity(capacity);
    let rtt = std::thread::scope(|s| -> Result<Vec<u64>> {
        let echo = s.spawn(move || -> ThreadResult<()> {
            pin(there);
            while let Some(m) = Q::pop(&mut ping_rx)? {
                Q::push(&mut pong_tx, m)?;
            }
            Ok(())
        });
        pin(here);
        let rtt = round_trips(samples, budget, |seq| {
            Q::push(&mut ping_tx, message::<W>(seq))?;
            let back = Q::pop(&mut pong_rx)?.ok_or("echo thread left early")?;
            if back[0] != seq {
                return Err(format!("echo returned {} for {seq}", back[0]).into());
            }
            Ok(())
        });
        // Dropping the ping sender is the stop signal, on the error path too (else the echo
        // thread, and the scope joining it, would wait for its time limit).
        drop(ping_tx);
        let echoed = echo.join().map_err(|_| "echo thread panicked")?;
        both(rtt, echoed, "echo thread")
    })?;
    Ok(Latency::from_round_trips(&rtt))
}

/// Throughput of queue `Q` between two threads: a producer on `there` pushes `n` messages of
/// `[u64; W]` one per call, this thread (on `here`) pops them one per call and checks each
/// sequence number; timed from the start barrier to the last pop. A fresh queue of the SPSC
/// rows' capacity per repetition; one uncounted warm-up repetition, then `plan.reps` (see
/// [`counted_messages`]).
fn queue_throughput<Q, const W: usize>(
    plan: &Plan,
    here: Option<usize>,
    there: Option<usize>,
) -> Result<Rates>
where
    [u64; W]: Pod,
    Q: ThreadQueue<[u64; W]>,
{
    let bytes = W * 8;
    let mut n = warmup_messages(plan, bytes) as u64;
    let mut rates = Vec::new();
    for rep in 0..=plan.reps {
        let (mut tx, mut rx) = Q::with_capacity(capacity_for(bytes));
        let barrier = Barrier::new(2);
        let elapsed = std::thread::scope(|s| -> Result<Duration> {
            let barrier = &barrier;
            let producer = s.spawn(move || -> ThreadResult<()> {
                pin(there);
                barrier.wait();
                for seq in 0..n {
                    Q::push(&mut tx, message::<W>(seq))?;
                }
                Ok(())
            });
            pin(here);
            barrier.wait();
            let t0 = Instant::now();
            let received = (0..n).try_for_each(|expected| -> Result<()> {
                let m = Q::pop(&mut rx)?.ok_or("producer thread left early")?;
                if m[0] != expected {
                    return Err(format!("got message {} for {expected}", m[0]).into());
                }
                Ok(())
            });
            let elapsed = t0.elapsed();
            // Dropping the receiver ends a producer still waiting for room (error path).
            drop(rx);
            let produced = producer.join().map_err(|_| "producer thread panicked")?;
            both(received.map(|()| elapsed), produced, "producer thread")
        })?;
        // The first repetition warms caches and the scheduler and sizes the others; it is
        // not counted.
        if rep == 0 {
            n = counted_messages(plan, bytes, n as usize, elapsed) as u64;
        } else {
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
    }
    Ok(Rates::from(rates, n as usize))
}

/// rtrb between two pinned threads of this process, 8-byte messages.
pub(crate) fn rtrb_threads(
    plan: &Plan,
    chunked: bool,
    here: Option<usize>,
    there: Option<usize>,
) -> Rates {
    let n = plan.messages(8) as u64;
    let mut rates = Vec::new();
    for rep in 0..=plan.reps {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(MAX_CAPACITY);
        let barrier = Barrier::new(2);
        let elapsed = std::thread::scope(|s| {
            let producer = s.spawn(|| {
                if let Some(c) = there {
                    pin_to(c);
                }
                barrier.wait();
                let mut sent = 0;
                while sent < n {
                    if chunked {
                        let k = (n - sent).min(BATCH as u64).min(tx.slots() as u64) as usize;
                        if k == 0 {
                            std::hint::spin_loop();
                            continue;
                        }
                        let chunk = tx.write_chunk_uninit(k).expect("slots() said there was room");
                        sent += chunk.fill_from_iter(sent..sent + k as u64) as u64;
                    } else if tx.push(sent).is_ok() {
                        sent += 1;
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
            if let Some(c) = here {
                pin_to(c);
            }
            barrier.wait();
            let t0 = Instant::now();
            let mut expected = 0;
            let mut buf = [0u64; BATCH];
            while expected < n {
                if chunked {
                    let k = rx.slots().min(BATCH);
                    if k == 0 {
                        std::hint::spin_loop();
                        continue;
                    }
                    let chunk = rx.read_chunk(k).expect("slots() said these were ready");
                    let (a, b) = chunk.as_slices();
                    buf[..a.len()].copy_from_slice(a);
                    buf[a.len()..k].copy_from_slice(b);
                    chunk.commit_all();
                    for &v in &buf[..k] {
                        assert_eq!(v, expected);
                        expected += 1;
                    }
                } else if let Ok(v) = rx.pop() {
                    assert_eq!(black_box(v), expected);
                    expected += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            let elapsed = t0.elapsed();
            producer.join().expect("producer thread");
            elapsed
        });
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
    }
    Rates::from(rates, n as usize)
}

/// `crossbeam_queue::ArrayQueue` of the MPMC rows' capacity, between producer and consumer
/// threads of this process pinned as the MPMC processes are, with the same message count,
/// checks and end mark. Full and empty are waited out with crossbeam's `Backoff` (spin, then
/// yield), the usual way with this queue, which has no blocking calls.
pub(crate) fn arrayqueue_threads(
    plan: &Plan,
    producers: usize,
    consumers: usize,
    cpus: &[usize],
) -> Rates {
    use crossbeam_queue::ArrayQueue;
    use crossbeam_utils::Backoff;

    let per_producer = (plan.mpmc_messages / producers) as u64;
    let want = Tally::expected(producers, per_producer);
    let mut rates = Vec::new();
    for rep in 0..=plan.mpmc_reps {
        let queue = ArrayQueue::<u64>::new(MAX_CAPACITY);
        let finished = AtomicUsize::new(0);
        let barrier = Barrier::new(producers + consumers + 1);
        let (t0, results) = std::thread::scope(|s| {
            for p in 0..producers {
                let (queue, finished, barrier) = (&queue, &finished, &barrier);
                s.spawn(move || {
                    if let Some(c) = mp_cpu(cpus, false, p) {
                        pin_to(c);
                    }
                    barrier.wait();
                    for seq in 0..per_producer {
                        let mut v = (p as u64) << SENDER_SHIFT | seq;
                        let backoff = Backoff::new();
                        while let Err(back) = queue.push(v) {
                            v = back;
                            backoff.snooze();
                        }
                    }
                    // SYNC: Release pairs with the consumers' Acquire load of `finished`: a
                    // consumer that counts us finished sees all our pushes.
                    finished.fetch_add(1, Ordering::Release);
                });
            }
            let handles: Vec<_> = (0..consumers)
                .map(|c| {
                    let (queue, finished, barrier) = (&queue, &finished, &barrier);
                    s.spawn(move || {
                        if let Some(cpu) = mp_cpu(cpus, true, c) {
                            pin_to(cpu);
                        }
                        let mut tally = Tally::default();
                        let mut next_seq = vec![0u64; producers];
                        barrier.wait();
                        let mut last = Instant::now();
                        let mut fresh = false;
                        let backoff = Backoff::new();
                        loop {
                            if let Some(v) = queue.pop() {
                                fresh = true;
                                tally.add(v, &mut next_seq);
                                backoff.reset();
                                continue;
                            }
                            if fresh {
                                last = Instant::now();
                                fresh = false;
                            }
                            // Every push happened before the count was raised: one more look
                            // after seeing it is conclusive.
                            // SYNC: Acquire pairs with the producers' Release increment.
                            if finished.load(Ordering::Acquire) == producers {
                                match queue.pop() {
                                    Some(v) => {
                                        fresh = true;
                                        tally.add(v, &mut next_seq);
                                        continue;
                                    }
                                    None => break,
                                }
                            }
                            backoff.snooze();
                        }
                        if fresh {
                            last = Instant::now();
                        }
                        (tally, last)
                    })
                })
                .collect();
            barrier.wait();
            let t0 = Instant::now();
            let results: Vec<_> =
                handles.into_iter().map(|h| h.join().expect("consumer thread")).collect();
            (t0, results)
        });
        let mut total = Tally::default();
        let mut last = t0;
        for (tally, at) in &results {
            total.merge(tally);
            last = last.max(*at);
        }
        if let Err(e) = total.check(&want, "arrayqueue") {
            panic!("{e}");
        }
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(want.count as f64 / last.duration_since(t0).as_secs_f64());
        }
    }
    Rates::from(rates, (per_producer * producers as u64) as usize)
}
