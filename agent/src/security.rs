//! Least privilege at run time. Once every probe is attached and every map descriptor is
//! open, the agent needs no capability (map reads through open descriptors are unprivileged
//! from 5.19 on), so it drops them all, sets `no_new_privs`, and installs a seccomp filter
//! that allows only the system calls the serving process makes.
//!
//! Capabilities and `no_new_privs` belong to each thread, not to the process. The loader's
//! thread drops its own ([`drop_thread_capabilities`]); the event loop's thread drops its
//! own and installs the filter with `SECCOMP_FILTER_FLAG_TSYNC`, which also sets
//! `no_new_privs` on every other thread ([`lock_down`]). Threads created later inherit the
//! reduced sets. The outcome is read back from `/proc/self/task/*/status`, not assumed.
//!
//! A denied system call fails with EPERM by default: the filter traps it, and a SIGSYS
//! handler writes -EPERM into the return register and counts the call by number, so the
//! agent logs it and exports `nodelens_seccomp_denied_total`. `--seccomp kill` kills the
//! process instead (the tests and the kernel matrix run that way, so a missing entry fails
//! loudly); `--seccomp off` installs nothing.
use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use caps::{CapSet, Capability, CapsHashSet};

use crate::config::SeccompMode;

/// The agent's privileges after [`lock_down`], as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posture {
    /// `none`, or the capabilities some thread still holds (`bpf`, or a list).
    pub capabilities: String,
    pub no_new_privs: bool,
    /// `errno`, `kill` or `off` (`off` also when installing failed).
    pub seccomp: &'static str,
    /// Why a step did not go as asked, for the log and `/`.
    pub notes: Vec<String>,
}

impl Posture {
    /// Before lock-down, or in preflight.
    pub fn unlocked() -> Self {
        Self {
            capabilities: "unchanged".into(),
            no_new_privs: false,
            seccomp: "off",
            notes: Vec::new(),
        }
    }
}

/// Which capabilities the agent keeps after attaching: none, except CAP_BPF on kernels
/// before 5.19 that restrict `bpf()` to privileged callers
/// (`kernel.unprivileged_bpf_disabled` non-zero), where every map read needs it.
pub fn capabilities_to_keep(
    kernel: Option<(u32, u32)>,
    procfs: &Path,
) -> (CapsHashSet, Option<String>) {
    let mut keep = CapsHashSet::new();
    let restricted = std::fs::read_to_string(procfs.join("sys/kernel/unprivileged_bpf_disabled"))
        .map(|v| v.trim() != "0")
        .unwrap_or(true);
    if kernel.is_some_and(|v| v < (5, 19)) && restricted {
        keep.insert(Capability::CAP_BPF);
        return (
            keep,
            Some("kernel before 5.19 with kernel.unprivileged_bpf_disabled set: CAP_BPF is kept, because every bpf() call needs it there".into()),
        );
    }
    (keep, None)
}

/// Drops every capability of the calling thread but `keep`, from the effective, permitted,
/// inheritable and ambient sets.
pub fn drop_thread_capabilities(keep: &CapsHashSet) -> Result<(), String> {
    let _ = caps::clear(None, CapSet::Ambient);
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
        .map_err(|e| format!("inheritable set: {e}"))?;
    let effective: CapsHashSet = caps::read(None, CapSet::Effective)
        .unwrap_or_default()
        .intersection(keep)
        .copied()
        .collect();
    caps::set(None, CapSet::Effective, &effective).map_err(|e| format!("effective set: {e}"))?;
    let permitted: CapsHashSet = caps::read(None, CapSet::Permitted)
        .unwrap_or_default()
        .intersection(keep)
        .copied()
        .collect();
    caps::set(None, CapSet::Permitted, &permitted).map_err(|e| format!("permitted set: {e}"))
}

