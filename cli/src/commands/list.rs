//! `shmchan ls`, `rm` and `gc`: the segments in /dev/shm.

use serde_json::Value;
use shmchan::OpenError;
use shmchan::inspect::{Snapshot, inspect};

use super::stat::{element_text, endpoints_text, snapshot_json, unit};
use crate::target::{SegmentName, describe};

const SHM_DIR: &str = "/dev/shm";

/// A shmchan segment found in /dev/shm: its snapshot, or why its header cannot be read.
pub struct Found {
    pub name: SegmentName,
    pub snapshot: Result<Snapshot, OpenError>,
}

/// Every object in /dev/shm that starts with the shmchan magic, sorted by name. Objects with
/// another magic, too short for a header, or unreadable to us are not ours to list.
pub fn scan() -> Result<Vec<Found>, String> {
    let dir = std::fs::read_dir(SHM_DIR).map_err(|e| format!("{SHM_DIR}: {e}"))?;
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Ok(file_name) = entry.file_name().into_string() else { continue };
        let name = SegmentName::Posix(format!("/{file_name}"));
        let snapshot = inspect(&name.target());
        let ours = !matches!(
            snapshot,
            Err(OpenError::BadMagic { .. }
                | OpenError::TooSmall { .. }
                | OpenError::PermissionDenied
                | OpenError::NotFound
                | OpenError::NotASegment { .. }
                | OpenError::Io { .. })
        );
        if ours {
            found.push(Found { name, snapshot });
        }
    }
    found.sort_by_key(|f| f.name.to_string());
    Ok(found)
}

pub fn ls(json: bool) -> Result<String, String> {
    let found = scan()?;
    if json {
        let rows: Vec<Value> = found
            .iter()
            .map(|f| match &f.snapshot {
                Ok(s) => snapshot_json(&f.name, s),
                Err(e) => serde_json::json!({"name": f.name.to_string(), "error": describe(e)}),
            })
            .collect();
        return Ok(Value::Array(rows).to_string());
    }
    let mut out = format!(
        "{:<28} {:<6} {:>10} {:<18} {:>12}  {}\n",
        "NAME", "FLAVOR", "CAPACITY", "ELEMENT", "FILL", "ENDPOINTS"
    );
    for f in &found {
        let line = match &f.snapshot {
            Ok(s) => format!(
                "{:<28} {:<6} {:>10} {:<18} {:>12}  {}",
                f.name.to_string(),
                s.kind.name(),
                s.capacity,
                element_text(s),
                format!("{} {}", s.fill(), if unit(s.kind) == "bytes" { "B" } else { "msg" }),
                endpoints_text(s)
            ),
            Err(e) => format!("{:<28} unreadable: {}", f.name.to_string(), describe(e)),
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out.trim_end().to_owned())
}

/// Removes one segment; refuses an object that is not a shmchan segment.
pub fn rm(name: &SegmentName) -> Result<String, String> {
    match inspect(&name.target()) {
        // Ours, readable or with a damaged or half-initialised header behind our magic: exactly
        // what rm is for.
        Ok(_)
        | Err(
            OpenError::Corrupted { .. }
            | OpenError::VersionMismatch { .. }
            | OpenError::NotInitialized
            | OpenError::FlavorMismatch { .. },
        ) => {}
        Err(e @ (OpenError::NotFound | OpenError::PermissionDenied)) => return Err(describe(&e)),
        // Anything else (another magic, too short for a header, a symlink, a directory) is not
        // shown to be ours.
        Err(e) => return Err(format!("{}; not removed", describe(&e))),
    }
    name.remove()?;
    Ok(format!("removed {name}"))
}

/// Removes every segment (whose name starts with `prefix`, if given) nobody uses: its creator
/// is gone and no endpoint is attached by a running process. A segment still holding unread
/// messages is kept unless `discard_unread`: a consumer may yet come for them. Segments being
/// initialised or with a damaged header are left alone (their users cannot be told from the
/// header) and reported.
pub fn gc(dry_run: bool, discard_unread: bool, prefix: Option<&str>) -> Result<String, String> {
    let mut out = Vec::new();
    let wanted = |name: &SegmentName| {
        prefix.is_none_or(|p| {
            name.to_string().trim_start_matches('/').starts_with(p.trim_start_matches('/'))
        })
    };
    for f in scan()?.into_iter().filter(|f| wanted(&f.name)) {
        match &f.snapshot {
            Ok(s) if s.in_use() => {}
            Ok(s) if s.fill() > 0 && !discard_unread => out.push(format!(
                "kept {}: abandoned but holds {} unread {} (--discard-unread removes it)",
                f.name,
                s.fill(),
                unit(s.kind)
            )),
            Ok(_) if dry_run => out.push(format!("would remove {}", f.name)),
            Ok(_) => match f.name.remove() {
                Ok(()) => out.push(format!("removed {}", f.name)),
                Err(e) => out.push(format!("could not remove {}: {e}", f.name)),
            },
            Err(e) => out.push(format!("left {} alone: {}", f.name, describe(e))),
        }
    }
    if out.is_empty() {
        out.push("nothing to collect".into());
    }
    Ok(out.join("\n"))
}
