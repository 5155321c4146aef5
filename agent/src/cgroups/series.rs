//! The labels a per-cgroup series carries, the same for every family.
//!
//! `namespace`, `pod` and `container` are set for kubelet cgroups; empty ones are left out
//! (an empty label and a missing one are the same to Prometheus). The `cgroup` path is left
//! out too when the names identify a kubelet cgroup, which is most of the bytes of a
//! scrape on a busy node, unless `--cgroup-path-label always` keeps it. When two rows of one
//! scrape would end up with the same labels (a restarted container's old cgroup, exported
//! one last time, and its new one), both keep their path, so no series is ever duplicated.
use std::collections::HashMap;

use super::CgroupLabels;
use crate::config::PathLabel;

/// The label pairs of each row, in the same order as `rows`, sorted by name.
pub fn label_sets<'a>(
    rows: impl IntoIterator<Item = &'a CgroupLabels> + Clone,
    policy: PathLabel,
) -> Vec<Vec<(&'static str, &'a str)>> {
    let drops_path =
        |l: &CgroupLabels| policy == PathLabel::Auto && l.identified && !l.cgroup.is_empty();
    let mut names: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for l in rows.clone() {
        if drops_path(l) {
            *names
                .entry((&l.namespace, &l.pod, &l.container))
                .or_default() += 1;
        }
    }
    rows.into_iter()
        .map(|l| {
            let unique = names
                .get(&(l.namespace.as_str(), l.pod.as_str(), l.container.as_str()))
                .is_some_and(|n| *n == 1);
            let keep_path = !(drops_path(l) && unique);
            [
                ("cgroup", if keep_path { l.cgroup.as_str() } else { "" }),
                ("container", l.container.as_str()),
                ("namespace", l.namespace.as_str()),
                ("pod", l.pod.as_str()),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect()
        })
        .collect()
}

/// `labels` with one more pair, keeping the names sorted.
pub fn with<'a>(
    labels: &[(&'static str, &'a str)],
    name: &'static str,
    value: &'a str,
) -> Vec<(&'static str, &'a str)> {
    let mut out = Vec::with_capacity(labels.len() + 1);
    out.extend_from_slice(labels);
    let at = out.partition_point(|(n, _)| *n < name);
    out.insert(at, (name, value));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(pod: &str, name: &str, path: &str) -> CgroupLabels {
        CgroupLabels {
            namespace: "team-a".into(),
            pod: pod.into(),
            container: name.into(),
            cgroup: path.into(),
            identified: true,
        }
    }

    #[test]
    fn kubelet_names_replace_the_path_unless_asked_to_keep_it() {
        let rows = [
            container("web", "app", "kubepods/burstable/pod1/aaa"),
            CgroupLabels {
                cgroup: "system.slice/containerd.service".into(),
                ..Default::default()
            },
        ];
        let auto = label_sets(rows.iter(), PathLabel::Auto);
        assert_eq!(
            auto[0],
            [
                ("container", "app"),
                ("namespace", "team-a"),
                ("pod", "web")
            ]
        );
        assert_eq!(auto[1], [("cgroup", "system.slice/containerd.service")]);
        let always = label_sets(rows.iter(), PathLabel::Always);
        assert_eq!(always[0][0], ("cgroup", "kubepods/burstable/pod1/aaa"));
    }

    #[test]
    fn a_restarted_containers_two_cgroups_keep_their_paths() {
        let rows = [
            container("web", "app", "kubepods/burstable/pod1/old"),
            container("web", "app", "kubepods/burstable/pod1/new"),
            container("web", "sidecar", "kubepods/burstable/pod1/side"),
        ];
        let sets = label_sets(rows.iter(), PathLabel::Auto);
        assert_eq!(sets[0][0], ("cgroup", "kubepods/burstable/pod1/old"));
        assert_eq!(sets[1][0], ("cgroup", "kubepods/burstable/pod1/new"));
        assert_eq!(sets[2][0], ("container", "sidecar"));
        assert_ne!(sets[0], sets[1]);
    }

    #[test]
    fn with_keeps_names_sorted() {
        let base = [("cgroup", "x"), ("pod", "p")];
        assert_eq!(
            with(&base, "kind", "memcg"),
            [("cgroup", "x"), ("kind", "memcg"), ("pod", "p")]
        );
    }
}
