//! `shmchan send` and `shmchan recv`: standard input to a byte channel, a byte channel to
//! standard output.

use std::io::{BufRead, BufWriter, Read, Write};
use std::time::{Duration, Instant};

use shmchan::inspect::inspect;

use crate::frames::{ByteReceiver, ByteSender, Ended, open_receiver, open_sender};
use crate::target::{SegmentName, describe};

/// How messages are framed on standard input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One message per line; the newline is not part of the message.
    Lines,
    /// A 4-byte little-endian length, then that many bytes.
    Len32,
}

/// Reads the next message of `input` into `buf`; `false` at the end of input.
fn read_message(
    input: &mut impl BufRead,
    format: Format,
    buf: &mut Vec<u8>,
) -> Result<bool, String> {
    buf.clear();
    match format {
        Format::Lines => {
            let n = input.read_until(b'\n', buf).map_err(|e| format!("stdin: {e}"))?;
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            Ok(n > 0)
        }
        Format::Len32 => {
            let mut len = [0u8; 4];
            match input.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(format!("stdin: {e}")),
            }
            let len = u32::from_le_bytes(len) as u64;
            let got = input.take(len).read_to_end(buf).map_err(|e| format!("stdin: {e}"))?;
            if got as u64 != len {
                return Err(format!("stdin ends inside a record ({got} of {len} bytes)"));
            }
            Ok(true)
        }
    }
}

fn write_message(out: &mut impl Write, format: Format, msg: &[u8]) -> std::io::Result<()> {
    match format {
        Format::Lines => {
            out.write_all(msg)?;
            out.write_all(b"\n")
        }
        Format::Len32 => {
            let len = u32::try_from(msg.len()).map_err(std::io::Error::other)?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(msg)
        }
    }
}

/// Sends every message of standard input; detaches at the end of input (the receiver then
/// sees the channel disconnect once it has drained it). Returns the count.
pub fn send(name: &SegmentName, format: Format) -> Result<String, String> {
    let snap = inspect(&name.target()).map_err(|e| describe(&e))?;
    let mut tx: Box<dyn ByteSender> = open_sender(name.backing(), &snap)?;
    let max = tx.max_message();
    let mut input = std::io::stdin().lock();
    let mut buf = Vec::with_capacity(max.min(1 << 20));
    let mut sent = 0u64;
    while read_message(&mut input, format, &mut buf)? {
        if buf.len() > max {
            return Err(format!(
                "message {} is {} bytes, more than the channel's maximum of {max}",
                sent + 1,
                buf.len()
            ));
        }
        tx.send(&buf).map_err(|e| format!("after {sent} messages: {e}"))?;
        sent += 1;
    }
    Ok(format!("sent {sent} messages"))
}

/// How `recv` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RecvEnd {
    /// `--count` messages were received.
    Count,
    /// Every sender is gone and the ring is drained.
    Disconnected,
    /// Nothing arrived for `--timeout`.
    Timeout,
}

pub struct RecvArgs {
    pub name: SegmentName,
    pub count: Option<u64>,
    pub timeout: Option<Duration>,
    pub format: Format,
}

/// Longest a blocked receive waits before it flushes output and checks the timeout again.
const SLICE: Duration = Duration::from_millis(100);

/// Writes messages to standard output until `--count`, disconnection or `--timeout` of
/// silence. Output is flushed whenever the channel runs empty, so a reader sees messages as
/// they come.
pub fn recv(args: &RecvArgs) -> Result<(RecvEnd, u64), String> {
    let snap = inspect(&args.name.target()).map_err(|e| describe(&e))?;
    let mut rx: Box<dyn ByteReceiver> = open_receiver(args.name.backing(), &snap)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let io = |e: std::io::Error| format!("stdout: {e}");
    let mut buf = Vec::new();
    let mut received = 0u64;
    let mut last_message = Instant::now();
    let end = loop {
        if args.count.is_some_and(|n| received >= n) {
            break RecvEnd::Count;
        }
        match rx.try_recv(&mut buf)? {
            Ok(()) => {}
            Err(Ended::Disconnected) => break RecvEnd::Disconnected,
            Err(Ended::Empty) => {
                out.flush().map_err(io)?;
                let wait = match args.timeout {
                    Some(t) => {
                        let left = t.saturating_sub(last_message.elapsed());
                        if left.is_zero() {
                            break RecvEnd::Timeout;
                        }
                        left.min(SLICE)
                    }
                    None => SLICE,
                };
                match rx.recv_timeout(&mut buf, wait)? {
                    Ok(()) => {}
                    Err(Ended::Disconnected) => break RecvEnd::Disconnected,
                    Err(Ended::Empty) => continue,
                }
            }
        }
        write_message(&mut out, args.format, &buf).map_err(io)?;
        received += 1;
        last_message = Instant::now();
    };
    out.flush().map_err(io)?;
    Ok((end, received))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_formats() {
        let mut buf = Vec::new();
        let mut lines = &b"one\n\nthree"[..];
        let mut got = Vec::new();
        while read_message(&mut lines, Format::Lines, &mut buf).unwrap() {
            got.push(buf.clone());
        }
        assert_eq!(got, [&b"one"[..], b"", b"three"]);

        let mut records = &b"\x03\x00\x00\x00abc\x00\x00\x00\x00"[..];
        assert!(read_message(&mut records, Format::Len32, &mut buf).unwrap());
        assert_eq!(buf, b"abc");
        assert!(read_message(&mut records, Format::Len32, &mut buf).unwrap());
        assert!(buf.is_empty());
        assert!(!read_message(&mut records, Format::Len32, &mut buf).unwrap());

        let mut cut = &b"\x05\x00\x00\x00ab"[..];
        assert!(read_message(&mut cut, Format::Len32, &mut buf).is_err());
    }

    #[test]
    fn output_formats() {
        let mut out = Vec::new();
        write_message(&mut out, Format::Lines, b"x").unwrap();
        write_message(&mut out, Format::Len32, b"yz").unwrap();
        assert_eq!(out, b"x\n\x02\x00\x00\x00yz");
    }
}
