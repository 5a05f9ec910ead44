//! shmchan MPMC rows: the typed MPMC channel between processes.
//!
//! - Latency at every size of the plan, spinning and sleeping (futex): a ping-pong over two
//!   channels of `[u64; W]`, one sender and one receiver on each, the peer process echoing.
//! - Throughput at every size: one sender process to one receiver (this process), spinning.
//! - Scaling at 8 B: P sender and C receiver processes over one segment (1P1C, 2P2C, 4P4C).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytemuck::Pod;
use shmchan::mpmc;
use shmchan::spsc;
use shmchan::{Backing, RecvError, RecvTimeoutError, TryRecvError, TrySendError, WaitStrategy};

use super::harness::{
    PEER_LIMIT, Peer, RAW_LEN, RawShm, ShmName, futex_wait, futex_wake_all, monotonic_ns,
};
use super::spsc_rows::{MAX_CAPACITY, capacity_for, message};
use super::{Ctx, Latency, Plan, Rates, Record, Result, Step, size_name};

/// Calls `$f::<[generics,] W>(args)` with the word count `W` of a message of `$bytes` bytes
/// (the dispatch of `spsc_rows`, with optional leading generic arguments).
macro_rules! by_words {
    ($bytes:expr, $f:ident $(::<$($g:ty),+>)? ($($arg:expr),*)) => {
        match $bytes {
            8 => $f::<$($($g,)+)? 1>($($arg),*),
            64 => $f::<$($($g,)+)? 8>($($arg),*),
            1024 => $f::<$($($g,)+)? 128>($($arg),*),
            4096 => $f::<$($($g,)+)? 512>($($arg),*),
            65536 => $f::<$($($g,)+)? 8192>($($arg),*),
            other => Err(format!("no message type of {other} bytes").into()),
        }
    };
}
pub(crate) use by_words;

/// The wait strategies the latency rows compare, with the name their rows' `wait` field and
/// their peers' parameter carry.
pub(crate) const LATENCY_WAITS: [(WaitStrategy, &str); 2] =
    [(WaitStrategy::Spin, "spin"), (WaitStrategy::Sleep, "sleep")];

/// The wait strategies of the scaling rows (P senders and C receivers), with their families:
/// sleeping on the futex whenever a side waits, and the default ([`WaitStrategy::Adaptive`]:
/// spin 50 µs, then sleep, unless the endpoints outnumber the CPUs).
pub(crate) const SCALING_WAITS: [(WaitStrategy, &str, &str); 2] = [
    (WaitStrategy::Sleep, "sleep", "shmchan_mpmc_sleep"),
    (WaitStrategy::Adaptive, "default", "shmchan_mpmc"),
];

pub(crate) fn parse_wait(name: &str) -> Result<WaitStrategy> {
    if let Some((wait, ..)) = SCALING_WAITS.iter().find(|(_, n, _)| *n == name) {
        return Ok(*wait);
    }
    LATENCY_WAITS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(w, _)| *w)
        .ok_or_else(|| format!("unknown wait strategy {name}").into())
}

