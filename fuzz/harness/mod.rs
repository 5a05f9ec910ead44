//! Fuzz logic for shmchan, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`), the seed
//! generator (`fuzz/examples/gen_corpus.rs`) and the stable corpus replay test
//! (`tests/fuzz_corpus.rs`), which all include this file with `#[path = "..."] mod harness;`.
//! Nothing here depends on libFuzzer.
//!
//! Two entry points, one per fuzz target:
//! - [`open_segment`]: the input is a segment image written by an untrusted peer. Opening it
//!   must return a typed result, and every ring operation on an opened channel, while the
//!   "peer" keeps rewriting the mapped bytes, must return a value or an error without a panic,
//!   an out-of-bounds access or a hang; corruption, once reported, must stay reported.
//! - [`ring_ops`]: the input is an operation sequence on a healthy channel; every call must
//!   return exactly what a `VecDeque` model of the ring says.
//!
//! Both return counters of what the input reached, so the replay test can check that the corpus
//! still covers the interesting outcomes.

pub mod bytes;
pub mod mpmc;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use shmchan::layout::{self, Geometry, RawHeader};
use shmchan::spsc::{Channel, Consumer, Options, Producer};
use shmchan::{
    Backing, OpenError, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError,
    WaitStrategy,
};

// ------------------------------------------------------------------------------------------
// Input decoding
// ------------------------------------------------------------------------------------------

/// A cursor over fuzz input; reads past the end yield `None` (or fewer bytes).
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    /// A byte, or 0 at the end of the input.
    fn byte(&mut self) -> u8 {
        self.u8().unwrap_or(0)
    }

    fn u16(&mut self) -> Option<u16> {
        let lo = self.u8()?;
        Some(u16::from_le_bytes([lo, self.byte()]))
    }

    fn u64(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        let src = self.take(8);
        buf[..src.len()].copy_from_slice(src);
        u64::from_le_bytes(buf)
    }

    /// Up to `n` bytes.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        head
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

// ------------------------------------------------------------------------------------------
// Element types
// ------------------------------------------------------------------------------------------

/// A 256-aligned element: payloads start 256 bytes into each slot and slots at a 256 boundary.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(256))]
pub struct Wide(pub [u8; 256]);

/// An element type the harness opens segments as.
pub trait Element: Pod {
    /// An explicit fingerprint, for types whose `type_name` differs between the crates that
    /// include this harness (the default fingerprint hashes the type's path).
    const FINGERPRINT: Option<u64> = None;
}

impl Element for u8 {}
impl Element for u64 {}
impl Element for [u64; 8] {}
impl Element for [u8; 4096] {}
impl Element for Wide {
    const FINGERPRINT: Option<u64> = Some(0x5769_6465_2d32_3536);
}

/// The element types, as chosen by input bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    U8,
    U64,
    Line,
    Page,
    Wide,
}

pub const ELEMS: [Elem; 5] = [Elem::U8, Elem::U64, Elem::Line, Elem::Page, Elem::Wide];

/// Calls a generic function with the Rust type of an [`Elem`].
macro_rules! with_element {
    ($elem:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $elem {
            Elem::U8 => $f::<u8>($($arg),*),
            Elem::U64 => $f::<u64>($($arg),*),
            Elem::Line => $f::<[u64; 8]>($($arg),*),
            Elem::Page => $f::<[u8; 4096]>($($arg),*),
            Elem::Wide => $f::<Wide>($($arg),*),
        }
    };
}

fn options<T: Element>() -> Options {
    match T::FINGERPRINT {
        Some(f) => Options::new().fingerprint(f),
        None => Options::new(),
    }
}

/// A `T` whose every byte is `b`.
fn value<T: Pod>(b: u8) -> T {
    let mut v = T::zeroed();
    bytemuck::bytes_of_mut(&mut v).fill(b);
    v
}

fn same<T: Pod>(a: &T, b: &T) -> bool {
    bytemuck::bytes_of(a) == bytemuck::bytes_of(b)
}

/// Start positions a segment may be created with: zero, and points near the `u32` and `u64`
/// wrap-arounds.
pub const START_POSITIONS: [u64; 4] = [0, u64::MAX - 5, (1 << 32) - 3, 1 << 63];

/// Wait strategies the channel may use. Inputs that pick one with two bits reach the first
/// four; `Adaptive` (the same as the first while the endpoints do not outnumber the CPUs)
/// comes last so that those inputs keep their meaning.
pub const WAITS: [WaitStrategy; 5] = [
    WaitStrategy::SpinThenSleep(Duration::from_micros(50)),
    WaitStrategy::Spin,
    WaitStrategy::Sleep,
    WaitStrategy::SpinThenSleep(Duration::ZERO),
    WaitStrategy::Adaptive,
];

/// A timeout from an input byte: 0, 5, 10 or 15 µs. Every blocking call in the harness uses
/// one, so no input can make it wait for long.
fn tiny_timeout(b: u8) -> Duration {
    Duration::from_micros(u64::from(b & 3) * 5)
}

// ------------------------------------------------------------------------------------------
// Scratch objects
// ------------------------------------------------------------------------------------------

/// A path for a scratch file, unique to this process and call; tmpfs when available.
fn scratch_path(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let path = dir.join(format!("shmchan-fuzz-{}-{tag}-{n}", std::process::id()));
    // A crashed earlier process with the same (recycled) pid may have left it behind.
    let _ = std::fs::remove_file(&path);
    path
}

