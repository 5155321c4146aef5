//! The manual against the program, in both directions:
//! - docs/metrics.md: every family a running agent serves, with every collector and every
//!   optional family on, is documented with its type and labels; every documented family
//!   is one the agent serves (or, for the few that appear only after an event, one its
//!   code names);
//! - docs/configuration.md: every flag of `nodelens run` and `nodelens preflight` (from
//!   their `--help`) is documented with its environment variable and default, and every
//!   file key the config parser knows is documented; nothing documented is unknown to
//!   the parser.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use common::{
    Agent,
    kubelet::{NAMESPACE, POD, WorkloadPod},
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Table rows of a markdown file (or of one of its `## ` sections): cells, trimmed.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// What is between backticks in a cell: `a`, `b` → [a, b]; "—" → [].
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------
// metrics.md

/// A documented family: its type and labels.
#[derive(Debug)]
struct Documented {
    kind: String,
    labels: BTreeSet<String>,
}

/// Whether a scrape's family (its TYPE line's name) is a documented name: a counter's TYPE
/// line may name it with or without `_total`.
fn same_family(documented: &str, kind: &str, family: &str) -> bool {
    let bare = if kind == "counter" {
        documented.strip_suffix("_total").unwrap_or(documented)
    } else {
        documented
    };
    let plain = |n: &str| n == family || (n.contains('<') && matches_template(n, family));
    plain(documented) || plain(bare)
}

/// A documented name with `<Field>` placeholders matches these names.
fn matches_template(template: &str, name: &str) -> bool {
    let mut rest = name;
    let mut parts = template.split('<');
    let first = parts.next().unwrap_or("");
    let Some(r) = rest.strip_prefix(first) else {
        return false;
    };
    rest = r;
    for part in parts {
        let (_, literal) = part.split_once('>').unwrap_or(("", part));
        // A placeholder is one or more characters, then the literal.
        if literal.is_empty() {
            return !rest.is_empty();
        }
        match rest[1.min(rest.len())..].find(literal) {
            Some(at) => rest = &rest[1 + at + literal.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

fn documented_metrics() -> BTreeMap<String, Documented> {
    let text = common::read(repo().join("docs/metrics.md"));
    let mut out = BTreeMap::new();
    for row in rows(&text) {
        if row.len() < 3 {
            continue;
        }
        let Some(name) = ticked(&row[0]).into_iter().next() else {
            continue;
        };
        let kind = row[1].clone();
        if !["counter", "gauge", "histogram", "info"].contains(&kind.as_str()) {
            continue; // another table (collectors, label values)
        }
        let labels = ticked(&row[2]).into_iter().collect();
        assert!(
            out.insert(name.clone(), Documented { kind, labels })
                .is_none(),
            "docs/metrics.md documents {name} twice"
        );
    }
    assert!(out.len() > 40, "docs/metrics.md: {} families", out.len());
    out
}

/// A sample line's metric name and label names. Label values are quoted and may hold
/// spaces, commas, braces and escaped quotes.
fn split_series(line: &str) -> (&str, Vec<String>) {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..end];
    let mut labels = Vec::new();
    if line[end..].starts_with('{') {
        let mut rest = &line[end + 1..];
        while let Some((label, after)) = rest.split_once("=\"") {
            labels.push(label.trim_start_matches(',').to_owned());
            // The value ends at the first quote not escaped by a backslash.
            let mut chars = after.char_indices();
            let mut close = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        close = i;
                        break;
                    }
                    _ => {}
                }
            }
            rest = &after[(close + 1).min(after.len())..];
            if rest.starts_with('}') {
                break;
            }
        }
    }
    (name, labels)
}

/// A scrape's TYPE and label names per family (histogram labels without `le`, summed over
/// `_bucket`, `_sum`, `_count`).
fn served(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                types.insert(name.to_owned(), kind.to_owned());
            }
        }
    }
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = types
        .iter()
        .map(|(n, k)| (n.clone(), (k.clone(), BTreeSet::new())))
        .collect();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = split_series(line);
        let family = [name, name.trim_end_matches("_total")]
            .into_iter()
            .chain(
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .filter_map(|s| name.strip_suffix(s)),
            )
            .find(|f| types.contains_key(*f))
            .unwrap_or_else(|| panic!("{name}: no TYPE line"));
        let entry = out.get_mut(family).unwrap();
        entry
            .1
            .extend(labels.into_iter().filter(|label| label != "le"));
    }
    out
}