pub(crate) fn steps(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for ((wait, wait_name), transport) in
        LATENCY_WAITS.into_iter().zip(["shmchan_mpmc_spin", "shmchan_mpmc_futex"])
    {
        for size in plan.sizes.iter().copied() {
            let name = format!("latency/{transport}/{}", size_name(size));
            steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
                let samples = ctx.plan.latency_samples(wait == WaitStrategy::Spin);
                let budget = ctx.plan.latency_budget;
                let s = by_words!(size, mpmc_latency(wait, wait_name, samples, budget, ctx.there))?;
                ctx.emit(
                    Record::latency(&name, &s)
                        .of("latency", transport, size)
                        .text("wait", wait_name)
                        .num("capacity", capacity_for(size) as f64),
                );
                Ok(())
            }));
        }
    }
    for ((wait, wait_name), transport) in
        LATENCY_WAITS.into_iter().zip(["shmchan_mpmc", "shmchan_mpmc_futex"])
    {
        for size in plan.sizes.iter().copied() {
            let name = format!("throughput/{transport}/{}", size_name(size));
            steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
                let t =
                    by_words!(size, mpmc_throughput_1p1c(&ctx.plan, wait, wait_name, ctx.there))?;
                ctx.emit(
                    Record::throughput(&name, size, &t)
                        .of("throughput", transport, size)
                        .text("wait", wait_name)
                        .num("capacity", capacity_for(size) as f64),
                );
                Ok(())
            }));
        }
    }
    for (wait, wait_name, family) in SCALING_WAITS {
        let sleeping = wait == WaitStrategy::Sleep;
        steps.extend([(1, 1), (2, 2), (4, 4)].into_iter().map(|(senders, receivers)| {
            let transport = format!("{family}_{senders}p{receivers}c");
            let name = format!("throughput/{transport}/8B");
            Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
                let t = mpmc_throughput(&ctx.plan, senders, receivers, &ctx.cpus, wait_name)?;
                let fig = &mut ctx.fig;
                let slot = match (sleeping, senders) {
                    (true, 1) => &mut fig.mpmc_1p1c,
                    (true, 2) => &mut fig.mpmc_2p2c,
                    (true, _) => &mut fig.mpmc_4p4c,
                    (false, 1) => &mut fig.mpmc_default_1p1c,
                    (false, 2) => &mut fig.mpmc_default_2p2c,
                    (false, _) => &mut fig.mpmc_default_4p4c,
                };
                *slot = t.median;
                ctx.emit(
                    Record::throughput(&name, 8, &t)
                        .of("scaling", &transport, 8)
                        .text("wait", wait_name),
                );
                Ok(())
            })
        }));
    }
    steps
}

pub(crate) fn child(role: &str, names: &[&str], param: &str) -> Option<Result<()>> {
    if !matches!(role, "mpmc_sender" | "mpmc_receiver" | "mpmc_echo" | "mpmc_source") {
        return None;
    }
    let run = || -> Result<()> {
        let mut parts = param.split(',');
        let first: usize = parts.next().unwrap_or("").parse()?;
        let second = parts.next().unwrap_or("");
        match role {
            "mpmc_sender" => {
                let wait = parse_wait(parts.next().unwrap_or(""))?;
                mpmc_sender_child(names, first as u64, second.parse()?, wait)
            }
            "mpmc_receiver" => {
                let wait = parse_wait(parts.next().unwrap_or(""))?;
                mpmc_receiver_child(names, first, second.parse()?, wait)
            }
            // For the per-size roles the first parameter is the message's word count.
            "mpmc_echo" => by_words!(first * 8, mpmc_echo_child(names, parse_wait(second)?)),
            _ => by_words!(first * 8, mpmc_source_child(names, parse_wait(second)?)),
        }
    };
    Some(run())
}

/// Times `round_trip(seq)` for `seq` = 0, 1, 2...: a warm-up of a tenth of `samples` (or a
/// fifth of `budget`, whichever ends first), then `samples` more or until `budget` has passed
/// (the slow cases, large or sleeping, stop on the budget, the fast ones on the count). Each
/// sample is the time from the end of one round trip to the end of the next (one clock read
/// per round trip), in ns.
pub(crate) fn round_trips(
    samples: usize,
    budget: Duration,
    mut round_trip: impl FnMut(u64) -> Result<()>,
) -> Result<Vec<u64>> {
    let start = Instant::now();
    let warmup_end = start + budget / 5;
    let mut rtt = Vec::with_capacity(samples);
    let mut prev = start;
    let mut seq = 0;
    while seq < (samples / 10) as u64 && prev < warmup_end {
        round_trip(seq)?;
        prev = Instant::now();
        seq += 1;
    }
    let deadline = prev + budget;
    while rtt.len() < samples && prev < deadline {
        round_trip(seq)?;
        let now = Instant::now();
        rtt.push(now.duration_since(prev).as_nanos() as u64);
        prev = now;
        seq += 1;
    }
    Ok(rtt)
}

