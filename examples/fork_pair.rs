//! A parent and the child it forks, over an anonymous shared mapping: no name in any namespace,
//! nothing to clean up, nothing another user can race for.
//!
//! ```sh
//! cargo run --release --example fork_pair -- --count 1000000
//! ```

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;

use common::{Args, SAMPLE_FINGERPRINT, Sample};
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, RecvError};

fn main() -> ExitCode {
    let count = match Args::parse(&[]).and_then(|a| {
        a.check_known(&["count"])?;
        a.number("count", 1_000_000u64)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fork_pair: {e}");
            return ExitCode::from(64);
        }
    };
    let options = Options::new().capacity(4096).fingerprint(SAMPLE_FINGERPRINT);
    let chan = match Channel::<Sample>::create(Backing::Anonymous, &options) {
        Ok(chan) => chan,
        Err(e) => {
            eprintln!("fork_pair: {e}");
            return ExitCode::FAILURE;
        }
    };

    // SAFETY: this program is single-threaded here; the child only uses the inherited mapping
    // and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("fork_pair: fork failed: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    if pid == 0 {
        // SAFETY: prctl only sets a flag: the child dies with its parent, never lingers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let code = produce(&chan, count);
        // SAFETY: leave the child without running the parent's destructors a second time.
        unsafe { libc::_exit(code) };
    }

    let code = consume(&chan, count);
    let mut status = 0;
    // SAFETY: reaping the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        eprintln!("fork_pair: child failed (status {status:#x})");
        return ExitCode::FAILURE;
    }
    code
}

fn produce(chan: &Channel<Sample>, count: u64) -> i32 {
    let Ok(mut tx) = chan.producer() else { return 3 };
    for seq in 0..count {
        if tx.send(Sample::new(seq)).is_err() {
            return 4;
        }
    }
    0
}

fn consume(chan: &Channel<Sample>, count: u64) -> ExitCode {
    let mut rx = match chan.consumer() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("fork_pair: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    let mut next = 0;
    loop {
        match rx.recv() {
            Ok(s) if s.seq == next && s.is_intact() => next += 1,
            Ok(s) => {
                println!("message {next}: got seq {} (intact: {})", s.seq, s.is_intact());
                return ExitCode::from(2);
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => {
                println!("after {next} messages: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if next != count {
        println!("child stopped after {next} of {count} messages");
        return ExitCode::from(2);
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{:.2} M msg/s from the forked child", count as f64 / secs / 1e6);
    println!("received {count} messages in order");
    ExitCode::SUCCESS
}
