//! The cross-process benchmark suite (the same code as `shmchan bench`): JSON lines on stdout.
//!
//! ```sh
//! cargo bench --bench ipc              # the full run, several minutes
//! cargo bench --bench ipc -- --quick   # a first look, under a minute
//! cargo bench --bench ipc -- --quick spsc   # only the steps whose name contains `spsc`
//! ```

use shmchan_cli::bench::{Observer, Record, RunOptions};

struct JsonLines;

impl Observer for JsonLines {
    fn record(&mut self, record: &Record) {
        println!("{}", record.to_json_line());
    }
}

fn main() {
    shmchan_cli::bench::run_child_if_requested();
    let mut options = RunOptions::default();
    // cargo passes `--bench`; other flags are ignored, plain words filter the steps.
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => options.quick = true,
            a if a.starts_with('-') => {}
            a => options.only.push(a.to_owned()),
        }
    }
    if let Err(e) = shmchan_cli::bench::run(&options, &mut JsonLines) {
        eprintln!("ipc bench: {e}");
        std::process::exit(1);
    }
}
