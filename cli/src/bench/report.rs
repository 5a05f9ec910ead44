//! Markdown tables from the records of a run, for BENCHMARKS.md and the `shmchan bench` summary.
//!
//! Every table is built from the `kind` of the records and the fields that kind carries (see
//! [`Record`]); a kind absent from the run gives no section at all. Numbers are printed to three
//! significant digits in the unit that keeps them between 1 and 1000 ([`fmt_ns`],
//! [`fmt_rate`], [`fmt_bytes_per_s`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Record, size_name};

/// What a missing or unmeasured figure prints as.
const MISSING: &str = "–";

/// `x` printed to three significant digits, without trailing zeros: `1.26`, `12.3`, `146`.
fn sig3(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let digits = x.abs().log10().floor() as i32;
    let decimals = (2 - digits).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// `x` in the largest of `units` (ascending `(scale, suffix)` pairs) that keeps it at or above
/// 1 once rounded, so 999.7 ns prints as `1 µs`, not `1000 ns`.
fn scaled(x: f64, units: &[(f64, &str)]) -> String {
    if !x.is_finite() {
        return MISSING.into();
    }
    let rounded = sig3(x.abs()).parse::<f64>().unwrap_or(x.abs());
    let (scale, suffix) = units
        .iter()
        .rev()
        .find(|(scale, _)| rounded >= *scale)
        .or(units.first())
        .copied()
        .unwrap_or((1.0, ""));
    format!("{}{suffix}", sig3(x / scale))
}

/// A duration in ns as `146 ns`, `1.26 µs`, `402 µs`, `1.27 ms`, `2.5 s`.
pub fn fmt_ns(ns: f64) -> String {
    scaled(ns, &[(1.0, " ns"), (1e3, " µs"), (1e6, " ms"), (1e9, " s")])
}

/// A count with an SI prefix: `512`, `34.6 k`, `126 M`, `1.2 G`.
pub fn fmt_si(x: f64) -> String {
    scaled(x, &[(1.0, ""), (1e3, " k"), (1e6, " M"), (1e9, " G"), (1e12, " T")])
}

/// A rate per second: `512/s`, `34.6 k/s`, `126 M/s`.
pub fn fmt_rate(per_s: f64) -> String {
    if !per_s.is_finite() {
        return MISSING.into();
    }
    format!("{}/s", fmt_si(per_s))
}

/// Bytes per second in decimal units (1 GB = 10^9 B): `820 MB/s`, `1.01 GB/s`.
pub fn fmt_bytes_per_s(bytes_per_s: f64) -> String {
    scaled(
        bytes_per_s,
        &[(1.0, " B/s"), (1e3, " kB/s"), (1e6, " MB/s"), (1e9, " GB/s"), (1e12, " TB/s")],
    )
}

/// `value` in `unit` as a person reads it: `ns` and `ns/page` through [`fmt_ns`], `B/s`
/// through [`fmt_bytes_per_s`], other rates (`msg/s`, `copies/s`) with an SI prefix.
pub fn fmt_value(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return MISSING.into();
    }
    match unit {
        "ns" => fmt_ns(value),
        "s" => fmt_ns(value * 1e9),
        "B/s" => fmt_bytes_per_s(value),
        "x" => format!("{}×", sig3(value)),
        "" => sig3(value),
        _ => {
            if let Some(per) = unit.strip_prefix("ns/") {
                format!("{}/{per}", fmt_ns(value))
            } else if unit.ends_with("/s") {
                let si = fmt_si(value);
                // `126 M msg/s`, `512 msg/s`.
                format!("{si} {unit}")
            } else {
                format!("{} {unit}", sig3(value))
            }
        }
    }
}

/// The records of one `kind`, in run order.
pub(crate) fn of_kind<'a>(
    records: &'a [Record],
    kind: &'a str,
) -> impl Iterator<Item = &'a Record> {
    records.iter().filter(move |r| r.str("kind") == Some(kind))
}

/// The `size` field of a record, when it is a byte count.
pub(crate) fn size_of(r: &Record) -> Option<usize> {
    r.f64("size").filter(|s| s.is_finite() && *s >= 0.0).map(|s| s as usize)
}

/// A field that is a finite number.
pub(crate) fn finite(r: &Record, key: &str) -> Option<f64> {
    r.f64(key).filter(|v| v.is_finite())
}

