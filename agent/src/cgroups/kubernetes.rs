//! Kubernetes identity from a cgroup path, and names from the kubelet's own log
//! directories. No API server access is needed.
//!
//! Paths, relative to the cgroup2 root, for both kubelet cgroup drivers:
//! - systemd:  `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`
//! - cgroupfs: `kubepods/burstable/pod<uid>/<id>`
//!
//! Guaranteed pods have no QoS level (`kubepods.slice/kubepods-pod<uid>.slice/...`,
//! `kubepods/pod<uid>/...`). Runtimes name container scopes `cri-containerd-<id>`,
//! `crio-<id>` or `docker-<id>`. A prefix before `kubepods` (a custom `--cgroup-root`, a
//! nested kind node) is allowed.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// What a kubelet cgroup path says about its pod and container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    pub pod_uid: String,
    /// `None` for the pod-level cgroup itself.
    pub container_id: Option<String>,
    pub qos: Qos,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod uid: 8-4-4-4-12 hex digits.
fn valid_uid(uid: &str) -> bool {
    let parts: Vec<&str> = uid.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && is_hex(p))
}

/// A container id: 64 hex digits (containerd, CRI-O and docker all use these).
fn valid_container_id(id: &str) -> bool {
    id.len() == 64 && is_hex(id)
}

/// The container id inside a runtime's scope name, or `None` for anything else (for
/// example CRI-O's `crio-conmon-<id>.scope`, which holds the monitor, not the container).
fn container_from_scope(name: &str) -> Option<String> {
    let inner = name.strip_suffix(".scope")?;
    let id = ["cri-containerd-", "crio-", "docker-"]
        .iter()
        .find_map(|prefix| inner.strip_prefix(prefix))?;
    valid_container_id(id).then(|| id.to_owned())
}

/// Parses a cgroup path relative to the cgroup2 root. Anything that is not a kubelet pod or
/// container cgroup, or is malformed, gives `None`.
pub fn parse(path: &str) -> Option<PodCgroup> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let start = parts.iter().position(|p| {
        *p == "kubepods.slice" || *p == "kubepods" || p.ends_with("-kubepods.slice")
    })?;
    let rest = &parts[start + 1..];
    if parts[start].ends_with(".slice") {
        parse_systemd(rest)
    } else {
        parse_cgroupfs(rest)
    }
}

fn parse_systemd(rest: &[&str]) -> Option<PodCgroup> {
    let (qos, rest) = match rest.first()? {
        s if s.ends_with("kubepods-burstable.slice") => (Qos::Burstable, &rest[1..]),
        s if s.ends_with("kubepods-besteffort.slice") => (Qos::BestEffort, &rest[1..]),
        _ => (Qos::Guaranteed, rest),
    };
    let pod = rest.first()?.strip_suffix(".slice")?;
    let uid = pod.rsplit_once("-pod")?.1.replace('_', "-");
    if !valid_uid(&uid) {
        return None;
    }
    let container_id = match rest.get(1) {
        None => None,
        Some(scope) => Some(container_from_scope(scope)?),
    };
    if rest.len() > 2 {
        return None;
    }
    Some(PodCgroup {
        pod_uid: uid,
        container_id,
        qos,
    })
}

fn parse_cgroupfs(rest: &[&str]) -> Option<PodCgroup> {
    let (qos, rest) = match *rest.first()? {
        "burstable" => (Qos::Burstable, &rest[1..]),
        "besteffort" => (Qos::BestEffort, &rest[1..]),
        _ => (Qos::Guaranteed, rest),
    };
    let uid = rest.first()?.strip_prefix("pod")?;
    if !valid_uid(uid) {
        return None;
    }
    let container_id = match rest.get(1) {
        None => None,
        Some(id) if valid_container_id(id) => Some((*id).to_owned()),
        // CRI-O with the cgroupfs driver names scopes like the systemd driver does.
        Some(scope) => Some(container_from_scope(scope)?),
    };
    if rest.len() > 2 {
        return None;
    }
    Some(PodCgroup {
        pod_uid: uid.to_owned(),
        container_id,
        qos,
    })
}

