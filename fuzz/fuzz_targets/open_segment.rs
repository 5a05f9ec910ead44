//! Fuzz target: arbitrary segment images, opened and used while a "peer" rewrites them.
//! See `harness::open_segment` for the input format and the checks.

#![no_main]

#[allow(dead_code)] // the harness also serves the other target, the generator and the replay test
#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::open_segment(data);
});
