//! The checks serde cannot express: fields that must agree with each other, and the rules every path
//! in a policy follows (absolute, normalised, never through `/proc`, never onto what hybox builds).
//! Run after parsing and again after the command line's overrides.

use std::path::{Component, Path};

use super::{FieldError, Policy, PolicyError, Rootfs};
use crate::units::Size;

/// Guest paths a mount may not cover: the sandbox builds these itself.
const RESERVED_GUEST_PATHS: &[&str] = &["/proc", "/dev", "/sys", "/tmp", "/.hybox"];

impl Policy {
    /// The cross-field and path checks that serde cannot express. Run again after CLI overrides.
    pub fn validate(&self, origin: &str) -> Result<(), PolicyError> {
        let invalid = |path: String, problem: FieldError| PolicyError::Invalid {
            file: origin.to_string(),
            path,
            problem: Box::new(problem),
        };
        if self.allowed_backends.is_empty() {
            return Err(invalid("allowed_backends".into(), FieldError::NoBackend));
        }
        for (i, b) in self.allowed_backends.iter().enumerate() {
            if self.allowed_backends[..i].contains(b) {
                return Err(invalid(
                    format!("allowed_backends[{i}]"),
                    FieldError::DuplicateBackend(*b),
                ));
            }
        }
        if let Some(forced) = self.backend.forced() {
            if !self.allowed_backends.contains(&forced) {
                return Err(invalid(
                    "backend".into(),
                    FieldError::BackendNotAllowed {
                        forced,
                        allowed: self.allowed_backends.clone(),
                    },
                ));
            }
        }
        for (i, m) in self.filesystem.mounts.iter().enumerate() {
            check_host_path(&m.host)
                .map_err(|e| invalid(format!("filesystem.mounts[{i}].host"), e))?;
            check_guest_path(&m.guest)
                .map_err(|e| invalid(format!("filesystem.mounts[{i}].guest"), e))?;
            if let Some(r) = RESERVED_GUEST_PATHS.iter().find(|r| m.guest.starts_with(r)) {
                return Err(invalid(
                    format!("filesystem.mounts[{i}].guest"),
                    FieldError::Reserved {
                        reserved: r,
                        found: m.guest.clone(),
                    },
                ));
            }
            if let Some(j) = self.filesystem.mounts[..i]
                .iter()
                .position(|o| o.guest == m.guest)
            {
                return Err(invalid(
                    format!("filesystem.mounts[{i}].guest"),
                    FieldError::AlreadyMounted {
                        guest: m.guest.clone(),
                        other: j,
                    },
                ));
            }
        }
        for (i, t) in self.native.tmpfs.iter().enumerate() {
            let field = |f: &str| format!("native.tmpfs[{i}].{f}");
            check_guest_path(&t.guest).map_err(|e| invalid(field("guest"), e))?;
            if let Some(r) = RESERVED_GUEST_PATHS.iter().find(|r| t.guest.starts_with(r)) {
                return Err(invalid(
                    field("guest"),
                    FieldError::Reserved {
                        reserved: r,
                        found: t.guest.clone(),
                    },
                ));
            }
            let other = (self.native.tmpfs[..i]
                .iter()
                .position(|o| o.guest == t.guest))
            .map(|j| format!("native.tmpfs[{j}]"))
            .or_else(|| {
                (self
                    .filesystem
                    .mounts
                    .iter()
                    .position(|m| m.guest == t.guest))
                .map(|j| format!("filesystem.mounts[{j}]"))
            });
            if let Some(other) = other {
                return Err(invalid(
                    field("guest"),
                    FieldError::MountedTwice {
                        guest: t.guest.clone(),
                        other,
                    },
                ));
            }
            if t.guest == Path::new("/") {
                return Err(invalid(
                    field("guest"),
                    FieldError::OutOfRange {
                        expected: "a directory below /",
                        found: "/".into(),
                    },
                ));
            }
            if t.size < Size::kib(64) {
                return Err(invalid(
                    field("size"),
                    FieldError::OutOfRange {
                        expected: "at least 64K",
                        found: t.size.to_string(),
                    },
                ));
            }
            if t.mode_bits().is_none() {
                return Err(invalid(
                    field("mode"),
                    FieldError::OutOfRange {
                        expected: "octal permission bits such as \"1777\" or \"755\"",
                        found: format!("{:?}", t.mode),
                    },
                ));
            }
        }
        check_guest_path(&self.filesystem.workdir)
            .map_err(|e| invalid("filesystem.workdir".into(), e))?;
        if let Some(tmp) = &self.filesystem.tmp {
            if tmp.size < Size::kib(64) {
                return Err(invalid(
                    "filesystem.tmp.size".into(),
                    FieldError::OutOfRange {
                        expected: "at least 64K",
                        found: tmp.size.to_string(),
                    },
                ));
            }
        }
        for k in self.env.keys() {
            check_env_name(k).map_err(|e| invalid(format!("env.{k}"), e))?;
        }
        for (k, v) in &self.env {
            if v.contains('\0') {
                return Err(invalid(format!("env.{k}"), FieldError::NulInValue));
            }
        }
        for (i, k) in self.inherit_env.iter().enumerate() {
            check_env_name(k).map_err(|e| invalid(format!("inherit_env[{i}]"), e))?;
        }
        for (i, a) in self.args.iter().enumerate() {
            if a.contains('\0') {
                return Err(invalid(format!("args[{i}]"), FieldError::NulInArgument));
            }
        }
        if let Rootfs::Dir(dir) | Rootfs::Image { dir, .. } = &self.native.rootfs {
            check_host_path(dir).map_err(|e| invalid("native.rootfs.dir".into(), e))?;
        }
        for (field, id) in [
            ("native.host_uid", self.native.host_uid),
            ("native.host_gid", self.native.host_gid),
        ] {
            if id == Some(0) {
                return Err(invalid(field.into(), FieldError::HostRoot));
            }
        }
        for (i, name) in self.native.seccomp.allow.iter().enumerate() {
            hybox_shim::seccomp::check_grantable(name).map_err(|reason| {
                invalid(
                    format!("native.seccomp.allow[{i}]"),
                    FieldError::Syscall {
                        name: name.clone(),
                        reason,
                    },
                )
            })?;
        }
        let rules = self.native.seccomp.profile.iter().flat_map(|p| &p.rules);
        for (i, rule) in rules.enumerate() {
            for (j, a) in rule.args.iter().enumerate() {
                if a.index > 5 {
                    return Err(invalid(
                        format!("native.seccomp.profile.rules[{i}].args[{j}].index"),
                        FieldError::OutOfRange {
                            expected: "an argument index in 0..=5",
                            found: a.index.to_string(),
                        },
                    ));
                }
            }
        }
        for (i, h) in self.http.outbound_hosts.iter().enumerate() {
            super::check_authority(h)
                .map_err(|e| invalid(format!("http.outbound_hosts[{i}]"), e))?;
        }
        if let Some(r) = &self.http.route {
            super::Route::parse(r).map_err(|e| invalid("http.route".into(), e))?;
        }
        if self.native.rlimits.nofile < 16 || self.native.rlimits.nofile > 1 << 20 {
            return Err(invalid(
                "native.rlimits.nofile".into(),
                FieldError::OutOfRange {
                    expected: "an integer in 16..=1048576",
                    found: self.native.rlimits.nofile.to_string(),
                },
            ));
        }
        for (i, io) in self.resources.io.iter().enumerate() {
            if !io.any() {
                return Err(invalid(
                    format!("resources.io[{i}]"),
                    FieldError::OutOfRange {
                        expected: "at least one of read_bps, write_bps, read_iops, write_iops",
                        found: "none".into(),
                    },
                ));
            }
            let bps = [("read_bps", io.read_bps), ("write_bps", io.write_bps)];
            let iops = [("read_iops", io.read_iops), ("write_iops", io.write_iops)];
            // 0 is not "nothing may pass": the kernel reads a 0 in blkio.throttle.* as "remove the
            // rule", so it is refused rather than silently meaning unlimited on cgroup v1.
            let zero = bps
                .iter()
                .find(|(_, v)| v.is_some_and(|v| v.bytes() == 0))
                .map(|(f, _)| *f)
                .or_else(|| iops.iter().find(|(_, v)| *v == Some(0)).map(|(f, _)| *f));
            if let Some(f) = zero {
                return Err(invalid(
                    format!("resources.io[{i}].{f}"),
                    FieldError::OutOfRange {
                        expected: "at least 1 (omit the field for no limit)",
                        found: "0".into(),
                    },
                ));
            }
            if let Some(j) = self.resources.io[..i]
                .iter()
                .position(|o| o.device == io.device)
            {
                return Err(invalid(
                    format!("resources.io[{i}].device"),
                    FieldError::NotBlockDevice(format!(
                        "{} is already limited by resources.io[{j}]",
                        io.device
                    )),
                ));
            }
            io.resolve().map_err(|e| {
                invalid(
                    format!("resources.io[{i}].device"),
                    FieldError::NotBlockDevice(e),
                )
            })?;
        }
        Ok(())
    }
}

fn check_env_name(k: &str) -> Result<(), FieldError> {
    if k.is_empty() || k.contains('=') || k.contains('\0') {
        return Err(FieldError::EnvName(k.to_string()));
    }
    Ok(())
}

/// A host path in a grant: absolute, normalised (no `.`/`..`), and never through `/proc` (magic links
/// such as `/proc/self/fd/N` would hand the sandbox a host fd; CVE-2024-21626).
fn check_host_path(p: &Path) -> Result<(), FieldError> {
    check_absolute_normal(p, "an absolute host path")?;
    if p.starts_with("/proc") {
        return Err(FieldError::UnderProc {
            found: p.to_path_buf(),
        });
    }
    Ok(())
}

fn check_guest_path(p: &Path) -> Result<(), FieldError> {
    check_absolute_normal(p, "an absolute path inside the sandbox")
}

/// Absolute and without `.`/`..` components (a grant must say exactly what it grants).
fn check_absolute_normal(p: &Path, expected: &'static str) -> Result<(), FieldError> {
    if !p.is_absolute() {
        return Err(FieldError::NotAbsolute {
            expected,
            found: p.to_path_buf(),
        });
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(FieldError::NotNormal {
            found: p.to_path_buf(),
        });
    }
    Ok(())
}
