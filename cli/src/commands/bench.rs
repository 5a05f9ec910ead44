//! `shmchan bench`: the cross-process benchmark suite with a progress bar, JSON lines,
//! charts and a Markdown report.

use std::io::Write as _;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shmchan_cli::bench::{self, Observer, Record, RunOptions, plot, report};

pub struct BenchArgs {
    pub quick: bool,
    pub json: bool,
    pub plot: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub only: Vec<String>,
    /// Records of an earlier run (`--json` output) to chart and report instead of running.
    pub input: Option<PathBuf>,
    /// Where to keep the records as JSON lines (to chart again later with `input`).
    pub save: Option<PathBuf>,
}

/// Prints each record as it comes (JSON line or one readable line) above a progress bar.
struct Progress {
    bar: ProgressBar,
    json: bool,
}

impl Observer for Progress {
    fn begin(&mut self, total: usize) {
        self.bar.set_length(total as u64);
    }

    fn step(&mut self, index: usize, name: &str) {
        self.bar.set_position(index as u64);
        self.bar.set_message(name.to_owned());
    }

    fn record(&mut self, record: &Record) {
        if self.json {
            // Records go to stdout; the bar draws on stderr.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", record.to_json_line());
            let _ = out.flush();
        } else {
            self.bar.suspend(|| println!("{}", one_line(record)));
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    let records = match &args.input {
        Some(path) => read_records(path)?,
        None => {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {wide_msg}")
                    .map_err(|e| e.to_string())?
                    .progress_chars("=> "),
            );
            let mut progress = Progress { bar, json: args.json };
            let options = RunOptions { quick: args.quick, only: args.only.clone() };
            let records = bench::run(&options, &mut progress).map_err(|e| e.to_string())?;
            progress.bar.finish_and_clear();
            records
        }
    };
    if let Some(path) = &args.save {
        let lines: String = records.iter().map(|r| r.to_json_line() + "\n").collect();
        std::fs::write(path, lines).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let written = plot::write_charts(&records, dir).map_err(|e| e.to_string())?;
        for path in written {
            eprintln!("wrote {}", path.display());
        }
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report::markdown(&records))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Reads JSON lines written by `--json` (or `cargo bench --bench ipc`); other lines (cargo's
/// own output) are skipped.
fn read_records(path: &PathBuf) -> Result<Vec<Record>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let records: Vec<Record> = text.lines().filter_map(Record::from_json_line).collect();
    if records.is_empty() {
        return Err(format!("{}: no benchmark records in it", path.display()));
    }
    Ok(records)
}

/// A record as one readable line: its name and its headline figures.
fn one_line(r: &Record) -> String {
    let f = |k: &str| r.f64(k);
    let figures = match (r.str("unit"), r.str("kind")) {
        (_, Some("skipped")) => format!("skipped: {}", r.str("reason").unwrap_or("")),
        (Some("ns"), _) => match (f("p50"), f("p99"), f("p999")) {
            (Some(a), Some(b), Some(c)) => {
                format!(
                    "p50 {}  p99 {}  p99.9 {}",
                    report::fmt_ns(a),
                    report::fmt_ns(b),
                    report::fmt_ns(c)
                )
            }
            _ => format!("{} ns", f("value").unwrap_or(f64::NAN)),
        },
        (Some("msg/s"), _) => format!(
            "{}  {}",
            report::fmt_rate(f("value").unwrap_or(f64::NAN)),
            report::fmt_bytes_per_s(f("bytes_per_s").unwrap_or(f64::NAN))
        ),
        (Some("x"), _) => format!(
            "{:.2}x (target {}, {})",
            f("value").unwrap_or(f64::NAN),
            r.str("target").unwrap_or("-"),
            if r.0.get("met").and_then(|v| v.as_bool()) == Some(true) { "met" } else { "not met" }
        ),
        (unit, _) => report::fmt_value(f("value").unwrap_or(f64::NAN), unit.unwrap_or("")),
    };
    format!("{:<48} {figures}", r.name())
}
