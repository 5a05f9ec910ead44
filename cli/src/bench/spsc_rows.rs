//! shmchan SPSC rows: ping-pong latency (every wait strategy) and throughput (per message
//! spinning, per message sleeping on the futex, and batched), between two processes over POSIX
//! shm.

use std::time::{Duration, Instant};

use bytemuck::Pod;
use shmchan::spsc::{Channel, Consumer, Options, Producer};
use shmchan::{Backing, RecvTimeoutError, TryRecvError, TrySendError, WaitStrategy};

use super::harness::{IdleLimit, PEER_LIMIT, Peer, ShmName};
use super::mpmc_rows::{counted_messages, round_trips, warmup_messages};
use super::{Ctx, Latency, Plan, Rates, Record, Result, Step, size_name};

/// Slots of the throughput rings are capped so that a ring of large messages stays in L2.
pub(crate) const RING_BYTES: usize = 256 * 1024;
pub(crate) const MAX_CAPACITY: usize = 4096;
/// Messages per batch call, at most a quarter of the ring.
pub(crate) const BATCH: usize = 256;

/// Calls `$f::<W>(args)` with the word count of a message of `$bytes` bytes.
macro_rules! by_size {
    ($bytes:expr, $f:ident($($arg:expr),*)) => {
        match $bytes {
            8 => $f::<1>($($arg),*),
            64 => $f::<8>($($arg),*),
            1024 => $f::<128>($($arg),*),
            4096 => $f::<512>($($arg),*),
            65536 => $f::<8192>($($arg),*),
            other => Err(format!("no message type of {other} bytes").into()),
        }
    };
}

/// The sizes of a row family: 8 B always (the ratios need it), then the plan's sizes.
pub(crate) fn with_8(plan: &Plan) -> Vec<usize> {
    let mut sizes = vec![8];
    sizes.extend(plan.sizes.iter().copied().filter(|&s| s != 8));
    sizes
}

pub(crate) fn steps(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    // Latency: spinning and sleeping (futex) at every size, the default strategy at 8 B.
    for (mode, transport) in
        [(Mode::Spin, "shmchan_spsc_spin"), (Mode::Sleep, "shmchan_spsc_futex")]
    {
        for size in with_8(plan) {
            let name = format!("latency/{transport}/{}", size_name(size));
            steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
                let samples = ctx.plan.latency_samples(mode != Mode::Sleep);
                let budget = ctx.plan.latency_budget;
                let s = by_size!(size, shmchan_latency(mode, samples, budget, ctx.there))?;
                if size == 8 {
                    match mode {
                        Mode::Spin => ctx.fig.spin_8_p50 = s.p50,
                        _ => ctx.fig.sleep_8_p50 = s.p50,
                    }
                }
                ctx.emit(
                    Record::latency(&name, &s)
                        .of("latency", transport, size)
                        .text("wait", mode.name()),
                );
                Ok(())
            }));
        }
    }
    for (mode, transport) in [
        (Mode::SpinThenSleep, "shmchan_spsc_spin_then_sleep"),
        // Diagnostic: the non-blocking calls in a spin loop, without the blocking wrapper.
        (Mode::TrySpin, "shmchan_spsc_try_spin"),
    ] {
        let name = format!("latency/{transport}/8B");
        steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
            let s = shmchan_latency::<1>(
                mode,
                ctx.plan.spin_samples,
                ctx.plan.latency_budget,
                ctx.there,
            )?;
            ctx.emit(
                Record::latency(&name, &s).text("kind", "diagnostic").text("wait", mode.name()),
            );
            Ok(())
        }));
    }
    // Throughput, per message at every size (8 B and 4 KiB always: the ratios need them),
    // sleeping on the futex at every size, and batched at 8 B.
    let mut sizes = with_8(plan);
    if !sizes.contains(&4096) {
        sizes.push(4096);
    }
    let per_message = sizes.iter().map(|&s| (Feed::PerMessage, s));
    let futex = with_8(plan).into_iter().map(|s| (Feed::Futex, s));
    for (feed, size) in per_message.chain(futex).chain([(Feed::Batched, 8)]) {
        let transport = feed.transport();
        let wait = if feed == Feed::Futex { "sleep" } else { "spin" };
        let name = format!("throughput/{transport}/{}", size_name(size));
        steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
            let t = by_size!(size, shmchan_throughput(&ctx.plan, feed, ctx.there))?;
            match (size, feed) {
                (8, Feed::PerMessage) => ctx.fig.per_message_8 = t.median,
                (8, Feed::Batched) => ctx.fig.batched_8 = t.median,
                (4096, Feed::PerMessage) => ctx.fig.bytes_4k_per_s = t.median * 4096.0,
                _ => {}
            }
            ctx.emit(
                Record::throughput(&name, size, &t)
                    .of("throughput", transport, size)
                    .text("wait", wait),
            );
            Ok(())
        }));
    }
    steps
}