/// Messages of the uncounted warm-up repetition of a throughput row of `size`-byte messages:
/// an eighth of a counted one, so that a slow transport does not spend long on it.
pub(crate) fn warmup_messages(plan: &Plan, size: usize) -> usize {
    (plan.messages(size) / 8).max(MIN_REP_MESSAGES)
}

/// Messages of each counted repetition: `plan.messages(size)`, or fewer when the warm-up rate
/// (`warmup` messages in `elapsed`) says a repetition would outlast `plan.throughput_budget`.
pub(crate) fn counted_messages(
    plan: &Plan,
    size: usize,
    warmup: usize,
    elapsed: Duration,
) -> usize {
    let rate = warmup as f64 / elapsed.as_secs_f64().max(1e-9);
    let within_budget = (rate * plan.throughput_budget.as_secs_f64()) as usize;
    plan.messages(size).min(within_budget.max(MIN_REP_MESSAGES))
}

/// The fewest messages a throughput repetition moves, however slow the transport.
const MIN_REP_MESSAGES: usize = 1000;

/// Sends `value`: `try_send` first (no clock read when there is room, the common case), then
/// waiting at most [`PEER_LIMIT`] for room.
pub(crate) fn send_bounded<T: Pod>(tx: &mut mpmc::Sender<T>, value: T) -> Result<()> {
    match tx.try_send(value) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(value)) => {
            tx.send_timeout(value, PEER_LIMIT).map_err(|e| format!("send: {e}").into())
        }
        Err(e) => Err(format!("send: {e}").into()),
    }
}

/// Receives a message: `try_recv` first, then waiting at most [`PEER_LIMIT`] (which also
/// bounds the wait for a peer that never attached its sender). `None` once every sender is
/// gone and the ring is drained.
pub(crate) fn recv_bounded<T: Pod>(rx: &mut mpmc::Receiver<T>) -> Result<Option<T>> {
    let waited = match rx.try_recv() {
        Ok(v) => return Ok(Some(v)),
        Err(TryRecvError::Empty) => rx.recv_timeout(PEER_LIMIT),
        Err(TryRecvError::Disconnected) => return Ok(None),
        Err(e) => return Err(format!("recv: {e}").into()),
    };
    match waited {
        Ok(v) => Ok(Some(v)),
        Err(RecvTimeoutError::Disconnected) => Ok(None),
        Err(RecvTimeoutError::Timeout) => {
            Err(format!("recv: nothing from the peer in {PEER_LIMIT:?}").into())
        }
        Err(e) => Err(format!("recv: {e}").into()),
    }
}

/// One-way latency of the MPMC channel between two processes: this process sends `[u64; W]`
/// on one channel and receives the echo on another (one sender and one receiver attached to
/// each, the throughput rows' capacity), the peer echoing every message; round trips halved.
/// Both sides use `wait` for their blocking calls.
fn mpmc_latency<const W: usize>(
    wait: WaitStrategy,
    wait_name: &str,
    samples: usize,
    budget: Duration,
    cpu: Option<usize>,
) -> Result<Latency>
where
    [u64; W]: Pod,
{
    let (ping_name, pong_name) = (ShmName::new("mpmc-ping"), ShmName::new("mpmc-pong"));
    let opts =
        mpmc::Options::new().capacity(capacity_for(W * 8)).max_endpoints(1).wait_strategy(wait);
    let mut tx =
        mpmc::Channel::<[u64; W]>::create(Backing::posix(&ping_name.0), &opts)?.sender()?;
    let mut rx =
        mpmc::Channel::<[u64; W]>::create(Backing::posix(&pong_name.0), &opts)?.receiver()?;
    let param = format!("{W},{wait_name}");
    // Declared after the channels, so an error kills and reaps the child first.
    let peer = Peer::spawn("mpmc_echo", &[&ping_name.0, &pong_name.0], &param, cpu)?;
    let rtt = round_trips(samples, budget, |seq| {
        send_bounded(&mut tx, message::<W>(seq))?;
        let back = recv_bounded(&mut rx)?.ok_or("echo peer left early")?;
        if back[0] != seq {
            return Err(format!("echo returned {} for {seq}", back[0]).into());
        }
        Ok(())
    })?;
    // Detaching the only sender is the stop signal: the peer's receive reports Disconnected.
    drop(tx);
    peer.finish()?;
    Ok(Latency::from_round_trips(&rtt))
}

