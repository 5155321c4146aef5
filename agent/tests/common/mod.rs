//! Helpers shared by the integration tests: start the real binary, scrape it, parse the
//! text format. These tests load eBPF into the running kernel, so they need root; without
//! it they fail loudly rather than skip.
#![allow(dead_code)] // each test binary uses a different subset

pub mod kubelet;

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_nodelens");

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc_geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load eBPF programs and must run as root (sudo -E cargo xtask test)"
    );
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running agent, killed on drop if the test did not stop it.
pub struct Agent {
    pub child: Child,
    pub addr: String,
    /// Its stderr, read as it comes: a pipe nobody reads fills up (64 KiB, a few hundred
    /// debug lines) and then blocks every thread of the agent that logs.
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// Reads a child's stderr to its end in a thread.
fn drain(child: &mut Child) -> Option<std::thread::JoinHandle<String>> {
    let mut pipe = child.stderr.take()?;
    Some(std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }))
}

impl Agent {
    pub fn start(extra: &[&str]) -> Agent {
        let agent = Agent::spawn(extra);
        agent.wait_ready();
        agent
    }

    /// Starts the agent without waiting for it (for ports that do not speak plain HTTP).
    pub fn spawn(extra: &[&str]) -> Agent {
        Agent::spawn_in(&[], extra)
    }

    /// Starts the agent through `prefix` (for example `unshare ... sh -c '...; exec "$0"
    /// "$@"'`), which receives the binary and its arguments.
    pub fn spawn_in(prefix: &[&str], extra: &[&str]) -> Agent {
        require_root();
        let addr = format!("127.0.0.1:{}", free_port());
        // Map upkeep every second, so tests see fill levels and evictions quickly. The
        // syscall allowlist in kill mode, so that every test also proves the allowlist
        // complete for what it does (a missing entry kills the agent).
        let seccomp: &[&str] = if extra.contains(&"--seccomp") {
            &[]
        } else {
            &["--seccomp", "kill"]
        };
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = command
            .args(["--listen-address", &addr, "--log-level", "debug"])
            .args(["--map-upkeep-interval", "1s"])
            // Files read per cgroup as often as upkeep runs, so that tests wait seconds.
            .args(["--cgroup-pressure-refresh-interval", "1s"])
            .args(["--cgroup-throttling-refresh-interval", "1s"])
            .args(seccomp)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nodelens");
        let stderr = drain(&mut child);
        Agent {
            child,
            addr,
            stderr,
        }
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _, _)) = http(&self.addr, "GET", "/readyz", &[]) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nodelens on {} not ready within 20 s", self.addr);
    }

    pub fn scrape(&self) -> String {
        let (status, _, body) = http(&self.addr, "GET", "/metrics", &[]).expect("scrape");
        assert_eq!(status, 200);
        String::from_utf8(body).expect("utf-8 metrics")
    }

    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.scrape())
    }

    /// Scrapes until `ok` holds for a scrape, or panics after `limit` with `what`.
    pub fn metrics_until(
        &self,
        limit: Duration,
        what: &str,
        mut ok: impl FnMut(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.metrics();
            if ok(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, then wait up to `limit` for the exit status; returns (exit code, stderr).
    pub fn terminate(mut self, limit: Duration) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.code(), self.logs());
            }
            assert!(
                started.elapsed() < limit,
                "nodelens did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Agent {
    /// Everything the agent wrote to stderr, once it has exited.
    fn logs(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        // Killed by the seccomp filter (kill mode): say so, or the test's failure would
        // only show as a refused connection.
        if let Ok(Some(status)) = self.child.try_wait()
            && status.signal() == Some(libc_sigsys())
        {
            let err = self.logs();
            let denied = std::process::Command::new("dmesg").output().ok().map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .rfind(|l| l.contains("type=1326") || l.contains("SECCOMP"))
                    .unwrap_or("")
                    .to_owned()
            });
            eprintln!(
                "nodelens was killed by its seccomp filter (a system call missing from the allowlist): {denied:?}\n{err}"
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGSYS, the signal seccomp's kill action reports.
pub fn libc_sigsys() -> i32 {
    31
}

/// Status, headers (names lower-cased) and body.
pub type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.1 request with ureq, the body as sent (no transparent decompression), any
/// status accepted.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(()).map_err(std::io::Error::other)?;
    let mut response = agent.run(request).map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .map_err(std::io::Error::other)?;
    Ok((status, headers, body))
}

/// Samples by full series text (`name{labels}`, labels in exposition order), plus the TYPE
/// of each family, from a scrape parsed by nom-openmetrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: BTreeMap<String, f64>,
    pub types: BTreeMap<String, String>,
    /// Label names by sample name.
    pub labels: BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// A label value as the text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `name{b="2",a="1"}` as `name{a="1",b="2"}`: labels sorted, values kept as written.
fn canonical(series: &str) -> String {
    let Some((name, rest)) = series.split_once('{') else {
        return series.to_owned();
    };
    let body = rest.strip_suffix('}').unwrap_or(rest);
    let mut labels = Vec::new();
    let (mut current, mut quoted, mut escaped) = (String::new(), false, false);
    for c in body.chars() {
        match c {
            ',' if !quoted => labels.push(std::mem::take(&mut current)),
            _ => {
                if quoted && !escaped && c == '"' {
                    quoted = false;
                } else if !quoted && c == '"' {
                    quoted = true;
                }
                escaped = quoted && !escaped && c == '\\';
                current.push(c);
            }
        }
    }
    if !current.is_empty() {
        labels.push(current);
    }
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

impl Metrics {
    /// Parses the Prometheus text format; panics with the parser's complaint if it is not.
    pub fn parse(text: &str) -> Metrics {
        let (_, families) = nom_openmetrics::parser::prometheus(text)
            .unwrap_or_else(|e| panic!("not the Prometheus text format: {e}"));
        let mut m = Metrics::default();
        for family in families {
            for d in &family.descriptors {
                if let nom_openmetrics::MetricDescriptor::Type { metric, r#type } = d {
                    m.types
                        .insert((*metric).to_owned(), r#type.to_string().to_lowercase());
                }
            }
            for sample in &family.samples {
                m.labels
                    .entry(sample.name().to_owned())
                    .or_default()
                    .extend(sample.labels().iter().map(|l| l.name.to_owned()));
                let mut labels: Vec<String> = sample
                    .labels()
                    .iter()
                    .map(|l| format!("{}=\"{}\"", l.name, escape(&l.value)))
                    .collect();
                // Label order carries no meaning: series are keyed with sorted labels.
                labels.sort();
                let series = if labels.is_empty() {
                    sample.name().to_owned()
                } else {
                    format!("{}{{{}}}", sample.name(), labels.join(","))
                };
                m.samples.insert(series, sample.number());
            }
        }
        m
    }

    /// One series' value; the labels of `series` may come in any order.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(&canonical(series)).copied()
    }

    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("series {series} missing"))
    }

    /// Every series of a family: `name` or `name{...}`.
    pub fn family(&self, name: &str) -> Vec<(&str, f64)> {
        self.samples
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }

    /// Family names (the part before `{`), without histogram/summary suffixes folded.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.samples
            .keys()
            .map(|k| k.split('{').next().unwrap_or(k).to_owned())
            .collect()
    }

    /// Label names used by a family's series.
    pub fn label_names(&self, name: &str) -> std::collections::BTreeSet<String> {
        self.labels.get(name).cloned().unwrap_or_default()
    }
}