pub(crate) fn child(role: &str, names: &[&str], param: &str) -> Option<Result<()>> {
    if role != "echo" && role != "source" {
        return None;
    }
    let run = || -> Result<()> {
        let mut parts = param.split(',');
        let words: usize = parts.next().unwrap_or("").parse()?;
        let what = parts.next().unwrap_or("");
        if role == "echo" {
            let mode = Mode::parse(what)?;
            by_size!(words * 8, echo_child(names, mode))
        } else {
            by_size!(words * 8, source_child(names, Feed::parse(what)?))
        }
    };
    Some(run())
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `send`/`recv` with `WaitStrategy::Spin`.
    Spin,
    /// `send`/`recv` with `WaitStrategy::Sleep`.
    Sleep,
    /// `send`/`recv` spinning 50 µs, then sleeping (the default's choice for two endpoints
    /// on two or more CPUs).
    SpinThenSleep,
    /// `try_send`/`try_recv` in a spin loop (diagnostic).
    TrySpin,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Spin => "spin",
            Mode::Sleep => "sleep",
            Mode::SpinThenSleep => "spin_then_sleep",
            Mode::TrySpin => "try_spin",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        [Mode::Spin, Mode::Sleep, Mode::SpinThenSleep, Mode::TrySpin]
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown mode {s}").into())
    }

    fn strategy(self) -> WaitStrategy {
        match self {
            Mode::Spin | Mode::TrySpin => WaitStrategy::Spin,
            Mode::Sleep => WaitStrategy::Sleep,
            Mode::SpinThenSleep => WaitStrategy::SpinThenSleep(Duration::from_micros(50)),
        }
    }
}

pub(crate) fn send<T: Pod>(tx: &mut Producer<T>, value: T, mode: Mode) -> Result<()> {
    if mode != Mode::TrySpin {
        return tx.send(value).map_err(|e| format!("send: {e}").into());
    }
    let mut value = value;
    loop {
        match tx.try_send(value) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(v)) => {
                value = v;
                std::hint::spin_loop();
            }
            Err(e) => return Err(format!("send: {e}").into()),
        }
    }
}

/// `None` once the peer is gone and the ring drained. Bounded: a peer silent for
/// [`PEER_LIMIT`] (dead before it attached, or hung) is an error, never a hang.
pub(crate) fn recv<T: Pod>(rx: &mut Consumer<T>, mode: Mode) -> Result<Option<T>> {
    if mode != Mode::TrySpin {
        return recv_bounded(rx);
    }
    let mut idle = IdleLimit::new();
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(Some(v)),
            Err(TryRecvError::Empty) => {
                idle.spin()?;
            }
            Err(TryRecvError::Disconnected) => return Ok(None),
            Err(e) => return Err(format!("recv: {e}").into()),
        }
    }
}

/// Receives with the handle's wait strategy: `try_recv` first (so the clock is read only when
/// the ring is found empty), then waiting at most [`PEER_LIMIT`]. `None` once the producer is
/// gone and the ring drained.
pub(crate) fn recv_bounded<T: Pod>(rx: &mut Consumer<T>) -> Result<Option<T>> {
    match rx.try_recv() {
        Ok(v) => return Ok(Some(v)),
        Err(TryRecvError::Empty) => {}
        Err(TryRecvError::Disconnected) => return Ok(None),
        Err(e) => return Err(format!("recv: {e}").into()),
    }
    match rx.recv_timeout(PEER_LIMIT) {
        Ok(v) => Ok(Some(v)),
        Err(RecvTimeoutError::Disconnected) => Ok(None),
        Err(RecvTimeoutError::Timeout) => {
            Err(format!("nothing from the peer for {PEER_LIMIT:?}").into())
        }
        Err(e) => Err(format!("recv: {e}").into()),
    }
}

