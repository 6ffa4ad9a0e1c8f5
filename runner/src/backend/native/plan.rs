//! Policy → [`Plan`]: everything the shim executes, decided here in the runner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use hybox_shim::plan::{
    Bind, LandlockMode as PlanLandlock, LandlockPlan, Link, Overlay, Plan, Rlimits, Tmpfs, Upper,
};

use crate::backend::{JoinKind, Launch, Stdio};
use crate::policy::{Access, LandlockMode, Network, Policy, Rootfs};
use crate::workload::Format;

/// The host's system directories a `rootfs: host` sandbox sees, read-only (absent ones are skipped;
/// symlinks such as a merged-/usr `/bin -> usr/bin` become symlinks). Must cover
/// [`crate::decide::HOST_ROOTFS_DIRS`] except `/etc`, of which only [`HOST_ETC_FILES`] are visible.
pub const HOST_ROOTFS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
];
/// The few `/etc` files dynamic programs need: the loader cache and the time zone. No passwd, no
/// resolv.conf, no hosts: nothing about the host's users or network.
pub const HOST_ETC_FILES: &[&str] = &["/etc/ld.so.cache", "/etc/localtime"];
/// Size of the root tmpfs that only holds mount points.
const ROOT_TMPFS_BYTES: u64 = 1 << 20;

/// Why a plan could not be built from the policy.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A mount's host path does not exist or cannot be inspected.
    #[error("filesystem.mounts: host path {path}: {source}")]
    MountSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A mount's host path is a symlink (not followed: it could point anywhere when the shim binds it).
    #[error("filesystem.mounts: host path {0} is a symlink; give the target path")]
    MountSymlink(PathBuf),
    /// The rootfs directory cannot be listed.
    #[error("native.rootfs: {path}: {source}")]
    Rootfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The seccomp filter could not be compiled.
    #[error(transparent)]
    Seccomp(#[from] hybox_shim::seccomp::FilterError),
    /// An argument or environment entry contains a NUL byte.
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
}

impl PlanError {
    /// How to fix it, where known.
    pub fn hint(&self) -> Option<String> {
        match self {
            PlanError::MountSource { .. } => {
                Some("create the directory, or remove the mount from the policy".into())
            }
            PlanError::MountSymlink(_) => Some("use the resolved path (readlink -f)".into()),
            _ => None,
        }
    }
}

/// The host uid/gid the sandbox ids map to: the policy's, else 65534 (nobody) when hybox runs as root,
/// else the caller's own. Never 0 (policy validation refuses an explicit 0).
pub fn host_ids(policy: &Policy) -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let dflt = |own: u32| if own == 0 { 65534 } else { own };
    (
        policy.native.host_uid.unwrap_or(dflt(uid)),
        policy.native.host_gid.unwrap_or(dflt(gid)),
    )
}

fn no_nul(s: &str, what: &'static str) -> Result<String, PlanError> {
    if s.contains('\0') {
        return Err(PlanError::Nul(what));
    }
    Ok(s.to_string())
}

/// The seccomp programs for the default allow-list (no `native.seccomp.allow` grants, no
/// `native.nested`), compiled by `build.rs` with this crate's own compiler
/// (`backend::seccomp::compile(&[], false)`, packed), or `None` where the build could not compile
/// them for the target.
const DEFAULT_PROGRAMS: Option<&[&[u64]]> =
    include!(concat!(env!("OUT_DIR"), "/seccomp_default.rs"));

/// The sandbox's seccomp programs for a policy's extra allow-list and `native.nested` grant: the
/// default list's as the build compiled them, any other compiled once per process and list
/// (compiling the ~300-rule allow-list costs about a millisecond of CPU, `benches/policy.rs`: a
/// one-shot run should not pay it, nor a long-lived host such as `hybox serve` per call). The
/// programs are pure data derived from the list, so sharing them between runs shares nothing else.
fn seccomp_programs(extra_allow: &[String], nested: bool) -> Result<Vec<Vec<u64>>, PlanError> {
    if let (true, false, Some(programs)) = (extra_allow.is_empty(), nested, DEFAULT_PROGRAMS) {
        return Ok(programs.iter().map(|p| p.to_vec()).collect());
    }
    type Cache = Mutex<HashMap<(Vec<String>, bool), Vec<Vec<u64>>>>;
    let key = (extra_allow.to_vec(), nested);
    static COMPILED: OnceLock<Cache> = OnceLock::new();
    let cache = COMPILED.get_or_init(Default::default);
    if let Some(p) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(p.clone());
    }
    let programs: Vec<Vec<u64>> = crate::backend::seccomp::compile(extra_allow, nested)?
        .iter()
        .map(|p| hybox_shim::plan::pack_filter(p))
        .collect();
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, programs.clone());
    Ok(programs)
}

