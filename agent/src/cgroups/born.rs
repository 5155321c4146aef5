//! Starting a process inside a cgroup from its first instruction: clone3 with
//! `CLONE_INTO_CGROUP` (Linux 5.7+). A process that moves itself in (`echo $$ >
//! cgroup.procs`, or a write between fork and exec) brings the stretch it was running when
//! it moved, which the kernel charges partly to the cgroup it came from and a switch-based
//! count wholly to the new one: a few ms under the kernel matrix's emulated CPUs, enough
//! to put a short loop 1% off. `preflight --exercise` and the accuracy tests start the work
//! they compare with `cpu.stat` this way, as a container runtime starts a container's.
use std::{ffi::CString, os::fd::AsRawFd, path::Path};

/// `struct clone_args` of clone3(2), as the kernel defines it (`cgroup` since 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (libc's constant is a truncated `c_int`).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A child process born in a cgroup; killed and reaped on drop unless already reaped.
#[derive(Debug)]
pub struct BornInside {
    pid: libc::pid_t,
    reaped: bool,
}

impl BornInside {
    /// Runs `program` with `argv` (`argv[0]` included) in the cgroup directory `cgroup`.
    pub fn spawn(cgroup: &Path, program: &str, argv: &[&str]) -> Result<BornInside, String> {
        let dir =
            std::fs::File::open(cgroup).map_err(|e| format!("open {}: {e}", cgroup.display()))?;
        // Everything the child needs is made before the clone: between clone and exec, a
        // child of a multi-threaded process may only make raw system calls.
        let program = CString::new(program).map_err(|_| "a program with a NUL byte")?;
        let args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(*a))
            .collect::<Result<_, _>>()
            .map_err(|_| "an argument with a NUL byte")?;
        let mut pointers: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        pointers.push(std::ptr::null());
        let clone = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 with a valid clone_args; the child only calls execv and _exit.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &clone as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid == 0 {
            // SAFETY: in the child: exec, or leave without running any of the parent's code.
            unsafe {
                libc::execv(program.as_ptr(), pointers.as_ptr());
                libc::_exit(127);
            }
        }
        if pid < 0 {
            return Err(format!(
                "clone3 into {} (needs Linux 5.7): {}",
                cgroup.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(BornInside {
            pid: pid as libc::pid_t,
            reaped: false,
        })
    }

    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the exit and reaps; whether it exited with status 0.
    pub fn wait(&mut self) -> Result<bool, String> {
        let mut status = 0;
        // SAFETY: our own child, not reaped yet.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.reaped = true;
        if rc != self.pid {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        Ok(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
    }

    /// Waits for the exit without reaping: the process stays a zombie, whose `/proc/<pid>`
    /// entries still read, with every switch it made in them.
    pub fn wait_exited(&self) -> Result<(), String> {
        // SAFETY: a zeroed siginfo_t is valid; waitid only writes it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child without reaping it (WNOWAIT).
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            return Err(format!(
                "waitid({}): {}",
                self.pid,
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

impl Drop for BornInside {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our own child, not reaped yet, so the pid is still ours.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}
