//! The receiving half of the example pair: opens a POSIX shm channel created by `producer`,
//! receives `--count` messages, and checks their order and checksums.
//!
//! ```sh
//! cargo run --release --example producer -- --name /demo --count 1000000 --capacity 4096 &
//! cargo run --release --example consumer -- --name /demo --count 1000000
//! ```
//!
//! Exit status: 0 after the last line `received N messages in order`; 2 with a line naming the
//! cause if the producer disconnects or dies early (or a message is out of order or damaged);
//! 1 with the typed error if the channel cannot be opened.

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{Args, SAMPLE_FINGERPRINT, Sample};
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, OpenError, RecvTimeoutError};

fn main() -> ExitCode {
    let args = match Args::parse(&["quiet"]).and_then(|a| {
        a.check_known(&["name", "count", "wait", "open-timeout", "idle-timeout"])?;
        Ok(a)
    }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("consumer: {e}");
            return ExitCode::from(64);
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("consumer: {e}");
            ExitCode::from(64)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let name = args.string("name")?;
    let count: u64 = args.number("count", 1_000_000)?;
    let wait = common::wait_strategy(args.get("wait").unwrap_or("default"))?;
    let open_timeout = args.seconds("open-timeout", 5.0)?;
    let idle_timeout = args.seconds("idle-timeout", 30.0)?;
    let quiet = args.flag("quiet");

    let options = Options::new().fingerprint(SAMPLE_FINGERPRINT).wait_strategy(wait);
    let mut rx = match open_with_retry(&name, &options, open_timeout) {
        Ok(rx) => rx,
        Err(e) => {
            println!("open failed: {e} ({e:?})");
            return Ok(ExitCode::from(1));
        }
    };

    let started = Instant::now();
    let mut latencies = Vec::with_capacity(count.min(1 << 20) as usize);
    let mut buf = vec![Sample::default(); 256];
    let mut received = 0u64;
    while received < count {
        let want = buf.len().min((count - received) as usize);
        let n = match rx.recv_into_timeout(&mut buf[..want], idle_timeout) {
            Ok(n) => n,
            Err(RecvTimeoutError::Disconnected) => {
                println!("producer disconnected after {received} of {count} messages");
                return Ok(ExitCode::from(2));
            }
            Err(RecvTimeoutError::Timeout) => {
                println!("no message for {idle_timeout:?} after {received} of {count} messages");
                return Ok(ExitCode::from(2));
            }
            Err(RecvTimeoutError::Corrupted) => {
                println!("channel corrupted after {received} of {count} messages");
                return Ok(ExitCode::from(2));
            }
        };
        let now = common::now_ns();
        for sample in &buf[..n] {
            if sample.seq != received {
                println!("out of order: expected message {received}, got {}", sample.seq);
                return Ok(ExitCode::from(2));
            }
            if !sample.is_intact() {
                println!("checksum mismatch in message {received}");
                return Ok(ExitCode::from(2));
            }
            if latencies.len() < latencies.capacity() {
                latencies.push(now.saturating_sub(sample.sent_ns));
            }
            received += 1;
        }
    }
    let elapsed = started.elapsed();
    if !quiet {
        println!(
            "{:.2} M msg/s over {:.3} s",
            received as f64 / elapsed.as_secs_f64() / 1e6,
            elapsed.as_secs_f64()
        );
        if let Some(p) = common::percentiles(&mut latencies) {
            let text: Vec<String> = p.iter().map(|(q, ns)| format!("p{q}={ns}ns")).collect();
            println!("send-to-receive latency (queueing included): {}", text.join(" "));
        }
    }
    println!("received {received} messages in order");
    Ok(ExitCode::SUCCESS)
}

/// Opens the channel, retrying while the producer has not created it yet.
fn open_with_retry(
    name: &str,
    options: &Options,
    timeout: Duration,
) -> Result<shmchan::spsc::Consumer<Sample>, OpenError> {
    let deadline = Instant::now() + timeout;
    loop {
        match Channel::<Sample>::open(Backing::posix(name), options) {
            Ok(chan) => return chan.consumer(),
            Err(OpenError::NotFound) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}
