//! The cross-process benchmark suite: shmchan between processes, beside the floors, the kernel
//! transports and the thread-only queues it is judged against, all measured in one run.
//!
//! `cargo bench --bench ipc` and `shmchan bench` run this same code. A run is a list of
//! [`Step`]s; each measures one thing and emits [`Record`]s (JSON lines, see [`Record`] for the
//! fields), which an [`Observer`] prints, counts for a progress bar, or keeps for the charts.
//!
//! Peers are this same executable re-executed with [`harness::ROLE_ENV`] naming their role; a
//! program that runs the suite calls [`run_child_if_requested`] first thing in `main`. Every
//! child is killed and reaped when its guard drops (error, panic or timeout), a watchdog kills
//! children that overrun their deadline, and every object is created under a fresh name and
//! removed by its creator.
//!
//! Layout: [`harness`] (children, CPUs, raw shared memory), [`stats`] (HdrHistogram
//! percentiles, rates, records), then one module per family of rows: [`floors`] (what the
//! hardware allows), [`spsc_rows`], [`mpmc_rows`] and [`bytes_rows`] (shmchan), [`threads`]
//! (rtrb, ArrayQueue, crossbeam-channel between threads), [`kernel`] (pipes, Unix sockets,
//! eventfd, POSIX message queues) and [`backings`] (POSIX shm vs file vs anonymous vs memfd vs
//! System V), and, with the cargo feature `iceoryx2`, `iceoryx2_rows` (iceoryx2
//! publish-subscribe). [`plot`] turns records into SVG charts and [`report`] into Markdown
//! tables.

pub mod harness;
pub mod stats;

pub mod backings;
pub mod bytes_rows;
pub mod floors;
#[cfg(feature = "iceoryx2")]
pub mod iceoryx2_rows;
pub mod kernel;
pub mod mpmc_rows;
pub mod plot;
pub mod report;
pub mod spsc_rows;
pub mod threads;

use std::time::{Duration, Instant};

pub use stats::{Latency, Rates, Record, size_name};

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The message sizes of the transport comparison.
pub const SIZES: [usize; 5] = [8, 64, 1024, 4096, 64 * 1024];

/// Sample counts, time budgets and sizes of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Round trips for spinning ping-pongs (~0.1-1 µs each).
    pub spin_samples: usize,
    /// Round trips for sleeping ping-pongs (tens of µs each).
    pub sleep_samples: usize,
    /// Throughput repetitions; the median is reported.
    pub reps: usize,
    /// Bytes moved per throughput repetition (message count = bytes / size).
    pub rep_bytes: usize,
    /// Time spent copying in the memcpy floor.
    pub memcpy_time: Duration,
    /// Messages per MPMC (and ArrayQueue) repetition, over all senders.
    pub mpmc_messages: usize,
    /// MPMC repetitions (each with fresh processes and segments); the median is reported.
    pub mpmc_reps: usize,
    /// Time each latency measurement of the transport comparison may take (after warm-up).
    pub latency_budget: Duration,
    /// Time each throughput repetition of the transport comparison may take.
    pub throughput_budget: Duration,
    /// Message sizes of the transport comparison.
    pub sizes: Vec<usize>,
}

impl Plan {
    /// Round trips for a ping-pong whose sides spin (`true`) or sleep when they wait.
    pub fn latency_samples(&self, spinning: bool) -> usize {
        if spinning { self.spin_samples } else { self.sleep_samples }
    }

    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                quick,
                spin_samples: 50_000,
                sleep_samples: 3_000,
                reps: 3,
                rep_bytes: 8 << 20,
                memcpy_time: Duration::from_millis(100),
                mpmc_messages: 200_000,
                mpmc_reps: 3,
                latency_budget: Duration::from_millis(60),
                throughput_budget: Duration::from_millis(40),
                sizes: SIZES.to_vec(),
            }
        } else {
            Plan {
                quick,
                spin_samples: 1_000_000,
                sleep_samples: 50_000,
                reps: 7,
                rep_bytes: 64 << 20,
                memcpy_time: Duration::from_secs(1),
                mpmc_messages: 2_000_000,
                mpmc_reps: 5,
                latency_budget: Duration::from_millis(700),
                throughput_budget: Duration::from_millis(250),
                sizes: SIZES.to_vec(),
            }
        }
    }

    /// Messages per throughput repetition of `size` bytes.
    pub fn messages(&self, size: usize) -> usize {
        (self.rep_bytes / size).clamp(10_000, 32_000_000)
    }
}

