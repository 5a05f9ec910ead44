//! Fuzz target: the MPMC channel, as operation sequences on several senders and receivers
//! checked against a `VecDeque` model, and as a segment whose control block, registry and slot
//! states a "peer" rewrites between operations. See `harness::mpmc::mpmc_ops` for the input
//! format and the checks.

#![no_main]

#[allow(dead_code)] // the harness also serves the other targets, the generator and the replay test
#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::mpmc::mpmc_ops(data);
});