/// Reads a whole /proc file.
pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("read {}: {e}", path.as_ref().display()))
}

/// `ctxt` from /proc/stat.
pub fn proc_ctxt() -> u64 {
    read("/proc/stat")
        .lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .and_then(|v| v.trim().parse().ok())
        .expect("ctxt in /proc/stat")
}

/// Mounts tracefs for tests of classic tracepoints; returns whether this call mounted it.
/// One test at a time: the tests of a binary run in parallel, and two that both found it
/// unmounted raced to mount it, one failing.
pub fn mount_tracefs() -> bool {
    static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MOUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let events = Path::new("/sys/kernel/tracing/events");
    if events.is_dir() {
        return false;
    }
    let ok = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    // Mounted meanwhile from outside this process is as good.
    assert!(
        ok || events.is_dir(),
        "cannot mount tracefs at /sys/kernel/tracing"
    );
    ok
}

pub fn umount_tracefs() {
    let _ = Command::new("umount").arg("/sys/kernel/tracing").status();
}

/// Runs `promtool check metrics` on `text`; returns its complaints, minus the camelCase
/// lint on node_memory_* names, which node_exporter compatibility requires.
pub fn promtool_problems(text: &str) -> Vec<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup --test-tools installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    all.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(l.starts_with("node_memory_") && l.contains("camelCase")))
        .map(str::to_owned)
        .collect()
}