/// Removes its path when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The object a segment image is opened from: a regular file or a memfd, plus our own handle
/// to it, through which the "peer" rewrites bytes while the channel is open.
struct Object {
    file: File,
    len: u64,
    kind: ObjectKind,
}

enum ObjectKind {
    File(RemoveOnDrop),
    Memfd,
}

impl Object {
    fn file(image: &[u8]) -> Self {
        let path = scratch_path("object");
        let guard = RemoveOnDrop(path.clone());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("create a scratch file");
        file.write_all_at(image, 0).expect("write the scratch file");
        Object { file, len: image.len() as u64, kind: ObjectKind::File(guard) }
    }

    /// A memfd holding `image`, sealed against shrinking and growing unless `seal` is false.
    fn memfd(image: &[u8], seal: bool) -> Self {
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // SAFETY: memfd_create reads the NUL-terminated name, a static C string, and nothing else.
        let raw = unsafe { libc::memfd_create(c"shmchan-fuzz".as_ptr(), flags) };
        assert!(raw >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
        let file = unsafe { File::from_raw_fd(raw) };
        file.write_all_at(image, 0).expect("write the memfd");
        if seal {
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
            // SAFETY: F_ADD_SEALS takes an integer argument and no pointer; the fd is ours.
            let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
            assert!(rc == 0, "F_ADD_SEALS: {}", std::io::Error::last_os_error());
        }
        Object { file, len: image.len() as u64, kind: ObjectKind::Memfd }
    }

    /// The backing to open: the path, or a new descriptor for the memfd.
    fn backing(&self) -> Backing {
        match &self.kind {
            ObjectKind::File(path) => Backing::File(path.0.clone()),
            ObjectKind::Memfd => {
                Backing::Fd(OwnedFd::from(self.file.try_clone().expect("dup the memfd")))
            }
        }
    }

    /// Writes `bytes` at `offset`, clipped to the object (it never grows or shrinks, so the
    /// mapping never runs past the end of the object).
    fn write(&self, offset: u64, bytes: &[u8]) {
        if offset >= self.len {
            return;
        }
        let n = bytes.len().min((self.len - offset) as usize);
        self.file.write_all_at(&bytes[..n], offset).expect("pwrite into the object");
    }

    /// Reads the `u64` at `offset`, zero past the end.
    fn read_u64(&self, offset: u64) -> u64 {
        let mut buf = [0u8; 8];
        if offset < self.len {
            let n = 8.min((self.len - offset) as usize);
            self.file.read_exact_at(&mut buf[..n], offset).expect("pread from the object");
        }
        u64::from_le_bytes(buf)
    }
}

// ------------------------------------------------------------------------------------------
// Valid images
// ------------------------------------------------------------------------------------------

/// How the harness builds a valid segment image: a channel of `capacity` slots of `elem`
/// created at `start`, `sent` messages sent (receiving one whenever the ring is full), then
/// up to `received` more received, both endpoints dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    pub elem: Elem,
    pub capacity: usize,
    pub sent: u8,
    pub received: u8,
    pub start: u64,
}

impl ImageSpec {
    /// Decodes the two spec bytes of a patched input.
    fn decode(elem: Elem, input: &mut Input<'_>) -> Self {
        let a = input.byte();
        let b = input.byte();
        ImageSpec {
            elem,
            capacity: 1 << ((a & 7) % 5),
            sent: a >> 3,
            received: b & 63,
            start: START_POSITIONS[usize::from(b >> 6)],
        }
    }
}

/// Most valid images kept in the per-thread cache.
const MAX_CACHED_IMAGES: usize = 256;

/// The image `spec` describes (built once per process and spec, then cached).
pub fn valid_image(spec: &ImageSpec) -> Vec<u8> {
    thread_local! {
        static CACHE: RefCell<HashMap<ImageSpec, Vec<u8>>> = RefCell::new(HashMap::new());
    }
    if let Some(image) = CACHE.with(|c| c.borrow().get(spec).cloned()) {
        return image;
    }
    let image = with_element!(spec.elem, build_image(spec));
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        // The spec space is large; keep memory bounded during long fuzzing runs.
        if cache.len() >= MAX_CACHED_IMAGES {
            cache.clear();
        }
        cache.insert(*spec, image.clone())
    });
    image
}

fn build_image<T: Element>(spec: &ImageSpec) -> Vec<u8> {
    let path = scratch_path("image");
    let _guard = RemoveOnDrop(path.clone());
    let opts =
        options::<T>().capacity(spec.capacity).remove_on_drop(false).start_position(spec.start);
    let chan = Channel::<T>::create(Backing::File(path.clone()), &opts).expect("create an image");
    let mut tx = chan.producer().expect("attach the image's producer");
    let mut rx = chan.consumer().expect("attach the image's consumer");
    for i in 0..spec.sent {
        let v = value::<T>(i.wrapping_add(1));
        if let Err(TrySendError::Full(v)) = tx.try_send(v) {
            rx.try_recv().expect("a full ring has a message");
            tx.try_send(v).expect("a slot was just freed");
        }
    }
    for _ in 0..spec.received {
        if rx.try_recv().is_err() {
            break;
        }
    }
    drop((tx, rx, chan));
    std::fs::read(&path).expect("read the image back")
}

/// Where the slots of an image are, as its header says.
#[derive(Clone, Copy, Debug)]
struct SlotMap {
    offset: u64,
    stride: u64,
    capacity: u64,
}

impl SlotMap {
    fn of_header(image: &[u8]) -> Self {
        let h: RawHeader = bytemuck::pod_read_unaligned(&image[..size_of::<RawHeader>()]);
        SlotMap { offset: h.slots_offset, stride: h.slot_stride, capacity: h.capacity.max(1) }
    }

