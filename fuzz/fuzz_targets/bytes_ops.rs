//! Fuzz target: the byte ring, as operation sequences checked against a `VecDeque<Vec<u8>>`
//! model, and as arbitrary ring images rewritten by a "peer" between (and during) operations.
//! See `harness::bytes::bytes_ops` for the input format and the checks.

#![no_main]

#[allow(dead_code)] // the harness also serves the other targets, the generator and the replay test
#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::bytes::bytes_ops(data);
});
