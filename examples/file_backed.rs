//! A ring in a regular file: it outlives the processes, can sit on disk and be larger than RAM.
//! The first run creates the file and writes messages, flushing them with `msync`; a later run
//! reads them back, even after a reboot.
//!
//! ```sh
//! cargo run --release --example file_backed -- --path /tmp/ring.shmchan --write 1000
//! cargo run --release --example file_backed -- --path /tmp/ring.shmchan --read
//! cargo run --release --example file_backed -- --path /tmp/ring.shmchan --read --remove
//! ```

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;

use common::{Args, SAMPLE_FINGERPRINT, Sample};
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, TryRecvError};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("file_backed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let args = Args::parse(&["read", "remove"])?;
    args.check_known(&["path", "write", "capacity"])?;
    let path = args.string("path")?;
    let options = Options::new()
        .capacity(args.number("capacity", 65536)?)
        .fingerprint(SAMPLE_FINGERPRINT)
        .remove_on_drop(false);

    if let Some(n) = args.get("write") {
        let n: u64 = n.parse().map_err(|_| format!("--write: {n:?} is not a number"))?;
        let chan = match Channel::<Sample>::create(Backing::file(&path), &options) {
            Ok(chan) => chan,
            Err(shmchan::OpenError::AlreadyExists) => {
                Channel::<Sample>::open(Backing::file(&path), &options)
                    .map_err(|e| e.to_string())?
            }
            Err(e) => return Err(format!("create {path}: {e}")),
        };
        let mut tx = chan.producer().map_err(|e| e.to_string())?;
        let first = tx.position();
        for i in 0..n {
            tx.try_send(Sample::new(first + i)).map_err(|e| format!("message {i}: {e}"))?;
        }
        tx.flush().map_err(|e| format!("msync: {e}"))?;
        println!("wrote {n} messages to {path} (positions {first}..{}), flushed", first + n);
    }

    if args.flag("read") {
        let chan = Channel::<Sample>::open(Backing::file(&path), &options)
            .map_err(|e| format!("open {path}: {e}"))?;
        let mut rx = chan.consumer().map_err(|e| e.to_string())?;
        let mut n = 0u64;
        loop {
            match rx.try_recv() {
                Ok(s) if s.is_intact() => n += 1,
                Ok(s) => return Err(format!("message {} is damaged", s.seq)),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        println!("read {n} messages from {path}; the ring is now empty");
    }

    if args.flag("remove") {
        std::fs::remove_file(&path).map_err(|e| format!("remove {path}: {e}"))?;
        println!("removed {path}");
    }
    Ok(ExitCode::SUCCESS)
}