/// The figures the ratio rows are computed from; steps fill in what they measure.
#[derive(Default, Debug)]
pub struct Figures {
    pub cacheline_p50: f64,
    pub futex_p50: f64,
    pub spin_8_p50: f64,
    pub sleep_8_p50: f64,
    pub memcpy_bytes_per_s: f64,
    /// The same copies, into consecutive pieces of a byte-ring-sized area.
    pub memcpy_ring_area_bytes_per_s: f64,
    pub rtrb_per_message: f64,
    pub rtrb_chunked: f64,
    pub per_message_8: f64,
    pub batched_8: f64,
    pub bytes_4k_per_s: f64,
    pub plain_ring_bytes_per_s: f64,
    /// MPMC scaling with every side sleeping on the futex when it waits.
    pub mpmc_2p2c: f64,
    pub mpmc_4p4c: f64,
    /// The same with the default wait strategy ([`shmchan::WaitStrategy::Adaptive`]).
    pub mpmc_default_1p1c: f64,
    pub mpmc_default_2p2c: f64,
    pub mpmc_default_4p4c: f64,
    pub arrayqueue_1p1c: f64,
    pub arrayqueue_2p2c: f64,
    pub mpmc_1p1c: f64,
    pub zero_copy_4k_bytes_per_s: f64,
}

/// What a run reports to: printing, progress, collecting.
pub trait Observer {
    /// A run of `total` steps begins.
    fn begin(&mut self, _total: usize) {}
    /// Step `index` (from 0) begins.
    fn step(&mut self, _index: usize, _name: &str) {}
    /// A step produced a record.
    fn record(&mut self, record: &Record);
}

/// Everything a step needs: the plan, the CPUs, the figures, and where records go.
pub struct Ctx<'a> {
    pub plan: Plan,
    /// The CPUs this process may run on.
    pub cpus: Vec<usize>,
    /// The CPU the parent is pinned to and the one its single peer gets (two distinct CPUs
    /// when there are two).
    pub here: Option<usize>,
    pub there: Option<usize>,
    pub fig: Figures,
    observer: &'a mut dyn Observer,
    records: Vec<Record>,
}

impl Ctx<'_> {
    pub fn emit(&mut self, record: Record) {
        self.observer.record(&record);
        self.records.push(record);
    }
}

/// The body of a step.
pub type StepFn = Box<dyn FnOnce(&mut Ctx<'_>) -> Result<()>>;

/// A peer role handler: `Some(result)` when it knows the role.
type ChildFn = fn(&str, &[&str], &str) -> Option<Result<()>>;

/// One measurement of the run.
pub struct Step {
    pub name: String,
    pub run: StepFn,
}

impl Step {
    pub fn new(
        name: impl Into<String>,
        run: impl FnOnce(&mut Ctx<'_>) -> Result<()> + 'static,
    ) -> Self {
        Step { name: name.into(), run: Box::new(run) }
    }
}

/// How a run is chosen.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub quick: bool,
    /// Runs only the steps whose name contains one of these (all when empty).
    pub only: Vec<String>,
}

/// Every step of a run, in order.
pub fn steps(plan: &Plan) -> Vec<Step> {
    let mut all = Vec::new();
    all.extend(floors::steps(plan));
    all.extend(threads::steps(plan));
    all.extend(spsc_rows::steps(plan));
    all.extend(mpmc_rows::steps(plan));
    all.extend(bytes_rows::steps(plan));
    all.extend(kernel::steps(plan));
    all.extend(backings::steps(plan));
    #[cfg(feature = "iceoryx2")]
    all.extend(iceoryx2_rows::steps(plan));
    all.push(Step::new("ratios", emit_ratios));
    all
}

/// Runs the suite; returns every record (also given to `observer` as they come).
pub fn run(options: &RunOptions, observer: &mut dyn Observer) -> Result<Vec<Record>> {
    let cpus = harness::allowed_cpus();
    let (here, there) = match cpus.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => (None, None),
    };
    harness::start_watchdog();
    // Pinned after the watchdog starts, so it keeps every CPU (it sleeps almost always).
    if let Some(cpu) = here {
        harness::pin_to(cpu);
    }
    let plan = Plan::new(options.quick);
    let chosen: Vec<Step> = steps(&plan)
        .into_iter()
        .filter(|s| {
            options.only.is_empty() || options.only.iter().any(|o| s.name.contains(o.as_str()))
        })
        .collect();
    let mut ctx =
        Ctx { plan, cpus, here, there, fig: Figures::default(), observer, records: Vec::new() };
    let started = Instant::now();
    let load_start = harness::loadavg();
    ctx.observer.begin(chosen.len());
    for (i, step) in chosen.into_iter().enumerate() {
        ctx.observer.step(i, &step.name);
        (step.run)(&mut ctx).map_err(|e| format!("{}: {e}", step.name))?;
    }
    // The load average says how much the other tenants of the machine disturbed the figures.
    let run = Record::new("run", "s")
        .text("kind", "run")
        .num("value", started.elapsed().as_secs_f64())
        .boolean("quick", options.quick)
        .num("cpus", ctx.cpus.len() as f64)
        .text("loadavg_start", &load_start)
        .text("loadavg_end", &harness::loadavg())
        .text("kernel", &harness::kernel_release())
        .text("cpu_model", &harness::cpu_model());
    ctx.emit(run);
    Ok(ctx.records)
}

