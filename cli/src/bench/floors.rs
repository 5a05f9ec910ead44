//! Floors: what the hardware and kernel allow, measured the same way as the rows judged
//! against them.

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::harness::{
    PEER_LIMIT, Peer, RAW_PING, RAW_PONG, RAW_READY, RawShm, ShmName, futex_wait, futex_wake,
    pin_to, spin_until,
};
use super::spsc_rows::RING_BYTES;
use super::{Ctx, Latency, Plan, Rates, Record, Result, Step};

pub(crate) fn steps(_plan: &Plan) -> Vec<Step> {
    vec![
        Step::new("floor/cacheline_pingpong", |ctx: &mut Ctx<'_>| {
            let s = cacheline_floor(&ctx.plan, ctx.there, false)?;
            ctx.fig.cacheline_p50 = s.p50;
            ctx.emit(Record::latency("floor/cacheline_pingpong", &s).text("kind", "floor"));
            let s = cacheline_floor(&ctx.plan, ctx.there, true)?;
            ctx.emit(Record::latency("floor/cacheline_pingpong_pause", &s).text("kind", "floor"));
            Ok(())
        }),
        Step::new("floor/futex_pingpong", |ctx: &mut Ctx<'_>| {
            let s = futex_floor(&ctx.plan, ctx.there)?;
            ctx.fig.futex_p50 = s.p50;
            ctx.emit(Record::latency("floor/futex_pingpong", &s).text("kind", "floor"));
            Ok(())
        }),
        Step::new("floor/memcpy_4KiB", |ctx: &mut Ctx<'_>| {
            let (copies, bytes) = memcpy_floor(&ctx.plan, 4096);
            ctx.fig.memcpy_bytes_per_s = bytes;
            ctx.emit(
                Record::new("floor/memcpy_4KiB", "copies/s")
                    .text("kind", "floor")
                    .num("value", copies)
                    .num("bytes_per_s", bytes),
            );
            Ok(())
        }),
        Step::new("floor/memcpy_4KiB_through_ring_area", |ctx: &mut Ctx<'_>| {
            let (copies, bytes) = memcpy_floor(&ctx.plan, RING_BYTES);
            ctx.fig.memcpy_ring_area_bytes_per_s = bytes;
            ctx.emit(
                Record::new("floor/memcpy_4KiB_through_ring_area", "copies/s")
                    .text("kind", "floor")
                    .num("value", copies)
                    .num("bytes_per_s", bytes)
                    .num("area", RING_BYTES as f64),
            );
            Ok(())
        }),
        Step::new("floor/plain_ring_threads/4KiB", |ctx: &mut Ctx<'_>| {
            let t = plain_ring_floor(&ctx.plan, ctx.here, ctx.there);
            ctx.fig.plain_ring_bytes_per_s = t.median * 4096.0;
            ctx.emit(
                Record::throughput("floor/plain_ring_threads/4KiB", 4096, &t).text("kind", "floor"),
            );
            Ok(())
        }),
    ]
}

pub(crate) fn child(role: &str, names: &[&str], param: &str) -> Option<Result<()>> {
    let open = || RawShm::open(names.first().copied().unwrap_or(""));
    match role {
        "cacheline" => Some(open().and_then(|shm| cacheline_child(&shm, param == "pause"))),
        "futex" => Some(open().and_then(|shm| futex_child(&shm))),
        _ => None,
    }
}

pub(crate) const RAW_STOP: u64 = u64::MAX;

