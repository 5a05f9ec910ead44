//! Replays the cargo-fuzz corpora (`fuzz/corpus/<target>`: `open_segment`, `ring_ops`,
//! `bytes_ops`, `mpmc_ops`) through the fuzz harness on stable, so every seed and every input
//! the fuzzer kept is re-checked by `cargo test`: a damaged segment must never panic, hang or
//! misbehave, and a healthy ring must match its model. The counters the harness returns also check that the corpora still reach
//! every interesting outcome (a regression that, say, rejected every valid image would otherwise
//! pass silently).

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The files of one target's corpus, sorted; asserts there is at least one.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a corpus directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    files
}

/// Runs every file of `target`'s corpus through `run`, collecting the files that panicked.
fn replay<S>(target: &str, run: impl Fn(&[u8]) -> S, mut absorb: impl FnMut(S)) {
    let mut failed = Vec::new();
    for path in corpus(target) {
        let data = std::fs::read(&path).expect("read a corpus file");
        match catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Ok(stats) => absorb(stats),
            Err(_) => failed.push(path.display().to_string()),
        }
    }
    assert!(
        failed.is_empty(),
        "{} {target} input(s) failed; reproduce one with `cargo +nightly fuzz run {target} <file>` \
         in fuzz/:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn open_segment_corpus_replays() {
    let mut total = harness::OpenStats::default();
    replay("open_segment", harness::open_segment, |s| total.absorb(s));
    assert!(total.opened > 0, "no input opened: {total:?}");
    assert!(total.attached > 0, "no endpoint attached: {total:?}");
    assert!(total.sent > 0 && total.received > 0, "no message went through: {total:?}");
    assert!(total.corrupted > 0, "no ring operation reported Corrupted: {total:?}");
    assert!(total.pokes > 0, "no peer write reached an open channel: {total:?}");
    for kind in [
        "BadMagic",
        "VersionMismatch",
        "FlavorMismatch",
        "TypeMismatch",
        "TooSmall",
        "NotInitialized",
        "Corrupted",
        "MissingSeals",
        "AlreadyAttached",
    ] {
        assert!(total.errors.contains_key(kind), "no input produced OpenError::{kind}: {total:?}");
    }
}

#[test]
fn ring_ops_corpus_replays() {
    let mut total = harness::RingStats::default();
    replay("ring_ops", harness::ring_ops, |s| total.absorb(s));
    assert!(total.ops > 0 && total.sent > 0 && total.received > 0, "{total:?}");
    assert!(total.full > 0, "no send met a full ring: {total:?}");
    assert!(total.empty > 0, "no receive met an empty ring: {total:?}");
    assert!(total.send_disconnected > 0, "no send met a gone consumer: {total:?}");
    assert!(total.recv_disconnected > 0, "no receive met a gone producer: {total:?}");
    assert!(total.reattached > 0, "no endpoint was attached again: {total:?}");
}

#[test]
fn bytes_ops_corpus_replays() {
    let mut total = harness::bytes::BytesStats::default();
    replay("bytes_ops", harness::bytes::bytes_ops, |s| total.absorb(s));
    assert!(total.ops > 0 && total.sent > 0 && total.received > 0, "{total:?}");
    assert!(total.full > 0, "no send met a full ring: {total:?}");
    assert!(total.empty > 0, "no receive met an empty ring: {total:?}");
    assert!(total.too_large > 0, "no oversized send: {total:?}");
    assert!(total.paddings > 0, "no record needed padding at the wrap: {total:?}");
    assert!(total.partial_commits > 0, "no grant was committed shorter: {total:?}");
    assert!(total.dropped_grants > 0, "no grant was dropped uncommitted: {total:?}");
    assert!(total.send_disconnected > 0, "no send met a gone consumer: {total:?}");
    assert!(total.recv_disconnected > 0, "no receive met a gone producer: {total:?}");
    assert!(total.hostile_inputs > 0 && total.pokes > 0, "no peer write: {total:?}");
    assert!(total.corrupted > 0, "no forged value was reported as Corrupted: {total:?}");
}

#[test]
fn mpmc_ops_corpus_replays() {
    let mut total = harness::mpmc::MpmcStats::default();
    replay("mpmc_ops", harness::mpmc::mpmc_ops, |s| total.absorb(s));
    assert!(total.ops > 0 && total.sent > 0 && total.received > 0, "{total:?}");
    assert!(total.full > 0, "no send met a full ring: {total:?}");
    assert!(total.empty > 0, "no receive met an empty ring: {total:?}");
    assert!(total.send_disconnected > 0, "no send met gone receivers: {total:?}");
    assert!(total.recv_disconnected > 0, "no receive met gone senders: {total:?}");
    assert!(total.too_many > 0, "no attach met TooManyEndpoints: {total:?}");
    assert!(total.reattached > 0, "no endpoint attached after a detach: {total:?}");
    assert!(total.clones > 0, "no handle was cloned: {total:?}");
    assert!(total.shared_lanes > 0, "no clone had to share an intent lane: {total:?}");
    assert!(total.blocking > 0, "no blocking call was checked: {total:?}");
    assert!(total.hostile_inputs > 0 && total.pokes > 0, "no peer write: {total:?}");
    assert!(total.crashes > 0, "no crashed endpoint was forged: {total:?}");
    assert!(total.realistic_crashes > 0, "no crash was checked as a correct peer's: {total:?}");
    assert!(total.lost_resolved > 0, "no dead claim was resolved and counted: {total:?}");
    assert!(total.lost_writes_skipped > 0, "no receiver skipped a dead sender's slot: {total:?}");
    assert!(total.lost_reads_freed > 0, "no sender freed a dead receiver's slot: {total:?}");
    assert!(total.resolved_on_attach > 0, "no dead entry's claim resolved on attach: {total:?}");
    assert!(total.corrupted > 0, "no forged state was reported as Corrupted: {total:?}");
    assert!(total.reopened > 0, "no segment was opened again: {total:?}");
}