/// The ratio rows, from the figures the steps before measured. A ratio whose inputs were not
/// measured (a filtered run) is left out.
fn emit_ratios(ctx: &mut Ctx<'_>) -> Result<()> {
    let f = &ctx.fig;
    let ratios = [
        ("spin_latency_vs_cacheline_floor", f.spin_8_p50, f.cacheline_p50, "<=", 1.25),
        ("futex_latency_vs_futex_floor", f.sleep_8_p50, f.futex_p50, "<=", 1.1),
        ("per_message_8B_vs_rtrb", f.per_message_8, f.rtrb_per_message, ">=", 1.0),
        ("batched_8B_vs_rtrb_chunked", f.batched_8, f.rtrb_chunked, ">=", 0.5),
        ("bytes_4KiB_vs_memcpy", f.bytes_4k_per_s, f.memcpy_bytes_per_s, ">=", 0.25),
        // What a copying ring can reach on this machine: a plain index ring moving 4 KiB
        // between two cores, with no checks at all.
        ("bytes_4KiB_vs_plain_ring", f.bytes_4k_per_s, f.plain_ring_bytes_per_s, ">=", 0.8),
        ("mpmc_2p2c_vs_arrayqueue_2p2c", f.mpmc_2p2c, f.arrayqueue_2p2c, ">=", 1.0),
        // The same comparison without oversubscription: one sender and one receiver.
        ("mpmc_1p1c_vs_arrayqueue_1p1c", f.mpmc_1p1c, f.arrayqueue_1p1c, ">=", 1.0),
        ("mpmc_4p4c_vs_mpmc_2p2c", f.mpmc_4p4c, f.mpmc_2p2c, ">=", 0.5),
        // The same three with the default wait strategy, which spins before it sleeps unless
        // the endpoints outnumber the CPUs: a spinning side keeps taking the lines the other
        // side writes (see BENCHMARKS.md).
        ("mpmc_default_2p2c_vs_arrayqueue_2p2c", f.mpmc_default_2p2c, f.arrayqueue_2p2c, ">=", 1.0),
        ("mpmc_default_1p1c_vs_arrayqueue_1p1c", f.mpmc_default_1p1c, f.arrayqueue_1p1c, ">=", 1.0),
        ("mpmc_default_4p4c_vs_2p2c", f.mpmc_default_4p4c, f.mpmc_default_2p2c, ">=", 0.5),
        (
            "bytes_zero_copy_4KiB_vs_memcpy",
            f.zero_copy_4k_bytes_per_s,
            f.memcpy_bytes_per_s,
            ">=",
            0.4,
        ),
        // The same target against memcpy through the working set the ring's producer writes
        // through (its 256 KiB data area) instead of two L1-resident buffers.
        (
            "bytes_zero_copy_4KiB_vs_memcpy_ring_area",
            f.zero_copy_4k_bytes_per_s,
            f.memcpy_ring_area_bytes_per_s,
            ">=",
            0.4,
        ),
        (
            "bytes_zero_copy_4KiB_vs_plain_ring",
            f.zero_copy_4k_bytes_per_s,
            f.plain_ring_bytes_per_s,
            ">=",
            0.8,
        ),
    ];
    let mut rows = Vec::new();
    for (name, num, den, cmp, target) in ratios {
        if num == 0.0 || den == 0.0 {
            continue;
        }
        let value = num / den;
        let met = if cmp == "<=" { value <= target } else { value >= target };
        rows.push(
            Record::new(&format!("ratio/{name}"), "x")
                .text("kind", "ratio")
                .num("value", value)
                .text("target", &format!("{cmp}{target}"))
                .boolean("met", met),
        );
    }
    for r in rows {
        ctx.emit(r);
    }
    Ok(())
}

/// In a re-executed peer (its role in the environment), plays that role and exits the
/// process; otherwise returns at once. Call it first thing in `main` of any program that runs
/// the suite.
pub fn run_child_if_requested() {
    let Ok(role) = std::env::var(harness::ROLE_ENV) else { return };
    let code = match child_main(&role) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("benchmark peer `{role}`: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn child_main(role: &str) -> Result<()> {
    let args = harness::ChildArgs::from_env()?;
    let names: Vec<&str> = args.segments.iter().map(String::as_str).collect();
    let handlers: &[ChildFn] = &[
        floors::child,
        spsc_rows::child,
        mpmc_rows::child,
        bytes_rows::child,
        threads::child,
        kernel::child,
        backings::child,
        #[cfg(feature = "iceoryx2")]
        iceoryx2_rows::child,
    ];
    for handler in handlers {
        if let Some(result) = handler(role, &names, &args.param) {
            return result;
        }
    }
    Err(format!("unknown role {role}").into())
}
