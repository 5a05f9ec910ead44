//! iceoryx2 rows (cargo feature `iceoryx2`, off by default): publish-subscribe latency and
//! throughput between two processes, at the sizes of the transport comparison.
//!
//! Building the feature needs libclang (iceoryx2's POSIX layer generates its bindings with
//! bindgen): on a fresh Debian or Ubuntu machine, `apt-get install libclang-dev` first.
//!
//! # Method
//!
//! A message of `size` bytes is a `Message`: a sequence number, then a body. Senders loan a
//! sample (`loan_uninit`), write the whole message in place (the sequence number, then a fill
//! of the body, so every byte of the message is produced as in shmchan's zero-copy byte-ring
//! rows) and `send` it: the zero-copy hand-off iceoryx2 is built for. Receivers read only the
//! sequence number, as a receiver that consumes in place would start. Both sides busy-poll `receive()`. The
//! services allow one publisher and one subscriber, like an SPSC ring.
//!
//! - `latency/iceoryx2_pubsub/<size>`: ping-pong over two services, one each way; the peer
//!   echoes every sequence number. One-way latency is half the round trip.
//! - `throughput/iceoryx2_pubsub/<size>`: on request (over a second service) the peer publishes
//!   a burst of messages; this process receives them and checks every sequence number. The rate
//!   counts from the request to the last message; median of the repetitions after one uncounted
//!   warm-up. Nothing may be dropped, so the data service is created with
//!   `enable_safe_overflow(false)` (iceoryx2's default overwrites the oldest sample of a full
//!   subscriber buffer), the publisher uses `UnableToDeliverStrategy::Block` (a `send` into a
//!   full buffer waits until the subscriber takes a sample: iceoryx2 yields the CPU up to 10 000
//!   times, then sleeps 100 µs at a time, 10 ms after a hundred such sleeps), and the subscriber
//!   buffer holds as many samples as shmchan's throughput rings have slots (256 KiB worth, 64
//!   to 4096).
//!
//! # Isolation and cleanup
//!
//! Each step runs iceoryx2 in a `Sandbox`: a config built in code (so no `iceoryx2.toml` of
//! the machine applies), the root directory `$TMPDIR/shmchan-ipc-bench-<pid>-<n>-iceoryx2`
//! instead of `/tmp/iceoryx2`, and that tag plus `_` as the prefix of every shared memory
//! object; the service names carry the tag too. iceoryx2 removes its shared memory objects and
//! node files when the last port and node drop, but keeps the directories it created (the root,
//! `nodes/`, `services/`): the sandbox removes those, and unlinks any `/dev/shm` object with its
//! prefix that a failed step left. Nothing is written under `/tmp/iceoryx2`.
//!
//! Nodes are created with `SignalHandlingMode::Disabled`, so iceoryx2 installs no SIGINT or
//! SIGTERM handler in the suite. iceoryx2's default logger prints to stdout, which is the JSON
//! stream here, and the crate cannot redirect it without its `logger_log` feature; so this
//! process lowers iceoryx2's logging to fatal messages only (every failure still arrives as an
//! error value), while peers log warnings, their stdout sent to our stderr.

use std::fmt::Debug;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use iceoryx2::config::Config;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::{
    LogLevel, Node, NodeBuilder, PortFactory, ServiceName, SignalHandlingMode,
    UnableToDeliverStrategy, ZeroCopySend, ipc, set_log_level,
};
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as PubSubService;

use super::harness::{IdleLimit, PEER_LIMIT, Peer};
use super::mpmc_rows::{counted_messages, round_trips, warmup_messages};
use super::spsc_rows::capacity_for;
use super::{Ctx, Latency, Plan, Rates, Record, Result, Step, size_name};

const TRANSPORT: &str = "iceoryx2_pubsub";
const ECHO_ROLE: &str = "iceoryx2_echo";
const SOURCE_ROLE: &str = "iceoryx2_source";
/// The sequence number (latency) or burst length (throughput) that tells a peer to exit.
const STOP: u64 = u64::MAX;

/// One message: the sequence number, then `BODY_WORDS` words the sender fills in place.
#[derive(Debug, ZeroCopySend)]
#[repr(C)]
pub(crate) struct Message<const BODY_WORDS: usize> {
    seq: u64,
    body: [MaybeUninit<u64>; BODY_WORDS],
}