fn mpmc_echo_child<const W: usize>(names: &[&str], wait: WaitStrategy) -> Result<()>
where
    [u64; W]: Pod,
{
    let opts = mpmc::Options::new().wait_strategy(wait);
    let mut rx = mpmc::Channel::<[u64; W]>::open(Backing::posix(names[0]), &opts)?.receiver()?;
    let mut tx = mpmc::Channel::<[u64; W]>::open(Backing::posix(names[1]), &opts)?.sender()?;
    while let Some(m) = recv_bounded(&mut rx)? {
        send_bounded(&mut tx, m)?;
    }
    Ok(())
}

/// One sender process to one receiver (this process) over an MPMC channel of `[u64; W]`, the
/// SPSC throughput rows' capacity, both sides with `wait` (spinning, or sleeping on the futex
/// whenever the ring is empty or full), one message per call. The child sends
/// `n` messages whenever the parent asks (over a small SPSC `go` channel); the parent times
/// their arrival and checks every sequence number. One uncounted warm-up repetition, then
/// `plan.reps` (see [`counted_messages`]); the median is reported.
fn mpmc_throughput_1p1c<const W: usize>(
    plan: &Plan,
    wait: WaitStrategy,
    wait_name: &str,
    cpu: Option<usize>,
) -> Result<Rates>
where
    [u64; W]: Pod,
{
    let bytes = W * 8;
    let (data_name, go_name) = (ShmName::new("mpmc-data"), ShmName::new("mpmc-go"));
    let opts =
        mpmc::Options::new().capacity(capacity_for(bytes)).max_endpoints(1).wait_strategy(wait);
    let chan = mpmc::Channel::<[u64; W]>::create(Backing::posix(&data_name.0), &opts)?;
    let mut rx = chan.receiver()?;
    let mut go = spsc::Channel::<u64>::create(Backing::posix(&go_name.0), &spsc::Options::new())?
        .producer()?;
    let param = format!("{W},{wait_name}");
    let peer = Peer::spawn("mpmc_source", &[&data_name.0, &go_name.0], &param, cpu)?;

    let mut n = warmup_messages(plan, bytes);
    let mut rates = Vec::new();
    for rep in 0..=plan.reps {
        go.send(n as u64).map_err(|e| format!("go: {e}"))?;
        let t0 = Instant::now();
        for expected in 0..n as u64 {
            let m = recv_bounded(&mut rx)?.ok_or("source peer left early")?;
            if m[0] != expected {
                return Err(format!("got message {} for {expected}", m[0]).into());
            }
        }
        let elapsed = t0.elapsed();
        // The first repetition warms caches and the scheduler and sizes the others; it is
        // not counted.
        if rep == 0 {
            n = counted_messages(plan, bytes, n, elapsed);
        } else {
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
    }
    drop(go);
    peer.finish()?;
    if chan.lost_messages() != 0 {
        return Err(format!("mpmc: {} messages lost", chan.lost_messages()).into());
    }
    Ok(Rates::from(rates, n))
}

fn mpmc_source_child<const W: usize>(names: &[&str], wait: WaitStrategy) -> Result<()>
where
    [u64; W]: Pod,
{
    let opts = mpmc::Options::new().wait_strategy(wait);
    let mut tx = mpmc::Channel::<[u64; W]>::open(Backing::posix(names[0]), &opts)?.sender()?;
    let mut go =
        spsc::Channel::<u64>::open(Backing::posix(names[1]), &spsc::Options::new())?.consumer()?;
    // The parent's detach (or death, which also kills us) ends the loop.
    while let Ok(n) = go.recv() {
        for seq in 0..n {
            send_bounded(&mut tx, message::<W>(seq))?;
        }
    }
    Ok(())
}

/// Control block of one MPMC repetition (a [`RawShm`]): children count themselves in at
/// `READY`, wait on the `GO` futex word, and each receiver leaves its result in its own line.
pub(crate) const MP_READY: usize = 512;
pub(crate) const MP_GO: usize = 640;
pub(crate) const MP_DONE: usize = 768;
pub(crate) const MP_RESULTS: usize = 1024;
pub(crate) const MP_RESULT_STRIDE: usize = 128;
/// Receivers a control block has result lines for.
pub(crate) const MP_MAX_RECEIVERS: usize = (RAW_LEN - MP_RESULTS) / MP_RESULT_STRIDE;
/// A message is `sender << SENDER_SHIFT | seq`.
pub(crate) const SENDER_SHIFT: u32 = 48;
pub(crate) const SEQ_MASK: u64 = (1 << SENDER_SHIFT) - 1;
/// How long one repetition may take before it counts as hung.
pub(crate) const MP_REP_LIMIT: Duration = Duration::from_secs(60);

/// What one receiver (process or thread) saw.
#[derive(Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) count: u64,
    pub(crate) sum: u64,
    /// Sum of `mix(message)`: a loss and a duplicate that cancel in count and sum do not
    /// cancel here.
    pub(crate) mixed: u64,
    /// Messages out of order for their sender (or from a sender that does not exist).
    pub(crate) disorder: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, v: u64, next_seq: &mut [u64]) {
        let (sender, seq) = ((v >> SENDER_SHIFT) as usize, v & SEQ_MASK);
        match next_seq.get_mut(sender) {
            // Per sender, one receiver sees strictly increasing sequence numbers.
            Some(next) if seq >= *next => *next = seq + 1,
            _ => self.disorder += 1,
        }
        self.count += 1;
        self.sum = self.sum.wrapping_add(v);
        self.mixed = self.mixed.wrapping_add(mix(v));
    }

    pub(crate) fn merge(&mut self, other: &Tally) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
        self.mixed = self.mixed.wrapping_add(other.mixed);
        self.disorder += other.disorder;
    }

    /// What `senders` senders of `per_sender` messages each should add up to.
    pub(crate) fn expected(senders: usize, per_sender: u64) -> Self {
        let mut t = Tally::default();
        let mut next = vec![0; senders];
        for s in 0..senders as u64 {
            for seq in 0..per_sender {
                t.add(s << SENDER_SHIFT | seq, &mut next);
            }
        }
        t
    }

    /// Fails unless `self` is exactly `want`: nothing lost, nothing duplicated, order kept.
    pub(crate) fn check(&self, want: &Tally, what: &str) -> Result<()> {
        if self.disorder != 0 {
            return Err(format!("{what}: {} messages out of order", self.disorder).into());
        }
        if (self.count, self.sum, self.mixed) != (want.count, want.sum, want.mixed) {
            return Err(format!(
                "{what}: received {} messages (sum {:#x}, mix {:#x}), sent {} (sum {:#x}, mix \
                 {:#x})",
                self.count, self.sum, self.mixed, want.count, want.sum, want.mixed
            )
            .into());
        }
        Ok(())
    }
}

