//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A POSIX shm name unique to this test process and call; removed when dropped.
pub struct ShmName(pub String);

impl ShmName {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        ShmName(format!("/shmchan-test-{tag}-{}-{n}", std::process::id()))
    }
}

impl Drop for ShmName {
    fn drop(&mut self) {
        let _ = shmchan::remove_posix(&self.0);
    }
}

/// A temporary file path unique to this test; removed when dropped.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempPath(
            std::env::temp_dir().join(format!("shmchan-test-{tag}-{}-{n}", std::process::id())),
        )
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A child process killed (and reaped) when dropped, so a failing test never leaves one behind.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> Self {
        ChildGuard(Some(cmd.stdin(Stdio::null()).spawn().expect("spawn helper")))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    /// Waits for exit at most `timeout`; kills the child and panics on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.0.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.0 = None;
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.0 = None;
                panic!("child did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for exit at most `timeout` and returns its stdout (the child must pipe it).
    pub fn output_timeout(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let mut out = self.0.as_mut().unwrap().stdout.take();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_string(&mut s);
            }
            s
        });
        let status = self.wait_timeout(timeout);
        // A grandchild holding the pipe open must not hang the test: give the reader a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = if reader.is_finished() { reader.join().unwrap() } else { String::new() };
        (status, out)
    }

    pub fn kill(&mut self, signal: i32) {
        if let Some(child) = &self.0 {
            // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
