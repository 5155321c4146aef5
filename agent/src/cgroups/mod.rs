//! From a cgroup id (what `bpf_get_current_cgroup_id()` returns: the inode of the cgroup's
//! directory in the cgroup2 hierarchy) to a path, and from a path to Kubernetes labels.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub mod born;
pub mod kubernetes;
pub mod series;
pub mod settings;
pub mod table;
pub mod tracker;

use kubernetes::PodNames;

/// Re-walks of the cgroup tree for an unknown id happen at most this often.
pub const REWALK_INTERVAL: Duration = Duration::from_secs(2);
/// Guards against pathological trees: deeper directories and entries past this are skipped.
const MAX_DEPTH: usize = 32;
const MAX_CGROUPS: usize = 1 << 20;

/// Finds the cgroup2 mount point in a mountinfo text: `/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split(' ').next()? != "cgroup2" {
            return None;
        }
        pre.split(' ').nth(4).map(PathBuf::from)
    })
}

/// Finds a cgroup v1 controller's mount point in a mountinfo text (`cpu` on a hybrid host:
/// `/sys/fs/cgroup/cpu` or `/sys/fs/cgroup/cpu,cpuacct`); `None` on pure v2 hosts.
pub fn cgroup1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mut fields = post.split(' ');
        if fields.next()? != "cgroup" {
            return None;
        }
        let options = fields.nth(1)?;
        options
            .split(',')
            .any(|o| o == controller)
            .then(|| pre.split(' ').nth(4).map(PathBuf::from))?
    })
}

/// Labels for one cgroup. Non-Kubernetes cgroups have only `cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CgroupLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// Path relative to the cgroup2 root; `/` for the root itself.
    pub cgroup: String,
    /// A kubelet pod or container cgroup whose names are all known, so that namespace, pod
    /// and container (empty for the pod's own cgroup) identify it without the path.
    pub identified: bool,
}

impl CgroupLabels {
    pub fn other() -> Self {
        Self {
            cgroup: "other".into(),
            ..Self::default()
        }
    }
}

/// Where the cgroup code reads the time: the real clock, or, in unit tests, one they move
/// by hand, so that tests of "waited long enough" never sleep.
#[derive(Debug, Clone)]
pub struct Clock {
    /// `None`: the real clock. `Some`: a start and how far the test moved it, in ns.
    manual: Option<(Instant, std::sync::Arc<std::sync::atomic::AtomicU64>)>,
}

impl Clock {
    pub fn real() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands still until [`Self::advance`] moves it.
    #[cfg(test)]
    pub fn manual() -> Clock {
        Clock {
            manual: Some((Instant::now(), Default::default())),
        }
    }

    #[cfg(test)]
    pub fn advance(&self, by: Duration) {
        if let Some((_, ns)) = &self.manual {
            ns.fetch_add(by.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some((start, ns)) => {
                *start + Duration::from_nanos(ns.load(std::sync::atomic::Ordering::Relaxed))
            }
        }
    }
}

#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    paths: HashMap<u64, String>,
    walked: Option<Instant>,
    names: PodNames,
    clock: Clock,
}

impl CgroupResolver {
    pub fn new(root: PathBuf, pods_dir: &Path, containers_dir: &Path) -> Self {
        Self {
            root,
            paths: HashMap::new(),
            walked: None,
            names: PodNames::new(pods_dir, containers_dir),
            clock: Clock::real(),
        }
    }