/// The records of one kind laid out by name (`transport` or `backing`) and message size.
pub(crate) struct Grid<'a> {
    /// Ascending.
    pub sizes: Vec<usize>,
    /// In run order until sorted.
    pub names: Vec<String>,
    cells: BTreeMap<(String, usize), &'a Record>,
}

impl<'a> Grid<'a> {
    /// The records of `kind` that carry `name_field` and `size`; a later record of the same
    /// name and size replaces an earlier one.
    pub fn new(records: &'a [Record], kind: &'a str, name_field: &str) -> Self {
        let mut grid = Grid { sizes: Vec::new(), names: Vec::new(), cells: BTreeMap::new() };
        for r in of_kind(records, kind) {
            let (Some(name), Some(size)) = (r.str(name_field), size_of(r)) else { continue };
            if !grid.names.iter().any(|n| n == name) {
                grid.names.push(name.to_owned());
            }
            if !grid.sizes.contains(&size) {
                grid.sizes.push(size);
            }
            grid.cells.insert((name.to_owned(), size), r);
        }
        grid.sizes.sort_unstable();
        grid
    }

    pub fn get(&self, name: &str, size: usize) -> Option<&'a Record> {
        self.cells.get(&(name.to_owned(), size)).copied()
    }

    /// Sorts the names by `field` at the smallest size each has it (ascending, or descending
    /// when `descending`); names measured only at larger sizes come after, names without the
    /// field last, ties by name.
    pub fn sort_names_by(&mut self, field: &str, descending: bool) {
        let key = |name: &str| {
            self.sizes.iter().enumerate().find_map(|(i, &size)| {
                let v = finite(self.get(name, size)?, field)?;
                Some((i, if descending { -v } else { v }))
            })
        };
        let mut keyed: Vec<(Option<(usize, f64)>, String)> =
            self.names.iter().map(|n| (key(n), n.clone())).collect();
        keyed.sort_by(|(ka, na), (kb, nb)| match (ka, kb) {
            (Some((ia, va)), Some((ib, vb))) => {
                ia.cmp(ib).then(va.total_cmp(vb)).then_with(|| na.cmp(nb))
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => na.cmp(nb),
        });
        self.names = keyed.into_iter().map(|(_, n)| n).collect();
    }
}

/// A name in a table cell: code, with pipes escaped so they do not split the cell.
fn code(name: &str) -> String {
    format!("`{}`", name.replace('`', "'").replace('|', "\\|"))
}

/// Free text in a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// One Markdown table; the first column is left-aligned, the others right-aligned unless
/// listed in `left`.
struct Table {
    header: Vec<String>,
    left: Vec<usize>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Table { header: header.into_iter().map(Into::into).collect(), left: vec![0], rows: vec![] }
    }

    fn left_aligned(mut self, columns: &[usize]) -> Self {
        self.left.extend_from_slice(columns);
        self
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.header));
        let rule: Vec<String> = (0..self.header.len())
            .map(|i| if self.left.contains(&i) { "---".into() } else { "---:".into() })
            .collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// A section: heading, a sentence on what the figures are, the table. None without rows.
fn section(title: &str, note: &str, table: Table) -> Option<String> {
    if table.rows.is_empty() {
        return None;
    }
    let mut out = format!("### {title}\n\n");
    if !note.is_empty() {
        out.push_str(note);
        out.push_str("\n\n");
    }
    out.push_str(&table.render());
    Some(out)
}

/// `p50 / p99 / p99.9` of a latency record.
fn percentiles(r: &Record) -> String {
    let f = |key| r.f64(key).map_or(MISSING.into(), fmt_ns);
    format!("{} / {} / {}", f("p50"), f("p99"), f("p999"))
}

/// `msg/s · bytes/s` of a throughput record.
fn rates(r: &Record) -> String {
    let msgs = r.f64("value").map_or(MISSING.into(), fmt_rate);
    let bytes = r.f64("bytes_per_s").map_or(MISSING.into(), fmt_bytes_per_s);
    format!("{msgs} · {bytes}")
}

