//! The backend decision: a pure function of (workload, policy, CLI override) → [`Decision`].
//!
//! Rules, in order (each one that applies adds a reason):
//! 1. A `--backend` override wins; then a policy's fixed `backend`. Either is refused if the policy does
//!    not allow that backend or the workload has no variant for it.
//! 2. Variants the policy does not allow are dropped; none left is an error.
//! 3. One variant left: that backend.
//! 4. Both left (a bundle): native if the manifest declares needs WASI cannot serve; otherwise wasm for
//!    an `untrusted` policy (narrowest interface) and native for a `trusted` one (full speed, POSIX).
//!
//! Whatever is chosen, a native script's interpreter must be visible inside the sandbox.
//!
//! ```
//! use hybox::{decide::decide, policy::{Backend, Policy}, workload::{Artifact, Format, Workload}};
//! let w = Workload::Single(Artifact { path: "hello.wasm".into(), format: Format::WasmModule });
//! let d = decide(&w, &Policy::default(), None).unwrap();
//! assert_eq!(d.backend, Backend::Wasm);
//! ```

use std::path::Path;

use serde::Serialize;

use crate::policy::{Backend, Policy, Rootfs, Trust};
use crate::workload::{Format, Workload};

/// The chosen backend and every reason for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub backend: Backend,
    pub reasons: Vec<String>,
}

/// Why no backend could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// A forced backend (override or policy) for which the workload has no variant.
    #[error("{source_of_choice} asks for the {backend} backend, but {workload} has no {backend} variant")]
    NoVariant {
        backend: Backend,
        source_of_choice: String,
        workload: String,
    },
    /// A forced backend the policy does not allow.
    #[error(
        "{source_of_choice} asks for the {backend} backend, but the policy allows only {allowed}"
    )]
    NotAllowed {
        backend: Backend,
        source_of_choice: String,
        allowed: String,
    },
    /// The workload's variants are all for backends the policy does not allow.
    #[error("{workload} can run only on {available}, but the policy allows only {allowed}")]
    NothingAllowed {
        workload: String,
        available: String,
        allowed: String,
    },
    /// A script whose interpreter the sandbox would not contain.
    #[error("the script's interpreter {interpreter} is not visible inside the sandbox ({why})")]
    InterpreterNotVisible { interpreter: String, why: String },
}

/// Host directories the default (`host`) rootfs exposes read-only; shared with the native backend's
/// mount plan so the decision and the sandbox agree.
pub const HOST_ROOTFS_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc",
];

