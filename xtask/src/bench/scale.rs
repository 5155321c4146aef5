//! The scale row: 4,096 pods, one container each, as the kubelet lays them out with the
//! systemd driver and containerd
//! (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<64 hex>.scope`),
//! with the kubelet's log files so that nodelens resolves namespace, pod and container.
//! Each container cgroup runs one short process, so each has a kernel entry.
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::cgroup2_root;

/// The kubelet's log directories, which give nodelens the pod and container names.
pub struct KubeletLogs(PathBuf);

impl KubeletLogs {
    pub fn new(workspace: &Path) -> Result<Self> {
        let logs = workspace.join("target/bench/kubelet-logs");
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(logs.join("pods"))?;
        std::fs::create_dir_all(logs.join("containers"))?;
        Ok(Self(logs))
    }

    pub fn pods(&self) -> String {
        self.0.join("pods").display().to_string()
    }

    pub fn containers(&self) -> String {
        self.0.join("containers").display().to_string()
    }
}

impl Drop for KubeletLogs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct KubeletTree {
    /// Every directory created, children after parents.
    created: Vec<PathBuf>,
}

/// A deterministic pod uid and container id for pod `i`.
fn ids(i: usize) -> (String, String) {
    let uid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        0x5ca1_e000 + i,
        i % 0xffff,
        i % 0xfff,
        i % 0xfff,
        i
    );
    let container = format!("{:064x}", 0xc0ffee_u128 * (i as u128 + 1));
    (uid, container)
}

impl KubeletTree {
    pub fn new(pods: usize, logs: &KubeletLogs) -> Result<Self> {
        let root = cgroup2_root()?;
        let mut tree = KubeletTree {
            created: Vec::new(),
        };
        let qos = root.join("kubepods.slice/kubepods-burstable.slice");
        for dir in [root.join("kubepods.slice"), qos.clone()] {
            if !dir.exists() {
                std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
                tree.created.push(dir);
            }
        }
        for i in 0..pods {
            let (uid, container) = ids(i);
            let pod = qos.join(format!(
                "kubepods-burstable-pod{}.slice",
                uid.replace('-', "_")
            ));
            let scope = pod.join(format!("cri-containerd-{container}.scope"));
            std::fs::create_dir(&pod)?;
            tree.created.push(pod);
            std::fs::create_dir(&scope)?;
            tree.created.push(scope.clone());
            let (namespace, name) = (
                format!("team-{}", i % 40),
                format!("app-{i}-7d4b9c8f5-x2k9q"),
            );
            std::fs::create_dir_all(logs.0.join(format!("pods/{namespace}_{name}_{uid}/app")))?;
            File::create(
                logs.0
                    .join(format!("containers/{name}_{namespace}_app-{container}.log")),
            )?;
            run_once_in(&scope)?;
        }
        Ok(tree)
    }
}

/// Runs `true` inside `cgroup` (the child moves itself in before exec).
fn run_once_in(cgroup: &Path) -> Result<()> {
    let procs = File::options()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new("true");
    // SAFETY: after fork, write(2) on an fd opened before it is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc_write(fd, b"0".as_ptr(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if !cmd.status()?.success() {
        bail!("a process in {} failed", cgroup.display());
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

impl Drop for KubeletTree {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
