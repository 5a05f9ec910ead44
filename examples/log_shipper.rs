//! Several processes ship variable-length log records to one collector, each over its own
//! byte ring, written in place with zero-copy grants.
//!
//! ```sh
//! cargo run --release --example log_shipper -- --shippers 3 --records 200000
//! ```
//!
//! The program is the collector and starts copies of itself as shippers. Each record is a
//! text line of varying length; the collector checks every shipper's sequence and checksum.

#[path = "common/mod.rs"]
mod common;

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::Args;
use shmchan::bytes::{Channel, Consumer, Options};
use shmchan::{Backing, TryRecvError};

fn main() -> ExitCode {
    let args = match Args::parse(&[]).and_then(|a| {
        a.check_known(&["shippers", "records", "role", "name", "id"])?;
        Ok(a)
    }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("log_shipper: {e}");
            return ExitCode::from(64);
        }
    };
    let result = match args.get("role") {
        Some("shipper") => shipper(&args),
        _ => collector(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("log_shipper: {e}");
        ExitCode::FAILURE
    })
}

/// The record text for `seq` of shipper `id`: its length varies from a few bytes to ~300.
fn record(id: u64, seq: u64) -> String {
    let detail = "x".repeat((seq.wrapping_mul(0x9e37_79b9) % 280) as usize);
    format!("shipper={id} seq={seq} level=info msg=\"request served\" detail={detail}")
}

fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

fn options() -> Options {
    Options::new().capacity_bytes(1 << 18).max_message(1024)
}

fn collector(args: &Args) -> Result<ExitCode, String> {
    let shippers: u64 = args.number("shippers", 3)?;
    let records: u64 = args.number("records", 200_000)?;
    let name = format!("/shmchan-logs-{}", std::process::id());
    let mut rings: Vec<(Channel, Consumer)> = Vec::new();
    for id in 0..shippers {
        let chan = Channel::create(Backing::posix(format!("{name}-{id}")), &options())
            .map_err(|e| format!("create ring {id}: {e}"))?;
        let rx = chan.consumer().map_err(|e| e.to_string())?;
        rings.push((chan, rx));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children: Vec<Child> = Vec::new();
    for id in 0..shippers {
        children.push(
            Command::new(&exe)
                .args(["--role", "shipper", "--name", &name, "--id", &id.to_string()])
                .args(["--records", &records.to_string()])
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("spawn shipper: {e}"))?,
        );
    }

    let started = Instant::now();
    let mut next = vec![0u64; shippers as usize];
    let mut open = shippers as usize;
    let mut bytes = 0u64;
    let mut idle_since: Option<Instant> = None;
    while open > 0 {
        let mut progressed = false;
        for (id, (_, rx)) in rings.iter_mut().enumerate() {
            if next[id] == u64::MAX {
                continue;
            }
            // Take what is ready on this ring, up to a batch, then move to the next one.
            for _ in 0..256 {
                match rx.try_read() {
                    Ok(grant) => {
                        let text = grant.to_vec();
                        drop(grant);
                        let (line, sum) = text.split_at(text.len() - 4);
                        let expect = record(id as u64, next[id]);
                        if line != expect.as_bytes()
                            || checksum(line) != u32::from_le_bytes(sum.try_into().unwrap())
                        {
                            return Err(format!("shipper {id}: record {} is wrong", next[id]));
                        }
                        bytes += text.len() as u64;
                        next[id] += 1;
                        progressed = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        if next[id] != records {
                            return Err(format!("shipper {id} left after {} records", next[id]));
                        }
                        next[id] = u64::MAX;
                        open -= 1;
                        break;
                    }
                    Err(e) => return Err(format!("shipper {id}: {e}")),
                }
            }
        }
        if progressed {
            idle_since = None;
        } else {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(30) {
                return Err("no record for 30 s".into());
            }
            // Nothing anywhere: yield the core briefly instead of spinning on every ring.
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    for mut child in children {
        let _ = child.wait();
    }
    let total = records * shippers;
    println!(
        "collected {total} records ({:.1} MB) from {shippers} shippers in {secs:.2} s: \
         {:.2} M records/s, every sequence and checksum intact",
        bytes as f64 / 1e6,
        total as f64 / secs / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

fn shipper(args: &Args) -> Result<ExitCode, String> {
    let name = args.string("name")?;
    let id: u64 = args.number("id", 0)?;
    let records: u64 = args.number("records", 200_000)?;
    let chan = Channel::open(Backing::posix(format!("{name}-{id}")), &options())
        .map_err(|e| format!("shipper {id}: {e}"))?;
    let mut tx = chan.producer().map_err(|e| format!("shipper {id}: {e}"))?;
    for seq in 0..records {
        let line = record(id, seq);
        let len = line.len() + 4;
        // Zero-copy: reserve room for the line and its checksum, write both in place.
        let mut grant = tx.grant(len).map_err(|e| format!("shipper {id} at {seq}: {e}"))?;
        grant.write_at(0, line.as_bytes());
        grant.write_at(line.len(), &checksum(line.as_bytes()).to_le_bytes());
        grant.commit(len);
    }
    Ok(ExitCode::SUCCESS)
}
