//! Process identity and liveness, from `/proc/<pid>/stat`.
//!
//! A pid alone cannot identify a peer: the kernel recycles pids. A process is named by its pid
//! and its start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot), which together
//! are unique for the life of the host. A recorded peer is alive only if a process with that pid
//! exists now, started at the recorded time, and is not a zombie.

use std::io;

/// Who a process is: pid plus start time in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessId {
    pub pid: u32,
    pub start_ticks: u64,
}

/// What `/proc` says about a recorded process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    Alive,
    Dead,
}

/// The calling process's identity. Recomputed after `fork` (the pid changes).
pub(crate) fn current() -> io::Result<ProcessId> {
    let pid = std::process::id();
    match read_stat(pid)? {
        Some(stat) => Ok(ProcessId { pid, start_ticks: stat.start_ticks }),
        None => Err(io::Error::new(io::ErrorKind::NotFound, "/proc/self/stat is unreadable")),
    }
}

/// Whether the process `pid` that started at a time whose low bits are `start_low` (masked by
/// `start_mask`) still runs.
///
/// When `/proc` cannot show the pid (a `hidepid` mount, another pid namespace) but `kill(pid, 0)`
/// says it exists, the peer counts as alive: a live peer must never be declared dead.
pub(crate) fn liveness(pid: u32, start_low: u64, start_mask: u64) -> Liveness {
    if pid == 0 || pid > i32::MAX as u32 {
        return Liveness::Dead;
    }
    match read_stat(pid) {
        Ok(Some(stat)) => {
            if stat.state == b'Z'
                || stat.state == b'X'
                || stat.start_ticks & start_mask != start_low
            {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        }
        Ok(None) | Err(_) => {
            let exists = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None);
            match exists {
                Err(nix::errno::Errno::ESRCH) => Liveness::Dead,
                _ if pid_visible_in_proc() => Liveness::Dead,
                _ => Liveness::Alive,
            }
        }
    }
}

/// True when `/proc` lists our own pid, i.e. a missing entry really means a missing process.
fn pid_visible_in_proc() -> bool {
    std::path::Path::new(&format!("/proc/{}/stat", std::process::id())).exists()
}

struct Stat {
    state: u8,
    start_ticks: u64,
}

/// Reads state and start time of `pid`; `Ok(None)` if there is no such process.
fn read_stat(pid: u32) -> io::Result<Option<Stat>> {
    let text = match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_stat(&text)
        .map(Some)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/<pid>/stat"))
}

/// Parses `pid (comm) state ppid ... starttime ...`. The command name may itself contain spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.as_bytes().first().copied()?;
    // `state` is field 3; `starttime` is field 22, i.e. 19 fields further on.
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_ticks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = b"4242 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 123456 99 100\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, b'S');
        assert_eq!(stat.start_ticks, 123456);
    }

    #[test]
    fn rejects_truncated_stat() {
        assert!(parse_stat(b"1 (x) S 1 2").is_none());
        assert!(parse_stat(b"no parens").is_none());
    }

    #[test]
    fn self_is_alive_and_a_recycled_identity_is_not() {
        let me = current().unwrap();
        assert_eq!(liveness(me.pid, me.start_ticks, u64::MAX), Liveness::Alive);
        assert_eq!(liveness(me.pid, me.start_ticks.wrapping_add(1), u64::MAX), Liveness::Dead);
    }

    #[test]
    fn reaped_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(liveness(pid, 0, 0), Liveness::Dead);
    }
}
