//! The image that `cargo xtask image` built, run under a real containerd the way the
//! DaemonSet runs it: the init container's preflight, then the agent, from the same image,
//! with the manifest's command, environment (its ConfigMap), host paths, read-only root
//! filesystem, capabilities (all dropped but BPF and PERFMON), limits and containerd's
//! default seccomp profile. Everything is read from manifests/, so the test follows the
//! DaemonSet when it changes.
//!
//! One difference: the pod's network. The DaemonSet uses a pod network with a hostPort;
//! ctr has no CNI, so the container shares the host's network here. The agent reads the
//! host through its hostPath mounts either way.
//!
//! It needs the archive (`NODELENS_IMAGE_ARCHIVE`), containerd, runc and ctr, so it is
//! ignored by default; `cargo xtask test --full` builds the image and runs it.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Metrics, Workload, cgroup2_root, free_port, wait_for};
use serde_yaml::Value;

/// A containerd of the test's own: its root, state and socket under `dir`.
struct Containerd {
    dir: PathBuf,
    daemon: Child,
}

const NAMESPACE: &str = "nodelens-test";

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("config.toml");
        // Only what ctr needs: no CRI plugin (no kubelet here).
        std::fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(dir.join("containerd.sock"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian package containerd)");
        let containerd = Containerd {
            dir: dir.to_owned(),
            daemon,
        };
        wait_for("containerd answers", Duration::from_secs(30), || {
            containerd.ctr_output(&["version"]).is_ok()
        });
        containerd
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", NAMESPACE]);
        cmd
    }

    fn ctr_output(&self, args: &[&str]) -> Result<String, String> {
        let out = self.ctr().args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in ["nodelens", "preflight"] {
            let _ = self.ctr().args(["task", "kill", "-s", "KILL", id]).output();
            let _ = self.ctr().args(["task", "delete", "--force", id]).output();
            let _ = self.ctr().args(["containers", "delete", id]).output();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // The cgroups containerd made for the namespace, in every hierarchy.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(NAMESPACE));
            }
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(NAMESPACE));
        // Whatever containerd left mounted under its directories (the containers' root
        // filesystems), deepest first.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut inside: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| Path::new(p).starts_with(&self.dir))
            .collect();
        inside.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in inside {
            let _ = Command::new("umount").arg(point).output();
        }
    }
}

/// The capabilities containerd 1.6 gives a container by default (`oci.WithDefaultSpec`).
/// ctr's `--cap-drop` takes names, not `ALL`, so dropping all means dropping these.
const CONTAINERD_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A Kubernetes quantity of bytes (`128Mi`) or of CPU (`250m`).
fn quantity(v: &Value) -> f64 {
    let s = str_of(v);
    for (suffix, factor) in [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("m", 0.001),
    ] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap() * factor;
        }
    }
    s.parse().unwrap()
}