    fn of_geometry(g: &Geometry) -> Self {
        SlotMap { offset: g.slots_offset, stride: g.slot_stride, capacity: g.capacity }
    }

    /// Offset of the stamp of the slot `position` maps to.
    fn stamp(&self, position: u64) -> u64 {
        let index = position & (self.capacity - 1);
        self.offset.wrapping_add(index.wrapping_mul(self.stride))
    }

    /// Maps a selector from the input to an object offset: below 768 the header and control
    /// block byte by byte, with the top bit set any byte of the first 32 KiB, otherwise a byte
    /// of a slot stamp ((selector - 768) / 8 picks the slot, the low 3 bits the byte).
    fn target(&self, selector: u16) -> u64 {
        let control_end = layout::CONTROL_OFFSET + layout::CONTROL_LEN;
        let s = u64::from(selector);
        if s & 0x8000 != 0 {
            s & 0x7fff
        } else if s < control_end {
            s
        } else {
            let k = (s - control_end) / 8;
            self.stamp(k).wrapping_add(s % 8)
        }
    }
}

/// Offsets of the control block words.
const PRODUCER_WORD: u64 = layout::CONTROL_OFFSET;
const CONSUMER_WORD: u64 = layout::CONTROL_OFFSET + 8;
const POISONED: u64 = layout::CONTROL_OFFSET + 16;
const TAIL: u64 = layout::CONTROL_OFFSET + layout::LINE;
const HEAD: u64 = layout::CONTROL_OFFSET + 2 * layout::LINE;
const PRODUCER_WAIT: u64 = layout::CONTROL_OFFSET + 3 * layout::LINE;
const CONSUMER_WAIT: u64 = layout::CONTROL_OFFSET + 4 * layout::LINE;

// ------------------------------------------------------------------------------------------
// open_segment
// ------------------------------------------------------------------------------------------

/// Bits of the first byte of an `open_segment` input.
pub mod mode {
    /// Patched mode (else raw).
    pub const PATCHED: u8 = 1;
    /// Open from a memfd passed as [`Backing::Fd`](shmchan::Backing::Fd) (else a file path).
    pub const MEMFD: u8 = 2;
    /// With [`MEMFD`]: leave the memfd unsealed (open must refuse it).
    pub const UNSEALED: u8 = 4;
    /// Bits 3..5: index into [`WAITS`](super::WAITS).
    pub const WAIT_SHIFT: u8 = 3;
    /// Bits 5..8 (patched mode): index into [`ELEMS`](super::ELEMS), modulo its length.
    pub const ELEM_SHIFT: u8 = 5;
}

/// Flag bit of a patched input's patch byte: recompute the header checksum after patching.
pub const RECOMPUTE_CHECKSUM: u8 = 1;

/// In raw mode the op script is the last `RAW_SCRIPT_LEN` bytes of the object: padding after
/// the slots in a small ring, which the fuzzer may change without invalidating the image.
pub const RAW_SCRIPT_LEN: usize = 256;

/// Most operations one opened channel runs.
pub const MAX_OPS: usize = 64;

/// Script op codes of `open_segment` (a zero byte ends the script; other bytes map to
/// `(b - 1) % 12 + 1`).
pub mod op {
    /// `try_send(value)`; arg: the value's fill byte.
    pub const SEND: u8 = 1;
    /// `try_recv()`.
    pub const RECV: u8 = 2;
    /// `try_send_slice`; arg: count (mod 5).
    pub const SEND_SLICE: u8 = 3;
    /// `try_recv_into`; arg: buffer length (mod 5).
    pub const RECV_INTO: u8 = 4;
    /// Peer write: selector u16, length (mod 16, + 1), bytes.
    pub const POKE: u8 = 5;
    /// Drop the producer, or attach one.
    pub const TOGGLE_PRODUCER: u8 = 6;
    /// Drop the consumer, or attach one.
    pub const TOGGLE_CONSUMER: u8 = 7;
    /// `send_timeout`; args: fill byte, timeout byte.
    pub const SEND_TIMEOUT: u8 = 8;
    /// `recv_timeout` or (odd arg) `recv_into_timeout`; arg: timeout byte.
    pub const RECV_TIMEOUT: u8 = 9;
    /// `is_disconnected`, `len`, `capacity`, `position` on everything.
    pub const OBSERVE: u8 = 10;
    /// Peer write of a control word; args: which word, how, delta (i8), [u64].
    pub const FORGE: u8 = 11;
    /// `try_iter().take(n)`; arg: n (mod 8).
    pub const ITER: u8 = 12;
}

/// Counters of what `open_segment` inputs reached.
#[derive(Debug, Default)]
pub struct OpenStats {
    /// Successful opens.
    pub opened: u64,
    /// Open and attach errors by variant name.
    pub errors: BTreeMap<&'static str, u64>,
    /// Successful endpoint attaches.
    pub attached: u64,
    /// Messages sent and received.
    pub sent: u64,
    pub received: u64,
    /// Operations that reported `Corrupted`.
    pub corrupted: u64,
    /// Peer writes into an open channel's object.
    pub pokes: u64,
}

impl OpenStats {
    pub fn absorb(&mut self, other: OpenStats) {
        self.opened += other.opened;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.attached += other.attached;
        self.sent += other.sent;
        self.received += other.received;
        self.corrupted += other.corrupted;
        self.pokes += other.pokes;
    }