/// The cgroup2 mount: /sys/fs/cgroup on v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
pub fn cgroup2_root() -> std::path::PathBuf {
    read("/proc/self/mountinfo")
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            (post.split(' ').next()? == "cgroup2").then(|| std::path::PathBuf::from(mount_point))
        })
        .expect("a cgroup2 mount")
}

/// A loop device over a sparse file, detached on drop.
pub struct LoopDevice {
    pub dev: String,
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    pub fn new(size_mb: u64) -> LoopDevice {
        require_root();
        // On the root filesystem (ext4), which supports punching holes, so discards work.
        let dir = tempfile::Builder::new()
            .prefix("nodelens-disk-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let file = dir.path().join("backing.img");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(size_mb << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(&file)
            .output()
            .expect("losetup (util-linux)");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8(out.stdout).unwrap();
        let dev = path.trim().trim_start_matches("/dev/").to_owned();
        LoopDevice { dev, _dir: dir }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/dev").join(&self.dev)
    }

    /// /sys/block/<dev>/stat: (reads, writes, discards, flushes) completed, and sectors
    /// written.
    pub fn stat(&self) -> (f64, f64, f64, f64, f64) {
        let text = read(format!("/sys/block/{}/stat", self.dev));
        let f: Vec<f64> = text
            .split_ascii_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        (f[0], f[4], f[11], f.get(15).copied().unwrap_or(0.0), f[6])
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(self.path()).status();
    }
}

/// `blocks` 4 KiB reads of the agent's own binary with O_DIRECT: real disk I/O on the root
/// device, so the block families (node and per cgroup) get their series.
pub fn direct_reads(blocks: u32) {
    run(
        "dd",
        &[
            &format!("if={BIN}"),
            "of=/dev/null",
            "bs=4k",
            &format!("count={blocks}"),
            "iflag=direct",
            "status=none",
        ],
    );
}

/// Runs a command and fails the test if it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

/// Runs `cmd`, which must succeed, and returns its standard output.
pub fn output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Percent-encodes a query parameter (PromQL in a URL).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `f` every 250 ms until it holds; fails the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    poll_until(what, limit, || {
        f().then_some(()).ok_or_else(|| "not yet".to_owned())
    });
}

