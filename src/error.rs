//! Error types. Send-side errors hand the message back; open errors say what was expected and
//! what was found.

use std::fmt;
use std::io;

/// Why a segment could not be created, opened or attached.
#[derive(Debug)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named for what they hold; the variants carry the docs
pub enum OpenError {
    /// No object with that name, path, key or id exists.
    NotFound,
    /// Exclusive creation found the name already taken.
    AlreadyExists,
    /// The OS refused access (mode, ownership, or an `EACCES`/`EPERM` from a system call).
    PermissionDenied,
    /// The object belongs to another user; pass `allow_foreign_owner` to accept that.
    ForeignOwner { uid: u32, expected: u32 },
    /// The name is not a valid POSIX shm name (one leading `/`, no other `/`, at most 255 bytes).
    InvalidName { name: String },
    /// An option is out of range (capacity, element size or alignment, mode).
    InvalidOption { reason: String },
    /// The filesystem or memory has no room for the segment.
    NoSpace { requested: u64 },
    /// The fd or path is not something a segment can live in (a directory, socket, pipe...).
    NotASegment { reason: String },
    /// A memfd lacks the seals that keep its size fixed (`F_SEAL_SHRINK | F_SEAL_GROW`).
    MissingSeals { found: u32 },
    /// The first 8 bytes are not the shmchan magic.
    BadMagic { found: u64 },
    /// The segment's layout version is not one this build reads.
    VersionMismatch { expected: (u16, u16), found: (u16, u16) },
    /// The segment holds another kind of channel.
    FlavorMismatch { expected: u32, found: u32 },
    /// The segment's element type differs from `T`.
    TypeMismatch { field: TypeField, expected: u64, found: u64 },
    /// The object is shorter than its header says, or than any segment can be.
    TooSmall { expected: u64, found: u64 },
    /// The creator did not finish initialising the segment within the open timeout.
    NotInitialized,
    /// A header or control value is inconsistent with the validated geometry.
    Corrupted { reason: String },
    /// The endpoint (producer or consumer) is held by another live process.
    AlreadyAttached { pid: u32 },
    /// Every endpoint slot of that role is held by a live process (MPMC: `max_endpoints`).
    TooManyEndpoints { max: u64 },
    /// Another system call failed.
    Io { op: &'static str, source: io::Error },
}

/// Which part of the element type description did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeField {
    /// `size_of::<T>()`.
    Size,
    /// `align_of::<T>()`.
    Align,
    /// The type fingerprint.
    Fingerprint,
}

impl OpenError {
    pub(crate) fn from_errno(errno: nix::errno::Errno, op: &'static str) -> Self {
        Self::from_io(io::Error::from(errno), op)
    }