fn manifest(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(name);
    serde_yaml::from_str(&common::read(&path)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// `ctr run` options for one of the DaemonSet's containers, as the kubelet would set it up.
struct Container<'a> {
    spec: &'a Value,
    volumes: &'a [Value],
    /// The emptyDir volumes, by name: a host directory each.
    empty_dirs: &'a [(String, PathBuf)],
    env: Vec<(String, String)>,
}

impl Container<'_> {
    fn run_args(&self, image: &str, id: &str) -> Vec<String> {
        let mut args: Vec<String> = ["run", "--rm", "--net-host", "--seccomp"]
            .map(String::from)
            .to_vec();
        let security = &self.spec["securityContext"];
        assert_eq!(security["privileged"].as_bool(), Some(false));
        assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
        assert_eq!(
            security["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault")
        );
        if security["readOnlyRootFilesystem"].as_bool() == Some(true) {
            args.push("--read-only".into());
        }
        // ctr (containerd 1.6) has no --user; the image names none, so it runs as root,
        // which is what the manifest asks for.
        assert_eq!(security["runAsUser"].as_i64(), Some(0));
        let added: Vec<String> = security["capabilities"]["add"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| format!("CAP_{}", str_of(c)))
            .collect();
        for cap in security["capabilities"]["drop"].as_sequence().unwrap() {
            if str_of(cap) == "ALL" {
                for default in CONTAINERD_DEFAULT_CAPS {
                    if !added.iter().any(|a| a == default) {
                        args.push(format!("--cap-drop={default}"));
                    }
                }
            } else {
                args.push(format!("--cap-drop=CAP_{}", str_of(cap)));
            }
        }
        for cap in &added {
            args.push(format!("--cap-add={cap}"));
        }
        let limits = &self.spec["resources"]["limits"];
        args.push(format!(
            "--memory-limit={}",
            quantity(&limits["memory"]) as u64
        ));
        let period = 100_000u64;
        args.push(format!("--cpu-period={period}"));
        args.push(format!(
            "--cpu-quota={}",
            (quantity(&limits["cpu"]) * period as f64) as u64
        ));
        for (k, v) in &self.env {
            args.push(format!("--env={k}={v}"));
        }
        let mounts = self.spec["volumeMounts"].as_sequence().unwrap();
        assert!(!mounts.is_empty());
        for mount in mounts {
            let name = str_of(&mount["name"]);
            let source = self.source(name);
            let mode = if mount["readOnly"].as_bool() == Some(true) {
                "ro"
            } else {
                "rw"
            };
            args.push(format!(
                "--mount=type=bind,src={},dst={},options=rbind:{mode}",
                source.display(),
                str_of(&mount["mountPath"])
            ));
        }
        args.push(image.into());
        args.push(id.into());
        // Kubernetes appends `args` to the image's entrypoint; ctr replaces the whole argv.
        args.push("/nodelens".into());
        for a in self.spec["args"].as_sequence().unwrap() {
            args.push(str_of(a).into());
        }
        args
    }

    /// The host path behind a volume: its hostPath, or the emptyDir's directory.
    fn source(&self, name: &str) -> PathBuf {
        if let Some((_, dir)) = self.empty_dirs.iter().find(|(n, _)| n == name) {
            return dir.clone();
        }
        let volume = self
            .volumes
            .iter()
            .find(|v| str_of(&v["name"]) == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        let host = &volume["hostPath"];
        let path = PathBuf::from(str_of(&host["path"]));
        // As the kubelet does (and, like it, leaves the directory).
        if host["type"].as_str() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&path).unwrap();
        }
        assert!(
            path.exists(),
            "hostPath {} exists on this host",
            path.display()
        );
        path
    }
}

/// A directory (the test's cgroup) removed however the test ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A capability set of a process (`CapEff`, `CapBnd`, ...) from its status.
fn capabilities(pid: &str, set: &str) -> u64 {
    let status = common::read(format!("/proc/{pid}/status"));
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))
        .unwrap_or_else(|| panic!("{set} in /proc/{pid}/status"))
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

const CAP_PERFMON: u64 = 38;
const CAP_BPF: u64 = 39;