/// splitmix64's finaliser.
pub(crate) fn mix(v: u64) -> u64 {
    let mut z = v.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where sender `s` and receiver `r` run: roles interleaved over the CPUs, so that with two
/// CPUs each has as many senders as receivers (and 1P1C puts them on different CPUs).
pub(crate) fn mp_cpu(cpus: &[usize], receiver: bool, k: usize) -> Option<usize> {
    if cpus.is_empty() {
        return None;
    }
    Some(cpus[(k + usize::from(receiver)) % cpus.len()])
}

/// P sender and C receiver processes over one MPMC segment of `u64`, every side waiting with
/// the strategy named `wait_name` (one of [`SCALING_WAITS`]).
/// Each repetition has fresh processes and segments (the end of a repetition is the senders'
/// detach); the rate runs from the parent's start signal to the last message received (each
/// receiver notes when it first found the ring empty after a message, on CLOCK_MONOTONIC).
pub(crate) fn mpmc_throughput(
    plan: &Plan,
    senders: usize,
    receivers: usize,
    cpus: &[usize],
    wait_name: &str,
) -> Result<Rates> {
    assert!(receivers <= MP_MAX_RECEIVERS);
    let per_sender = (plan.mpmc_messages / senders) as u64;
    let want = Tally::expected(senders, per_sender);
    let mut rates = Vec::new();
    for rep in 0..=plan.mpmc_reps {
        let (chan_name, ctl_name) = (ShmName::new("mpmc"), ShmName::new("mpmc-ctl"));
        let opts = mpmc::Options::new()
            .capacity(MAX_CAPACITY)
            .max_endpoints(senders.max(receivers) as u64);
        let chan = mpmc::Channel::<u64>::create(Backing::posix(&chan_name.0), &opts)?;
        let ctl = RawShm::create(&ctl_name.0)?;
        let names = [chan_name.0.as_str(), ctl_name.0.as_str()];
        // Declared after the segments, so an error kills and reaps the children first.
        let mut peers = Vec::with_capacity(senders + receivers);
        for r in 0..receivers {
            let param = format!("{r},{senders},{wait_name}");
            peers.push(Peer::spawn("mpmc_receiver", &names, &param, mp_cpu(cpus, true, r))?);
        }
        for s in 0..senders {
            let param = format!("{s},{per_sender},{wait_name}");
            peers.push(Peer::spawn("mpmc_sender", &names, &param, mp_cpu(cpus, false, s))?);
        }
        let everyone = (senders + receivers) as u64;
        // SYNC: Acquire pairs with each child's AcqRel count-in (`mp_ready_and_wait`).
        let ready = || ctl.u64_at(MP_READY).load(Ordering::Acquire) == everyone;
        wait_for_peers(&peers, ready, || std::thread::sleep(Duration::from_micros(500)))?;
        let t0 = monotonic_ns();
        // SYNC: Release pairs with the children's Acquire load of the start word.
        ctl.u32_at(MP_GO).store(1, Ordering::Release);
        futex_wake_all(ctl.u32_at(MP_GO));
        wait_for_count_out(&peers, &ctl, receivers as u32)?;
        let mut total = Tally::default();
        let mut last = t0;
        for r in 0..receivers {
            let at = MP_RESULTS + r * MP_RESULT_STRIDE;
            // SYNC: Acquire, though the count-out above already ordered these after the
            // receiver's stores (its partner is the same AcqRel count-out).
            let word = |i: usize| ctl.u64_at(at + 8 * i).load(Ordering::Acquire);
            total.merge(&Tally { count: word(0), sum: word(1), mixed: word(2), disorder: word(3) });
            last = last.max(word(4));
        }
        for peer in peers {
            peer.finish()?;
        }
        total.check(&want, &format!("mpmc {senders}p{receivers}c"))?;
        if chan.lost_messages() != 0 {
            return Err(format!("mpmc: {} messages lost", chan.lost_messages()).into());
        }
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(want.count as f64 / ((last - t0) as f64 * 1e-9));
        }
    }
    Ok(Rates::from(rates, (per_sender * senders as u64) as usize))
}

