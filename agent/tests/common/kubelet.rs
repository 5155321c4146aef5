//! A kubelet-shaped pod on this host: its container's cgroup (systemd driver,
//! containerd), the kubelet's log directories that name it, and work in it that touches
//! every per-pod family (CPU, run-queue wait, disk reads, reclaim, an OOM kill).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::{BIN, Workload, cgroup2_root};

pub const NODE: &str = "node-a";
pub const NAMESPACE: &str = "shop";
pub const POD: &str = "cart-5f7d9c-q2w4e";
pub const CONTAINER: &str = "app";
pub const UID: &str = "3e8a1c52-7b4d-4f0e-9a6c-1d2e3f4a5b6c";
pub const CID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// A kubelet-shaped pod: container cgroup (systemd driver, containerd) and the kubelet's
/// log directories for its names; removed on drop.
pub struct WorkloadPod {
    created: Vec<PathBuf>,
    pub container: PathBuf,
    /// The container's cgroup in the v1 cpu controller, at the same path (as the kubelet
    /// makes it on a hybrid host), with a CPU limit of half a CPU.
    cpu_v1: PathBuf,
    logs: tempfile::TempDir,
}

/// The v1 cpu controller's hierarchy on this hybrid host.
const CPU_V1: &str = "/sys/fs/cgroup/cpu";

impl WorkloadPod {
    pub fn new() -> WorkloadPod {
        let root = cgroup2_root();
        let uid = UID.replace('-', "_");
        let rel = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{CID}.scope"
        );
        let mut created = Vec::new();
        let mut make = |root: &Path| {
            let mut path = root.to_owned();
            for part in Path::new(&rel) {
                path.push(part);
                if !path.exists() {
                    std::fs::create_dir(&path).expect("create cgroup");
                    created.push(path.clone());
                }
            }
            path
        };
        let path = make(&root);
        let cpu_v1 = make(Path::new(CPU_V1));
        std::fs::write(cpu_v1.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(cpu_v1.join("cpu.cfs_quota_us"), "50000").unwrap();
        let logs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(
            logs.path()
                .join(format!("pods/{NAMESPACE}_{POD}_{UID}/{CONTAINER}")),
        )
        .unwrap();
        std::fs::create_dir_all(logs.path().join("containers")).unwrap();
        std::fs::write(
            logs.path().join(format!(
                "containers/{POD}_{NAMESPACE}_{CONTAINER}-{CID}.log"
            )),
            "",
        )
        .unwrap();
        WorkloadPod {
            created,
            container: path,
            cpu_v1,
            logs,
        }
    }

    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--pod-logs-dir".into(),
            self.logs.path().join("pods").display().to_string(),
            "--container-logs-dir".into(),
            self.logs.path().join("containers").display().to_string(),
            "--node-name".into(),
            NODE.into(),
        ]
    }

    /// CPU (throttled by the container's CPU limit), disk reads, reclaim (so memory
    /// pressure) and one OOM kill, all in the container: the limits in v1 memory and cpu
    /// cgroups on this hybrid host, the identity in the cgroup2 container cgroup.
    pub fn work(&self) {
        let v1 = Path::new("/sys/fs/cgroup/memory")
            .join(format!("nodelens-operator-{}", std::process::id()));
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), (16u64 << 20).to_string()).unwrap();
        let file = tempfile::Builder::new()
            .prefix("nodelens-operator-")
            .tempfile_in("/var/tmp")
            .unwrap();
        let f = file.path().display();
        let script = format!(
            "dd if=/dev/zero of={f} bs=1M count=64 oflag=direct status=none || exit 1; \
             echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.procs || exit 1; \
             i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; \
             dd if={bin} of=/dev/null bs=4k count=256 iflag=direct status=none || exit 1; \
             dd if={f} of=/dev/null bs=1M status=none || exit 1; \
             dd if=/dev/zero of=/dev/null bs=256M count=1 status=none; \
             [ $? -eq 137 ]",
            self.container.display(),
            v1.display(),
            self.cpu_v1.display(),
            bin = BIN,
        );
        let status = Command::new("sh").args(["-c", &script]).status().unwrap();
        let _ = std::fs::remove_dir(&v1);
        assert!(
            status.success(),
            "the workload (CPU, disk, reclaim, then an OOM kill) failed: {status}"
        );
    }
}

impl WorkloadPod {
    /// Disk reads in the container, under its CPU limit, that go on until dropped: per-pod
    /// rates that divide two (the disk alert, the throttled share of CFS periods) are 0/0,
    /// no result, once a pod has stopped reading and running.
    pub fn keep_reading(&self) -> Workload {
        Workload::spawn_into(
            &self.container,
            &[
                "/bin/sh",
                "-c",
                &format!(
                    "echo $$ > {}/cgroup.procs || exit 1; while :; do dd if={BIN} of=/dev/null bs=4k count=16 iflag=direct status=none; sleep 0.2; done",
                    self.cpu_v1.display()
                ),
            ],
        )
    }
}

impl Drop for WorkloadPod {
    fn drop(&mut self) {
        // What is still running in the container (a reader's dd or sleep) goes first: a
        // cgroup with processes cannot be removed.
        super::empty_cgroup(&self.container);
        // The v1 cpu cgroup held the same processes, so it is empty now too.
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