/// One line for a free-form record (floors, diagnostics): its percentiles when it has them,
/// else its value in its unit (with the byte rate when there is one).
fn describe(r: &Record) -> String {
    if r.0.contains_key("p50") {
        return format!("p50 / p99 / p99.9: {}", percentiles(r));
    }
    let unit = r.str("unit").unwrap_or("");
    let mut text = r.f64("value").map_or(MISSING.into(), |v| fmt_value(v, unit));
    if let Some(b) = finite(r, "bytes_per_s") {
        let _ = write!(text, " ({})", fmt_bytes_per_s(b));
    }
    text
}

/// The transport x size latency table, transports by p50 at their smallest size.
fn latency_section(records: &[Record]) -> Option<String> {
    let mut grid = Grid::new(records, "latency", "transport");
    grid.sort_names_by("p50", false);
    let mut table = Table::new(
        std::iter::once("transport".to_owned()).chain(grid.sizes.iter().map(|&s| size_name(s))),
    );
    for name in &grid.names {
        let mut row = vec![code(name)];
        row.extend(
            grid.sizes.iter().map(|&s| grid.get(name, s).map_or(MISSING.into(), percentiles)),
        );
        table.rows.push(row);
    }
    section(
        "Latency",
        "One-way latency per message size, p50 / p99 / p99.9: half of each ping-pong round \
         trip between two processes (threads for the in-process queues) on two cores, \
         percentiles of an HdrHistogram.",
        table,
    )
}

/// The transport x size throughput table, transports by msg/s at their smallest size.
fn throughput_section(records: &[Record]) -> Option<String> {
    let mut grid = Grid::new(records, "throughput", "transport");
    grid.sort_names_by("value", true);
    let mut table = Table::new(
        std::iter::once("transport".to_owned()).chain(grid.sizes.iter().map(|&s| size_name(s))),
    );
    for name in &grid.names {
        let mut row = vec![code(name)];
        row.extend(grid.sizes.iter().map(|&s| grid.get(name, s).map_or(MISSING.into(), rates)));
        table.rows.push(row);
    }
    section(
        "Throughput",
        "Messages per second · bytes per second (1 GB = 10^9 B), one sender and one receiver, \
         median of the repetitions.",
        table,
    )
}

/// `shmchan_mpmc_2p2c` → (`shmchan_mpmc`, 2, 2): the `_<P>p<C>c` suffix of a transport with
/// P senders and C receivers.
fn senders_receivers(transport: &str) -> Option<(&str, usize, usize)> {
    let (prefix, tail) = transport.rsplit_once('_')?;
    let (p, c) = tail.strip_suffix('c')?.split_once('p')?;
    Some((prefix, p.parse().ok()?, c.parse().ok()?))
}

/// MPMC scaling: the `scaling` rows, with the 1-sender/1-receiver `throughput` row of the same
/// family and size as the baseline, by family then sender count.
fn scaling_section(records: &[Record]) -> Option<String> {
    let scaling: Vec<&Record> = of_kind(records, "scaling").collect();
    let families: Vec<(&str, Option<usize>)> = scaling
        .iter()
        .filter_map(|r| Some((senders_receivers(r.str("transport")?)?.0, size_of(r))))
        .collect();
    let baselines = of_kind(records, "throughput").filter(|r| {
        r.str("transport").and_then(senders_receivers).is_some_and(|(prefix, _, _)| {
            families.iter().any(|&(f, size)| f == prefix && size == size_of(r))
        })
    });
    let mut rows: Vec<&Record> = baselines.chain(scaling.iter().copied()).collect();
    let family_rank = |r: &Record| {
        let parsed = r.str("transport").and_then(senders_receivers);
        let rank = parsed.and_then(|(prefix, _, _)| families.iter().position(|f| f.0 == prefix));
        (rank.unwrap_or(usize::MAX), parsed.map_or((0, 0), |(_, p, c)| (p, c)), size_of(r))
    };
    rows.sort_by_key(|r| family_rank(r));
    let mut table = Table::new([
        "transport",
        "senders × receivers",
        "size",
        "msg/s",
        "bytes/s",
        "worst – best (msg/s)",
    ]);
    for r in rows {
        let transport = r.str("transport").unwrap_or("");
        let shape =
            senders_receivers(transport).map_or(MISSING.into(), |(_, p, c)| format!("{p} × {c}"));
        let f = |key| r.f64(key).map_or(MISSING.into(), fmt_rate);
        table.rows.push(vec![
            code(transport),
            shape,
            size_of(r).map_or(MISSING.into(), size_name),
            f("value"),
            r.f64("bytes_per_s").map_or(MISSING.into(), fmt_bytes_per_s),
            format!("{} – {}", f("worst"), f("best")),
        ]);
    }
    section(
        "MPMC scaling",
        "Aggregate throughput of P sender and C receiver processes (threads for the in-process \
         queues) over one queue, median of the repetitions.",
        table,
    )
}