/// Sends with the handle's wait strategy, waiting at most [`PEER_LIMIT`] for room; the first
/// try costs what `send` costs.
pub(crate) fn send_bounded<T: Pod>(tx: &mut Producer<T>, value: T) -> Result<()> {
    match tx.try_send(value) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(v)) => {
            tx.send_timeout(v, PEER_LIMIT).map_err(|e| format!("send: {e}").into())
        }
        Err(e) => Err(format!("send: {e}").into()),
    }
}

pub(crate) fn message<const W: usize>(seq: u64) -> [u64; W] {
    let mut m = [0u64; W];
    m[0] = seq;
    m
}

/// Ping-pong over two channels (one each way); the child echoes every message.
pub(crate) fn shmchan_latency<const W: usize>(
    mode: Mode,
    samples: usize,
    budget: Duration,
    cpu: Option<usize>,
) -> Result<Latency>
where
    [u64; W]: Pod,
{
    let (ping_name, pong_name) = (ShmName::new("ping"), ShmName::new("pong"));
    // The throughput rows' ring size, so a 64 KiB ring is 4 MiB, not 64 MiB.
    let opts = Options::new().capacity(capacity_for(W * 8)).wait_strategy(mode.strategy());
    let mut tx = Channel::<[u64; W]>::create(Backing::posix(&ping_name.0), &opts)?.producer()?;
    let mut rx = Channel::<[u64; W]>::create(Backing::posix(&pong_name.0), &opts)?.consumer()?;
    let param = format!("{W},{}", mode.name());
    let peer = Peer::spawn("echo", &[&ping_name.0, &pong_name.0], &param, cpu)?;

    let rtt = round_trips(samples, budget, |i| {
        send(&mut tx, message::<W>(i), mode)?;
        let back = recv(&mut rx, mode)?.ok_or("echo peer left early")?;
        if back[0] != i {
            return Err(format!("echo returned {} for {i}", back[0]).into());
        }
        Ok(())
    })?;
    // Detaching is the stop signal: the child's recv reports Disconnected.
    drop(tx);
    peer.finish()?;
    drop(rx);
    Ok(Latency::from_round_trips(&rtt))
}

pub(crate) fn echo_child<const W: usize>(names: &[&str], mode: Mode) -> Result<()>
where
    [u64; W]: Pod,
{
    let opts = Options::new().wait_strategy(mode.strategy());
    let mut rx = Channel::<[u64; W]>::open(Backing::posix(names[0]), &opts)?.consumer()?;
    let mut tx = Channel::<[u64; W]>::open(Backing::posix(names[1]), &opts)?.producer()?;
    while let Some(m) = recv(&mut rx, mode)? {
        send(&mut tx, m, mode)?;
    }
    Ok(())
}

pub(crate) fn capacity_for(bytes: usize) -> usize {
    (RING_BYTES / bytes).clamp(64, MAX_CAPACITY).next_power_of_two()
}

pub(crate) fn batch_for(capacity: usize) -> usize {
    BATCH.min(capacity / 4)
}

/// The child produces `n` messages whenever the parent asks (over a small `go` channel); the
/// parent times their arrival.
/// How the throughput rows move messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    /// `try_send`/`try_recv` of one message at a time, spinning (`WaitStrategy::Spin`).
    PerMessage,
    /// `try_send_slice`/`try_recv_into` of up to a quarter of the ring, spinning.
    Batched,
    /// Blocking `send`/`recv` of one message at a time with `WaitStrategy::Sleep`: every
    /// wait sleeps on the futex, so this is the rate when neither side may burn a core.
    Futex,
}

impl Feed {
    const ALL: [Feed; 3] = [Feed::PerMessage, Feed::Batched, Feed::Futex];

    fn name(self) -> &'static str {
        match self {
            Feed::PerMessage => "per_message",
            Feed::Batched => "batched",
            Feed::Futex => "futex",
        }
    }

    fn transport(self) -> &'static str {
        match self {
            Feed::PerMessage => "shmchan_spsc",
            Feed::Batched => "shmchan_spsc_batched",
            Feed::Futex => "shmchan_spsc_futex",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Feed::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown feed {s}").into())
    }

    fn strategy(self) -> WaitStrategy {
        if self == Feed::Futex { WaitStrategy::Sleep } else { WaitStrategy::Spin }
    }
}

