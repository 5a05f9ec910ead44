//! `shmchan`: look inside live segments, create, feed and drain them, clean up, and run the
//! benchmark suite.
//!
//! Every failure is one line on standard error naming the cause, with a non-zero exit:
//! 1 for errors, 2 for `recv` when every sender is gone and the ring is drained, 3 for `recv`
//! timing out, and clap's 2 for a bad command line.

mod commands;
mod frames;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use commands::create::{CreateArgs, FlavorArg};
use commands::stat::StatArgs;
use commands::transfer::{Format, RecvArgs, RecvEnd};
use target::SegmentName;

#[derive(Parser)]
#[command(name = "shmchan", version, about = "Inspect and drive shmchan shared-memory channels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a segment (exclusively) that stays until `rm` or `gc`.
    Create {
        /// POSIX shm name (`jobs` or `/jobs`) or a file path (`./ring`).
        name: String,
        #[arg(long, value_enum)]
        flavor: FlavorArg,
        /// Slots (spsc, mpmc) or bytes of data area (bytes).
        #[arg(long)]
        capacity: Option<usize>,
        /// Largest message in bytes (spsc/mpmc: rounded up to a frame of 64 B to 64 KiB).
        #[arg(long)]
        max_message: Option<usize>,
        /// MPMC: endpoint slots of each role.
        #[arg(long)]
        max_endpoints: Option<u64>,
        /// Permission bits, octal.
        #[arg(long, default_value = "0600", value_parser = parse_mode)]
        mode: u32,
    },
    /// List every shmchan segment in /dev/shm.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one segment: positions, fill, rates, sleepers, endpoints, losses, corruption.
    Stat {
        name: String,
        #[arg(long)]
        json: bool,
        /// Refresh in place every `--interval` seconds.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value = "1", value_parser = parse_secs)]
        interval: Duration,
        /// With --watch: stop after this many refreshes.
        #[arg(long, hide = true)]
        iterations: Option<u64>,
    },
    /// Send standard input to a byte channel, one message per line (or len32 record).
    Send {
        name: String,
        #[arg(long, value_enum, default_value = "lines")]
        format: Format,
    },
    /// Write messages to standard output: exit 0 after --count, 2 when the senders are gone
    /// and the ring is drained, 3 after --timeout seconds without a message.
    Recv {
        name: String,
        #[arg(long)]
        count: Option<u64>,
        #[arg(long, value_parser = parse_secs)]
        timeout: Option<Duration>,
        #[arg(long, value_enum, default_value = "lines")]
        format: Format,
    },
    /// Remove a segment.
    Rm { name: String },
    /// Remove every segment whose creator and endpoints are all gone.
    Gc {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Only segments whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Also remove abandoned segments that still hold unread messages.
        #[arg(long)]
        discard_unread: bool,
    },
    /// Run the cross-process benchmark suite.
    Bench {
        /// A first look in under a minute.
        #[arg(long)]
        quick: bool,
        /// JSON lines on standard output.
        #[arg(long)]
        json: bool,
        /// Write SVG charts into this directory.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Write Markdown tables into this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Chart and report the records of an earlier run (`--json` or `--save`) instead.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Also keep the records as JSON lines in this file.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Run only the steps whose name contains one of these words.
        only: Vec<String>,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s:?} is not an octal mode"))?;
    if mode > 0o777 {
        return Err(format!("{s} has bits beyond 0777"));
    }
    Ok(mode)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s} is not a valid duration"))
}

fn main() -> ExitCode {
    shmchan_cli::bench::run_child_if_requested();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shmchan: {e}");
            ExitCode::from(1)
        }
    }
}

/// Help and version go out as clap writes them; a bad command line becomes one line naming
/// the cause (clap's own text without its usage block), exit status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    let text = e.render().to_string();
    let cause: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let cause = cause.join(" ");
    eprintln!("shmchan: {} (shmchan --help)", cause.trim_start_matches("error: "));
    ExitCode::from(2)
}

fn print(text: String) -> ExitCode {
    if !text.is_empty() {
        println!("{text}");
    }
    ExitCode::SUCCESS
}

fn run(command: Command) -> Result<ExitCode, String> {
    let named = |name: &str, e: String| format!("{name}: {e}");
    match command {
        Command::Create { name, flavor, capacity, max_message, max_endpoints, mode } => {
            let args = CreateArgs {
                name: SegmentName::parse(&name),
                flavor,
                capacity,
                max_message,
                max_endpoints,
                mode,
            };
            commands::create::run(&args).map(print).map_err(|e| named(&name, e))
        }
        Command::Ls { json } => commands::list::ls(json).map(print),
        Command::Stat { name, json, watch, interval, iterations } => {
            let args =
                StatArgs { name: SegmentName::parse(&name), json, watch, interval, iterations };
            commands::stat::run(&args).map(|()| ExitCode::SUCCESS).map_err(|e| named(&name, e))
        }
        Command::Send { name, format } => {
            commands::transfer::send(&SegmentName::parse(&name), format)
                .map(|summary| {
                    eprintln!("{summary}");
                    ExitCode::SUCCESS
                })
                .map_err(|e| named(&name, e))
        }
        Command::Recv { name, count, timeout, format } => {
            let args = RecvArgs { name: SegmentName::parse(&name), count, timeout, format };
            let (end, received) = commands::transfer::recv(&args).map_err(|e| named(&name, e))?;
            Ok(match end {
                RecvEnd::Count => ExitCode::SUCCESS,
                RecvEnd::Disconnected => {
                    eprintln!(
                        "{name}: every sender is gone, the ring is drained ({received} received)"
                    );
                    ExitCode::from(2)
                }
                RecvEnd::Timeout => {
                    eprintln!("{name}: no message for the timeout ({received} received)");
                    ExitCode::from(3)
                }
            })
        }
        Command::Rm { name } => {
            commands::list::rm(&SegmentName::parse(&name)).map(print).map_err(|e| named(&name, e))
        }
        Command::Gc { dry_run, prefix, discard_unread } => {
            commands::list::gc(dry_run, discard_unread, prefix.as_deref()).map(print)
        }
        Command::Bench { quick, json, plot, report, input, save, only } => {
            let args = commands::bench::BenchArgs { quick, json, plot, report, only, input, save };
            commands::bench::run(&args).map(|()| ExitCode::SUCCESS)
        }
    }
}