    fn error(&mut self, e: &OpenError) {
        // Display must not panic on any error built from peer-controlled values.
        let _ = e.to_string();
        *self.errors.entry(open_error_kind(e)).or_default() += 1;
    }
}

fn open_error_kind(e: &OpenError) -> &'static str {
    match e {
        OpenError::NotFound => "NotFound",
        OpenError::AlreadyExists => "AlreadyExists",
        OpenError::PermissionDenied => "PermissionDenied",
        OpenError::ForeignOwner { .. } => "ForeignOwner",
        OpenError::InvalidName { .. } => "InvalidName",
        OpenError::InvalidOption { .. } => "InvalidOption",
        OpenError::NoSpace { .. } => "NoSpace",
        OpenError::NotASegment { .. } => "NotASegment",
        OpenError::MissingSeals { .. } => "MissingSeals",
        OpenError::BadMagic { .. } => "BadMagic",
        OpenError::VersionMismatch { .. } => "VersionMismatch",
        OpenError::FlavorMismatch { .. } => "FlavorMismatch",
        OpenError::TypeMismatch { .. } => "TypeMismatch",
        OpenError::TooSmall { .. } => "TooSmall",
        OpenError::NotInitialized => "NotInitialized",
        OpenError::Corrupted { .. } => "Corrupted",
        OpenError::AlreadyAttached { .. } => "AlreadyAttached",
        OpenError::Io { .. } => "Io",
        _ => "other",
    }
}

/// Treats `data` as a segment image written by an untrusted peer.
///
/// First byte ([`mode`]): raw or patched, file or memfd (sealed or not), wait strategy.
/// - Raw: the rest of the input is the object, opened as every element type in turn; the op
///   script is the object's last [`RAW_SCRIPT_LEN`] bytes.
/// - Patched: element type from the mode byte, two [`ImageSpec`] bytes, then a patch byte
///   (bit 0: [`RECOMPUTE_CHECKSUM`], bits 1..: patch count mod 16) and the patches (selector
///   u16 as in the slot map, length mod 16 + 1, bytes) applied to a valid image; the rest of
///   the input is the op script ([`op`]).
///
/// Checks: opening returns `Ok` or a typed [`OpenError`] (whose `Display` works); on an opened
/// channel at most [`MAX_OPS`] non-blocking or tiny-timeout operations, interleaved with peer
/// writes to the object, never panic; a send error hands back the very value sent; batch calls
/// report counts within their slice; `len()` never exceeds the capacity; after the first
/// `Corrupted` from a handle, every later call on that handle reports `Corrupted`.
pub fn open_segment(data: &[u8]) -> OpenStats {
    let mut stats = OpenStats::default();
    let mut input = Input::new(data);
    let mode = input.byte();
    if mode & mode::PATCHED == 0 {
        let object = input.rest();
        let script = &object[object.len().saturating_sub(RAW_SCRIPT_LEN)..];
        let obj = make_object(object, mode);
        for elem in ELEMS {
            // An earlier element type's run may have rewritten the object: restore it.
            obj.write(0, object);
            with_element!(elem, open_and_run(&obj, object, script, mode, &mut stats));
        }
    } else {
        let elem = ELEMS[usize::from(mode >> mode::ELEM_SHIFT) % ELEMS.len()];
        let spec = ImageSpec::decode(elem, &mut input);
        let mut image = valid_image(&spec);
        apply_patches(&mut image, &mut input);
        let script = input.rest();
        let obj = make_object(&image, mode);
        with_element!(elem, open_and_run(&obj, &image, script, mode, &mut stats));
    }
    stats
}

fn make_object(image: &[u8], mode: u8) -> Object {
    if mode & mode::MEMFD != 0 {
        Object::memfd(image, mode & mode::UNSEALED == 0)
    } else {
        Object::file(image)
    }
}

fn apply_patches(image: &mut [u8], input: &mut Input<'_>) {
    let slots = SlotMap::of_header(image);
    let flags = input.byte();
    for _ in 0..(flags >> 1) % 16 {
        let Some(selector) = input.u16() else { break };
        let len = usize::from(input.byte() % 16) + 1;
        let bytes = input.take(len);
        let at = slots.target(selector);
        let at = usize::try_from(at).unwrap_or(usize::MAX);
        if at < image.len() {
            let n = bytes.len().min(image.len() - at);
            image[at..at + n].copy_from_slice(&bytes[..n]);
        }
    }
    if flags & RECOMPUTE_CHECKSUM != 0 {
        let mut h: RawHeader = bytemuck::pod_read_unaligned(&image[..size_of::<RawHeader>()]);
        h.checksum = h.compute_checksum();
        image[..size_of::<RawHeader>()].copy_from_slice(bytemuck::bytes_of(&h));
    }
}

fn open_and_run<T: Element>(
    obj: &Object,
    image: &[u8],
    script: &[u8],
    mode: u8,
    stats: &mut OpenStats,
) {
    let wait = WAITS[usize::from(mode >> mode::WAIT_SHIFT) % WAITS.len()];
    let opts = options::<T>().open_timeout(Duration::ZERO).wait_strategy(wait);
    match Channel::<T>::open(obj.backing(), &opts) {
        Ok(chan) => {
            stats.opened += 1;
            // What open promised: the object is at least as long as the geometry needs.
            let g = Geometry::new(
                chan.capacity() as u64,
                size_of::<T>() as u64,
                align_of::<T>() as u64,
            )
            .expect("an opened channel has a valid geometry");
            assert!(g.segment_len <= image.len() as u64, "opened a segment longer than its object");
            exercise(&chan, obj, &g, script, stats);
        }
        Err(e) => stats.error(&e),
    }
}