/// Builds the plan for one launch.
pub fn build_plan(launch: &Launch, landlock: LandlockMode) -> Result<Plan, PlanError> {
    let policy = launch.policy;
    let mut rootfs = Vec::new();
    let mut links = Vec::new();
    let mut read: Vec<PathBuf> = Vec::new();
    let add_entry = |host: &Path,
                     guest: &Path,
                     rootfs: &mut Vec<Bind>,
                     links: &mut Vec<Link>,
                     read: &mut Vec<PathBuf>| {
        match std::fs::symlink_metadata(host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(host) {
                    links.push(Link {
                        target,
                        path: guest.to_path_buf(),
                    });
                }
            }
            Ok(_) => {
                rootfs.push(Bind {
                    host: host.to_path_buf(),
                    guest: guest.to_path_buf(),
                    rw: false,
                    required: false,
                });
                read.push(guest.to_path_buf());
            }
            Err(_) => {}
        }
    };
    match &policy.native.rootfs {
        Rootfs::Host => {
            for d in HOST_ROOTFS.iter().chain(HOST_ETC_FILES) {
                add_entry(
                    Path::new(d),
                    Path::new(d),
                    &mut rootfs,
                    &mut links,
                    &mut read,
                );
            }
        }
        Rootfs::Image {
            dir,
            overlay: Some(o),
            ..
        } => {
            // The sandbox mounts the overlay at `dir` itself: the entries come from the layers.
            for e in &o.entries {
                if ["proc", "dev", "tmp", "sys"]
                    .iter()
                    .any(|n| e.name == Path::new(n))
                {
                    continue;
                }
                let guest = Path::new("/").join(&e.name);
                match &e.link {
                    Some(target) => links.push(Link {
                        target: target.clone(),
                        path: guest,
                    }),
                    None => {
                        rootfs.push(Bind {
                            host: dir.join(&e.name),
                            guest: guest.clone(),
                            rw: false,
                            required: true,
                        });
                        read.push(guest);
                    }
                }
            }
        }
        Rootfs::Dir(dir) | Rootfs::Image { dir, .. } => {
            // Each top-level entry of the image, bound read-only into the tmpfs root (so /proc, /dev,
            // /tmp and the policy's mount points can be created whatever the image contains).
            let entries = std::fs::read_dir(dir).map_err(|source| PlanError::Rootfs {
                path: dir.clone(),
                source,
            })?;
            let mut names: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            for name in names {
                if ["proc", "dev", "tmp", "sys"].iter().any(|n| name == *n) {
                    continue;
                }
                let guest = Path::new("/").join(&name);
                add_entry(&dir.join(&name), &guest, &mut rootfs, &mut links, &mut read);
            }
        }
    }
    let mut mounts = Vec::new();
    let mut write: Vec<PathBuf> = Vec::new();
    if let Rootfs::Image { writable: true, .. } = &policy.native.rootfs {
        // An image's root over its run's ephemeral upper layer (docs/images.md): writable.
        for b in &mut rootfs {
            b.rw = true;
            write.push(b.guest.clone());
        }
    }
    for m in &policy.filesystem.mounts {
        let meta = std::fs::symlink_metadata(&m.host).map_err(|source| PlanError::MountSource {
            path: m.host.clone(),
            source,
        })?;
        if meta.file_type().is_symlink() {
            return Err(PlanError::MountSymlink(m.host.clone()));
        }
        let rw = m.mode == Access::Rw;
        mounts.push(Bind {
            host: m.host.clone(),
            guest: m.guest.clone(),
            rw,
            required: true,
        });
        if rw {
            write.push(m.guest.clone())
        } else {
            read.push(m.guest.clone())
        }
    }
    if policy.filesystem.tmp.is_some() {
        write.push("/tmp".into());
    }
    let tmpfs: Vec<Tmpfs> = policy
        .native
        .tmpfs
        .iter()
        .map(|t| {
            write.push(t.guest.clone());
            Tmpfs {
                guest: t.guest.clone(),
                bytes: t.size.bytes(),
                // Checked by `Policy::validate`.
                mode: t.mode_bits().unwrap_or(0o1777),
                noexec: t.noexec,
            }
        })
        .collect();
    read.push("/proc".into());
    write.push("/dev".into());

    let argv0 = launch
        .artifact
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workload".into());
    let mut argv = vec![no_nul(&argv0, "argv[0]")?];
    for a in launch.args {
        argv.push(no_nul(a, "an argument")?);
    }
    let mut env = Vec::new();
    for (k, v) in &launch.env {
        env.push(no_nul(&format!("{k}={v}"), "an environment variable")?);
    }
    let nested = policy.native.nested;
    let mut seccomp = seccomp_programs(&policy.native.seccomp.allow, nested)?;
    if let Some(profile) = &policy.native.seccomp.profile {
        // Stacked right before the allow-list, which denies seccomp(2) itself: the kernel applies
        // the most severe result of every filter, so the profile only narrows
        // (`backend::seccomp_profile`).
        let program = crate::backend::seccomp_profile::compile(profile)?;
        let at = seccomp.len().saturating_sub(1);
        seccomp.insert(at, hybox_shim::plan::pack_filter(&program));
    }
    let r = &policy.native.rlimits;
    let overlay = match &policy.native.rootfs {
        Rootfs::Image {
            dir,
            overlay: Some(o),
            ..
        } => Some(Overlay {
            lower: o.lower.clone(),
            merged: dir.clone(),
            upper: o.upper.as_ref().map(|(dir, bytes)| Upper {
                dir: dir.clone(),
                bytes: *bytes,
            }),
        }),
        _ => None,
    };
    let joined = |k: JoinKind| launch.joins.iter().any(|j| j.kind == k);
    Ok(Plan {
        root_tmpfs_bytes: ROOT_TMPFS_BYTES,
        overlay,
        rootfs,
        links,
        mounts,
        tmp_bytes: policy.filesystem.tmp.as_ref().map(|t| t.size.bytes()),
        tmpfs,
        workdir: policy.filesystem.workdir.clone(),
        hostname: policy.native.hostname.clone(),
        // A joined UTS or network namespace is another user namespace's: the shim has no
        // capability over it and uses it as it is (`join`).
        keep_hostname: joined(JoinKind::Uts),
        loopback: policy.network == Network::Loopback && !joined(JoinKind::Network),
        rlimits: Rlimits {
            nofile: r.nofile,
            fsize: r.fsize.bytes(),
            // Without an envelope RLIMIT_NPROC is the limit; `set_envelope` raises it by one when
            // the run has one.
            nproc: policy.resources.pids,
            memlock: r.memlock.bytes(),
            msgqueue: r.msgqueue.bytes(),
            stack: r.stack.bytes(),
            cpu_secs: policy
                .resources
                .cpu_time
                .map(|t| t.as_std().as_secs_f64().ceil().max(1.0) as u64),
        },
        uid: policy.native.uid,
        gid: policy.native.gid,
        argv,
        env,
        keep_workload_fd: matches!(launch.artifact.format, Format::Script { .. }),
        wait_for_call: false,
        enter: false,
        controlling_tty: matches!(launch.stdio, Stdio::Terminal),
        passed_fds: launch.pass_fds.len() as u32,
        landlock: LandlockPlan {
            mode: match landlock {
                LandlockMode::Off => PlanLandlock::Off,
                LandlockMode::BestEffort => PlanLandlock::BestEffort,
                LandlockMode::Required => PlanLandlock::Required,
            },
            // The `native.nested` grant: a nested sandbox must mount, which the kernel refuses under
            // a Landlock domain with filesystem rights (`LandlockPlan::filesystem`).
            filesystem: !nested,
            read,
            write,
            deny_tcp: policy.network == Network::None,
        },
        // The `native.nested` grant: a nested procfs needs a fully visible one (`Plan::mask_proc`).
        mask_proc: !nested,
        seccomp,
    })
}