/// Waits until `done()`, calling `pause()` between two looks; fails when a child failed or the
/// time ran out.
pub(crate) fn wait_for_peers(
    peers: &[Peer],
    mut done: impl FnMut() -> bool,
    mut pause: impl FnMut(),
) -> Result<()> {
    let deadline = Instant::now() + MP_REP_LIMIT;
    while !done() {
        for peer in peers {
            peer.check()?;
        }
        if Instant::now() >= deadline {
            return Err("mpmc children did not finish in time".into());
        }
        pause();
    }
    Ok(())
}

/// Sleeps on the count-out word until `receivers` receivers have counted out (a receiver wakes
/// it after counting out). The parent sleeps through the measurement instead of polling, so it
/// never takes a core from the children.
pub(crate) fn wait_for_count_out(peers: &[Peer], ctl: &RawShm, receivers: u32) -> Result<()> {
    let done = ctl.u32_at(MP_DONE);
    // SYNC: Acquire pairs with each receiver's AcqRel count-out, which follows the stores of
    // its result line: the parent's loads of them see them.
    let counted_out = || done.load(Ordering::Acquire) == receivers;
    // A count-out after this load makes the futex wait return at once.
    let sleep = || {
        let counted = done.load(Ordering::Relaxed);
        if counted != receivers {
            futex_wait(done, counted, Duration::from_millis(50));
        }
    };
    wait_for_peers(peers, counted_out, sleep)
}