    /// Reads the time from `clock` from now on (tests).
    #[cfg(test)]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The time, from this resolver's clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Rebuilds id → path from the cgroup2 tree.
    fn walk(&mut self) {
        self.walked = Some(self.clock.now());
        let mut paths = HashMap::with_capacity(self.paths.len().max(64));
        let mut stack: Vec<(PathBuf, usize)> = vec![(self.root.clone(), 0)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            let rel = match dir.strip_prefix(&self.root) {
                Ok(r) if r.as_os_str().is_empty() => "/".to_owned(),
                Ok(r) => r.to_string_lossy().into_owned(),
                Err(_) => continue,
            };
            paths.insert(meta.ino(), rel);
            if depth >= MAX_DEPTH || paths.len() >= MAX_CGROUPS {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        self.paths = paths;
    }

    /// The path of `id`, re-walking the tree (rate-limited) when it is unknown.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        let now = self.clock.now();
        if self
            .walked
            .is_none_or(|at| now.duration_since(at) >= REWALK_INTERVAL)
        {
            self.walk();
            return self.paths.get(&id).cloned();
        }
        None
    }

    /// The labels of `id`, walking the tree first unless a walk started after `since`
    /// already looked for it.
    pub fn labels_walked_since(&mut self, id: u64, since: Instant) -> Option<CgroupLabels> {
        if !self.paths.contains_key(&id) && self.walked.is_none_or(|at| at < since) {
            self.walk();
        }
        let path = self.paths.get(&id)?.clone();
        Some(self.labels_for_path(path))
    }

    /// Whether the cgroup still exists (its directory is there with the same inode).
    pub fn exists(&self, id: u64) -> bool {
        self.directory(id).is_some_and(|path| exists_at(&path, id))
    }

    /// Where the cgroup `id` was seen, if it was.
    pub fn directory(&self, id: u64) -> Option<PathBuf> {
        let rel = self.paths.get(&id)?;
        Some(if rel == "/" {
            self.root.clone()
        } else {
            self.root.join(rel)
        })
    }

    /// Forgets a cgroup that is gone.
    pub fn forget(&mut self, id: u64) {
        self.paths.remove(&id);
    }

    /// Labels for a path: Kubernetes names where the path is a kubelet pod or container.
    pub fn labels_for_path(&mut self, path: String) -> CgroupLabels {
        let mut labels = CgroupLabels {
            cgroup: path,
            ..CgroupLabels::default()
        };
        if let Some(k) = kubernetes::parse(&labels.cgroup) {
            if let Some((namespace, pod)) = self.names.pod(&k.pod_uid) {
                labels.namespace = namespace;
                labels.pod = pod;
            }
            if let Some(container) = k
                .container_id
                .as_deref()
                .and_then(|id| self.names.container(id))
            {
                labels.container = container;
            }
            labels.identified = !labels.pod.is_empty()
                && (k.container_id.is_none() || !labels.container.is_empty());
        }
        labels
    }

    /// Labels for an id, or `None` when it cannot be resolved (gone before it was seen).
    pub fn labels(&mut self, id: u64) -> Option<CgroupLabels> {
        let path = self.path(id)?;
        Some(self.labels_for_path(path))
    }
}

/// Runs `command` with `sh -c` inside the cgroup at `dir` (the shell moves itself in first,
/// so everything it starts is born there) and waits for it: the exercises' workloads.
pub fn run_inside(dir: &Path, command: &str) -> Result<(), String> {
    let script = format!("echo $$ > {}/cgroup.procs && {command}", dir.display());
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{command}` in {} failed: {status}", dir.display()))
    }
}

/// Whether the cgroup `id` is still at `path`: the directory is there with the same inode
/// (cgroup ids are inode numbers, never reused while the machine runs).
pub fn exists_at(path: &Path, id: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.ino() == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_mountinfo() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(v2), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_mount("garbage\n\n - \n"), None);
    }

    #[test]
    fn finds_a_v1_controller_in_mountinfo() {
        let hybrid = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                      33 31 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n";
        assert_eq!(
            cgroup1_mount(hybrid, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            cgroup1_mount(hybrid, "cpuset"),
            Some(PathBuf::from("/sys/fs/cgroup/cpuset"))
        );
        assert_eq!(cgroup1_mount(hybrid, "memory"), None);
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup1_mount(v2, "cpu"), None);
        assert_eq!(cgroup1_mount("garbage - cgroup\n", "cpu"), None);
    }

    #[test]
    fn resolves_real_cgroups_on_this_host() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = cgroup2_mount(&mountinfo).expect("cgroup2 mounted");
        let dir = root.join(format!("nodelens-unit-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let id = std::fs::metadata(&dir).unwrap().ino();
        let mut r = CgroupResolver::new(
            root.clone(),
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        );
        let labels = r.labels(id).expect("a fresh cgroup is found by a walk");
        assert_eq!(
            labels.cgroup,
            format!("nodelens-unit-{}", std::process::id())
        );
        assert!(labels.pod.is_empty());
        assert!(r.exists(id));
        std::fs::remove_dir(&dir).unwrap();
        assert!(!r.exists(id));
        let root_id = std::fs::metadata(&root).unwrap().ino();
        assert_eq!(r.path(root_id).as_deref(), Some("/"));
        assert_eq!(r.path(u64::MAX), None, "unknown ids stay unknown");
    }
}