/// Two processes bounce a counter through two flags on separate lines, spinning.
pub(crate) fn cacheline_floor(plan: &Plan, cpu: Option<usize>, pause: bool) -> Result<Latency> {
    let name = ShmName::new("cacheline");
    let shm = RawShm::create(&name.0)?;
    let peer = Peer::spawn("cacheline", &[&name.0], if pause { "pause" } else { "tight" }, cpu)?;
    let (ping, pong) = (shm.u64_at(RAW_PING), shm.u64_at(RAW_PONG));
    spin_until(PEER_LIMIT, true, || shm.u64_at(RAW_READY).load(Ordering::Acquire) == 1)?;

    let warmup = plan.spin_samples / 10;
    let mut rtt = Vec::with_capacity(plan.spin_samples);
    let mut prev = Instant::now();
    for i in 1..=(warmup + plan.spin_samples) as u64 {
        ping.store(i, Ordering::Release);
        spin_until(PEER_LIMIT, pause, || pong.load(Ordering::Acquire) == i)?;
        let now = Instant::now();
        if i > warmup as u64 {
            rtt.push(now.duration_since(prev).as_nanos() as u64);
        }
        prev = now;
    }
    ping.store(RAW_STOP, Ordering::Release);
    peer.finish()?;
    Ok(Latency::from_round_trips(&rtt))
}

pub(crate) fn cacheline_child(shm: &RawShm, pause: bool) -> Result<()> {
    let (ping, pong) = (shm.u64_at(RAW_PING), shm.u64_at(RAW_PONG));
    shm.u64_at(RAW_READY).store(1, Ordering::Release);
    let mut next = 1u64;
    loop {
        let mut seen = 0;
        spin_until(PEER_LIMIT, pause, || {
            seen = ping.load(Ordering::Acquire);
            seen == next || seen == RAW_STOP
        })?;
        if seen == RAW_STOP {
            return Ok(());
        }
        pong.store(seen, Ordering::Release);
        next += 1;
    }
}

pub(crate) const FUTEX_STOP: u32 = u32::MAX;

/// Two processes bounce a counter through two shared futex words, sleeping on each wait and
/// waking on each store.
pub(crate) fn futex_floor(plan: &Plan, cpu: Option<usize>) -> Result<Latency> {
    let name = ShmName::new("futex");
    let shm = RawShm::create(&name.0)?;
    let peer = Peer::spawn("futex", &[&name.0], "", cpu)?;
    let (ping, pong) = (shm.u32_at(RAW_PING), shm.u32_at(RAW_PONG));
    spin_until(PEER_LIMIT, true, || shm.u64_at(RAW_READY).load(Ordering::Acquire) == 1)?;

    let warmup = plan.sleep_samples / 10;
    let mut rtt = Vec::with_capacity(plan.sleep_samples);
    let mut prev = Instant::now();
    for i in 1..=(warmup + plan.sleep_samples) as u32 {
        ping.store(i, Ordering::Release);
        futex_wake(ping);
        futex_wait_for(pong, i)?;
        let now = Instant::now();
        if i > warmup as u32 {
            rtt.push(now.duration_since(prev).as_nanos() as u64);
        }
        prev = now;
    }
    ping.store(FUTEX_STOP, Ordering::Release);
    futex_wake(ping);
    peer.finish()?;
    Ok(Latency::from_round_trips(&rtt))
}

/// Sleeps on `word` until it holds `want` (or the stop value); returns what it holds.
pub(crate) fn futex_wait_for(word: &AtomicU32, want: u32) -> Result<u32> {
    let deadline = Instant::now() + PEER_LIMIT;
    loop {
        let v = word.load(Ordering::Acquire);
        if v == want || v == FUTEX_STOP {
            return Ok(v);
        }
        futex_wait(word, v, Duration::from_millis(100));
        if Instant::now() >= deadline {
            return Err("peer stopped responding".into());
        }
    }
}

pub(crate) fn futex_child(shm: &RawShm) -> Result<()> {
    let (ping, pong) = (shm.u32_at(RAW_PING), shm.u32_at(RAW_PONG));
    shm.u64_at(RAW_READY).store(1, Ordering::Release);
    let mut next = 1u32;
    loop {
        if futex_wait_for(ping, next)? == FUTEX_STOP {
            return Ok(());
        }
        pong.store(next, Ordering::Release);
        futex_wake(pong);
        next += 1;
    }
}

