//! `shmchan create`: a segment that outlives this command, for other processes to open.

use shmchan::{Frame, bytes, mpmc, spsc};

use crate::frames::{FRAME_SIZES, frame_size_for, with_frame_size};
use crate::target::SegmentName;

/// The kinds of channel `create` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlavorArg {
    Spsc,
    Mpmc,
    Bytes,
}

pub struct CreateArgs {
    pub name: SegmentName,
    pub flavor: FlavorArg,
    pub capacity: Option<usize>,
    pub max_message: Option<usize>,
    pub max_endpoints: Option<u64>,
    pub mode: u32,
}

/// Default slots of a typed ring and bytes of a byte ring.
const DEFAULT_SLOTS: usize = 1024;
const DEFAULT_DATA_BYTES: usize = 1 << 20;
/// Default largest message: a typed ring's frame, a byte ring's record.
const DEFAULT_FRAME: usize = 256;
const DEFAULT_RECORD: usize = 64 * 1024;

/// Creates the segment (exclusively, with `mode`) and leaves it in place; prints a summary.
pub fn run(args: &CreateArgs) -> Result<String, String> {
    let backing = args.name.backing();
    let e = |e: shmchan::OpenError| crate::target::describe(&e);
    let summary = match args.flavor {
        FlavorArg::Bytes => {
            let capacity = args.capacity.unwrap_or(DEFAULT_DATA_BYTES);
            let max =
                args.max_message.unwrap_or(DEFAULT_RECORD.min((capacity / 2).saturating_sub(8)));
            let opts = bytes::Options::new()
                .capacity_bytes(capacity)
                .max_message(max)
                .mode(args.mode)
                .remove_on_drop(false);
            let chan = bytes::Channel::create(backing, &opts).map_err(e)?;
            format!(
                "bytes, {} bytes of data area, records of at most {} bytes",
                chan.capacity_bytes(),
                chan.max_message()
            )
        }
        FlavorArg::Spsc | FlavorArg::Mpmc => {
            let want = args.max_message.unwrap_or(DEFAULT_FRAME);
            let n = frame_size_for(want).ok_or_else(|| {
                format!(
                    "--max-message {want} exceeds the largest frame a typed ring carries ({}); \
                     use --flavor bytes for larger messages",
                    FRAME_SIZES[FRAME_SIZES.len() - 1]
                )
            })?;
            let slots = args.capacity.unwrap_or(DEFAULT_SLOTS);
            with_frame_size!(
                n,
                |N| create_typed::<N>(args, backing, slots)?,
                return Err(format!("no frame type of {n} bytes"))
            )
        }
    };
    Ok(format!("created {} ({summary}, mode {:04o})", args.name, args.mode))
}

fn create_typed<const N: usize>(
    args: &CreateArgs,
    backing: shmchan::Backing,
    slots: usize,
) -> Result<String, String> {
    let e = |e: shmchan::OpenError| crate::target::describe(&e);
    if args.flavor == FlavorArg::Spsc {
        let opts = spsc::Options::new().capacity(slots).mode(args.mode).remove_on_drop(false);
        let chan = spsc::Channel::<Frame<N>>::create(backing, &opts).map_err(e)?;
        Ok(format!("spsc, {} slots of frames of at most {N} bytes", chan.capacity()))
    } else {
        let mut opts = mpmc::Options::new().capacity(slots).mode(args.mode).remove_on_drop(false);
        if let Some(max) = args.max_endpoints {
            opts = opts.max_endpoints(max);
        }
        let chan = mpmc::Channel::<Frame<N>>::create(backing, &opts).map_err(e)?;
        Ok(format!(
            "mpmc, {} slots of frames of at most {N} bytes, {} endpoints of each role",
            chan.capacity(),
            chan.max_endpoints()
        ))
    }
}