/// Remembers whether a handle has reported `Corrupted`, and checks that it keeps doing so.
#[derive(Default)]
struct Sticky(bool);

impl Sticky {
    fn saw(&mut self, corrupted: bool, what: &str, stats: &mut OpenStats) {
        assert!(!self.0 || corrupted, "{what} on a handle that reported Corrupted did not");
        self.0 |= corrupted;
        stats.corrupted += u64::from(corrupted);
    }
}

fn attach<H>(result: Result<H, OpenError>, stats: &mut OpenStats) -> Option<H> {
    match result {
        Ok(h) => {
            stats.attached += 1;
            Some(h)
        }
        Err(e) => {
            stats.error(&e);
            None
        }
    }
}

fn exercise<T: Element>(
    chan: &Channel<T>,
    obj: &Object,
    g: &Geometry,
    script: &[u8],
    stats: &mut OpenStats,
) {
    let cap = chan.capacity();
    let slots = SlotMap::of_geometry(g);
    let mut input = Input::new(script);
    let mut tx: Option<Producer<T>> = attach(chan.producer(), stats);
    let mut rx: Option<Consumer<T>> = attach(chan.consumer(), stats);
    let (mut tx_bad, mut rx_bad) = (Sticky::default(), Sticky::default());
    for _ in 0..MAX_OPS {
        let code = match input.byte() {
            0 => break,
            b => (b - 1) % 12 + 1,
        };
        match code {
            op::SEND => {
                let v = value::<T>(input.byte());
                if let Some(p) = tx.as_mut() {
                    let r = p.try_send(v);
                    tx_bad.saw(matches!(r, Err(TrySendError::Corrupted(_))), "try_send", stats);
                    match r {
                        Ok(()) => stats.sent += 1,
                        Err(e) => assert!(same(&e.into_inner(), &v), "try_send lost the value"),
                    }
                }
            }
            op::RECV => {
                if let Some(c) = rx.as_mut() {
                    let r = c.try_recv();
                    rx_bad.saw(matches!(r, Err(TryRecvError::Corrupted)), "try_recv", stats);
                    stats.received += u64::from(r.is_ok());
                }
            }
            op::SEND_SLICE => {
                let k = usize::from(input.byte() % 5);
                let values: Vec<T> = (0..k).map(|i| value::<T>(i as u8)).collect();
                if let Some(p) = tx.as_mut() {
                    let r = p.try_send_slice(&values);
                    let bad = r == Err(TrySendError::Corrupted(()));
                    tx_bad.saw(bad, "try_send_slice", stats);
                    match r {
                        Ok(n) => {
                            assert!(n <= k && (n > 0 || k == 0), "try_send_slice sent {n} of {k}");
                            stats.sent += n as u64;
                        }
                        Err(TrySendError::Full(())) => assert!(k > 0, "Full on an empty slice"),
                        Err(_) => {}
                    }
                }
            }
            op::RECV_INTO => {
                let k = usize::from(input.byte() % 5);
                if let Some(c) = rx.as_mut() {
                    let mut buf = vec![T::zeroed(); k];
                    let r = c.try_recv_into(&mut buf);
                    rx_bad.saw(r == Err(TryRecvError::Corrupted), "try_recv_into", stats);
                    if let Ok(n) = r {
                        assert!(n <= k && (n > 0 || k == 0), "try_recv_into got {n} into {k}");
                        stats.received += n as u64;
                    }
                }
            }
            op::POKE => {
                let selector = input.u16().unwrap_or(0);
                let len = usize::from(input.byte() % 16) + 1;
                obj.write(slots.target(selector), input.take(len));
                stats.pokes += 1;
            }
            op::TOGGLE_PRODUCER => {
                if tx.take().is_none() {
                    tx = attach(chan.producer(), stats);
                    tx_bad = Sticky::default();
                }
            }
            op::TOGGLE_CONSUMER => {
                if rx.take().is_none() {
                    rx = attach(chan.consumer(), stats);
                    rx_bad = Sticky::default();
                }
            }
            op::SEND_TIMEOUT => {
                let v = value::<T>(input.byte());
                let t = tiny_timeout(input.byte());
                if let Some(p) = tx.as_mut() {
                    let r = p.send_timeout(v, t);
                    let bad = matches!(r, Err(SendTimeoutError::Corrupted(_)));
                    tx_bad.saw(bad, "send_timeout", stats);
                    match r {
                        Ok(()) => stats.sent += 1,
                        Err(e) => assert!(same(&e.into_inner(), &v), "send_timeout lost the value"),
                    }
                }
            }
            op::RECV_TIMEOUT => {
                let arg = input.byte();
                let t = tiny_timeout(arg);
                if let Some(c) = rx.as_mut() {
                    if arg & 4 == 0 {
                        let r = c.recv_timeout(t);
                        let bad = matches!(r, Err(RecvTimeoutError::Corrupted));
                        rx_bad.saw(bad, "recv_timeout", stats);
                        stats.received += u64::from(r.is_ok());
                    } else {
                        let k = usize::from(arg >> 3) % 5;
                        let mut buf = vec![T::zeroed(); k];
                        let r = c.recv_into_timeout(&mut buf, t);
                        let bad = r == Err(RecvTimeoutError::Corrupted);
                        rx_bad.saw(bad, "recv_into_timeout", stats);
                        if let Ok(n) = r {
                            assert!(n <= k && (n > 0 || k == 0), "recv_into got {n} into {k}");
                            stats.received += n as u64;
                        }
                    }
                }
            }
            op::OBSERVE => {
                if let Some(p) = tx.as_mut() {
                    let _ = p.is_disconnected();
                    let _ = p.position();
                    assert_eq!(p.capacity(), cap);
                }
                if let Some(c) = rx.as_mut() {
                    let _ = c.is_disconnected();
                    let _ = c.position();
                    assert_eq!(c.capacity(), cap);
                }
                let _ = chan.is_empty();
            }
            op::FORGE => {
                let which = input.byte();
                let how = input.byte();
                let delta = i64::from(input.byte() as i8);
                let tail = tx.as_ref().map_or_else(|| obj.read_u64(TAIL), |p| p.position());
                let head = rx.as_ref().map_or_else(|| obj.read_u64(HEAD), |c| c.position());
                let (at, position) = match which % 8 {
                    0 => (HEAD, head),
                    1 => (TAIL, tail),
                    2 => (slots.stamp(head), head.wrapping_add(1)),
                    3 => (slots.stamp(tail), tail.wrapping_add(1)),
                    4 => (PRODUCER_WORD, 0),
                    5 => (CONSUMER_WORD, 0),
                    6 => (POISONED, 0),
                    _ if delta & 1 == 0 => (PRODUCER_WAIT, 0),
                    _ => (CONSUMER_WAIT, 0),
                };
                let current = obj.read_u64(at);
                let forged = match how % 5 {
                    0 => current.wrapping_add_signed(delta),
                    1 => position.wrapping_add_signed(delta),
                    2 => current.wrapping_add((cap as u64).wrapping_mul(delta as u64)),
                    3 => current ^ (1 << (delta & 63)),
                    _ => input.u64(),
                };
                obj.write(at, &forged.to_le_bytes());
                stats.pokes += 1;
            }
            op::ITER => {
                let n = usize::from(input.byte() % 8);
                if let Some(c) = rx.as_mut() {
                    let got = c.try_iter().take(n).count();
                    assert!(got <= n);
                    assert!(!rx_bad.0 || got == 0, "try_iter yielded on a corrupted handle");
                    stats.received += got as u64;
                }
            }
            _ => unreachable!("op codes are 1..=12"),
        }
        assert!(chan.len() <= cap, "len {} exceeds the capacity {cap}", chan.len());
    }
}