/// Copies 4 KiB records on one thread from a hot source into consecutive 4 KiB pieces of a
/// `dst_len`-byte destination: with 4 KiB both buffers stay in L1 (the most a core can copy);
/// with the byte ring's data area the destination is the working set a ring producer writes
/// through. Returns (copies/s, bytes/s).
pub(crate) fn memcpy_floor(plan: &Plan, dst_len: usize) -> (f64, f64) {
    const LEN: usize = 4096;
    const CHUNK: usize = 1000;
    let src = vec![0x5au8; LEN];
    let mut dst = vec![0u8; dst_len.max(LEN)];
    let pieces = dst.len() / LEN;
    let mut rates = Vec::new();
    let mut piece = 0;
    let started = Instant::now();
    while started.elapsed() < plan.memcpy_time {
        let t0 = Instant::now();
        for _ in 0..CHUNK {
            // black_box keeps the copy from being hoisted out of the loop or elided.
            let (s, d) = (black_box(src.as_ptr()), black_box(dst.as_mut_ptr()));
            // SAFETY: two distinct live allocations; piece < pieces, so the LEN bytes at
            // piece * LEN lie inside `dst`.
            unsafe { std::ptr::copy_nonoverlapping(s, d.add(piece * LEN), LEN) };
            black_box(&mut dst);
            piece = (piece + 1) % pieces;
        }
        rates.push(CHUNK as f64 / t0.elapsed().as_secs_f64());
    }
    let copies = Rates::from(rates, CHUNK).median;
    (copies, copies * LEN as f64)
}

/// The cross-core copy ceiling: a plain ring of 4 KiB buffers between two pinned threads (head
/// and tail on their own lines, one copy in, one copy out, no validation), the same ring size
/// as shmchan's 4 KiB throughput rows.
pub(crate) fn plain_ring_floor(plan: &Plan, here: Option<usize>, there: Option<usize>) -> Rates {
    const LEN: usize = 4096;
    const SLOTS: usize = RING_BYTES / LEN;
    #[repr(C, align(128))]
    struct Index(AtomicU64);
    let n = plan.messages(LEN) as u64;
    let mut rates = Vec::new();
    for rep in 0..=plan.reps {
        let ring = vec![[0u64; LEN / 8]; SLOTS];
        let ring_ptr = ring.as_ptr() as usize;
        let (head, tail) = (Index(AtomicU64::new(0)), Index(AtomicU64::new(0)));
        let barrier = Barrier::new(2);
        let elapsed = std::thread::scope(|s| {
            s.spawn(|| {
                if let Some(c) = there {
                    pin_to(c);
                }
                let mut src = [0u64; LEN / 8];
                barrier.wait();
                let (mut t, mut h) = (0u64, 0u64);
                while t < n {
                    while t - h >= SLOTS as u64 {
                        h = head.0.load(Ordering::Acquire);
                    }
                    src[0] = t;
                    let dst = (ring_ptr as *mut [u64; LEN / 8]).wrapping_add(t as usize % SLOTS);
                    // SAFETY: slot t % SLOTS is inside `ring`, and the consumer released it
                    // (t - head < SLOTS) before we write it.
                    unsafe { std::ptr::copy_nonoverlapping(black_box(&src), dst, 1) };
                    t += 1;
                    tail.0.store(t, Ordering::Release);
                }
            });
            if let Some(c) = here {
                pin_to(c);
            }
            let mut dst = [0u64; LEN / 8];
            barrier.wait();
            let t0 = Instant::now();
            let (mut h, mut t) = (0u64, 0u64);
            while h < n {
                while h == t {
                    t = tail.0.load(Ordering::Acquire);
                }
                let src = (ring_ptr as *const [u64; LEN / 8]).wrapping_add(h as usize % SLOTS);
                // SAFETY: slot h % SLOTS is inside `ring` and published (h < tail).
                unsafe { std::ptr::copy_nonoverlapping(src, &mut dst, 1) };
                assert_eq!(black_box(&dst)[0], h);
                h += 1;
                head.0.store(h, Ordering::Release);
            }
            t0.elapsed()
        });
        drop(ring);
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
    }
    Rates::from(rates, n as usize)
}