/// Steady state per backing: latency and throughput of the same channel in each backing.
fn backing_section(records: &[Record]) -> Option<String> {
    let latency = Grid::new(records, "backing_latency", "backing");
    let throughput = Grid::new(records, "backing_throughput", "backing");
    let mut names = latency.names.clone();
    names.extend(throughput.names.iter().filter(|n| !latency.names.contains(n)).cloned());
    let mut sizes: Vec<usize> = latency.sizes.iter().chain(&throughput.sizes).copied().collect();
    sizes.sort_unstable();
    sizes.dedup();
    let fs_of = |name: &str, size| {
        let r = latency.get(name, size).or_else(|| throughput.get(name, size))?;
        r.str("fs").map(str::to_owned)
    };
    let with_fs = names.iter().any(|n| sizes.iter().any(|&s| fs_of(n, s).is_some()));
    let mut header = vec!["backing", "size"];
    if with_fs {
        header.push("filesystem");
    }
    header.extend(["p50", "p99", "p99.9", "msg/s", "bytes/s"]);
    let mut table = Table::new(header).left_aligned(if with_fs { &[2] } else { &[] });
    for name in &names {
        for &size in &sizes {
            let (l, t) = (latency.get(name, size), throughput.get(name, size));
            if l.is_none() && t.is_none() {
                continue;
            }
            let mut row = vec![code(name), size_name(size)];
            if with_fs {
                row.push(fs_of(name, size).map_or(MISSING.into(), |fs| cell(&fs)));
            }
            for key in ["p50", "p99", "p999"] {
                row.push(l.and_then(|r| r.f64(key)).map_or(MISSING.into(), fmt_ns));
            }
            row.push(t.and_then(|r| r.f64("value")).map_or(MISSING.into(), fmt_rate));
            row.push(t.and_then(|r| r.f64("bytes_per_s")).map_or(MISSING.into(), fmt_bytes_per_s));
            table.rows.push(row);
        }
    }
    section(
        "Backings: steady state",
        "The same SPSC channel in each backing, between two processes once every page is \
         resident: one-way latency percentiles and per-message throughput.",
        table,
    )
}

/// One-off costs: one row per cost (and unit), one column per backing.
fn cost_section(records: &[Record]) -> Option<String> {
    let mut costs: Vec<(String, String)> = Vec::new();
    let mut backings: Vec<String> = Vec::new();
    let mut values: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for r in of_kind(records, "backing_cost") {
        let (Some(backing), Some(cost)) = (r.str("backing"), r.str("cost")) else { continue };
        let unit = r.str("unit").unwrap_or("").to_owned();
        let key = (cost.to_owned(), unit.clone());
        if !costs.contains(&key) {
            costs.push(key);
        }
        if !backings.iter().any(|b| b == backing) {
            backings.push(backing.to_owned());
        }
        if let Some(v) = r.f64("value") {
            values.insert((cost.to_owned(), unit, backing.to_owned()), v);
        }
    }
    let mut table =
        Table::new(std::iter::once("cost".to_owned()).chain(backings.iter().map(|b| code(b))));
    for (cost, unit) in &costs {
        let mut row = vec![code(cost)];
        row.extend(backings.iter().map(|b| {
            values
                .get(&(cost.clone(), unit.clone(), b.clone()))
                .map_or(MISSING.into(), |&v| fmt_value(v, unit))
        }));
        table.rows.push(row);
    }
    section(
        "Backings: one-off costs",
        "What each backing costs outside the steady state, measured on raw mappings of its \
         kind (median of the repetitions).",
        table,
    )
}

/// Rows of a free-form kind, one line each.
fn described_section(records: &[Record], kind: &str, title: &str, note: &str) -> Option<String> {
    let mut table = Table::new(["row", "measurement"]).left_aligned(&[1]);
    for r in of_kind(records, kind) {
        table.rows.push(vec![code(r.name()), cell(&describe(r))]);
    }
    section(title, note, table)
}

