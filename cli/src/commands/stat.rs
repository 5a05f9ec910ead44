//! `shmchan stat`: one segment in detail, once or refreshed like `top`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shmchan::inspect::{EndpointState, Kind, Snapshot, inspect};

use crate::frames::frame_size_of;
use crate::target::{SegmentName, describe};

/// The unit positions count in.
pub fn unit(kind: Kind) -> &'static str {
    if kind == Kind::Bytes { "bytes" } else { "messages" }
}

/// The owner's pid and `alive`, `dead` or `detached`.
fn pid_and_state(state: EndpointState) -> (u32, &'static str) {
    match state {
        EndpointState::Alive { pid } => (pid, "alive"),
        EndpointState::Dead { pid } => (pid, "dead"),
        EndpointState::Detached { pid } => (pid, "detached"),
    }
}

/// `producer 123 alive, consumer 456 dead`.
pub fn endpoints_text(snap: &Snapshot) -> String {
    if snap.endpoints.is_empty() {
        return "none attached yet".into();
    }
    let parts: Vec<String> = snap
        .endpoints
        .iter()
        .map(|e| {
            let (pid, state) = pid_and_state(e.state);
            if matches!(snap.kind, Kind::Mpmc) {
                let claim = match e.unfinished_claim {
                    Some(p) => format!(" (claim of position {p} unfinished)"),
                    None => String::new(),
                };
                format!("{}[{}] {pid} {state}{claim}", e.role.name(), e.index)
            } else {
                format!("{} {pid} {state}", e.role.name())
            }
        })
        .collect();
    parts.join(", ")
}

/// Element size or largest message, in words.
pub fn element_text(snap: &Snapshot) -> String {
    match (snap.kind, snap.max_message, frame_size_of(snap)) {
        (Kind::Bytes, Some(max), _) => format!("records <= {max} B"),
        (_, _, Some(n)) => format!("frames <= {n} B"),
        _ => format!("{} B elements", snap.elem_size),
    }
}

/// The JSON form of a snapshot (`ls --json`, `stat --json`).
pub fn snapshot_json(name: &SegmentName, snap: &Snapshot) -> Value {
    let endpoints: Vec<Value> = snap
        .endpoints
        .iter()
        .map(|e| {
            let (pid, state) = pid_and_state(e.state);
            json!({"role": e.role.name(), "index": e.index, "pid": pid, "state": state,
                   "alive": state == "alive", "unfinished_claim": e.unfinished_claim})
        })
        .collect();
    json!({
        "name": name.to_string(),
        "flavor": snap.kind.name(),
        "version": format!("{}.{}", snap.version.0, snap.version.1),
        "capacity": snap.capacity,
        "unit": unit(snap.kind),
        "element_size": snap.elem_size,
        "max_message": snap.max_message.or(frame_size_of(snap).map(|n| n as u64)),
        "max_endpoints": snap.max_endpoints,
        "segment_bytes": snap.segment_len,
        "tail": snap.tail,
        "head": snap.head,
        "fill": snap.fill(),
        "fill_ratio": snap.fill() as f64 / snap.capacity.max(1) as f64,
        "creator": {"pid": snap.creator_pid, "alive": snap.creator_alive},
        "endpoints": endpoints,
        "sleeping_senders": snap.sleeping_senders,
        "sleeping_receivers": snap.sleeping_receivers,
        "lost_writes": snap.lost_writes,
        "lost_reads": snap.lost_reads,
        "corrupted": snap.poisoned || !snap.problems.is_empty(),
        "problems": snap.problems,
        "in_use": snap.in_use(),
    })
}

/// Rates between two snapshots of the same segment, per second: (written, read).
fn rates(before: &Snapshot, after: &Snapshot, dt: Duration) -> (f64, f64) {
    let secs = dt.as_secs_f64().max(1e-9);
    (
        after.tail.wrapping_sub(before.tail) as f64 / secs,
        after.head.wrapping_sub(before.head) as f64 / secs,
    )
}

fn text(name: &SegmentName, snap: &Snapshot, rate: (f64, f64)) -> String {
    let u = unit(snap.kind);
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "{name}: {} v{}.{}, {} {u} of capacity, {}, segment {} bytes",
        snap.kind.name(),
        snap.version.0,
        snap.version.1,
        snap.capacity,
        element_text(snap),
        snap.segment_len
    ));
    line(format!(
        "positions   tail {} head {}   fill {} / {} ({:.1}%)",
        snap.tail,
        snap.head,
        snap.fill(),
        snap.capacity,
        100.0 * snap.fill() as f64 / snap.capacity.max(1) as f64
    ));
    line(format!("rate        written {:.0} {u}/s, read {:.0} {u}/s", rate.0, rate.1));
    line(format!(
        "sleepers    {} sender(s) waiting for room, {} receiver(s) waiting for data",
        snap.sleeping_senders, snap.sleeping_receivers
    ));
    line(format!(
        "creator     pid {} {}",
        snap.creator_pid,
        if snap.creator_alive { "alive" } else { "gone" }
    ));
    line(format!("endpoints   {}", endpoints_text(snap)));
    if let (Some(w), Some(r)) = (snap.lost_writes, snap.lost_reads) {
        line(format!(
            "dead claims {w} message(s) skipped (sender died), {r} freed (receiver died)"
        ));
    }
    let corrupted = if snap.poisoned {
        "yes: an endpoint flagged the segment".to_owned()
    } else if !snap.problems.is_empty() {
        format!("yes: {}", snap.problems.join("; "))
    } else {
        "no".to_owned()
    };
    line(format!("corrupted   {corrupted}"));
    out
}

pub struct StatArgs {
    pub name: SegmentName,
    pub json: bool,
    pub watch: bool,
    pub interval: Duration,
    /// Refreshes before `--watch` stops (tests); forever when `None`.
    pub iterations: Option<u64>,
}

/// Prints the segment once (the rate measured over `interval`), or every `interval` with
/// `--watch`. Maps read-only: the channel never notices.
pub fn run(args: &StatArgs) -> Result<(), String> {
    let target = args.name.target();
    let read = || inspect(&target).map_err(|e| describe(&e));
    let mut before = read()?;
    let mut at = Instant::now();
    let mut done = 0u64;
    let stdout = std::io::stdout();
    loop {
        std::thread::sleep(args.interval);
        let now = read()?;
        let dt = at.elapsed();
        at = Instant::now();
        let rate = rates(&before, &now, dt);
        let mut out = stdout.lock();
        let written = if args.json {
            let mut v = snapshot_json(&args.name, &now);
            v["write_rate"] = json!(rate.0);
            v["read_rate"] = json!(rate.1);
            writeln!(out, "{v}")
        } else if args.watch {
            // Home the cursor and clear the screen, as `top` does.
            write!(out, "\x1b[H\x1b[2J{}", text(&args.name, &now, rate))
        } else {
            write!(out, "{}", text(&args.name, &now, rate))
        };
        written.and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))?;
        done += 1;
        if !args.watch || args.iterations.is_some_and(|n| done >= n) {
            return Ok(());
        }
        before = now;
    }
}