// ------------------------------------------------------------------------------------------
// ring_ops
// ------------------------------------------------------------------------------------------

/// Op codes of `ring_ops` (each byte maps to `b % 12`).
pub mod ring_op {
    /// `try_send` of the next value.
    pub const SEND: u8 = 0;
    /// `try_recv`.
    pub const RECV: u8 = 1;
    /// `try_send_slice`; arg: count (mod 80).
    pub const SEND_SLICE: u8 = 2;
    /// `try_recv_into`; arg: buffer length (mod 80).
    pub const RECV_INTO: u8 = 3;
    /// Drop the producer, or attach a new one.
    pub const TOGGLE_PRODUCER: u8 = 4;
    /// Drop the consumer, or attach a new one.
    pub const TOGGLE_CONSUMER: u8 = 5;
    /// Attach a second producer (bit 0 of the arg clear) or consumer while one is attached.
    pub const ATTACH_TWICE: u8 = 6;
    /// `send_timeout`; arg: timeout byte.
    pub const SEND_TIMEOUT: u8 = 7;
    /// `recv_timeout`; arg: timeout byte.
    pub const RECV_TIMEOUT: u8 = 8;
    /// `recv_into_timeout`; args: buffer length (mod 80), timeout byte.
    pub const RECV_INTO_TIMEOUT: u8 = 9;
    /// Compare `len`, `is_empty`, positions and `is_disconnected` with the model.
    pub const OBSERVE: u8 = 10;
    /// `try_iter().take(n)`; arg: n (mod 80).
    pub const ITER: u8 = 11;
}

/// Most operations one `ring_ops` input runs.
pub const MAX_RING_OPS: usize = 2048;

/// Counters of what `ring_ops` inputs reached.
#[derive(Debug, Default)]
pub struct RingStats {
    pub ops: u64,
    pub sent: u64,
    pub received: u64,
    /// Sends refused with `Full` (or timed out on a full ring).
    pub full: u64,
    /// Receives that found the ring empty (`Empty` or a timeout).
    pub empty: u64,
    /// `Disconnected` on the sending and receiving side.
    pub send_disconnected: u64,
    pub recv_disconnected: u64,
    /// Endpoints attached again after a drop.
    pub reattached: u64,
}

impl RingStats {
    pub fn absorb(&mut self, o: RingStats) {
        self.ops += o.ops;
        self.sent += o.sent;
        self.received += o.received;
        self.full += o.full;
        self.empty += o.empty;
        self.send_disconnected += o.send_disconnected;
        self.recv_disconnected += o.recv_disconnected;
        self.reattached += o.reattached;
    }
}

/// The state of an endpoint's owner word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Word {
    Vacant,
    Attached,
    Detached,
}

/// What a send or receive must return, in a form common to every call's result type.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sent(usize),
    Received(Vec<u64>),
    /// `Full`, or a send timeout on a full ring.
    Full,
    /// `Empty`, or a receive timeout on an empty ring.
    Empty,
    Disconnected,
    Corrupted,
}

