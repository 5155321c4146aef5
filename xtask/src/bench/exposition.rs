//! Reading nodelens's text scrapes, for the bench and the soak: the samples and `# TYPE`
//! lines of a scrape, a series' labels, the probes' own cost counters, and how many
//! samples and per-pod series a scrape holds.
//!
//! Line-oriented on purpose: both read scrapes they just took, in the Prometheus text
//! format nodelens writes (one sample per line, the value after the last space, labels
//! never containing `",`). The agent's tests check the exposition itself with a real parser
//! (nom-openmetrics) and promtool; a parser here would check nothing more.
use std::collections::BTreeMap;

/// Every sample line of a scrape: (series as written, labels included; value). Lines whose
/// value does not parse are left out.
pub fn sample_lines(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series, value.parse().ok()?))
        })
}

/// The `# TYPE` lines: family name -> type.
pub fn types(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((parts.next()?, parts.next()?))
        })
        .collect()
}

/// A label's value in a series (`name{a="x",b="y"}`), or "" without it.
pub fn label<'a>(series: &'a str, name: &str) -> &'a str {
    let Some((_, labels)) = series.split_once('{') else {
        return "";
    };
    labels
        .trim_end_matches('}')
        .split("\",")
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
        .map_or("", |v| v.trim_end_matches('"'))
}

/// (probe, source) -> (runs, run seconds), from a nodelens scrape.
pub(super) fn probe_stats(text: &str) -> BTreeMap<(String, String), (f64, f64)> {
    let mut out: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for (series, value) in sample_lines(text) {
        let is_runs = match series.split('{').next() {
            Some("nodelens_probe_runs_total") => true,
            Some("nodelens_probe_run_seconds_total") => false,
            _ => continue,
        };
        let key = (
            label(series, "probe").to_owned(),
            label(series, "source").to_owned(),
        );
        let entry = out.entry(key).or_default();
        if is_runs {
            entry.0 = value;
        } else {
            entry.1 = value;
        }
    }
    out
}

/// Samples in a scrape: every line that is not a comment.
pub(super) fn samples(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count()
}

/// The per-cgroup CPU series of a scrape ("other" included): how many, how many are the
/// bench's pods (pod label `app-...`), and up to three others for an error message.
pub(super) fn cgroup_cpu_series(text: &str) -> (usize, usize, Vec<String>) {
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("nodelens_cgroup_cpu_seconds_total{"))
        .collect();
    let pods = series.iter().filter(|l| l.contains("pod=\"app-")).count();
    let others = series
        .iter()
        .filter(|l| !l.contains("pod=\"app-"))
        .take(3)
        .map(|l| (*l).to_owned())
        .collect();
    (series.len(), pods, others)
}

/// What one per-pod family holds in a scrape, over the bench's pods (pod label `app-...`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct PodFamily {
    /// Pods with at least one series in it.
    pub pods: usize,
    /// Its sample lines.
    pub lines: usize,
    /// Their bytes, newlines included.
    pub bytes: usize,
}

