//! hybox-shim: PID 1 of a native sandbox.
//!
//! The runner starts this binary (by fd, `execveat`; hybox embeds it, statically linked) as the first
//! process of fresh user, mount, pid, net, ipc and uts namespaces. The shim first waits for the go
//! byte on the control socket, which the runner sends once it wrote the id maps and joined this
//! process to the run's cgroup (so the shim's own start overlaps that work), then reads the plan,
//! builds the sandbox ([`setup`], for the whole sandbox; `workload::run`, for the workload's own
//! process), then stays as init (`init::supervise`): it reaps orphans, forwards
//! SIGTERM/SIGINT/SIGHUP/SIGQUIT to the workload and, when the workload ends, reports its status to
//! the runner and exits (which kills whatever is left in the pid namespace). The setup order, step by
//! step, is described in `docs/design.md`.
//!
//! Which process gets what:
//! - the shim (init) keeps its capabilities *within the sandbox's user namespace* (they grant nothing
//!   on the host: the namespace maps one unprivileged host id) and runs without seccomp: it executes no
//!   workload input, only `sigwaitinfo`/`waitpid`/`kill`/`write`. It is non-dumpable, so the workload
//!   (no capabilities) can neither ptrace it nor open its `/proc/1/exe`, `/proc/1/mem` or fds
//!   (CVE-2019-5736); and as a pid namespace's init it only receives signals it handles.
//! - the workload's process (forked by the shim) drops everything: close_range, capabilities, ids,
//!   no_new_privs, Landlock, and seccomp last, then `execveat` of the runner-opened fd.
//!
//! Started by `hybox-runc exec` with an `enter` plan instead, the shim is a process entering a
//! running sandbox ([`enter`]): it builds nothing and executes the plan's program after the
//! workload's steps.
//!
//! Modules: [`control`] (the control socket), [`enter`], [`process`] (the shim's process attributes), [`mounts`],
//! [`net`], [`init`], [`workload`], [`error`] (one variant per failing call), [`sys`] (raw calls).

mod control;
mod enter;
mod error;
mod init;
mod mounts;
mod net;
mod process;
mod sys;
mod workload;

use hybox_shim::plan::Plan;

use error::Result;

fn main() {
    let plan = match start() {
        Ok(plan) => plan,
        Err(e) => control::fail(e),
    };
    if plan.enter {
        // A process entering a running sandbox (`hybox-runc exec`): nothing to build.
        enter::run(&plan)
    }
    match setup(plan) {
        Ok(plan) => init::supervise(&plan),
        Err(e) => control::fail(e),
    }
}

/// What every shim does first: its signal mask, then the go byte and the plan.
fn start() -> Result<Plan> {
    // Start from an empty signal mask, not the fully blocked one the runner cloned us with.
    process::clear_sigmask()?;
    // Nothing happens before the runner wrote the id maps and put us in the run's cgroup.
    control::read_plan()
}

/// The setup of the whole sandbox, in order, one call per step; the workload's own steps follow in
/// its process (`workload::run`). Returns the plan for them.
fn setup(plan: Plan) -> Result<Plan> {
    // Non-dumpable: no ptrace and no /proc/1/{mem,exe,fd} for the workload (CVE-2019-5736). After
    // the go byte, not before: a non-dumpable process's /proc/PID files belong to root, so an
    // unprivileged runner could no longer write its uid_map and gid_map. Until then nothing of the
    // workload exists, and the shim is only ptrace-able by what could ptrace the runner itself.
    process::set_non_dumpable()?;
    // The sandbox's ids, so its tmpfs mounts accept the files it creates (ids mapped in the userns).
    process::become_sandbox_ids(plan.uid, plan.gid)?;
    // A cgroup namespace rooted at the run's leaf: no host cgroup path is visible.
    process::unshare_cgroup_ns()?;

    // No mount event propagates to or from the host's mount namespace.
    mounts::make_root_private()?;
    // A new root holding nothing of the host's: a size-capped tmpfs of mount points only.
    mounts::mount_root_tmpfs(plan.root_tmpfs_bytes)?;
    // pivot_root, not chroot (no `..` escape); the host's tree parked at /.oldroot until detached.
    mounts::pivot_root()?;
    if let Some(overlay) = &plan.overlay {
        // An image's root, mounted here rather than on the host: the rootfs binds name its entries.
        mounts::mount_overlay(overlay)?;
    }
    // The root filesystem: binds of the host's system paths, nosuid,nodev, read-only.
    mounts::bind_all(&plan.rootfs)?;
    // The policy's mounts: only the paths it names, read-only unless it says rw; no symlink sources.
    mounts::bind_all(&plan.mounts)?;
    // The rootfs's symlinks (`/bin -> usr/bin`), so binaries find their paths inside the binds.
    mounts::make_links(&plan.links)?;
    if let Some(bytes) = plan.tmp_bytes {
        // A private, size-capped scratch /tmp, charged to the run's cgroup.
        mounts::mount_tmp(bytes)?;
    }
    for t in &plan.tmpfs {
        // The policy's other private tmpfs mounts (`native.tmpfs`), size-capped, charged likewise.
        mounts::mount_tmpfs(t)?;
    }
    // A read-only /dev of five harmless devices: no host device node is reachable.
    mounts::mount_dev(plan.controlling_tty)?;
    // The sandbox's own /proc (no host pids), host-wide files masked, kernel tunables read-only
    // (unless the plan says not to mask: the `native.nested` grant, see `Plan::mask_proc`).
    mounts::mount_proc(plan.mask_proc)?;
    // Detach the host's tree: nothing of it stays reachable by path.
    mounts::detach_old_root()?;
    // The root tmpfs is the sandbox uid's: read-only, so nothing can be added at `/`.
    mounts::remount_root_ro()?;
    // The cwd inside the new root, checked by getcwd (CVE-2024-21626: a cwd left in a host directory).
    mounts::enter_workdir(&plan.workdir)?;

    if !plan.keep_hostname {
        // The policy's hostname in the sandbox's UTS namespace: the host's name does not leak in.
        // (A joined UTS namespace, a pod's, keeps the name its owner gave it.)
        net::set_hostname(&plan.hostname)?;
    }
    if plan.loopback {
        // `lo` up (the namespace starts with it down and has no other interface): loopback only.
        net::loopback_up()?;
    }

    // Resource limits the workload inherits (fds, file size, no core dumps, ...; never RLIMIT_AS).
    process::set_rlimits(&plan.rlimits)?;
    // A new session: no controlling terminal, so no TIOCSTI injection into one.
    process::new_session()?;
    if plan.controlling_tty {
        process::take_controlling_tty()?;
    }
    Ok(plan)
}