#[test]
#[ignore = "needs the archive of `cargo xtask image` in NODELENS_IMAGE_ARCHIVE, containerd and runc; cargo xtask test --full runs it"]
fn the_image_runs_under_containerd_as_the_daemonset_runs_it() {
    common::require_root();
    let archive = std::env::var("NODELENS_IMAGE_ARCHIVE")
        .expect("NODELENS_IMAGE_ARCHIVE: the oci-archive that cargo xtask image wrote");
    // The DaemonSet mounts the host's tracefs; the kubelet's host has it mounted.
    common::mount_tracefs();
    let dir = tempfile::Builder::new()
        .prefix("nodelens-containerd")
        .tempdir_in("/var/tmp")
        .unwrap();
    let containerd = Containerd::start(dir.path());

    let imported = containerd
        .ctr_output(&["images", "import", &archive])
        .unwrap_or_else(|e| panic!("ctr images import {archive}: {e}"));
    let daemonset = manifest("daemonset.yaml");
    let pod = &daemonset["spec"]["template"]["spec"];
    let agent_spec = &pod["containers"][0];
    let preflight_spec = &pod["initContainers"][0];
    let image = str_of(&agent_spec["image"]);
    assert_eq!(
        str_of(&preflight_spec["image"]),
        image,
        "one image for both"
    );
    let images = containerd
        .ctr_output(&["images", "list", "--quiet"])
        .unwrap();
    assert!(
        images.lines().any(|l| l == image),
        "the archive imports as {image} (the DaemonSet's image); ctr said {imported}, lists {images}"
    );

    // The ConfigMap's environment and the downward API's node name; the port moves to a
    // free one so that a real agent on 9560 does not matter.
    let port = free_port();
    let configmap = manifest("configmap.yaml");
    let mut env: Vec<(String, String)> = configmap["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (str_of(k).to_owned(), str_of(v).to_owned()))
        .collect();
    assert!(!env.is_empty());
    for (k, v) in &mut env {
        if k == "NODELENS_LISTEN_ADDRESS" {
            *v = format!("127.0.0.1:{port}");
        }
    }
    env.push(("NODELENS_NODE_NAME".into(), "image-test-node".into()));

    let volumes = pod["volumes"].as_sequence().unwrap();
    let run_dir = dir.path().join("emptydir-run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let empty_dirs: Vec<(String, PathBuf)> = volumes
        .iter()
        .filter(|v| v.get("emptyDir").is_some())
        .map(|v| (str_of(&v["name"]).to_owned(), run_dir.clone()))
        .collect();
    assert_eq!(empty_dirs.len(), 1, "the run emptyDir");

    // The init container: preflight must exit 0 and leave its report for the agent.
    let preflight = Container {
        spec: preflight_spec,
        volumes,
        empty_dirs: &empty_dirs,
        env: env.clone(),
    };
    let out = containerd
        .ctr()
        .args(preflight.run_args(image, "preflight"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "preflight in the image: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_dir(&run_dir).unwrap().next().is_some(),
        "preflight wrote its report into the emptyDir"
    );

    // The agent.
    let agent = Container {
        spec: agent_spec,
        volumes,
        empty_dirs: &empty_dirs,
        env,
    };
    let log_path = dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut task = containerd
        .ctr()
        .args(agent.run_args(image, "nodelens"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let scrape = || -> Option<Metrics> {
        let (status, _, body) =
            common::http(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[]).ok()?;
        (status == 200).then(|| Metrics::parse(&String::from_utf8_lossy(&body)))
    };
    let ready = || {
        common::http(&format!("127.0.0.1:{port}"), "GET", "/readyz", &[])
            .is_ok_and(|(status, _, _)| status == 200)
    };
    wait_for(
        "the agent in the image is ready (every probe attempted)",
        Duration::from_secs(60),
        || {
            if let Ok(Some(status)) = task.try_wait() {
                panic!(
                    "the agent's container exited ({status}):\n{}",
                    common::read(&log_path)
                );
            }
            ready()
        },
    );

    // Every core probe attached.
    let m = scrape().expect("/metrics of the ready agent");
    for core in [
        "sched_switch",
        "block_rq_issue",
        "block_rq_complete",
        "mark_victim",
    ] {
        let up: Vec<_> = m
            .family("nodelens_probe_up")
            .into_iter()
            .filter(|(s, _)| s.contains(&format!("probe=\"{core}\"")))
            .collect();
        assert!(!up.is_empty(), "nodelens_probe_up for {core}");
        assert!(up.iter().all(|(_, v)| *v == 1.0), "{core} attached: {up:?}");
    }

    // Per-cgroup series for a cgroup made here, which the agent sees through the
    // DaemonSet's cgroup mount.
    let cgroup = cgroup2_root().join(format!("nodelens-image-{}", std::process::id()));
    std::fs::create_dir_all(&cgroup).unwrap();
    let _remove = RemoveOnDrop(cgroup.clone());
    let label = cgroup
        .strip_prefix(cgroup2_root())
        .unwrap()
        .display()
        .to_string();
    let mut work = Workload::spawn_into(
        &cgroup,
        &[
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done",
        ],
    );
    work.reap_success();
    let series = format!("nodelens_cgroup_cpu_seconds_total{{cgroup=\"{label}\"}}");
    wait_for(
        "the test's cgroup in /metrics",
        Duration::from_secs(30),
        || scrape().is_some_and(|m| m.get(&series).is_some_and(|v| v > 0.0)),
    );

    // After attaching, the agent holds no capability.
    let tasks = containerd.ctr_output(&["tasks", "list"]).unwrap();
    let pid = tasks
        .lines()
        .find(|l| l.starts_with("nodelens "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("the agent's task in {tasks}"))
        .to_owned();
    assert_eq!(
        capabilities(&pid, "CapEff"),
        0,
        "CapEff of the agent in the image (pid {pid})"
    );
    // And the container never had more than the two it asks for.
    assert_eq!(
        capabilities(&pid, "CapBnd"),
        (1 << CAP_PERFMON) | (1 << CAP_BPF),
        "the container's bounding set: BPF and PERFMON only"
    );

    let _ = containerd.ctr().args(["task", "kill", "nodelens"]).output();
    let _ = task.wait();
}