#[test]
fn every_served_family_is_documented_with_its_type_and_labels_and_nothing_else_is() {
    common::mount_tracefs();
    // Every optional family on: every per-cgroup series, the kernel's BPF statistics, and
    // push (to a port nothing listens on: its own families appear all the same). A
    // kubelet-shaped pod does every kind of work, so that every per-pod family has its pod
    // labels.
    let pod = WorkloadPod::new();
    let port = common::free_port();
    let receiver = format!("http://127.0.0.1:{port}/api/v1/write");
    let mut args = vec![
        "--cgroup-series".to_owned(),
        "all".to_owned(),
        "--kernel-bpf-stats".to_owned(),
        "--remote-write-url".to_owned(),
        receiver,
        "--remote-write-interval".to_owned(),
        "1s".to_owned(),
    ];
    args.extend(pod.agent_args());
    let agent = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    pod.work();
    // Reclaim in a cgroup that is no pod's too, so that the per-cgroup reclaim family has
    // its `cgroup` label; the cgroup stays until the end, so that the agent names it.
    let _reclaimed = common::reclaim_in_a_limited_cgroup("docs");
    let with_pod = |text: &str, family: &str| {
        text.lines().any(|l| {
            l.starts_with(&format!("{family}{{"))
                && l.contains(&format!("namespace=\"{NAMESPACE}\""))
                && l.contains(&format!("pod=\"{POD}\""))
        })
    };
    let served = {
        let mut text = String::new();
        common::wait_for(
            "a push attempted and every per-pod family of the pod",
            std::time::Duration::from_secs(30),
            || {
                text = agent.scrape();
                text.contains("nodelens_remote_write_rounds_total")
                    && [
                        "nodelens_cgroup_reclaim_stall_seconds_total",
                        "nodelens_cgroup_cpu_cfs_throttled_periods_total",
                    ]
                    .iter()
                    .all(|f| text.contains(&format!("{f}{{cgroup=\"{}\"", _reclaimed.name())))
                    && [
                        "nodelens_cgroup_cpu_seconds_total",
                        "nodelens_cgroup_runqueue_wait_seconds_total",
                        "nodelens_cgroup_context_switches_total",
                        "nodelens_cgroup_reclaim_stall_seconds_total",
                        "nodelens_cgroup_disk_ios_total",
                        "nodelens_oom_kills_total",
                        "nodelens_cgroup_pressure_memory_waiting_seconds_total",
                        "nodelens_cgroup_blocked_seconds_total",
                        "nodelens_cgroup_cpu_cfs_throttled_seconds_total",
                    ]
                    .iter()
                    .all(|f| with_pod(&text, f))
            },
        );
        served(&text)
    };
    let docs = documented_metrics();

    let mut problems = Vec::new();
    for (family, (kind, labels)) in &served {
        let Some((name, doc)) = docs
            .iter()
            .find(|(name, doc)| same_family(name, &doc.kind, family))
        else {
            problems.push(format!(
                "{family} ({kind}) is served but not in docs/metrics.md"
            ));
            continue;
        };
        let doc_kind = match doc.kind.as_str() {
            // The text format has no info type: an info metric is a gauge of value 1.
            "info" => "gauge",
            k => k,
        };
        // node_exporter's vmstat counters are untyped, as node_exporter serves them.
        if kind != doc_kind && !(kind == "untyped" && doc_kind == "gauge") {
            problems.push(format!(
                "{name}: served as {kind}, documented as {}",
                doc.kind
            ));
        }
        if *labels != doc.labels {
            problems.push(format!(
                "{name}: served with labels {labels:?}, documented {:?}",
                doc.labels
            ));
        }
    }
    // The other way: every documented family is served here, or (appearing only after
    // an event this test does not cause) named in the agent's code.
    let code = source_text(&repo().join("agent/src"));
    for (name, doc) in &docs {
        let is_served = served.keys().any(|f| same_family(name, &doc.kind, f));
        let bare = name.strip_suffix("_total").unwrap_or(name);
        let named = code.contains(&format!("\"{name}\"")) || code.contains(&format!("\"{bare}\""));
        let after_an_event = ONLY_AFTER_AN_EVENT.contains(&name.as_str()) && named;
        if !(is_served || after_an_event) {
            problems.push(format!(
                "{name} is documented but the agent neither serves nor names it"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.md:\n{}",
        problems.join("\n")
    );
}

/// Families that appear only after an event this test does not cause; each must still be
/// named, exactly, in the agent's code.
const ONLY_AFTER_AN_EVENT: &[&str] = &[
    // a system call the allowlist refused
    "nodelens_seccomp_denied_total",
];

fn source_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.push_str(&source_text(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&common::read(&path));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// configuration.md

/// A flag as `--help` prints it: its environment variable and default.
#[derive(Debug, PartialEq)]
struct Flag {
    env: Option<String>,
    default: Option<String>,
}

/// The flags of `nodelens <sub> --help`.
fn help_flags(sub: &str) -> BTreeMap<String, Flag> {
    let out = Command::new(common::BIN)
        .args([sub, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Each option starts on a line "  -x, --name <V>" or "      --name"; its description
    // follows until the next.
    let mut flags = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut finish = |current: Option<(String, String)>| {
        if let Some((name, desc)) = current {
            let bracket = |key: &str| {
                desc.split(&format!("[{key}: "))
                    .nth(1)
                    .and_then(|r| r.split(']').next())
                    .map(|v| v.trim_end_matches('=').to_owned())
            };
            flags.insert(
                name,
                Flag {
                    env: bracket("env"),
                    default: bracket("default"),
                },
            );
        }
    };
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('-') && line.starts_with("  ") {
            finish(current.take());
            let name = t
                .split([',', ' ', '='])
                .find(|w| w.starts_with("--"))
                .map(str::to_owned);
            current = name.map(|n| (n, t.to_owned()));
        } else if let Some((_, desc)) = &mut current {
            desc.push(' ');
            desc.push_str(t);
        }
    }
    finish(current);
    flags.remove("--help");
    flags.remove("--version");
    assert!(flags.len() > 20, "nodelens {sub} --help: {flags:?}");
    flags
}

/// A documented flag's environment variable, file key and default.
type FlagRow = (Option<String>, Option<String>, Option<String>);

/// The table of one `## nodelens <sub>` section: flag → (env, file key, default).
fn documented_flags(sub: &str) -> BTreeMap<String, FlagRow> {
    let text = common::read(repo().join("docs/configuration.md"));
    let heading = format!("## nodelens {sub}\n");
    let section = text
        .split_once(&heading)
        .unwrap_or_else(|| panic!("docs/configuration.md has no {heading:?}"))
        .1;
    let section = section.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for row in rows(section) {
        assert!(
            row.len() >= 5,
            "docs/configuration.md, {sub}: a short row {row:?}"
        );
        let one = |cell: &str| ticked(cell).into_iter().next();
        let flag = one(&row[0]).unwrap();
        assert!(
            out.insert(flag.clone(), (one(&row[1]), one(&row[2]), one(&row[3])))
                .is_none(),
            "{flag} twice in nodelens {sub}"
        );
    }
    out
}

#[test]
fn every_flag_is_documented_with_its_variable_and_default_and_nothing_else_is() {
    let mut problems = Vec::new();
    for sub in ["run", "preflight"] {
        let help = help_flags(sub);
        let docs = documented_flags(sub);
        for (flag, h) in &help {
            match docs.get(flag) {
                None => problems.push(format!("nodelens {sub} {flag} is not documented")),
                Some((env, _, default)) => {
                    if *env != h.env {
                        problems.push(format!(
                            "nodelens {sub} {flag}: variable {:?} in --help, {env:?} documented",
                            h.env
                        ));
                    }
                    if *default != h.default {
                        problems.push(format!(
                            "nodelens {sub} {flag}: default {:?} in --help, {default:?} documented",
                            h.default
                        ));
                    }
                }
            }
        }
        for flag in docs.keys() {
            if !help.contains_key(flag) {
                problems.push(format!(
                    "nodelens {sub} {flag} is documented but not a flag"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md:\n{}",
        problems.join("\n")
    );
}

const MARKER: &str = "zz_not_a_key";

/// What the config parser says of a YAML file.
fn parse_error(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodelens.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{yaml}: a bad file exits 2");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The key `path` then `leaf`, dotted as the parser's errors name it.
fn dotted(path: &[&str], leaf: &str) -> String {
    path.iter()
        .copied()
        .chain([leaf])
        .collect::<Vec<_>>()
        .join(".")
}

/// The keys the parser lists as known at `path` (a section, or the top level): it says
/// "unknown key <key> (known in <section>: a, b, c; ...)".
fn known_keys(path: &[&str]) -> Vec<String> {
    let err = parse_error(&nested(path, &format!("{MARKER}: 1")));
    let list = err
        .split(&format!("unknown key {} (known in ", dotted(path, MARKER)))
        .nth(1)
        .and_then(|rest| rest.split_once(": "))
        .and_then(|(_, rest)| rest.split(';').next())
        .unwrap_or_else(|| panic!("{path:?}: {err}"));
    let keys: Vec<String> = list.split(", ").map(str::to_owned).collect();
    assert!(keys.iter().all(|k| !k.is_empty()), "{path:?}: {err}");
    keys
}

/// YAML with `leaf` under the sections of `path`, then an unknown top-level key, so that
/// the file is bad even where the rest is good (the agent must not start).
fn nested(path: &[&str], leaf: &str) -> String {
    let mut yaml = String::new();
    for (depth, key) in path.iter().enumerate() {
        yaml.push_str(&format!("{}{key}:\n", "  ".repeat(depth)));
    }
    yaml.push_str(&format!("{}{leaf}\n", "  ".repeat(path.len())));
    yaml.push_str("zz_end_of_file: 1\n");
    yaml
}

/// Every file key the parser knows, dotted, found by asking it.
fn parser_keys(path: &mut Vec<String>, out: &mut BTreeSet<String>) {
    let refs: Vec<&str> = path.iter().map(String::as_str).collect();
    for key in known_keys(&refs) {
        path.push(key.clone());
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let err = parse_error(&nested(&refs, &format!("{MARKER}: 1")));
        if err.contains(&format!("unknown key {} (", dotted(&refs, MARKER))) {
            parser_keys(path, out); // a section
        } else {
            out.insert(path.join("."));
        }
        path.pop();
    }
}

#[test]
fn every_file_key_is_documented_and_every_documented_key_is_known() {
    let mut known = BTreeSet::new();
    parser_keys(&mut Vec::new(), &mut known);
    assert!(known.len() > 20, "{known:?}");
    let documented: BTreeSet<String> = documented_flags("run")
        .into_values()
        .chain(documented_flags("preflight").into_values())
        .filter_map(|(_, key, _)| key)
        .collect();
    let undocumented: Vec<_> = known.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "file keys not in docs/configuration.md: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "documented file keys the parser does not know: {unknown:?}"
    );
}

/// The collector names the program knows, as its error for an unknown one lists them.
fn known_collectors() -> BTreeSet<String> {
    let out = Command::new(common::BIN)
        .args(["run", "--collectors-enabled", "zz_not_a_collector"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown collector exits 2");
    let err = String::from_utf8_lossy(&out.stderr);
    let list = err
        .split("(known: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no list of known collectors in {err:?}"));
    list.split(", ").map(|n| n.trim().to_owned()).collect()
}

#[test]
fn every_collector_is_documented_and_every_documented_one_is_known() {
    let known = known_collectors();
    assert!(
        known.contains("cpu") && known.contains("sched"),
        "{known:?}"
    );
    let text = common::read(repo().join("docs/configuration.md"));
    let table = text
        .split("## Collectors")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/configuration.md has a Collectors section");
    let documented: BTreeSet<String> = rows(table).iter().flat_map(|row| ticked(&row[0])).collect();
    assert!(!documented.is_empty(), "no collector rows in {table}");
    let undocumented: Vec<_> = known.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "collectors not in docs/configuration.md's Collectors table: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "documented collectors the program does not know: {unknown:?}"
    );
}