/// Calls `$f::<BODY_WORDS>(args)` for a message of `$bytes` bytes.
macro_rules! by_size {
    ($bytes:expr, $f:ident($($arg:expr),*)) => {
        match $bytes {
            8 => $f::<0>($($arg),*),
            64 => $f::<7>($($arg),*),
            1024 => $f::<127>($($arg),*),
            4096 => $f::<511>($($arg),*),
            65536 => $f::<8191>($($arg),*),
            other => Err(format!("no iceoryx2 message type of {other} bytes").into()),
        }
    };
}

pub(crate) fn steps(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for &size in &plan.sizes {
        let name = format!("latency/{TRANSPORT}/{}", size_name(size));
        steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
            let (samples, budget) = (ctx.plan.spin_samples, ctx.plan.latency_budget);
            let s = by_size!(size, pubsub_latency(samples, budget, ctx.there))?;
            ctx.emit(
                Record::latency(&name, &s)
                    .of("latency", TRANSPORT, size)
                    .text("wait", "spin")
                    .boolean("zero_copy", true)
                    .text("payload", "written_in_place_read_seq_only"),
            );
            Ok(())
        }));
    }
    for &size in &plan.sizes {
        let name = format!("throughput/{TRANSPORT}/{}", size_name(size));
        steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
            let t = by_size!(size, pubsub_throughput(&ctx.plan, ctx.there))?;
            ctx.emit(
                Record::throughput(&name, size, &t)
                    .of("throughput", TRANSPORT, size)
                    .text("wait", "spin")
                    .text("full_buffer", "block")
                    .num("buffer", capacity_for(size) as f64)
                    .boolean("zero_copy", true)
                    .text("payload", "written_in_place_read_seq_only"),
            );
            Ok(())
        }));
    }
    steps
}

/// The peer roles: `names` are the sandbox root, the prefix and the two service names; `param`
/// is the message size in bytes.
pub(crate) fn child(role: &str, names: &[&str], param: &str) -> Option<Result<()>> {
    if role != ECHO_ROLE && role != SOURCE_ROLE {
        return None;
    }
    let run = || -> Result<()> {
        let [root, prefix, first, second] = names else {
            return Err(format!("expected 4 names, got {names:?}").into());
        };
        set_log_level(LogLevel::Warn);
        let node = create_node(&sandbox_config(root, prefix)?)?;
        let size: usize = param.parse()?;
        if role == ECHO_ROLE {
            by_size!(size, echo_child(&node, first, second))
        } else {
            by_size!(size, source_child(&node, first, second))
        }
    };
    Some(run())
}

