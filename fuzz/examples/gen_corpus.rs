//! Writes the seed corpora of both fuzz targets into `fuzz/corpus/`, then runs every seed
//! through the harness once (so a seed that trips a check is caught here, not later).
//!
//! Run once from `fuzz/`: `cargo run --example gen_corpus`. Re-running rewrites the named seeds
//! with the same bytes (except the creator pid and start time inside raw images) and leaves
//! the entries the fuzzer added alone.

#[allow(dead_code)] // the generator uses part of the harness
#[path = "../harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};

use harness::{
    ELEMS, Elem, ImageSpec, RAW_SCRIPT_LEN, RECOMPUTE_CHECKSUM, START_POSITIONS, mode, op, ring_op,
};
use shmchan::layout::{self, RawHeader};

const CONTROL: u16 = layout::CONTROL_OFFSET as u16;
const PRODUCER_WORD: u16 = CONTROL;
const POISONED: u16 = CONTROL + 16;
const TAIL: u16 = CONTROL + 128;
const HEAD: u16 = CONTROL + 256;
const CONSUMER_WAIT: u16 = CONTROL + 512;
/// Selector of the first byte of slot `k`'s stamp (see the harness's slot map).
fn stamp_selector(k: u16) -> u16 {
    (layout::CONTROL_OFFSET + layout::CONTROL_LEN) as u16 + 8 * k
}

/// A small, fixed pseudo-random generator (xorshift64*), so the seeds are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Corpus {
    dir: PathBuf,
    count: usize,
    bytes: usize,
}

impl Corpus {
    fn new(target: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        Corpus { dir, count: 0, bytes: 0 }
    }

    fn add(&mut self, name: &str, data: &[u8]) {
        std::fs::write(self.dir.join(name), data).expect("write a seed");
        self.count += 1;
        self.bytes += data.len();
    }
}

fn spec(elem: Elem, capacity: usize, sent: u8, received: u8, start: u64) -> ImageSpec {
    ImageSpec { elem, capacity, sent, received, start }
}

/// A typical small image of each element type.
fn typical(elem: Elem) -> ImageSpec {
    match elem {
        Elem::U8 => spec(elem, 4, 6, 1, 0),
        Elem::U64 => spec(elem, 8, 5, 2, 0),
        Elem::Line => spec(elem, 2, 3, 0, 0),
        Elem::Page => spec(elem, 1, 1, 0, 0),
        Elem::Wide => spec(elem, 2, 3, 1, 0),
    }
}

fn elem_name(elem: Elem) -> &'static str {
    match elem {
        Elem::U8 => "u8",
        Elem::U64 => "u64",
        Elem::Line => "line",
        Elem::Page => "page",
        Elem::Wide => "wide",
    }
}

/// A raw input: the mode byte, then the image with `script` in its last RAW_SCRIPT_LEN bytes.
fn raw(mode: u8, image: &[u8], script: &[u8]) -> Vec<u8> {
    let mut object = image.to_vec();
    if !script.is_empty() {
        let h: RawHeader = bytemuck::pod_read_unaligned(&image[..128]);
        let at = object.len() - RAW_SCRIPT_LEN;
        let slots_end = h.slots_offset.saturating_add(h.capacity.saturating_mul(h.slot_stride));
        // (Headers edited into nonsense describe no slots in this object.)
        assert!(at as u64 >= slots_end || slots_end > object.len() as u64, "script over slots");
        object[at..at + script.len()].copy_from_slice(script);
    }
    let mut data = vec![mode];
    data.extend_from_slice(&object);
    data
}

/// `image` with its header edited (and the checksum recomputed when `recompute`).
fn edit(image: &[u8], recompute: bool, f: impl FnOnce(&mut RawHeader)) -> Vec<u8> {
    let mut h: RawHeader = bytemuck::pod_read_unaligned(&image[..128]);
    f(&mut h);
    if recompute {
        h.checksum = h.compute_checksum();
    }
    let mut out = image.to_vec();
    out[..128].copy_from_slice(bytemuck::bytes_of(&h));
    out
}

/// The two spec bytes of a patched input (the inverse of the harness's `ImageSpec::decode`).
fn encode(spec: &ImageSpec) -> [u8; 2] {
    let exp = spec.capacity.trailing_zeros() as u8;
    assert!(spec.capacity.is_power_of_two() && exp < 5 && spec.sent < 32 && spec.received < 64);
    let start = START_POSITIONS.iter().position(|&s| s == spec.start).unwrap() as u8;
    [exp | (spec.sent << 3), spec.received | (start << 6)]
}