pub(crate) fn shmchan_throughput<const W: usize>(
    plan: &Plan,
    feed: Feed,
    cpu: Option<usize>,
) -> Result<Rates>
where
    [u64; W]: Pod,
{
    let bytes = W * 8;
    let capacity = capacity_for(bytes);
    let (data_name, go_name) = (ShmName::new("data"), ShmName::new("go"));
    let opts = Options::new().capacity(capacity).wait_strategy(feed.strategy());
    let mut rx = Channel::<[u64; W]>::create(Backing::posix(&data_name.0), &opts)?.consumer()?;
    let mut go = Channel::<u64>::create(Backing::posix(&go_name.0), &Options::new())?.producer()?;
    let param = format!("{W},{}", feed.name());
    let peer = Peer::spawn("source", &[&data_name.0, &go_name.0], &param, cpu)?;

    let mut buf = vec![[0u64; W]; batch_for(capacity)];
    let mut rates = Vec::new();
    // An uncounted warm-up repetition (caches, scheduler) also sizes the counted ones to the
    // plan's time budget.
    let warmup = warmup_messages(plan, bytes);
    let t0 = Instant::now();
    receive_burst(&mut rx, &mut go, &mut buf, warmup, feed)?;
    let n = counted_messages(plan, bytes, warmup, t0.elapsed());
    for _ in 0..plan.reps {
        let t0 = Instant::now();
        receive_burst(&mut rx, &mut go, &mut buf, n, feed)?;
        rates.push(n as f64 / t0.elapsed().as_secs_f64());
    }
    drop(go);
    peer.finish()?;
    Ok(Rates::from(rates, n))
}

/// Asks the source for `n` messages and receives them, checking every sequence number.
fn receive_burst<const W: usize>(
    rx: &mut Consumer<[u64; W]>,
    go: &mut Producer<u64>,
    buf: &mut [[u64; W]],
    n: usize,
    feed: Feed,
) -> Result<()>
where
    [u64; W]: Pod,
{
    go.send(n as u64).map_err(|e| format!("go: {e}"))?;
    if feed == Feed::Futex {
        for expected in 0..n as u64 {
            let m = recv(rx, Mode::Sleep)?.ok_or("the source left early")?;
            if m[0] != expected {
                return Err(format!("got message {} for {expected}", m[0]).into());
            }
        }
        return Ok(());
    }
    let batched = feed == Feed::Batched;
    let mut expected = 0u64;
    let mut idle = IdleLimit::new();
    while expected < n as u64 {
        let got = if batched {
            rx.try_recv_into(buf)
        } else {
            rx.try_recv().map(|m| {
                buf[0] = m;
                1
            })
        };
        match got {
            Ok(k) => {
                idle.progress();
                for m in &buf[..k] {
                    if m[0] != expected {
                        return Err(format!("got message {} for {expected}", m[0]).into());
                    }
                    expected += 1;
                }
            }
            Err(TryRecvError::Empty) => {
                idle.spin()?;
            }
            Err(e) => return Err(format!("recv: {e}").into()),
        }
    }
    Ok(())
}

pub(crate) fn source_child<const W: usize>(names: &[&str], feed: Feed) -> Result<()>
where
    [u64; W]: Pod,
{
    let batched = feed == Feed::Batched;
    let each = if feed == Feed::Futex { Mode::Sleep } else { Mode::TrySpin };
    let opts = Options::new().wait_strategy(feed.strategy());
    let mut tx = Channel::<[u64; W]>::open(Backing::posix(names[0]), &opts)?.producer()?;
    let mut go = Channel::<u64>::open(Backing::posix(names[1]), &Options::new())?.consumer()?;
    let mut batch = vec![[0u64; W]; batch_for(tx.capacity())];
    while let Ok(n) = go.recv() {
        let mut seq = 0;
        while seq < n {
            if batched {
                let k = (n - seq).min(batch.len() as u64) as usize;
                for (j, m) in batch[..k].iter_mut().enumerate() {
                    m[0] = seq + j as u64;
                }
                let mut done = 0;
                while done < k {
                    match tx.try_send_slice(&batch[done..k]) {
                        Ok(j) => done += j,
                        Err(TrySendError::Full(())) => std::hint::spin_loop(),
                        Err(e) => return Err(format!("send: {e}").into()),
                    }
                }
                seq += k as u64;
            } else {
                send(&mut tx, message::<W>(seq), each)?;
                seq += 1;
            }
        }
    }
    Ok(())
}
