//! In-process SPSC throughput: two threads over a `Backing::Anonymous` channel, beside rtrb.
//!
//! Each criterion iteration is one message; `iter_custom` times one whole transfer of `iters`
//! messages from the producer thread to the consumer thread (from a common barrier to the later
//! of the two threads finishing), as rtrb's own `benches/push_pop.rs` does. Thread start-up and
//! ring creation stay outside the timed region.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytemuck::Pod;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, TryRecvError, TrySendError};

/// Slots in every ring, shmchan and rtrb alike, so both see the same amount of slack.
const CAPACITY: usize = 4096;
/// Messages per batch call (`try_send_slice`/`try_recv_into`, rtrb chunks).
const BATCH: usize = 256;

/// A message of `W` words whose first word carries the sequence number.
fn message<const W: usize>(seq: u64) -> [u64; W] {
    let mut m = [0u64; W];
    m[0] = seq;
    m
}

/// Pins the calling thread to `cpu` when the machine has more than one, so the two sides of a
/// transfer never share a core; failures are ignored (the figure is then just noisier).
fn pin_to(cpu: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return;
    }
    // SAFETY: cpu_set_t is plain data for which all-zero is the empty set; CPU_SET writes inside
    // it (cpu % CPU_SETSIZE is in range); pid 0 names the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % cpus, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Runs `produce` and `consume` on two pinned threads released by one barrier; returns the span
/// from the earlier start to the later finish.
fn timed_transfer<P, C>(produce: P, consume: C) -> Duration
where
    P: FnOnce() + Send,
    C: FnOnce() + Send,
{
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let producer = s.spawn(|| {
            pin_to(1);
            barrier.wait();
            let start = Instant::now();
            produce();
            (start, Instant::now())
        });
        let consumer = s.spawn(|| {
            pin_to(0);
            barrier.wait();
            let start = Instant::now();
            consume();
            (start, Instant::now())
        });
        let (p0, p1) = producer.join().expect("producer thread");
        let (c0, c1) = consumer.join().expect("consumer thread");
        p1.max(c1).duration_since(p0.min(c0))
    })
}

fn shmchan_channel<T: Pod>() -> (shmchan::spsc::Producer<T>, shmchan::spsc::Consumer<T>) {
    let chan = Channel::<T>::create(Backing::Anonymous, &Options::new().capacity(CAPACITY))
        .expect("create anonymous channel");
    (chan.producer().expect("attach producer"), chan.consumer().expect("attach consumer"))
}

fn shmchan_per_message<const W: usize>(iters: u64) -> Duration
where
    [u64; W]: Pod,
{
    let (mut tx, mut rx) = shmchan_channel::<[u64; W]>();
    timed_transfer(
        move || {
            for seq in 0..iters {
                let mut m = message::<W>(seq);
                loop {
                    match tx.try_send(m) {
                        Ok(()) => break,
                        Err(TrySendError::Full(back)) => {
                            m = back;
                            std::hint::spin_loop();
                        }
                        Err(e) => panic!("send: {e:?}"),
                    }
                }
            }
        },
        move || {
            let mut expected = 0;
            while expected < iters {
                match rx.try_recv() {
                    Ok(m) => {
                        assert_eq!(black_box(m)[0], expected);
                        expected += 1;
                    }
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                    Err(e) => panic!("recv: {e:?}"),
                }
            }
        },
    )
}

fn shmchan_batched<const W: usize>(iters: u64) -> Duration
where
    [u64; W]: Pod,
{
    let (mut tx, mut rx) = shmchan_channel::<[u64; W]>();
    timed_transfer(
        move || {
            let mut batch = [[0u64; W]; BATCH];
            let mut sent = 0;
            while sent < iters {
                let n = (iters - sent).min(BATCH as u64) as usize;
                for (k, m) in batch[..n].iter_mut().enumerate() {
                    m[0] = sent + k as u64;
                }
                let mut done = 0;
                while done < n {
                    match tx.try_send_slice(&batch[done..n]) {
                        Ok(k) => done += k,
                        Err(TrySendError::Full(())) => std::hint::spin_loop(),
                        Err(e) => panic!("send: {e:?}"),
                    }
                }
                sent += n as u64;
            }
        },
        move || {
            let mut buf = [[0u64; W]; BATCH];
            let mut expected = 0;
            while expected < iters {
                match rx.try_recv_into(&mut buf) {
                    Ok(n) => {
                        for m in &buf[..n] {
                            assert_eq!(black_box(m)[0], expected);
                            expected += 1;
                        }
                    }
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                    Err(e) => panic!("recv: {e:?}"),
                }
            }
        },
    )
}

fn rtrb_per_message<const W: usize>(iters: u64) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<[u64; W]>::new(CAPACITY);
    timed_transfer(
        move || {
            for seq in 0..iters {
                let m = message::<W>(seq);
                while tx.push(m).is_err() {
                    std::hint::spin_loop();
                }
            }
        },
        move || {
            let mut expected = 0;
            while expected < iters {
                match rx.pop() {
                    Ok(m) => {
                        assert_eq!(black_box(m)[0], expected);
                        expected += 1;
                    }
                    Err(_) => std::hint::spin_loop(),
                }
            }
        },
    )
}

fn rtrb_chunked<const W: usize>(iters: u64) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<[u64; W]>::new(CAPACITY);
    timed_transfer(
        move || {
            let mut sent = 0;
            while sent < iters {
                let n = (iters - sent).min(BATCH as u64).min(tx.slots() as u64) as usize;
                if n == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                let chunk = tx.write_chunk_uninit(n).expect("slots() said there was room");
                let first = sent;
                sent += chunk.fill_from_iter((first..first + n as u64).map(message::<W>)) as u64;
            }
        },
        move || {
            // Copied out into a buffer, as shmchan's `try_recv_into` does.
            let mut buf = [[0u64; W]; BATCH];
            let mut expected = 0;
            while expected < iters {
                let n = rx.slots().min(BATCH);
                if n == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                let chunk = rx.read_chunk(n).expect("slots() said these were ready");
                let (a, b) = chunk.as_slices();
                buf[..a.len()].copy_from_slice(a);
                buf[a.len()..n].copy_from_slice(b);
                chunk.commit_all();
                for m in &buf[..n] {
                    assert_eq!(black_box(m)[0], expected);
                    expected += 1;
                }
            }
        },
    )
}

fn bench_size<const W: usize>(c: &mut Criterion)
where
    [u64; W]: Pod,
{
    let bytes = W * 8;
    let mut group = c.benchmark_group(format!("spsc_threads_{bytes}B"));
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("shmchan", "per_message"), |b| {
        b.iter_custom(shmchan_per_message::<W>)
    });
    group.bench_function(BenchmarkId::new("shmchan", "batched"), |b| {
        b.iter_custom(shmchan_batched::<W>)
    });
    group.bench_function(BenchmarkId::new("rtrb", "per_message"), |b| {
        b.iter_custom(rtrb_per_message::<W>)
    });
    group.bench_function(BenchmarkId::new("rtrb", "chunked"), |b| b.iter_custom(rtrb_chunked::<W>));
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_size::<1>(c);
    bench_size::<8>(c);
}

criterion_group!(spsc, benches);
criterion_main!(spsc);