/// Fits the plan to the run's envelope, once it is known. The envelope's pids.max enforces `pids`
/// exactly and is what the report attributes (`pids_limit`); RLIMIT_NPROC is the backstop. Both
/// count the same tasks (the shim runs as the sandbox uid too), and the rlimit is checked first in
/// fork, so with an envelope it sits one above, or the cgroup limit could never fire.
pub(crate) fn set_envelope(plan: &mut Plan, pids: u64, has_envelope: bool) {
    plan.rlimits.nproc = if has_envelope { pids + 1 } else { pids };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_precompiled_default_programs_are_what_the_runner_compiles() {
        let Some(built) = DEFAULT_PROGRAMS else {
            eprintln!("no precompiled programs for this target");
            return;
        };
        let compiled: Vec<Vec<u64>> = crate::backend::seccomp::compile(&[], false)
            .unwrap()
            .iter()
            .map(|p| hybox_shim::plan::pack_filter(p))
            .collect();
        assert_eq!(built, compiled.as_slice());
        assert_eq!(seccomp_programs(&[], false).unwrap(), compiled);
    }

    #[test]
    fn a_grant_compiles_its_own_programs() {
        let default = seccomp_programs(&[], false).unwrap();
        let granted = seccomp_programs(&["ioprio_set".to_string()], false).unwrap();
        assert_ne!(granted, default);
        assert_ne!(seccomp_programs(&[], true).unwrap(), default);
        assert!(seccomp_programs(&["ptrace".to_string()], false).is_err());
    }
}
