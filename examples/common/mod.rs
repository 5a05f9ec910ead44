//! Pieces the example programs share: the message type, a clock, and argument parsing.
#![allow(dead_code)]

use std::time::Duration;

/// One message of the example pairs: a sequence number, the send time, a value and a checksum
/// over the rest, so the consumer can check order and integrity. 32 bytes: with its stamp, one
/// message fills a 64-byte slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Sample {
    pub seq: u64,
    pub sent_ns: u64,
    pub value: u64,
    pub checksum: u64,
}

/// The fingerprint every example uses for [`Sample`], so the programs agree whatever their
/// crate paths.
pub const SAMPLE_FINGERPRINT: u64 = 0x5341_4d50_4c45_0001;

impl Sample {
    pub fn new(seq: u64) -> Self {
        let value = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let sent_ns = now_ns();
        Sample { seq, sent_ns, value, checksum: Self::sum(seq, sent_ns, value) }
    }

    fn sum(seq: u64, sent_ns: u64, value: u64) -> u64 {
        (seq ^ sent_ns.rotate_left(17) ^ value.rotate_left(41)).wrapping_mul(0xff51_afd7_ed55_8ccd)
    }

    pub fn is_intact(&self) -> bool {
        self.checksum == Self::sum(self.seq, self.sent_ns, self.value)
            && self.value == self.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the host, so a receive time
/// minus a send time taken in another process is a one-way latency.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `--key value` arguments, with defaults; unknown keys are an error.
pub struct Args {
    pairs: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Args {
    pub fn parse(known_flags: &[&str]) -> Result<Args, String> {
        let mut pairs = Vec::new();
        let mut flags = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                flags.push("help".to_owned());
                continue;
            }
            let Some(key) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            if known_flags.contains(&key) {
                flags.push(key.to_owned());
                continue;
            }
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            pairs.push((key.to_owned(), value));
        }
        Ok(Args { pairs, flags })
    }

    pub fn flag(&self, key: &str) -> bool {
        self.flags.iter().any(|f| f == key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn string(&self, key: &str) -> Result<String, String> {
        self.get(key).map(str::to_owned).ok_or_else(|| format!("--{key} is required"))
    }

    pub fn number<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: {v:?} is not a number")),
        }
    }

    pub fn seconds(&self, key: &str, default: f64) -> Result<Duration, String> {
        Ok(Duration::from_secs_f64(self.number(key, default)?))
    }

    /// Fails on an option not in `keys`, and on `--help` with the list of options (their
    /// meaning is in the comment at the top of the example's source).
    pub fn check_known(&self, keys: &[&str]) -> Result<(), String> {
        if self.flag("help") {
            let options: Vec<String> = keys.iter().map(|k| format!("[--{k} VALUE]")).collect();
            return Err(format!("options: {}", options.join(" ")));
        }
        match self.pairs.iter().find(|(k, _)| !keys.contains(&k.as_str())) {
            Some((k, _)) => Err(format!("unknown option --{k}")),
            None => Ok(()),
        }
    }
}

/// `spin`, `sleep` or `default` (spin briefly, then sleep).
pub fn wait_strategy(name: &str) -> Result<shmchan::WaitStrategy, String> {
    match name {
        "spin" => Ok(shmchan::WaitStrategy::Spin),
        "sleep" => Ok(shmchan::WaitStrategy::Sleep),
        "default" => Ok(shmchan::WaitStrategy::default()),
        other => Err(format!("unknown wait strategy {other:?} (spin, sleep, default)")),
    }
}

/// Latency percentiles of a sample set, in nanoseconds.
pub fn percentiles(samples: &mut [u64]) -> Option<[(f64, u64); 5]> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Some([(50.0, at(0.5)), (90.0, at(0.9)), (99.0, at(0.99)), (99.9, at(0.999)), (100.0, at(1.0))])
}
