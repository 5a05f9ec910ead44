//! What a NAME argument designates: a POSIX shm object or a file-backed segment.

use std::fmt;
use std::path::PathBuf;

use shmchan::Backing;
use shmchan::inspect::Target;

/// A segment named on the command line.
///
/// A POSIX shm name has at most one `/`, at its start (`jobs` and `/jobs` are the same
/// object); anything else with a `/` in it (`./ring`, `/var/tmp/ring`) is a file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentName {
    Posix(String),
    File(PathBuf),
}

impl SegmentName {
    pub fn parse(arg: &str) -> Self {
        let body = arg.strip_prefix('/').unwrap_or(arg);
        if body.contains('/') {
            SegmentName::File(PathBuf::from(arg))
        } else {
            SegmentName::Posix(format!("/{body}"))
        }
    }

    pub fn target(&self) -> Target {
        match self {
            SegmentName::Posix(n) => Target::Posix(n.clone()),
            SegmentName::File(p) => Target::File(p.clone()),
        }
    }

    pub fn backing(&self) -> Backing {
        match self {
            SegmentName::Posix(n) => Backing::posix(n.clone()),
            SegmentName::File(p) => Backing::file(p.clone()),
        }
    }

    /// Removes the name (the object lives on while mapped).
    pub fn remove(&self) -> Result<(), String> {
        match self {
            SegmentName::Posix(n) => shmchan::remove_posix(n).map_err(|e| e.to_string()),
            SegmentName::File(p) => std::fs::remove_file(p).map_err(|e| e.to_string()),
        }
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentName::Posix(n) => f.write_str(n),
            SegmentName::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An open or inspect error in words for a command line: what is wrong with the segment.
pub fn describe(e: &shmchan::OpenError) -> String {
    use shmchan::OpenError as E;
    match e {
        E::BadMagic { .. } => format!("not a shmchan segment ({e})"),
        E::FlavorMismatch { found, .. } => format!("unknown channel flavor {found}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(SegmentName::parse("jobs"), SegmentName::Posix("/jobs".into()));
        assert_eq!(SegmentName::parse("/jobs"), SegmentName::Posix("/jobs".into()));
        assert_eq!(SegmentName::parse("./ring"), SegmentName::File("./ring".into()));
        assert_eq!(SegmentName::parse("/var/tmp/ring"), SegmentName::File("/var/tmp/ring".into()));
    }
}