/// Per-pod families of a scrape: family name -> what the bench's pods have in it.
pub(super) fn per_pod_families(text: &str) -> BTreeMap<String, PodFamily> {
    let mut out: BTreeMap<&str, (std::collections::BTreeSet<&str>, usize, usize)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((family, _)) = line.split_once('{') else {
            continue;
        };
        let pod = label(line.rsplit_once(' ').map_or(line, |(s, _)| s), "pod");
        if family.starts_with("nodelens_cgroup_") && pod.starts_with("app-") {
            let entry = out.entry(family).or_default();
            entry.0.insert(pod);
            entry.1 += 1;
            entry.2 += line.len() + 1;
        }
    }
    out.into_iter()
        .map(|(family, (pods, lines, bytes))| {
            let pods = pods.len();
            (family.to_owned(), PodFamily { pods, lines, bytes })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# HELP nodelens_probe_runs_total Runs of each probe's programs.
# TYPE nodelens_probe_runs_total counter
nodelens_probe_runs_total{probe=\"sched_switch\",source=\"sampled\"} 1200
nodelens_probe_runs_total{probe=\"sched_switch\",source=\"kernel\"} 1201
nodelens_probe_run_seconds_total{probe=\"sched_switch\",source=\"sampled\"} 0.00042
nodelens_probe_run_seconds_total{probe=\"block_rq_issue\",source=\"kernel\"} 1.5e-5
nodelens_cgroup_cpu_seconds_total{namespace=\"team\",pod=\"app-1\",container=\"c\"} 3.5
nodelens_cgroup_cpu_seconds_total{namespace=\"team\",pod=\"app-2\",container=\"c\"} 1
nodelens_cgroup_cpu_seconds_total{cgroup=\"/system.slice/cron.service\"} 0.25
nodelens_cgroup_cpu_seconds_total{cgroup=\"other\"} 9

";

    #[test]
    fn counts_pods_lines_and_bytes_of_each_per_pod_family() {
        let families = per_pod_families(SCRAPE);
        let cpu = "nodelens_cgroup_cpu_seconds_total{namespace=\"team\",pod=\"app-1\",container=\"c\"} 3.5";
        assert_eq!(
            families["nodelens_cgroup_cpu_seconds_total"],
            PodFamily {
                pods: 2,
                lines: 2,
                bytes: 2 * (cpu.len() + 1) - 2,
            }
        );
        assert_eq!(families.len(), 1, "{families:?}");
    }

    #[test]
    fn reads_each_probes_runs_and_seconds_by_source() {
        let stats = probe_stats(SCRAPE);
        let key = |p: &str, s: &str| (p.to_owned(), s.to_owned());
        assert_eq!(stats[&key("sched_switch", "sampled")], (1200.0, 0.00042));
        assert_eq!(stats[&key("sched_switch", "kernel")], (1201.0, 0.0));
        assert_eq!(stats[&key("block_rq_issue", "kernel")], (0.0, 1.5e-5));
        assert_eq!(stats.len(), 3);
    }

    #[test]
    fn reads_samples_types_and_labels() {
        let lines: Vec<(&str, f64)> = sample_lines(SCRAPE).collect();
        assert_eq!(lines.len(), 8);
        assert_eq!(
            lines[4],
            (
                "nodelens_cgroup_cpu_seconds_total{namespace=\"team\",pod=\"app-1\",container=\"c\"}",
                3.5
            )
        );
        assert_eq!(types(SCRAPE)["nodelens_probe_runs_total"], "counter");
        assert_eq!(label(lines[4].0, "pod"), "app-1");
        assert_eq!(label(lines[4].0, "container"), "c");
        assert_eq!(label(lines[4].0, "cgroup"), "");
        assert_eq!(label("up 1", "job"), "");
    }

    #[test]
    fn counts_the_pods_of_each_per_pod_family_once() {
        let text = format!(
            "{SCRAPE}nodelens_cgroup_blocked_seconds_total{{namespace=\"team\",pod=\"app-1\",container=\"c\",kind=\"io\"}} 1\n\
             nodelens_cgroup_blocked_seconds_total{{namespace=\"team\",pod=\"app-1\",container=\"c\",kind=\"other\"}} 1\n"
        );
        let families = per_pod_families(&text);
        assert_eq!(families["nodelens_cgroup_cpu_seconds_total"].pods, 2);
        let blocked = families["nodelens_cgroup_blocked_seconds_total"];
        assert_eq!((blocked.pods, blocked.lines), (1, 2));
        assert_eq!(families.len(), 2, "the probes' families are not per pod");
    }

    #[test]
    fn counts_samples_and_the_pods_among_the_cgroup_series() {
        assert_eq!(samples(SCRAPE), 8);
        let (all, pods, others) = cgroup_cpu_series(SCRAPE);
        assert_eq!((all, pods), (4, 2));
        assert_eq!(others.len(), 2);
        assert!(others[0].contains("cron.service"));
    }
}