/// The model: a queue of at most `capacity` values and the two owner words.
struct Model {
    queue: VecDeque<u64>,
    capacity: usize,
    producer: Word,
    consumer: Word,
    next: u64,
    start: u64,
    sent: u64,
    received: u64,
}

impl Model {
    /// What sending `k` values (as many as fit; 0 for an empty slice) must return, applied.
    fn send(&mut self, k: usize) -> Outcome {
        if self.consumer == Word::Detached {
            return Outcome::Disconnected;
        }
        let free = self.capacity - self.queue.len();
        let n = k.min(free);
        if n == 0 && k > 0 {
            return Outcome::Full;
        }
        for _ in 0..n {
            self.queue.push_back(self.next);
            self.next += 1;
        }
        self.sent += n as u64;
        Outcome::Sent(n)
    }

    /// What receiving up to `k` values (`k >= 1`) must return, applied.
    fn recv(&mut self, k: usize) -> Outcome {
        let n = k.min(self.queue.len());
        if n > 0 {
            self.received += n as u64;
            return Outcome::Received(self.queue.drain(..n).collect());
        }
        if self.producer == Word::Detached { Outcome::Disconnected } else { Outcome::Empty }
    }
}

fn sent<E>(r: Result<usize, E>, classify: impl Fn(E) -> Outcome) -> Outcome {
    r.map_or_else(classify, Outcome::Sent)
}

fn try_send_err(e: TrySendError<u64>) -> Outcome {
    match e {
        TrySendError::Full(_) => Outcome::Full,
        TrySendError::Disconnected(_) => Outcome::Disconnected,
        TrySendError::Corrupted(_) => Outcome::Corrupted,
    }
}

fn try_recv_err(e: TryRecvError) -> Outcome {
    match e {
        TryRecvError::Empty => Outcome::Empty,
        TryRecvError::Disconnected => Outcome::Disconnected,
        TryRecvError::Corrupted => Outcome::Corrupted,
    }
}

fn recv_timeout_err(e: RecvTimeoutError) -> Outcome {
    match e {
        RecvTimeoutError::Timeout => Outcome::Empty,
        RecvTimeoutError::Disconnected => Outcome::Disconnected,
        RecvTimeoutError::Corrupted => Outcome::Corrupted,
    }
}