/// Polls `f` every 250 ms until it returns `Ok`, for at most `limit`; the panic says what
/// it returned last, so that a failure tells what did not match.
pub fn poll_until(what: &str, limit: Duration, mut f: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if start.elapsed() >= limit => {
                panic!("timed out after {limit:?} waiting for {what}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Starts Debian's Prometheus with `<dir>/prometheus.yml`, its storage in `<dir>/data`,
/// listening on `addr`, plus `extra` flags (the remote-write receiver, a web config).
pub fn prometheus(dir: &Path, addr: &str, extra: &[&str]) -> Child {
    Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (cargo xtask setup --test-tools installs it)")
}

/// `/proc/<pid>/schedstat`: time on a CPU and waiting for one, and how many times the task
/// got a CPU.
#[derive(Debug, Clone, Copy)]
pub struct Schedstat {
    /// Time on a CPU.
    pub run_seconds: f64,
    /// Time waiting on a run queue for a CPU.
    pub wait_seconds: f64,
    pub switches_in: f64,
}

pub fn schedstat(pid: i32) -> Schedstat {
    let text = read(format!("/proc/{pid}/schedstat"));
    let f: Vec<f64> = text
        .split_ascii_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(f.len() >= 3, "schedstat of {pid}: {text:?}");
    Schedstat {
        run_seconds: f[0] / 1e9,
        wait_seconds: f[1] / 1e9,
        switches_in: f[2],
    }
}

/// The calling thread runs on one CPU until this is dropped.
pub struct ThreadPin {
    before: libc::cpu_set_t,
}

impl ThreadPin {
    pub fn to(cpu: u32) -> ThreadPin {
        // SAFETY: cpu_set_t is plain data; the calls only read and write it.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            assert_eq!(libc::sched_getaffinity(0, size, &mut before), 0);
            let mut only: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut only);
            assert_eq!(
                libc::sched_setaffinity(0, size, &only),
                0,
                "pin to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
            ThreadPin { before }
        }
    }
}

impl Drop for ThreadPin {
    fn drop(&mut self) {
        // SAFETY: restores the mask read in `to`.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before);
        }
    }
}

/// A child process born in a cgroup (nodelens's own `BornInside`: clone3 into the
/// cgroup), killed and reaped on drop unless reaped.
pub struct Workload {
    pub pid: i32,
    inner: nodelens::cgroups::born::BornInside,
}

impl Workload {
    pub fn spawn_into(cgroup: &Path, argv: &[&str]) -> Workload {
        let inner = nodelens::cgroups::born::BornInside::spawn(cgroup, argv[0], argv)
            .unwrap_or_else(|e| panic!("{e}"));
        Workload {
            pid: inner.id() as i32,
            inner,
        }
    }

    /// Waits for the exit and reads the schedstat of the exited process while it is a
    /// zombie (all of its switches done, its entry still there), then reaps it.
    pub fn exited_schedstat(mut self) -> Schedstat {
        self.inner.wait_exited().unwrap_or_else(|e| panic!("{e}"));
        let stat = schedstat(self.pid);
        self.reap_success();
        stat
    }

    /// Waits for the exit and reads `field` (1-based, as proc(5) numbers them) of the
    /// exited process's `/proc/<pid>/stat` while it is a zombie, then reaps it.
    pub fn exited_stat_field(self, field: usize) -> u64 {
        self.exited_stats(field).value
    }

    /// Once the process has exited (a zombie, not reaped yet): `/proc/<pid>/stat` field
    /// `field` (numbered as in proc(5)) and `/proc/<pid>/schedstat` (its time on a CPU and
    /// its time waiting on a run queue for one); then reaps it.
    pub fn exited_stats(mut self, field: usize) -> Exited {
        self.inner.wait_exited().unwrap_or_else(|e| panic!("{e}"));
        let schedstat = schedstat(self.pid);
        let text = read(format!("/proc/{}/stat", self.pid));
        // Fields after the command name, which is in parentheses and may hold spaces.
        let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
        let value = after
            .split_ascii_whitespace()
            .nth(field - 3)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no field {field} in /proc/{}/stat: {text:?}", self.pid));
        self.reap_success();
        Exited { value, schedstat }
    }

    /// Reaps the process, which must have exited with status 0.
    pub fn reap_success(&mut self) {
        let ok = self.inner.wait().unwrap_or_else(|e| panic!("{e}"));
        assert!(ok, "workload {} failed", self.pid);
    }
}

/// What [`Workload::exited_stats`] read of an exited process.
pub struct Exited {
    /// The `/proc/<pid>/stat` field asked for.
    pub value: u64,
    pub schedstat: Schedstat,
}

/// Memory reclaim inside one cgroup that is no pod's: 64 MiB read through the page cache in
/// a 16 MiB cgroup (the limit in a v1 memory cgroup on this hybrid host, the identity a
/// cgroup2 directory), from a file written with O_DIRECT so that none of it is cached
/// before. The cgroup has a CPU limit too (a tenth of a CPU, in the v1 cpu controller at the same
/// path), so that it has CFS periods. The directories stay until the returned guard is
/// dropped, so that the agent can name the cgroup.
pub fn reclaim_in_a_limited_cgroup(tag: &str) -> Cgroups {
    let name = format!("nodelens-{tag}-reclaim-{}", std::process::id());
    let v1 = Path::new("/sys/fs/cgroup/memory").join(&name);
    let cpu_v1 = Path::new("/sys/fs/cgroup/cpu").join(&name);
    let v2 = cgroup2_root().join(&name);
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::create_dir_all(&cpu_v1).unwrap();
    std::fs::create_dir_all(&v2).unwrap();
    let guard = Cgroups(vec![v1.clone(), cpu_v1.clone(), v2.clone()]);
    std::fs::write(v1.join("memory.limit_in_bytes"), (16u64 << 20).to_string()).unwrap();
    std::fs::write(cpu_v1.join("cpu.cfs_quota_us"), "10000").unwrap();
    let file = tempfile::Builder::new()
        .prefix("nodelens-reclaim-")
        .tempfile_in("/var/tmp")
        .unwrap();
    let script = format!(
        "dd if=/dev/zero of={f} bs=1M count=64 oflag=direct status=none && \
         echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.procs && \
         exec dd if={f} of=/dev/null bs=1M status=none",
        v1.display(),
        cpu_v1.display(),
        v2.display(),
        f = file.path().display()
    );
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(status.success(), "reclaim workload failed");
    guard
}

/// Kills every process of a cgroup2 cgroup (`cgroup.kill`) and waits, at most 5 s, until
/// it is empty, so that it can be removed. For `Drop`s: a bounded poll that never panics.
pub fn empty_cgroup(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Cgroup directories removed however the test ends; the last is the cgroup2 one.
pub struct Cgroups(pub Vec<PathBuf>);

impl Cgroups {
    /// The cgroup2 directory's path relative to the cgroup2 root, as the agent labels it.
    pub fn name(&self) -> String {
        let v2 = self.0.last().expect("a cgroup2 directory");
        v2.strip_prefix(cgroup2_root())
            .unwrap_or(v2)
            .display()
            .to_string()
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Debian's Prometheus scraping every second with the given scrape jobs, its API on a free
/// loopback port; killed on drop.
pub struct ScrapingPrometheus {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl ScrapingPrometheus {
    pub fn start(scrape_configs: serde_json::Value) -> ScrapingPrometheus {
        Self::start_with(scrape_configs, &[])
    }

    /// With more flags (`--enable-feature=...`).
    pub fn start_with(scrape_configs: serde_json::Value, flags: &[&str]) -> ScrapingPrometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": scrape_configs,
        });
        // JSON is YAML.
        std::fs::write(dir.path().join("prometheus.yml"), config.to_string()).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = prometheus(dir.path(), &addr, flags);
        ScrapingPrometheus {
            addr,
            child,
            _dir: dir,
        }
    }

    /// An instant query's result rows; none while Prometheus is still starting (no answer,
    /// or 503), so that callers poll it.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        self.query_path(
            &format!("/api/v1/query?query={}", url_encode(promql)),
            promql,
        )
    }

    /// [`Self::query`] at a Unix time.
    pub fn query_at(&self, promql: &str, time: f64) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}&time={time}", url_encode(promql));
        self.query_path(&path, promql)
    }

    fn query_path(&self, path: &str, promql: &str) -> Vec<serde_json::Value> {
        let Ok((code, _, body)) = http(&self.addr, "GET", path, &[]) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert!(code == 200 || code == 503, "{promql}: {code} {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for ScrapingPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `--cgroup-series` value the kustomize component `why-slow` sets: the per-pod series
/// the dashboard's "Why is this pod slow" row needs, for the tests that check that row.
pub fn why_slow_series() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/components/why-slow/kustomization.yaml"
    );
    let text = read(path);
    let value = text
        .lines()
        .skip_while(|l| !l.contains("path: /data/NODELENS_CGROUP_SERIES"))
        .find_map(|l| l.trim().strip_prefix("value: "))
        .unwrap_or_else(|| panic!("no NODELENS_CGROUP_SERIES value in {path}"));
    value.trim().to_owned()
}

