//! The scale row: 4,096 pods, one container each, as the kubelet lays them out with the
//! systemd driver and containerd
//! (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<64 hex>.scope`),
//! with the kubelet's log files so that nodelens resolves namespace, pod and container.
//! Each container cgroup runs one short process, so each has a kernel entry.
//!
//! [`KubeletTree::make_busy`] then runs a second process in every container that makes
//! each per-pod series non-zero: CPU time and run-queue wait (two tasks on one CPU),
//! a CPU limit it exceeds (throttling, through a v1 `cpu` cgroup at the same path, as the
//! kubelet makes one on a hybrid host), buffered reads from a loop device in a small memory
//! cgroup (memcg reclaim, memory pressure, blocked I/O and I/O pressure).
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
    /// Every directory created, children after parents (cgroup2, then v1 `cpu` mirrors).
    created: Vec<PathBuf>,
    /// Each container's cgroup, relative to the cgroup2 root.
    containers: Vec<PathBuf>,
}

/// The v1 `cpu` controller of a hybrid host, where [`KubeletTree::make_busy`] gives each
/// container its CPU limit.
const CPU_V1: &str = "/sys/fs/cgroup/cpu";

/// Busy containers started at once: enough to keep both CPUs queued, few enough that the
/// memory cgroup they share stays the bottleneck it is meant to be.
const BUSY_AT_ONCE: usize = 64;

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
            containers: Vec::new(),
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
            tree.containers.push(scope.strip_prefix(&root)?.to_owned());
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

impl KubeletTree {
    /// Makes every container busy once (see the module doc): `device` is a block device to
    /// read (a loop device over memory) and `memory` a v1 memory cgroup with a small limit,
    /// which every container's process joins.
    pub fn make_busy(&mut self, device: &str, memory: &Path) -> Result<()> {
        let root = cgroup2_root()?;
        let cpu = Path::new(CPU_V1);
        if !cpu.join("cpu.cfs_quota_us").exists() {
            bail!("no v1 cpu controller at {CPU_V1}: the busy scale row needs a hybrid host");
        }
        if self.containers.is_empty() {
            bail!("no containers to make busy");
        }
        let containers = self.containers.clone();
        for (n, batch) in containers.chunks(BUSY_AT_ONCE).enumerate() {
            let mut running = Vec::with_capacity(batch.len());
            let started = self.start_batch(n, batch, &root, cpu, device, memory, &mut running);
            // Every process started is waited for, also after an error, so that the tree's
            // directories are empty when it is dropped.
            let mut failed = 0;
            for mut child in running {
                if started.is_err() {
                    let _ = child.kill();
                }
                if !child.wait().is_ok_and(|s| s.success()) {
                    failed += 1;
                }
            }
            started?;
            if failed > 0 {
                bail!("{failed} busy containers' processes failed");
            }
        }
        Ok(())
    }

    /// Gives each container of `batch` (the `n`th) its CPU limit and starts its process
    /// into `running`.
    #[allow(clippy::too_many_arguments)]
    fn start_batch(
        &mut self,
        n: usize,
        batch: &[PathBuf],
        root: &Path,
        cpu: &Path,
        device: &str,
        memory: &Path,
        running: &mut Vec<std::process::Child>,
    ) -> Result<()> {
        for (j, container) in batch.iter().enumerate() {
            let i = n * BUSY_AT_ONCE + j;
            let limited = cpu.join(container);
            // Parents first, so that the drop removes children first.
            let mut new: Vec<PathBuf> = limited
                .ancestors()
                .take_while(|d| *d != cpu)
                .filter(|d| !d.exists())
                .map(Path::to_owned)
                .collect();
            new.reverse();
            self.created.extend(new);
            std::fs::create_dir_all(&limited)
                .with_context(|| format!("create {}", limited.display()))?;
            // A tenth of a CPU in 10 ms periods: the loop below takes several.
            std::fs::write(limited.join("cpu.cfs_period_us"), "10000")?;
            std::fs::write(limited.join("cpu.cfs_quota_us"), "1000")?;
            // 2 MiB of the device (2 GiB: 1,024 such places, each read again only long
            // after its pages were reclaimed), so that no read finds another's pages: the
            // memory cgroup is full after some 16 pods, and each later one must reclaim
            // several times (with 64 pods at once, one reclaim can free what another needs;
            // 1 MiB each left a tenth of the pods without any).
            let skip = i % 1024 * 32;
            let work = format!(
                "echo 0 > {v2}/cgroup.procs && echo 0 > {v1}/cgroup.procs && echo 0 > {mem}/cgroup.procs && exec taskset -c {cpu_n} sh -c 'dd if={device} of=/dev/null bs=64k count=32 skip={skip} status=none & i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; wait'",
                v2 = root.join(container).display(),
                v1 = limited.display(),
                mem = memory.display(),
                cpu_n = i % 2,
            );
            running.push(Command::new("sh").args(["-c", &work]).spawn()?);
        }
        Ok(())
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
