//! The `shmchan` command end to end: every subcommand run as a process, against real segments.
//!
//! Each test uses its own segment names (prefix `shmchan-clitest-<pid>-`) and removes them;
//! every child runs under a deadline and is killed if it overruns.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shmchan");
const DEADLINE: Duration = Duration::from_secs(60);

/// A segment name unique to this test; the segment is removed when dropped.
struct Name(String);

impl Name {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Name(format!("shmchan-clitest-{}-{n}-{tag}", std::process::id()))
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.0));
    }
}

/// A running `shmchan`, killed and reaped when dropped. Its stdout and stderr are drained by
/// threads from the start, so a chatty child never blocks on a full pipe.
struct Running {
    child: Option<Child>,
    /// Drains stdout and stderr.
    readers: Option<[JoinHandle<Vec<u8>>; 2]>,
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = from.read_to_end(&mut v);
        v
    })
}

impl Running {
    fn spawn(args: &[&str], stdin: Stdio) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shmchan");
        let out = drain(child.stdout.take().expect("piped"));
        let err = drain(child.stderr.take().expect("piped"));
        Running { child: Some(child), readers: Some([out, err]) }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    /// Waits (bounded) and collects the output.
    fn finish(mut self) -> Output {
        let status = wait(self.child.as_mut().expect("running"));
        self.child = None;
        let [out, err] = self.readers.take().expect("readers");
        Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shmchan did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `shmchan args` with `input` on stdin.
fn run_with(args: &[&str], input: &[u8]) -> Output {
    let mut r = Running::spawn(args, Stdio::piped());
    let mut stdin = r.child().stdin.take().expect("piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = r.finish();
    writer.join().unwrap();
    out
}

fn run(args: &[&str]) -> Output {
    run_with(args, b"")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure as the CLI promises it: non-zero, one line on stderr naming `cause`, no panic.
fn assert_one_line_error(o: &Output, cause: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err:?}");
    assert!(err.contains(cause), "{err:?} should name {cause:?}");
}

/// Waits (bounded) until a live process holds an endpoint of `name`.
fn wait_attached(name: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let stat = run(&["stat", name, "--json", "--interval", "0"]);
        let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap_or_default();
        if v["endpoints"].as_array().is_some_and(|e| e.iter().any(|e| e["alive"] == true)) {
            return;
        }
        assert!(Instant::now() < deadline, "no endpoint of {name} attached in time");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn create(name: &str, flavor: &str, extra: &[&str]) {
    let mut args = vec!["create", name, "--flavor", flavor];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "create: {}", stderr(&o));
}

/// Streams `input` through `send` into `recv` (started first) and returns what came out.
fn pipe_through(name: &str, input: &[u8], recv_args: &[&str], format: &str) -> Output {
    let mut args = vec!["recv", name, "--format", format];
    args.extend_from_slice(recv_args);
    let receiver = Running::spawn(&args, Stdio::null());
    let sent = run_with(&["send", name, "--format", format], input);
    assert!(sent.status.success(), "send: {}", stderr(&sent));
    receiver.finish()
}

#[test]
fn a_million_lines_come_out_exactly_as_they_went_in() {
    let name = Name::new("seq");
    create(&name.0, "bytes", &[]);
    let input: String = (1..=1_000_000).map(|i| format!("{i}\n")).collect();
    let out = pipe_through(&name.0, input.as_bytes(), &["--count", "1000000"], "lines");
    assert!(out.status.success(), "recv: {}", stderr(&out));
    assert!(out.stdout == input.as_bytes(), "output differs from input");
}

#[test]
fn recv_exits_2_once_the_sender_is_gone_and_the_ring_drained() {
    let name = Name::new("drain");
    create(&name.0, "bytes", &["--capacity", "65536", "--max-message", "1000"]);
    let input = "alpha\n\nbeta gamma\n";
    let out = pipe_through(&name.0, input.as_bytes(), &[], "lines");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stdout(&out), input);
}

#[test]
fn recv_times_out_with_exit_3() {
    let name = Name::new("timeout");
    create(&name.0, "bytes", &[]);
    let t0 = Instant::now();
    let out = run(&["recv", &name.0, "--timeout", "0.3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

#[test]
fn len32_records_and_typed_frame_channels_round_trip() {
    let mut input = Vec::new();
    let records: Vec<Vec<u8>> =
        (0..500u32).map(|i| (0..i % 200).map(|b| b as u8).collect()).collect();
    for r in &records {
        input.extend_from_slice(&(r.len() as u32).to_le_bytes());
        input.extend_from_slice(r);
    }
    for (flavor, extra) in
        [("bytes", &[][..]), ("spsc", &["--max-message", "200"][..]), ("mpmc", &[][..])]
    {
        let name = Name::new(flavor);
        create(&name.0, flavor, extra);
        let out = pipe_through(&name.0, &input, &["--count", "500"], "len32");
        assert!(out.status.success(), "{flavor}: {}", stderr(&out));
        assert!(out.stdout == input, "{flavor}: output differs");
    }
}

#[test]
fn a_message_over_the_maximum_is_a_clear_error() {
    let name = Name::new("toolong");
    create(&name.0, "spsc", &["--max-message", "64"]);
    let long = format!("{}\n", "x".repeat(65));
    let out = run_with(&["send", &name.0], long.as_bytes());
    assert_one_line_error(&out, "more than the channel's maximum of 64");
}

#[test]
fn ls_and_stat_describe_a_live_channel_without_disturbing_it() {
    let name = Name::new("ls");
    create(&name.0, "mpmc", &["--capacity", "64", "--max-endpoints", "3"]);
    // A receiver and a sender that both stay attached while we look.
    let receiver = Running::spawn(&["recv", &name.0, "--count", "3"], Stdio::null());
    let mut sender = Running::spawn(&["send", &name.0], Stdio::piped());
    let mut feed = sender.child().stdin.take().expect("piped");
    feed.write_all(b"one\ntwo\n").unwrap();
    feed.flush().unwrap();
    // Both attached, both messages received.
    let deadline = Instant::now() + DEADLINE;
    let stat = loop {
        let o = run(&["stat", &name.0, "--json", "--interval", "0.05"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stat --json is JSON");
        let alive =
            v["endpoints"].as_array().unwrap().iter().filter(|e| e["alive"] == true).count();
        if alive == 2 && v["head"] == 2 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "endpoints never attached / messages never received: {v}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!((stat["tail"].as_u64(), stat["fill"].as_u64()), (Some(2), Some(0)));
    assert_eq!(stat["flavor"], "mpmc");
    assert_eq!(stat["corrupted"], false);
    assert_eq!(stat["lost_writes"], 0);
    assert!(stat["read_rate"].is_number() && stat["sleeping_receivers"].is_number());

    let ls = run(&["ls", "--json"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let rows: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls --json is JSON");
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == format!("/{}", name.0))
        .expect("ls lists the segment");
    assert_eq!((row["capacity"].as_u64(), row["max_endpoints"].as_u64()), (Some(64), Some(3)));
    let mut states: Vec<(&str, &str)> = row["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["role"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    states.sort();
    assert_eq!(states, [("receiver", "alive"), ("sender", "alive")]);

    let text = run(&["ls"]);
    let listed = stdout(&text);
    assert!(listed.lines().any(|l| l.contains(&name.0) && l.contains("mpmc")), "{listed}");

    let watch = run(&["stat", &name.0, "--watch", "--interval", "0.05", "--iterations", "2"]);
    assert!(watch.status.success(), "{}", stderr(&watch));
    assert_eq!(stdout(&watch).matches("\x1b[2J").count(), 2);
    assert!(stdout(&watch).contains("receiver[0]"), "{}", stdout(&watch));

    // The receiver still gets the third message: looking changed nothing.
    feed.write_all(b"three\n").unwrap();
    drop(feed);
    let sent = sender.finish();
    assert!(sent.status.success(), "{}", stderr(&sent));
    let out = receiver.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\ntwo\nthree\n");
}

#[test]
fn rm_removes_ours_and_refuses_anything_else() {
    let name = Name::new("rm");
    create(&name.0, "bytes", &[]);
    let o = run(&["rm", &format!("/{}", name.0)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!std::path::Path::new(&format!("/dev/shm/{}", name.0)).exists());

    let foreign = Name::new("foreign");
    std::fs::write(format!("/dev/shm/{}", foreign.0), vec![0xabu8; 4096]).unwrap();
    assert_one_line_error(&run(&["rm", &foreign.0]), "not a shmchan segment");
    assert!(std::path::Path::new(&format!("/dev/shm/{}", foreign.0)).exists());
    // ls ignores it.
    assert!(!stdout(&run(&["ls"])).contains(&foreign.0));

    // A symlink is not followed, and not removed either, even to a segment of ours.
    let target = Name::new("target");
    create(&target.0, "bytes", &[]);
    let link = Name::new("link");
    std::os::unix::fs::symlink(format!("/dev/shm/{}", target.0), format!("/dev/shm/{}", link.0))
        .unwrap();
    let o = run(&["rm", &link.0]);
    assert!(!o.status.success() && stderr(&o).contains("not removed"), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(format!("/dev/shm/{}", link.0)).is_ok());
}

#[test]
fn gc_removes_abandoned_segments_and_never_a_live_one() {
    let prefix = format!("shmchan-clitest-{}-gc", std::process::id());
    let dead = Name(format!("{prefix}-abandoned"));
    let live = Name(format!("{prefix}-live"));
    create(&dead.0, "bytes", &[]);
    create(&live.0, "bytes", &[]);
    let holder = Running::spawn(&["recv", &live.0, "--timeout", "30"], Stdio::null());
    // Until the holder's consumer is attached, the live segment looks abandoned too.
    wait_attached(&live.0);
    // Abandoned, but with a message nobody has read yet.
    let unread = Name(format!("{prefix}-unread"));
    create(&unread.0, "bytes", &[]);
    assert!(run_with(&["send", &unread.0], b"pending\n").status.success());

    let dry = run(&["gc", "--dry-run", "--prefix", &prefix]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stdout(&dry).contains(&format!("would remove /{}", dead.0)), "{}", stdout(&dry));
    assert!(!stdout(&dry).contains(&live.0));
    assert!(std::path::Path::new(&format!("/dev/shm/{}", dead.0)).exists());

    let gc = run(&["gc", "--prefix", &prefix]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(stdout(&gc).contains(&format!("removed /{}", dead.0)));
    assert!(!std::path::Path::new(&format!("/dev/shm/{}", dead.0)).exists());
    assert!(std::path::Path::new(&format!("/dev/shm/{}", live.0)).exists());
    assert!(stdout(&gc).contains(&format!("kept /{}: abandoned but holds", unread.0)));
    assert!(std::path::Path::new(&format!("/dev/shm/{}", unread.0)).exists());
    let gc = run(&["gc", "--discard-unread", "--prefix", &format!("{prefix}-unread")]);
    assert!(stdout(&gc).contains(&format!("removed /{}", unread.0)), "{}", stdout(&gc));
    drop(holder);
}

#[test]
fn bad_input_is_one_line_naming_the_cause() {
    let missing = Name::new("missing");
    for cmd in ["stat", "send", "recv", "rm"] {
        assert_one_line_error(&run(&[cmd, &missing.0]), "segment not found");
    }

    let foreign = Name::new("notours");
    std::fs::write(format!("/dev/shm/{}", foreign.0), vec![0x11u8; 4096]).unwrap();
    for cmd in ["stat", "send", "recv"] {
        assert_one_line_error(&run(&[cmd, &foreign.0]), "not a shmchan segment");
    }

    // A shmchan header with one byte of the capacity flipped: the checksum catches it.
    let damaged = Name::new("damaged");
    create(&damaged.0, "bytes", &[]);
    let path = format!("/dev/shm/{}", damaged.0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    for cmd in ["stat", "send", "recv"] {
        assert_one_line_error(&run(&[cmd, &damaged.0]), "corrupted");
    }

    // A typed channel of an application type is not a byte channel.
    let typed = Name::new("typed");
    let opts = shmchan::spsc::Options::new().remove_on_drop(false);
    drop(shmchan::spsc::Channel::<u64>::create(shmchan::Backing::posix(&typed.0), &opts).unwrap());
    assert_one_line_error(
        &run_with(&["send", &typed.0], b"x\n"),
        "8-byte elements of an application type",
    );

    let taken = Name::new("taken");
    create(&taken.0, "bytes", &[]);
    let again = run(&["create", &taken.0, "--flavor", "bytes"]);
    assert_one_line_error(&again, "already exists");
    let bad = run(&["create", &Name::new("big").0, "--flavor", "mpmc", "--max-message", "100000"]);
    assert_one_line_error(&bad, "exceeds the largest frame");
    let usage = run(&["stat"]);
    assert_one_line_error(&usage, "<NAME>");
    assert_eq!(usage.status.code(), Some(2));
    assert_one_line_error(&run(&["create", "x", "--flavor", "ring"]), "invalid value 'ring'");
    assert_one_line_error(&run(&["create", "x", "--flavor", "bytes", "--mode", "999"]), "octal");
    let invalid = run(&["stat", "a/b/c/../d"]);
    assert!(!invalid.status.success());
    assert!(!stderr(&invalid).contains("panicked"));
}

#[test]
fn create_honours_mode_and_file_paths() {
    use std::os::unix::fs::PermissionsExt;
    let name = Name::new("mode");
    create(&name.0, "spsc", &["--mode", "0640", "--capacity", "16"]);
    let meta = std::fs::metadata(format!("/dev/shm/{}", name.0)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);

    let dir = std::env::temp_dir().join(format!("shmchan-clitest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ring");
    let p = path.to_str().unwrap();
    create(p, "bytes", &["--capacity", "4096", "--max-message", "100"]);
    let out = pipe_through(p, b"on disk\n", &["--count", "1"], "lines");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "on disk\n");
    let o = run(&["rm", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bench_runs_saves_charts_and_reports_again_from_its_records() {
    let dir = std::env::temp_dir().join(format!("shmchan-clitest-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let args = [
        "bench",
        "--quick",
        "--json",
        "--save",
        &p("run.jsonl"),
        "--plot",
        &p("charts"),
        "--report",
        &p("report.md"),
        "floor/memcpy",
        "throughput/shmchan_spsc/64B",
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> =
        stdout(&o).lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    let want =
        ["floor/memcpy_4KiB", "floor/memcpy_4KiB_through_ring_area", "throughput/shmchan_spsc/64B"];
    assert_eq!(names, [&want[..], &["run"]].concat());
    assert!(rows.iter().take(3).all(|r| r["value"].as_f64().unwrap() > 0.0));
    let chart = std::fs::read_to_string(dir.join("charts/throughput.svg")).unwrap();
    assert!(chart.contains("<svg") && chart.contains("shmchan_spsc"));
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("shmchan_spsc"));

    let again = run(&["bench", "--input", &p("run.jsonl"), "--report", &p("again.md")]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(dir.join("again.md")).unwrap(), report);

    std::fs::write(dir.join("empty.jsonl"), "not json\n").unwrap();
    let none = run(&["bench", "--input", &p("empty.jsonl")]);
    assert_one_line_error(&none, "no benchmark records");
    std::fs::remove_dir_all(&dir).unwrap();
}
