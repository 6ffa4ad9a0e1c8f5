//! A process entering a running sandbox (`hybox-runc exec`; the plan's `enter`): the runner
//! started this shim inside the sandbox's user, mount, pid, network, IPC, UTS and cgroup
//! namespaces and its cgroup (docs/oci.md says how), so nothing of the sandbox is built here. The
//! process gets what the sandbox's workload gets: its rlimits, a session of its own, then the
//! workload's steps (`workload::prepare`: fds close-on-exec, no capabilities, the sandbox's ids,
//! no_new_privs, Landlock, seccomp last), then the exec of `argv[0]`, a path inside the sandbox.
//!
//! Why this order: non-dumpable first, before anything else, as the sandbox's init does (until
//! the workload's steps are done this process holds every capability of the sandbox's user
//! namespace, and the sandbox's own processes run as the uid it takes next: with ptrace they
//! could use those capabilities); the workdir before Landlock (which then governs every path the
//! process opens, including the exec's).

use std::ffi::CString;

use hybox_shim::plan::Plan;

use crate::control::{fail, send};
use crate::error::{Result, SetupError};
use crate::sys::Errno;
use crate::{mounts, process, workload};

/// The steps in order, then the exec; reports a failure and exits 125 otherwise.
pub fn run(plan: &Plan) -> ! {
    if let Err(e) = prepare(plan) {
        fail(e)
    }
    let e = exec_path(plan);
    send(&hybox_shim::plan::Message::SetupError {
        step: e.to_string(),
    });
    std::process::exit(125)
}

fn prepare(plan: &Plan) -> Result<()> {
    // No ptrace and no /proc/PID/{mem,fd} for the sandbox's processes (see the module docs).
    process::set_non_dumpable()?;
    // The process's cwd inside the sandbox's root, checked by getcwd (CVE-2024-21626).
    mounts::enter_workdir(&plan.workdir)?;
    // The sandbox's rlimits (the container's init has the same).
    process::set_rlimits(&plan.rlimits)?;
    // A session of its own: no controlling terminal of the caller's.
    process::new_session()?;
    if plan.controlling_tty {
        // The pty `exec --console-socket` made for this process: its controlling terminal.
        process::take_controlling_tty()?;
    }
    // The workload's own steps: no capabilities, the ids, no_new_privs, Landlock, seccomp.
    workload::prepare(plan)
}

/// `execveat(AT_FDCWD, path)` of `argv[0]`: as given when it holds a `/`, else the first
/// executable found in the `PATH` of the plan's environment (execvp's rule). Returns only on
/// failure.
fn exec_path(plan: &Plan) -> SetupError {
    let args = workload::c_args(plan);
    let arg0 = plan.argv.first().cloned().unwrap_or_default();
    let candidates: Vec<String> = if arg0.contains('/') {
        vec![arg0]
    } else {
        let path = plan
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/{arg0}", d.trim_end_matches('/')))
            .collect()
    };
    let mut last = Errno(libc::ENOENT);
    for c in candidates {
        let p = CString::new(c).unwrap_or_default();
        // SAFETY: NULL-terminated arrays of NUL-terminated strings that outlive the call.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                libc::AT_FDCWD,
                p.as_ptr(),
                args.argv.as_ptr(),
                args.envp.as_ptr(),
                0,
            )
        };
        last = Errno::last();
        // Like execvp: a missing or unreadable candidate lets the search go on.
        if !matches!(last.0, libc::ENOENT | libc::ENOTDIR | libc::EACCES) {
            break;
        }
    }
    SetupError::Exec(last)
}
