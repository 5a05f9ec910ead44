//! The README's main command: a producer process and a consumer process over POSIX shm, with
//! live throughput, then one-way latency percentiles, then clean-up.
//!
//! ```sh
//! cargo run --release --example demo                 # 5 seconds
//! cargo run --release --example demo -- --seconds 10 --capacity 8192
//! ```
//!
//! The demo process creates two channels (data out, echo back), starts a copy of itself as the
//! consumer, floods the data channel in batches while printing the rate twice a second, then
//! plays ping-pong for one-way latency (round trip / 2). The consumer checks every message's
//! order and checksum and reports at the end. Both names are removed when the demo exits.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::Args;
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, RecvTimeoutError};

/// A demo message: flood data, or a ping the consumer echoes back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Msg {
    seq: u64,
    sent_ns: u64,
    kind: u64,
    checksum: u64,
}

const DATA: u64 = 0;
const PING: u64 = 1;
const FINGERPRINT: u64 = 0x4445_4d4f_4d53_4701;

impl Msg {
    fn new(seq: u64, kind: u64) -> Self {
        let sent_ns = common::now_ns();
        Msg { seq, sent_ns, kind, checksum: Self::sum(seq, sent_ns, kind) }
    }

    fn sum(seq: u64, sent_ns: u64, kind: u64) -> u64 {
        (seq ^ sent_ns.rotate_left(23) ^ kind.rotate_left(47)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn is_intact(&self) -> bool {
        self.checksum == Self::sum(self.seq, self.sent_ns, self.kind)
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(&[]).and_then(|a| {
        a.check_known(&["seconds", "capacity", "role", "name"])?;
        Ok(a)
    }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(64);
        }
    };
    let result = match args.get("role") {
        Some("consumer") => consumer(&args),
        _ => producer(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn options() -> Options {
    Options::new().fingerprint(FINGERPRINT)
}

fn producer(args: &Args) -> Result<ExitCode, String> {
    let seconds: f64 = args.number("seconds", 5.0)?;
    let capacity: usize = args.number("capacity", 4096)?;
    let name = format!("/shmchan-demo-{}", std::process::id());
    let echo_name = format!("{name}-echo");

    let data = Channel::<Msg>::create(Backing::posix(&name), &options().capacity(capacity))
        .map_err(|e| format!("create {name}: {e}"))?;
    let echo = Channel::<Msg>::create(Backing::posix(&echo_name), &options().capacity(64))
        .map_err(|e| format!("create {echo_name}: {e}"))?;
    let mut tx = data.producer().map_err(|e| e.to_string())?;
    let mut back = echo.consumer().map_err(|e| e.to_string())?;

    println!("shmchan demo: {name}, capacity {capacity} x {} B messages", size_of::<Msg>());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["--role", "consumer", "--name", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn consumer: {e}"))?;
    let child_out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        BufReader::new(child_out).lines().map_while(Result::ok).collect::<Vec<_>>()
    });
    let outcome = drive(&mut tx, &mut back, seconds, capacity);
    drop(tx);
    let status = wait_child(&mut child, Duration::from_secs(10));
    for line in reader.join().unwrap_or_default() {
        println!("consumer: {line}");
    }
    outcome?;
    match status {
        Some(s) if s.success() => Ok(ExitCode::SUCCESS),
        Some(s) => Err(format!("consumer exited with {s}")),
        None => Err("consumer did not finish in time (killed)".into()),
    }
}

/// Floods, reporting live, then measures ping-pong latency.
fn drive(
    tx: &mut shmchan::spsc::Producer<Msg>,
    back: &mut shmchan::spsc::Consumer<Msg>,
    seconds: f64,
    capacity: usize,
) -> Result<(), String> {
    let flood_for = Duration::from_secs_f64(seconds * 0.6);
    let ping_for = Duration::from_secs_f64(seconds * 0.4);
    let mut seq = 0u64;
    let mut batch = [Msg::default(); 64];
    let started = Instant::now();
    let mut last_report = (started, 0u64);
    println!("\nthroughput ({:.1} s, batches of {}):", flood_for.as_secs_f64(), batch.len());
    while started.elapsed() < flood_for {
        for (i, m) in batch.iter_mut().enumerate() {
            *m = Msg::new(seq + i as u64, DATA);
        }
        tx.send_slice(&batch).map_err(|e| format!("flood: {e}"))?;
        seq += batch.len() as u64;
        let now = Instant::now();
        if now.duration_since(last_report.0) >= Duration::from_millis(500) {
            let rate =
                (seq - last_report.1) as f64 / now.duration_since(last_report.0).as_secs_f64();
            print!(
                "\r  {:5.1} s  {:8.2} M msg/s  {:8.1} MB/s   {:>12} sent",
                now.duration_since(started).as_secs_f64(),
                rate / 1e6,
                rate * size_of::<Msg>() as f64 / 1e6,
                seq
            );
            let _ = std::io::stdout().flush();
            last_report = (now, seq);
        }
    }
    let flood_secs = started.elapsed().as_secs_f64();
    println!(
        "\n  average {:.2} M msg/s ({seq} messages, capacity {capacity})",
        seq as f64 / flood_secs / 1e6
    );

    println!("\none-way latency (ping-pong round trip / 2, {:.1} s):", ping_for.as_secs_f64());
    let mut one_way = Vec::new();
    let started = Instant::now();
    while started.elapsed() < ping_for {
        let t0 = common::now_ns();
        tx.send(Msg::new(seq, PING)).map_err(|e| format!("ping: {e}"))?;
        seq += 1;
        match back.recv_timeout(Duration::from_secs(5)) {
            Ok(_) => one_way.push((common::now_ns() - t0) / 2),
            Err(e) => return Err(format!("pong: {e}")),
        }
    }
    let pings = one_way.len();
    if let Some(p) = common::percentiles(&mut one_way) {
        let text: Vec<String> = p.iter().map(|(q, ns)| format!("p{q} {ns} ns")).collect();
        println!("  {pings} round trips: {}", text.join(", "));
    }
    println!("\nsent {seq} messages; waiting for the consumer's verdict");
    Ok(())
}

fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn consumer(args: &Args) -> Result<ExitCode, String> {
    let name = args.string("name")?;
    let echo_name = format!("{name}-echo");
    let mut rx = Channel::<Msg>::open(Backing::posix(&name), &options())
        .and_then(|c| c.consumer())
        .map_err(|e| format!("open {name}: {e}"))?;
    let mut echo = Channel::<Msg>::open(Backing::posix(&echo_name), &options())
        .and_then(|c| c.producer())
        .map_err(|e| format!("open {echo_name}: {e}"))?;
    let mut expected = 0u64;
    let mut buf = [Msg::default(); 256];
    loop {
        let n = match rx.recv_into_timeout(&mut buf, Duration::from_secs(30)) {
            Ok(n) => n,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(e) => {
                println!("stopped after {expected} messages: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        for m in &buf[..n] {
            if m.seq != expected || !m.is_intact() {
                println!("message {expected} out of order or damaged (got seq {})", m.seq);
                return Ok(ExitCode::from(2));
            }
            expected += 1;
            if m.kind == PING {
                echo.send(*m).map_err(|e| format!("echo: {e}"))?;
            }
        }
    }
    println!("received {expected} messages in order, every checksum intact");
    Ok(ExitCode::SUCCESS)
}