/// The ratio rows: value, target, met.
fn ratio_section(records: &[Record]) -> Option<String> {
    let mut table = Table::new(["ratio", "value", "target", "met"]).left_aligned(&[2, 3]);
    for r in of_kind(records, "ratio") {
        let name = r.name().strip_prefix("ratio/").unwrap_or(r.name());
        let target = r.str("target").unwrap_or(MISSING).replace("<=", "≤ ").replace(">=", "≥ ");
        let met = match r.0.get("met").and_then(serde_json::Value::as_bool) {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => MISSING,
        };
        table.rows.push(vec![
            code(name),
            r.f64("value").map_or(MISSING.into(), |v| format!("{}×", sig3(v))),
            cell(&target),
            met.into(),
        ]);
    }
    section(
        "Ratios",
        "Each figure of shmchan divided by the figure it is judged against, with the target.",
        table,
    )
}

/// Rows that could not be measured on this machine, with the reason.
fn skipped_section(records: &[Record]) -> Option<String> {
    let mut table = Table::new(["row", "reason"]).left_aligned(&[1]);
    for r in of_kind(records, "skipped") {
        table.rows.push(vec![code(r.name()), cell(r.str("reason").unwrap_or(MISSING))]);
    }
    section("Skipped", "", table)
}

/// The machine and the run: CPU, CPUs, kernel, load averages, quick or full, duration.
fn run_section(records: &[Record]) -> Option<String> {
    let mut table =
        Table::new(["machine", "CPUs", "kernel", "load average (start → end)", "mode", "duration"])
            .left_aligned(&[2, 3, 4]);
    for r in of_kind(records, "run") {
        let text = |key| r.str(key).map_or(MISSING.into(), cell);
        let mode = match r.0.get("quick").and_then(serde_json::Value::as_bool) {
            Some(true) => "quick",
            Some(false) => "full",
            None => MISSING,
        };
        table.rows.push(vec![
            text("cpu_model"),
            r.f64("cpus").map_or(MISSING.into(), |c| format!("{c}")),
            text("kernel"),
            format!("{} → {}", text("loadavg_start"), text("loadavg_end")),
            mode.into(),
            r.f64("value").map_or(MISSING.into(), |s| fmt_ns(s * 1e9)),
        ]);
    }
    section("Run", "", table)
}