/// Runs an operation sequence on a healthy anonymous channel of `u64` against a `VecDeque`
/// model.
///
/// Input: a config byte (capacity `1 << (b % 7)`), a flags byte (bits 0..2: start position,
/// bits 2..4: wait strategy, bit 4: start without a producer, bit 5: without a consumer), then
/// [`ring_op`] codes with their arguments.
///
/// Checks, for every call: the exact result the model gives (values in order, `Full` exactly
/// when the model holds `capacity` values, `Empty` when it holds none, `Disconnected` once the
/// other endpoint detached, on the receiving side only after the model is drained), the
/// batch counts, `AlreadyAttached` with our pid for a second endpoint, `len`, `is_empty`,
/// positions (counted from the start position, across wrap-around) and `is_disconnected`; and
/// at the end that draining yields exactly the model's remaining values.
pub fn ring_ops(data: &[u8]) -> RingStats {
    let mut stats = RingStats::default();
    let mut input = Input::new(data);
    let config = input.byte();
    let flags = input.byte();
    let capacity = 1usize << (config % 7);
    let start = START_POSITIONS[usize::from(flags & 3)];
    let wait = WAITS[usize::from(flags >> 2) & 3];
    let opts = Options::new().capacity(capacity).start_position(start).wait_strategy(wait);
    let chan = Channel::<u64>::create(Backing::Anonymous, &opts).expect("create a channel");
    let mut m = Model {
        queue: VecDeque::new(),
        capacity,
        producer: Word::Vacant,
        consumer: Word::Vacant,
        next: 0,
        start,
        sent: 0,
        received: 0,
    };
    let mut tx = None;
    let mut rx = None;
    if flags & 0x10 == 0 {
        tx = Some(chan.producer().expect("attach the producer"));
        m.producer = Word::Attached;
    }
    if flags & 0x20 == 0 {
        rx = Some(chan.consumer().expect("attach the consumer"));
        m.consumer = Word::Attached;
    }

    for _ in 0..MAX_RING_OPS {
        let Some(b) = input.u8() else { break };
        stats.ops += 1;
        let code = b % 12;
        let (got, want) = match code {
            ring_op::SEND => {
                let Some(p) = tx.as_mut() else { continue };
                let v = m.next;
                let got = match p.try_send(v) {
                    Ok(()) => Outcome::Sent(1),
                    Err(e) => {
                        assert_eq!(e.into_inner(), v, "try_send must hand the value back");
                        try_send_err(e)
                    }
                };
                (got, m.send(1))
            }
            ring_op::RECV => {
                let Some(c) = rx.as_mut() else { continue };
                let got = c.try_recv().map_or_else(try_recv_err, |v| Outcome::Received(vec![v]));
                (got, m.recv(1))
            }
            ring_op::SEND_SLICE => {
                let k = usize::from(input.byte() % 80);
                let Some(p) = tx.as_mut() else { continue };
                let values: Vec<u64> = (m.next..m.next + k as u64).collect();
                let got = sent(p.try_send_slice(&values), |e| match e {
                    TrySendError::Full(()) => Outcome::Full,
                    TrySendError::Disconnected(()) => Outcome::Disconnected,
                    TrySendError::Corrupted(()) => Outcome::Corrupted,
                });
                (got, m.send(k))
            }
            ring_op::RECV_INTO | ring_op::RECV_INTO_TIMEOUT => {
                let k = usize::from(input.byte() % 80);
                let t = if code == ring_op::RECV_INTO { None } else { Some(input.byte()) };
                let Some(c) = rx.as_mut() else { continue };
                let mut buf = vec![u64::MAX; k];
                let got = match t {
                    None => c.try_recv_into(&mut buf).map_err(try_recv_err),
                    Some(t) => {
                        c.recv_into_timeout(&mut buf, tiny_timeout(t)).map_err(recv_timeout_err)
                    }
                };
                let got = match got {
                    Ok(n) if n <= k => Outcome::Received(buf[..n].to_vec()),
                    Ok(n) => panic!("received {n} messages into a buffer of {k}"),
                    Err(e) => e,
                };
                let want = if k == 0 { Outcome::Received(Vec::new()) } else { m.recv(k) };
                (got, want)
            }
            ring_op::TOGGLE_PRODUCER => {
                if tx.take().is_some() {
                    m.producer = Word::Detached;
                } else {
                    stats.reattached += u64::from(m.producer == Word::Detached);
                    tx = Some(chan.producer().expect("a free producer endpoint attaches"));
                    m.producer = Word::Attached;
                }
                continue;
            }
            ring_op::TOGGLE_CONSUMER => {
                if rx.take().is_some() {
                    m.consumer = Word::Detached;
                } else {
                    stats.reattached += u64::from(m.consumer == Word::Detached);
                    rx = Some(chan.consumer().expect("a free consumer endpoint attaches"));
                    m.consumer = Word::Attached;
                }
                continue;
            }
            ring_op::ATTACH_TWICE => {
                let which = input.byte() & 1;
                let err = match which {
                    0 if tx.is_some() => chan.producer().err(),
                    1 if rx.is_some() => chan.consumer().err(),
                    _ => continue,
                };
                match err {
                    Some(OpenError::AlreadyAttached { pid }) => {
                        assert_eq!(pid, std::process::id(), "the holder is this process");
                    }
                    other => panic!("second attach: expected AlreadyAttached, got {other:?}"),
                }
                continue;
            }
            ring_op::SEND_TIMEOUT => {
                let t = tiny_timeout(input.byte());
                let Some(p) = tx.as_mut() else { continue };
                let v = m.next;
                let got = match p.send_timeout(v, t) {
                    Ok(()) => Outcome::Sent(1),
                    Err(e) => {
                        assert_eq!(e.into_inner(), v, "send_timeout must hand the value back");
                        match e {
                            SendTimeoutError::Timeout(_) => Outcome::Full,
                            SendTimeoutError::Disconnected(_) => Outcome::Disconnected,
                            SendTimeoutError::Corrupted(_) => Outcome::Corrupted,
                        }
                    }
                };
                (got, m.send(1))
            }
            ring_op::RECV_TIMEOUT => {
                let t = tiny_timeout(input.byte());
                let Some(c) = rx.as_mut() else { continue };
                let got =
                    c.recv_timeout(t).map_or_else(recv_timeout_err, |v| Outcome::Received(vec![v]));
                (got, m.recv(1))
            }
            ring_op::OBSERVE => {
                assert_eq!(chan.len(), m.queue.len(), "len");
                assert_eq!(chan.is_empty(), m.queue.is_empty(), "is_empty");
                assert_eq!(chan.capacity(), capacity);
                if let Some(p) = tx.as_mut() {
                    assert_eq!(p.position(), m.start.wrapping_add(m.sent), "producer position");
                    assert_eq!(p.is_disconnected(), m.consumer == Word::Detached);
                    assert_eq!(p.capacity(), capacity);
                }
                if let Some(c) = rx.as_mut() {
                    assert_eq!(c.position(), m.start.wrapping_add(m.received), "consumer position");
                    assert_eq!(c.is_disconnected(), m.producer == Word::Detached);
                    assert_eq!(c.capacity(), capacity);
                }
                continue;
            }
            ring_op::ITER => {
                let k = usize::from(input.byte() % 80);
                let Some(c) = rx.as_mut() else { continue };
                let got: Vec<u64> = c.try_iter().take(k).collect();
                let n = k.min(m.queue.len());
                let want: Vec<u64> = m.queue.drain(..n).collect();
                m.received += n as u64;
                (Outcome::Received(got), Outcome::Received(want))
            }
            _ => unreachable!("op codes are 0..12"),
        };
        match &want {
            Outcome::Sent(n) => stats.sent += *n as u64,
            Outcome::Received(v) => stats.received += v.len() as u64,
            Outcome::Full => stats.full += 1,
            Outcome::Empty => stats.empty += 1,
            Outcome::Disconnected if matches!(code, ring_op::SEND | ring_op::SEND_SLICE) => {
                stats.send_disconnected += 1
            }
            Outcome::Disconnected if code == ring_op::SEND_TIMEOUT => stats.send_disconnected += 1,
            Outcome::Disconnected => stats.recv_disconnected += 1,
            Outcome::Corrupted => {}
        }
        assert_eq!(got, want, "op {code} (capacity {capacity}, start {start:#x})");
    }

    // Whatever the model still holds comes out, in order, then the ring is empty.
    if let Some(c) = rx.as_mut() {
        let rest: Vec<u64> = c.try_iter().collect();
        assert_eq!(rest, Vec::from(std::mem::take(&mut m.queue)), "final drain");
        let end = c.try_recv().map_or_else(try_recv_err, |v| Outcome::Received(vec![v]));
        assert_eq!(end, m.recv(1), "after the final drain");
    }
    stats
}
