//! What an interrupted bench or soak leaves behind, cleared before the next run starts:
//! its loop device and the /dev/shm file behind it, its cgroups (with any process still in
//! them), and orphaned load generators. Every such object carries the pid of the run that
//! made it (`nodelens-bench-<pid>`, `nodelens-soak-<pid>`), so only those of runs that are
//! no longer alive are touched.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::step;

/// The pid in `<prefix><pid>[suffix]`, if that process is gone.
fn dead_run(name: &str, prefix: &str, suffix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Clears what dead runs left, and says what it cleared.
pub fn clear() {
    let mut cleared = Vec::new();
    // Orphaned load generators first: they hold the loop devices and the cgroups. Then
    // agents a killed run started from this workspace's builds (their probes would load
    // every later measurement).
    for (name, marker) in [
        ("fio", "--name=soak"),
        ("fio", "--name=nodelens-bench"),
        ("stress-ng", "--switch"),
        ("nodelens", "/target/"),
    ] {
        for pid in orphans(name, marker) {
            if Command::new("kill")
                .arg(pid.to_string())
                .status()
                .is_ok_and(|s| s.success())
            {
                cleared.push(format!("{name} {pid}"));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !dead_run(&name, "nodelens-bench-", ".img") {
                continue;
            }
            let file = entry.path();
            if let Ok(out) = Command::new("losetup").arg("-j").arg(&file).output() {
                for device in String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.split_once(':').map(|(d, _)| d.to_owned()))
                {
                    if Command::new("losetup")
                        .args(["-d", &device])
                        .status()
                        .is_ok_and(|s| s.success())
                    {
                        cleared.push(device);
                    }
                }
            }
            if std::fs::remove_file(&file).is_ok() {
                cleared.push(file.display().to_string());
            }
        }
    }
    let mut roots: Vec<(PathBuf, &str)> =
        vec![(PathBuf::from("/sys/fs/cgroup/memory"), "nodelens-bench-")];
    if let Ok(v2) = super::cgroup2_root() {
        roots.push((v2.clone(), "nodelens-soak-reclaim-"));
        roots.push((v2, "nodelens-soak-"));
    }
    for (root, prefix) in roots {
        let Ok(dir) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead_run(&name, prefix, "") && remove_cgroup(&entry.path()) {
                cleared.push(entry.path().display().to_string());
            }
        }
    }
    if !cleared.is_empty() {
        step(&format!(
            "cleared what an interrupted run left: {}",
            cleared.join(", ")
        ));
    }
}

/// Processes called `name` whose parent is init (their run was killed) and whose command
/// line has `marker`.
fn orphans(name: &str, marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.to_owned()))
                .and_then(|rest| rest.split(' ').nth(1).map(str::to_owned));
            comm.trim() == name && cmdline.contains(marker) && parent.as_deref() == Some("1")
        })
        .collect()
}

/// Kills what is left in a cgroup tree and removes it, deepest first.
fn remove_cgroup(dir: &Path) -> bool {
    if let Ok(children) = std::fs::read_dir(dir) {
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            remove_cgroup(&child.path());
        }
    }
    for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
    {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    // A killed process leaves its cgroup a moment later.
    (0..50).any(|_| {
        std::fs::remove_dir(dir).is_ok() || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runs_that_are_gone_are_cleared() {
        let me = std::process::id();
        assert!(!dead_run(
            &format!("nodelens-bench-{me}.img"),
            "nodelens-bench-",
            ".img"
        ));
        assert!(dead_run(
            "nodelens-bench-4000000000.img",
            "nodelens-bench-",
            ".img"
        ));
        assert!(!dead_run("nodelens-bench-x.img", "nodelens-bench-", ".img"));
        assert!(!dead_run("other-4000000000", "nodelens-soak-", ""));
    }

    /// A killed soak's cgroup with a process still in it, and a killed bench's loop device,
    /// are cleared (needs root, cgroup2 and loop devices, like the bench itself).
    #[test]
    #[ignore = "needs root; run by cargo xtask test (unit tests stage)"]
    fn a_killed_runs_cgroup_and_loop_device_are_cleared() {
        let dead = 4_000_000_000u32;
        let cgroup = super::super::cgroup2_root()
            .unwrap()
            .join(format!("nodelens-soak-{dead}"));
        std::fs::create_dir_all(cgroup.join("c1")).unwrap();
        let mut sleeper = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "echo $$ > {}/c1/cgroup.procs && exec sleep 600",
                    cgroup.display()
                ),
            ])
            .spawn()
            .unwrap();
        // The process is in the cgroup once the shell has moved itself.
        let procs = cgroup.join("c1/cgroup.procs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&procs)
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the sleeper never entered its cgroup"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let image = PathBuf::from(format!("/dev/shm/nodelens-bench-{dead}.img"));
        std::fs::File::create(&image)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .unwrap();
        let device = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert!(device.starts_with("/dev/loop"), "losetup gave {device:?}");

        clear();

        assert!(!cgroup.exists(), "the cgroup is removed");
        use std::os::unix::process::ExitStatusExt as _;
        let status = sleeper.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "its process was killed: {status:?}"
        );
        assert!(!image.exists(), "the image is removed");
        let left = Command::new("losetup")
            .arg("-j")
            .arg(&image)
            .output()
            .unwrap();
        assert!(left.stdout.is_empty(), "the loop device is detached");
    }
}
