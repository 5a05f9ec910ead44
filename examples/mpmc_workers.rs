//! A dispatcher process hands jobs to several worker processes over one MPMC ring, and the
//! workers send results back on a second one. Each job is done exactly once, by whichever
//! worker is free.
//!
//! ```sh
//! cargo run --release --example mpmc_workers -- --workers 4 --jobs 1000000
//! ```
//!
//! The program is the dispatcher and starts copies of itself as workers. When the dispatcher
//! drops its job sender, workers see `Disconnected` once the ring is drained, and exit.

#[path = "common/mod.rs"]
mod common;

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::Args;
use shmchan::mpmc::{Channel, Options};
use shmchan::{Backing, RecvError, RecvTimeoutError};

/// A job: compute `input` squared, modulo a prime.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Job {
    id: u64,
    input: u64,
}

/// A result, naming the worker that produced it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Done {
    id: u64,
    output: u64,
    worker: u64,
}

const PRIME: u64 = 1_000_000_007;

fn work(input: u64) -> u64 {
    (input % PRIME) * (input % PRIME) % PRIME
}

fn main() -> ExitCode {
    let args = match Args::parse(&[]).and_then(|a| {
        a.check_known(&["workers", "jobs", "role", "name", "id"])?;
        Ok(a)
    }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mpmc_workers: {e}");
            return ExitCode::from(64);
        }
    };
    let result = match args.get("role") {
        Some("worker") => worker(&args),
        _ => dispatcher(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("mpmc_workers: {e}");
        ExitCode::FAILURE
    })
}

fn dispatcher(args: &Args) -> Result<ExitCode, String> {
    let workers: usize = args.number("workers", 4)?;
    let jobs: u64 = args.number("jobs", 1_000_000)?;
    let name = format!("/shmchan-workers-{}", std::process::id());
    let opts = Options::new().capacity(4096).max_endpoints(workers as u64 + 1);
    let job_chan = Channel::<Job>::create(Backing::posix(format!("{name}-jobs")), &opts)
        .map_err(|e| format!("create jobs ring: {e}"))?;
    let done_chan = Channel::<Done>::create(Backing::posix(format!("{name}-done")), &opts)
        .map_err(|e| format!("create results ring: {e}"))?;
    let mut jobs_tx = job_chan.sender().map_err(|e| e.to_string())?;
    let mut done_rx = done_chan.receiver().map_err(|e| e.to_string())?;

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children: Vec<Child> = Vec::new();
    for id in 0..workers {
        let child = Command::new(&exe)
            .args(["--role", "worker", "--name", &name, "--id", &id.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn worker: {e}"))?;
        children.push(child);
    }
    println!("dispatching {jobs} jobs to {workers} worker processes");

    let started = Instant::now();
    let mut seen = vec![false; jobs as usize];
    let mut per_worker = vec![0u64; workers];
    let (mut sent, mut done) = (0u64, 0u64);
    while done < jobs {
        // Keep the job ring busy without blocking on it, and collect results as they come.
        while sent < jobs {
            match jobs_tx.try_send(Job { id: sent, input: sent.wrapping_mul(2654435761) }) {
                Ok(()) => sent += 1,
                Err(_) => break,
            }
        }
        match done_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(r) => {
                let id = r.id as usize;
                if id >= seen.len() || seen[id] {
                    return Err(format!("result for job {} arrived twice or was never sent", r.id));
                }
                if r.output != work(r.id.wrapping_mul(2654435761)) {
                    return Err(format!("wrong result for job {}", r.id));
                }
                seen[id] = true;
                per_worker[(r.worker as usize).min(workers - 1)] += 1;
                done += 1;
            }
            Err(RecvTimeoutError::Timeout) => return Err(format!("no result for 30 s at {done}")),
            Err(e) => return Err(format!("results: {e}")),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    drop(jobs_tx);
    for mut child in children {
        let _ = child.wait();
    }
    println!(
        "{jobs} jobs done exactly once in {secs:.2} s ({:.2} M jobs/s)",
        jobs as f64 / secs / 1e6
    );
    println!("jobs per worker: {per_worker:?}");
    println!("lost messages: {}", job_chan.lost_messages() + done_chan.lost_messages());
    Ok(ExitCode::SUCCESS)
}

fn worker(args: &Args) -> Result<ExitCode, String> {
    let name = args.string("name")?;
    let id: u64 = args.number("id", 0)?;
    let opts = Options::new();
    let mut jobs = Channel::<Job>::open(Backing::posix(format!("{name}-jobs")), &opts)
        .and_then(|c| c.receiver())
        .map_err(|e| format!("worker {id}: {e}"))?;
    let mut results = Channel::<Done>::open(Backing::posix(format!("{name}-done")), &opts)
        .and_then(|c| c.sender())
        .map_err(|e| format!("worker {id}: {e}"))?;
    loop {
        match jobs.recv() {
            Ok(job) => {
                let done = Done { id: job.id, output: work(job.input), worker: id };
                if results.send(done).is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Err(RecvError::Disconnected) => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(format!("worker {id}: {e}")),
        }
    }
}