/// A private iceoryx2 world for one step (see the module doc); removed when dropped.
struct Sandbox {
    /// `shmchan-ipc-bench-<pid>-<n>-iceoryx2`: the root directory's name, the start of the file
    /// prefix and of the service names.
    tag: String,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("shmchan-ipc-bench-{}-{n}-iceoryx2", std::process::id());
        Sandbox { root: std::env::temp_dir().join(&tag), tag }
    }

    fn prefix(&self) -> String {
        format!("{}_", self.tag)
    }

    fn root(&self) -> Result<&str> {
        self.root.to_str().ok_or_else(|| format!("temp dir {:?} is not UTF-8", self.root).into())
    }

    fn service_name(&self, role: &str) -> String {
        format!("{}/{role}", self.tag)
    }

    /// This process's node in the sandbox. iceoryx2 logs only fatal messages from here on (its
    /// logger writes to stdout, the JSON stream).
    fn node(&self) -> Result<Node<ipc::Service>> {
        set_log_level(LogLevel::Fatal);
        create_node(&sandbox_config(self.root()?, &self.prefix())?)
    }

    /// Spawns a peer in the same sandbox, its iceoryx2 log on our stderr.
    fn spawn(
        &self,
        role: &str,
        services: [&str; 2],
        size: usize,
        cpu: Option<usize>,
    ) -> Result<Peer> {
        let names = [self.root()?, &self.prefix(), services[0], services[1]];
        Peer::spawn_configured(role, &names, &size.to_string(), cpu, |cmd| {
            cmd.stdout(std::io::stderr());
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // iceoryx2 keeps the directories it made; a failed step may also leave files and
        // shared memory objects. Everything here is this step's (the tag is unique).
        let _ = std::fs::remove_dir_all(&self.root);
        let prefix = self.prefix();
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            for entry in entries.flatten() {
                if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// iceoryx2's default config with the sandbox's root directory and file prefix.
fn sandbox_config(root: &str, prefix: &str) -> Result<Config> {
    let mut config = Config::default();
    config.global.set_root_path(&root.try_into()?);
    config.global.prefix = prefix.try_into()?;
    Ok(config)
}

fn create_node(config: &Config) -> Result<Node<ipc::Service>> {
    Ok(NodeBuilder::new()
        .config(config)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()?)
}

type Service<T> = PubSubService<ipc::Service, T, ()>;

/// A service for one publisher and one subscriber of `T`; `create` or open the creator's.
/// `no_overflow` makes a full subscriber buffer hold the publisher back instead of losing the
/// oldest sample (a requirement both sides must state: iceoryx2 checks it when opening).
fn pubsub_service<T: Debug + ZeroCopySend>(
    node: &Node<ipc::Service>,
    name: &str,
    buffer: usize,
    no_overflow: bool,
    create: bool,
) -> Result<Service<T>> {
    let name: ServiceName = name.try_into()?;
    let builder = node
        .service_builder(&name)
        .publish_subscribe::<T>()
        .max_publishers(1)
        .max_subscribers(1)
        .max_nodes(2)
        .subscriber_max_buffer_size(buffer)
        .history_size(0)
        .enable_safe_overflow(!no_overflow);
    Ok(if create { builder.create()? } else { builder.open()? })
}

/// Loans a sample, writes the message (`seq`, then the body) in place and sends it; fails unless the one subscriber got it.
fn send_seq<const B: usize>(
    publisher: &Publisher<ipc::Service, Message<B>, ()>,
    seq: u64,
) -> Result<()> {
    let mut sample = publisher.loan_uninit()?;
    let slot: *mut Message<B> = sample.payload_mut().as_mut_ptr();
    // SAFETY: `slot` is the loaned payload, valid for writes of a `Message<B>` and aligned for
    // it (iceoryx2 lays samples out with the payload type's alignment); `&raw mut` writes the
    // field without forming a reference to the rest of the payload.
    unsafe { (&raw mut (*slot).seq).write(seq) };
    // SAFETY: as above, for the body: B words inside the loaned payload, written in place (the
    // producer's share of the work, as in the other rows that build the message in the ring).
    unsafe { (&raw mut (*slot).body).cast::<u64>().write_bytes(0x5a, B) };
    // SAFETY: `seq` and `body` are written just above: the payload is a valid `Message<B>`.
    let sample = unsafe { sample.assume_init() };
    match sample.send()? {
        1 => Ok(()),
        n => Err(format!("message {seq} reached {n} subscribers, not 1").into()),
    }
}

/// The next sequence number from `subscriber`, busy-polling at most [`PEER_LIMIT`].
fn receive_seq<const B: usize>(
    subscriber: &Subscriber<ipc::Service, Message<B>, ()>,
) -> Result<u64> {
    let mut idle = IdleLimit::new();
    loop {
        if let Some(sample) = subscriber.receive()? {
            // Dropping the sample hands its chunk back to the publisher.
            return Ok(sample.payload().seq);
        }
        idle.spin()?;
    }
}

/// Waits (at most [`PEER_LIMIT`]) until the peer has subscribed to `service`: a sample sent
/// before would reach nobody. Fails early if the peer died.
fn await_subscriber<T: Debug + ZeroCopySend>(service: &Service<T>, peer: &Peer) -> Result<()> {
    let deadline = Instant::now() + PEER_LIMIT;
    while service.dynamic_config().number_of_subscribers() == 0 {
        peer.check()?;
        if Instant::now() >= deadline {
            return Err(format!("the peer did not subscribe within {PEER_LIMIT:?}").into());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

/// Ping-pong: this process publishes on `ping`, the peer echoes on `pong`.
fn pubsub_latency<const B: usize>(
    samples: usize,
    budget: Duration,
    cpu: Option<usize>,
) -> Result<Latency> {
    let sandbox = Sandbox::new();
    let node = sandbox.node()?;
    let (ping_name, pong_name) = (sandbox.service_name("ping"), sandbox.service_name("pong"));
    // One message is in flight at a time: iceoryx2's default buffer of 2 is plenty.
    let ping = pubsub_service::<Message<B>>(&node, &ping_name, 2, false, true)?;
    let pong = pubsub_service::<Message<B>>(&node, &pong_name, 2, false, true)?;
    let publisher = ping.publisher_builder().create()?;
    let subscriber = pong.subscriber_builder().create()?;
    let size = size_of::<Message<B>>();
    let peer = sandbox.spawn(ECHO_ROLE, [&ping_name, &pong_name], size, cpu)?;
    await_subscriber(&ping, &peer)?;

    let rtt = round_trips(samples, budget, |seq| {
        send_seq(&publisher, seq)?;
        let back = receive_seq(&subscriber)?;
        if back != seq {
            return Err(format!("echo returned {back} for {seq}").into());
        }
        Ok(())
    })?;
    send_seq(&publisher, STOP)?;
    peer.finish()?;
    Ok(Latency::from_round_trips(&rtt))
}

fn echo_child<const B: usize>(node: &Node<ipc::Service>, ping: &str, pong: &str) -> Result<()> {
    let ping = pubsub_service::<Message<B>>(node, ping, 2, false, false)?;
    let pong = pubsub_service::<Message<B>>(node, pong, 2, false, false)?;
    // The publisher first: once the parent sees our subscriber, our reply path exists.
    let publisher = pong.publisher_builder().create()?;
    let subscriber = ping.subscriber_builder().create()?;
    loop {
        let seq = receive_seq(&subscriber)?;
        if seq == STOP {
            return Ok(());
        }
        send_seq(&publisher, seq)?;
    }
}

/// The peer publishes bursts on `data` when asked over `go`; this process times their arrival.
fn pubsub_throughput<const B: usize>(plan: &Plan, cpu: Option<usize>) -> Result<Rates> {
    let size = size_of::<Message<B>>();
    let sandbox = Sandbox::new();
    let node = sandbox.node()?;
    let (data_name, go_name) = (sandbox.service_name("data"), sandbox.service_name("go"));
    let buffer = capacity_for(size);
    let data = pubsub_service::<Message<B>>(&node, &data_name, buffer, true, true)?;
    let go = pubsub_service::<Message<0>>(&node, &go_name, 2, true, true)?;
    let subscriber = data.subscriber_builder().buffer_size(buffer).create()?;
    let go_publisher = go.publisher_builder().create()?;
    let peer = sandbox.spawn(SOURCE_ROLE, [&data_name, &go_name], size, cpu)?;
    await_subscriber(&go, &peer)?;

    let burst = |n: usize| -> Result<f64> {
        let t0 = Instant::now();
        send_seq(&go_publisher, n as u64)?;
        for expected in 0..n as u64 {
            let seq = receive_seq(&subscriber)?;
            if seq != expected {
                return Err(format!("got message {seq} for {expected}").into());
            }
        }
        Ok(n as f64 / t0.elapsed().as_secs_f64())
    };
    // An uncounted warm-up repetition (caches, scheduler) also sizes the counted ones to the
    // plan's time budget.
    let warmup = warmup_messages(plan, size);
    let t0 = Instant::now();
    burst(warmup)?;
    let n = counted_messages(plan, size, warmup, t0.elapsed());
    let rates = (0..plan.reps).map(|_| burst(n)).collect::<Result<Vec<_>>>()?;
    send_seq(&go_publisher, STOP)?;
    peer.finish()?;
    Ok(Rates::from(rates, n))
}

fn source_child<const B: usize>(node: &Node<ipc::Service>, data: &str, go: &str) -> Result<()> {
    let data = pubsub_service::<Message<B>>(node, data, 2, true, false)?;
    let go = pubsub_service::<Message<0>>(node, go, 2, true, false)?;
    // The publisher first: once the parent sees our `go` subscriber, the data path exists.
    // `Block` waits without a limit, but only on the parent, which bounds its own waits and
    // kills this process when it gives up (or dies: see `ChildArgs::from_env`).
    let publisher = data
        .publisher_builder()
        .unable_to_deliver_strategy(UnableToDeliverStrategy::Block)
        .create()?;
    let go_subscriber = go.subscriber_builder().create()?;
    loop {
        let n = receive_seq(&go_subscriber)?;
        if n == STOP {
            return Ok(());
        }
        for seq in 0..n {
            send_seq(&publisher, seq)?;
        }
    }
}
