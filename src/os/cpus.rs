//! How many CPUs the processes of a channel can share: the CPUs online, bounded by the CPU
//! quota of our cgroup (cgroup v2 `cpu.max`, at every level up to the root).
//!
//! Not this process's affinity: endpoints are often pinned one per CPU, and a process pinned to
//! one CPU still shares the machine with peers pinned to others. A quota, in contrast, bounds
//! what a container's processes get together, however many CPUs the host has: four endpoints
//! under a two-CPU quota on a 64-CPU host take turns on two CPUs' worth of time.
//!
//! cgroup v1 quotas (`cpu.cfs_quota_us`) and cpusets are not read.

use std::path::{Path, PathBuf};

/// CPUs online, bounded by the cgroup v2 CPU quota; at least 1.
pub(crate) fn usable() -> u64 {
    let online = online();
    match cgroup_v2_dir().and_then(|dir| quota_cpus(&dir)) {
        Some(quota) => online.min(quota),
        None => online,
    }
}

/// CPUs online on this host (at least 1; 1 when the kernel will not say).
fn online() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 1,
    }
}

/// Our cgroup's directory in the cgroup v2 hierarchy, if one is mounted and names us.
fn cgroup_v2_dir() -> Option<PathBuf> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (mount_root, mount_point) = cgroup2_mount(&mountinfo)?;
    Some(cgroup_dir(unified_path(&membership)?, mount_root, mount_point))
}

/// Where the cgroup at `path` (as `/proc/self/cgroup` names it) lies under a cgroup2 mount of
/// the hierarchy's `mount_root` at `mount_point`. Inside a cgroup namespace the path is
/// relative to the mount's root already; outside, a mount may show only a subtree, whose root
/// the path then starts with.
fn cgroup_dir(path: &str, mount_root: &str, mount_point: &str) -> PathBuf {
    let path = Path::new(path);
    // Whole components only: /kubepods/pod1 is no prefix of /kubepods/pod10.
    let relative = match path.strip_prefix(mount_root) {
        Ok(rest) if mount_root != "/" => rest,
        _ => path.strip_prefix("/").unwrap_or(path),
    };
    Path::new(mount_point).join(relative)
}

/// The path of the `0::<path>` line of `/proc/self/cgroup` (the unified hierarchy).
fn unified_path(membership: &str) -> Option<&str> {
    membership.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The root and mount point of the first cgroup2 mount in `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<(&str, &str)> {
    mountinfo.lines().find_map(|line| {
        // Fields: id, parent, dev, root, mount point, options, optional fields..., "-",
        // filesystem type, source, super options.
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = mount.split(' ').skip(3);
        Some((fields.next()?, fields.next()?))
    })
}

/// The smallest quota in `cpu.max` from `dir` up to the hierarchy's root, in whole CPUs
/// (rounded up); `None` when no level sets one.
fn quota_cpus(dir: &Path) -> Option<u64> {
    let mut smallest: Option<u64> = None;
    for level in dir.ancestors() {
        let Ok(text) = std::fs::read_to_string(level.join("cpu.max")) else {
            // The root has no cpu.max; above it nothing belongs to the hierarchy.
            if level.join("cgroup.controllers").exists() {
                continue;
            }
            break;
        };
        if let Some(cpus) = parse_cpu_max(&text) {
            smallest = Some(smallest.map_or(cpus, |s| s.min(cpus)));
        }
    }
    smallest
}

/// `cpu.max` as whole CPUs: `"<quota> <period>"` → ⌈quota / period⌉ (at least 1); `"max ..."`
/// (no quota) or anything unreadable → `None`.
fn parse_cpu_max(text: &str) -> Option<u64> {
    let mut fields = text.split_whitespace();
    let quota: u64 = fields.next()?.parse().ok()?;
    let period: u64 = fields.next().map_or(Some(100_000), |p| p.parse().ok())?;
    if period == 0 {
        return None;
    }
    Some(quota.div_ceil(period).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_in_whole_cpus() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("1000 100000"), Some(1));
        assert_eq!(parse_cpu_max("400000"), Some(4));
        assert_eq!(parse_cpu_max("100 0"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("junk 100000"), None);
    }

    #[test]
    fn the_unified_line_and_the_cgroup2_mount_are_found() {
        let membership = "12:cpu,cpuacct:/x\n0::/user.slice/session-1.scope\n";
        assert_eq!(unified_path(membership), Some("/user.slice/session-1.scope"));
        assert_eq!(unified_path("4:memory:/a\n"), None);

        let mountinfo = "\
24 29 0:22 / /sys rw,nosuid - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
37 35 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
";
        assert_eq!(cgroup2_mount(mountinfo), Some(("/", "/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount("24 29 0:22 / /sys rw - sysfs sysfs rw\n"), None);
    }

    #[test]
    fn the_cgroup_directory_lies_under_the_mount() {
        let dir = |path, root, point| cgroup_dir(path, root, point);
        assert_eq!(dir("/", "/", "/sys/fs/cgroup"), Path::new("/sys/fs/cgroup"));
        assert_eq!(dir("/a/b", "/", "/sys/fs/cgroup"), Path::new("/sys/fs/cgroup/a/b"));
        // A mount of the subtree /kubepods/pod1, seen from outside a cgroup namespace.
        assert_eq!(
            dir("/kubepods/pod1/c1", "/kubepods/pod1", "/sys/fs/cgroup"),
            Path::new("/sys/fs/cgroup/c1")
        );
        assert_eq!(
            dir("/kubepods/pod10/c1", "/kubepods/pod1", "/sys/fs/cgroup"),
            Path::new("/sys/fs/cgroup/kubepods/pod10/c1")
        );
        // Inside a namespace, the path is already relative to the mount.
        assert_eq!(dir("/c1", "/kubepods/pod1", "/sys/fs/cgroup"), Path::new("/sys/fs/cgroup/c1"));
    }

    #[test]
    fn quotas_are_read_at_every_level_and_the_smallest_wins() {
        let root = std::env::temp_dir().join(format!("shmchan-cpus-{}", std::process::id()));
        let leaf = root.join("pod/container");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpu\n").unwrap();
        std::fs::write(root.join("pod/cgroup.controllers"), "cpu\n").unwrap();
        std::fs::write(leaf.join("cgroup.controllers"), "cpu\n").unwrap();
        std::fs::write(root.join("pod/cpu.max"), "300000 100000\n").unwrap();
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(quota_cpus(&leaf), Some(3));
        std::fs::write(leaf.join("cpu.max"), "150000 100000\n").unwrap();
        assert_eq!(quota_cpus(&leaf), Some(2));
        std::fs::write(root.join("pod/cpu.max"), "max 100000\n").unwrap();
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(quota_cpus(&leaf), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_host_has_a_usable_cpu() {
        assert!(usable() >= 1);
        assert!(usable() <= online());
    }
}
