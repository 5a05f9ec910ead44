//! The options every kind of channel shares, and the builder methods that set them.

use std::time::Duration;

use crate::layout::ElementType;
use crate::segment::SegmentParams;
use crate::sync::wait::WaitStrategy;

/// The part of `spsc::Options`, `mpmc::Options` and `bytes::Options` that is the same for
/// every kind of channel.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub mode: u32,
    pub wait: WaitStrategy,
    pub remove_on_drop: bool,
    pub allow_foreign_owner: bool,
    pub open_timeout: Duration,
    pub start_position: u64,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            mode: 0o600,
            wait: WaitStrategy::default(),
            remove_on_drop: true,
            allow_foreign_owner: false,
            open_timeout: Duration::from_secs(1),
            start_position: 0,
        }
    }
}

impl Common {
    /// The segment parameters of a channel of `element`s, `capacity` and the flavor's extra
    /// dimension, with these options.
    pub fn segment_params(&self, element: ElementType, capacity: u64, extra: u64) -> SegmentParams {
        SegmentParams {
            element,
            capacity,
            extra,
            mode: self.mode,
            remove_on_drop: self.remove_on_drop,
            allow_foreign_owner: self.allow_foreign_owner,
            open_timeout: self.open_timeout,
            start_position: self.start_position,
        }
    }
}

/// The builder methods of the common options, for an `Options` struct with a
/// `common: Common` field.
macro_rules! common_option_setters {
    () => {
        /// Permission bits of a created object (default `0o600`), applied exactly, whatever
        /// the umask.
        pub fn mode(mut self, mode: u32) -> Self {
            self.common.mode = mode;
            self
        }

        /// How blocking calls wait. Default: [`WaitStrategy::Adaptive`](crate::WaitStrategy),
        /// spin 50 µs, then sleep on the futex; sleep at once when the endpoints outnumber
        /// the CPUs.
        pub fn wait_strategy(mut self, wait: $crate::WaitStrategy) -> Self {
            self.common.wait = wait;
            self
        }

        /// Whether the creating process removes the name (POSIX, file, SysV) when its last
        /// handle to the channel is dropped. Default `true`.
        pub fn remove_on_drop(mut self, remove: bool) -> Self {
            self.common.remove_on_drop = remove;
            self
        }

        /// Accept opening a segment owned by another user (default: refuse).
        pub fn allow_foreign_owner(mut self, allow: bool) -> Self {
            self.common.allow_foreign_owner = allow;
            self
        }

        /// How long `open` waits for a creator that has not finished initialising (default
        /// 1 s).
        pub fn open_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.common.open_timeout = timeout;
            self
        }

        /// The first position of a created ring. Only useful to test position wrap-around.
        #[doc(hidden)]
        pub fn start_position(mut self, position: u64) -> Self {
            self.common.start_position = position;
            self
        }
    };
}
pub(crate) use common_option_setters;