/// A patched input.
fn patched(
    mode: u8,
    spec: &ImageSpec,
    patches: &[(u16, &[u8])],
    recompute: bool,
    script: &[u8],
) -> Vec<u8> {
    let elem = ELEMS.iter().position(|&e| e == spec.elem).unwrap() as u8;
    let mut data = vec![mode | mode::PATCHED | (elem << mode::ELEM_SHIFT)];
    data.extend_from_slice(&encode(spec));
    assert!(patches.len() < 16);
    data.push(((patches.len() as u8) << 1) | if recompute { RECOMPUTE_CHECKSUM } else { 0 });
    for (selector, bytes) in patches {
        assert!(!bytes.is_empty() && bytes.len() <= 16);
        data.extend_from_slice(&selector.to_le_bytes());
        data.push(bytes.len() as u8 - 1);
        data.extend_from_slice(bytes);
    }
    data.extend_from_slice(script);
    data
}

fn wait(index: u8) -> u8 {
    index << mode::WAIT_SHIFT
}

fn main() {
    open_segment_seeds();
    ring_ops_seeds();
}

fn open_segment_seeds() {
    let mut c = Corpus::new("open_segment");
    use op::*;
    let basic: &[u8] = &[
        RECV,
        SEND,
        7,
        SEND,
        8,
        RECV,
        RECV,
        SEND_SLICE,
        3,
        RECV_INTO,
        4,
        OBSERVE,
        RECV_TIMEOUT,
        1,
        SEND_TIMEOUT,
        9,
        1,
        ITER,
        7,
        TOGGLE_PRODUCER,
        RECV,
        RECV,
        TOGGLE_PRODUCER,
        SEND,
        1,
        TOGGLE_CONSUMER,
        TOGGLE_CONSUMER,
        RECV_TIMEOUT,
        6,
        OBSERVE,
    ];
    // A racing peer: forged head/tail/stamps and raw pokes between operations.
    let race: &[u8] = &[
        SEND, 1, SEND, 2, FORGE, 0, 1, 5, RECV, SEND, 3, FORGE, 2, 1, 0, RECV, RECV, FORGE, 3, 0,
        0, SEND, 4, POKE, 0x00, 0x81, 3, 0xff, 0x00, 0x01, 0x80, RECV_INTO, 3, FORGE, 1, 2, 1,
        SEND_SLICE, 4, OBSERVE, RECV, SEND, 9,
    ];
    // The producer fills the ring, then finds the head forged past its tail: Corrupted, and
    // Corrupted again on every later call.
    let producer_corrupt: &[u8] = &[
        SEND,
        1,
        SEND,
        2,
        SEND,
        3,
        SEND,
        4,
        SEND,
        5,
        SEND,
        6,
        SEND,
        7,
        SEND,
        8,
        SEND,
        9,
        FORGE,
        0,
        1,
        100,
        SEND,
        10,
        SEND,
        11,
        SEND_SLICE,
        2,
        SEND_TIMEOUT,
        1,
        2,
        SEND_SLICE,
        0,
        OBSERVE,
    ];
    // The consumer finds a stamp that is neither published nor the previous lap.
    let consumer_corrupt: &[u8] = &[
        SEND,
        1,
        FORGE,
        2,
        4,
        0,
        0x42,
        0x42,
        0x42,
        0x42,
        0x42,
        0x42,
        0x42,
        0x42,
        RECV,
        RECV,
        RECV_INTO,
        2,
        RECV_TIMEOUT,
        5,
        ITER,
        3,
        RECV_INTO,
        0,
        OBSERVE,
    ];
    // The shared poison flag turns an empty consumer's next look into Corrupted.
    let poisoned: &[u8] = &[RECV, FORGE, 6, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, RECV, RECV, ITER, 2];
    // Our own owner word without the detached bit: attaching again meets AlreadyAttached.
    let reclaim: &[u8] = &[TOGGLE_PRODUCER, FORGE, 4, 3, 63, TOGGLE_PRODUCER, SEND, 1, OBSERVE];
    // Futex words claiming a sleeper, and endpoint words flipped while in use.
    let sleepers: &[u8] = &[
        FORGE,
        7,
        4,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        SEND,
        1,
        FORGE,
        7,
        4,
        1,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        RECV,
        FORGE,
        5,
        3,
        63,
        SEND,
        2,
        FORGE,
        4,
        3,
        63,
        RECV,
        RECV,
        OBSERVE,
        TOGGLE_CONSUMER,
        TOGGLE_PRODUCER,
    ];

    c.add("empty", &[]);
    c.add("raw-empty-object", &[0]);
    c.add("raw-one-byte", &[0, b'S']);

    for elem in ELEMS {
        let image = harness::valid_image(&typical(elem));
        c.add(&format!("raw-valid-{}", elem_name(elem)), &raw(0, &image, basic));
    }
    let u64_spec = typical(Elem::U64);
    let good = harness::valid_image(&u64_spec);
    c.add("raw-valid-u64-race", &raw(0, &good, race));
    c.add("raw-valid-u64-memfd", &raw(mode::MEMFD, &good, basic));
    c.add("raw-valid-u64-memfd-unsealed", &raw(mode::MEMFD | mode::UNSEALED, &good, basic));
    c.add("raw-valid-u64-sleep", &raw(wait(2), &good, race));
    let mut longer = good.clone();
    longer.extend_from_slice(&[0u8; 4096]);
    c.add("raw-object-longer-than-segment", &raw(0, &longer, &[]));

    // Each header field damaged; the checksum recomputed so the field's own check fires.
    type Edit = fn(&mut RawHeader);
    let edits: &[(&str, Edit)] = &[
        ("magic", |h| h.magic ^= 1 << 8),
        ("init-state-zero", |h| h.init_state = 0),
        ("init-state-garbage", |h| h.init_state = 0x1234_5678),
        ("version-major", |h| h.version_major += 1),
        ("version-minor", |h| h.version_minor += 1),
        ("flavor", |h| h.flavor = 2),
        ("header-len", |h| h.header_len = 64),
        ("segment-len-zero", |h| h.segment_len = 0),
        ("segment-len-page-more", |h| h.segment_len += 4096),
        ("segment-len-huge", |h| h.segment_len = u64::MAX),
        ("capacity-not-pow2", |h| h.capacity = 3),
        ("capacity-zero", |h| h.capacity = 0),
        ("capacity-huge", |h| h.capacity = 1 << 40),
        ("capacity-doubled-same-len", |h| h.capacity = 16),
        ("capacity-halved", |h| h.capacity = 4),
        ("capacity-needs-more-pages", |h| h.capacity = 256),
        ("elem-size", |h| h.elem_size = 4),
        ("elem-align", |h| h.elem_align = 16),
        ("slot-stride", |h| h.slot_stride = 8),
        ("slots-offset", |h| h.slots_offset = 0),
        ("fingerprint", |h| h.fingerprint ^= 1),
        ("creator-pid", |h| h.creator_pid = 1),
        ("extra", |h| h.extra = 1),
        ("reserved", |h| h.reserved = [1, 2]),
    ];
    for (name, f) in edits {
        c.add(&format!("raw-header-{name}"), &raw(0, &edit(&good, true, f), basic));
    }
    c.add("raw-header-checksum", &raw(0, &edit(&good, false, |h| h.checksum ^= 1), &[]));
    c.add("raw-header-stale-checksum", &raw(0, &edit(&good, false, |h| h.capacity = 16), &[]));

    for len in [1, 8, 12, 127, 128, 767, 768, 2048, 4095] {
        let mut data = vec![0u8];
        data.extend_from_slice(&good[..len]);
        c.add(&format!("raw-truncated-{len}"), &data);
    }
    let mut memfd_short = vec![mode::MEMFD];
    memfd_short.extend_from_slice(&good[..700]);
    c.add("raw-truncated-memfd", &memfd_short);

    // Control block damage in a raw image (the header stays valid).
    let at = |image: &mut Vec<u8>, offset: u16, bytes: &[u8]| {
        let o = usize::from(offset);
        image[o..o + bytes.len()].copy_from_slice(bytes);
    };
    let mut head_ahead = good.clone();
    at(&mut head_ahead, HEAD, &100u64.to_le_bytes());
    c.add("raw-control-head-ahead", &raw(0, &head_ahead, basic));
    let mut tail_far = good.clone();
    at(&mut tail_far, TAIL, &(1u64 << 40).to_le_bytes());
    c.add("raw-control-tail-far", &raw(0, &tail_far, basic));
    let mut stamp = good.clone();
    let h: RawHeader = bytemuck::pod_read_unaligned(&good[..128]);
    let slot2 = (h.slots_offset + 2 * h.slot_stride) as usize;
    stamp[slot2..slot2 + 8].copy_from_slice(&0xdead_beefu64.to_le_bytes());
    c.add("raw-control-stamp", &raw(0, &stamp, basic));
    let mut foreign = good.clone();
    at(&mut foreign, PRODUCER_WORD, &1u64.to_le_bytes());
    at(&mut foreign, POISONED, &1u32.to_le_bytes());
    at(&mut foreign, CONSUMER_WAIT, &1u32.to_le_bytes());
    c.add("raw-control-owner-poison-sleeper", &raw(0, &foreign, basic));

    // Patched: every element type, a few capacities, fill levels and start positions.
    for (i, elem) in ELEMS.into_iter().enumerate() {
        let s = typical(elem);
        let name = elem_name(elem);
        c.add(&format!("patched-{name}-basic"), &patched(0, &s, &[], false, basic));
        c.add(&format!("patched-{name}-race"), &patched(wait(i as u8 % 4), &s, &[], false, race));
        let wrap = spec(elem, 2, 5, 1, START_POSITIONS[1 + i % 3]);
        c.add(&format!("patched-{name}-wrap"), &patched(0, &wrap, &[], false, basic));
    }
    let s = spec(Elem::U64, 4, 2, 0, 0);
    c.add("patched-u64-producer-corrupt", &patched(0, &s, &[], false, producer_corrupt));
    c.add("patched-u64-consumer-corrupt", &patched(0, &s, &[], false, consumer_corrupt));
    c.add("patched-u64-poisoned", &patched(0, &s, &[], false, poisoned));
    c.add("patched-u64-reclaim", &patched(0, &s, &[], false, reclaim));
    c.add("patched-u8-sleepers", &patched(wait(2), &typical(Elem::U8), &[], false, sleepers));
    c.add("patched-u64-memfd", &patched(mode::MEMFD, &s, &[], false, race));

    // Patched header fields with the checksum recomputed: geometry validation sees them.
    let full = spec(Elem::U8, 4, 4, 0, 0);
    let header_patches: &[(&str, u16, &[u8])] = &[
        ("capacity-2", 32, &[2]),
        ("capacity-8", 32, &[8]),
        ("capacity-top-bit", 39, &[0x80]),
        ("segment-len", 25, &[0x20]),
        ("slot-stride", 56, &[32]),
        ("elem-align", 48, &[2]),
        ("init-state", 8, &[0]),
    ];
    for (name, offset, bytes) in header_patches {
        let data = patched(0, &full, &[(*offset, bytes)], true, basic);
        c.add(&format!("patched-header-{name}"), &data);
    }
    c.add("patched-header-no-checksum", &patched(0, &full, &[(32, &[2])], false, basic));
    // Patched control words and stamps.
    let control_patches: &[(&str, u16, &[u8])] = &[
        ("head-minus-one", HEAD, &[0xff; 8]),
        ("tail-plus-5", TAIL, &[5]),
        ("tail-lag-one", TAIL, &[3]),
        ("stamp-0", stamp_selector(0), &[0x99]),
        ("stamp-3-high", stamp_selector(3) + 7, &[0x80]),
        ("producer-live-word", PRODUCER_WORD + 7, &[0x00]),
        ("consumer-word", PRODUCER_WORD + 8, &[1, 0, 0, 0, 0, 0, 0, 0]),
        ("any-byte", 0x8000 | 900, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
    ];
    for (name, selector, bytes) in control_patches {
        let data = patched(0, &full, &[(*selector, bytes)], false, basic);
        c.add(&format!("patched-control-{name}"), &data);
    }

    let mut stats = harness::OpenStats::default();
    for entry in std::fs::read_dir(&c.dir).unwrap() {
        stats.absorb(harness::open_segment(&std::fs::read(entry.unwrap().path()).unwrap()));
    }
    println!("open_segment: {} seeds, {} bytes; {stats:#?}", c.count, c.bytes);
}

fn ring_ops_seeds() {
    let mut c = Corpus::new("ring_ops");
    use ring_op::*;
    // capacity byte (1 << (b % 7)), flags byte, ops.
    let seeds: &[(&str, &[u8])] = &[
        ("cap1-full-empty", &[0, 0, SEND, SEND, RECV, RECV, OBSERVE, SEND, OBSERVE, RECV]),
        (
            "cap4-slices",
            &[
                2, 0, SEND_SLICE, 10, SEND_SLICE, 1, OBSERVE, RECV_INTO, 3, SEND_SLICE, 5,
                RECV_INTO, 79, RECV_INTO, 1, SEND_SLICE, 0, RECV_INTO, 0, ITER, 9, OBSERVE,
            ],
        ),
        (
            "producer-gone-drains-then-disconnects",
            &[
                3,
                0,
                SEND,
                SEND,
                SEND,
                TOGGLE_PRODUCER,
                OBSERVE,
                RECV,
                RECV_INTO,
                1,
                ITER,
                5,
                RECV,
                RECV_TIMEOUT,
                1,
                RECV_INTO_TIMEOUT,
                4,
                2,
                OBSERVE,
                TOGGLE_PRODUCER,
                SEND,
                RECV,
                RECV,
            ],
        ),
        (
            "consumer-gone",
            &[
                2,
                0,
                SEND,
                TOGGLE_CONSUMER,
                SEND,
                SEND_SLICE,
                3,
                SEND_SLICE,
                0,
                SEND_TIMEOUT,
                2,
                OBSERVE,
                TOGGLE_CONSUMER,
                RECV,
                SEND,
                OBSERVE,
                RECV,
            ],
        ),
        ("attach-twice", &[1, 0, ATTACH_TWICE, 0, ATTACH_TWICE, 1, SEND, RECV, OBSERVE]),
        (
            "start-vacant",
            &[
                2,
                0x30,
                RECV,
                SEND,
                TOGGLE_CONSUMER,
                RECV,
                RECV_TIMEOUT,
                0,
                TOGGLE_PRODUCER,
                SEND,
                SEND,
                SEND,
                SEND,
                SEND,
                SEND_TIMEOUT,
                3,
                OBSERVE,
            ],
        ),
        (
            "consumer-vacant-full",
            &[0, 0x20, SEND, SEND, SEND_TIMEOUT, 1, OBSERVE, TOGGLE_CONSUMER, RECV, SEND],
        ),
        (
            "sleep-timeouts",
            &[
                1,
                0x08,
                SEND,
                SEND,
                SEND_TIMEOUT,
                3,
                RECV_TIMEOUT,
                3,
                RECV_TIMEOUT,
                3,
                RECV_TIMEOUT,
                3,
                RECV_INTO_TIMEOUT,
                5,
                3,
                OBSERVE,
            ],
        ),
    ];
    for (name, data) in seeds {
        c.add(name, data);
    }
    // Wrap-around at every start position, for a few capacities.
    for start in 0..4u8 {
        for exp in [0u8, 1, 3, 6] {
            let mut data = vec![exp, start];
            for i in 0..90u8 {
                data.extend_from_slice(&[SEND, SEND_SLICE, i % 7, RECV, RECV_INTO, i % 5, OBSERVE]);
            }
            c.add(&format!("wrap-start{start}-cap{}", 1 << exp), &data);
        }
    }
    // Random sequences.
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    for i in 0..24 {
        let mut data = vec![rng.below(7) as u8, rng.below(64) as u8];
        for _ in 0..32 + rng.below(400) {
            // Endpoint toggles are rarer than sends and receives.
            let mut code = rng.below(12) as u8;
            if matches!(code, TOGGLE_PRODUCER | TOGGLE_CONSUMER) && rng.below(4) != 0 {
                code = SEND;
            }
            data.push(code + 12 * rng.below(21) as u8);
            if matches!(code, SEND_SLICE | RECV_INTO | ITER) {
                data.push(rng.below(12) as u8);
            } else if matches!(code, SEND_TIMEOUT | RECV_TIMEOUT | ATTACH_TWICE) {
                data.push(rng.next() as u8);
            } else if code == RECV_INTO_TIMEOUT {
                data.extend_from_slice(&[rng.below(12) as u8, rng.next() as u8]);
            }
        }
        c.add(&format!("random-{i:02}"), &data);
    }

    let mut stats = harness::RingStats::default();
    for entry in std::fs::read_dir(&c.dir).unwrap() {
        stats.absorb(harness::ring_ops(&std::fs::read(entry.unwrap().path()).unwrap()));
    }
    println!("ring_ops: {} seeds, {} bytes; {stats:#?}", c.count, c.bytes);
}