/// The calling thread's part of the lock-down, then the process's: capabilities (unless
/// `keep_capabilities`), `no_new_privs`, and the seccomp filter on every thread.
pub fn lock_down(keep: &CapsHashSet, keep_capabilities: bool, mode: SeccompMode) -> Posture {
    let mut notes = Vec::new();
    if !keep_capabilities && let Err(e) = drop_thread_capabilities(keep) {
        notes.push(format!("dropping capabilities failed: {e}"));
    }
    let nnp = rustix::thread::set_no_new_privs(true);
    if let Err(e) = nnp {
        notes.push(format!("no_new_privs: {e}"));
    }
    let seccomp = match mode {
        SeccompMode::Off => "off",
        _ => match install_filter(mode) {
            Ok(()) => mode.as_str(),
            Err(e) => {
                notes.push(format!("seccomp filter not installed: {e}"));
                "off"
            }
        },
    };
    let threads = read_threads(Path::new("/proc/self/task"));
    Posture {
        capabilities: describe(&threads),
        no_new_privs: !threads.is_empty() && threads.iter().all(|t| t.no_new_privs),
        seccomp,
        notes,
    }
}

/// One thread's privileges, from its status file.
#[derive(Debug, Default)]
struct ThreadStatus {
    cap_eff: u64,
    cap_prm: u64,
    no_new_privs: bool,
}

fn read_threads(task_dir: &Path) -> Vec<ThreadStatus> {
    let Ok(entries) = std::fs::read_dir(task_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .map(|s| parse_status(&s))
        .collect()
}

fn parse_status(status: &str) -> ThreadStatus {
    let mut t = ThreadStatus::default();
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "CapEff" => t.cap_eff = u64::from_str_radix(value, 16).unwrap_or(u64::MAX),
            "CapPrm" => t.cap_prm = u64::from_str_radix(value, 16).unwrap_or(u64::MAX),
            "NoNewPrivs" => t.no_new_privs = value == "1",
            _ => {}
        }
    }
    t
}

/// `none` when no thread holds a capability, else the names some thread still holds.
fn describe(threads: &[ThreadStatus]) -> String {
    let held = threads
        .iter()
        .fold(0u64, |acc, t| acc | t.cap_eff | t.cap_prm);
    if threads.is_empty() {
        return "unknown".into();
    }
    if held == 0 {
        return "none".into();
    }
    let mut names: Vec<String> = caps::all()
        .into_iter()
        .filter(|c| held & c.bitmask() != 0)
        .map(|c| c.to_string().trim_start_matches("CAP_").to_lowercase())
        .collect();
    names.sort();
    names.join(",")
}

/// Denied system calls by number, counted by the SIGSYS handler (async-signal-safe: only
/// atomics). Syscall numbers stay below 512 on x86_64 and aarch64.
static DENIED: [AtomicU64; 512] = [const { AtomicU64::new(0) }; 512];

/// Denied calls already logged, so each number is logged once per new count.
static LOGGED: Mutex<BTreeMap<usize, u64>> = Mutex::new(BTreeMap::new());

/// Denials so far, by syscall number; logs the numbers that were denied since the last call.
pub fn denied() -> Vec<(usize, u64)> {
    let counts: Vec<(usize, u64)> = DENIED
        .iter()
        .enumerate()
        .map(|(nr, c)| (nr, c.load(Ordering::Relaxed)))
        .filter(|(_, c)| *c > 0)
        .collect();
    let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    for &(nr, count) in &counts {
        if logged.get(&nr) != Some(&count) {
            tracing::warn!(
                syscall = nr,
                count,
                "seccomp denied system call {nr} with EPERM (it is not on the allowlist; please report it)"
            );
            logged.insert(nr, count);
        }
    }
    counts
}

/// SIGSYS from the filter's SECCOMP_RET_TRAP: count the call and make it return -EPERM.
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS; its `_sigsys` member starts at
    // the union (offset 16 on 64-bit) with `void *_call_addr` then `int _syscall`.
    let nr = unsafe { *info.cast::<u8>().add(16 + 8).cast::<libc::c_int>() };
    if let Some(counter) = usize::try_from(nr).ok().and_then(|n| DENIED.get(n)) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    let uc = context.cast::<libc::ucontext_t>();
    let eperm = -i64::from(libc::EPERM);
    // SAFETY: the context is this thread's saved registers; the return value register is
    // restored on sigreturn.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        {
            (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = eperm;
        }
        #[cfg(target_arch = "aarch64")]
        {
            (*uc).uc_mcontext.regs[0] = eperm as u64;
        }
    }
}