/// The Markdown tables of a run, one `###` section per kind present (nothing for an empty run):
/// latency, throughput, MPMC scaling, backings (steady state and one-off costs), floors,
/// ratios, diagnostics, skipped rows and the run itself.
pub fn markdown(records: &[Record]) -> String {
    let sections = [
        latency_section(records),
        throughput_section(records),
        scaling_section(records),
        backing_section(records),
        cost_section(records),
        described_section(
            records,
            "floor",
            "Floors",
            "What the hardware and kernel allow, measured the same way as the rows judged \
             against them.",
        ),
        ratio_section(records),
        described_section(
            records,
            "diagnostic",
            "Diagnostics",
            "Rows that explain others (other wait strategies, the in-process reference \
             queues).",
        ),
        skipped_section(records),
        run_section(records),
    ];
    sections.into_iter().flatten().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Latency, Rates};

    fn latency(transport: &str, size: usize, p50: f64, p99: f64, p999: f64) -> Record {
        Record::new(&format!("latency/{transport}/{}", size_name(size)), "ns")
            .of("latency", transport, size)
            .num("p50", p50)
            .num("p99", p99)
            .num("p999", p999)
    }

    fn throughput(kind: &str, transport: &str, size: usize, msgs_per_s: f64) -> Record {
        Record::throughput(
            &format!("throughput/{transport}/{}", size_name(size)),
            size,
            &Rates::from(vec![msgs_per_s * 0.9, msgs_per_s, msgs_per_s * 1.1], 1000),
        )
        .of(kind, transport, size)
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(fmt_ns(146.0), "146 ns");
        assert_eq!(fmt_ns(8.25), "8.25 ns");
        assert_eq!(fmt_ns(1259.0), "1.26 µs");
        assert_eq!(fmt_ns(401_663.0), "402 µs");
        assert_eq!(fmt_ns(999.7), "1 µs");
        assert_eq!(fmt_ns(1_267_711.0), "1.27 ms");
        assert_eq!(fmt_ns(2.5e9), "2.5 s");
        assert_eq!(fmt_ns(0.0), "0 ns");
        assert_eq!(fmt_ns(f64::NAN), "–");
        assert_eq!(fmt_rate(126_227_483.8), "126 M/s");
        assert_eq!(fmt_rate(512.0), "512/s");
        assert_eq!(fmt_rate(34_559.0), "34.6 k/s");
        assert_eq!(fmt_bytes_per_s(1_009_819_870.7), "1.01 GB/s");
        assert_eq!(fmt_bytes_per_s(141_553_773_845.7), "142 GB/s");
        assert_eq!(fmt_bytes_per_s(820e6), "820 MB/s");
        assert_eq!(fmt_value(312.4, "ns/page"), "312 ns/page");
        assert_eq!(fmt_value(34_559_026.8, "copies/s"), "34.6 M copies/s");
        assert_eq!(fmt_value(3.0, "pages"), "3 pages");
    }

    #[test]
    fn an_empty_run_has_no_sections() {
        assert_eq!(markdown(&[]), "");
        // Rows of kinds without a table give none either.
        let other = [Record::new("x", "ns").text("kind", "something_new")];
        assert_eq!(markdown(&other), "");
    }

    #[test]
    fn latency_table_has_a_cell_per_transport_and_size() {
        let records = [
            latency("slow_pipe", 64, 9_000.0, 20_000.0, 50_000.0),
            latency("fast_ring", 64, 150.0, 240.0, 520.0),
            latency("fast_ring", 4096, 1_260.0, 1_560.0, 401_663.0),
        ];
        let md = markdown(&records);
        assert!(md.starts_with("### Latency\n"), "{md}");
        assert!(md.contains("| transport | 64B | 4KiB |\n| --- | ---: | ---: |\n"), "{md}");
        // Sorted by p50: the fast ring first; the pipe has no 4 KiB cell.
        let fast =
            md.find("| `fast_ring` | 150 ns / 240 ns / 520 ns | 1.26 µs / 1.56 µs / 402 µs |");
        let slow = md.find("| `slow_pipe` | 9 µs / 20 µs / 50 µs | – |");
        assert!(fast.is_some() && slow.is_some() && fast < slow, "{md}");
        assert!(!md.contains("### Throughput"), "{md}");
    }

    #[test]
    fn throughput_and_scaling_tables() {
        let records = [
            throughput("throughput", "shmchan_spsc", 8, 126_000_000.0),
            throughput("throughput", "unix_stream", 8, 1_500_000.0),
            throughput("throughput", "shmchan_spsc", 4096, 3_800_000.0),
            throughput("throughput", "shmchan_mpmc_1p1c", 8, 41_000_000.0),
            throughput("scaling", "shmchan_mpmc_4p4c", 8, 48_000_000.0),
            throughput("scaling", "shmchan_mpmc_2p2c", 8, 40_000_000.0),
            throughput("scaling", "arrayqueue_threads_2p2c", 8, 157_000_000.0),
        ];
        let md = markdown(&records);
        assert!(
            md.contains("| `shmchan_spsc` | 126 M/s · 1.01 GB/s | 3.8 M/s · 15.6 GB/s |"),
            "{md}"
        );
        assert!(md.contains("| `unix_stream` | 1.5 M/s · 12 MB/s | – |"), "{md}");
        assert!(md.find("`shmchan_spsc` | 126") < md.find("`unix_stream` |"), "{md}");
        let scaling = &md[md.find("### MPMC scaling").expect("scaling section")..];
        // The 1p1c row is the baseline of its family, then 2p2c and 4p4c, then the threads.
        let order: Vec<usize> = [
            "| `shmchan_mpmc_1p1c` | 1 × 1 | 8B | 41 M/s | 328 MB/s | 36.9 M/s – 45.1 M/s |",
            "| `shmchan_mpmc_2p2c` | 2 × 2 | 8B | 40 M/s |",
            "| `shmchan_mpmc_4p4c` | 4 × 4 | 8B | 48 M/s |",
            "| `arrayqueue_threads_2p2c` | 2 × 2 | 8B | 157 M/s |",
        ]
        .iter()
        .map(|row| scaling.find(row).unwrap_or_else(|| panic!("{row} missing in {scaling}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{scaling}");
    }

    #[test]
    fn backing_tables_join_latency_throughput_and_costs() {
        let l = Latency::from_one_way([200, 200, 300]);
        let t = Rates::from(vec![50e6], 1000);
        let records = [
            Record::latency("backing/latency/posix_shm", &l)
                .text("kind", "backing_latency")
                .text("backing", "posix_shm")
                .num("size", 64.0),
            Record::latency("backing/latency/file_disk", &l)
                .text("kind", "backing_latency")
                .text("backing", "file_disk")
                .text("fs", "ext4")
                .num("size", 64.0),
            Record::throughput("backing/throughput/posix_shm", 64, &t)
                .text("kind", "backing_throughput")
                .text("backing", "posix_shm")
                .num("size", 64.0),
            Record::new("backing/first_touch/posix_shm", "ns/page")
                .text("kind", "backing_cost")
                .text("backing", "posix_shm")
                .text("cost", "first_touch")
                .num("value", 312.4),
            Record::new("backing/msync/file_disk", "ns")
                .text("kind", "backing_cost")
                .text("backing", "file_disk")
                .text("cost", "msync")
                .num("value", 2_500_000.0),
        ];
        let md = markdown(&records);
        assert!(
            md.contains(
                "| backing | size | filesystem | p50 | p99 | p99.9 | msg/s | bytes/s |\n\
                 | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n\
                 | `posix_shm` | 64B | – | 200 ns | 300 ns | 300 ns | 50 M/s | 3.2 GB/s |\n\
                 | `file_disk` | 64B | ext4 | 200 ns | 300 ns | 300 ns | – | – |\n"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| cost | `posix_shm` | `file_disk` |\n| --- | ---: | ---: |\n\
                 | `first_touch` | 312 ns/page | – |\n| `msync` | – | 2.5 ms |\n"
            ),
            "{md}"
        );
    }

    #[test]
    fn floors_ratios_skipped_and_run_rows() {
        let records = [
            Record::latency("floor/cacheline_pingpong", &Latency::from_one_way([163, 163, 177]))
                .text("kind", "floor"),
            Record::new("floor/memcpy_4KiB", "copies/s")
                .text("kind", "floor")
                .num("value", 34_559_026.8)
                .num("bytes_per_s", 141_553_773_845.7),
            Record::new("ratio/spin_latency_vs_cacheline_floor", "x")
                .text("kind", "ratio")
                .num("value", 0.896)
                .text("target", "<=1.25")
                .boolean("met", true),
            Record::new("ratio/bytes_4KiB_vs_memcpy", "x")
                .text("kind", "ratio")
                .num("value", 0.11)
                .text("target", ">=0.25")
                .boolean("met", false),
            Record::new("latency/posix_mq/64B", "")
                .text("kind", "skipped")
                .text("reason", "msg_max is 10 | too small"),
            Record::new("run", "s")
                .text("kind", "run")
                .num("value", 42.5)
                .boolean("quick", true)
                .num("cpus", 2.0)
                .text("loadavg_start", "1.16 1.15 1.50")
                .text("loadavg_end", "1.20 1.16 1.49")
                .text("kernel", "6.18.44")
                .text("cpu_model", "Intel(R) Xeon(R) Processor"),
        ];
        let md = markdown(&records);
        for row in [
            "| `floor/cacheline_pingpong` | p50 / p99 / p99.9: 163 ns / 177 ns / 177 ns |",
            "| `floor/memcpy_4KiB` | 34.6 M copies/s (142 GB/s) |",
            "| `spin_latency_vs_cacheline_floor` | 0.896× | ≤ 1.25 | yes |",
            "| `bytes_4KiB_vs_memcpy` | 0.11× | ≥ 0.25 | **no** |",
            "| `latency/posix_mq/64B` | msg_max is 10 \\| too small |",
            "| Intel(R) Xeon(R) Processor | 2 | 6.18.44 | 1.16 1.15 1.50 → 1.20 1.16 1.49 | quick | 42.5 s |",
        ] {
            assert!(md.contains(row), "{row} missing in\n{md}");
        }
        let headings: Vec<&str> = md.lines().filter(|l| l.starts_with("### ")).collect();
        assert_eq!(headings, ["### Floors", "### Ratios", "### Skipped", "### Run"]);
    }
}