    pub(crate) fn from_io(err: io::Error, op: &'static str) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOENT) => OpenError::NotFound,
            Some(libc::EEXIST) => OpenError::AlreadyExists,
            Some(libc::EACCES) | Some(libc::EPERM) => OpenError::PermissionDenied,
            Some(libc::ENOSPC) => OpenError::NoSpace { requested: 0 },
            Some(libc::ELOOP) => OpenError::NotASegment { reason: "a symbolic link".into() },
            _ => OpenError::Io { op, source: err },
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotFound => f.write_str("segment not found"),
            OpenError::AlreadyExists => f.write_str("segment already exists"),
            OpenError::PermissionDenied => f.write_str("permission denied"),
            OpenError::ForeignOwner { uid, expected } => {
                write!(f, "segment is owned by uid {uid}, expected {expected}")
            }
            OpenError::InvalidName { name } => write!(f, "invalid segment name {name:?}"),
            OpenError::InvalidOption { reason } => write!(f, "invalid option: {reason}"),
            OpenError::NoSpace { requested } => {
                write!(f, "no space for a segment of {requested} bytes")
            }
            OpenError::NotASegment { reason } => write!(f, "not a segment: {reason}"),
            OpenError::MissingSeals { found } => {
                write!(f, "memfd lacks the shrink/grow seals (seals found: {found:#x})")
            }
            OpenError::BadMagic { found } => write!(f, "bad magic {found:#018x}"),
            OpenError::VersionMismatch { expected, found } => write!(
                f,
                "layout version {}.{} found, this build reads {}.x",
                found.0, found.1, expected.0
            ),
            OpenError::FlavorMismatch { expected, found } => {
                write!(f, "channel flavor {found} found, expected {expected}")
            }
            OpenError::TypeMismatch { field, expected, found } => {
                write!(f, "element {field:?} mismatch: expected {expected:#x}, found {found:#x}")
            }
            OpenError::TooSmall { expected, found } => {
                write!(f, "segment too small: needs {expected} bytes, has {found}")
            }
            OpenError::NotInitialized => f.write_str("segment was never fully initialised"),
            OpenError::Corrupted { reason } => write!(f, "segment corrupted: {reason}"),
            OpenError::AlreadyAttached { pid } => {
                write!(f, "endpoint already attached by live process {pid}")
            }
            OpenError::TooManyEndpoints { max } => {
                write!(f, "all {max} endpoint slots of that role are held by live processes")
            }
            OpenError::Io { op, source } => write!(f, "{op}: {source}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

macro_rules! value_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(PartialEq, Eq, Clone, Copy)]
        pub enum $name<T> {
            $($(#[$vdoc])* $variant(T),)*
        }

        impl<T> $name<T> {
            /// The message that could not be sent.
            pub fn into_inner(self) -> T {
                match self { $($name::$variant(v) => v,)* }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($name::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")),)* }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($name::$variant(_) => f.write_str($text),)* }
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
}

value_error! {
    /// Error of `try_send`; the message comes back.
    TrySendError {
        /// The ring is full.
        Full => "sending on a full channel",
        /// The consumer is gone (dropped, or its process died).
        Disconnected => "sending on a disconnected channel",
        /// The ring failed a consistency check and is closed for good.
        Corrupted => "sending on a corrupted channel",
    }
}

value_error! {
    /// Error of `send_timeout`; the message comes back.
    SendTimeoutError {
        /// The deadline passed while the ring stayed full.
        Timeout => "timed out sending on a full channel",
        /// The consumer is gone (dropped, or its process died).
        Disconnected => "sending on a disconnected channel",
        /// The ring failed a consistency check and is closed for good.
        Corrupted => "sending on a corrupted channel",
    }
}

value_error! {
    /// Error of `send`; the message comes back.
    SendError {
        /// The consumer is gone (dropped, or its process died).
        Disconnected => "sending on a disconnected channel",
        /// The ring failed a consistency check and is closed for good.
        Corrupted => "sending on a corrupted channel",
    }
}

/// Error of `try_recv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing to receive now.
    Empty,
    /// The producer is gone and everything it sent was received.
    Disconnected,
    /// The ring failed a consistency check and is closed for good.
    Corrupted,
}

/// Error of `recv_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// The deadline passed with nothing to receive.
    Timeout,
    /// The producer is gone and everything it sent was received.
    Disconnected,
    /// The ring failed a consistency check and is closed for good.
    Corrupted,
}

/// Error of `recv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The producer is gone and everything it sent was received.
    Disconnected,
    /// The ring failed a consistency check and is closed for good.
    Corrupted,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "receiving on an empty channel",
            TryRecvError::Disconnected => "receiving on an empty and disconnected channel",
            TryRecvError::Corrupted => "receiving on a corrupted channel",
        })
    }
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvTimeoutError::Timeout => "timed out receiving on an empty channel",
            RecvTimeoutError::Disconnected => "receiving on an empty and disconnected channel",
            RecvTimeoutError::Corrupted => "receiving on a corrupted channel",
        })
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvError::Disconnected => "receiving on an empty and disconnected channel",
            RecvError::Corrupted => "receiving on a corrupted channel",
        })
    }
}

impl std::error::Error for TryRecvError {}
impl std::error::Error for RecvTimeoutError {}
impl std::error::Error for RecvError {}

// What the blocking calls of every kind of channel make of the non-blocking ones.

/// The first try of a blocking send: sent (`None`), full (`Some`: wait, with the value back),
/// or a final error.
pub(crate) fn first_try_send<T>(
    tried: Result<(), TrySendError<T>>,
) -> Result<Option<T>, SendError<T>> {
    match tried {
        Ok(()) => Ok(None),
        Err(TrySendError::Full(v)) => Ok(Some(v)),
        Err(TrySendError::Disconnected(v)) => Err(SendError::Disconnected(v)),
        Err(TrySendError::Corrupted(v)) => Err(SendError::Corrupted(v)),
    }
}

/// The error of a send that waited with no deadline (which cannot time out).
pub(crate) fn untimed_send<T>(e: SendTimeoutError<T>) -> SendError<T> {
    match e {
        SendTimeoutError::Corrupted(v) => SendError::Corrupted(v),
        SendTimeoutError::Timeout(v) | SendTimeoutError::Disconnected(v) => {
            SendError::Disconnected(v)
        }
    }
}

/// The first try of a blocking receive: a message, empty (`None`: wait), or a final error.
pub(crate) fn first_try_recv<T>(tried: Result<T, TryRecvError>) -> Result<Option<T>, RecvError> {
    match tried {
        Ok(value) => Ok(Some(value)),
        Err(TryRecvError::Empty) => Ok(None),
        Err(TryRecvError::Disconnected) => Err(RecvError::Disconnected),
        Err(TryRecvError::Corrupted) => Err(RecvError::Corrupted),
    }
}

/// The error of a receive that waited with no deadline (which cannot time out).
pub(crate) fn untimed_recv(e: RecvTimeoutError) -> RecvError {
    match e {
        RecvTimeoutError::Corrupted => RecvError::Corrupted,
        RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected => RecvError::Disconnected,
    }
}