fn install_filter(mode: SeccompMode) -> Result<(), String> {
    use seccompiler::{SeccompAction, SeccompFilter};
    if mode == SeccompMode::Errno {
        // SAFETY: the handler only touches atomics and the signal context.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigsys as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
                return Err(format!(
                    "SIGSYS handler: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    let denied = match mode {
        SeccompMode::Kill => SeccompAction::KillProcess,
        _ => SeccompAction::Trap,
    };
    let mut rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        allowlist().iter().map(|&nr| (nr, Vec::new())).collect();
    rules.insert(libc::SYS_bpf, bpf_rules()?);
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("architecture {}: {e:?}", std::env::consts::ARCH))?;
    let filter = SeccompFilter::new(rules, denied, SeccompAction::Allow, arch)
        .map_err(|e| format!("building the filter: {e}"))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e| format!("compiling the filter: {e:?}"))?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("{e}"))
}

/// `bpf()` commands the agent uses after attaching: reading, updating and deleting map
/// entries through descriptors it already holds, object information (the kernel's run-time
/// statistics), and detaching links at exit. Loading a program (BPF_PROG_LOAD), creating a
/// map, or opening objects by id is refused even when capabilities were kept.
pub const BPF_COMMANDS: &[(u32, &str)] = &[
    (1, "BPF_MAP_LOOKUP_ELEM"),
    (2, "BPF_MAP_UPDATE_ELEM"),
    (3, "BPF_MAP_DELETE_ELEM"),
    (4, "BPF_MAP_GET_NEXT_KEY"),
    (15, "BPF_OBJ_GET_INFO_BY_FD"),
    (21, "BPF_MAP_LOOKUP_AND_DELETE_ELEM"),
    (24, "BPF_MAP_LOOKUP_BATCH"),
    (25, "BPF_MAP_LOOKUP_AND_DELETE_BATCH"),
    (27, "BPF_MAP_DELETE_BATCH"),
    (34, "BPF_LINK_DETACH"),
];

fn bpf_rules() -> Result<Vec<seccompiler::SeccompRule>, String> {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    BPF_COMMANDS
        .iter()
        .map(|&(cmd, _)| {
            let only =
                SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, u64::from(cmd))
                    .map_err(|e| format!("bpf rule: {e}"))?;
            SeccompRule::new(vec![only]).map_err(|e| format!("bpf rule: {e}"))
        })
        .collect()
}

