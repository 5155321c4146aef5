//! The processes the bench and the soak measure: started, waited for until they serve,
//! killed on drop; and what they cost (CPU ticks, RSS) from /proc.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::http::get;

/// A child process killed on drop.
pub struct Daemon {
    pub(super) child: Child,
    pub(super) addr: String,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running (not exited, not killed).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the process (SIGSTOP) until the returned guard is dropped (SIGCONT), so that
    /// it takes no CPU while another agent is measured.
    pub fn stop(&self) -> Result<Stopped> {
        let pid = self.child.id().to_string();
        signal(&pid, "-STOP")?;
        Ok(Stopped(pid))
    }
}

/// A stopped daemon, continued when dropped.
pub struct Stopped(String);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = signal(&self.0, "-CONT");
    }
}

fn signal(pid: &str, sig: &str) -> Result<()> {
    let status = Command::new("kill").args([sig, pid]).status()?;
    if !status.success() {
        bail!("kill {sig} {pid}: {status}");
    }
    Ok(())
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

pub fn start(name: &'static str, program: &Path, args: &[String], addr: String) -> Result<Daemon> {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let daemon = Daemon { child, addr };
    let ready = if name == "nodelens" {
        "/readyz"
    } else {
        "/metrics"
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if get(&daemon.addr, ready).is_ok() {
            return Ok(daemon);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{name} did not become ready on {}", daemon.addr)
}

/// user + system CPU ticks of a process (fields 14 and 15 of /proc/<pid>/stat).
pub(super) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').context("bad /proc/pid/stat")?.1;
    let fields: Vec<&str> = after_comm.split_ascii_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_ascii_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}
