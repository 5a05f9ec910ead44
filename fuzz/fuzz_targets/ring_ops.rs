//! Fuzz target: operation sequences on a healthy channel, checked against a `VecDeque` model.
//! See `harness::ring_ops` for the input format and the checks.

#![no_main]

#[allow(dead_code)] // the harness also serves the other target, the generator and the replay test
#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::ring_ops(data);
});
