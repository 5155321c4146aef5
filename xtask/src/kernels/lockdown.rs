//! The serving agent's lockdown in a guest (`--seccomp kill`): its `/proc/<pid>/status`,
//! the context switches it counted between two scrapes, and its exit after SIGTERM.
use std::fmt::Write as _;

/// What the serving agent showed in a guest: its lockdown and that it kept counting.
pub(super) struct Lockdown {
    pub(super) kernel: (u32, u32),
    pub(super) seccomp: Option<String>,
    pub(super) no_new_privs: Option<String>,
    pub(super) cap_eff: Option<String>,
    pub(super) switches: (f64, f64),
    pub(super) info: Option<String>,
    pub(super) exit: Option<i32>,
    pub(super) log: String,
}

/// CAP_BPF (bit 39), which the agent keeps before 5.19 when unprivileged BPF is disabled.
pub(super) const CAP_BPF_ONLY: &str = "0000008000000000";

impl Lockdown {
    pub(super) fn parse(text: &str, release: &str) -> Lockdown {
        let mut version = release
            .split(['.', '-'])
            .filter_map(|v| v.parse::<u32>().ok());
        let kernel = (version.next().unwrap_or(0), version.next().unwrap_or(0));
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let sum = |prefix: &str| -> f64 {
            text.lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .filter(|l| l.starts_with("nodelens_cpu_context_switches_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Lockdown {
            kernel,
            seccomp: field("Seccomp:"),
            no_new_privs: field("NoNewPrivs:"),
            cap_eff: field("CapEff:"),
            switches: (sum("first "), sum("second ")),
            info: text
                .lines()
                .find_map(|l| l.strip_prefix("second nodelens_security_info"))
                .map(str::to_owned),
            exit: field("exit ").and_then(|v| v.parse().ok()),
            log: text
                .lines()
                .filter_map(|l| l.strip_prefix("log "))
                .collect::<Vec<_>>()
                .join(" / "),
        }
    }

    pub(super) fn problems(&self, column: &str) -> Vec<String> {
        let mut out = Vec::new();
        let caps_ok = match self.cap_eff.as_deref() {
            Some("0000000000000000") => true,
            Some(CAP_BPF_ONLY) => self.kernel < (5, 19),
            _ => false,
        };
        if self.seccomp.as_deref() != Some("2")
            || self.no_new_privs.as_deref() != Some("1")
            || !caps_ok
        {
            out.push(format!(
                "{column}: serving agent not locked down: Seccomp {:?}, NoNewPrivs {:?}, CapEff {:?} (log: {})",
                self.seccomp, self.no_new_privs, self.cap_eff, self.log
            ));
        }
        if !self
            .info
            .as_deref()
            .is_some_and(|i| i.contains("seccomp=\"kill\""))
        {
            out.push(format!(
                "{column}: no nodelens_security_info with seccomp=\"kill\" in the second scrape"
            ));
        }
        if self.switches.1 <= self.switches.0 {
            out.push(format!(
                "{column}: context switches did not grow between scrapes under seccomp ({} then {})",
                self.switches.0, self.switches.1
            ));
        }
        if self.exit != Some(0) {
            out.push(format!(
                "{column}: the serving agent exited {:?} after SIGTERM (log: {})",
                self.exit, self.log
            ));
        }
        out
    }
}

pub(super) fn lockdown_table(lockdowns: &[(String, Lockdown)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "The serving agent in each guest, `--seccomp kill`: its `/proc/<pid>/status` once ready, context switches it counted between two scrapes 2 s apart, and its exit code after SIGTERM:"
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| kernel | Seccomp | NoNewPrivs | CapEff | switches counted | exit |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---|");
    for (column, l) in lockdowns {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let caps = match l.cap_eff.as_deref() {
            Some(CAP_BPF_ONLY) => format!("{CAP_BPF_ONLY} (CAP_BPF kept)"),
            other => other.unwrap_or("-").to_owned(),
        };
        let _ = writeln!(
            s,
            "| {column} | {} | {} | {caps} | {} | {} |",
            opt(&l.seccomp),
            opt(&l.no_new_privs),
            l.switches.1 - l.switches.0,
            l.exit.map_or("-".into(), |e| e.to_string())
        );
    }
    let _ = writeln!(s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a guest's serving-agent check prints (see the matrix's /init).
    const LOCKED: &str = "\
Seccomp:\t2
NoNewPrivs:\t1
CapEff:\t0000000000000000
first nodelens_cpu_context_switches_total{kind=\"voluntary\"} 100
first nodelens_cpu_context_switches_total{kind=\"involuntary\"} 20
second nodelens_cpu_context_switches_total{kind=\"voluntary\"} 150
second nodelens_cpu_context_switches_total{kind=\"involuntary\"} 25
second nodelens_security_info{seccomp=\"kill\",capabilities=\"dropped\"} 1
exit 0
log agent ready
log stopping
";

    #[test]
    fn a_locked_down_agent_has_no_problems() {
        let l = Lockdown::parse(LOCKED, "6.12.48-cloud-amd64");
        assert_eq!(l.kernel, (6, 12));
        assert_eq!(l.seccomp.as_deref(), Some("2"));
        assert_eq!(l.switches, (120.0, 175.0));
        assert_eq!(l.exit, Some(0));
        assert_eq!(l.log, "agent ready / stopping");
        assert!(l.problems("6.12").is_empty(), "{:?}", l.problems("6.12"));
    }

    #[test]
    fn each_lapse_is_named() {
        let unlocked = LOCKED
            .replace("Seccomp:\t2", "Seccomp:\t0")
            .replace("exit 0", "exit 143")
            .replace("seccomp=\"kill\"", "seccomp=\"off\"")
            .replace("} 150", "} 100")
            .replace("} 25", "} 20");
        let problems = Lockdown::parse(&unlocked, "6.1.0-40-cloud-amd64").problems("6.1");
        let all = problems.join("\n");
        for expected in [
            "not locked down",
            "seccomp=\"kill\"",
            "did not grow",
            "exited Some(143)",
        ] {
            assert!(all.contains(expected), "{expected:?} missing from {all}");
        }
        assert_eq!(problems.len(), 4);
    }

    #[test]
    fn cap_bpf_kept_is_right_only_before_5_19() {
        let kept = LOCKED.replace(
            "CapEff:\t0000000000000000",
            &format!("CapEff:\t{CAP_BPF_ONLY}"),
        );
        assert!(
            Lockdown::parse(&kept, "5.10.0-35-cloud-amd64")
                .problems("5.10")
                .is_empty()
        );
        assert_eq!(
            Lockdown::parse(&kept, "6.1.0-40-cloud-amd64")
                .problems("6.1")
                .len(),
            1
        );
    }
}