/// Names of pods and containers, from the kubelet's log directories:
/// `/var/log/pods/<namespace>_<pod>_<uid>/` and
/// `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`.
#[derive(Debug)]
pub struct PodNames {
    pods_dir: PathBuf,
    containers_dir: PathBuf,
    /// pod uid → (namespace, pod)
    pods: HashMap<String, (String, String)>,
    /// container id → container name
    containers: HashMap<String, String>,
    scanned: Option<Instant>,
}

/// A directory of the kubelet's pod logs, `<namespace>_<pod>_<uid>`: (namespace, pod,
/// uid). Namespaces and pod names cannot contain '_', so the split is unambiguous.
pub fn pod_log_dir(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.splitn(3, '_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    (!ns.is_empty() && !pod.is_empty() && valid_uid(uid)).then_some((ns, pod, uid))
}

/// A link of the kubelet's container logs, `<pod>_<namespace>_<container>-<id>.log`:
/// (container, id).
pub fn container_log_link(name: &str) -> Option<(&str, &str)> {
    let mut parts = name.strip_suffix(".log")?.splitn(3, '_');
    let (_pod, _ns, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let (container, id) = rest.rsplit_once('-')?;
    (!container.is_empty() && valid_container_id(id)).then_some((container, id))
}

/// Rescans of the log directories for an unknown pod or container happen at most this often.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(5);

impl PodNames {
    pub fn new(pods_dir: &Path, containers_dir: &Path) -> Self {
        Self {
            pods_dir: pods_dir.to_owned(),
            containers_dir: containers_dir.to_owned(),
            pods: HashMap::new(),
            containers: HashMap::new(),
            scanned: None,
        }
    }

    fn rescan(&mut self) {
        self.scanned = Some(Instant::now());
        self.pods.clear();
        self.containers.clear();
        // Missing directories (not mounted) simply leave names empty.
        if let Ok(dir) = std::fs::read_dir(&self.pods_dir) {
            for entry in dir.flatten() {
                let name = entry.file_name();
                if let Some((ns, pod, uid)) = name.to_str().and_then(pod_log_dir) {
                    self.pods
                        .insert(uid.to_owned(), (ns.to_owned(), pod.to_owned()));
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir(&self.containers_dir) {
            for entry in dir.flatten() {
                let name = entry.file_name();
                if let Some((container, id)) = name.to_str().and_then(container_log_link) {
                    self.containers.insert(id.to_owned(), container.to_owned());
                }
            }
        }
    }

    fn lookup<T>(&mut self, get: impl Fn(&Self) -> Option<T>) -> Option<T> {
        if let Some(v) = get(self) {
            return Some(v);
        }
        if self
            .scanned
            .is_none_or(|at| at.elapsed() >= RESCAN_INTERVAL)
        {
            self.rescan();
            return get(self);
        }
        None
    }

    /// (namespace, pod) of a pod uid.
    pub fn pod(&mut self, uid: &str) -> Option<(String, String)> {
        self.lookup(|s| s.pods.get(uid).cloned())
    }

    pub fn container(&mut self, id: &str) -> Option<String> {
        self.lookup(|s| s.containers.get(id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f9c1f6a-3b1e-4b7c-9d2a-5e6f7a8b9c0d";
    const UID_US: &str = "0f9c1f6a_3b1e_4b7c_9d2a_5e6f7a8b9c0d";
    const CID: &str = "4c5d0e2a1b3f4e6d8c9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e";

    fn pod(qos: Qos, container: bool) -> Option<PodCgroup> {
        Some(PodCgroup {
            pod_uid: UID.into(),
            container_id: container.then(|| CID.into()),
            qos,
        })
    }

    #[test]
    fn systemd_driver_every_qos_and_runtime() {
        let cases = [
            (
                format!(
                    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"
                ),
                pod(Qos::Burstable, true),
            ),
            (
                format!(
                    "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{CID}.scope"
                ),
                pod(Qos::BestEffort, true),
            ),
            (
                format!("kubepods.slice/kubepods-pod{UID_US}.slice/docker-{CID}.scope"),
                pod(Qos::Guaranteed, true),
            ),
            (
                format!("kubepods.slice/kubepods-pod{UID_US}.slice"),
                pod(Qos::Guaranteed, false),
            ),
            (
                format!(
                    "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"
                ),
                pod(Qos::Burstable, true),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path), want, "{path}");
        }
    }

    #[test]
    fn cgroupfs_driver_every_qos_and_runtime() {
        let cases = [
            (
                format!("kubepods/burstable/pod{UID}/{CID}"),
                pod(Qos::Burstable, true),
            ),
            (
                format!("kubepods/besteffort/pod{UID}/{CID}"),
                pod(Qos::BestEffort, true),
            ),
            (
                format!("kubepods/pod{UID}/{CID}"),
                pod(Qos::Guaranteed, true),
            ),
            (
                format!("kubepods/burstable/pod{UID}/crio-{CID}.scope"),
                pod(Qos::Burstable, true),
            ),
            (
                format!("kubepods/burstable/pod{UID}"),
                pod(Qos::Burstable, false),
            ),
            (
                format!("/kubepods/pod{UID}/{CID}/"),
                pod(Qos::Guaranteed, true),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path), want, "{path}");
        }
    }

    #[test]
    fn non_kubernetes_and_malformed_paths_give_nothing() {
        let bad = [
            String::new(),
            "/".into(),
            "system.slice/containerd.service".into(),
            "user.slice/user-0.slice/session-1.scope".into(),
            "kubepods.slice".into(),
            "kubepods.slice/kubepods-burstable.slice".into(),
            "kubepods/burstable".into(),
            format!("kubepods/burstable/pod{}/{CID}", &UID[..30]),
            format!("kubepods/burstable/pod{UID}/{}", &CID[..20]),
            format!("kubepods/burstable/pod{UID}/zz{}", &CID[2..]),
            format!("kubepods.slice/kubepods-pod{UID_US}.slice/crio-conmon-{CID}.scope"),
            format!("kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{CID}.scope/extra"),
            "kubepods.slice/kubepods-podnot-a-uid.slice".to_owned(),
            "kubepods/pod/".into(),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod.slice".into(),
            "\u{0}\u{ffff}/kubepods/..//pod".into(),
        ];
        for path in bad {
            assert_eq!(parse(&path), None, "{path:?}");
        }
    }

    #[test]
    fn names_from_kubelet_log_directories() {
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join("pods");
        let containers = dir.path().join("containers");
        std::fs::create_dir_all(pods.join(format!("kube-system_coredns-5d78c9869d-abcde_{UID}")))
            .unwrap();
        std::fs::create_dir_all(pods.join("garbage")).unwrap();
        std::fs::create_dir_all(&containers).unwrap();
        std::fs::write(
            containers.join(format!(
                "coredns-5d78c9869d-abcde_kube-system_my-side-car-{CID}.log"
            )),
            "",
        )
        .unwrap();
        std::fs::write(containers.join("broken.log"), "").unwrap();
        let mut names = PodNames::new(&pods, &containers);
        assert_eq!(
            names.pod(UID),
            Some(("kube-system".into(), "coredns-5d78c9869d-abcde".into()))
        );
        assert_eq!(names.container(CID), Some("my-side-car".into()));
        assert_eq!(names.container(&"0".repeat(64)), None);
        let mut missing =
            PodNames::new(Path::new("/nonexistent/pods"), Path::new("/nonexistent/c"));
        assert_eq!(missing.pod(UID), None);
    }
}