fn list(backends: &[Backend]) -> String {
    backends
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Chooses the backend. Deterministic: the same inputs always give the same decision and reasons.
pub fn decide(
    workload: &Workload,
    policy: &Policy,
    override_backend: Option<Backend>,
) -> Result<Decision, DecideError> {
    let what = workload.describe();
    let available: Vec<Backend> = [Backend::Wasm, Backend::Native]
        .into_iter()
        .filter(|b| workload.variant(*b).is_some())
        .collect();
    let mut reasons = Vec::new();

    let forced = override_backend
        .map(|b| (b, format!("--backend {b} on the command line")))
        .or_else(|| {
            policy
                .backend
                .forced()
                .map(|b| (b, format!("the policy's `backend: {b}`")))
        });

    let backend = if let Some((backend, source_of_choice)) = forced {
        if !policy.allowed_backends.contains(&backend) {
            return Err(DecideError::NotAllowed {
                backend,
                source_of_choice,
                allowed: list(&policy.allowed_backends),
            });
        }
        if !available.contains(&backend) {
            return Err(DecideError::NoVariant {
                backend,
                source_of_choice,
                workload: what,
            });
        }
        reasons.push(format!("{source_of_choice} forces the {backend} backend"));
        backend
    } else {
        let allowed: Vec<Backend> = available
            .iter()
            .copied()
            .filter(|b| policy.allowed_backends.contains(b))
            .collect();
        match allowed.as_slice() {
            [] => {
                return Err(DecideError::NothingAllowed {
                    workload: what,
                    available: list(&available),
                    allowed: list(&policy.allowed_backends),
                })
            }
            [only] => {
                if available.len() > 1 {
                    let dropped = available.iter().find(|b| *b != only).expect("two variants");
                    reasons.push(format!("the policy does not allow the {dropped} backend"));
                    reasons.push(format!("{what}: its {only} variant is the one allowed"));
                } else {
                    reasons.push(format!("{what} runs only on the {only} backend"));
                }
                *only
            }
            _ => both_variants(workload, policy, &mut reasons),
        }
    };

    if backend == Backend::Native {
        check_interpreter(workload, policy, &mut reasons)?;
    }
    Ok(Decision { backend, reasons })
}

/// Rule 4: a bundle with both variants, both allowed.
fn both_variants(workload: &Workload, policy: &Policy, reasons: &mut Vec<String>) -> Backend {
    let component = matches!(
        workload.variant(Backend::Wasm).map(|a| &a.format),
        Some(Format::WasmComponent | Format::WasmText { component: true })
    );
    let unserved: Vec<String> = workload
        .needs()
        .iter()
        .filter(|n| !n.wasi_can_serve(component))
        .map(|n| n.to_string())
        .collect();
    if !unserved.is_empty() {
        reasons.push(format!(
            "the bundle declares needs WASI cannot serve ({}), so it runs natively",
            unserved.join(", ")
        ));
        return Backend::Native;
    }
    match policy.trust {
        Trust::Untrusted => {
            reasons.push(
                "both variants exist and the policy is `untrusted`: wasm exposes the narrowest interface \
                 (a VM boundary, only granted capabilities)"
                    .into(),
            );
            Backend::Wasm
        }
        Trust::Trusted => {
            reasons.push(
                "both variants exist and the policy is `trusted`: native runs at full speed with full POSIX".into(),
            );
            Backend::Native
        }
    }
}

/// A `#!` script runs its interpreter *inside* the sandbox: it must be in the rootfs or a mount.
fn check_interpreter(
    workload: &Workload,
    policy: &Policy,
    reasons: &mut Vec<String>,
) -> Result<(), DecideError> {
    let Some(Format::Script { interpreter, .. }) =
        workload.variant(Backend::Native).map(|a| &a.format)
    else {
        return Ok(());
    };
    let shown = interpreter.display().to_string();
    let in_mount = policy
        .filesystem
        .mounts
        .iter()
        .any(|m| interpreter.starts_with(&m.guest));
    let visible = match &policy.native.rootfs {
        Rootfs::Host => {
            in_mount
                || HOST_ROOTFS_DIRS
                    .iter()
                    .any(|d| interpreter.starts_with(Path::new(d)))
        }
        Rootfs::Dir(dir) | Rootfs::Image { dir, .. } => {
            in_mount
                || dir
                    .join(interpreter.strip_prefix("/").unwrap_or(interpreter))
                    .exists()
        }
    };
    if !visible {
        let why = match &policy.native.rootfs {
            Rootfs::Host => format!(
                "it is outside the host rootfs ({}) and every mount",
                HOST_ROOTFS_DIRS.join(", ")
            ),
            Rootfs::Dir(d) | Rootfs::Image { dir: d, .. } => {
                format!("{} has no such file and no mount covers it", d.display())
            }
        };
        return Err(DecideError::InterpreterNotVisible {
            interpreter: shown,
            why,
        });
    }
    reasons.push(format!(
        "the script's interpreter {shown} is visible inside the sandbox"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{BackendChoice, Mount};
    use crate::workload::{Artifact, Bundle, ElfInfo, Manifest, Need};

    fn wasm() -> Artifact {
        Artifact {
            path: "g.wasm".into(),
            format: Format::WasmModule,
        }
    }
    fn elf() -> Artifact {
        Artifact {
            path: "g".into(),
            format: Format::Elf(ElfInfo {
                machine: "x86_64".into(),
                is_static: true,
                interpreter: None,
            }),
        }
    }
    fn bundle(needs: Vec<Need>) -> Workload {
        Workload::Bundle(Bundle {
            dir: "b".into(),
            manifest: Manifest {
                version: 1,
                name: "b".into(),
                description: None,
                wasm: Some("g.wasm".into()),
                native: Some("g".into()),
                policy: None,
                needs,
            },
            wasm: Some(wasm()),
            native: Some(elf()),
            policy: None,
        })
    }
    fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
        let mut p = Policy::default();
        f(&mut p);
        p
    }

    /// The decision table: (workload, policy, override) → backend, or the error text.
    #[test]
    fn decision_table() {
        let single_wasm = Workload::Single(wasm());
        let single_elf = Workload::Single(elf());
        let trusted = policy(|p| p.trust = Trust::Trusted);
        let only_wasm = policy(|p| p.allowed_backends = vec![Backend::Wasm]);
        let only_native = policy(|p| p.allowed_backends = vec![Backend::Native]);
        let force_native = policy(|p| p.backend = BackendChoice::Native);
        let dflt = Policy::default();
        type Case = (
            &'static str,
            Workload,
            Policy,
            Option<Backend>,
            Result<Backend, &'static str>,
        );
        let cases: Vec<Case> = vec![
            ("single wasm", single_wasm.clone(), dflt.clone(), None, Ok(Backend::Wasm)),
            ("single elf", single_elf.clone(), dflt.clone(), None, Ok(Backend::Native)),
            ("bundle untrusted", bundle(vec![]), dflt.clone(), None, Ok(Backend::Wasm)),
            ("bundle trusted", bundle(vec![]), trusted.clone(), None, Ok(Backend::Native)),
            ("bundle needs subprocesses", bundle(vec![Need::Subprocesses]), dflt.clone(), None, Ok(Backend::Native)),
            ("p1 bundle needs sockets", bundle(vec![Need::Sockets]), dflt.clone(), None, Ok(Backend::Native)),
            ("bundle only wasm allowed", bundle(vec![Need::Threads]), only_wasm.clone(), None, Ok(Backend::Wasm)),
            ("bundle only native allowed", bundle(vec![]), only_native.clone(), None, Ok(Backend::Native)),
            ("override wins over trust", bundle(vec![]), dflt.clone(), Some(Backend::Native), Ok(Backend::Native)),
            ("policy forces native", bundle(vec![]), force_native.clone(), None, Ok(Backend::Native)),
            ("override beats policy", bundle(vec![]), force_native.clone(), Some(Backend::Wasm), Ok(Backend::Wasm)),
            (
                "override without variant",
                single_wasm.clone(),
                dflt.clone(),
                Some(Backend::Native),
                Err("--backend native on the command line asks for the native backend, but wasm module has no native variant"),
            ),
            (
                "override not allowed",
                single_elf.clone(),
                only_wasm.clone(),
                Some(Backend::Native),
                Err("--backend native on the command line asks for the native backend, but the policy allows only wasm"),
            ),
            (
                "nothing allowed",
                single_elf.clone(),
                only_wasm.clone(),
                None,
                Err("ELF x86_64 static can run only on native, but the policy allows only wasm"),
            ),
        ];
        for (name, w, p, o, want) in cases {
            let got = decide(&w, &p, o);
            match (got, want) {
                (Ok(d), Ok(b)) => {
                    assert_eq!(d.backend, b, "{name}");
                    assert!(
                        !d.reasons.is_empty(),
                        "{name}: a decision always has a reason"
                    );
                }
                (Err(e), Err(msg)) => assert_eq!(e.to_string(), msg, "{name}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn reasons_name_the_rule() {
        let d = decide(
            &bundle(vec![Need::Subprocesses, Need::Signals]),
            &Policy::default(),
            None,
        )
        .unwrap();
        assert_eq!(d.reasons, vec!["the bundle declares needs WASI cannot serve (subprocesses, signals), so it runs natively"]);
        let d = decide(
            &bundle(vec![]),
            &policy(|p| p.allowed_backends = vec![Backend::Native]),
            None,
        )
        .unwrap();
        assert_eq!(d.reasons[0], "the policy does not allow the wasm backend");
    }

    #[test]
    fn deterministic() {
        let w = bundle(vec![]);
        let p = Policy::default();
        assert_eq!(decide(&w, &p, None), decide(&w, &p, None));
    }

    #[test]
    fn script_interpreter_must_be_visible() {
        let script = |interp: &str| {
            Workload::Single(Artifact {
                path: "s".into(),
                format: Format::Script {
                    interpreter: interp.into(),
                    arg: None,
                },
            })
        };
        assert!(decide(&script("/bin/sh"), &Policy::default(), None).is_ok());
        let err = decide(&script("/opt/py/bin/python"), &Policy::default(), None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the script's interpreter /opt/py/bin/python is not visible"),
            "{err}"
        );
        let p = policy(|p| {
            p.filesystem.mounts.push(Mount {
                host: "/opt/py".into(),
                guest: "/opt/py".into(),
                mode: Default::default(),
            })
        });
        assert!(decide(&script("/opt/py/bin/python"), &p, None).is_ok());
    }
}
