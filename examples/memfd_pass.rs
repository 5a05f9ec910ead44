//! Two unrelated processes sharing a sealed memfd: the creator sends the fd over a Unix socket
//! (`SCM_RIGHTS`); the receiver checks its seals, type and size before mapping it. No name
//! exists anywhere, and the seals mean no peer can shrink the object under our mapping.
//!
//! ```sh
//! cargo run --release --example memfd_pass -- --count 1000000
//! ```
//! The program plays the creator and starts a copy of itself as the receiver.

#[path = "common/mod.rs"]
mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use common::{Args, SAMPLE_FINGERPRINT, Sample};
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, RecvError};

fn main() -> ExitCode {
    let args = match Args::parse(&[]).and_then(|a| {
        a.check_known(&["count", "socket", "role"])?;
        Ok(a)
    }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("memfd_pass: {e}");
            return ExitCode::from(64);
        }
    };
    let result = match args.get("role") {
        Some("receiver") => receiver(&args),
        _ => creator(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("memfd_pass: {e}");
        ExitCode::FAILURE
    })
}

fn options() -> Options {
    Options::new().capacity(4096).fingerprint(SAMPLE_FINGERPRINT)
}

fn creator(args: &Args) -> Result<ExitCode, String> {
    let count: u64 = args.number("count", 1_000_000)?;
    let chan = Channel::<Sample>::create(Backing::Memfd, &options()).map_err(|e| e.to_string())?;
    let mut tx = chan.producer().map_err(|e| e.to_string())?;

    let socket =
        std::env::temp_dir().join(format!("shmchan-memfd-pass-{}.sock", std::process::id()));
    let listener = UnixListener::bind(&socket).map_err(|e| format!("bind: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["--role", "receiver", "--count", &count.to_string(), "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn receiver: {e}"))?;
    let accepted = listener.accept();
    let _ = std::fs::remove_file(&socket);
    let (stream, _) = accepted.map_err(|e| format!("accept: {e}"))?;
    shmchan::send_fd(&stream, chan.fd().expect("a memfd channel has an fd"))
        .map_err(|e| format!("send fd: {e}"))?;
    println!("sent the sealed memfd to process {}", child.id());

    for seq in 0..count {
        tx.send(Sample::new(seq)).map_err(|e| format!("after {seq} messages: {e}"))?;
    }
    drop(tx);
    let status = child.wait().map_err(|e| e.to_string())?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn receiver(args: &Args) -> Result<ExitCode, String> {
    let count: u64 = args.number("count", 1_000_000)?;
    let stream =
        UnixStream::connect(args.string("socket")?).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let fd = shmchan::recv_fd(&stream).map_err(|e| format!("receive fd: {e}"))?;
    let chan = Channel::<Sample>::open(Backing::Fd(fd), &options())
        .map_err(|e| format!("open the received fd: {e}"))?;
    let mut rx = chan.consumer().map_err(|e| e.to_string())?;
    let mut next = 0;
    loop {
        match rx.recv() {
            Ok(s) if s.seq == next && s.is_intact() => next += 1,
            Ok(s) => return Err(format!("message {next}: got seq {}", s.seq)),
            Err(RecvError::Disconnected) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    if next != count {
        println!("creator stopped after {next} of {count} messages");
        return Ok(ExitCode::from(2));
    }
    println!("received {count} messages in order");
    Ok(ExitCode::SUCCESS)
}
