//! Reading nodelens's text scrapes: the probes' own cost counters, and how many samples
//! and per-pod series a scrape holds.
//!
//! Line-oriented on purpose: the bench reads two counters and counts lines of a scrape it
//! just timed, in the Prometheus text format nodelens writes (one sample per line, labels
//! never containing `} `). The agent's tests check the exposition itself with a real parser
//! (nom-openmetrics) and promtool; a parser here would check nothing more.
use std::collections::BTreeMap;

/// (probe, source) -> (runs, run seconds), from a nodelens scrape.
pub(super) fn probe_stats(text: &str) -> BTreeMap<(String, String), (f64, f64)> {
    let mut out: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let (rest, is_runs) = if let Some(r) = line.strip_prefix("nodelens_probe_runs_total{") {
            (r, true)
        } else if let Some(r) = line.strip_prefix("nodelens_probe_run_seconds_total{") {
            (r, false)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        let entry = out.entry((label("probe"), label("source"))).or_default();
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
    fn reads_each_probes_runs_and_seconds_by_source() {
        let stats = probe_stats(SCRAPE);
        let key = |p: &str, s: &str| (p.to_owned(), s.to_owned());
        assert_eq!(stats[&key("sched_switch", "sampled")], (1200.0, 0.00042));
        assert_eq!(stats[&key("sched_switch", "kernel")], (1201.0, 0.0));
        assert_eq!(stats[&key("block_rq_issue", "kernel")], (0.0, 1.5e-5));
        assert_eq!(stats.len(), 3);
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