/// What Prometheus 2.42 to 3.x send with native histograms on.
pub const PROTOBUF_FIRST: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A family of a protobuf scrape, and one of its samples.
pub type MetricFamily =
    prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily;
pub type MetricFamilyMetric =
    prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::Metric;

/// A scrape in the protobuf format, decoded.
pub fn protobuf_scrape(agent: &Agent) -> Vec<MetricFamily> {
    use prost::Message as _;
    let (status, headers, body) = http(
        &agent.addr,
        "GET",
        "/metrics",
        &[("Accept", PROTOBUF_FIRST)],
    )
    .unwrap();
    assert_eq!(status, 200);
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        content_type,
        Some(
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
        )
    );
    let mut rest = body.as_slice();
    let mut families = Vec::new();
    while !rest.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut rest).expect("a MetricFamily"));
    }
    assert!(!families.is_empty(), "an empty protobuf scrape");
    families
}

/// A native histogram's positive buckets by index, as Prometheus reads its spans and
/// deltas: (index, count) of each bucket the spans name (a span may hold empty ones).
pub fn native_buckets(
    h: &prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::Histogram,
) -> Vec<(i32, u64)> {
    let mut buckets = Vec::new();
    let (mut index, mut count, mut deltas) = (0i32, 0i64, h.positive_delta.iter());
    for (i, span) in h.positive_span.iter().enumerate() {
        index = if i == 0 {
            span.offset
        } else {
            index + span.offset
        };
        for _ in 0..span.length {
            count += deltas.next().expect("a delta per bucket");
            let n = u64::try_from(count).expect("no bucket count below zero");
            buckets.push((index, n));
            index += 1;
        }
    }
    assert!(deltas.next().is_none(), "a delta per bucket");
    buckets
}

/// The labels of a protobuf sample, as (name, value) pairs.
pub fn protobuf_labels(
    m: &prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::Metric,
) -> Vec<(&str, &str)> {
    m.label
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect()
}

/// A child process killed and reaped when dropped, also when a test fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
