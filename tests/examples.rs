//! The example programs as a user runs them: the producer/consumer pair over POSIX shm and its
//! exit codes, and the demo. The examples are built by `cargo test` next to this binary.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ChildGuard, ShmName};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} is not built (cargo test builds the examples)", path.display());
    path
}

fn run(cmd: &mut Command) -> ChildGuard {
    ChildGuard::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()))
}

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn the_pair_delivers_every_message_in_order() {
    let name = ShmName::new("pair");
    let count = "200000";
    let mut producer = run(Command::new(example("producer")).args([
        "--name",
        &name.0,
        "--count",
        count,
        "--capacity",
        "1024",
    ]));
    let mut consumer =
        run(Command::new(example("consumer")).args(["--name", &name.0, "--count", count]));
    let (status, out) = consumer.output_timeout(TIMEOUT);
    assert!(status.success(), "{out}");
    assert_eq!(out.lines().last(), Some("received 200000 messages in order"), "{out}");
    assert!(producer.wait_timeout(TIMEOUT).success());
}

#[test]
fn the_consumer_exits_2_naming_the_cause_when_the_producer_leaves_early() {
    let name = ShmName::new("early");
    let mut producer = run(Command::new(example("producer")).args([
        "--name",
        &name.0,
        "--count",
        "1000",
        "--capacity",
        "4096",
    ]));
    let mut consumer =
        run(Command::new(example("consumer")).args(["--name", &name.0, "--count", "5000"]));
    let (status, out) = consumer.output_timeout(TIMEOUT);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("producer disconnected after 1000 of 5000 messages"), "{out}");
    assert!(producer.wait_timeout(TIMEOUT).success());
}

#[test]
fn the_consumer_exits_2_when_the_producer_is_killed() {
    let name = ShmName::new("killed");
    let mut producer = run(Command::new(example("producer")).args([
        "--name",
        &name.0,
        "--count",
        "1000000000",
        "--capacity",
        "64",
    ]));
    let mut consumer = run(Command::new(example("consumer")).args([
        "--name",
        &name.0,
        "--count",
        "1000000000",
        "--quiet",
    ]));
    std::thread::sleep(Duration::from_millis(300));
    producer.kill(libc::SIGKILL);
    let (status, out) = consumer.output_timeout(TIMEOUT);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("producer disconnected after"), "{out}");
    // The killed producer could not remove its name.
    drop(name);
}

#[test]
fn the_consumer_exits_1_with_the_typed_error_when_open_fails() {
    let name = ShmName::new("open-fails");
    let mut consumer = run(Command::new(example("consumer")).args([
        "--name",
        &name.0,
        "--count",
        "1",
        "--open-timeout",
        "0.05",
    ]));
    let (status, out) = consumer.output_timeout(TIMEOUT);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("NotFound"), "{out}");

    // A segment of another type: the consumer names the mismatch.
    let _other = shmchan::spsc::Channel::<u8>::create(
        shmchan::Backing::posix(&name.0),
        &shmchan::spsc::Options::new(),
    )
    .unwrap();
    let mut consumer =
        run(Command::new(example("consumer")).args(["--name", &name.0, "--count", "1"]));
    let (status, out) = consumer.output_timeout(TIMEOUT);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("TypeMismatch"), "{out}");
}

#[test]
fn the_demo_runs_and_cleans_up() {
    let mut demo = run(Command::new(example("demo")).args(["--seconds", "1"]));
    let pid = demo.pid();
    let (status, out) = demo.output_timeout(TIMEOUT);
    assert!(status.success(), "{out}");
    assert!(out.contains("round trips: p50"), "{out}");
    assert!(out.contains("every checksum intact"), "{out}");
    let leftover = format!("/dev/shm/shmchan-demo-{pid}");
    assert!(!std::path::Path::new(&leftover).exists(), "the demo left {leftover}");
}

#[test]
fn the_mpmc_workers_do_every_job_exactly_once() {
    let mut run =
        run(Command::new(example("mpmc_workers")).args(["--workers", "3", "--jobs", "50000"]));
    let pid = run.pid();
    let (status, out) = run.output_timeout(TIMEOUT);
    assert!(status.success(), "{out}");
    assert!(out.contains("50000 jobs done exactly once"), "{out}");
    assert!(out.contains("lost messages: 0"), "{out}");
    for ring in ["jobs", "done"] {
        let leftover = format!("/dev/shm/shmchan-workers-{pid}-{ring}");
        assert!(!std::path::Path::new(&leftover).exists(), "left {leftover}");
    }
}

#[test]
fn the_log_shipper_collects_every_record() {
    let mut run =
        run(Command::new(example("log_shipper")).args(["--shippers", "3", "--records", "20000"]));
    let (status, out) = run.output_timeout(TIMEOUT);
    assert!(status.success(), "{out}");
    assert!(out.contains("collected 60000 records"), "{out}");
    assert!(out.contains("every sequence and checksum intact"), "{out}");
}
