//! What the bench and the soak load the node with: a loop device over memory, the cgroup2
//! root, a cgroup v1 memory limit; each removed on drop.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

/// A loop device over a file in /dev/shm (memory, so the device is not the bottleneck),
/// detached on drop.
pub struct LoopDevice {
    pub path: String,
    file: PathBuf,
}

impl LoopDevice {
    pub(crate) fn new(size_mb: u64) -> Result<LoopDevice> {
        let file = PathBuf::from(format!(
            "/dev/shm/nodelens-bench-{}.img",
            std::process::id()
        ));
        std::fs::File::create(&file)?.set_len(size_mb << 20)?;
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(&file)
            .output()?;
        if !out.status.success() {
            bail!("losetup: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(LoopDevice {
            path: String::from_utf8(out.stdout)?.trim().to_owned(),
            file,
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Finds the cgroup2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_root() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            (post.split(' ').next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .context("no cgroup2 mount in /proc/self/mountinfo")
}

/// A cgroup v1 memory controller with a limit, removed on drop.
pub struct MemoryCgroup(pub PathBuf);

impl MemoryCgroup {
    pub(crate) fn new(limit: u64) -> Result<MemoryCgroup> {
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/memory/nodelens-bench-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .context("cgroup v1 memory controller at /sys/fs/cgroup/memory")?;
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
        Ok(MemoryCgroup(dir))
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