/// Every system call the serving agent makes (besides `bpf`, limited to [`BPF_COMMANDS`]), measured with `strace -f -c` under scrapes,
/// cgroup churn, disk and reclaim load (docs/kubernetes.md, Security posture). Numbers come from libc,
/// so the list holds for each architecture; calls x86_64 has and aarch64 does not (`open`,
/// `poll`, ...) are added there only.
pub fn allowlist() -> Vec<i64> {
    // Mutated on x86_64 only.
    #[allow(unused_mut)]
    let mut calls = vec![
        // Files under /proc, /sys, the cgroup tree and the kubelet's log directories.
        libc::SYS_openat,
        libc::SYS_close,
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_readv,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_pwrite64,
        libc::SYS_lseek,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_statfs,
        libc::SYS_fstatfs,
        libc::SYS_getdents64,
        libc::SYS_readlinkat,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_fcntl,
        libc::SYS_ioctl,
        libc::SYS_getcwd,
        // Memory.
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        // Threads (tokio's blocking pool) and synchronisation.
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_futex,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_prctl,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_membarrier,
        // Signals: SIGTERM, SIGINT and the SIGSYS handler itself.
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_tgkill,
        libc::SYS_kill,
        // The event loop and its wakeups.
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_eventfd2,
        libc::SYS_pipe2,
        libc::SYS_ppoll,
        libc::SYS_pselect6,
        // Sockets: the HTTP server, and remote_write's client (DNS over UDP included).
        libc::SYS_socket,
        libc::SYS_connect,
        libc::SYS_accept4,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_shutdown,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_sendmmsg,
        libc::SYS_recvmmsg,
        // Time, identity, limits, randomness.
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettimeofday,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getppid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_uname,
        libc::SYS_sysinfo,
        libc::SYS_getrandom,
        libc::SYS_prlimit64,
        libc::SYS_getrusage,
        libc::SYS_capget,
        libc::SYS_restart_syscall,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_open,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_access,
        libc::SYS_readlink,
        libc::SYS_poll,
        libc::SYS_select,
        libc::SYS_epoll_wait,
        libc::SYS_pipe,
        libc::SYS_getdents,
        libc::SYS_arch_prctl,
        libc::SYS_time,
    ]);
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tries to load a two-instruction tracepoint program, as an attacker inside the agent
    /// would; returns what happened.
    fn try_prog_load() -> String {
        // BPF_MOV64_IMM(r0, 0); BPF_EXIT_INSN()
        let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&5u32.to_ne_bytes()); // BPF_PROG_TYPE_TRACEPOINT
        attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        // SAFETY: attr is a zeroed bpf_attr with the program-load fields set; the pointers
        // outlive the call.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len()) };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor.
            unsafe { libc::close(fd as i32) };
            format!("loaded (fd {fd})")
        } else {
            format!("refused: {}", std::io::Error::last_os_error())
        }
    }

    /// The filter applies to the whole process and stays: the check runs in a child process,
    /// this test binary run again for the one ignored test below.
    #[test]
    fn after_lock_down_a_program_load_fails_with_eperm_and_is_counted() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "security::tests::child_installs_the_filter_and_loads_a_program",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("NODELENS_SECCOMP_CHILD", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the child ran its check: {text}");
    }

    #[test]
    #[ignore = "run by after_lock_down_a_program_load_fails_with_eperm_and_is_counted"]
    fn child_installs_the_filter_and_loads_a_program() {
        assert!(
            std::env::var_os("NODELENS_SECCOMP_CHILD").is_some(),
            "only as the child of the test above: the filter cannot be removed"
        );
        // SAFETY: no_new_privs lets an unprivileged process install a filter; it only
        // affects this process.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            0
        );
        install_filter(SeccompMode::Errno).unwrap();
        let outcome = try_prog_load();
        assert!(
            outcome.starts_with("refused") && outcome.contains("Operation not permitted"),
            "{outcome}"
        );
        let counted = denied();
        assert!(
            counted
                .iter()
                .any(|&(nr, n)| nr == libc::SYS_bpf as usize && n >= 1),
            "bpf() counted as denied: {counted:?}"
        );
    }

    #[test]
    fn reads_thread_privileges_from_status() {
        let t = parse_status(
            "Name:\tnodelens\nCapInh:\t0000000000000000\nCapPrm:\t0000008000000000\nCapEff:\t0000008000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n",
        );
        assert_eq!(t.cap_eff, 1 << 39);
        assert!(t.no_new_privs);
        assert_eq!(describe(&[t]), "bpf");
        let none =
            parse_status("CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nNoNewPrivs:\t0\n");
        assert_eq!(describe(&[none]), "none");
        let garbage = parse_status("CapEff:\tzz\n");
        assert_ne!(
            describe(&[garbage]),
            "none",
            "unreadable means not known to be dropped"
        );
    }

    #[test]
    fn keeps_cap_bpf_only_before_5_19_with_unprivileged_bpf_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let sysctl = dir.path().join("sys/kernel");
        std::fs::create_dir_all(&sysctl).unwrap();
        std::fs::write(sysctl.join("unprivileged_bpf_disabled"), "2\n").unwrap();
        assert!(
            capabilities_to_keep(Some((5, 10)), dir.path())
                .0
                .contains(&Capability::CAP_BPF)
        );
        assert!(capabilities_to_keep(Some((6, 1)), dir.path()).0.is_empty());
        std::fs::write(sysctl.join("unprivileged_bpf_disabled"), "0\n").unwrap();
        assert!(capabilities_to_keep(Some((5, 10)), dir.path()).0.is_empty());
    }

    #[test]
    fn the_allowlist_has_no_duplicates() {
        let mut calls = allowlist();
        let n = calls.len();
        calls.sort_unstable();
        calls.dedup();
        assert_eq!(calls.len(), n);
    }
}
