//! One module per subcommand.

pub mod bench;
pub mod create;
pub mod list;
pub mod stat;
pub mod transfer;
