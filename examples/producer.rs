//! The sending half of the example pair: creates a POSIX shm channel (exclusively, mode 0600)
//! and sends `--count` sequenced, timestamped, checksummed messages to `consumer`.
//!
//! ```sh
//! cargo run --release --example producer -- --name /demo --count 1000000 --capacity 4096
//! ```
//!
//! It removes the name when it exits, after the consumer has taken every message (or left).

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{Args, SAMPLE_FINGERPRINT, Sample};
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, SendTimeoutError};

fn main() -> ExitCode {
    let args = match Args::parse(&[]).and_then(|a| {
        a.check_known(&["name", "count", "capacity", "wait", "timeout", "batch"])?;
        Ok(a)
    }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("producer: {e}");
            return ExitCode::from(64);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("producer: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let name = args.string("name")?;
    let count: u64 = args.number("count", 1_000_000)?;
    let capacity: usize = args.number("capacity", 4096)?;
    let batch: usize = args.number("batch", 1)?;
    let wait = common::wait_strategy(args.get("wait").unwrap_or("default"))?;
    let timeout = args.seconds("timeout", 30.0)?;

    let options =
        Options::new().capacity(capacity).fingerprint(SAMPLE_FINGERPRINT).wait_strategy(wait);
    let chan = Channel::<Sample>::create(Backing::posix(&name), &options)
        .map_err(|e| format!("create {name}: {e}"))?;
    let mut tx = chan.producer().map_err(|e| format!("attach: {e}"))?;

    let started = Instant::now();
    let mut seq = 0u64;
    let mut pending = Vec::with_capacity(batch.max(1));
    while seq < count {
        if batch > 1 {
            pending.clear();
            let n = batch.min((count - seq) as usize) as u64;
            pending.extend((seq..seq + n).map(Sample::new));
            tx.send_slice(&pending).map_err(|e| format!("after {seq} messages: {e}"))?;
            seq += n;
        } else {
            match tx.send_timeout(Sample::new(seq), timeout) {
                Ok(()) => seq += 1,
                Err(SendTimeoutError::Timeout(_)) => {
                    return Err(format!("ring full for {timeout:?} after {seq} messages"));
                }
                Err(e) => return Err(format!("after {seq} messages: {e}")),
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "sent {count} messages in {:.3} s ({:.2} M msg/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64() / 1e6
    );

    // Keep the name until the consumer has taken everything (or is gone), then remove it.
    let deadline = Instant::now() + timeout;
    while !chan.is_empty() && !tx.is_disconnected() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