/// Counts this child in and sleeps until the parent's start signal.
pub(crate) fn mp_ready_and_wait(ctl: &RawShm) -> Result<()> {
    // SYNC: AcqRel; the Release half pairs with the parent's Acquire load of the count.
    ctl.u64_at(MP_READY).fetch_add(1, Ordering::AcqRel);
    let go = ctl.u32_at(MP_GO);
    let deadline = Instant::now() + MP_REP_LIMIT;
    // SYNC: Acquire pairs with the parent's Release store of the start word.
    while go.load(Ordering::Acquire) == 0 {
        if Instant::now() >= deadline {
            return Err("no start signal".into());
        }
        futex_wait(go, 0, Duration::from_millis(100));
    }
    Ok(())
}

pub(crate) fn mpmc_sender_child(
    names: &[&str],
    id: u64,
    count: u64,
    wait: WaitStrategy,
) -> Result<()> {
    let opts = mpmc::Options::new().wait_strategy(wait);
    let chan = mpmc::Channel::<u64>::open(Backing::posix(names[0]), &opts)?;
    let mut tx = chan.sender()?;
    let ctl = RawShm::open(names[1])?;
    mp_ready_and_wait(&ctl)?;
    for seq in 0..count {
        // `send` tries without waiting first, and sets up a wait only when the ring is full.
        tx.send(id << SENDER_SHIFT | seq).map_err(|e| format!("send: {e}"))?;
    }
    // Dropping the sender detaches it; the last detach tells the receivers to finish.
    Ok(())
}

pub(crate) fn mpmc_receiver_child(
    names: &[&str],
    id: usize,
    senders: usize,
    wait: WaitStrategy,
) -> Result<()> {
    let opts = mpmc::Options::new().wait_strategy(wait);
    let chan = mpmc::Channel::<u64>::open(Backing::posix(names[0]), &opts)?;
    let mut rx = chan.receiver()?;
    let ctl = RawShm::open(names[1])?;
    if id >= MP_MAX_RECEIVERS {
        return Err(format!("receiver {id} has no result line").into());
    }
    mp_ready_and_wait(&ctl)?;
    let mut tally = Tally::default();
    let mut next_seq = vec![0u64; senders];
    let mut last = monotonic_ns();
    // Whether a message arrived since `last` was taken.
    let mut fresh = false;
    loop {
        let v = match rx.try_recv() {
            Ok(v) => v,
            Err(TryRecvError::Empty) => {
                // The clock is read only when the ring runs dry, not per message.
                if fresh {
                    last = monotonic_ns();
                    fresh = false;
                }
                match rx.recv() {
                    Ok(v) => v,
                    Err(RecvError::Disconnected) => break,
                    Err(e) => return Err(format!("recv: {e}").into()),
                }
            }
            Err(TryRecvError::Disconnected) => break,
            Err(e) => return Err(format!("recv: {e}").into()),
        };
        fresh = true;
        tally.add(v, &mut next_seq);
    }
    if fresh {
        last = monotonic_ns();
    }
    let at = MP_RESULTS + id * MP_RESULT_STRIDE;
    for (i, v) in
        [tally.count, tally.sum, tally.mixed, tally.disorder, last].into_iter().enumerate()
    {
        ctl.u64_at(at + 8 * i).store(v, Ordering::Relaxed);
    }
    // SYNC: AcqRel; the Release half publishes the result line above to the parent's Acquire
    // load of the count.
    let done = ctl.u32_at(MP_DONE);
    done.fetch_add(1, Ordering::AcqRel);
    futex_wake_all(done);
    Ok(())
}
